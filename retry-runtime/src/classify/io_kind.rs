//! The typed rule for [`io::Error`] kinds.

use std::io;

use super::Verdict;

/// Transient network and OS conditions are retryable, `Other` is left to the next rules,
/// every other kind is not retryable.
///
/// ```
/// use std::io::ErrorKind;
/// use resilience::{Verdict, classify::by_io_kind};
///
/// assert_eq!(by_io_kind(ErrorKind::ConnectionReset), Verdict::Retryable);
/// assert_eq!(by_io_kind(ErrorKind::Other), Verdict::Unknown);
/// assert_eq!(by_io_kind(ErrorKind::NotFound), Verdict::NotRetryable);
/// ```
pub fn by_io_kind(kind: io::ErrorKind) -> Verdict {
    use io::ErrorKind as K;
    match kind {
        K::TimedOut
        | K::ConnectionReset
        | K::ConnectionRefused
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::Interrupted
        | K::WouldBlock => Verdict::Retryable,
        K::Other => Verdict::Unknown,
        _ => Verdict::NotRetryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds_retry_other_defers_the_rest_do_not() {
        use io::ErrorKind as K;
        for k in [
            K::TimedOut,
            K::ConnectionReset,
            K::ConnectionRefused,
            K::ConnectionAborted,
            K::BrokenPipe,
            K::Interrupted,
            K::WouldBlock,
        ] {
            assert_eq!(by_io_kind(k), Verdict::Retryable, "{k:?}");
        }
        assert_eq!(by_io_kind(K::Other), Verdict::Unknown);
        for k in [
            K::NotFound,
            K::PermissionDenied,
            K::InvalidData,
            K::InvalidInput,
        ] {
            assert_eq!(by_io_kind(k), Verdict::NotRetryable, "{k:?}");
        }
    }
}
