//! The testing mode (README, "Testing retried code"): an application's own tests turn it on and
//! every retried call waits zero, and may be held to fewer attempts, with the functions and
//! their policies untouched. These tests use real time on purpose: the mode is what keeps the
//! default waits of 2, 4, 8 and 16 s out of them.

mod common;

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use resilience::testing::{Testing, with_testing};
use resilience::{BlockingRetryable, RetryPolicy, retry_with_backoff};

/// The defaults: 5 attempts, base 1 s, cap 30 s, jitter up to 1 s.
#[retry_with_backoff]
fn always_times_out(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(io::Error::from(io::ErrorKind::TimedOut))
}

#[retry_with_backoff]
async fn always_times_out_async(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(io::Error::from(io::ErrorKind::TimedOut))
}

#[test]
fn every_wait_is_zero_and_the_attempts_are_the_policys() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let started = Instant::now();
    let error = with_testing(Some(Testing::new()), || always_times_out(&calls)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "no real wait");
    assert_eq!(calls.get(), 5);
    assert_eq!(common::media_error(&error).attempts(), 5);
    assert_eq!(logs.waits_ms(), [0, 0, 0, 0]);
    assert!(
        logs.messages()[0].ends_with("waiting 0.0s"),
        "{:?}",
        logs.messages()
    );
}

#[test]
fn a_cap_holds_every_call_to_fewer_attempts() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let error = with_testing(Some(Testing::new().max_attempts(2)), || {
        always_times_out(&calls)
    })
    .unwrap_err();
    assert_eq!(calls.get(), 2);
    assert_eq!(error.to_string(), "Failed after 2 retries: timed out");
    assert_eq!(
        logs.messages(),
        [
            "Retry 1/2 after timed out: waiting 0.0s",
            "Giving up after 2 attempts (all attempts failed): timed out"
        ]
    );
}

#[tokio::test]
async fn an_async_fn_waits_zero_too() {
    let calls = Cell::new(0);
    let started = Instant::now();
    // The mode is read when the call first fails, during a poll: a thread's scope around each
    // poll covers the future wherever it runs (a test binary can instead call `set_testing`
    // once, for the whole process).
    let error = {
        let mut future = std::pin::pin!(always_times_out_async(&calls));
        std::future::poll_fn(|cx| {
            with_testing(Some(Testing::new().max_attempts(3)), || {
                future.as_mut().poll(cx)
            })
        })
        .await
        .unwrap_err()
    };
    assert!(started.elapsed() < Duration::from_secs(1), "no real wait");
    assert_eq!(calls.get(), 3);
    assert!(error.to_string().starts_with("Failed after 3 retries"));
}

#[test]
fn the_closure_api_follows_it_and_off_means_off() {
    static POLICY: RetryPolicy = RetryPolicy::new();
    let calls = Cell::new(0);
    let outcome = with_testing(Some(Testing::new().max_attempts(2)), || {
        (|| {
            calls.set(calls.get() + 1);
            Err::<(), _>(io::Error::from(io::ErrorKind::TimedOut))
        })
        .retry(&POLICY)
        .call()
    });
    assert!(outcome.is_err());
    assert_eq!(calls.get(), 2);

    // Off: the policy's own waits come back (measured on the virtual clock, not slept).
    let calls = Cell::new(0);
    let ((), clock) = common::on_virtual_clock(|| {
        let _ = with_testing(None, || always_times_out(&calls));
    });
    assert_eq!(calls.get(), 5);
    assert!(clock.elapsed() >= Duration::from_secs(2 + 4 + 8 + 16));
}
