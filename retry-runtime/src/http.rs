//! HTTP answers as typed errors: the status decides retryability without parsing text, and
//! the `Retry-After` header or a Gemini `RetryInfo` in the body is kept as the server's hint.
//!
//! With feature `reqwest`, `error_for_status` turns a `reqwest::Response` into one; with
//! `reqwest-blocking`, `blocking_error_for_status` a blocking one; with `ureq`,
//! `ureq_error_for_status` a ureq 3 response. The rules that classify an `HttpError` (and the
//! clients' own errors) live in [`classify`](crate::classify).

use std::fmt;
use std::time::Duration;

use crate::hint::{ServerWords, read_text};

/// An HTTP answer with an error status, kept whole: status, the server's delay hint, body.
///
/// Its `Display` is `HTTP {status}: {body}` (the body shortened to 500 characters), so the
/// text rule and the log lines read as they did in Python.
///
/// ```
/// use std::time::Duration;
/// use resilience::{Classify, Verdict, http::HttpError};
///
/// let e = HttpError::new(429, Some(Duration::from_secs(7)), "Resource Exhausted");
/// assert_eq!(e.to_string(), "HTTP 429: Resource Exhausted");
/// assert_eq!(e.classify(), Verdict::Retryable);
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
/// assert_eq!(HttpError::new(400, None, "timeout must be positive").classify(), Verdict::NotRetryable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    status: u16,
    header_retry_after: Option<Duration>,
    body: String,
}

const DISPLAY_BODY_CHARS: usize = 500;

impl HttpError {
    /// An answer with `status`, the `Retry-After` header's delay if there was one, and `body`.
    pub fn new(status: u16, retry_after: Option<Duration>, body: impl Into<String>) -> Self {
        Self {
            status,
            header_retry_after: retry_after,
            body: body.into(),
        }
    }

    /// Reads the `Retry-After` header (seconds or HTTP date) from `headers`.
    #[cfg(feature = "http")]
    pub fn from_parts(
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: impl Into<String>,
    ) -> Self {
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::hint::retry_after_header(v, std::time::SystemTime::now()));
        Self::new(status.as_u16(), retry_after, body)
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body of the answer, as received.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// What the answer says about waiting: the `Retry-After` header first, else a
    /// `RetryInfo` in the body; and whether the body names a per-day quota.
    pub fn server_words(&self) -> ServerWords {
        ServerWords {
            retry_after: self.header_retry_after,
            per_day_quota: false,
            no_retry: false,
        }
        .or(read_text(&self.body))
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        let body = self.body.trim();
        if body.is_empty() {
            return Ok(());
        }
        f.write_str(": ")?;
        match body.char_indices().nth(DISPLAY_BODY_CHARS) {
            Some((cut, _)) => write!(f, "{}...", &body[..cut]),
            None => f.write_str(body),
        }
    }
}

impl std::error::Error for HttpError {}

/// Passes a successful response through; turns an error status into an [`HttpError`] that
/// keeps the `Retry-After` header and the body (where Gemini puts its `RetryInfo`).
///
/// Unlike `reqwest::Response::error_for_status`, nothing the server said is dropped.
#[cfg(feature = "reqwest")]
pub async fn error_for_status(response: reqwest::Response) -> Result<reqwest::Response, HttpError> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(response);
    }
    let headers = response.headers().clone();
    // A body that cannot be read (the connection dropped) leaves the status to speak.
    let body = response.text().await.unwrap_or_default();
    Err(HttpError::from_parts(status, &headers, body))
}

/// [`error_for_status`] for reqwest's blocking client: a blocking 429's `Retry-After` is kept.
#[cfg(feature = "reqwest-blocking")]
pub fn blocking_error_for_status(
    response: reqwest::blocking::Response,
) -> Result<reqwest::blocking::Response, HttpError> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let body = response.text().unwrap_or_default();
    Err(HttpError::from_parts(status, &headers, body))
}

/// [`error_for_status`] for ureq 3, whose own status error (`Error::StatusCode`) keeps only the
/// number. Turn that off with `http_status_as_error(false)` and pass each response here: an
/// error status becomes an [`HttpError`] with its `Retry-After` header and its body.
///
/// ```no_run
/// use resilience::http::{HttpError, ureq_error_for_status};
///
/// #[derive(Debug, thiserror::Error, resilience::Classify)]
/// enum ApiError {
///     #[error("{0}")]
///     Http(#[from] HttpError),
///     #[error("{0}")]
///     Transport(#[from] ureq::Error),
///     #[error(transparent)]
///     GaveUp(#[from] resilience::MediaProcessingError),
/// }
///
/// #[resilience::retry_with_backoff(max_retries = 3)]
/// fn fetch(agent: &ureq::Agent, url: &str) -> Result<String, ApiError> {
///     let response = ureq_error_for_status(agent.get(url).call()?)?;
///     Ok(response.into_body().read_to_string()?)
/// }
///
/// let agent: ureq::Agent = ureq::Agent::config_builder()
///     .http_status_as_error(false)
///     .build()
///     .into();
/// let text = fetch(&agent, "http://127.0.0.1:8080/v1/models")?;
/// # Ok::<(), ApiError>(())
/// ```
#[cfg(feature = "ureq")]
pub fn ureq_error_for_status(
    mut response: http::Response<ureq::Body>,
) -> Result<http::Response<ureq::Body>, HttpError> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(response);
    }
    // A body that cannot be read (the connection dropped) leaves the status to speak.
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Err(HttpError::from_parts(status, response.headers(), body))
}

/// The give-up error as a ureq 3 error (`Error::Other`), so that a function returning
/// `Result<T, ureq::Error>` can carry the attribute; `MediaProcessingError` is found again by
/// downcasting the boxed error, and an outer retried call knows this one gave up.
#[cfg(feature = "ureq")]
impl From<crate::error::MediaProcessingError> for ureq::Error {
    fn from(give_up: crate::error::MediaProcessingError) -> Self {
        ureq::Error::Other(Box::new(give_up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_shortened_on_a_char_boundary() {
        let e = HttpError::new(503, None, "é".repeat(600));
        let shown = e.to_string();
        assert!(shown.starts_with("HTTP 503: éé"));
        assert!(shown.ends_with("..."));
        assert_eq!(shown.chars().filter(|c| *c == 'é').count(), 500);
        assert_eq!(HttpError::new(502, None, "  ").to_string(), "HTTP 502");
    }
}
