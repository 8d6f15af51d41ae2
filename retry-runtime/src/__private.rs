//! What the `#[retry_with_backoff]` expansion calls. Not public API: names and signatures
//! here change whenever the macro changes, and the facade re-exports them only for it.
//!
//! Two kinds of helper live here: traits whose `on_unimplemented` message turns a misuse
//! into one clear error on the user's own token, and "autoref specialization" probes that
//! pick the best behaviour for the error type the function happens to return (its own
//! `Classify`, its `source()` chain, or only its text) without the macro knowing that type.

use std::cell::Cell;
use std::fmt::Display;

pub use crate::attempts::{Attempts, Next};
pub use crate::classify::{Classified, Rule, Verdict};
pub use crate::error::MediaProcessingError;
pub use crate::policy::RetryPolicy;
#[cfg(feature = "tokio")]
pub use crate::sleep::{now_async, sleep_async, until_deadline};
pub use crate::sleep::{now_current, sleep_current};

use crate::classify::{Classify, classify_chain, classify_display};
use crate::error::{BoxError, GiveUpReason};

/// Implemented by `Result<T, E>` only, so that aliases such as `io::Result<T>` pass and
/// anything else fails with one message on the function's return type.
#[diagnostic::on_unimplemented(
    message = "`#[retry_with_backoff]` needs a function that returns a `Result`, not `{Self}`",
    label = "not a `Result`",
    note = "a retry decides from the error whether to try again: return `Result<T, E>` (aliases such as `std::io::Result<T>` and `anyhow::Result<T>` work too)"
)]
pub trait RetryResult: Sized {
    /// The `E` of `Result<T, E>`.
    type Error;
    /// `Ok(self)` on success (returned as it is), the error otherwise.
    fn split(self) -> Result<Self, Self::Error>;
    /// Wraps an error back into the function's return type.
    fn from_error(error: Self::Error) -> Self;
}

impl<T, E> RetryResult for Result<T, E> {
    type Error = E;

    #[inline(always)]
    fn split(self) -> Result<Self, E> {
        match self {
            Ok(value) => Ok(Ok(value)),
            Err(error) => Err(error),
        }
    }

    #[inline(always)]
    fn from_error(error: E) -> Self {
        Err(error)
    }
}

/// Splits an attempt's result. Returning its `Ok` side from the function is also what ties
/// the attempt's type to the function's return type before anything inspects the error.
#[inline(always)]
pub fn split<R: RetryResult>(result: R) -> Result<R, R::Error> {
    result.split()
}

/// The function's return value for an error.
#[inline(always)]
pub fn fail<R: RetryResult>(error: R::Error) -> R {
    R::from_error(error)
}

/// Converts the give-up error into the function's error type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold the `MediaProcessingError` returned once all attempts fail",
    label = "this error type needs `From<MediaProcessingError>`",
    note = "add a variant such as `#[error(transparent)] Exhausted(#[from] resilience::MediaProcessingError)`, or return `anyhow::Error`, `Box<dyn Error + Send + Sync>` or `std::io::Error`, which take it as they are"
)]
pub trait FromGiveUp {
    /// `From::from`, under a name that can carry its own error message.
    fn from_give_up(error: MediaProcessingError) -> Self;
}

impl<E: From<MediaProcessingError>> FromGiveUp for E {
    #[inline]
    fn from_give_up(error: MediaProcessingError) -> Self {
        E::from(error)
    }
}

/// The give-up error, converted for the function.
#[cold]
pub fn give_up_as<E: FromGiveUp>(error: MediaProcessingError) -> E {
    E::from_give_up(error)
}

/// Gives every attempt its own copy of a by-value argument.
#[diagnostic::on_unimplemented(
    message = "`#[retry_with_backoff]` gives each attempt its own copy of this argument, but `{Self}` is not `Clone`",
    label = "passed by value, so every attempt needs a fresh clone",
    note = "take it by reference, implement `Clone` for it, or mark the parameter `#[no_clone]` if the body only borrows it"
)]
pub trait FreshArg: Sized {
    /// A fresh copy for one attempt.
    fn fresh(&self) -> Self;
}

impl<T: Clone> FreshArg for T {
    #[inline(always)]
    fn fresh(&self) -> Self {
        self.clone()
    }
}

/// A fresh copy of a by-value argument for one attempt.
#[inline(always)]
pub fn fresh<T: FreshArg>(value: &T) -> T {
    value.fresh()
}

/// Asks a `retry_if` predicate; it may answer with `bool` or a [`Verdict`].
#[inline]
pub fn ask<E: ?Sized, V: Into<Verdict>>(predicate: impl FnOnce(&E) -> V, error: &E) -> Verdict {
    predicate(error).into()
}

/// Wraps a reference to the error so that method lookup picks the most specific rule set;
/// see the `Classify*` traits below. Call as `(&&&Probe(&error)).__resilience_classify()`.
pub struct Probe<'a, E: ?Sized>(pub &'a E);

/// Most specific: the error type implements [`Classify`].
pub trait ClassifyByType {
    /// The error type's own answer.
    fn __resilience_classify(&self) -> Classified;
}

impl<E: Classify + ?Sized> ClassifyByType for &&Probe<'_, E> {
    #[inline]
    fn __resilience_classify(&self) -> Classified {
        self.0.classified()
    }
}

/// Next: the error implements `std::error::Error`: types and text along its `source()` chain.
pub trait ClassifyByChain {
    /// The built-in rules over the chain.
    fn __resilience_classify(&self) -> Classified;
}

impl<E: std::error::Error + 'static> ClassifyByChain for &Probe<'_, E> {
    #[inline]
    fn __resilience_classify(&self) -> Classified {
        classify_chain(self.0)
    }
}

/// Last: only `Display`: the text rule.
pub trait ClassifyByText {
    /// The text rule.
    fn __resilience_classify(&self) -> Classified;
}

impl<E: Display + ?Sized> ClassifyByText for Probe<'_, E> {
    #[inline]
    fn __resilience_classify(&self) -> Classified {
        classify_display(&self.0)
    }
}

/// Holds the last error while the give-up error is built, so that a probe can take it out
/// by value. Call as `(&&Keep::new(error)).__resilience_give_up(&attempts, reason)`.
pub struct Keep<E>(Cell<Option<E>>);

impl<E> Keep<E> {
    /// Holds `error`.
    #[inline]
    pub fn new(error: E) -> Self {
        Self(Cell::new(Some(error)))
    }
}

/// The error can be boxed as `Send + Sync + 'static`: keep it as `source()`.
pub trait GiveUpKeepingError {
    /// The give-up error with the last error inside.
    fn __resilience_give_up(
        &self,
        attempts: &Attempts<'_>,
        reason: GiveUpReason,
    ) -> MediaProcessingError;
}

impl<E: Display + Into<BoxError>> GiveUpKeepingError for &Keep<E> {
    fn __resilience_give_up(
        &self,
        attempts: &Attempts<'_>,
        reason: GiveUpReason,
    ) -> MediaProcessingError {
        let error = self.0.take();
        let message = error.as_ref().map(ToString::to_string).unwrap_or_default();
        attempts.give_up(reason, message, error.map(Into::into))
    }
}

/// Any other error: keep its text.
pub trait GiveUpKeepingText {
    /// The give-up error with the last error's text inside.
    fn __resilience_give_up(
        &self,
        attempts: &Attempts<'_>,
        reason: GiveUpReason,
    ) -> MediaProcessingError;
}

impl<E: Display> GiveUpKeepingText for Keep<E> {
    fn __resilience_give_up(
        &self,
        attempts: &Attempts<'_>,
        reason: GiveUpReason,
    ) -> MediaProcessingError {
        let message = self.0.take().map(|e| e.to_string()).unwrap_or_default();
        attempts.give_up(reason, message, None)
    }
}
