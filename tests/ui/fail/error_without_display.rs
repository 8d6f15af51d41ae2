use resilience::{MediaProcessingError, retry_with_backoff};

#[derive(Debug)]
enum ApiError {
    Unavailable,
    Exhausted(MediaProcessingError),
}

impl From<MediaProcessingError> for ApiError {
    fn from(error: MediaProcessingError) -> Self {
        ApiError::Exhausted(error)
    }
}

#[retry_with_backoff]
fn fetch() -> Result<u32, ApiError> {
    Err(ApiError::Unavailable)
}

fn main() {}
