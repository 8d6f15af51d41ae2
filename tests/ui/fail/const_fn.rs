use resilience::retry_with_backoff;

#[retry_with_backoff]
const fn fetch() -> Result<u32, std::io::Error> {
    Ok(1)
}

fn main() {}
