use resilience::retry_with_backoff;

#[retry_with_backoff]
fn fetch() -> () {}

fn main() {}
