use resilience::retry_with_backoff;

/// Takes the error's text, not the error: the hook is called with `&std::io::Error`.
fn count_retry(error: &str, attempt: u32, wait: std::time::Duration) {
    let _ = (error, attempt, wait);
}

#[retry_with_backoff(on_retry = count_retry)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
