//! Shared by the integration tests: captures the retry events of the current thread (whatever
//! their target: the annotated function's module, or `resilience` for the closure API), so
//! tests can read back the waits and the exact lines.
#![allow(dead_code)]

pub mod example;
pub mod redis;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Once, PoisonError};

use resilience::MediaProcessingError;
use resilience::sleep::{VirtualClock, with_sleeper};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The events of a call with `max_retries = 3` and no jitter whose first two attempts fail
/// with a connection reset: the attribute and `Retry` must both log exactly these.
pub const RESET_TWICE_THEN_SUCCESS: &[(Level, &str)] = &[
    (
        Level::WARN,
        "Retry 1/3 after connection reset by peer: waiting 2.0s",
    ),
    (
        Level::WARN,
        "Retry 2/3 after connection reset by peer: waiting 4.0s",
    ),
    (Level::INFO, "Success on attempt 3"),
];

/// One retry event.
#[derive(Debug, Clone)]
pub struct Record {
    pub level: Level,
    pub message: String,
    pub fields: BTreeMap<String, String>,
    /// The event's target: the annotated function's module path.
    pub target: String,
    /// The span the event happened in, if any (its name).
    pub span: Option<String>,
}

impl Record {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The events captured so far.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<Record>>>);

impl Logs {
    pub fn records(&self) -> Vec<Record> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn messages(&self) -> Vec<String> {
        self.records().into_iter().map(|r| r.message).collect()
    }

    /// The waits announced by `Retry n/m ... waiting X.Ys` lines, from their `delay_ms` field.
    pub fn waits_ms(&self) -> Vec<u64> {
        self.records()
            .iter()
            .filter(|r| r.message.starts_with("Retry "))
            .filter_map(|r| r.field("delay_ms")?.parse().ok())
            .collect()
    }

    /// Each event as `(level, message)`, for comparing whole logs at once.
    pub fn lines(&self) -> Vec<(Level, String)> {
        self.records()
            .into_iter()
            .map(|r| (r.level, r.message))
            .collect()
    }

    /// Asserts the exact events, in order.
    #[track_caller]
    pub fn assert_lines(&self, expected: &[(Level, &str)]) {
        let expected: Vec<(Level, String)> = expected
            .iter()
            .map(|(l, m)| (*l, (*m).to_owned()))
            .collect();
        assert_eq!(self.lines(), expected);
    }

    /// Asserts that event `i` carries `attempt = i + 1` and the call's other fields, and that
    /// `delay_ms` is 0 on every event but a `Retry` line (no wait follows them). An empty log
    /// fails: a check over no events would pass whatever the events say.
    #[track_caller]
    pub fn assert_fields(&self, function: &str, max_retries: u32) {
        let records = self.records();
        assert!(!records.is_empty(), "no retry event was captured");
        let max_retries = max_retries.to_string();
        for (i, record) in records.iter().enumerate() {
            let attempt = (i + 1).to_string();
            assert_eq!(record.field("function"), Some(function), "{record:?}");
            assert_eq!(
                record.field("attempt"),
                Some(attempt.as_str()),
                "{record:?}"
            );
            assert_eq!(
                record.field("max_retries"),
                Some(max_retries.as_str()),
                "{record:?}"
            );
            let delay_ms = record.field("delay_ms");
            assert!(
                delay_ms.is_some_and(|ms| ms.parse::<u64>().is_ok()),
                "{record:?}"
            );
            if !record.message.starts_with("Retry ") {
                assert_eq!(delay_ms, Some("0"), "no wait follows: {record:?}");
            }
        }
    }

    pub fn at_level(&self, level: Level) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.level == level)
            .collect()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Sends each event to the capture of the thread it happens on. One global subscriber,
/// because `tracing` caches per call site whether anyone listens: a thread-local default set
/// while another test thread runs without one can be cached as "never".
struct Capture;

impl<S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        // The retry events are the ones with these fields; the target is the module's.
        let fields = event.metadata().fields();
        if fields.field("max_retries").is_none() || fields.field("function").is_none() {
            return;
        }
        let Some(logs) = CURRENT.with(|c| c.borrow().clone()) else {
            return;
        };
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let message = visitor.0.remove("message").unwrap_or_default();
        logs.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Record {
                level: *event.metadata().level(),
                message,
                fields: visitor.0,
                target: event.metadata().target().to_owned(),
                span: context.event_span(event).map(|span| span.name().to_owned()),
            });
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Stops capturing when dropped.
#[must_use = "events are captured only while the guard lives"]
pub struct CaptureGuard(Option<Logs>);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Captures the current thread's retry events until the guard is dropped.
pub fn capture() -> (Logs, CaptureGuard) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another subscriber already installed would be a bug in the tests themselves.
        let _ =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture));
    });
    let logs = Logs::default();
    let previous = CURRENT.with(|c| c.borrow_mut().replace(logs.clone()));
    (logs, CaptureGuard(previous))
}

/// Runs `f` with a fresh virtual clock as the thread's sleeper.
pub fn on_virtual_clock<R>(f: impl FnOnce() -> R) -> (R, Rc<VirtualClock>) {
    let clock = Rc::new(VirtualClock::new());
    let out = with_sleeper(clock.clone(), f);
    (out, clock)
}

/// The `MediaProcessingError` inside an `io::Error` built by the give-up `From`.
pub fn media_error(error: &std::io::Error) -> &MediaProcessingError {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<MediaProcessingError>())
        .unwrap_or_else(|| panic!("not a give-up error: {error:?}"))
}
