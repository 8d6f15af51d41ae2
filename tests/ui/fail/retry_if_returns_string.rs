use resilience::retry_with_backoff;

fn describe(error: &std::io::Error) -> String {
    error.to_string()
}

#[retry_with_backoff(retry_if = describe)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
