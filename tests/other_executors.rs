//! An annotated `async fn`, and the closure API's async form, on executors that are not tokio
//! (`futures::executor::block_on` here): where a tokio sleep would panic ("there is no reactor
//! running"), the waits run on a helper thread, and a `timeout` still cuts an attempt off.
//!
//! Real time, with waits of 10 to 50 ms: no tokio clock to pause outside tokio.

mod common;

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use resilience::retry_with_backoff;
use resilience::{GiveUpReason, MediaProcessingError, RetryError, RetryPolicy, Retryable};

#[retry_with_backoff(max_retries = 3, base_delay = 0.02, jitter = 0)]
async fn flaky(calls: &Cell<u32>) -> io::Result<u32> {
    calls.set(calls.get() + 1);
    if calls.get() < 3 {
        return Err(io::Error::from(io::ErrorKind::ConnectionReset));
    }
    Ok(calls.get())
}

/// Before the helper-thread sleep, the first wait panicked: "there is no reactor running".
#[test]
fn an_async_fn_waits_between_attempts_under_block_on() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let started = Instant::now();
    assert_eq!(block_on(flaky(&calls)).expect("the third attempt"), 3);
    let elapsed = started.elapsed();
    assert_eq!(logs.waits_ms(), [40, 80]);
    assert!(
        elapsed >= Duration::from_millis(60),
        "the waits happened: {elapsed:?}"
    );
    assert_eq!(
        logs.messages().last().map(String::as_str),
        Some("Success on attempt 3")
    );
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.01, jitter = 0, timeout = 0.05)]
async fn hangs(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    std::future::pending::<()>().await;
    Ok(())
}

/// The deadline is a sleep too: outside tokio it is the helper thread's, and it still cuts a
/// hanging attempt off at the `timeout`.
#[test]
fn a_timeout_cuts_an_attempt_off_under_block_on() {
    let calls = Cell::new(0);
    let started = Instant::now();
    let error = block_on(hangs(&calls)).expect_err("cut off");
    let elapsed = started.elapsed();
    let give_up = common::media_error(&error);
    assert_eq!(
        give_up.reason(),
        GiveUpReason::DeadlineExceeded {
            timeout: Duration::from_millis(50)
        }
    );
    assert_eq!(calls.get(), 1);
    assert!(
        elapsed >= Duration::from_millis(50) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

static POLICY: RetryPolicy = match RetryPolicy::builder()
    .max_retries(3)
    .base_delay(Duration::from_millis(10))
    .jitter(Duration::ZERO)
    .build()
{
    Ok(policy) => policy,
    Err(_) => panic!("a valid policy"),
};

#[test]
fn the_closure_api_waits_under_block_on_too() {
    let calls = Cell::new(0);
    let outcome = block_on(
        (|| async {
            calls.set(calls.get() + 1);
            Err::<(), _>(io::Error::from(io::ErrorKind::TimedOut))
        })
        .retry(&POLICY),
    );
    let Err(RetryError::GaveUp(give_up)) = outcome else {
        panic!("expected a give-up: {outcome:?}");
    };
    let give_up: MediaProcessingError = give_up;
    assert_eq!(give_up.attempts(), 3);
    assert_eq!(calls.get(), 3);
}
