use resilience::retry_with_backoff;

fn main() {
    let fetch = #[retry_with_backoff] || -> std::io::Result<u32> { Ok(1) };
    let _ = fetch;
}
