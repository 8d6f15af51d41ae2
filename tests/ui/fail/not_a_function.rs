use resilience::retry_with_backoff;

#[retry_with_backoff]
struct Client {
    retries: u32,
}

fn main() {}
