use resilience::retry_with_backoff;

const RETRIES: u32 = 3;

#[retry_with_backoff(max_retries = RETRIES + 1)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
