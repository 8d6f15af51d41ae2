use resilience::breaker::CircuitBreaker;
use resilience::retry_with_backoff;

static GEMINI: CircuitBreaker = CircuitBreaker::new("gemini");

#[retry_with_backoff(circuit_breaker = GEMINI)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
