use resilience::retry_with_backoff;

#[retry_with_backoff]
fn fetch() -> i32 {
    1
}

fn main() {}
