use resilience::breaker::CircuitBreaker;
use resilience::retry_with_backoff;

// A `const` makes a new breaker at each use: no two calls would share its state.
const GEMINI: CircuitBreaker = CircuitBreaker::new("gemini");

#[retry_with_backoff(breaker = GEMINI)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
