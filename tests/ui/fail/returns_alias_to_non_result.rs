use resilience::retry_with_backoff;

type Count = u32;

#[retry_with_backoff]
fn fetch() -> Count {
    1
}

fn main() {}
