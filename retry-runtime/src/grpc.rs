//! gRPC statuses (feature `tonic`): what the trailers say about waiting, how a status reads in
//! the log lines, and the give-up error as a `tonic::Status` (the README's "gRPC").
//!
//! Which codes are retried is the typed rule of
//! [`classify::by_grpc_code`](crate::classify::by_grpc_code).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{GiveUpReason, MediaProcessingError};
use crate::hint::{ServerWords, read_text};

/// gRPC's pushback trailer (gRFC A6): a wait in ms, or, negative or unreadable, "do not retry".
pub const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// What a status's trailers say about trying again:
/// - `grpc-retry-pushback-ms` ([`PUSHBACK`]): a non-negative whole number is the wait in ms; a
///   negative or unreadable one means the server asks not to be retried at all;
/// - else a `google.rpc.RetryInfo` in `grpc-status-details-bin`: its `retry_delay` is the wait;
/// - a `google.rpc.QuotaFailure` whose violation's `quota_id` names a per-day quota
///   (`...PerDay...`, as the REST body's `quotaId`): no wait of minutes will help;
/// - and what the message says, read as any error text is (a `retryDelay` in JSON).
///
/// ```
/// use std::time::Duration;
/// use resilience::grpc::{PUSHBACK, server_words};
///
/// let mut status = tonic::Status::unavailable("try later");
/// status.metadata_mut().insert(PUSHBACK, "300".parse().unwrap());
/// assert_eq!(server_words(&status).retry_after, Some(Duration::from_millis(300)));
/// status.metadata_mut().insert(PUSHBACK, "-1".parse().unwrap());
/// assert!(server_words(&status).no_retry);
/// ```
pub fn server_words(status: &Status) -> ServerWords {
    let pushback = status.metadata().get(PUSHBACK).map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis)
    });
    let (retry_after, no_retry) = match pushback {
        Some(Some(wait)) => (Some(wait), false),
        Some(None) => (None, true),
        None => (
            status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
            false,
        ),
    };
    let per_day_quota = status.get_details_quota_failure().is_some_and(|failure| {
        failure
            .violations
            .iter()
            .any(|violation| violation.quota_id.contains("PerDay"))
    });
    ServerWords {
        retry_after,
        per_day_quota,
        no_retry,
    }
    .or(read_text(status.message()))
}

/// How a status reads in the log lines and the give-up error: `gRPC UNAVAILABLE: message`,
/// like `HTTP 503: body`. tonic's own `Display` spells the code as a sentence and adds the
/// `Debug` of its source; the source's text follows this one in the chain anyway.
pub fn text(status: &Status) -> String {
    let code = code_name(status.code());
    match status.message().trim() {
        "" => format!("gRPC {code}"),
        message => format!("gRPC {code}: {message}"),
    }
}

/// The code as the gRPC specification spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The give-up error as the status a gRPC function returns:
/// - the code: the last status's, `DEADLINE_EXCEEDED` when the `timeout` ran out or every
///   attempt ran past its `attempt_timeout`, else
///   `UNAVAILABLE` (the service could not be reached in the attempts allowed, or an open
///   circuit breaker refused the call), `RESOURCE_EXHAUSTED` when the rate limiter's permit
///   would have come past the deadline, or `FAILED_PRECONDITION` when a `#[rewind]` argument
///   could not be put back;
/// - the message: the give-up's text, redacted (`Failed after 3 retries: gRPC UNAVAILABLE: ..`);
/// - the details: only a `RetryInfo` with the server's last hint, if it gave one, rebuilt here; the last
///   status's own details and metadata are not passed on, since they hold its unredacted
///   message and whatever headers the server below sent;
/// - `grpc-retry-pushback-ms: -1`: this call has retried already, so a client that honours
///   pushback (gRFC A6) does not multiply the attempts, when a server returns this status;
/// - the `MediaProcessingError` itself as `source()`, so that in the same process a caller
///   can still ask `attempts()` and `retry_after()`, and an outer retried call knows that
///   this one gave up (the source does not cross the wire; the pushback does).
impl From<MediaProcessingError> for Status {
    fn from(give_up: MediaProcessingError) -> Self {
        let code = match (give_up.find::<Status>(), give_up.reason()) {
            (_, GiveUpReason::DeadlineExceeded { .. }) => Code::DeadlineExceeded,
            _ if give_up
                .last_error::<crate::error::AttemptTimedOut>()
                .is_some() =>
            {
                Code::DeadlineExceeded
            }
            (_, GiveUpReason::RewindFailed { .. }) => Code::FailedPrecondition,
            // This process's own quota: the caller is asked to slow down, as by a server.
            (_, GiveUpReason::RateLimited { .. }) => Code::ResourceExhausted,
            (Some(last), _) => last.code(),
            (None, _) => Code::Unavailable,
        };
        let mut status = match give_up.retry_after() {
            Some(hint) => Status::with_error_details(
                code,
                give_up.to_string(),
                ErrorDetails::with_retry_info(Some(hint)),
            ),
            None => Status::new(code, give_up.to_string()),
        };
        status
            .metadata_mut()
            .insert(PUSHBACK, tonic::metadata::MetadataValue::from_static("-1"));
        status.set_source(Arc::new(give_up));
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::QuotaViolation;

    #[test]
    fn pushback_wins_and_a_bad_one_refuses_retries() {
        let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(4)));
        let mut status = Status::with_error_details(Code::Unavailable, "busy", details);
        assert_eq!(
            server_words(&status).retry_after,
            Some(Duration::from_secs(4))
        );
        status
            .metadata_mut()
            .insert(PUSHBACK, "250".parse().unwrap());
        assert_eq!(
            server_words(&status).retry_after,
            Some(Duration::from_millis(250))
        );
        for refused in ["-1", "soon", "1.5", ""] {
            status
                .metadata_mut()
                .insert(PUSHBACK, refused.parse().unwrap());
            let words = server_words(&status);
            assert!(words.no_retry && words.retry_after.is_none(), "{refused:?}");
        }
    }

    #[test]
    fn a_per_day_quota_failure_is_seen() {
        let mut violation = QuotaViolation::new("project:demo", "daily limit");
        violation.quota_id = "GenerateRequestsPerDayPerProjectPerModel-FreeTier".to_owned();
        let mut details = ErrorDetails::new();
        details.set_quota_failure(vec![violation]);
        let status = Status::with_error_details(Code::ResourceExhausted, "quota", details);
        assert!(server_words(&status).per_day_quota);
        let mut violation = QuotaViolation::new("project:demo", "per-minute limit");
        violation.quota_id = "GenerateRequestsPerMinutePerProjectPerModel".to_owned();
        let mut details = ErrorDetails::new();
        details.set_quota_failure(vec![violation]);
        let status = Status::with_error_details(Code::ResourceExhausted, "quota", details);
        assert!(!server_words(&status).per_day_quota);
    }

    #[test]
    fn a_give_up_keeps_the_hint_and_not_the_last_status_s_own_metadata() {
        let mut last =
            Status::resource_exhausted("quota ?key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI");
        last.metadata_mut()
            .insert("x-internal-route", "shard-7".parse().unwrap());
        let give_up =
            MediaProcessingError::exhausted(3, last).with_retry_after(Some(Duration::from_secs(4)));
        let status = Status::from(give_up);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(!status.message().contains("AIzaSy"), "{}", status.message());
        assert!(status.metadata().get("x-internal-route").is_none());
        assert_eq!(
            status.get_details_retry_info().and_then(|i| i.retry_delay),
            Some(Duration::from_secs(4))
        );
        let timed_out = MediaProcessingError::new(
            1,
            GiveUpReason::DeadlineExceeded {
                timeout: Duration::from_secs(1),
            },
            "deadline".to_owned(),
            None,
        );
        let timed_out = Status::from(timed_out);
        assert_eq!(timed_out.code(), Code::DeadlineExceeded);
        assert!(
            timed_out.get_details_retry_info().is_none(),
            "no hint, no RetryInfo"
        );
    }

    #[test]
    fn a_guard_s_refusal_maps_to_unavailable_or_resource_exhausted_with_when_to_return() {
        use crate::breaker::BreakerOpen;
        use crate::limiter::RateLimited;

        let open = BreakerOpen {
            breaker: "gemini",
            retry_in: Some(Duration::from_secs(30)),
        };
        let reason = GiveUpReason::CircuitOpen {
            breaker: "gemini",
            retry_in: open.retry_in,
        };
        let give_up = MediaProcessingError::new(0, reason, open.to_string(), Some(Box::new(open)))
            .with_retry_after(open.retry_in);
        let status = Status::from(give_up);
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|info| info.retry_delay),
            Some(Duration::from_secs(30))
        );

        let limited = RateLimited {
            limiter: "gemini",
            wait: Duration::from_secs(2),
        };
        let reason = GiveUpReason::RateLimited {
            limiter: "gemini",
            wait: limited.wait,
        };
        let give_up =
            MediaProcessingError::new(0, reason, limited.to_string(), Some(Box::new(limited)));
        assert_eq!(Status::from(give_up).code(), Code::ResourceExhausted);
    }

    #[test]
    fn a_status_reads_as_its_code_and_message() {
        let mut status = Status::unavailable("  upstream connect error ");
        status
            .metadata_mut()
            .insert("x-debug", "a long dump".parse().unwrap());
        assert_eq!(text(&status), "gRPC UNAVAILABLE: upstream connect error");
        assert_eq!(text(&Status::internal("")), "gRPC INTERNAL");
    }
}
