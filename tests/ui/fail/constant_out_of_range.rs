use resilience::retry_with_backoff;

const NO_ATTEMPTS: u32 = 0;
const NEGATIVE: f64 = -1.0;

#[retry_with_backoff(max_retries = NO_ATTEMPTS)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

#[retry_with_backoff(base_delay = NEGATIVE)]
fn upload() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
