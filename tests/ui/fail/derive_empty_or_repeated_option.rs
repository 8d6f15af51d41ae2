#[derive(Debug, thiserror::Error, resilience::Classify)]
enum ApiError {
    #[error("busy")]
    #[classify()]
    Busy,
    #[error("gone")]
    #[classify(not_retryable, not_retryable)]
    Gone,
}

fn main() {}
