//! An inner retried call that gave up is never retried again by an outer one, whatever the
//! shape of the error that carries the give-up (the README's "Nested retries"): otherwise
//! 3 outer x 3 inner attempts make 9 upstream calls. Each test counts the inner calls.

mod common;

use common::on_virtual_clock;

use std::cell::Cell;
use std::error::Error;
use std::io;

use resilience::{Classify, MediaProcessingError, Rule, classify::explain, retry_with_backoff};
use tracing::Level;

const UNAVAILABLE: &str = "503 Service Unavailable";

/// Every inner call fails with a retryable 503; 3 attempts, then the give-up.
fn upstream(calls: &Cell<u32>) -> io::Error {
    calls.set(calls.get() + 1);
    io::Error::other(UNAVAILABLE)
}

/// The outer call ran once, the inner one three times, and the outer loop logged that it
/// does not retry an inner give-up.
#[track_caller]
fn assert_inner_give_up_not_retried(calls: &Cell<u32>, logs: &common::Logs) {
    assert_eq!(calls.get(), 3, "3 inner attempts, not 9");
    let not_retrying: Vec<String> = logs
        .at_level(Level::WARN)
        .into_iter()
        .map(|r| r.message)
        .filter(|m| m.starts_with("Not retrying"))
        .collect();
    assert_eq!(not_retrying.len(), 1, "{:?}", logs.messages());
    assert!(
        not_retrying[0].ends_with(&format!("({})", Rule::InnerGiveUp)),
        "{}",
        not_retrying[0]
    );
}

// ---------------------------------------------------------------------------------------------
// thiserror, `#[error(transparent)]`, without the derive: the view in `source()` gives it away.

#[derive(Debug, thiserror::Error)]
enum Transparent {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_transparent(calls: &Cell<u32>) -> Result<(), Transparent> {
    Err(upstream(calls).into())
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_transparent(calls: &Cell<u32>) -> Result<(), Transparent> {
    inner_transparent(calls)
}

#[test]
fn transparent_variant_without_the_derive() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_transparent(&calls));
    assert!(matches!(result, Err(Transparent::Exhausted(_))));
    assert_inner_give_up_not_retried(&calls, &logs);
}

// ---------------------------------------------------------------------------------------------
// thiserror with the derive, transparent and `"{0}"`.

#[derive(Debug, thiserror::Error, Classify)]
enum Derived {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_derived(calls: &Cell<u32>) -> Result<(), Derived> {
    Err(upstream(calls).into())
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_derived(calls: &Cell<u32>) -> Result<(), Derived> {
    inner_derived(calls)
}

#[test]
fn transparent_variant_with_the_derive() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_derived(&calls));
    let Err(Derived::Exhausted(give_up)) = result else {
        panic!("expected the inner give-up, got {result:?}");
    };
    assert_eq!(
        give_up.to_string(),
        format!("Failed after 3 retries: {UNAVAILABLE}")
    );
    assert_inner_give_up_not_retried(&calls, &logs);
}

#[derive(Debug, thiserror::Error)]
enum WithMessage {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Exhausted(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_with_message(calls: &Cell<u32>) -> Result<(), WithMessage> {
    Err(upstream(calls).into())
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_with_message(calls: &Cell<u32>) -> Result<(), WithMessage> {
    inner_with_message(calls)
}

#[test]
fn variant_with_its_own_message() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_with_message(&calls));
    assert!(matches!(result, Err(WithMessage::Exhausted(_))));
    assert_inner_give_up_not_retried(&calls, &logs);
}

// ---------------------------------------------------------------------------------------------
// anyhow, with and without `.context()`.

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_anyhow(calls: &Cell<u32>) -> anyhow::Result<()> {
    Err(upstream(calls).into())
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_anyhow(calls: &Cell<u32>) -> anyhow::Result<()> {
    inner_anyhow(calls)
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_anyhow_with_context(calls: &Cell<u32>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    inner_anyhow(calls).context("while analysing beach.jpg")
}

#[test]
fn anyhow_without_context() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_anyhow(&calls));
    let error = result.unwrap_err();
    assert!(error.downcast_ref::<MediaProcessingError>().is_some());
    assert_inner_give_up_not_retried(&calls, &logs);
}

#[test]
fn anyhow_with_context() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_anyhow_with_context(&calls));
    let error = result.unwrap_err();
    assert_eq!(error.to_string(), "while analysing beach.jpg");
    assert_inner_give_up_not_retried(&calls, &logs);
}

// ---------------------------------------------------------------------------------------------
// `Box<dyn Error + Send + Sync>` and `io::Error`.

type BoxError = Box<dyn Error + Send + Sync>;

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_boxed(calls: &Cell<u32>) -> Result<(), BoxError> {
    Err(upstream(calls).into())
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_boxed(calls: &Cell<u32>) -> Result<(), BoxError> {
    inner_boxed(calls)
}

#[test]
fn boxed_error() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_boxed(&calls));
    assert!(result.unwrap_err().is::<MediaProcessingError>());
    assert_inner_give_up_not_retried(&calls, &logs);
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_io(calls: &Cell<u32>) -> io::Result<()> {
    Err(upstream(calls))
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_io(calls: &Cell<u32>) -> io::Result<()> {
    inner_io(calls)
}

#[test]
fn io_error() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_io(&calls));
    let error = result.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("Failed after 3 retries: {UNAVAILABLE}")
    );
    assert_inner_give_up_not_retried(&calls, &logs);
}

/// "(unless a `retry_if` predicate, asked first, says otherwise)": then the outer loop does
/// retry the inner give-up, each of its attempts making the inner call's three.
#[retry_with_backoff(max_retries = 3, jitter = 0, retry_if = |_: &io::Error| true)]
fn outer_io_retrying_give_ups(calls: &Cell<u32>) -> io::Result<()> {
    inner_io(calls)
}

#[test]
fn a_retry_if_predicate_asked_first_may_retry_an_inner_give_up() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| outer_io_retrying_give_ups(&calls));
    assert_eq!(calls.get(), 9, "3 outer x 3 inner attempts");
    let error = result.unwrap_err();
    assert_eq!(
        common::media_error(&error).attempts(),
        3,
        "the outer give-up"
    );
    // Each inner call waits 2 s and 4 s; the outer loop waits 2 s and 4 s between them.
    assert_eq!(clock.elapsed(), std::time::Duration::from_secs(4 * 6));
    // Three inner calls of two retries and a give-up each, then the outer give-up: no
    // "Not retrying" among them.
    let messages = logs.messages();
    assert_eq!(messages.len(), 4 * 3, "{messages:?}");
    assert!(
        messages.iter().all(|m| !m.starts_with("Not retrying")),
        "{messages:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A `String` error that kept only the give-up's text.

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_string(calls: &Cell<u32>) -> Result<(), String> {
    Err(upstream(calls).to_string())
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_string(calls: &Cell<u32>) -> Result<(), String> {
    inner_string(calls)
}

#[test]
fn string_error_by_its_text() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| outer_string(&calls));
    assert_eq!(
        result.unwrap_err(),
        format!("Failed after 3 retries: {UNAVAILABLE}")
    );
    assert_inner_give_up_not_retried(&calls, &logs);
}

#[test]
fn the_give_up_itself_says_so_when_classified() {
    let give_up = MediaProcessingError::exhausted(3, io::Error::other(UNAVAILABLE));
    assert_eq!(explain(&give_up).rule, Rule::InnerGiveUp);
    assert_eq!(give_up.classify(), resilience::Verdict::NotRetryable);
}

// ---------------------------------------------------------------------------------------------
// A wrapper's message before the give-up's text: `format!("upload failed: {e}")`.

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_formatted_string(calls: &Cell<u32>) -> Result<(), String> {
    inner_string(calls).map_err(|e| format!("upload failed: {e}"))
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_formatted_anyhow(calls: &Cell<u32>) -> anyhow::Result<()> {
    inner_io(calls).map_err(|e| anyhow::anyhow!("upload failed: {e}"))
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_formatted_io(calls: &Cell<u32>) -> io::Result<()> {
    inner_io(calls).map_err(|e| io::Error::new(e.kind(), format!("upload failed: {e}")))
}

#[derive(Debug, thiserror::Error, Classify)]
enum Upload {
    #[error("upload failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_formatted_variant(calls: &Cell<u32>) -> Result<(), Upload> {
    inner_io(calls).map_err(|e| Upload::Failed(e.to_string()))
}

#[test]
fn a_give_up_whose_text_a_wrapper_prefixed() {
    for (shape, run) in [
        (
            "String",
            (|c| outer_formatted_string(c).map_err(|e| e.to_string()))
                as fn(&Cell<u32>) -> Result<(), String>,
        ),
        ("anyhow!", |c| {
            outer_formatted_anyhow(c).map_err(|e| e.to_string())
        }),
        ("io::Error::new", |c| {
            outer_formatted_io(c).map_err(|e| e.to_string())
        }),
        ("a derived variant", |c| {
            outer_formatted_variant(c).map_err(|e| e.to_string())
        }),
    ] {
        let (logs, _guard) = common::capture();
        let calls = Cell::new(0);
        let (result, _) = on_virtual_clock(|| run(&calls));
        assert_eq!(
            result.unwrap_err(),
            format!("upload failed: Failed after 3 retries: {UNAVAILABLE}"),
            "{shape}"
        );
        assert_inner_give_up_not_retried(&calls, &logs);
    }
}

/// A wrapper with its own message that forwards `source()` past the give-up, as
/// `#[error(transparent)]` does: neither its text nor its chain shows the give-up itself, only
/// the view that the give-up's `source()` returns.
#[derive(Debug)]
struct Forwarding(MediaProcessingError);

impl std::fmt::Display for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("analysis failed")
    }
}

impl Error for Forwarding {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl From<MediaProcessingError> for Forwarding {
    fn from(give_up: MediaProcessingError) -> Self {
        Forwarding(give_up)
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn inner_forwarding(calls: &Cell<u32>) -> Result<(), Forwarding> {
    Err(MediaProcessingError::exhausted(1, upstream(calls)).into())
}

#[test]
fn only_the_view_in_the_chain_gives_the_give_up_away() {
    let calls = Cell::new(0);
    let error = Forwarding(MediaProcessingError::exhausted(1, upstream(&calls)));
    assert_eq!(error.to_string(), "analysis failed");
    assert_eq!(explain(&error).rule, Rule::InnerGiveUp);
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| inner_forwarding(&calls));
    assert!(result.is_err());
    assert_eq!(calls.get(), 1, "the forwarded give-up is not retried");
    assert_eq!(logs.messages().len(), 1, "{:?}", logs.messages());
}
