use resilience::retry_with_backoff;

fn is_transient(status: &u16) -> bool {
    *status == 503
}

#[retry_with_backoff(retry_if = is_transient)]
fn fetch() -> std::io::Result<u32> {
    Ok(1)
}

fn main() {}
