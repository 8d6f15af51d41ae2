//! `MediaProcessingError`: what a retried call returns once it gives up.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::redact::redact;

/// A boxed error that may cross threads: the form in which the last error is kept.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Why a retried call stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// Every attempt allowed by `max_retries` failed with a retryable error.
    AttemptsExhausted,
    /// The `timeout` on the whole call ran out, or the next wait would have ended past it.
    DeadlineExceeded {
        /// The bound that was set on the whole call.
        timeout: Duration,
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
/// the number of attempts made, the last error's text (credentials redacted), why the call
/// stopped, how long the server asked to wait if it said, and the last error itself as
/// [`source()`](Error::source), so the whole cause chain survives (like Python's `__cause__`). The function's own error type receives it through `From`:
/// `anyhow::Error`, `Box<dyn Error + Send + Sync>`, `std::io::Error` and `String` do out of
/// the box; a `thiserror` enum takes it with `#[error(transparent)] Exhausted(#[from] MediaProcessingError)`.
///
/// ```
/// use std::io;
/// use retry_runtime::MediaProcessingError;
///
/// let err = MediaProcessingError::exhausted(5, io::Error::from(io::ErrorKind::TimedOut));
/// assert_eq!(err.to_string(), "Failed after 5 retries: timed out");
/// assert_eq!(err.attempts(), 5);
/// assert_eq!(err.last_error_message(), "timed out");
/// assert_eq!(err.last_error::<io::Error>().map(io::Error::kind), Some(io::ErrorKind::TimedOut));
/// ```
#[derive(thiserror::Error)]
#[error("Failed after {attempts} retries: {message}")]
pub struct MediaProcessingError {
    attempts: u32,
    message: String,
    reason: GiveUpReason,
    retry_after: Option<Duration>,
    #[source]
    last_error: BoxError,
}

impl MediaProcessingError {
    /// The error for a call whose `attempts` attempts all failed, the last with `last_error`.
    pub fn exhausted(attempts: u32, last_error: impl Into<BoxError>) -> Self {
        let last_error = last_error.into();
        Self::new(
            attempts,
            GiveUpReason::AttemptsExhausted,
            last_error.to_string(),
            Some(last_error),
        )
    }

    /// Builds the error from its parts. `message` is the last error's text (credentials in
    /// it are redacted here); `last_error` is the error itself when its type can be kept (it
    /// must be `Send + Sync + 'static`), otherwise the text stands in for it as `source()`.
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
        let last_error = last_error.unwrap_or_else(|| Box::new(LastErrorText(message.clone())));
        Self {
            attempts,
            message,
            reason,
            retry_after: None,
            last_error,
        }
    }

    /// The same error, carrying the wait the server asked for.
    #[must_use]
    pub fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..self
        }
    }

    /// How many attempts were made before giving up.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The text of the last error, as it appears after `Failed after N retries: `.
    pub fn last_error_message(&self) -> &str {
        &self.message
    }

    /// Why the call stopped trying.
    pub fn reason(&self) -> GiveUpReason {
        self.reason
    }

    /// How long the server asked to wait before trying again (`Retry-After`, Gemini's
    /// `RetryInfo`), if its last answer said: save it with the failed task.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The last error, if it is of type `E`.
    pub fn last_error<E: Error + 'static>(&self) -> Option<&E> {
        self.last_error.downcast_ref::<E>()
    }

    /// The last error as it was kept: the original error when its type allowed, else its text.
    pub fn last_error_dyn(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.last_error
    }

    /// Takes the last error out as type `E`, or gives `self` back if it is of another type.
    pub fn into_last_error<E: Error + 'static>(self) -> Result<E, Self> {
        let Self {
            attempts,
            message,
            reason,
            retry_after,
            last_error,
        } = self;
        match last_error.downcast::<E>() {
            Ok(error) => Ok(*error),
            Err(last_error) => Err(Self {
                attempts,
                message,
                reason,
                retry_after,
                last_error,
            }),
        }
    }
}

/// `Debug` is what `fn main() -> Result<..>` and `{:?}` print, so the last error's `Debug`
/// (a client error often holds the request URL with its `key=`) is redacted too.
impl fmt::Debug for MediaProcessingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaProcessingError")
            .field("attempts", &self.attempts)
            .field("message", &self.message)
            .field("reason", &self.reason)
            .field("retry_after", &self.retry_after)
            .field(
                "last_error",
                &format_args!("{}", redact(&format!("{:?}", self.last_error))),
            )
            .finish()
    }
}

/// Stands in for a last error whose type could not be kept (not `Send`, `Sync` or `'static`).
#[derive(Debug)]
struct LastErrorText(String);

impl fmt::Display for LastErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for LastErrorText {}

/// The last error of a call whose `timeout` ran out while an attempt was still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within the timeout of {:.1}s", .timeout.as_secs_f64())]
pub struct DeadlineExceeded {
    /// The bound set on the whole call.
    pub timeout: Duration,
}

/// Keeps the kind of the last I/O error, so `?` callers that match on kinds still can;
/// a timeout on the whole call becomes `TimedOut`.
impl From<MediaProcessingError> for io::Error {
    fn from(error: MediaProcessingError) -> Self {
        let kind = match (error.last_error::<io::Error>(), error.reason) {
            (Some(last), _) => last.kind(),
            (None, GiveUpReason::DeadlineExceeded { .. }) => io::ErrorKind::TimedOut,
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
    fn source_is_the_last_error_and_the_chain_survives() {
        let root = io::Error::from(io::ErrorKind::ConnectionReset);
        let e = MediaProcessingError::exhausted(3, root);
        let source = e.source().expect("a source");
        let io = source
            .downcast_ref::<io::Error>()
            .expect("the io error itself");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
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
    fn boxes_anyhow_and_strings_receive_it() {
        let boxed: BoxError = MediaProcessingError::exhausted(1, "x").into();
        assert!(boxed.downcast_ref::<MediaProcessingError>().is_some());
        let text: String = MediaProcessingError::exhausted(1, "x").into();
        assert_eq!(text, "Failed after 1 retries: x");
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
    fn is_send_sync_and_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<MediaProcessingError>();
    }
}
