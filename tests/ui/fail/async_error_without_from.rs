use resilience::retry_with_backoff;

#[derive(Debug)]
struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("503")
    }
}

#[retry_with_backoff(max_retries = 2)]
async fn fetch() -> Result<u32, Busy> {
    Err(Busy)
}

fn main() {}
