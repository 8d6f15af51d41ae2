//! Autoref-specialization probes: method lookup on `&&&&Probe(&error)` picks the most specific
//! impl that applies, so the expansion learns what the rules can see of an error type (its
//! own `Classify`, its `source()` chain, or only its text), and `Keep` how to keep it in the
//! give-up error, without the macro knowing the type.

use std::cell::Cell;

use crate::classify::Classify;
use crate::classify::order::Seen;
use crate::error::BoxError;

/// Wraps a reference to the error so that method lookup picks what the rules can see of
/// it; see the `See*` traits below. Call as `(&&&&Probe(&error)).__resilience_see()`.
pub struct Probe<'a, E: ?Sized>(pub &'a E);

/// Most specific: the error type implements [`Classify`] and `std::error::Error`: its own
/// answer, with the rules of its chain around it.
pub trait SeeOwnAndChain<'a> {
    /// What the rules can see.
    fn __resilience_see(&self) -> Seen<'a>;
}

impl<'a, E: Classify + std::error::Error + 'static> SeeOwnAndChain<'a> for &&&Probe<'a, E> {
    #[inline]
    fn __resilience_see(&self) -> Seen<'a> {
        Seen::classify(self.0, Some(self.0))
    }
}

/// Next: the error type implements [`Classify`] only (`anyhow::Error`, boxed errors, or a
/// type with no chain).
pub trait SeeOwn<'a> {
    /// What the rules can see.
    fn __resilience_see(&self) -> Seen<'a>;
}

impl<'a, E: Classify + ?Sized> SeeOwn<'a> for &&Probe<'a, E> {
    #[inline]
    fn __resilience_see(&self) -> Seen<'a> {
        Seen::classify(self.0, None)
    }
}

/// Next: the error implements `std::error::Error`: its `source()` chain.
pub trait SeeChain<'a> {
    /// What the rules can see.
    fn __resilience_see(&self) -> Seen<'a>;
}

impl<'a, E: std::error::Error + 'static> SeeChain<'a> for &Probe<'a, E> {
    #[inline]
    fn __resilience_see(&self) -> Seen<'a> {
        Seen::chain(self.0)
    }
}

/// Last, for any type: only its text.
pub trait SeeText<'a> {
    /// What the rules can see.
    fn __resilience_see(&self) -> Seen<'a>;
}

impl<'a, E: ?Sized> SeeText<'a> for Probe<'a, E> {
    #[inline]
    fn __resilience_see(&self) -> Seen<'a> {
        Seen::TEXT_ONLY
    }
}

/// Holds the last error while the give-up error is built, so that a probe can take it out
/// by value. Call as `(&&&Keep::new(error)).__resilience_keep()`.
pub struct Keep<E>(Cell<Option<E>>);

impl<E> Keep<E> {
    /// Holds `error`.
    #[inline]
    pub fn new(error: E) -> Self {
        Self(Cell::new(Some(error)))
    }
}

/// The error's `Classify` knows how to box it so it can be downcast again (`anyhow::Error`).
pub trait KeepTyped {
    /// The error, boxed to be kept in the give-up error.
    fn __resilience_keep(&self) -> Option<BoxError>;
}

impl<E: Classify + Into<BoxError>> KeepTyped for &&Keep<E> {
    fn __resilience_keep(&self) -> Option<BoxError> {
        self.0
            .take()
            .map(|error| match error.__resilience_into_last_error() {
                Ok(kept) => kept,
                Err(error) => error.into(),
            })
    }
}

/// The error can be boxed as `Send + Sync + 'static`: keep it.
pub trait KeepBoxed {
    /// The error, boxed to be kept in the give-up error.
    fn __resilience_keep(&self) -> Option<BoxError>;
}

impl<E: Into<BoxError>> KeepBoxed for &Keep<E> {
    fn __resilience_keep(&self) -> Option<BoxError> {
        self.0.take().map(Into::into)
    }
}

/// Any other error (not `Send`, `Sync` or `'static`): the give-up error keeps its text.
pub trait KeepText {
    /// Nothing: the text stands in for the error.
    fn __resilience_keep(&self) -> Option<BoxError>;
}

impl<E> KeepText for Keep<E> {
    fn __resilience_keep(&self) -> Option<BoxError> {
        None
    }
}
