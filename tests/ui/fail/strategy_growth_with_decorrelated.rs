use resilience::retry_with_backoff;

#[retry_with_backoff(strategy = decorrelated, growth = linear)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
