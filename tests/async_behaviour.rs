//! `async fn`s under `#[retry_with_backoff]`: the same rules as sync, on tokio's
//! paused clock, plus `timeout` cutting a slow attempt, cancellation on drop and `Send`.

mod common;

use std::error::Error;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::{DeadlineExceeded, GiveUpReason, MediaProcessingError, retry_with_backoff};
use tokio::time::Instant;
use tracing::Level;

const RESET_TEXT: &str = "connection reset by peer";

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, RESET_TEXT)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn counter() -> Arc<AtomicU32> {
    Arc::new(AtomicU32::new(0))
}

fn media_error(error: &io::Error) -> &MediaProcessingError {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<MediaProcessingError>())
        .unwrap_or_else(|| panic!("not a give-up error: {error:?}"))
}

fn assert_send<T: Send>(_: &T) {}

/// Lets other tasks (and timers already due) run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Attempts and waits

#[retry_with_backoff(max_retries = 5, jitter = 0)]
async fn flaky(calls: Arc<AtomicU32>, succeed_on: u32) -> io::Result<u32> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    // A real await inside the attempt, so the body is a genuine future.
    tokio::task::yield_now().await;
    if n < succeed_on {
        return Err(reset());
    }
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn async_flaky_fn_failing_n_minus_1_times_succeeds_on_attempt_n() {
    let expected_elapsed = [0.0, 2.0, 6.0, 14.0, 30.0];
    for n in 1..=5u32 {
        let calls = counter();
        let start = Instant::now();
        let result = flaky(calls.clone(), n).await;
        assert_eq!(result.unwrap(), n);
        assert_eq!(calls.load(Ordering::SeqCst), n);
        assert_eq!(
            start.elapsed(),
            secs(expected_elapsed[n as usize - 1]),
            "virtual time is the sum of the waits"
        );
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
async fn always_reset(calls: Arc<AtomicU32>) -> io::Result<()> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(reset())
}

#[tokio::test(start_paused = true)]
async fn async_always_failing_fn_stops_after_max_retries_and_waits_2s_then_4s() {
    let (logs, _guard) = common::capture();
    let calls = counter();
    let start = Instant::now();
    let err = always_reset(calls.clone()).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), secs(6.0));
    assert_eq!(logs.waits_ms(), vec![2000, 4000]);
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let mpe = media_error(&err);
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}

#[retry_with_backoff(max_retries = 5)]
async fn default_jitter(calls: Arc<AtomicU32>) -> io::Result<()> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(reset())
}

#[tokio::test(start_paused = true)]
async fn async_default_jitter_waits_stay_in_window_and_elapsed_matches_the_logged_waits() {
    for _ in 0..20 {
        let (logs, _guard) = common::capture();
        let calls = counter();
        let start = Instant::now();
        let _ = default_jitter(calls.clone()).await;
        let elapsed = start.elapsed();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let waits = logs.waits_ms();
        assert_eq!(waits.len(), 4);
        for (i, &ms) in waits.iter().enumerate() {
            let low = 1000u64 << (i + 1);
            assert!((low..low + 1000).contains(&ms), "wait {}: {ms} ms", i + 1);
        }
        // `delay_ms` is truncated and tokio's timer works in whole milliseconds.
        let logged = Duration::from_millis(waits.iter().sum());
        assert!(
            elapsed >= logged && elapsed <= logged + Duration::from_millis(8),
            "elapsed {elapsed:?} vs logged waits {logged:?}"
        );
    }
}

#[retry_with_backoff(max_retries = 1)]
async fn one_attempt(calls: Arc<AtomicU32>) -> io::Result<()> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(reset())
}

#[tokio::test(start_paused = true)]
async fn async_max_retries_1_makes_one_attempt_and_gives_up() {
    let calls = counter();
    let start = Instant::now();
    let err = one_attempt(calls.clone()).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        err.to_string(),
        format!("Failed after 1 retries: {RESET_TEXT}")
    );
}

// ---------------------------------------------------------------------------------------------
// Logs

#[tokio::test(start_paused = true)]
async fn async_logs_match_the_sync_lines() {
    let (logs, _guard) = common::capture();
    let calls = counter();
    assert_eq!(flaky(calls, 3).await.unwrap(), 3);
    logs.assert_lines(&[
        (
            Level::WARN,
            "Retry 1/5 after connection reset by peer: waiting 2.0s",
        ),
        (
            Level::WARN,
            "Retry 2/5 after connection reset by peer: waiting 4.0s",
        ),
        (Level::INFO, "Success on attempt 3"),
    ]);
    logs.assert_fields("flaky", 5);

    let (logs, _guard) = common::capture();
    assert_eq!(flaky(counter(), 1).await.unwrap(), 1);
    assert!(
        logs.records().is_empty(),
        "first-attempt success logs nothing"
    );

    let (logs, _guard) = common::capture();
    let _ = always_reset(counter()).await;
    assert_eq!(logs.at_level(Level::ERROR).len(), 1, "{:?}", logs.records());
    assert_eq!(logs.records().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Classification

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Http(String),
    #[error("upstream failed")]
    Upstream(#[source] io::Error),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
async fn api_call(calls: Arc<AtomicU32>, make: fn() -> ApiError) -> Result<(), ApiError> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Err(make())
}

#[tokio::test(start_paused = true)]
async fn async_non_retryable_error_is_returned_unchanged_at_once() {
    let (logs, _guard) = common::capture();
    let calls = counter();
    let start = Instant::now();
    let err = api_call(calls.clone(), || {
        ApiError::Http("401 Unauthorized: API key not valid".into())
    })
    .await
    .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(&err, ApiError::Http(m) if m == "401 Unauthorized: API key not valid"));
    assert_eq!(logs.records().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn async_source_chain_and_text_are_classified_and_give_up_reaches_a_thiserror_enum() {
    let calls = counter();
    let err = api_call(calls.clone(), || ApiError::Upstream(reset()))
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let ApiError::Exhausted(mpe) = &err else {
        panic!("expected Exhausted, got {err:?}");
    };
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: upstream failed: {RESET_TEXT}")
    );
    assert_eq!(mpe.attempts(), 3);
    assert!(matches!(
        mpe.last_error::<ApiError>(),
        Some(ApiError::Upstream(_))
    ));

    let calls = counter();
    let _ = api_call(calls.clone(), || {
        ApiError::Http("HTTP 503 Service Unavailable".into())
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[retry_with_backoff(
    max_retries = 3,
    jitter = 0,
    retry_if = |e: &ApiError| matches!(e, ApiError::Http(m) if m.starts_with("flaky"))
)]
async fn api_with_predicate(calls: Arc<AtomicU32>, text: &'static str) -> Result<(), ApiError> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Http(text.into()))
}

#[tokio::test(start_paused = true)]
async fn async_retry_if_closure_decides() {
    let calls = counter();
    let _ = api_with_predicate(calls.clone(), "flaky backend").await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let calls = counter();
    let err = api_with_predicate(calls.clone(), "503 but refused by the predicate")
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(err, ApiError::Http(m) if m == "503 but refused by the predicate"));
}

// ---------------------------------------------------------------------------------------------
// `timeout`

#[retry_with_backoff(max_retries = 5, timeout = 3)]
async fn slow_body(calls: Arc<AtomicU32>) -> io::Result<()> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn async_timeout_cuts_a_slow_attempt_at_the_deadline() {
    let (logs, _guard) = common::capture();
    let calls = counter();
    let start = Instant::now();
    let err = slow_body(calls.clone()).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        secs(3.0),
        "fails at the deadline, not after the 10 s body"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let mpe = media_error(&err);
    assert_eq!(mpe.attempts(), 1);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::DeadlineExceeded { timeout: secs(3.0) }
    );
    assert_eq!(
        mpe.last_error::<DeadlineExceeded>(),
        Some(&DeadlineExceeded { timeout: secs(3.0) })
    );
    assert!(
        err.to_string().starts_with("Failed after 1 retries: "),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("Failed after 1 retries: {}", mpe.last_error_message())
    );
    // The README's reason for an async attempt cut off, in the one event of the call.
    logs.assert_lines(&[(
        Level::ERROR,
        "Giving up after 1 attempt (the timeout of 3.0s ran out): no answer within the timeout of 3.0s",
    )]);
    logs.assert_fields("slow_body", 5);
}

#[retry_with_backoff(max_retries = 5, jitter = 0, timeout = 5)]
async fn fast_failures_with_timeout(calls: Arc<AtomicU32>) -> io::Result<()> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(reset())
}

#[tokio::test(start_paused = true)]
async fn async_timeout_gives_up_at_once_instead_of_a_wait_past_the_deadline() {
    let calls = counter();
    let start = Instant::now();
    let err = fast_failures_with_timeout(calls.clone()).await.unwrap_err();
    // Wait 2 s ends at 2 s; the 4 s wait would end at 6 s > 5 s: fail at once at 2 s.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), secs(2.0));
    let mpe = media_error(&err);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(4.0),
            timeout: secs(5.0)
        }
    );
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        err.to_string(),
        format!("Failed after 2 retries: {RESET_TEXT}")
    );
}

#[retry_with_backoff(max_retries = 5, jitter = 0, timeout = 7)]
async fn slowish_attempts(calls: Arc<AtomicU32>) -> io::Result<()> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Err(reset())
}

#[tokio::test(start_paused = true)]
async fn async_timeout_bounds_attempts_and_waits_together() {
    let calls = counter();
    let start = Instant::now();
    let err = slowish_attempts(calls.clone()).await.unwrap_err();
    // 0-2 attempt 1, 2-4 wait, 4-6 attempt 2, a 4 s wait would end at 10 > 7: fail at 6 s.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), secs(6.0));
    assert_eq!(
        media_error(&err).reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(4.0),
            timeout: secs(7.0)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_never_blocks_the_executor_thread() {
    let calls = counter();
    let start = Instant::now();
    let ticker = {
        let calls = calls.clone();
        async move {
            let mut seen = Vec::new();
            // Off the retry's own instants (2 s, 6 s), so no two timers tie.
            for at in [1.0, 2.5, 4.0, 5.5] {
                tokio::time::sleep_until(start + secs(at)).await;
                seen.push((start.elapsed(), calls.load(Ordering::SeqCst)));
            }
            seen
        }
    };
    // One thread: the ticker can only run while the retry waits without blocking it.
    let (result, seen) = tokio::join!(always_reset(calls.clone()), ticker);
    assert!(result.is_err());
    assert_eq!(
        seen,
        vec![
            (secs(1.0), 1),
            (secs(2.5), 2),
            (secs(4.0), 2),
            (secs(5.5), 2)
        ]
    );
    assert_eq!(start.elapsed(), secs(6.0));
}

// ---------------------------------------------------------------------------------------------
// Cancellation

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_wait_stops_further_attempts() {
    let calls = counter();
    // The first wait is 2 s; drop the call 1 s into it.
    let outcome = tokio::time::timeout(secs(1.0), always_reset(calls.clone())).await;
    assert!(outcome.is_err(), "still waiting when dropped");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(secs(60.0)).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no attempt after the drop");
}

#[tokio::test(start_paused = true)]
async fn aborting_a_spawned_call_mid_wait_stops_further_attempts() {
    let calls = counter();
    let handle = tokio::spawn(always_reset(calls.clone()));
    tokio::time::sleep(secs(1.0)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    handle.abort();
    let joined = handle.await;
    assert!(joined.unwrap_err().is_cancelled());
    tokio::time::sleep(secs(60.0)).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// `Send` and multi-thread runtimes

struct Client {
    calls: AtomicU32,
}

impl Client {
    #[retry_with_backoff(max_retries = 3, base_delay = 0.001, max_delay = 0.01, jitter = 0)]
    async fn fetch(&self, path: String) -> io::Result<String> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::task::yield_now().await;
        if n < 3 {
            return Err(reset());
        }
        Ok(format!("{path}#{n}"))
    }
}

/// An error type that is not `Send`: it is dropped before each wait.
#[derive(Debug)]
struct LocalError(Rc<str>);

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for LocalError {}

impl From<MediaProcessingError> for LocalError {
    fn from(e: MediaProcessingError) -> Self {
        LocalError(e.to_string().into())
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
async fn local_error(calls: Arc<AtomicU32>) -> Result<(), LocalError> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Err(LocalError("HTTP 503".into()))
}

#[tokio::test(start_paused = true)]
async fn the_future_of_an_annotated_async_fn_is_send() {
    let fut = flaky(counter(), 2);
    assert_send(&fut);
    assert_eq!(fut.await.unwrap(), 2);

    let client = Client {
        calls: AtomicU32::new(0),
    };
    let fut = client.fetch("a/b".to_owned());
    assert_send(&fut);
    drop(fut);

    let fut = slow_body(counter());
    assert_send(&fut);
    drop(fut);

    // Send whenever the body's future is, even with a non-`Send` error type.
    let calls = counter();
    let fut = local_error(calls.clone());
    assert_send(&fut);
    let err = fut.await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(&*err.0, "Failed after 3 retries: HTTP 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_multi_thread_runtime_via_tokio_spawn() {
    let client = Arc::new(Client {
        calls: AtomicU32::new(0),
    });
    let task = {
        let client = client.clone();
        tokio::spawn(async move { client.fetch("images/cat.jpg".to_owned()).await })
    };
    let answer = task
        .await
        .expect("task not panicked")
        .expect("succeeds on attempt 3");
    assert_eq!(answer, "images/cat.jpg#3");
    assert_eq!(client.calls.load(Ordering::SeqCst), 3);

    // Several calls at once, each with its own attempts.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let client = Arc::new(Client {
                calls: AtomicU32::new(0),
            });
            tokio::spawn(async move {
                let answer = client.fetch("x".to_owned()).await;
                (
                    answer.map_err(|e| e.to_string()),
                    client.calls.load(Ordering::SeqCst),
                )
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), (Ok("x#3".to_owned()), 3));
    }
}

// ---------------------------------------------------------------------------------------------
// The future's size: the retry state lives in a box made after a failure

async fn plain_fetch(image: &str, calls: &AtomicU32) -> io::Result<usize> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Ok(image.len())
}

#[retry_with_backoff]
async fn retried_fetch(image: &str, calls: &AtomicU32) -> io::Result<usize> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Ok(image.len())
}

async fn plain_upload(body: String, calls: &AtomicU32) -> io::Result<usize> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Ok(body.len())
}

#[retry_with_backoff]
async fn retried_upload(body: String, calls: &AtomicU32) -> io::Result<usize> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Ok(body.len())
}

#[retry_with_backoff(timeout = 30.0)]
async fn retried_fetch_in_time(image: &str, calls: &AtomicU32) -> io::Result<usize> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Ok(image.len())
}

/// The README's "Performance" states these figures; `--nocapture` prints them.
#[tokio::test]
async fn the_annotated_future_is_at_most_64_bytes_larger_than_the_plain_one() {
    let calls = AtomicU32::new(0);
    let plain = std::mem::size_of_val(&plain_fetch("beach.jpg", &calls));
    let retried = std::mem::size_of_val(&retried_fetch("beach.jpg", &calls));
    println!("borrowed arguments: plain {plain} bytes, annotated {retried} bytes");
    assert!(retried <= plain + 64, "{retried} > {plain} + 64");

    // With a `timeout`, the first attempt runs under tokio's timer, as it would under
    // `tokio::time::timeout` written by hand.
    let by_hand = std::mem::size_of_val(&tokio::time::timeout(
        Duration::from_secs(30),
        plain_fetch("beach.jpg", &calls),
    ));
    let retried = std::mem::size_of_val(&retried_fetch_in_time("beach.jpg", &calls));
    println!(
        "with a timeout: tokio::time::timeout(plain) {by_hand} bytes, annotated {retried} bytes"
    );
    assert!(retried <= by_hand + 64, "{retried} > {by_hand} + 64");

    // A by-value argument is held twice while the first attempt runs: the caller's value,
    // kept for the last attempt, and the attempt's copy.
    let plain = std::mem::size_of_val(&plain_upload(String::new(), &calls));
    let retried = std::mem::size_of_val(&retried_upload(String::new(), &calls));
    println!("a `String` by value: plain {plain} bytes, annotated {retried} bytes");
    let kept = std::mem::size_of::<String>();
    assert!(
        retried <= plain + 64 + kept,
        "{retried} > {plain} + 64 + {kept}"
    );
}
