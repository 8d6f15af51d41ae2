use resilience::retry_with_backoff;

const BASE_SECONDS: u64 = 2;

#[retry_with_backoff(base_delay = BASE_SECONDS)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
