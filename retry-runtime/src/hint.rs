//! What the server says about waiting (the README's "What the server says"): `Retry-After`,
//! Gemini's `RetryInfo`, and per-day quotas that no wait of minutes will fix.
//!
//! Hints are read from a typed error where one carries them ([`HttpError`](crate::http::HttpError)
//! with feature `http`, or an error type's own [`Classify::retry_after`](crate::Classify::retry_after)),
//! else from the text of any error in the chain: clients of the Gemini API put the JSON body
//! of the answer in their error message.

use std::time::{Duration, SystemTime};

use crate::scan::{find_ignore_ascii_case, skip};

/// What a server's answer says about trying again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerWords {
    /// How long the server asks the client to wait.
    pub retry_after: Option<Duration>,
    /// The answer names a per-day quota (`quotaId` containing `PerDay`): retrying within
    /// minutes cannot help, whatever else the text says ("Your quota will reset after 12h").
    pub per_day_quota: bool,
    /// The server asks not to be retried at all: a negative or unreadable gRPC
    /// `grpc-retry-pushback-ms` (gRFC A6).
    pub no_retry: bool,
}

impl ServerWords {
    /// `self`, with the gaps filled from `other`.
    pub fn or(self, other: ServerWords) -> ServerWords {
        ServerWords {
            retry_after: self.retry_after.or(other.retry_after),
            per_day_quota: self.per_day_quota || other.per_day_quota,
            no_retry: self.no_retry || other.no_retry,
        }
    }
}

/// Reads the hints in an error's text: a Google `RetryInfo` (`"retryDelay": "53s"`), a
/// `Retry-After: 30` header dump, and a `quotaId` naming a per-day quota. Tolerates the JSON
/// being escaped inside another string (`\"retryDelay\": \"53s\"`).
///
/// ```
/// use std::time::Duration;
/// use resilience::hint::read_text;
///
/// let body = r#"{"error": {"code": 429, "details": [
///   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"}]}}"#;
/// assert_eq!(read_text(body).retry_after, Some(Duration::from_secs(53)));
/// assert!(!read_text(body).per_day_quota);
/// ```
pub fn read_text(text: &str) -> ServerWords {
    let retry_after = value_after(text, "retryDelay")
        .and_then(google_duration)
        .or_else(|| {
            value_after(text, "retry-after").and_then(|v| retry_after_header(v, SystemTime::now()))
        });
    let per_day_quota = values_after(text, "quotaId").any(|id| id.contains("PerDay"));
    ServerWords {
        retry_after,
        per_day_quota,
        no_retry: false,
    }
}

/// A `google.protobuf.Duration` in JSON form: seconds with an `s` suffix, fractions allowed
/// (`"53s"`, `"0.5s"`, `"1.250s"`).
pub fn google_duration(value: &str) -> Option<Duration> {
    let seconds = value.strip_suffix('s')?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let seconds: f64 = seconds.parse().ok()?;
    // A delay too long for a `Duration` still means "longer than any cap".
    Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

/// An HTTP `Retry-After` value: delta-seconds, or an HTTP date (one in the past means 0).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use resilience::hint::retry_after_header;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
/// assert_eq!(retry_after_header("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(retry_after_header("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
/// assert_eq!(retry_after_header("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
/// assert_eq!(retry_after_header("soon", now), None);
/// ```
pub fn retry_after_header(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds too large for a u64 still mean "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first value written after `name` (see [`values_after`]).
fn value_after<'t>(text: &'t str, name: &'static str) -> Option<&'t str> {
    values_after(text, name).next()
}

/// Each value written after `name` and a `:`, quotes and backslashes skipped: for
/// `"retryDelay": "53s"` it yields `53s`; for `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`
/// the whole date. A value is read for at most [`MAX_VALUE`] bytes, so a long text costs one
/// pass, however many names it repeats.
fn values_after<'t>(text: &'t str, name: &'static str) -> impl Iterator<Item = &'t str> {
    let bytes = text.as_bytes();
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(found) = bytes
            .get(from..)
            .and_then(|rest| find_ignore_ascii_case(rest, name.as_bytes()))
        {
            let after_name = from + found + name.len();
            from = after_name;
            let colon = skip(bytes, after_name, |b| matches!(b, b'"' | b'\\' | b' '));
            if bytes.get(colon) != Some(&b':') {
                continue;
            }
            let start = skip(bytes, colon + 1, |b| {
                matches!(b, b'"' | b'\\' | b' ' | b'\t')
            });
            let quoted = start > colon + 1 && bytes.get(start - 1) == Some(&b'"');
            let window = bytes
                .get(..floor_char_boundary(text, start + MAX_VALUE))
                .unwrap_or(bytes);
            let end = skip(window, start, |b| {
                if quoted {
                    !matches!(b, b'"' | b'\\' | b'\n' | b'\r')
                } else {
                    !matches!(b, b'\n' | b'\r' | b',' | b';' | b'"' | b'\\')
                }
            });
            // An unquoted HTTP date has a comma after the weekday ("Wed, 21 Oct 2015 ..."):
            // then the value runs to the end of the line.
            let value = text.get(start..end).unwrap_or_default();
            let weekday = value.bytes().all(|b| b.is_ascii_alphabetic());
            let end = if !quoted && weekday && window.get(end) == Some(&b',') {
                skip(window, end, |b| {
                    !matches!(b, b'\n' | b'\r' | b'"' | b'\\' | b';')
                })
            } else {
                end
            };
            if let Some(value) = text.get(start..end).filter(|_| end > start) {
                return Some(value.trim());
            }
        }
        None
    })
}

/// The longest value read after a name: a quota id, a delay or an HTTP date fit easily.
const MAX_VALUE: usize = 256;

/// `at`, or the nearest char boundary below it, within the text.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMINI_429: &str = r#"{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
            "quotaValue": "15"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "53s"
      }
    ]
  }
}"#;

    #[test]
    fn gemini_retry_info_is_read() {
        let words = read_text(GEMINI_429);
        assert_eq!(words.retry_after, Some(Duration::from_secs(53)));
        assert!(!words.per_day_quota);
    }

    #[test]
    fn fractions_and_escaped_json() {
        assert_eq!(
            read_text(r#"{"retryDelay": "0.5s"}"#).retry_after,
            Some(Duration::from_millis(500))
        );
        let escaped = r#"Error: "{\"error\":{\"details\":[{\"retryDelay\":\"1.250s\"}]}}""#;
        assert_eq!(
            read_text(escaped).retry_after,
            Some(Duration::from_millis(1250))
        );
    }

    #[test]
    fn per_day_quota_is_seen() {
        let text = GEMINI_429.replace(
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        );
        assert!(read_text(&text).per_day_quota);
    }

    #[test]
    fn retry_after_in_a_header_dump() {
        assert_eq!(
            read_text("429 Too Many Requests; retry-after: 7").retry_after,
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            read_text("headers: {\"retry-after\": \"12\"}").retry_after,
            Some(Duration::from_secs(12))
        );
    }

    #[test]
    fn bad_durations_are_ignored() {
        assert_eq!(
            google_duration("99999999999999999999999s"),
            Some(Duration::MAX)
        );
        for bad in ["", "s", "53", "-1s", "1e9999s", "abc", "5 s", "1.2.3s", "."] {
            assert_eq!(google_duration(bad), None, "{bad:?}");
        }
        assert_eq!(read_text("retryDelay: soon").retry_after, None);
        assert_eq!(read_text("nothing here").retry_after, None);
    }

    #[test]
    fn retry_after_dates_and_deltas() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after_header(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after_header("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            retry_after_header("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_header("-5", now), None);
    }

    #[test]
    fn never_panics_on_any_cut_of_a_body() {
        for cut in 0..GEMINI_429.len() {
            if GEMINI_429.is_char_boundary(cut) {
                let _ = read_text(&GEMINI_429[..cut]);
            }
        }
        let _ = read_text("retryDelay:\"");
        let _ = read_text("quotaId: \"ПерДэй\"");
    }
}
