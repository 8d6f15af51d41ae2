use resilience::retry_with_backoff;

#[retry_with_backoff(attempt_timeout = 5.0)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
