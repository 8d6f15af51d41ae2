use resilience::budget::RetryBudget;
use resilience::retry_with_backoff;

static RETRIES: RetryBudget = RetryBudget::ratio("api", 0.2);

#[retry_with_backoff(max_retries = 1, budget = RETRIES)]
fn fetch() -> std::io::Result<()> {
    Ok(())
}

fn main() {}
