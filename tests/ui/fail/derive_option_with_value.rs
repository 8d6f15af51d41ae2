#[derive(Debug, thiserror::Error, resilience::Classify)]
enum ApiError {
    #[error("busy")]
    #[classify(retryable = true)]
    Busy,
    #[error("gone")]
    #[classify]
    Gone,
}

fn main() {}
