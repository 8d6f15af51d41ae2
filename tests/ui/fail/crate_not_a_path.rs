use resilience::retry_with_backoff;

#[retry_with_backoff(crate = 3)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
