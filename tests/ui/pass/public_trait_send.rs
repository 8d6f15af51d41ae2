//! A public trait whose async method generic code can spawn: the trait declares the method
//! as returning `impl Future + Send`, and the attribute goes on the impl's `async fn`.
use std::future::Future;
use std::io;
use std::sync::Arc;

use resilience::retry_with_backoff;

pub trait Api {
    fn fetch(&self, image: &str) -> impl Future<Output = io::Result<usize>> + Send;
}

pub struct Gemini;

impl Api for Gemini {
    #[retry_with_backoff(max_retries = 3, base_delay = 0, jitter = 0)]
    async fn fetch(&self, image: &str) -> io::Result<usize> {
        Ok(image.len())
    }
}

/// Generic code that needs the future to be `Send`.
fn spawn_fetch<A: Api + Send + Sync + 'static>(api: Arc<A>) -> tokio::task::JoinHandle<io::Result<usize>> {
    tokio::spawn(async move { api.fetch("beach.jpg").await })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let answer = spawn_fetch(Arc::new(Gemini)).await;
    assert_eq!(answer.ok().and_then(Result::ok), Some(9));
}
