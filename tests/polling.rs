//! Retrying an `Ok` that says "not ready yet" (`not_ready`), and cutting off an attempt that
//! runs too long (`attempt_timeout`), through the attribute (README, "Polling and attempt
//! timeouts"): sync on the virtual clock, async on tokio's paused clock.

mod common;

use std::cell::Cell;
use std::io;
use std::time::Duration;

use resilience::{AttemptTimedOut, GiveUpReason, retry_with_backoff};
use tracing::Level;

/// A long operation, as an API reports it: a file upload that is `PROCESSING` until it is
/// `ACTIVE` (Gemini's Files API).
#[derive(Debug, Clone, PartialEq)]
struct Upload {
    state: &'static str,
}

fn is_processing(upload: &Upload) -> bool {
    upload.state == "PROCESSING"
}

#[retry_with_backoff(max_retries = 5, jitter = 0, not_ready = is_processing)]
fn file_state(polls: &Cell<u32>, ready_after: u32) -> io::Result<Upload> {
    polls.set(polls.get() + 1);
    let state = if polls.get() > ready_after {
        "ACTIVE"
    } else {
        "PROCESSING"
    };
    Ok(Upload { state })
}

#[test]
fn a_value_that_is_not_ready_is_polled_again_with_the_same_waits() {
    let (logs, _guard) = common::capture();
    let polls = Cell::new(0);
    let (upload, clock) = common::on_virtual_clock(|| file_state(&polls, 2));
    assert_eq!(upload.expect("active").state, "ACTIVE");
    assert_eq!(polls.get(), 3);
    assert_eq!(
        clock.sleeps(),
        [Duration::from_secs(2), Duration::from_secs(4)]
    );
    assert_eq!(
        logs.messages(),
        [
            "Retry 1/5 after the value is not ready: waiting 2.0s",
            "Retry 2/5 after the value is not ready: waiting 4.0s",
            "Success on attempt 3"
        ]
    );
}

#[test]
fn a_value_never_ready_gives_up_saying_so() {
    let polls = Cell::new(0);
    let (outcome, _) = common::on_virtual_clock(|| file_state(&polls, 99));
    let error = outcome.expect_err("never active");
    assert_eq!(polls.get(), 5);
    let give_up = common::media_error(&error);
    assert_eq!(give_up.reason(), GiveUpReason::NeverReady);
    assert_eq!(give_up.attempts(), 5);
    assert_eq!(
        error.to_string(),
        "Failed after 5 retries: the value is not ready"
    );
}

#[retry_with_backoff(max_retries = 3, jitter = 0, not_ready = |u: &Upload| is_processing(u))]
async fn file_state_async(polls: &Cell<u32>) -> io::Result<Upload> {
    polls.set(polls.get() + 1);
    tokio::task::yield_now().await;
    let state = if polls.get() > 1 {
        "ACTIVE"
    } else {
        "PROCESSING"
    };
    Ok(Upload { state })
}

#[tokio::test(start_paused = true)]
async fn an_async_poll_waits_on_tokio_s_clock() {
    let polls = Cell::new(0);
    let started = tokio::time::Instant::now();
    assert_eq!(
        file_state_async(&polls).await.expect("active").state,
        "ACTIVE"
    );
    assert_eq!(polls.get(), 2);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

/// Hangs on its first attempt, answers at once on the others.
#[retry_with_backoff(max_retries = 3, jitter = 0, attempt_timeout = 5.0)]
async fn hangs_once(calls: &Cell<u32>) -> io::Result<u32> {
    calls.set(calls.get() + 1);
    if calls.get() == 1 {
        std::future::pending::<()>().await;
    }
    Ok(calls.get())
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_attempt_timeout_is_cut_off_and_retried() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let started = tokio::time::Instant::now();
    assert_eq!(hangs_once(&calls).await.expect("the second attempt"), 2);
    // Cut off after 5 s, then the backoff's 2 s.
    assert_eq!(started.elapsed(), Duration::from_secs(7));
    assert_eq!(
        logs.lines(),
        [
            (
                Level::WARN,
                "Retry 1/3 after the attempt ran past its attempt_timeout of 5.0s: waiting 2.0s"
                    .to_owned()
            ),
            (Level::INFO, "Success on attempt 2".to_owned()),
        ]
    );
}

#[retry_with_backoff(max_retries = 2, jitter = 0, attempt_timeout = 1.0)]
async fn always_hangs() -> io::Result<()> {
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn every_attempt_cut_off_gives_up_with_the_timeout_as_the_last_error() {
    let error = always_hangs().await.expect_err("never answers");
    let give_up = common::media_error(&error);
    assert_eq!(give_up.reason(), GiveUpReason::AttemptsExhausted);
    assert_eq!(give_up.attempts(), 2);
    assert_eq!(
        give_up.last_error::<AttemptTimedOut>(),
        Some(&AttemptTimedOut {
            attempt_timeout: Duration::from_secs(1)
        })
    );
}

/// The bound on the whole call stays `timeout`: when it ends first, the call gives up at once
/// rather than count another attempt timeout.
#[retry_with_backoff(max_retries = 5, jitter = 0, attempt_timeout = 10.0, timeout = 3.0)]
async fn hangs_past_the_call_timeout() -> io::Result<()> {
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_call_timeout_ending_first_gives_up_at_once() {
    let started = tokio::time::Instant::now();
    let error = hangs_past_the_call_timeout().await.expect_err("cut off");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let give_up = common::media_error(&error);
    assert_eq!(
        give_up.reason(),
        GiveUpReason::DeadlineExceeded {
            timeout: Duration::from_secs(3)
        }
    );
    assert_eq!(give_up.attempts(), 1);
}

/// The closure API honours the policy's `attempt_timeout` too.
#[tokio::test(start_paused = true)]
async fn the_closure_api_cuts_off_an_attempt_at_its_attempt_timeout() {
    use resilience::{RetryPolicy, Retryable};

    static POLICY: RetryPolicy = match RetryPolicy::builder()
        .max_retries(3)
        .jitter(Duration::ZERO)
        .attempt_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(policy) => policy,
        Err(_) => panic!("a valid policy"),
    };
    let calls = Cell::new(0);
    let started = tokio::time::Instant::now();
    let answer = (|| async {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            std::future::pending::<()>().await;
        }
        Ok::<_, io::Error>(calls.get())
    })
    .retry(&POLICY)
    .await
    .expect("the second attempt");
    assert_eq!(answer, 2);
    assert_eq!(started.elapsed(), Duration::from_secs(5 + 2));
}
