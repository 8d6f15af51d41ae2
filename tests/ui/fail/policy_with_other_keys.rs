use resilience::{RetryPolicy, retry_with_backoff};

static POLICY: RetryPolicy = RetryPolicy::new();

#[retry_with_backoff(policy = &POLICY, max_retries = 3)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
