use resilience::retry_with_backoff;

struct Upload {
    bytes: Vec<u8>,
}

#[retry_with_backoff]
fn send(upload: Upload) -> std::io::Result<usize> {
    Ok(upload.bytes.len())
}

fn main() {}
