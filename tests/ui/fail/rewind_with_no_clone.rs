use std::io::Read;

use resilience::retry_with_backoff;

#[retry_with_backoff]
fn upload(#[rewind] #[no_clone] mut file: std::fs::File) -> std::io::Result<usize> {
    let mut body = Vec::new();
    file.read_to_end(&mut body)
}

fn main() {}
