use resilience::retry_with_backoff;

trait Client {
    #[retry_with_backoff]
    fn fetch(&self) -> std::io::Result<u32>;
}

fn main() {}
