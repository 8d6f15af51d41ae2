//! Sync functions under `#[retry_with_backoff]`: attempts, waits, classification, logs and the
//! give-up error, checked against the README on a virtual clock (no test sleeps for real).

mod common;

use common::{media_error, on_virtual_clock};

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use resilience::sleep::{VirtualClock, with_sleeper};
use resilience::{Classify, GiveUpReason, MediaProcessingError, Verdict, retry_with_backoff};
use tracing::Level;

// ---------------------------------------------------------------------------------------------
// Helpers

const RESET_TEXT: &str = "connection reset by peer";

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, RESET_TEXT)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn is_give_up(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<MediaProcessingError>())
        .is_some()
}

/// An error type with only `Display` + `Error`: classified by its text and its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TextError(String);

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for TextError {}

/// Lets the functions returning `TextError` compile; the give-up text lands in the message.
#[derive(Debug)]
enum TextOrGiveUp {
    Text(TextError),
    GaveUp(MediaProcessingError),
}

impl fmt::Display for TextOrGiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextOrGiveUp::Text(e) => e.fmt(f),
            TextOrGiveUp::GaveUp(e) => e.fmt(f),
        }
    }
}

impl Error for TextOrGiveUp {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TextOrGiveUp::Text(e) => e.source(),
            TextOrGiveUp::GaveUp(e) => e.source(),
        }
    }
}

impl From<MediaProcessingError> for TextOrGiveUp {
    fn from(e: MediaProcessingError) -> Self {
        TextOrGiveUp::GaveUp(e)
    }
}

/// The texts of an error and its causes.
fn chain_of(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut texts = Vec::new();
    let mut link = Some(error);
    while let Some(e) = link {
        texts.push(e.to_string());
        link = e.source();
    }
    texts
}

// ---------------------------------------------------------------------------------------------
// Attempts

#[retry_with_backoff(max_retries = 5, jitter = 0)]
fn flaky(calls: &Cell<u32>, succeed_on: u32) -> io::Result<u32> {
    calls.set(calls.get() + 1);
    if calls.get() < succeed_on {
        return Err(reset());
    }
    Ok(calls.get())
}

#[test]
fn flaky_fn_failing_n_minus_1_times_succeeds_on_attempt_n() {
    for n in 1..=5 {
        let calls = Cell::new(0);
        let (result, clock) = on_virtual_clock(|| flaky(&calls, n));
        assert_eq!(result.expect("succeeds on the last allowed attempt"), n);
        assert_eq!(calls.get(), n, "attempts made");
        assert_eq!(clock.sleeps().len() as u32, n - 1, "one wait per retry");
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn always_reset(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn always_failing_fn_stops_after_max_retries_attempts() {
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| always_reset(&calls));
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 3);
    assert_eq!(
        clock.sleeps(),
        vec![secs(2.0), secs(4.0)],
        "no wait after the last attempt"
    );
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    assert_eq!(media_error(&err).attempts(), 3);
}

#[retry_with_backoff(max_retries = 1)]
fn one_attempt_only(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn max_retries_1_makes_one_attempt_and_gives_up_on_a_retryable_error() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| one_attempt_only(&calls));
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
    assert_eq!(
        err.to_string(),
        format!("Failed after 1 retries: {RESET_TEXT}")
    );
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let mpe = media_error(&err);
    assert_eq!(mpe.attempts(), 1);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    let records = logs.records();
    assert_eq!(records.len(), 1, "only the give-up event: {records:?}");
    assert_eq!(records[0].level, Level::ERROR);
    assert_eq!(
        records[0].message,
        format!("Giving up after 1 attempt (all attempts failed): {RESET_TEXT}")
    );
}

/// Each attempt runs in its own scope: `?` ends the attempt, not the call.
#[retry_with_backoff(max_retries = 4, jitter = 0)]
fn uses_question_mark(calls: &Cell<u32>) -> io::Result<&'static str> {
    calls.set(calls.get() + 1);
    let step = |n: u32| if n < 3 { Err(reset()) } else { Ok(()) };
    step(calls.get())?;
    Ok("done")
}

#[test]
fn question_mark_in_the_body_ends_the_attempt_not_the_call() {
    let calls = Cell::new(0);
    let (result, _clock) = on_virtual_clock(|| uses_question_mark(&calls));
    assert_eq!(result.unwrap(), "done");
    assert_eq!(calls.get(), 3);
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn consumes_its_argument(payload: String, seen: &mut Vec<String>) -> io::Result<usize> {
    // Moves the argument: every attempt still gets the caller's whole value.
    let owned: String = payload;
    seen.push(owned);
    if seen.len() < 3 {
        return Err(reset());
    }
    Ok(seen.len())
}

#[test]
fn by_value_arguments_reach_every_attempt_and_mut_refs_keep_changes() {
    let mut seen = Vec::new();
    let (result, _clock) =
        on_virtual_clock(|| consumes_its_argument("image.jpg".to_owned(), &mut seen));
    assert_eq!(result.unwrap(), 3);
    assert_eq!(seen, vec!["image.jpg"; 3]);
}

// ---------------------------------------------------------------------------------------------
// Waits (README: "Delays")

#[retry_with_backoff(max_retries = 5, jitter = 0)]
fn five_attempts_no_jitter() -> io::Result<()> {
    Err(reset())
}

#[test]
fn waits_without_jitter_are_exactly_2s_4s_8s_16s() {
    let (logs, _guard) = common::capture();
    let (result, clock) = on_virtual_clock(five_attempts_no_jitter);
    assert!(result.is_err());
    assert_eq!(
        clock.sleeps(),
        vec![secs(2.0), secs(4.0), secs(8.0), secs(16.0)]
    );
    assert_eq!(logs.waits_ms(), vec![2000, 4000, 8000, 16000]);
    assert_eq!(clock.elapsed(), secs(30.0));
}

#[retry_with_backoff(max_retries = 4, base_delay = 0.5, jitter = 0)]
fn half_second_base() -> io::Result<()> {
    Err(reset())
}

#[retry_with_backoff(max_retries = 3, base_delay = 2, jitter = 0)]
fn integer_base() -> io::Result<()> {
    Err(reset())
}

#[test]
fn waits_scale_with_base_delay_given_as_float_or_integer() {
    let (_, clock) = on_virtual_clock(half_second_base);
    assert_eq!(clock.sleeps(), vec![secs(1.0), secs(2.0), secs(4.0)]);
    let (_, clock) = on_virtual_clock(integer_base);
    assert_eq!(clock.sleeps(), vec![secs(4.0), secs(8.0)]);
}

#[retry_with_backoff(max_retries = 6, base_delay = 1, max_delay = 5, jitter = 0)]
fn capped_no_jitter() -> io::Result<()> {
    Err(reset())
}

#[test]
fn waits_without_jitter_are_capped_at_max_delay() {
    let (logs, _guard) = common::capture();
    let (_, clock) = on_virtual_clock(capped_no_jitter);
    assert_eq!(
        clock.sleeps(),
        vec![secs(2.0), secs(4.0), secs(5.0), secs(5.0), secs(5.0)]
    );
    assert_eq!(logs.waits_ms(), vec![2000, 4000, 5000, 5000, 5000]);
}

#[retry_with_backoff]
fn all_defaults(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn default_jitter_keeps_each_wait_in_base_times_2_pow_n_plus_under_1s() {
    let mut fractions = Vec::new();
    for _ in 0..50 {
        let (logs, _guard) = common::capture();
        let calls = Cell::new(0);
        let (result, clock) = on_virtual_clock(|| all_defaults(&calls));
        assert!(result.is_err());
        assert_eq!(calls.get(), 5, "default max_retries is 5");
        let sleeps = clock.sleeps();
        assert_eq!(sleeps.len(), 4);
        let logged = logs.waits_ms();
        assert_eq!(logged.len(), 4);
        for (i, (&wait, &ms)) in sleeps.iter().zip(&logged).enumerate() {
            let low = secs(f64::from(1u32 << (i + 1)));
            assert!(
                wait >= low && wait < low + secs(1.0),
                "wait {} = {wait:?} outside [{low:?}, {low:?} + 1s)",
                i + 1
            );
            assert_eq!(
                u128::from(ms),
                wait.as_millis(),
                "delay_ms is the wait slept"
            );
            let low_ms = 1000u64 << (i + 1);
            assert!((low_ms..low_ms + 1000).contains(&ms), "delay_ms {ms}");
            fractions.push(wait - low);
        }
        // The message shows the same wait with one decimal.
        let retry_lines: Vec<String> = logs
            .messages()
            .into_iter()
            .filter(|m| m.starts_with("Retry "))
            .collect();
        assert_eq!(retry_lines.len(), 4, "{retry_lines:?}");
        for (i, (line, wait)) in retry_lines.iter().zip(&sleeps).enumerate() {
            assert_eq!(
                line,
                &format!(
                    "Retry {}/5 after {RESET_TEXT}: waiting {:.1}s",
                    i + 1,
                    wait.as_secs_f64()
                )
            );
        }
    }
    // 200 draws of U in [0, 1s): jitter is really applied and spread out.
    assert!(fractions.iter().any(|f| *f > secs(0.5)), "{fractions:?}");
    assert!(fractions.iter().any(|f| *f < secs(0.5)), "{fractions:?}");
}

#[retry_with_backoff(max_retries = 5, base_delay = 1, max_delay = 3)]
fn capped_with_default_jitter() -> io::Result<()> {
    Err(reset())
}

#[retry_with_backoff(max_retries = 4, base_delay = 1, max_delay = 2.5, jitter = 10)]
fn capped_with_huge_jitter() -> io::Result<()> {
    Err(reset())
}

#[test]
fn jitter_never_pushes_a_wait_above_max_delay() {
    for _ in 0..50 {
        let (logs, _guard) = common::capture();
        let (_, clock) = on_virtual_clock(capped_with_default_jitter);
        let sleeps = clock.sleeps();
        assert_eq!(sleeps.len(), 4);
        assert!(
            sleeps[0] >= secs(2.0) && sleeps[0] < secs(3.0),
            "{sleeps:?}"
        );
        assert_eq!(
            &sleeps[1..],
            &[secs(3.0); 3],
            "capped waits are exactly max_delay"
        );
        // The logged waits are the waits slept, so they are capped too.
        let slept_ms: Vec<u64> = sleeps.iter().map(|w| w.as_millis() as u64).collect();
        assert_eq!(logs.waits_ms(), slept_ms);

        let (logs, _guard) = common::capture();
        let (_, clock) = on_virtual_clock(capped_with_huge_jitter);
        assert_eq!(clock.sleeps().len(), 3);
        assert!(
            clock
                .sleeps()
                .iter()
                .all(|&w| w >= secs(2.0) && w <= secs(2.5)),
            "{:?}",
            clock.sleeps()
        );
        let slept_ms: Vec<u64> = clock
            .sleeps()
            .iter()
            .map(|w| w.as_millis() as u64)
            .collect();
        assert_eq!(logs.waits_ms(), slept_ms);
    }
}

// ---------------------------------------------------------------------------------------------
// Logs (README: "Log events")

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn succeeds_third_time(calls: &Cell<u32>) -> io::Result<&'static str> {
    calls.set(calls.get() + 1);
    if calls.get() < 3 {
        return Err(reset());
    }
    Ok("ok")
}

#[test]
fn retry_and_success_lines_are_exact_with_their_fields() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _clock) = on_virtual_clock(|| succeeds_third_time(&calls));
    assert_eq!(result.unwrap(), "ok");
    let records = logs.records();
    logs.assert_lines(common::RESET_TWICE_THEN_SUCCESS);
    for (record, (attempt, delay_ms)) in
        records
            .iter()
            .zip([("1", "2000"), ("2", "4000"), ("3", "")])
    {
        assert_eq!(
            record.field("function"),
            Some("succeeds_third_time"),
            "{record:?}"
        );
        assert_eq!(record.field("attempt"), Some(attempt), "{record:?}");
        assert_eq!(record.field("max_retries"), Some("3"), "{record:?}");
        assert!(record.field("delay_ms").is_some(), "{record:?}");
        if !delay_ms.is_empty() {
            assert_eq!(record.field("delay_ms"), Some(delay_ms), "{record:?}");
        }
    }
}

#[test]
fn first_attempt_success_logs_nothing_and_waits_nothing() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(2);
    let (result, clock) = on_virtual_clock(|| succeeds_third_time(&calls));
    assert_eq!(result.unwrap(), "ok");
    assert_eq!(calls.get(), 3, "exactly one attempt");
    assert!(logs.records().is_empty(), "{:?}", logs.records());
    assert!(clock.sleeps().is_empty());
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

#[test]
fn giving_up_logs_exactly_one_error_event_after_the_retry_lines() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (_result, _clock) = on_virtual_clock(|| always_reset(&calls));
    let records = logs.records();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records[..2]
            .iter()
            .all(|r| r.level == Level::WARN && r.message.starts_with("Retry "))
    );
    let errors = logs.at_level(Level::ERROR);
    assert_eq!(errors.len(), 1, "{records:?}");
    let gave_up = &errors[0];
    assert_eq!(
        records[2].message, gave_up.message,
        "the give-up event comes last"
    );
    assert!(
        gave_up.message.contains(RESET_TEXT),
        "says why: {}",
        gave_up.message
    );
    assert_eq!(gave_up.field("function"), Some("always_reset"));
    assert_eq!(gave_up.field("attempt"), Some("3"));
    assert_eq!(gave_up.field("max_retries"), Some("3"));
    assert!(gave_up.field("delay_ms").is_some());
    assert!(logs.at_level(Level::INFO).is_empty());
}

#[retry_with_backoff(max_retries = 4)]
fn invalid_data(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "ValueError: Invalid image format",
    ))
}

#[test]
fn non_retryable_error_logs_exactly_one_event_and_no_retry_line() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (_result, _clock) = on_virtual_clock(|| invalid_data(&calls));
    let records = logs.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let event = &records[0];
    assert!(!event.message.starts_with("Retry "), "{event:?}");
    assert!(
        event.message.contains("ValueError: Invalid image format"),
        "{event:?}"
    );
    assert_eq!(event.field("function"), Some("invalid_data"));
    assert_eq!(event.field("attempt"), Some("1"));
    assert_eq!(event.field("max_retries"), Some("4"));
    assert!(event.field("delay_ms").is_some());
}

// ---------------------------------------------------------------------------------------------
// Non-retryable errors come back unchanged (README: "Classification")

#[test]
fn invalid_data_io_error_is_returned_unchanged_after_one_attempt() {
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| invalid_data(&calls));
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "ValueError: Invalid image format");
    assert!(!is_give_up(&err), "not wrapped: {err:?}");
}

#[derive(Debug, PartialEq, Eq)]
enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Value(String),
    Transient(String),
    Exhausted(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Value(m)
            | ApiError::Transient(m)
            | ApiError::Exhausted(m) => f.write_str(m),
        }
    }
}

impl Error for ApiError {}

impl From<MediaProcessingError> for ApiError {
    fn from(e: MediaProcessingError) -> Self {
        ApiError::Exhausted(e.to_string())
    }
}

#[retry_with_backoff(max_retries = 5, jitter = 0)]
fn api_call(calls: &Cell<u32>, error: &dyn Fn() -> ApiError) -> Result<(), ApiError> {
    calls.set(calls.get() + 1);
    Err(error())
}

#[test]
fn http_400_401_and_value_error_texts_are_returned_unchanged_after_one_attempt() {
    type Case<'a> = (&'a dyn Fn() -> ApiError, fn(&ApiError) -> bool);
    let cases: [Case; 3] = [
        (
            &|| ApiError::BadRequest("400 Bad Request: image too large".into()),
            |e| matches!(e, ApiError::BadRequest(m) if m == "400 Bad Request: image too large"),
        ),
        (
            &|| ApiError::Unauthorized("401 Unauthorized: API key not valid".into()),
            |e| matches!(e, ApiError::Unauthorized(m) if m == "401 Unauthorized: API key not valid"),
        ),
        (
            &|| ApiError::Value("ValueError: Invalid image format".into()),
            |e| matches!(e, ApiError::Value(m) if m == "ValueError: Invalid image format"),
        ),
    ];
    for (make, is_same) in cases {
        let calls = Cell::new(0);
        let (result, clock) = on_virtual_clock(|| api_call(&calls, make));
        let err = result.unwrap_err();
        assert!(is_same(&err), "changed: {err:?}");
        assert_eq!(calls.get(), 1, "{err}");
        assert!(clock.sleeps().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Classification through the macro (README: "Classification")

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn io_failure(calls: &Cell<u32>, make: &dyn Fn() -> io::Error) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(make())
}

fn attempts_for_io(make: &dyn Fn() -> io::Error) -> u32 {
    let calls = Cell::new(0);
    let _ = on_virtual_clock(|| io_failure(&calls, make));
    calls.get()
}

#[test]
fn typed_io_kind_wins_over_text() {
    // The text says "timeout", the kind says the data is wrong: not retried.
    assert_eq!(
        attempts_for_io(&|| io::Error::new(io::ErrorKind::InvalidData, "timeout field missing")),
        1
    );
    assert_eq!(
        attempts_for_io(&|| io::Error::new(io::ErrorKind::NotFound, "503 connection reset")),
        1
    );
    // The text says nothing, the kind says retry.
    assert_eq!(
        attempts_for_io(&|| io::Error::new(io::ErrorKind::TimedOut, "slow")),
        3
    );
}

#[test]
fn every_transient_io_kind_is_retried() {
    use io::ErrorKind as K;
    for kind in [
        K::TimedOut,
        K::ConnectionReset,
        K::ConnectionRefused,
        K::ConnectionAborted,
        K::BrokenPipe,
        K::Interrupted,
        K::WouldBlock,
    ] {
        assert_eq!(
            attempts_for_io(&move || io::Error::new(kind, "x")),
            3,
            "{kind:?}"
        );
    }
    for kind in [
        K::NotFound,
        K::PermissionDenied,
        K::InvalidInput,
        K::InvalidData,
    ] {
        assert_eq!(
            attempts_for_io(&move || io::Error::new(kind, "x")),
            1,
            "{kind:?}"
        );
    }
}

#[test]
fn io_other_is_left_to_the_text_rule() {
    assert_eq!(
        attempts_for_io(&|| io::Error::other("upstream said 503")),
        3
    );
    assert_eq!(
        attempts_for_io(&|| io::Error::other("request timed out")),
        3
    );
    assert_eq!(attempts_for_io(&|| io::Error::other("bad image")), 1);
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn text_failure(calls: &Cell<u32>, text: &str) -> Result<(), TextOrGiveUp> {
    calls.set(calls.get() + 1);
    Err(TextOrGiveUp::Text(TextError(text.to_owned())))
}

fn attempts_for_text(text: &str) -> u32 {
    let calls = Cell::new(0);
    let _ = on_virtual_clock(|| text_failure(&calls, text));
    calls.get()
}

#[test]
fn text_rule_decides_for_a_user_error_with_only_display_and_error() {
    for text in [
        "429 Resource Exhausted",
        "503 Service Unavailable",
        "500 Internal Server Error",
        "request timeout",
        "operation TIMED OUT",
        "Connection reset by peer",
        "connection refused",
        "RESET",
        "502 Bad Gateway",
        "ConnectionResetError: [Errno 104] Connection reset by peer",
        "ReadTimeout",
    ] {
        assert_eq!(attempts_for_text(text), 3, "{text}");
    }
    for text in [
        "400 Bad Request",
        "401 Unauthorized: API key not valid",
        "ValueError: Invalid image format",
        "KeyError: 'candidates'",
        "prompt is 5000 tokens long",
        "missing field `timeout_seconds`",
        "scan.png is 5000x500 pixels",
        "reset_token expired",
        "HTTP status client error (400 Bad Request) for url (https://h.test/v1/password-reset)",
        "error decoding response body for url (http://h.test/connections)",
        "cannot bind 127.0.0.1:5003",
    ] {
        assert_eq!(attempts_for_text(text), 1, "{text}");
    }
}

/// A type with `Display` only (no `Error`): the text rule still applies.
#[derive(Debug)]
struct DisplayOnly(String);

impl fmt::Display for DisplayOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<MediaProcessingError> for DisplayOnly {
    fn from(e: MediaProcessingError) -> Self {
        DisplayOnly(format!(
            "gave up after {}: {}",
            e.attempts(),
            e.last_error_message()
        ))
    }
}

#[retry_with_backoff(max_retries = 2, jitter = 0)]
fn display_only(calls: &Cell<u32>, text: &str) -> Result<(), DisplayOnly> {
    calls.set(calls.get() + 1);
    Err(DisplayOnly(text.to_owned()))
}

#[test]
fn text_rule_decides_for_an_error_type_with_only_display() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| display_only(&calls, "HTTP 503"));
    assert_eq!(calls.get(), 2);
    assert_eq!(result.unwrap_err().0, "gave up after 2: HTTP 503");
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| display_only(&calls, "bad prompt"));
    assert_eq!(calls.get(), 1);
    assert_eq!(result.unwrap_err().0, "bad prompt");
}

/// A user error whose cause is kept in `source()`.
#[derive(Debug)]
struct Wrapper {
    message: &'static str,
    source: Box<dyn Error + Send + Sync>,
}

impl fmt::Display for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl Error for Wrapper {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn wrapped_failure(
    calls: &Cell<u32>,
    make: &dyn Fn() -> Box<dyn Error + Send + Sync>,
) -> Result<(), Wrapper> {
    calls.set(calls.get() + 1);
    Err(Wrapper {
        message: "analysis failed",
        source: make(),
    })
}

impl From<MediaProcessingError> for Wrapper {
    fn from(e: MediaProcessingError) -> Self {
        Wrapper {
            message: "gave up",
            source: Box::new(e),
        }
    }
}

#[test]
fn source_chain_is_walked_for_typed_io_kinds_and_text() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| {
        wrapped_failure(&calls, &|| {
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset))
        })
    });
    assert_eq!(
        calls.get(),
        3,
        "an io ConnectionReset in the chain is retried"
    );
    let err = result.unwrap_err();
    let mpe = err
        .source
        .downcast_ref::<MediaProcessingError>()
        .expect("give-up inside");
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(
        mpe.last_error_message(),
        "analysis failed: connection reset"
    );
    // The chain survives: MediaProcessingError -> Wrapper -> io::Error.
    let last = mpe.last_error::<Wrapper>().expect("typed last error");
    assert_eq!(
        last.source.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );

    let calls = Cell::new(0);
    let _ = on_virtual_clock(|| {
        wrapped_failure(&calls, &|| {
            Box::new(TextError("HTTP 429 Too Many Requests".into()))
        })
    });
    assert_eq!(calls.get(), 3, "a 429 text deeper in the chain is retried");

    let calls = Cell::new(0);
    let _ =
        on_virtual_clock(|| wrapped_failure(&calls, &|| Box::new(TextError("bad image".into()))));
    assert_eq!(calls.get(), 1, "nothing in the chain is retryable");
}

/// An error type that states its own answer.
#[derive(Debug)]
struct SaysItself {
    text: &'static str,
    verdict: Verdict,
}

impl fmt::Display for SaysItself {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

impl Error for SaysItself {}

impl Classify for SaysItself {
    fn classify(&self) -> Verdict {
        self.verdict
    }
}

impl From<MediaProcessingError> for SaysItself {
    fn from(_: MediaProcessingError) -> Self {
        SaysItself {
            text: "gave up",
            verdict: Verdict::NotRetryable,
        }
    }
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn says_itself(calls: &Cell<u32>, text: &'static str, verdict: Verdict) -> Result<(), SaysItself> {
    calls.set(calls.get() + 1);
    Err(SaysItself { text, verdict })
}

#[test]
fn an_error_type_implementing_classify_decides_over_the_text_rule() {
    let calls = Cell::new(0);
    let (result, _) =
        on_virtual_clock(|| says_itself(&calls, "503 Service Unavailable", Verdict::NotRetryable));
    assert_eq!(calls.get(), 1, "the type says no despite the 503 text");
    assert_eq!(
        result.unwrap_err().text,
        "503 Service Unavailable",
        "returned unchanged"
    );

    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| says_itself(&calls, "bad prompt", Verdict::Retryable));
    assert_eq!(calls.get(), 3, "the type says yes despite the text");
    assert_eq!(result.unwrap_err().text, "gave up");
}

#[test]
fn an_error_type_answering_unknown_falls_through_to_the_text_rule() {
    let calls = Cell::new(0);
    let _ = on_virtual_clock(|| says_itself(&calls, "503 Service Unavailable", Verdict::Unknown));
    assert_eq!(
        calls.get(),
        3,
        "Unknown defers to the text rule, which retries a 503"
    );
}

// `retry_if`

fn is_transient(e: &ApiError) -> bool {
    matches!(e, ApiError::Transient(_))
}

#[retry_with_backoff(max_retries = 3, jitter = 0, retry_if = is_transient)]
fn with_path_predicate(calls: &Cell<u32>, make: &dyn Fn() -> ApiError) -> Result<(), ApiError> {
    calls.set(calls.get() + 1);
    Err(make())
}

#[retry_with_backoff(
    max_retries = 3,
    jitter = 0,
    retry_if = |e: &ApiError| matches!(e, ApiError::Transient(_))
)]
fn with_closure_predicate(calls: &Cell<u32>, make: &dyn Fn() -> ApiError) -> Result<(), ApiError> {
    calls.set(calls.get() + 1);
    Err(make())
}

#[test]
fn retry_if_path_and_closure_decide_before_the_built_in_rules() {
    type Call = fn(&Cell<u32>, &dyn Fn() -> ApiError) -> Result<(), ApiError>;
    for f in [with_path_predicate as Call, with_closure_predicate as Call] {
        // No retryable text, but the predicate says retry.
        let calls = Cell::new(0);
        let (result, clock) =
            on_virtual_clock(|| f(&calls, &|| ApiError::Transient("flaky".into())));
        assert_eq!(calls.get(), 3);
        assert_eq!(clock.sleeps(), vec![secs(2.0), secs(4.0)]);
        assert_eq!(
            result.unwrap_err(),
            ApiError::Exhausted("Failed after 3 retries: flaky".into())
        );
        // A 503 text, but the predicate says no: returned unchanged.
        let calls = Cell::new(0);
        let (result, _) = on_virtual_clock(|| f(&calls, &|| ApiError::BadRequest("503".into())));
        assert_eq!(calls.get(), 1);
        assert_eq!(result.unwrap_err(), ApiError::BadRequest("503".into()));
    }
}

#[retry_with_backoff(
    max_retries = 3,
    jitter = 0,
    retry_if = |e: &io::Error| if e.kind() == io::ErrorKind::NotFound {
        Verdict::Retryable
    } else {
        Verdict::Unknown
    }
)]
fn with_verdict_predicate(calls: &Cell<u32>, make: &dyn Fn() -> io::Error) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(make())
}

#[test]
fn retry_if_answering_unknown_falls_through_to_the_built_in_rules() {
    let run = |make: &dyn Fn() -> io::Error| {
        let calls = Cell::new(0);
        let _ = on_virtual_clock(|| with_verdict_predicate(&calls, make));
        calls.get()
    };
    assert_eq!(
        run(&|| io::Error::from(io::ErrorKind::NotFound)),
        3,
        "predicate says retry"
    );
    assert_eq!(run(&reset), 3, "Unknown: the typed rule retries a reset");
    assert_eq!(
        run(&|| io::Error::other("HTTP 503")),
        3,
        "Unknown: the text rule retries a 503"
    );
    assert_eq!(
        run(&|| io::Error::from(io::ErrorKind::InvalidData)),
        1,
        "Unknown: the typed rule refuses InvalidData"
    );
}

#[retry_with_backoff(max_retries = 3, retry_if = |_: &io::Error| false)]
fn never_retry(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn retry_if_false_returns_a_retryable_kind_unchanged() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| never_retry(&calls));
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 1);
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(err.to_string(), RESET_TEXT);
    assert!(!is_give_up(&err));
    assert_eq!(logs.records().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Giving up: `MediaProcessingError` through `From` (README: "The error type")

#[test]
fn give_up_into_io_error_keeps_the_kind_and_the_typed_last_error() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| always_reset(&calls));
    let err = result.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        err.to_string(),
        "Failed after 3 retries: connection reset by peer"
    );
    let mpe = media_error(&err);
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    assert_eq!(mpe.last_error_message(), RESET_TEXT);
    let last = mpe.last_error::<io::Error>().expect("typed last error");
    assert_eq!(last.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(last.to_string(), RESET_TEXT);
    // `source()` is the redacted view of the last error: its text, not the error itself.
    let source = mpe.source().expect("the last error's view is the source");
    assert_eq!(source.to_string(), RESET_TEXT);
    assert!(source.downcast_ref::<io::Error>().is_none());
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn anyhow_failure(calls: &Cell<u32>) -> anyhow::Result<()> {
    calls.set(calls.get() + 1);
    Err(anyhow::anyhow!("503 Service Unavailable"))
}

#[test]
fn give_up_into_anyhow_can_be_downcast_and_keeps_the_chain() {
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| anyhow_failure(&calls));
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps().len(), 2);
    assert_eq!(
        err.to_string(),
        "Failed after 3 retries: 503 Service Unavailable"
    );
    let mpe = err
        .downcast_ref::<MediaProcessingError>()
        .expect("anyhow holds the MediaProcessingError");
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.last_error_message(), "503 Service Unavailable");
    let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
    assert_eq!(
        chain,
        vec![
            "Failed after 3 retries: 503 Service Unavailable".to_owned(),
            "503 Service Unavailable".to_owned(),
        ]
    );
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn anyhow_from_io(calls: &Cell<u32>) -> anyhow::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())?;
    Ok(())
}

#[test]
fn anyhow_function_retries_an_io_error_raised_with_question_mark() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| anyhow_from_io(&calls));
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 3);
    let give_up = err
        .downcast_ref::<MediaProcessingError>()
        .expect("anyhow holds the give-up");
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    // anyhow's own boxing would hide it: the give-up keeps the io::Error itself.
    assert_eq!(
        give_up.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn boxed_failure(calls: &Cell<u32>) -> Result<(), Box<dyn Error + Send + Sync>> {
    calls.set(calls.get() + 1);
    // The explicit type: see the report, the attempt's closure does not see the return type.
    let boxed: Box<dyn Error + Send + Sync> = Box::new(io::Error::from(io::ErrorKind::TimedOut));
    Err(boxed)
}

#[test]
fn give_up_into_boxed_error_can_be_downcast_with_the_typed_last_error() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| boxed_failure(&calls));
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 3);
    let timed_out = io::Error::from(io::ErrorKind::TimedOut).to_string();
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {timed_out}")
    );
    let mpe = err
        .downcast_ref::<MediaProcessingError>()
        .expect("boxed give-up");
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::TimedOut)
    );
    assert_eq!(
        err.source().map(ToString::to_string),
        Some(timed_out),
        "the source is the last error's (redacted) text"
    );
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("upstream failed")]
    Upstream(#[source] io::Error),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn app_call(calls: &Cell<u32>, bad_input: bool) -> Result<u32, AppError> {
    calls.set(calls.get() + 1);
    if bad_input {
        return Err(AppError::BadInput("empty image".into()));
    }
    Err(AppError::Upstream(reset()))
}

#[test]
fn give_up_into_a_thiserror_enum_through_from() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| app_call(&calls, false));
    assert_eq!(
        calls.get(),
        3,
        "the io reset in the source chain is retried"
    );
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: upstream failed: {RESET_TEXT}")
    );
    let AppError::Exhausted(mpe) = &err else {
        panic!("expected Exhausted, got {err:?}");
    };
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(
        mpe.last_error_message(),
        format!("upstream failed: {RESET_TEXT}")
    );
    assert!(
        matches!(mpe.last_error::<AppError>(), Some(AppError::Upstream(io)) if io.kind() == io::ErrorKind::ConnectionReset)
    );
    // The whole chain, as redacted texts: Exhausted -> Upstream -> io::Error.
    let chain = chain_of(&err);
    assert_eq!(
        chain,
        vec![
            format!("Failed after 3 retries: upstream failed: {RESET_TEXT}"),
            "upstream failed".to_owned(),
            RESET_TEXT.to_owned(),
        ]
    );

    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| app_call(&calls, true));
    assert_eq!(calls.get(), 1);
    assert!(matches!(result, Err(AppError::BadInput(m)) if m == "empty image"));
}

#[test]
fn last_error_takes_the_typed_error_back_out() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| app_call(&calls, false));
    let AppError::Exhausted(mpe) = result.unwrap_err() else {
        panic!("expected Exhausted");
    };
    assert!(
        mpe.last_error::<io::Error>().is_none(),
        "the last error is an AppError"
    );
    let last = mpe.into_last_error::<AppError>().expect("typed last error");
    assert!(matches!(last, AppError::Upstream(_)));
}

// ---------------------------------------------------------------------------------------------
// `timeout` on the whole call (README: "Arguments", "Delays")

#[retry_with_backoff(max_retries = 5, base_delay = 1, jitter = 0, timeout = 5)]
fn fast_failures_with_timeout(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn timeout_gives_up_at_once_instead_of_starting_a_wait_past_the_deadline() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| fast_failures_with_timeout(&calls));
    // t=0 attempt 1, wait 2s (ends at 2 <= 5), attempt 2, a 4s wait would end at 6 > 5.
    assert_eq!(calls.get(), 2, "fewer attempts than max_retries");
    assert_eq!(clock.sleeps(), vec![secs(2.0)]);
    assert_eq!(clock.elapsed(), secs(2.0), "the call fails at once");
    let err = result.unwrap_err();
    let mpe = media_error(&err);
    assert_eq!(mpe.attempts(), 2);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(4.0),
            timeout: secs(5.0)
        }
    );
    assert_eq!(
        err.to_string(),
        format!("Failed after 2 retries: {RESET_TEXT}")
    );
    let errors = logs.at_level(Level::ERROR);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].message,
        format!(
            "Giving up after 2 attempts (the next wait of 4.0s would end past the timeout of 5.0s): {RESET_TEXT}"
        )
    );
}

#[retry_with_backoff(max_retries = 10, base_delay = 1, jitter = 0, timeout = 10)]
fn slow_attempts(clock: &VirtualClock, calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    clock.advance(secs(3.0));
    Err(reset())
}

#[test]
fn timeout_counts_slow_attempts_and_waits_against_the_deadline() {
    let clock = Rc::new(VirtualClock::new());
    let calls = Cell::new(0);
    let result = with_sleeper(clock.clone(), || slow_attempts(&clock, &calls));
    // Attempt 1 ends at 3 s; wait 2 s -> 5 s; attempt 2 ends at 8 s; a 4 s wait would end at
    // 12 s, past the 10 s deadline: give up at once.
    assert_eq!(calls.get(), 2);
    assert_eq!(clock.sleeps(), vec![secs(2.0)]);
    assert_eq!(clock.elapsed(), secs(8.0));
    let err = result.unwrap_err();
    let mpe = media_error(&err);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(4.0),
            timeout: secs(10.0)
        }
    );
    assert_eq!(mpe.attempts(), 2);
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}

#[retry_with_backoff(max_retries = 3, base_delay = 1, jitter = 0, timeout = 6)]
fn fits_exactly(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn a_wait_ending_exactly_at_the_deadline_still_happens() {
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| fits_exactly(&calls));
    // Waits of 2 s and 4 s end exactly at the 6 s deadline: all 3 attempts run.
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps(), vec![secs(2.0), secs(4.0)]);
    let err = result.unwrap_err();
    assert_eq!(media_error(&err).reason(), GiveUpReason::AttemptsExhausted);
}

#[retry_with_backoff(max_retries = 5, timeout = 1)]
fn timeout_shorter_than_any_wait(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[test]
fn timeout_shorter_than_the_first_wait_makes_one_attempt() {
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| timeout_shorter_than_any_wait(&calls));
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Failed after 1 retries: {RESET_TEXT}")
    );
    assert!(matches!(
        media_error(&err).reason(),
        GiveUpReason::WaitPastDeadline { wait, timeout } if wait >= secs(2.0) && timeout == secs(1.0)
    ));
}

// ---------------------------------------------------------------------------------------------
// The text of log lines and give-ups shows the causes

#[retry_with_backoff(max_retries = 2, jitter = 0)]
fn resets_the_pool(calls: &Cell<u32>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    calls.set(calls.get() + 1);
    Err(io::Error::other("503 Service Unavailable")).context("while resetting the connection pool")
}

#[test]
fn an_anyhow_context_shows_the_error_beneath_it() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| resets_the_pool(&calls));
    assert_eq!(calls.get(), 2, "the 503 beneath the context is retried");
    const SHOWN: &str = "while resetting the connection pool: 503 Service Unavailable";
    assert_eq!(
        logs.messages(),
        [
            format!("Retry 1/2 after {SHOWN}: waiting 2.0s"),
            format!("Giving up after 2 attempts (all attempts failed): {SHOWN}"),
        ]
    );
    let error = result.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("Failed after 2 retries: {SHOWN}")
    );
}

/// A message that already holds its cause shows it once.
#[derive(Debug, thiserror::Error, resilience::Classify)]
enum UploadError {
    #[error("upload failed: {0}")]
    Failed(#[source] io::Error),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 2, jitter = 0)]
fn upload_once(calls: &Cell<u32>) -> Result<(), UploadError> {
    calls.set(calls.get() + 1);
    Err(UploadError::Failed(io::Error::other(
        "connection reset by peer",
    )))
}

#[test]
fn a_cause_already_in_the_message_is_not_repeated() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| upload_once(&calls));
    assert_eq!(calls.get(), 2);
    assert_eq!(
        logs.messages()[0],
        "Retry 1/2 after upload failed: connection reset by peer: waiting 2.0s"
    );
    assert_eq!(
        result.unwrap_err().to_string(),
        "Failed after 2 retries: upload failed: connection reset by peer"
    );
}

// ---------------------------------------------------------------------------------------------
// The rules read the text as it is; only what is shown is redacted

#[retry_with_backoff(max_retries = 3, jitter = 0)]
fn auth_proxy(calls: &Cell<u32>) -> Result<(), String> {
    calls.set(calls.get() + 1);
    // "auth: …" is a secret-looking name: the redacted text would read `auth: [REDACTED]`.
    Err("auth: connection refused".to_owned())
}

#[test]
fn a_text_is_classified_before_it_is_redacted() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| auth_proxy(&calls));
    assert_eq!(calls.get(), 3, "the refused connection is retried");
    let shown = result.unwrap_err();
    assert_eq!(shown, "Failed after 3 retries: auth: [REDACTED]");
    // Two retry lines and the give-up: none shows the text the rules read.
    let messages = logs.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages.iter().all(|m| !m.contains("connection refused")),
        "{messages:?}"
    );
}
