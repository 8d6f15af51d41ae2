use resilience::retry_with_backoff;

struct Upload {
    bytes: Vec<u8>,
}

fn consume(upload: Upload) -> usize {
    upload.bytes.len()
}

#[retry_with_backoff]
fn send(#[no_clone] upload: Upload) -> std::io::Result<usize> {
    Ok(consume(upload))
}

fn main() {}
