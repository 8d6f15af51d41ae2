use resilience::retry_with_backoff;

const NO_LIMIT: f64 = f64::INFINITY;

#[retry_with_backoff(max_hint = NO_LIMIT)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
