//! The attribute's arguments beyond literals (constants, `policy = ..`, `crate = ..`), what
//! each by-value argument costs (clones), and where the events go (their target, the span of
//! `#[tracing::instrument]`): the README's "Arguments", "Parameters" and "Log events".

mod common;

use common::on_virtual_clock;

use std::cell::Cell;
use std::io;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::{RetryPolicy, retry_with_backoff};

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------------------------------------
// Constants, checked when the crate compiles

const ATTEMPTS: u32 = 3;
const BASE: f64 = 0.5;
const NO_JITTER: f64 = 0.0;

#[retry_with_backoff(max_retries = ATTEMPTS, base_delay = BASE, jitter = NO_JITTER)]
fn from_constants(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn constants_set_the_policy() {
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| from_constants(&calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 3);
    assert_eq!(
        clock.sleeps(),
        [secs(1.0), secs(2.0)],
        "0.5 x 2^1, 0.5 x 2^2"
    );
}

struct Uploader;

impl Uploader {
    const ATTEMPTS: u32 = 2;

    #[retry_with_backoff(max_retries = Self::ATTEMPTS, jitter = 0)]
    fn upload(&self, calls: &Cell<u32>) -> io::Result<()> {
        calls.set(calls.get() + 1);
        Err(reset())
    }
}

#[test]
fn an_associated_constant_works_in_an_impl() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| Uploader.upload(&calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// `policy = ..`: a policy made at run time

/// A policy read from configuration at start-up (here, a text).
static FROM_CONFIG: LazyLock<RetryPolicy> = LazyLock::new(|| {
    let config = "max_retries=4 base_ms=10";
    let value = |key: &str| {
        config
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    };
    RetryPolicy::builder()
        .max_retries(u32::try_from(value("max_retries")).unwrap_or(1))
        .base_delay(Duration::from_millis(value("base_ms")))
        .jitter(Duration::ZERO)
        .build()
        .unwrap_or_default()
});

#[retry_with_backoff(policy = &FROM_CONFIG)]
fn configured(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn a_policy_built_at_run_time_is_used() {
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| configured(&calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 4);
    assert_eq!(
        clock.sleeps(),
        [
            Duration::from_millis(20),
            Duration::from_millis(40),
            Duration::from_millis(80)
        ]
    );
}

struct Client {
    policy: RetryPolicy,
}

impl Client {
    #[retry_with_backoff(policy = &self.policy)]
    fn fetch(&self, calls: &Cell<u32>) -> io::Result<()> {
        calls.set(calls.get() + 1);
        Err(reset())
    }
}

#[retry_with_backoff(policy = policy)]
fn with_policy_argument(policy: &RetryPolicy, calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn the_policy_expression_may_use_self_and_the_arguments() {
    let policy = RetryPolicy::builder()
        .max_retries(2)
        .jitter(Duration::ZERO)
        .build()
        .unwrap_or_default();
    let client = Client { policy };
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| client.fetch(&calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 2);
    let calls = Cell::new(0);
    let one = RetryPolicy::builder()
        .max_retries(1)
        .build()
        .unwrap_or_default();
    let (result, clock) = on_virtual_clock(|| with_policy_argument(&one, &calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
}

struct Sender {
    policy: RetryPolicy,
    sent: u32,
}

impl Sender {
    /// The policy is read from `self`, which the attempts then borrow mutably.
    #[retry_with_backoff(policy = &self.policy)]
    fn send(&mut self) -> io::Result<()> {
        self.sent += 1;
        Err(reset())
    }
}

#[derive(Clone)]
struct Job {
    retry: RetryPolicy,
    body: Vec<u8>,
}

/// The policy is read from a by-value argument, which the last attempt then takes.
#[retry_with_backoff(policy = &job.retry)]
fn submit(job: Job, calls: &Cell<u32>) -> io::Result<usize> {
    calls.set(calls.get() + 1);
    drop(job.body);
    Err(reset())
}

#[test]
fn the_policy_expression_may_borrow_what_the_attempts_take() {
    let two = RetryPolicy::builder()
        .max_retries(2)
        .jitter(Duration::ZERO)
        .build()
        .unwrap_or_default();
    let mut uploader = Sender {
        policy: two,
        sent: 0,
    };
    let (result, _) = on_virtual_clock(|| uploader.send());
    assert!(result.is_err());
    assert_eq!(uploader.sent, 2);
    let calls = Cell::new(0);
    let job = Job {
        retry: two,
        body: b"image".to_vec(),
    };
    let (result, _) = on_virtual_clock(|| submit(job, &calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// `crate = ..`: the attribute through a facade that re-exports it

mod facade {
    pub use ::resilience as retries;
}

#[facade::retries::retry_with_backoff(crate = facade::retries, max_retries = 2, jitter = 0)]
fn through_a_facade(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn a_renamed_or_re_exported_crate_is_named_with_crate() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| through_a_facade(&calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// By-value arguments: a clone for every attempt but the last

static CLONES: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
struct Counted(Vec<u8>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::SeqCst);
        Counted(self.0.clone())
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn send_counted(body: Counted, fail: &Cell<u32>) -> io::Result<usize> {
    let len = body.0.len();
    drop(body); // each attempt owns its value
    if fail.get() > 0 {
        fail.set(fail.get() - 1);
        return Err(reset());
    }
    Ok(len)
}

#[retry_with_backoff(max_retries = 1)]
fn send_once(body: Counted) -> io::Result<usize> {
    Ok(body.0.len())
}

/// Clones made while `f` runs; the tests that count run one at a time on this counter.
fn clones_during(f: impl FnOnce()) -> u32 {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_me = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = CLONES.load(Ordering::SeqCst);
    f();
    CLONES.load(Ordering::SeqCst) - before
}

#[test]
fn the_last_attempt_takes_the_callers_value_and_the_others_a_clone() {
    let body = || Counted(b"image bytes".to_vec());
    let first_succeeds = clones_during(|| {
        assert_eq!(send_counted(body(), &Cell::new(0)).ok(), Some(11));
    });
    assert_eq!(
        first_succeeds, 1,
        "the first attempt of three works on a copy"
    );
    let all_fail = clones_during(|| {
        let (result, _) = on_virtual_clock(|| send_counted(body(), &Cell::new(3)));
        assert!(result.is_err());
    });
    assert_eq!(all_fail, 2, "attempts 1 and 2 clone, attempt 3 moves");
    let second_succeeds = clones_during(|| {
        let (result, _) = on_virtual_clock(|| send_counted(body(), &Cell::new(1)));
        assert_eq!(result.ok(), Some(11));
    });
    assert_eq!(second_succeeds, 2);
    let only_attempt = clones_during(|| {
        assert_eq!(send_once(body()).ok(), Some(11));
    });
    assert_eq!(only_attempt, 0, "with one attempt, it takes the value");
}

// ---------------------------------------------------------------------------------------------
// The events' target and span

#[retry_with_backoff(max_retries = 2, jitter = 0)]
fn logged(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn events_carry_the_annotated_functions_module_as_their_target() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let _ = on_virtual_clock(|| logged(&calls));
    let records = logs.records();
    assert_eq!(records.len(), 2, "a retry and a give-up");
    for record in records {
        assert_eq!(record.target, module_path!(), "{}", record.message);
        assert_eq!(record.field("function"), Some("logged"));
    }
}

#[retry_with_backoff(max_retries = 2, jitter = 0)]
#[tracing::instrument(skip(calls))]
fn instrumented(calls: &Cell<u32>, image: &str) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn with_tracing_instrument_below_the_events_are_inside_its_span() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let _ = on_virtual_clock(|| instrumented(&calls, "beach.jpg"));
    let records = logs.records();
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(
            record.span.as_deref(),
            Some("instrumented"),
            "{}",
            record.message
        );
    }
}

#[retry_with_backoff(max_retries = 2, jitter = 0)]
#[tracing::instrument(skip(calls))]
async fn instrumented_async(calls: &AtomicU32, image: &str) -> io::Result<()> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(reset())
}

#[tokio::test(start_paused = true)]
async fn with_tracing_instrument_below_an_async_fn_s_events_are_inside_its_span() {
    let (logs, _guard) = common::capture();
    let calls = AtomicU32::new(0);
    let _ = instrumented_async(&calls, "beach.jpg").await;
    let records = logs.records();
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(
            record.span.as_deref(),
            Some("instrumented_async"),
            "{}",
            record.message
        );
    }
}
