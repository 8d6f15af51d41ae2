use resilience::retry_with_backoff;

#[retry_with_backoff(strategy = exponential_jitter)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
