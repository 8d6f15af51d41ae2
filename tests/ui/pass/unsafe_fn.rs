use resilience::retry_with_backoff;

/// # Safety
/// `ptr` must be valid for reads.
#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
unsafe fn read(ptr: *const u32) -> std::io::Result<u32> {
    Ok(unsafe { *ptr })
}

fn main() {
    let value = 7;
    assert_eq!(unsafe { read(&value) }.unwrap(), 7);
}
