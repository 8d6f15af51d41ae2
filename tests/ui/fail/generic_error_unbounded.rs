use resilience::retry_with_backoff;

#[retry_with_backoff]
fn fetch<E>(make: fn() -> E) -> Result<u32, E> {
    Err(make())
}

fn main() {}
