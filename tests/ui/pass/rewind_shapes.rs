//! `#[rewind]` on a file by value, a `&mut` reader, an `impl Read + Seek`, in sync and async
//! functions, and beside other parameters.

use std::io::{Cursor, Read, Seek};

use resilience::retry_with_backoff;

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn by_value(#[rewind] file: std::fs::File, label: String) -> std::io::Result<String> {
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(format!("{label}: {text}"))
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn borrowed(#[rewind] reader: &mut Cursor<Vec<u8>>) -> std::io::Result<usize> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn generic(#[rewind] reader: &mut (impl Read + Seek)) -> std::io::Result<usize> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
async fn in_async(#[rewind] mut reader: Cursor<Vec<u8>>) -> std::io::Result<usize> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)
}

fn main() {
    let _ = by_value;
    let mut cursor = Cursor::new(vec![1, 2, 3]);
    assert_eq!(borrowed(&mut cursor).ok(), Some(3));
    assert_eq!(generic(&mut cursor).ok(), Some(0));
    let _ = in_async(Cursor::new(Vec::new()));
}
