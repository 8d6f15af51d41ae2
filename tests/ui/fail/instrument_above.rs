use resilience::retry_with_backoff;

#[tracing::instrument]
#[retry_with_backoff]
fn fetch(image: &str) -> std::io::Result<usize> {
    Ok(image.len())
}

fn main() {}
