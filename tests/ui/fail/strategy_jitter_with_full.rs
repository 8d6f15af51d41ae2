use resilience::retry_with_backoff;

#[retry_with_backoff(strategy = full, jitter = 0.5)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
