use resilience::retry_with_backoff;

#[retry_with_backoff(timeout = 0.0000000001)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
