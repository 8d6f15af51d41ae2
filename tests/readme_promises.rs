//! README promises that no other test pins, each checked through the attribute where the
//! README states it of the attribute: the give-up reasons' texts, the `Not retrying` event,
//! `retry_if` asked before every other rule, a type's own `Classify::retry_after` setting the
//! wait, the default `max_hint` of 120 s, and panics that are neither caught nor retried.
//!
//! No test sleeps: sync calls run on a `VirtualClock`, async ones on tokio's paused clock.

mod common;

use common::on_virtual_clock;

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::{Classify, GiveUpReason, MediaProcessingError, Verdict, retry_with_backoff};
use tracing::Level;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")
}

// ---------------------------------------------------------------------------------------------
// "Log events": the reasons of the ERROR line, as the README's table writes them

#[test]
fn each_give_up_reason_reads_as_the_readme_states() {
    for (reason, text) in [
        (GiveUpReason::AttemptsExhausted, "all attempts failed"),
        (
            GiveUpReason::WaitPastDeadline {
                wait: secs(4.0),
                timeout: secs(5.0),
            },
            "the next wait of 4.0s would end past the timeout of 5.0s",
        ),
        (
            GiveUpReason::DeadlineExceeded { timeout: secs(2.5) },
            "the timeout of 2.5s ran out",
        ),
        (
            GiveUpReason::HintAboveCap {
                retry_after: secs(121.0),
                max_hint: secs(120.0),
            },
            "the server asked to wait 121.0s, more than max_hint 120.0s",
        ),
    ] {
        assert_eq!(reason.to_string(), text, "{reason:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// "Log events": WARN `Not retrying: {error} ({rule})`, with `delay_ms = 0`

/// One variant per rule that can refuse a retry, and one that a rule retries.
#[derive(Debug, thiserror::Error, Classify)]
enum Failure {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{0}")]
    Message(String),
    #[error("the key was refused: 503 Service Unavailable")]
    #[classify(not_retryable)]
    KeyRefused,
    #[error("the upload is still being processed")]
    #[classify(retryable)]
    NotReady,
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

const UNAVAILABLE: &str = "503 Service Unavailable";

/// A Gemini-style 429 whose `quotaId` names a per-day quota, which no wait can fix.
const PER_DAY: &str =
    r#"429 {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "retryDelay": "53s"}"#;

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn refused(calls: &Cell<u32>, make: fn() -> Failure) -> Result<(), Failure> {
    calls.set(calls.get() + 1);
    Err(make())
}

/// A type whose own `Classify` says no.
#[derive(Debug)]
struct OwnNo;

impl fmt::Display for OwnNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset, but the client knows better")
    }
}

impl Error for OwnNo {}

impl Classify for OwnNo {
    fn classify(&self) -> Verdict {
        Verdict::NotRetryable
    }
}

impl From<MediaProcessingError> for OwnNo {
    fn from(_: MediaProcessingError) -> Self {
        OwnNo
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn own_no(calls: &Cell<u32>) -> Result<(), OwnNo> {
    calls.set(calls.get() + 1);
    Err(OwnNo)
}

#[retry_with_backoff(max_retries = 3, jitter = 0, retry_if = |_: &io::Error| false)]
fn predicate_no(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn a_refused_retry_logs_one_warn_not_retrying_event_naming_its_rule() {
    type Call = Box<dyn Fn(&Cell<u32>) -> bool>;
    let through = |make: fn() -> Failure| -> Call { Box::new(move |c| refused(c, make).is_err()) };
    let cases: [(&str, Call, String); 8] = [
        (
            "refused",
            through(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ValueError: Invalid image format",
                )
                .into()
            }),
            "Not retrying: ValueError: Invalid image format (decided by the error's type)".to_owned(),
        ),
        (
            "refused",
            through(|| Failure::Message("400 Bad Request: image too large".into())),
            "Not retrying: 400 Bad Request: image too large (decided by the HTTP status in the error's text)".to_owned(),
        ),
        (
            "refused",
            through(|| Failure::Message("bad image".into())),
            "Not retrying: bad image (no rule calls it retryable)".to_owned(),
        ),
        (
            "refused",
            through(|| Failure::KeyRefused),
            "Not retrying: the key was refused: 503 Service Unavailable (declared by `#[classify]`)".to_owned(),
        ),
        (
            "refused",
            through(|| MediaProcessingError::exhausted(3, io::Error::other(UNAVAILABLE)).into()),
            "Not retrying: Failed after 3 retries: 503 Service Unavailable (an inner retried call already gave up)".to_owned(),
        ),
        (
            "refused",
            through(|| Failure::Message(PER_DAY.into())),
            format!("Not retrying: {PER_DAY} (the server names a per-day quota)"),
        ),
        (
            "own_no",
            Box::new(|c| own_no(c).is_err()),
            "Not retrying: connection reset, but the client knows better (decided by the error type's `Classify`)".to_owned(),
        ),
        (
            "predicate_no",
            Box::new(|c| predicate_no(c).is_err()),
            "Not retrying: connection reset by peer (decided by the predicate)".to_owned(),
        ),
    ];
    for (function, call, line) in cases {
        let (logs, _guard) = common::capture();
        let calls = Cell::new(0);
        let (failed, clock) = on_virtual_clock(|| call(&calls));
        assert!(failed, "{line}");
        assert_eq!(calls.get(), 1, "returned after one attempt: {line}");
        assert!(clock.sleeps().is_empty(), "{line}");
        logs.assert_lines(&[(Level::WARN, &line)]);
        let event = &logs.records()[0];
        assert_eq!(event.target, module_path!(), "{line}");
        assert_eq!(event.field("function"), Some(function), "{line}");
        assert_eq!(event.field("attempt"), Some("1"), "{line}");
        assert_eq!(event.field("max_retries"), Some("3"), "{line}");
        assert_eq!(
            event.field("delay_ms"),
            Some("0"),
            "no wait follows: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// "Classification": `retry_if` is asked first, before every other rule

#[retry_with_backoff(max_retries = 3, jitter = 0, retry_if = |_: &Failure| true)]
fn always_retried(calls: &Cell<u32>, make: fn() -> Failure) -> Result<(), Failure> {
    calls.set(calls.get() + 1);
    Err(make())
}

#[retry_with_backoff(max_retries = 3, jitter = 0, retry_if = |_: &Failure| false)]
fn never_retried(calls: &Cell<u32>, make: fn() -> Failure) -> Result<(), Failure> {
    calls.set(calls.get() + 1);
    Err(make())
}

#[test]
fn retry_if_decides_before_every_built_in_rule() {
    // Each of these is refused by a different rule when no predicate is asked (see the test
    // above); a predicate that says "retry" retries them all.
    for make in [
        (|| io::Error::from(io::ErrorKind::InvalidData).into()) as fn() -> Failure,
        || Failure::Message("400 Bad Request".into()),
        || Failure::Message("bad image".into()),
        || Failure::KeyRefused,
        || MediaProcessingError::exhausted(3, io::Error::other(UNAVAILABLE)).into(),
        || Failure::Message(PER_DAY.into()),
    ] {
        let calls = Cell::new(0);
        let (result, _) = on_virtual_clock(|| always_retried(&calls, make));
        assert_eq!(calls.get(), 3, "{}", make());
        assert!(
            matches!(&result, Err(Failure::Exhausted(e)) if e.attempts() == 3),
            "{result:?}"
        );
    }
    // And each of these is retried by a different rule; a predicate that says "no" returns
    // it unchanged after one attempt.
    for make in [
        (|| reset().into()) as fn() -> Failure,
        || Failure::Message(UNAVAILABLE.into()),
        || Failure::Message("request timed out".into()),
        || Failure::NotReady,
    ] {
        let (logs, _guard) = common::capture();
        let calls = Cell::new(0);
        let (result, _) = on_virtual_clock(|| never_retried(&calls, make));
        assert_eq!(calls.get(), 1, "{}", make());
        assert_eq!(
            result.unwrap_err().to_string(),
            make().to_string(),
            "unchanged"
        );
        let line = format!("Not retrying: {} (decided by the predicate)", make());
        logs.assert_lines(&[(Level::WARN, &line)]);
    }
}

// ---------------------------------------------------------------------------------------------
// "What the server says": a type's own `Classify::retry_after`, and the default `max_hint`

/// A hand-written `Classify` whose errors carry the server's wait, as a client that parses
/// its own answers would write it.
#[derive(Debug)]
enum Throttled {
    Busy(Duration),
    Exhausted(MediaProcessingError),
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // No hint in the text: only `retry_after` can tell the wait.
            Throttled::Busy(_) => f.write_str("busy"),
            Throttled::Exhausted(e) => e.fmt(f),
        }
    }
}

impl Error for Throttled {}

impl Classify for Throttled {
    fn classify(&self) -> Verdict {
        match self {
            Throttled::Busy(_) => Verdict::Retryable,
            Throttled::Exhausted(_) => Verdict::Unknown,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Throttled::Busy(wait) => Some(*wait),
            Throttled::Exhausted(_) => None,
        }
    }

    fn error_chain(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

impl From<MediaProcessingError> for Throttled {
    fn from(e: MediaProcessingError) -> Self {
        Throttled::Exhausted(e)
    }
}

/// Attempt `n` fails with the server asking for `hints[n - 1]` seconds.
#[retry_with_backoff(max_retries = 4, jitter = 0)]
fn throttled(calls: &Cell<u32>, hints: &[f64]) -> Result<(), Throttled> {
    calls.set(calls.get() + 1);
    // Past the list, no hint: a broken retry makes more attempts than the test expects.
    let hint = hints.get(calls.get() as usize - 1).copied().unwrap_or(0.0);
    Err(Throttled::Busy(secs(hint)))
}

#[test]
fn a_types_own_retry_after_sets_the_wait() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| throttled(&calls, &[7.0, 1.0, 45.0, 5.0]));
    // The longer of backoff and hint: 7 > 2, 4 > 1, and a hint may exceed `max_delay` (30 s)
    // up to `max_hint`.
    assert_eq!(clock.sleeps(), [secs(7.0), secs(4.0), secs(45.0)]);
    assert_eq!(logs.waits_ms(), [7000, 4000, 45000]);
    let Err(Throttled::Exhausted(give_up)) = result else {
        panic!("expected the give-up, got {result:?}");
    };
    assert_eq!(give_up.attempts(), 4);
    assert_eq!(
        give_up.retry_after(),
        Some(secs(5.0)),
        "the last hint is kept"
    );
}

/// Every setting left at its default; the server asks for `hints[n - 1]` seconds.
#[retry_with_backoff]
fn throttled_with_defaults(calls: &Cell<u32>, hints: &[f64]) -> Result<(), Throttled> {
    calls.set(calls.get() + 1);
    // Past the list, no hint: a broken retry makes more attempts than the test expects.
    let hint = hints.get(calls.get() as usize - 1).copied().unwrap_or(0.0);
    Err(Throttled::Busy(secs(hint)))
}

#[test]
fn the_default_max_hint_is_120_seconds() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| throttled_with_defaults(&calls, &[120.0, 120.5]));
    assert_eq!(calls.get(), 2);
    assert_eq!(
        clock.sleeps(),
        [secs(120.0)],
        "120 s is honoured, 120.5 s is not"
    );
    let Err(Throttled::Exhausted(give_up)) = result else {
        panic!("expected the give-up, got {result:?}");
    };
    assert_eq!(
        give_up.reason(),
        GiveUpReason::HintAboveCap {
            retry_after: secs(120.5),
            max_hint: secs(120.0),
        }
    );
    assert_eq!(give_up.retry_after(), Some(secs(120.5)));
    assert_eq!(
        logs.at_level(Level::ERROR)
            .into_iter()
            .map(|r| r.message)
            .collect::<Vec<_>>(),
        [
            "Giving up after 2 attempts (the server asked to wait 120.5s, more than max_hint 120.0s): busy"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// "Classification": panics are never caught or retried

/// Attempt `panic_on` panics; the ones before it fail with a reset.
#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn panics_on(calls: &Cell<u32>, panic_on: u32) -> io::Result<()> {
    calls.set(calls.get() + 1);
    if calls.get() == panic_on {
        panic!("attempt {panic_on} panicked");
    }
    Err(reset())
}

#[test]
fn a_panicking_attempt_is_neither_caught_nor_retried() {
    for panic_on in [1, 2] {
        let (logs, _guard) = common::capture();
        let calls = Cell::new(0);
        let (outcome, clock) =
            on_virtual_clock(|| catch_unwind(AssertUnwindSafe(|| panics_on(&calls, panic_on))));
        let payload = outcome.expect_err("the panic reaches the caller");
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some(&*format!("attempt {panic_on} panicked")),
            "the panic itself"
        );
        assert_eq!(calls.get(), panic_on, "no attempt after the panic");
        assert_eq!(clock.sleeps().len() as u32, panic_on - 1);
        // Only the retries before it are logged: no give-up, no wait after the panic.
        assert_eq!(
            logs.records().len() as u32,
            panic_on - 1,
            "{:?}",
            logs.messages()
        );
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
async fn panics_on_async(calls: Arc<AtomicU32>, panic_on: u32) -> io::Result<()> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::task::yield_now().await;
    if n == panic_on {
        panic!("attempt {panic_on} panicked");
    }
    Err(reset())
}

#[tokio::test(start_paused = true)]
async fn a_panicking_async_attempt_is_neither_caught_nor_retried() {
    for panic_on in [1, 2] {
        let (logs, _guard) = common::capture();
        let calls = Arc::new(AtomicU32::new(0));
        let start = tokio::time::Instant::now();
        // A task's panic comes back through its handle; the current-thread runtime runs it
        // on this thread, where the events are captured.
        let joined = tokio::spawn(panics_on_async(calls.clone(), panic_on)).await;
        let payload = joined
            .expect_err("the panic reaches the caller")
            .into_panic();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some(&*format!("attempt {panic_on} panicked"))
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            panic_on,
            "no attempt after the panic"
        );
        assert_eq!(start.elapsed(), secs(2.0 * f64::from(panic_on - 1)));
        assert_eq!(
            logs.records().len() as u32,
            panic_on - 1,
            "{:?}",
            logs.messages()
        );
    }
}
