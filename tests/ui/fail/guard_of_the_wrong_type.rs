use resilience::limiter::RateLimiter;
use resilience::retry_with_backoff;

static GEMINI_RPM: RateLimiter = RateLimiter::per_minute("gemini", 60);

// The limiter named where the breaker goes.
#[retry_with_backoff(breaker = GEMINI_RPM)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
