use resilience::{BlockingRetryable, RetryPolicy};

#[derive(Debug, thiserror::Error)]
#[error("503 Service Unavailable")]
struct ApiError;

static POLICY: RetryPolicy = RetryPolicy::new();

fn main() {
    let _ = (|| Err::<(), _>(ApiError)).retry(&POLICY).call();
}
