//! Every guard named by the attribute: statics, a keyed guard's key from an argument, on a
//! sync fn, an async fn (whose future stays `Send` with reference arguments) and a method.
use std::time::Duration;

use resilience::breaker::CircuitBreaker;
use resilience::budget::RetryBudget;
use resilience::keyed::Keyed;
use resilience::limiter::RateLimiter;
use resilience::retry_with_backoff;

static GEMINI: CircuitBreaker = CircuitBreaker::new("gemini").open_for(Duration::from_secs(30));
static PER_MODEL: Keyed<RateLimiter> = Keyed::new(RateLimiter::per_minute("gemini", 60));
static RETRIES: RetryBudget = RetryBudget::ratio("gemini", 0.2);

#[retry_with_backoff(breaker = GEMINI, limiter = PER_MODEL.key(model), budget = RETRIES)]
fn describe(model: &str, image: Vec<u8>) -> std::io::Result<usize> {
    Ok(model.len() + image.len())
}

#[retry_with_backoff(timeout = 60.0, breaker = GEMINI, limiter = PER_MODEL.key(&model))]
async fn describe_async(model: String, url: &str) -> std::io::Result<String> {
    Ok(format!("{model} {url}"))
}

struct Client {
    model: String,
}

impl Client {
    #[retry_with_backoff(breaker = &GEMINI, limiter = PER_MODEL.key(&self.model))]
    async fn call(&self, prompt: &str) -> std::io::Result<String> {
        Ok(format!("{}: {prompt}", self.model))
    }
}

fn is_send<T: Send>(_: T) {}

fn main() {
    let _ = describe("m", vec![1]);
    is_send(describe_async("m".into(), "u"));
    let client = Client { model: "m".into() };
    is_send(client.call("p"));
}
