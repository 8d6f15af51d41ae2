use resilience::retry_with_backoff;

#[retry_with_backoff(max_retries = 0, base_delay = "1", jitter = -1, colour = 3, timeout = 0.0)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
