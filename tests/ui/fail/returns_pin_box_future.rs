use std::future::Future;
use std::pin::Pin;

use resilience::retry_with_backoff;

#[retry_with_backoff]
fn fetch() -> Pin<Box<dyn Future<Output = std::io::Result<u32>> + Send>> {
    Box::pin(async { Ok(1) })
}

fn main() {}
