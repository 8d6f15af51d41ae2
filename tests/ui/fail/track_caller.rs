use resilience::retry_with_backoff;

#[retry_with_backoff]
#[track_caller]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
