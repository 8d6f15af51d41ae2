use async_trait::async_trait;
use resilience::retry_with_backoff;

#[async_trait]
trait Client {
    async fn fetch(&self) -> std::io::Result<u32>;
}

struct Gemini;

#[async_trait]
impl Client for Gemini {
    #[retry_with_backoff]
    async fn fetch(&self) -> std::io::Result<u32> {
        Ok(1)
    }
}

fn main() {}
