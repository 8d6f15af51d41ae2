use resilience::retry_with_backoff;

#[retry_with_backoff(base_delay = 10.0, max_delay = 5.0)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
