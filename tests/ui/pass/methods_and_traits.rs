use resilience::retry_with_backoff;

#[derive(Clone)]
struct Client {
    name: String,
}

impl Client {
    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn by_value(self) -> std::io::Result<String> {
        Ok(self.name)
    }

    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn associated(name: String) -> std::io::Result<Self> {
        Ok(Self { name })
    }

    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    pub(crate) async fn fetch(&self, path: String) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(format!("{}/{}", self.name, path))
    }
}

trait Api {
    fn name(&self) -> &str;

    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn describe(&self) -> std::io::Result<String> {
        Ok(self.name().to_owned())
    }

    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    async fn ping(&self) -> Result<u32, anyhow::Error> {
        Ok(self.name().len() as u32)
    }
}

impl Api for Client {
    fn name(&self) -> &str {
        &self.name
    }
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn returns_impl(count: usize) -> Result<impl Iterator<Item = usize>, String> {
    Ok(0..count)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = Client::associated("gemini".to_owned()).unwrap();
    assert_eq!(client.fetch("v1".to_owned()).await.unwrap(), "gemini/v1");
    assert_eq!(client.describe().unwrap(), "gemini");
    assert_eq!(client.ping().await.unwrap(), 6);
    assert_eq!(client.by_value().unwrap(), "gemini");
    assert_eq!(returns_impl(3).unwrap().count(), 3);
}
