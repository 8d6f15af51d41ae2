//! The typed rule: the error types whose type alone says whether a retry may help, wherever
//! they stand in a `source()` chain.

use std::error::Error;
use std::io;

use super::{Verdict, by_io_kind, by_status};
use crate::http::HttpError;

/// The answer for one link of a chain, or `Unknown` when its type is not one of these:
/// - an [`io::Error`]: by its kind ([`by_io_kind`]);
/// - an [`HttpError`]: by its status ([`by_status`]);
/// - with feature `reqwest`, a `reqwest::Error`: retryable on a timeout or a failed
///   connection, else by its status when it has one;
/// - with features `ureq` and `ureq2`, a `ureq::Error` of ureq 3 or 2 by its variant (a
///   status, a timeout, a failed connection, a peer that hung up);
/// - with feature `rusqlite`, a `rusqlite::Error` by its SQLite code (busy and locked retry);
/// - with feature `tonic`, a `tonic::Status` by its code ([`by_grpc_code`](super::by_grpc_code)),
///   and tonic's `TimeoutExpired` (a client deadline) and `ConnectError` (a connection that
///   could not be made, inside a `tonic::transport::Error`): retryable;
/// - tokio's `Elapsed` (what `tokio::time::timeout` fails with): a timeout, retryable. The
///   runtime does not depend on tokio, so it knows the type by what only it is: a link with
///   no source whose whole text is `deadline has elapsed`.
pub(crate) fn by_known_type(link: &(dyn Error + 'static)) -> Verdict {
    if let Some(io) = link.downcast_ref::<io::Error>() {
        return by_io_kind(io.kind());
    }
    if let Some(http) = link.downcast_ref::<HttpError>() {
        return by_status(http.status());
    }
    #[cfg(feature = "reqwest")]
    if let Some(error) = link.downcast_ref::<reqwest::Error>() {
        return by_reqwest(error);
    }
    #[cfg(feature = "ureq")]
    if let Some(error) = link.downcast_ref::<ureq::Error>() {
        return super::ureq::by_ureq(error);
    }
    #[cfg(feature = "ureq2")]
    if let Some(error) = super::ureq::as_ureq2(link) {
        return super::ureq::by_ureq2(error);
    }
    #[cfg(feature = "rusqlite")]
    if let Some(error) = link.downcast_ref::<rusqlite::Error>() {
        return super::sqlite::by_rusqlite(error);
    }
    #[cfg(feature = "rusqlite")]
    if let Some(failure) = link.downcast_ref::<rusqlite::ffi::Error>() {
        return super::sqlite::by_sqlite_code(failure.code);
    }
    #[cfg(feature = "tonic")]
    if let Some(status) = link.downcast_ref::<tonic::Status>() {
        return super::grpc_code::by_grpc_status(status);
    }
    #[cfg(feature = "tonic")]
    if link.is::<tonic::TimeoutExpired>() || link.is::<tonic::ConnectError>() {
        return Verdict::Retryable;
    }
    if is_tokio_elapsed(link) {
        return Verdict::Retryable;
    }
    Verdict::Unknown
}

/// Whether `link` is tokio's `Elapsed`: no source, and the text `deadline has elapsed`.
/// Compared as it is written, without formatting it into a `String`.
fn is_tokio_elapsed(link: &(dyn Error + 'static)) -> bool {
    use std::fmt::Write;

    /// Matches what is written against `expected`, stopping at the first difference.
    struct Matches<'a> {
        rest: &'a str,
        same: bool,
    }
    impl Write for Matches<'_> {
        fn write_str(&mut self, written: &str) -> std::fmt::Result {
            match self.rest.strip_prefix(written) {
                Some(rest) => {
                    self.rest = rest;
                    Ok(())
                }
                None => {
                    self.same = false;
                    Err(std::fmt::Error)
                }
            }
        }
    }
    if link.source().is_some() {
        return false;
    }
    let mut matches = Matches {
        rest: "deadline has elapsed",
        same: true,
    };
    let _ = write!(matches, "{link}");
    matches.same && matches.rest.is_empty()
}

/// Timeouts and failed connections are retryable, a status decides by [`by_status`]. A body
/// that does not decode, a request that cannot be built and a redirect loop will fail the same
/// way again, unless an I/O failure beneath caused them (a reset mid-body): then the rest of
/// the chain decides, as it does for anything else.
#[cfg(feature = "reqwest")]
fn by_reqwest(error: &reqwest::Error) -> Verdict {
    if error.is_timeout() || error.is_connect() {
        return Verdict::Retryable;
    }
    if let Some(status) = error.status() {
        return by_status(status.as_u16());
    }
    let io_beneath = super::chain::links(error).any(|link| link.is::<io::Error>());
    if (error.is_decode() || error.is_builder() || error.is_redirect()) && !io_beneath {
        return Verdict::NotRetryable;
    }
    Verdict::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_and_http_statuses_are_known() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(by_known_type(&reset), Verdict::Retryable);
        assert_eq!(by_known_type(&io::Error::other("x")), Verdict::Unknown);
        let bad = HttpError::new(400, None, "timeout must be positive");
        assert_eq!(by_known_type(&bad), Verdict::NotRetryable);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_timeout_is_retryable() {
        let elapsed = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            std::future::pending::<()>(),
        )
        .await
        .unwrap_err();
        assert_eq!(by_known_type(&elapsed), Verdict::Retryable);
    }

    #[test]
    fn only_the_whole_text_of_a_sourceless_link_is_tokios_elapsed() {
        assert_eq!(
            by_known_type(&io::Error::other("deadline has elapsed")),
            Verdict::Unknown,
            "an io::Error is read by its kind"
        );
        let text = |t: &'static str| -> Box<dyn Error + Send + Sync> { t.into() };
        assert!(is_tokio_elapsed(&*text("deadline has elapsed")));
        for other in [
            "deadline has elapsed!",
            "deadline has",
            "the deadline has elapsed",
            "",
        ] {
            assert!(!is_tokio_elapsed(&*text(other)), "{other:?}");
        }
    }
}
