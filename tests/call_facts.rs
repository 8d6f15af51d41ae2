//! The facts of a call, whatever its ending (README, "The facts of a call"): how many
//! attempts it made and how long it waited, through the attribute, sync on the virtual clock
//! and async on tokio's paused clock. Before `resilience::stats`, a 503 then a 400 came back as
//! the bare 400, and the caller could not learn that it took two attempts and a 2 s wait.

mod common;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use resilience::http::HttpError;
use resilience::stats::{CallStats, record, record_async};
use resilience::{Classify, MediaProcessingError, retry_with_backoff};

#[derive(Debug, thiserror::Error, Classify)]
enum ApiError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

/// Answers the statuses in `script`, one per attempt, then 200.
#[retry_with_backoff(max_retries = 5, jitter = 0)]
fn call(script: &[u16], attempt: &Cell<usize>) -> Result<&'static str, ApiError> {
    let n = attempt.get();
    attempt.set(n + 1);
    match script.get(n) {
        Some(&status) => Err(HttpError::new(status, None, "scripted").into()),
        None => Ok("ok"),
    }
}

#[retry_with_backoff(max_retries = 5, jitter = 0)]
async fn call_async(script: &[u16], attempt: &Cell<usize>) -> Result<&'static str, ApiError> {
    let n = attempt.get();
    attempt.set(n + 1);
    tokio::task::yield_now().await;
    match script.get(n) {
        Some(&status) => Err(HttpError::new(status, None, "scripted").into()),
        None => Ok("ok"),
    }
}

fn on_clock(script: &[u16]) -> (Result<&'static str, ApiError>, CallStats) {
    let attempt = Cell::new(0);
    common::on_virtual_clock(|| record(|| call(script, &attempt))).0
}

#[test]
fn a_first_attempt_success_is_one_attempt_and_no_wait() {
    let (outcome, stats) = on_clock(&[]);
    assert_eq!(outcome.expect("ok"), "ok");
    assert_eq!(stats, CallStats::default());
    assert_eq!(stats.attempts(), 1);
}

#[test]
fn a_success_after_retries_tells_its_attempts_and_waits() {
    let (outcome, stats) = on_clock(&[503, 429]);
    assert_eq!(outcome.expect("ok"), "ok");
    assert_eq!(stats.attempts(), 3);
    assert_eq!(stats.waited, Duration::from_secs(2 + 4));
}

#[test]
fn a_non_retryable_error_after_retries_is_returned_unchanged_with_its_facts() {
    let (outcome, stats) = on_clock(&[503, 400]);
    let Err(ApiError::Http(http)) = outcome else {
        panic!("the 400 itself: {outcome:?}");
    };
    assert_eq!(http.status(), 400);
    assert_eq!(stats.attempts(), 2);
    assert_eq!(stats.waited, Duration::from_secs(2));
}

#[test]
fn a_give_up_states_the_same_facts_as_the_scope() {
    let (outcome, stats) = on_clock(&[503; 5]);
    let Err(ApiError::GaveUp(give_up)) = outcome else {
        panic!("a give-up: {outcome:?}");
    };
    assert_eq!(give_up.attempts(), 5);
    assert_eq!(stats.attempts(), 5);
    assert_eq!(give_up.waited(), Duration::from_secs(2 + 4 + 8 + 16));
    assert_eq!(stats.waited, give_up.waited());
}

#[test]
fn one_scope_adds_up_several_calls() {
    let attempt = Cell::new(0);
    let second = Cell::new(0);
    let ((first, again), stats) = common::on_virtual_clock(|| {
        record(|| (call(&[503], &attempt), call(&[503, 503], &second)))
    })
    .0;
    assert!(first.is_ok() && again.is_ok());
    assert_eq!(stats.retries, 3);
    assert_eq!(stats.waited, Duration::from_secs(2 + 2 + 4));
}

#[tokio::test(start_paused = true)]
async fn an_async_call_tells_its_facts_too() {
    let attempt = Cell::new(0);
    let (outcome, stats) = record_async(call_async(&[503, 400], &attempt)).await;
    assert!(matches!(outcome, Err(ApiError::Http(ref e)) if e.status() == 400));
    assert_eq!(stats.attempts(), 2);
    assert_eq!(stats.waited, Duration::from_secs(2));
}

/// Fails `failures` times with a 503, then answers; tiny real waits (a multi-thread runtime
/// has no paused clock).
#[retry_with_backoff(max_retries = 5, base_delay = 0.005, jitter = 0)]
async fn call_sendable(failures: usize, attempt: &AtomicUsize) -> Result<usize, ApiError> {
    tokio::task::yield_now().await;
    if attempt.fetch_add(1, Ordering::SeqCst) < failures {
        return Err(HttpError::new(503, None, "busy").into());
    }
    Ok(attempt.load(Ordering::SeqCst))
}

/// The scope follows the future, not the thread: a task moved between worker threads keeps
/// counting into its own scope, and nothing leaks into the thread's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_scope_follows_its_task_across_threads() {
    let task = tokio::spawn(record_async(async {
        let attempt = AtomicUsize::new(0);
        call_sendable(3, &attempt).await
    }));
    let (outcome, stats) = task.await.expect("the task");
    assert_eq!(outcome.expect("ok"), 4);
    assert_eq!(stats.attempts(), 4);
    assert_eq!(stats.waited, Duration::from_millis(10 + 20 + 40));
    let ((), here) = record(|| ());
    assert_eq!(here, CallStats::default());
}
