//! `MediaProcessingError`: what a retried call returns once it gives up.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::classify::chain::{display, links, text_with_causes};
use crate::redact::redact;

/// A boxed error that may cross threads: the form in which the last error is kept.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Why a retried call stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// Every attempt allowed by `max_retries` failed with a retryable error.
    AttemptsExhausted,
    /// The `timeout` on the whole call ran out while an attempt was running (async only: a
    /// sync attempt cannot be cut off).
    DeadlineExceeded {
        /// The bound that was set on the whole call.
        timeout: Duration,
    },
    /// The wait before the next attempt (backoff, or the server's hint when longer) would
    /// have ended past the `timeout`, so the call stopped before starting it.
    WaitPastDeadline {
        /// The wait that did not fit.
        wait: Duration,
        /// The bound that was set on the whole call.
        timeout: Duration,
    },
    /// Every attempt answered, but with a value the `not_ready` predicate called not ready
    /// (a long operation still running): the call stopped polling.
    NeverReady,
    /// A `#[rewind]` argument could not be put back where the call started, so the next
    /// attempt would have read what an earlier one left: the call stopped instead.
    RewindFailed {
        /// The parameter's name.
        argument: &'static str,
    },
    /// The circuit breaker refused the attempt: the service has been failing, and no attempt
    /// is made until the breaker lets a probe through (the README's "Circuit breaker").
    CircuitOpen {
        /// The breaker's name.
        breaker: &'static str,
        /// When the breaker lets the next probe through; `None` while it is held open by hand.
        retry_in: Option<Duration>,
    },
    /// The rate limiter's next permit would come after the call's `timeout` (the README's
    /// "Rate limiter").
    RateLimited {
        /// The limiter's name.
        limiter: &'static str,
        /// How long the attempt would have waited for its permit.
        wait: Duration,
    },
    /// The retry budget shared with other calls was spent: the failure was retryable, but
    /// retrying it would have added to a retry storm (the README's "Retry budget").
    BudgetExhausted {
        /// The budget's name.
        budget: &'static str,
    },
    /// The server asked for a longer wait than the policy's `max_hint` allows.
    HintAboveCap {
        /// What the server asked for.
        retry_after: Duration,
        /// The longest wait the policy honours.
        max_hint: Duration,
    },
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::AttemptsExhausted => f.write_str("all attempts failed"),
            GiveUpReason::DeadlineExceeded { timeout } => {
                write!(f, "the timeout of {:.1}s ran out", timeout.as_secs_f64())
            }
            GiveUpReason::WaitPastDeadline { wait, timeout } => write!(
                f,
                "the next wait of {:.1}s would end past the timeout of {:.1}s",
                wait.as_secs_f64(),
                timeout.as_secs_f64()
            ),
            GiveUpReason::NeverReady => f.write_str("the value was never ready"),
            GiveUpReason::RewindFailed { argument } => {
                write!(
                    f,
                    "`{argument}` could not be rewound to where the call started"
                )
            }
            GiveUpReason::CircuitOpen {
                breaker,
                retry_in: Some(retry_in),
            } => write!(
                f,
                "circuit `{breaker}` is open, next probe in {:.1}s",
                retry_in.as_secs_f64()
            ),
            GiveUpReason::CircuitOpen {
                breaker,
                retry_in: None,
            } => write!(f, "circuit `{breaker}` is held open"),
            GiveUpReason::RateLimited { limiter, wait } => write!(
                f,
                "rate limit `{limiter}` would have made the attempt wait {:.1}s, past the timeout",
                wait.as_secs_f64()
            ),
            GiveUpReason::BudgetExhausted { budget } => {
                write!(f, "retry budget `{budget}` is spent")
            }
            GiveUpReason::HintAboveCap {
                retry_after,
                max_hint,
            } => write!(
                f,
                "the server asked to wait {:.1}s, more than max_hint {:.1}s",
                retry_after.as_secs_f64(),
                max_hint.as_secs_f64()
            ),
        }
    }
}

/// The error of a retried call once it gives up: `Failed after {attempts} retries: {last error}`.
///
/// It keeps everything a caller needs to save the task as `failed` and try it again later:
/// the number of attempts made, the last error's text with its causes (credentials
/// redacted), why the call stopped, how long the server asked to wait if it said, and the
/// last error itself, typed, for code that asks for it ([`last_error`](Self::last_error),
/// [`find`](Self::find), [`into_last_error`](Self::into_last_error)).
///
/// Every standard way of printing it shows no credential: `{}`, `{:?}`, and the
/// [`source()`](Error::source) chain, which is a redacted view of the last error and its
/// causes (their texts), not the errors themselves. So anyhow's `{:#}` and `{:?}` are safe to
/// log. The function's own error type receives it through `From`: `anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`, `std::io::Error` and `String` do out of the box; a
/// `thiserror` enum takes it with a variant `Exhausted(#[from] MediaProcessingError)`.
///
/// ```
/// use std::io;
/// use resilience::MediaProcessingError;
///
/// let err = MediaProcessingError::exhausted(5, io::Error::from(io::ErrorKind::TimedOut));
/// assert_eq!(err.to_string(), "Failed after 5 retries: timed out");
/// assert_eq!(err.attempts(), 5);
/// assert_eq!(err.last_error_message(), "timed out");
/// assert_eq!(err.last_error::<io::Error>().map(io::Error::kind), Some(io::ErrorKind::TimedOut));
/// ```
pub struct MediaProcessingError(Box<GiveUp>);

/// The parts of a give-up, boxed: the error is built only on the failure path, and a user's
/// error enum that holds it stays one pointer wide.
struct GiveUp {
    attempts: u32,
    message: String,
    reason: GiveUpReason,
    retry_after: Option<Duration>,
    /// The waits before the attempts after the first, added up.
    waited: Duration,
    /// The last error itself, when its type could be kept.
    last_error: Option<BoxError>,
    /// What `source()` shows: the last error's chain, redacted.
    view: RedactedCause,
}

impl MediaProcessingError {
    /// The error for a call whose `attempts` attempts all failed, the last with `last_error`.
    pub fn exhausted(attempts: u32, last_error: impl Into<BoxError>) -> Self {
        let last_error = last_error.into();
        let message = text_with_causes(&*last_error);
        Self::new(
            attempts,
            GiveUpReason::AttemptsExhausted,
            message,
            Some(last_error),
        )
    }

    /// Builds the error from its parts. `message` is the last error's text (credentials in
    /// it are redacted here); `last_error` is the error itself when its type can be kept (it
    /// must be `Send + Sync + 'static`), otherwise the text stands in for it.
    pub fn new(
        attempts: u32,
        reason: GiveUpReason,
        message: String,
        last_error: Option<BoxError>,
    ) -> Self {
        let message = match redact(&message) {
            Cow::Borrowed(_) => message,
            Cow::Owned(redacted) => redacted,
        };
        let view = match &last_error {
            Some(error) => RedactedCause::of(&**error),
            None => RedactedCause::text(&message),
        };
        Self(Box::new(GiveUp {
            attempts,
            message,
            reason,
            retry_after: None,
            waited: Duration::ZERO,
            last_error,
            view,
        }))
    }

    /// The same error, carrying the wait the server asked for.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.0.retry_after = retry_after;
        self
    }

    /// The same error, stating how long the call waited between its attempts.
    #[must_use]
    pub fn with_waited(mut self, waited: Duration) -> Self {
        self.0.waited = waited;
        self
    }

    /// How long the call waited between its attempts, all waits added up (the time of the
    /// attempts themselves is not counted).
    pub fn waited(&self) -> Duration {
        self.0.waited
    }

    /// How many attempts were made before giving up.
    pub fn attempts(&self) -> u32 {
        self.0.attempts
    }

    /// The text of the last error and its causes, as it appears after `Failed after N retries: `.
    pub fn last_error_message(&self) -> &str {
        &self.0.message
    }

    /// Why the call stopped trying.
    pub fn reason(&self) -> GiveUpReason {
        self.0.reason
    }

    /// How long the server asked to wait before trying again (`Retry-After`, Gemini's
    /// `RetryInfo`), if its last answer said: save it with the failed task.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// The last error, if it is of type `E`. It is the error itself, not a redacted view:
    /// print the give-up error rather than this.
    pub fn last_error<E: Error + 'static>(&self) -> Option<&E> {
        self.0.last_error.as_ref()?.downcast_ref::<E>()
    }

    /// The first error of type `E` in the last error's chain, the last error included: finds
    /// an `HttpError` or an `io::Error` inside your own error type.
    pub fn find<E: Error + 'static>(&self) -> Option<&E> {
        let last: &(dyn Error + 'static) = &**self.0.last_error.as_ref()?;
        links(last).find_map(|link| link.downcast_ref::<E>())
    }

    /// Takes the last error out as type `E`, or gives `self` back if it is of another type.
    pub fn into_last_error<E: Error + 'static>(mut self) -> Result<E, Self> {
        match self.0.last_error.take().map(|error| error.downcast::<E>()) {
            Some(Ok(error)) => Ok(*error),
            Some(Err(other)) => {
                self.0.last_error = Some(other);
                Err(self)
            }
            None => Err(self),
        }
    }
}

impl fmt::Display for MediaProcessingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Failed after {} retries: {}",
            self.0.attempts, self.0.message
        )
    }
}

/// `Debug` is what `fn main() -> Result<..>` and `{:?}` print, so it shows the redacted view
/// of the last error, never its own `Debug` (a client error often holds the request URL).
impl fmt::Debug for MediaProcessingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaProcessingError")
            .field("attempts", &self.0.attempts)
            .field("message", &self.0.message)
            .field("reason", &self.0.reason)
            .field("retry_after", &self.0.retry_after)
            .field("waited", &self.0.waited)
            .field("last_error", &self.0.view)
            .finish()
    }
}

impl Error for MediaProcessingError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0.view)
    }
}

/// One link of the last error's chain as `source()` shows it: its `Display` and `Debug`
/// texts, redacted, made once when the give-up error is built.
struct RedactedCause {
    text: String,
    debug: String,
    next: Option<Box<RedactedCause>>,
}

impl RedactedCause {
    fn of(error: &(dyn Error + 'static)) -> Self {
        let mut causes: Vec<RedactedCause> = Vec::new();
        for link in links(error) {
            let text = shortened(redact(&display(link)).into_owned());
            // An `io::Error` and the error inside it say the same: show it once.
            if causes.last().is_some_and(|previous| previous.text == text) {
                continue;
            }
            // Written, not `format!`ed: a `Debug` that fails must not panic here.
            let mut debug = String::new();
            let _ = fmt::Write::write_fmt(&mut debug, format_args!("{link:?}"));
            let debug = shortened(redact(&debug).into_owned());
            causes.push(RedactedCause {
                text,
                debug,
                next: None,
            });
        }
        let mut next = None;
        while let Some(mut cause) = causes.pop() {
            cause.next = next.map(Box::new);
            next = Some(cause);
        }
        next.unwrap_or_else(|| Self::text(""))
    }

    fn text(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            debug: format!("{text:?}"),
            next: None,
        }
    }
}

/// A view's text is cut after this many bytes: a multi-megabyte error page, kept whole in
/// every link's `Debug`, would otherwise be copied once per link.
const VIEW_TEXT_LIMIT: usize = 4096;

fn shortened(mut text: String) -> String {
    if text.len() > VIEW_TEXT_LIMIT {
        let mut cut = VIEW_TEXT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

impl fmt::Display for RedactedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for RedactedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.debug)
    }
}

impl Error for RedactedCause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.next
            .as_deref()
            .map(|next| next as &(dyn Error + 'static))
    }
}

/// Whether `link` is the view a give-up's `source()` returns: then a give-up stands behind
/// it, even when a transparent wrapper hides the `MediaProcessingError` itself.
pub(crate) fn is_give_up_view(link: &(dyn Error + 'static)) -> bool {
    link.is::<RedactedCause>()
}

/// The last error of a call whose `timeout` ran out while an attempt was still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded {
    /// The bound set on the whole call.
    pub timeout: Duration,
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no answer within the timeout of {:.1}s",
            self.timeout.as_secs_f64()
        )
    }
}

impl Error for DeadlineExceeded {}

/// What an attempt of an async call failed with when it ran past its `attempt_timeout`: a
/// timeout, retried like any other; the last error of the give-up when the last attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimedOut {
    /// The bound set on each attempt.
    pub attempt_timeout: Duration,
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the attempt ran past its attempt_timeout of {:.1}s",
            self.attempt_timeout.as_secs_f64()
        )
    }
}

impl Error for AttemptTimedOut {}

/// Keeps the kind of the last I/O error, so `?` callers that match on kinds still can;
/// a timeout on the whole call becomes `TimedOut`.
impl From<MediaProcessingError> for io::Error {
    fn from(error: MediaProcessingError) -> Self {
        let kind = match (error.find::<io::Error>(), error.reason()) {
            (Some(last), _) => last.kind(),
            (
                None,
                GiveUpReason::DeadlineExceeded { .. } | GiveUpReason::WaitPastDeadline { .. },
            ) => io::ErrorKind::TimedOut,
            (None, _) if error.last_error::<AttemptTimedOut>().is_some() => io::ErrorKind::TimedOut,
            (None, _) => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

impl From<MediaProcessingError> for String {
    fn from(error: MediaProcessingError) -> Self {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn display_is_exact() {
        let e = MediaProcessingError::exhausted(5, "429 Resource Exhausted");
        assert_eq!(
            e.to_string(),
            "Failed after 5 retries: 429 Resource Exhausted"
        );
        let e = MediaProcessingError::exhausted(1, "boom");
        assert_eq!(e.to_string(), "Failed after 1 retries: boom");
    }

    #[test]
    fn source_is_a_redacted_view_of_the_last_error_and_its_causes() {
        let root = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        let last = io::Error::other(Wrapped("GET https://g.test/v1?key=secret123 failed", root));
        let e = MediaProcessingError::exhausted(3, last);
        let texts: Vec<String> = links(&e).map(|l| l.to_string()).collect();
        assert_eq!(
            texts,
            [
                "Failed after 3 retries: GET https://g.test/v1?key=[REDACTED] failed: reset by peer",
                "GET https://g.test/v1?key=[REDACTED] failed",
                "reset by peer",
            ]
        );
        assert!(!format!("{e:?}").contains("secret123"), "{e:?}");
        // The typed errors are still there for code that asks.
        assert_eq!(
            e.find::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::Other)
        );
        assert!(e.find::<Wrapped>().is_some());
    }

    #[test]
    fn typed_access_and_taking_the_error_back() {
        let e = MediaProcessingError::exhausted(2, io::Error::other("x"));
        assert!(e.last_error::<DeadlineExceeded>().is_none());
        let e = e.into_last_error::<DeadlineExceeded>().unwrap_err();
        let io = e.into_last_error::<io::Error>().unwrap();
        assert_eq!(io.to_string(), "x");
    }

    #[test]
    fn text_stands_in_when_the_type_cannot_be_kept() {
        let e = MediaProcessingError::new(
            4,
            GiveUpReason::AttemptsExhausted,
            "503 from a non-Send error".into(),
            None,
        );
        assert_eq!(e.source().unwrap().to_string(), "503 from a non-Send error");
        assert_eq!(e.last_error_message(), "503 from a non-Send error");
    }

    #[test]
    fn io_error_keeps_the_last_kind() {
        let e = MediaProcessingError::exhausted(5, io::Error::from(io::ErrorKind::TimedOut));
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        assert_eq!(io.to_string(), "Failed after 5 retries: timed out");

        let deadline = MediaProcessingError::new(
            2,
            GiveUpReason::DeadlineExceeded {
                timeout: Duration::from_secs(3),
            },
            "no answer within the timeout of 3.0s".into(),
            Some(Box::new(DeadlineExceeded {
                timeout: Duration::from_secs(3),
            })),
        );
        assert_eq!(io::Error::from(deadline).kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn boxes_and_strings_receive_it() {
        let boxed: BoxError = MediaProcessingError::exhausted(1, "x").into();
        assert!(boxed.downcast_ref::<MediaProcessingError>().is_some());
        let text: String = MediaProcessingError::exhausted(1, "x").into();
        assert_eq!(text, "Failed after 1 retries: x");
    }

    /// `anyhow::Error` receives it through anyhow's own `From`, and anyhow's `{:#}`, which
    /// prints the chain, shows the redacted view of the last error after the give-up.
    #[cfg(feature = "anyhow")]
    #[test]
    fn anyhow_receives_it_and_shows_the_redacted_chain() {
        let last = io::Error::other(Wrapped(
            "GET https://g.test/v1?key=secret123 failed",
            io::Error::from(io::ErrorKind::ConnectionReset),
        ));
        let error = anyhow::Error::from(MediaProcessingError::exhausted(3, last));
        let give_up = error
            .downcast_ref::<MediaProcessingError>()
            .expect("anyhow holds the give-up itself");
        assert_eq!(give_up.attempts(), 3);
        let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
        assert_eq!(
            chain,
            [
                "Failed after 3 retries: GET https://g.test/v1?key=[REDACTED] failed: connection reset",
                "GET https://g.test/v1?key=[REDACTED] failed",
                "connection reset",
            ]
        );
        let report = format!("{error:#}");
        assert!(!report.contains("secret123"), "{report}");
        assert!(report.ends_with(": connection reset"), "{report}");
    }

    #[test]
    fn credentials_never_reach_the_message() {
        let e = MediaProcessingError::exhausted(
            2,
            "error sending request for url (https://g.test/v1?key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI)",
        );
        assert_eq!(
            e.to_string(),
            "Failed after 2 retries: error sending request for url (https://g.test/v1?key=[REDACTED])"
        );
    }

    #[test]
    fn debug_redacts_the_last_error_too() {
        #[derive(Debug)]
        struct ClientError {
            #[allow(dead_code)] // read only through `Debug`, which is the point
            url: &'static str,
        }
        impl fmt::Display for ClientError {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl Error for ClientError {}
        let e = MediaProcessingError::exhausted(
            3,
            ClientError {
                url: "https://g.test/v1?key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
            },
        );
        let debug = format!("{e:?}");
        assert!(debug.contains("key=[REDACTED]"), "{debug}");
        assert!(!debug.contains("AIzaSy"), "{debug}");
        assert!(debug.contains("attempts: 3"), "{debug}");
    }

    #[test]
    fn the_hint_travels_with_the_error() {
        let e = MediaProcessingError::exhausted(1, "429")
            .with_retry_after(Some(Duration::from_secs(53)));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(53)));
        let e = e.into_last_error::<io::Error>().unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(53)));
    }

    #[test]
    fn is_send_sync_static_and_one_pointer_wide() {
        fn check<T: Send + Sync + 'static>() {}
        check::<MediaProcessingError>();
        assert_eq!(
            std::mem::size_of::<MediaProcessingError>(),
            std::mem::size_of::<usize>()
        );
    }
}
