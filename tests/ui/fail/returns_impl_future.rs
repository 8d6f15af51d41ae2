use std::future::Future;

use resilience::retry_with_backoff;

#[retry_with_backoff]
fn fetch() -> impl Future<Output = std::io::Result<u32>> {
    async { Ok(1) }
}

fn main() {}
