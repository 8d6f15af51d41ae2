use resilience::retry_with_backoff;

struct Client {
    retries: u32,
}

impl Client {
    #[retry_with_backoff]
    fn fetch(#[no_clone] self) -> std::io::Result<u32> {
        Ok(self.retries)
    }
}

fn main() {}
