use resilience::retry_with_backoff;

#[retry_with_backoff(max_hint = -30)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
