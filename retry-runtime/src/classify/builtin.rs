//! `Classify` for the error types that hold a chain and have no answer of their own: their
//! answer is the built-in rules over that chain.

use std::error::Error;
use std::io;
use std::time::Duration;

use super::order::{Seen, decide};
use super::{Classified, Classify, Verdict};
#[cfg(feature = "anyhow")]
use crate::error::BoxError;
use crate::error::MediaProcessingError;

macro_rules! classify_by_chain {
    ($($(#[$attr:meta])* $ty:ty => |$this:ident| $as_error:expr $(, keep: $keep:expr)?;)*) => {$(
        $(#[$attr])*
        impl Classify for $ty {
            fn classify(&self) -> Verdict {
                self.error_chain().map_or(Verdict::Unknown, |e| super::explain(e).verdict)
            }

            fn retry_after(&self) -> Option<Duration> {
                super::explain(self.error_chain()?).retry_after
            }

            fn __resilience_own_answer(&self) -> Option<Classified> {
                None
            }

            fn error_chain(&self) -> Option<&(dyn Error + 'static)> {
                let $this = self;
                Some($as_error)
            }

            $(
                fn __resilience_into_last_error(self) -> Result<BoxError, Self> {
                    Ok($keep(self))
                }
            )?
        }
    )*};
}

classify_by_chain! {
    io::Error => |e| e;
    Box<dyn Error + Send + Sync + 'static> => |e| &**e;
    Box<dyn Error + Send + 'static> => |e| &**e;
    Box<dyn Error + 'static> => |e| &**e;
    MediaProcessingError => |e| e;
    // anyhow's own `Into<Box<dyn Error>>` boxes its private wrapper, which hides the typed
    // error from a downcast; this moves the error itself into the box.
    #[cfg(feature = "anyhow")]
    anyhow::Error => |e| {
        let error: &(dyn Error + Send + Sync + 'static) = e.as_ref();
        error
    }, keep: anyhow::Error::reallocate_into_boxed_dyn_error_without_backtrace;
    #[cfg(feature = "reqwest")]
    reqwest::Error => |e| e;
    #[cfg(feature = "ureq")]
    ureq::Error => |e| e;
    #[cfg(feature = "ureq2")]
    ureq2::Error => |e| e;
    #[cfg(feature = "rusqlite")]
    rusqlite::Error => |e| e;
    // Its code (a known type in the chain), and the `RetryInfo`, `QuotaFailure` and pushback
    // in its trailers.
    #[cfg(feature = "tonic")]
    tonic::Status => |e| e;
}

/// A `String` error has only its text: the built-in rules read it.
impl Classify for String {
    fn classify(&self) -> Verdict {
        decide(Seen::TEXT_ONLY, self).verdict
    }

    fn retry_after(&self) -> Option<Duration> {
        decide(Seen::TEXT_ONLY, self).retry_after
    }

    fn __resilience_own_answer(&self) -> Option<Classified> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Rule;

    #[test]
    fn boxed_errors_classify_through_their_chain() {
        let e: Box<dyn Error + Send + Sync> = Box::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(e.classify(), Verdict::Retryable);
        let e: Box<dyn Error> = "401 Unauthorized".into();
        assert_eq!(e.classify(), Verdict::NotRetryable);
    }

    #[test]
    fn a_give_up_is_never_retried() {
        let inner = MediaProcessingError::exhausted(3, io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(inner.classify(), Verdict::NotRetryable);
        assert_eq!(
            super::super::explain(&inner).rule,
            Rule::InnerGiveUp,
            "whatever the kind of the last error"
        );
    }

    #[cfg(feature = "anyhow")]
    #[test]
    fn anyhow_is_classified_through_its_context_chain() {
        let e = anyhow::Error::new(io::Error::from(io::ErrorKind::ConnectionReset))
            .context("while resetting the pool");
        assert_eq!(e.classify(), Verdict::Retryable);
    }
}
