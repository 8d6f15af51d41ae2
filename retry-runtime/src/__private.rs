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
#[cfg(not(feature = "tokio"))]
pub use without_tokio::{now_async, sleep_async, until_deadline};

/// The async runtime the expansion of an `async fn` waits on.
pub struct Runtime;

/// Implemented for [`Runtime`] only with feature `tokio`: an `async fn` under the attribute
/// then gets this one error, not one per missing helper.
#[diagnostic::on_unimplemented(
    message = "`#[retry_with_backoff]` on an `async fn` needs the `tokio` feature of `resilience`",
    label = "this `async fn` waits between attempts with tokio's timer",
    note = "the feature is on by default; with `default-features = false`, add `features = [\"tokio\"]`"
)]
pub trait AsyncRuntime {}

#[cfg(feature = "tokio")]
impl AsyncRuntime for Runtime {}

/// Checks that an async runtime is compiled in.
#[inline(always)]
pub fn require_async_runtime<R: AsyncRuntime>(_: R) {}

/// Without tokio the expansion of an `async fn` does not compile (see [`AsyncRuntime`]);
/// these keep its other calls well-typed so that the one error above is all the user sees.
#[cfg(not(feature = "tokio"))]
mod without_tokio {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use crate::attempts::DeadlinePassed;

    pub fn now_async() -> Instant {
        Instant::now()
    }

    pub async fn sleep_async(_: Duration) {}

    pub async fn until_deadline<F: Future>(
        _: Option<Instant>,
        attempt: F,
    ) -> Result<F::Output, DeadlinePassed> {
        Ok(attempt.await)
    }
}
pub use crate::sleep::{now_current, sleep_current};

use crate::classify::Classify;
pub use crate::classify::order::Seen;
use crate::classify::order::decide;
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

/// Gives the attempt closure the function's return type, so the body's values coerce to it.
#[inline(always)]
pub fn attempt_fn<R, F: FnMut() -> R>(attempt: F) -> F {
    attempt
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
    note = "add a variant `Exhausted(#[from] resilience::MediaProcessingError)` (and `#[derive(resilience::Classify)]` on the type, so each variant is classified as the error it wraps), or return `anyhow::Error`, `Box<dyn Error + Send + Sync>` or `std::io::Error`, which take it as they are"
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

/// The one requirement on the error type besides `From<MediaProcessingError>`: its text
/// goes into the log lines and the give-up error.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` must implement `Display`: `#[retry_with_backoff]` logs its text and keeps it in `MediaProcessingError`",
    label = "this error type has no `Display`",
    note = "implement `std::fmt::Display` (`#[derive(thiserror::Error)]` with `#[error(\"...\")]` does), or return `anyhow::Error` or `std::io::Error`"
)]
pub trait ErrorText {
    /// The text with the causes of `seen`'s chain, as the rules read it (not redacted).
    fn error_text(&self, seen: &Seen<'_>) -> String;
}

impl<E: Display + ?Sized> ErrorText for E {
    #[inline]
    fn error_text(&self, seen: &Seen<'_>) -> String {
        crate::classify::chain::text_of(self, seen.chain)
    }
}

/// The text as logs and give-up errors show it: credentials redacted.
#[cold]
pub fn redacted(text: String) -> String {
    crate::classify::chain::redacted(text)
}

/// The failed attempt's error text, with its causes, as the rules read it.
#[cold]
pub fn error_text<E: ErrorText + ?Sized>(error: &E, seen: &Seen<'_>) -> String {
    error.error_text(seen)
}

/// The built-in rules' answer for what was seen of the error.
#[cold]
pub fn classify(seen: Seen<'_>, text: &str) -> Classified {
    decide(seen, text)
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

/// What a `retry_if` predicate may answer.
#[diagnostic::on_unimplemented(
    message = "`retry_if` must answer `bool` or `resilience::Verdict`, not `{Self}`",
    label = "this predicate's answer is `{Self}`",
    note = "`true` retries, `false` returns the error at once; `Verdict::Unknown` leaves it to the built-in rules"
)]
pub trait IntoVerdict {
    /// The answer as a verdict.
    fn into_verdict(self) -> Verdict;
}

impl IntoVerdict for bool {
    fn into_verdict(self) -> Verdict {
        Verdict::from(self)
    }
}

impl IntoVerdict for Verdict {
    fn into_verdict(self) -> Verdict {
        self
    }
}

/// Asks a `retry_if` predicate, as the closure API's `.when` does: its verdict decides; its
/// `Unknown` leaves the decision to `builtin`, whose server hint is kept either way.
#[inline]
pub fn ask<E: ?Sized, V: IntoVerdict>(
    predicate: impl Fn(&E) -> V,
    error: &E,
    builtin: impl FnOnce() -> Classified,
) -> Classified {
    use crate::retry::{Decide, When};
    When(predicate).decide(error, builtin)
}

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
/// by value. Call as `(&&&Keep::new(error)).__resilience_give_up(&attempts, reason, text)`.
pub struct Keep<E>(Cell<Option<E>>);

impl<E> Keep<E> {
    /// Holds `error`.
    #[inline]
    pub fn new(error: E) -> Self {
        Self(Cell::new(Some(error)))
    }
}

/// The error's `Classify` knows how to box it so it can be downcast again (`anyhow::Error`).
pub trait GiveUpKeepingTypedError {
    /// The give-up error with the last error inside.
    fn __resilience_give_up(
        &self,
        attempts: &Attempts,
        reason: GiveUpReason,
        text: String,
    ) -> MediaProcessingError;
}

impl<E: Classify + Into<BoxError>> GiveUpKeepingTypedError for &&Keep<E> {
    fn __resilience_give_up(
        &self,
        attempts: &Attempts,
        reason: GiveUpReason,
        text: String,
    ) -> MediaProcessingError {
        let kept = self
            .0
            .take()
            .map(|error| match error.__resilience_into_last_error() {
                Ok(kept) => kept,
                Err(error) => error.into(),
            });
        attempts.give_up(reason, text, kept)
    }
}

/// The error can be boxed as `Send + Sync + 'static`: keep it as `source()`.
pub trait GiveUpKeepingError {
    /// The give-up error with the last error inside.
    fn __resilience_give_up(
        &self,
        attempts: &Attempts,
        reason: GiveUpReason,
        text: String,
    ) -> MediaProcessingError;
}

impl<E: Into<BoxError>> GiveUpKeepingError for &Keep<E> {
    fn __resilience_give_up(
        &self,
        attempts: &Attempts,
        reason: GiveUpReason,
        text: String,
    ) -> MediaProcessingError {
        attempts.give_up(reason, text, self.0.take().map(Into::into))
    }
}

/// Any other error (not `Send`, `Sync` or `'static`): keep its text.
pub trait GiveUpKeepingText {
    /// The give-up error with the last error's text inside.
    fn __resilience_give_up(
        &self,
        attempts: &Attempts,
        reason: GiveUpReason,
        text: String,
    ) -> MediaProcessingError;
}

impl<E> GiveUpKeepingText for Keep<E> {
    fn __resilience_give_up(
        &self,
        attempts: &Attempts,
        reason: GiveUpReason,
        text: String,
    ) -> MediaProcessingError {
        attempts.give_up(reason, text, None)
    }
}

/// `#[classify(retryable)]` / `#[classify(not_retryable)]`, for `#[derive(Classify)]`.
#[inline]
pub fn declared(verdict: Verdict) -> Option<Classified> {
    Classified::by(Rule::Declared, verdict)
}

/// What a wrapped field says of itself, for `#[derive(Classify)]`: the answer of its type
/// (its own `Classify`, or the known types and the server's words along its chain). What
/// only its text says is left out: the variant's own text and chain are read after it.
#[cold]
pub fn field_answer(seen: Seen<'_>) -> Option<Classified> {
    if seen.own.is_none() && seen.chain.is_none() {
        return None;
    }
    let answer = decide(seen, "");
    match answer.rule {
        Rule::StatusInText | Rule::Keyword | Rule::NoRule => None,
        _ => Some(answer),
    }
}

/// The whole answer of a type with `#[derive(Classify)]`: the variants' answers, with the
/// built-in rules around them. `text` is asked for only when the type has no chain.
#[cold]
pub fn derived<E: Classify + ?Sized>(error: &E, text: impl FnOnce() -> String) -> Classified {
    let seen = Seen::classify(error, None);
    let text = match seen.chain {
        Some(_) => String::new(),
        None => text(),
    };
    decide(seen, &text)
}

/// The type under `#[derive(Classify)]`, for the probes below.
pub struct SelfProbe<'a, T: ?Sized>(pub &'a T);

/// The type is an `std::error::Error`: its own chain.
pub trait ChainOfError<'a> {
    /// The type as a `dyn Error`.
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)>;
}

impl<'a, T: std::error::Error + 'static> ChainOfError<'a> for &SelfProbe<'a, T> {
    #[inline]
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)> {
        Some(self.0)
    }
}

/// Any other type: no chain.
pub trait ChainOfOther<'a> {
    /// No chain.
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)>;
}

impl<'a, T: ?Sized> ChainOfOther<'a> for SelfProbe<'a, T> {
    #[inline]
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)> {
        None
    }
}

/// The type has a `Display`: its text.
pub trait TextOfDisplay {
    /// The text.
    fn __resilience_text_of(&self) -> String;
}

impl<T: Display + ?Sized> TextOfDisplay for &SelfProbe<'_, T> {
    fn __resilience_text_of(&self) -> String {
        self.0.to_string()
    }
}

/// Any other type: no text.
pub trait TextOfOther {
    /// No text.
    fn __resilience_text_of(&self) -> String;
}

impl<T: ?Sized> TextOfOther for SelfProbe<'_, T> {
    fn __resilience_text_of(&self) -> String {
        String::new()
    }
}
