use resilience::retry_with_backoff;

#[retry_with_backoff(breaker = "gemini")]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
