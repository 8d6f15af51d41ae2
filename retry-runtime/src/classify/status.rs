//! The typed rule for HTTP statuses, and the `Classify` of the types that carry one.

use std::error::Error;
use std::time::Duration;

use super::{Classified, Classify, Verdict};
use crate::http::HttpError;

/// 408, 429, 500, 502, 503 and 504 are retryable, any other 4xx or 5xx is not, anything else
/// is not an error status this rule knows.
///
/// ```
/// use resilience::{Verdict, classify::by_status};
///
/// assert_eq!(by_status(503), Verdict::Retryable);
/// assert_eq!(by_status(404), Verdict::NotRetryable);
/// assert_eq!(by_status(200), Verdict::Unknown);
/// ```
pub fn by_status(status: u16) -> Verdict {
    match status {
        408 | 429 | 500 | 502 | 503 | 504 => Verdict::Retryable,
        400..=599 => Verdict::NotRetryable,
        _ => Verdict::Unknown,
    }
}

/// An `HttpError` is decided by the built-in rules over itself: its status (a known type in
/// the chain), its `Retry-After` header and the `RetryInfo` or per-day quota in its body.
impl Classify for HttpError {
    fn classify(&self) -> Verdict {
        super::explain(self).verdict
    }

    fn retry_after(&self) -> Option<Duration> {
        super::explain(self).retry_after
    }

    fn __resilience_own_answer(&self) -> Option<Classified> {
        None
    }

    fn error_chain(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

#[cfg(feature = "http")]
impl Classify for http::StatusCode {
    fn classify(&self) -> Verdict {
        by_status(self.as_u16())
    }

    fn __resilience_own_answer(&self) -> Option<Classified> {
        Classified::by(super::Rule::KnownType, self.classify())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_transient_statuses_retry_other_errors_do_not() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(by_status(code), Verdict::Retryable, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 501, 505, 599] {
            assert_eq!(by_status(code), Verdict::NotRetryable, "{code}");
        }
        for code in [200, 204, 301, 304, 600, 0] {
            assert_eq!(by_status(code), Verdict::Unknown, "{code}");
        }
    }

    #[test]
    fn a_400_mentioning_timeout_is_not_retried() {
        let e = HttpError::new(400, None, r#"{"error": "field timeout invalid"}"#);
        assert_eq!(e.classify(), Verdict::NotRetryable);
        assert_eq!(
            super::super::explain(&e).rule,
            super::super::Rule::KnownType
        );
    }

    #[test]
    fn a_per_day_quota_in_the_body_is_not_retried() {
        let e = HttpError::new(
            429,
            None,
            r#"{"message": "Your quota will reset after 12h", "quotaId": "GenerateRequestsPerDayPerProject"}"#,
        );
        assert_eq!(e.classify(), Verdict::NotRetryable);
        assert_eq!(
            super::super::explain(&e).rule,
            super::super::Rule::PerDayQuota
        );
    }

    #[test]
    fn the_header_hint_wins_over_the_body_hint() {
        let e = HttpError::new(
            429,
            Some(Duration::from_secs(3)),
            r#"{"retryDelay": "53s"}"#,
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = HttpError::new(429, None, r#"{"retryDelay": "53s"}"#);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(53)));
    }
}
