#[derive(Debug, thiserror::Error, resilience::Classify)]
enum ApiError {
    #[error("busy")]
    #[classify(retryable, not_retryable)]
    Busy,
    #[error("gone")]
    #[classify(not_retryable)]
    #[classify(retryable)]
    Gone,
}

fn main() {}
