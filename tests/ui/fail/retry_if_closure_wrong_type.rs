use resilience::retry_with_backoff;

#[retry_with_backoff(retry_if = |e: &String| e.contains("busy"))]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
