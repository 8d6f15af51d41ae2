#[derive(Debug, thiserror::Error, resilience::Classify)]
enum ApiError {
    #[error("busy")]
    #[classify(retry)]
    Busy,
}

fn main() {}
