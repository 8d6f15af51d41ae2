use std::fmt;

use resilience::retry_with_backoff;

#[derive(Debug)]
struct ApiError;

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("503 service unavailable")
    }
}

impl std::error::Error for ApiError {}

#[retry_with_backoff]
fn fetch() -> Result<u32, ApiError> {
    Err(ApiError)
}

fn main() {}
