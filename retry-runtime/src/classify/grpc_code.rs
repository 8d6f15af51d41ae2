//! The typed rule for gRPC statuses (feature `tonic`); `builtin.rs` gives `tonic::Status` its
//! `Classify`, the built-in rules over itself.

use tonic::{Code, Status};

use super::Verdict;
use super::chain::links;

/// The gRPC codes that gRPC maps to the retryable HTTP statuses are retryable: `UNAVAILABLE`
/// (503), `RESOURCE_EXHAUSTED` (429), `DEADLINE_EXCEEDED` (504) and `INTERNAL` (500).
/// `UNKNOWN` says nothing, so the other rules decide (what the error's chain and text say);
/// every other code is a fault a repeat cannot fix, and `OK` is not an error.
///
/// ```
/// use resilience::{Verdict, classify::by_grpc_code};
/// use tonic::Code;
///
/// assert_eq!(by_grpc_code(Code::Unavailable), Verdict::Retryable);
/// assert_eq!(by_grpc_code(Code::InvalidArgument), Verdict::NotRetryable);
/// assert_eq!(by_grpc_code(Code::Unknown), Verdict::Unknown);
/// ```
pub fn by_grpc_code(code: Code) -> Verdict {
    match code {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Internal => {
            Verdict::Retryable
        }
        Code::Unknown => Verdict::Unknown,
        Code::Ok
        | Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss
        | Code::Unauthenticated
        | Code::FailedPrecondition => Verdict::NotRetryable,
    }
}

/// A status by its code, with one exception: tonic reports the client's own deadline
/// (`Endpoint::timeout`, a `grpc-timeout` set on the request) as `CANCELLED`, with its
/// `TimeoutExpired` in the chain. That is a timeout, as `DEADLINE_EXCEEDED` is: retryable.
pub(crate) fn by_grpc_status(status: &Status) -> Verdict {
    let timed_out = || links(status).any(|link| link.is::<tonic::TimeoutExpired>());
    if status.code() == Code::Cancelled && timed_out() {
        return Verdict::Retryable;
    }
    by_grpc_code(status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_transient_codes_retry_unknown_defers_the_rest_do_not() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Internal,
        ] {
            assert_eq!(by_grpc_code(code), Verdict::Retryable, "{code:?}");
        }
        assert_eq!(by_grpc_code(Code::Unknown), Verdict::Unknown);
        for code in [
            Code::Ok,
            Code::Cancelled,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::DataLoss,
            Code::Unauthenticated,
            Code::FailedPrecondition,
        ] {
            assert_eq!(by_grpc_code(code), Verdict::NotRetryable, "{code:?}");
        }
    }

    #[test]
    fn a_client_deadline_reported_as_cancelled_is_a_timeout() {
        let mut status = Status::cancelled("Timeout expired");
        assert_eq!(by_grpc_status(&status), Verdict::NotRetryable);
        status.set_source(std::sync::Arc::new(tonic::TimeoutExpired(())));
        assert_eq!(by_grpc_status(&status), Verdict::Retryable);
    }
}
