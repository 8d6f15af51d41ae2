use resilience::retry_with_backoff;

// The attribute goes on a function: a closure is retried with the closure API instead,
// `(|| fetch()).retry(&POLICY).call()`.
#[retry_with_backoff]
static FETCH: fn() -> std::io::Result<u32> = || Ok(1);

fn main() {
    let _ = FETCH;
}
