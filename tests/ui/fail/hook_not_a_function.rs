use resilience::retry_with_backoff;

#[retry_with_backoff(on_retry = "log it")]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
