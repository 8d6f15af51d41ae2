use std::io;

use resilience::retry_with_backoff;

fn is_transient(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::ConnectionReset
}

#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.001,
    max_delay = 0.01,
    jitter = 0.0,
    timeout = 5.0,
    retry_if = is_transient,
)]
fn with_path(calls: &mut u32) -> io::Result<u32> {
    *calls += 1;
    if *calls < 2 {
        return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
    }
    Ok(*calls)
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, max_delay = 0, jitter = 0, retry_if = |e: &io::Error| e.kind() == io::ErrorKind::Other)]
fn with_closure(calls: &mut u32) -> io::Result<u32> {
    *calls += 1;
    if *calls < 2 {
        return Err(io::Error::other("transient"));
    }
    Ok(*calls)
}

#[retry_with_backoff(max_retries = 2, base_delay = 0.001, max_delay = 0.002, jitter = 0, timeout = 1)]
async fn async_all(value: String) -> Result<String, anyhow::Error> {
    Ok(value)
}

#[retry_with_backoff(r#max_retries = 1)]
fn raw_key() -> io::Result<()> {
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut calls = 0;
    assert_eq!(with_path(&mut calls).unwrap(), 2);
    let mut calls = 0;
    assert_eq!(with_closure(&mut calls).unwrap(), 2);
    assert_eq!(async_all("ok".to_owned()).await.unwrap(), "ok");
    raw_key().unwrap();
}
