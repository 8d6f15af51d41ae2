use resilience::retry_with_backoff;

struct Client;

impl Client {
    #[retry_with_backoff(max_retries = 0)]
    fn fetch(#[no_clone] self) -> std::io::Result<u32> {
        Ok(1)
    }
}

fn main() {}
