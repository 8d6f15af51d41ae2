use resilience::retry_with_backoff;

#[retry_with_backoff]
fn fetch() -> Option<u32> {
    Some(1)
}

fn main() {}
