use resilience::retry_with_backoff;

/// Takes the error itself: the hook is called with a `RetryCause`, whose `.error()` gives it.
fn count_retry(error: &std::io::Error, attempt: u32, wait: std::time::Duration) {
    let _ = (error, attempt, wait);
}

#[retry_with_backoff(on_retry = count_retry)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
