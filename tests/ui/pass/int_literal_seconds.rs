use resilience::retry_with_backoff;

#[retry_with_backoff(base_delay = 1, max_delay = 30, jitter = 0, timeout = 60)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

#[retry_with_backoff]
fn defaults() -> std::io::Result<u32> {
    Ok(2)
}

#[retry_with_backoff()]
fn empty_parens() -> std::io::Result<u32> {
    Ok(3)
}

fn main() {
    assert_eq!(fetch().unwrap(), 1);
    assert_eq!(defaults().unwrap(), 2);
    assert_eq!(empty_parens().unwrap(), 3);
}
