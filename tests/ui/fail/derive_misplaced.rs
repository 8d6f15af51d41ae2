#[derive(Debug, thiserror::Error, resilience::Classify)]
#[classify(retryable)]
enum ApiError {
    #[error("busy: {0}")]
    Busy(#[classify(retryable)] String),
}

fn main() {}
