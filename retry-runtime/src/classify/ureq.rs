//! The typed rules for ureq's errors: ureq 3 (feature `ureq`) and ureq 2 (feature `ureq2`).
//!
//! ureq 3's `Error` has no `source()`: an I/O failure inside it (`Io`) is invisible to the
//! chain, so the rule reads the variant; `chain.rs` steps into `Io` and `Other` as it does into
//! an `io::Error`. ureq 2's status errors carry the whole response, so their `Retry-After` is
//! read as the server's hint ([`server_words_ureq2`]).

use std::io;

use super::by_io_kind;
use super::{Verdict, by_status};
#[cfg(feature = "ureq2")]
use crate::hint::ServerWords;

/// ureq 3: a status by [`by_status`]; a timeout, a failed or refused connection, a host not
/// found and a stalled body are retryable; an I/O error by its kind, where a peer that hung up
/// (`UnexpectedEof`, "Peer disconnected") is retryable too, since a network stream that ends
/// early is the server going away, not a truncated file; `Protocol` and `Other` are left to the
/// rest of the rules; every other variant (a bad URL, TLS, a redirect loop, a body over the
/// limit) fails the same way again.
#[cfg(feature = "ureq")]
pub(crate) fn by_ureq(error: &ureq::Error) -> Verdict {
    use ureq::Error as E;
    match error {
        E::StatusCode(status) => by_status(*status),
        E::Timeout(_) | E::ConnectionFailed | E::HostNotFound | E::BodyStalled => {
            Verdict::Retryable
        }
        E::Io(io) => by_network_io(io),
        E::Protocol(_) | E::Other(_) => Verdict::Unknown,
        _ => Verdict::NotRetryable,
    }
}

/// ureq 2: a status by [`by_status`]; a failed connection or DNS lookup is retryable; an I/O
/// failure by the `io::Error` beneath it, as ureq 3's (a peer that hung up is retryable);
/// every other kind fails the same way again.
#[cfg(feature = "ureq2")]
pub(crate) fn by_ureq2(error: &ureq2::Error) -> Verdict {
    use ureq2::ErrorKind as K;
    match error {
        ureq2::Error::Status(status, _) => by_status(*status),
        ureq2::Error::Transport(transport) => match transport.kind() {
            K::ConnectionFailed | K::Dns => Verdict::Retryable,
            // As for ureq 3: an early end of the stream is the peer hanging up.
            K::Io => std::error::Error::source(transport)
                .and_then(|source| source.downcast_ref::<std::io::Error>())
                .map_or(Verdict::Unknown, by_network_io),
            _ => Verdict::NotRetryable,
        },
    }
}

/// `link` as a ureq 2 error, boxed or not: its `Error` is large (the whole response), so
/// applications box it (clippy's `result_large_err` says to), and a `#[from] Box<ureq::Error>`
/// field's `source()` is the box itself.
#[cfg(feature = "ureq2")]
pub(crate) fn as_ureq2<'a>(
    link: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ureq2::Error> {
    link.downcast_ref::<ureq2::Error>().or_else(|| {
        link.downcast_ref::<Box<ureq2::Error>>()
            .map(|boxed| &**boxed)
    })
}

/// ureq 2's status answer: its `Retry-After` header, and what its body said when the client
/// kept it (ureq 2 leaves the body unread in the `Response`, so only the header is read).
#[cfg(feature = "ureq2")]
pub(crate) fn server_words_ureq2(error: &ureq2::Error) -> Option<ServerWords> {
    let ureq2::Error::Status(_, response) = error else {
        return None;
    };
    let retry_after = response
        .header("retry-after")
        .and_then(|value| crate::hint::retry_after_header(value, std::time::SystemTime::now()));
    Some(ServerWords {
        retry_after,
        ..ServerWords::default()
    })
}

/// An I/O error met on a network stream: by its kind, and an early end is the peer hanging up.
fn by_network_io(io: &io::Error) -> Verdict {
    match io.kind() {
        io::ErrorKind::UnexpectedEof => Verdict::Retryable,
        kind => by_io_kind(kind),
    }
}

/// What ureq 3 hides from `source()`: the `io::Error` of `Io`, the error boxed in `Other`.
#[cfg(feature = "ureq")]
pub(crate) fn inner(error: &ureq::Error) -> Option<&(dyn std::error::Error + 'static)> {
    match error {
        ureq::Error::Io(io) => Some(io),
        ureq::Error::Other(other) => Some(&**other),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "ureq")]
    #[test]
    fn ureq3_variants() {
        use std::io;
        use ureq::Error as E;
        assert_eq!(by_ureq(&E::StatusCode(503)), Verdict::Retryable);
        assert_eq!(by_ureq(&E::StatusCode(404)), Verdict::NotRetryable);
        assert_eq!(by_ureq(&E::ConnectionFailed), Verdict::Retryable);
        let hung_up = io::Error::new(io::ErrorKind::UnexpectedEof, "Peer disconnected");
        assert_eq!(by_ureq(&E::Io(hung_up)), Verdict::Retryable);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(by_ureq(&E::Io(denied)), Verdict::NotRetryable);
        assert_eq!(by_ureq(&E::BadUri("x".into())), Verdict::NotRetryable);
        assert_eq!(by_ureq(&E::Other("boom".into())), Verdict::Unknown);
    }
}
