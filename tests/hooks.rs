//! The attribute's hooks (README, "Hooks"): `on_retry` sees each failure that is retried (its
//! cause: the error, the value not ready, or the attempt cut off; the attempt that failed; the
//! wait that follows) and `on_give_up` the give-up error;
//! both run inline and in order, on the calling thread, and a panic in one is not caught.

mod common;

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use resilience::{GiveUpReason, MediaProcessingError, RetryCause, retry_with_backoff};

thread_local! {
    /// What the hooks saw, in order.
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn seen() -> Vec<String> {
    SEEN.with(|seen| seen.take())
}

fn count_retry<T>(cause: RetryCause<'_, io::Error, T>, attempt: u32, wait: Duration) {
    let kind = cause.error().map(io::Error::kind);
    SEEN.with(|seen| {
        seen.borrow_mut()
            .push(format!("retry {attempt} after {kind:?} in {wait:?}"))
    });
}

fn alert(give_up: &MediaProcessingError) {
    SEEN.with(|seen| {
        seen.borrow_mut()
            .push(format!("gave up after {}", give_up.attempts()))
    });
}

#[retry_with_backoff(max_retries = 3, jitter = 0, on_retry = count_retry::<()>, on_give_up = alert)]
fn always_resets(calls: &mut u32) -> io::Result<()> {
    *calls += 1;
    SEEN.with(|seen| seen.borrow_mut().push(format!("attempt {calls}")));
    Err(io::Error::from(io::ErrorKind::ConnectionReset))
}

#[test]
fn the_hooks_run_inline_in_order_with_the_error_the_attempt_and_the_wait() {
    let mut calls = 0;
    let (error, clock) = common::on_virtual_clock(|| always_resets(&mut calls));
    assert!(error.is_err());
    assert_eq!(
        seen(),
        [
            "attempt 1",
            "retry 1 after Some(ConnectionReset) in 2s",
            "attempt 2",
            "retry 2 after Some(ConnectionReset) in 4s",
            "attempt 3",
            "gave up after 3",
        ]
    );
    assert_eq!(
        clock.sleeps(),
        [Duration::from_secs(2), Duration::from_secs(4)]
    );
}

/// Closures, and an error that is not retried: `on_retry` never runs, nor `on_give_up` (the
/// error is returned unchanged, not given up on).
#[retry_with_backoff(
    max_retries = 3,
    jitter = 0,
    on_retry = |_, _, _| SEEN.with(|s| s.borrow_mut().push("retry".into())),
    on_give_up = |_: &MediaProcessingError| SEEN.with(|s| s.borrow_mut().push("gave up".into())),
)]
fn denied() -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::PermissionDenied))
}

#[test]
fn a_non_retryable_error_calls_neither_hook() {
    let (error, _) = common::on_virtual_clock(denied);
    assert_eq!(error.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert!(seen().is_empty());
}

#[retry_with_backoff(max_retries = 2, jitter = 0, timeout = 0.05, on_give_up = alert)]
async fn hangs() -> io::Result<()> {
    std::future::pending::<()>().await;
    Ok(())
}

/// The `timeout` cutting an async attempt off is a give-up too.
#[tokio::test(start_paused = true)]
async fn a_timeout_that_cuts_an_attempt_off_calls_on_give_up() {
    let error = hangs().await.unwrap_err();
    let give_up = common::media_error(&error);
    assert!(matches!(
        give_up.reason(),
        GiveUpReason::DeadlineExceeded { .. }
    ));
    assert_eq!(seen(), ["gave up after 1"]);
}

#[retry_with_backoff(max_retries = 3, jitter = 0, on_retry = count_retry::<u32>)]
async fn resets_twice(calls: &mut u32) -> io::Result<u32> {
    *calls += 1;
    if *calls < 3 {
        return Err(io::Error::from(io::ErrorKind::ConnectionReset));
    }
    Ok(*calls)
}

#[tokio::test(start_paused = true)]
async fn an_async_fn_calls_on_retry_before_each_wait() {
    let mut calls = 0;
    assert_eq!(resets_twice(&mut calls).await.expect("third"), 3);
    assert_eq!(
        seen(),
        [
            "retry 1 after Some(ConnectionReset) in 2s",
            "retry 2 after Some(ConnectionReset) in 4s"
        ]
    );
}

fn panicking_hook(_: RetryCause<'_, io::Error, ()>, _: u32, _: Duration) {
    panic!("the hook failed");
}

#[retry_with_backoff(max_retries = 3, jitter = 0, on_retry = panicking_hook)]
fn with_a_panicking_hook(calls: &mut u32) -> io::Result<()> {
    *calls += 1;
    Err(io::Error::from(io::ErrorKind::ConnectionReset))
}

/// A hook's panic is the caller's: not caught, not retried, no further attempt.
#[test]
fn a_panic_in_a_hook_is_not_caught() {
    let mut calls = 0;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::on_virtual_clock(|| with_a_panicking_hook(&mut calls))
    }));
    let panic = caught.expect_err("the hook's panic reaches the caller");
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"the hook failed"));
    assert_eq!(calls, 1);
}

#[derive(Debug)]
struct Operation {
    done: bool,
}

fn not_done(operation: &Operation) -> bool {
    !operation.done
}

/// The not-ready value itself, and an attempt cut off, reach `on_retry` too.
fn describe(cause: RetryCause<'_, io::Error, Operation>, attempt: u32, wait: Duration) {
    let what = match cause {
        RetryCause::Error(error) => format!("error {:?}", error.kind()),
        RetryCause::NotReady(operation) => format!("not ready {operation:?}"),
        RetryCause::TimedOut(cut_off) => format!("cut off after {:?}", cut_off.attempt_timeout),
    };
    SEEN.with(|seen| {
        seen.borrow_mut()
            .push(format!("{attempt}: {what} in {wait:?}"))
    });
}

#[retry_with_backoff(
    max_retries = 4,
    jitter = 0,
    attempt_timeout = 5.0,
    not_ready = not_done,
    on_retry = describe
)]
async fn poll(calls: &std::cell::Cell<u32>) -> io::Result<Operation> {
    calls.set(calls.get() + 1);
    match calls.get() {
        1 => std::future::pending::<()>().await,
        2 => return Ok(Operation { done: false }),
        3 => return Err(io::Error::from(io::ErrorKind::ConnectionReset)),
        _ => {}
    }
    Ok(Operation { done: true })
}

#[tokio::test(start_paused = true)]
async fn on_retry_sees_the_error_the_not_ready_value_and_the_attempt_cut_off() {
    let calls = std::cell::Cell::new(0);
    assert!(poll(&calls).await.expect("done").done);
    assert_eq!(
        seen(),
        [
            "1: cut off after 5s in 2s",
            "2: not ready Operation { done: false } in 4s",
            "3: error ConnectionReset in 8s",
        ]
    );
}
