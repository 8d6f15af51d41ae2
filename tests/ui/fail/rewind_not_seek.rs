use resilience::retry_with_backoff;

/// A `Vec<u8>` holds the bytes; it has no position to put back.
#[retry_with_backoff]
fn upload(#[rewind] body: Vec<u8>) -> std::io::Result<usize> {
    Ok(body.len())
}

fn main() {}
