use resilience::keyed::Keyed;
use resilience::limiter::RateLimiter;
use resilience::retry_with_backoff;

// A `const` makes a new map at each use: no two calls would share a key's limit.
const PER_MODEL: Keyed<RateLimiter> = Keyed::new(RateLimiter::per_minute("gemini", 60));

#[retry_with_backoff(limiter = PER_MODEL.key(model))]
fn describe(model: &str) -> std::io::Result<()> {
    let _ = model;
    Ok(())
}

fn main() {}
