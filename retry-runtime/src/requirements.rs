//! What `#[retry_with_backoff]` asks of the annotated function's types, one trait each.
//!
//! You never implement these: each has an implementation for every type that qualifies
//! (`Result<T, E>`, any `Display` error, any `Clone` argument, ...). They exist so that a
//! function the attribute cannot serve gets one compile error, on your own token, that says
//! what to change, instead of an error deep inside the expansion.

use std::error::Error;
use std::fmt::Display;
use std::marker::PhantomData;

use crate::classify::Verdict;
use crate::error::MediaProcessingError;

/// The annotated function returns a `Result`: a retry decides from the error whether to try
/// again. Aliases such as `io::Result<T>` and `anyhow::Result<T>` are `Result`s too.
#[diagnostic::on_unimplemented(
    message = "`#[retry_with_backoff]` needs a function that returns a `Result`, not `{Self}`",
    label = "not a `Result`",
    note = "a retry decides from the error whether to try again: return `Result<T, E>` (aliases such as `std::io::Result<T>` and `anyhow::Result<T>` work too)"
)]
pub trait ReturnsResult: Sized {
    /// The `T` of `Result<T, E>`.
    type Value;
    /// The `E` of `Result<T, E>`.
    type Error;
    /// The result as a `Result`.
    fn into_result(self) -> Result<Self::Value, Self::Error>;
    /// A `Result` as the function's return type.
    fn from_result(result: Result<Self::Value, Self::Error>) -> Self;
}

impl<T, E> ReturnsResult for Result<T, E> {
    type Value = T;
    type Error = E;

    #[inline(always)]
    fn into_result(self) -> Self {
        self
    }

    #[inline(always)]
    fn from_result(result: Self) -> Self {
        result
    }
}

/// The error type has a text: it goes into the log lines and into the give-up error.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` must implement `Display`: `#[retry_with_backoff]` logs its text and keeps it in `MediaProcessingError`",
    label = "this error type has no `Display`",
    note = "implement `std::fmt::Display` (`#[derive(thiserror::Error)]` with `#[error(\"...\")]` does), or return `anyhow::Error` or `std::io::Error`"
)]
pub trait LoggableError {
    /// The text the rules read: with the causes of `chain` when the error has one, else its
    /// `Display` (not redacted: logs and give-ups redact what they show).
    fn text(&self, chain: Option<&(dyn Error + 'static)>) -> String;
}

impl<E: Display + ?Sized> LoggableError for E {
    fn text(&self, chain: Option<&(dyn Error + 'static)>) -> String {
        crate::classify::chain::text_of(self, chain)
    }
}

/// The error type can receive the give-up error, returned once all attempts fail.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold the `MediaProcessingError` returned once all attempts fail",
    label = "this error type needs `From<MediaProcessingError>`",
    note = "add a variant `Exhausted(#[from] resilience::MediaProcessingError)` (and `#[derive(resilience::Classify)]` on the type, so each variant is classified as the error it wraps), or return `anyhow::Error`, `Box<dyn Error + Send + Sync>` or `std::io::Error`, which take it as they are"
)]
pub trait HoldsGiveUp: Sized {
    /// The give-up error as this type: `From::from`.
    fn from_give_up(error: MediaProcessingError) -> Self;
}

impl<E: From<MediaProcessingError>> HoldsGiveUp for E {
    #[inline]
    fn from_give_up(error: MediaProcessingError) -> Self {
        E::from(error)
    }
}

/// A by-value argument can be cloned for each attempt but the last, which gets the caller's
/// value itself.
#[diagnostic::on_unimplemented(
    message = "`#[retry_with_backoff]` gives each attempt its own copy of this argument, but `{Self}` is not `Clone`",
    label = "passed by value, so every attempt but the last needs a clone",
    note = "take it by reference or implement `Clone` for it; a file or a reader: mark it `#[rewind]`, and every attempt reads it from where the call started; `#[no_clone]` shares one value between all attempts, its position included"
)]
pub trait ClonedPerAttempt: Sized {
    /// A copy for one attempt.
    fn fresh(&self) -> Self;
}

impl<T: Clone> ClonedPerAttempt for T {
    #[inline(always)]
    fn fresh(&self) -> Self {
        self.clone()
    }
}

/// A `#[rewind]` argument can be put back where the call started: it is `std::io::Seek`.
#[diagnostic::on_unimplemented(
    message = "`#[rewind]` puts this argument back where the call started before each retry, but `{Self}` is not `std::io::Seek`",
    label = "not `Seek`",
    note = "mark only a file or a seekable reader (`File`, `Cursor<..>`, `BufReader<File>`) `#[rewind]`; read a stream that cannot seek into a buffer before the call, and pass the buffer"
)]
pub trait Rewindable: std::io::Seek {}

impl<T: std::io::Seek + ?Sized> Rewindable for T {}

/// How the attempts seek a `#[rewind]` argument.
pub type Seeker<S> = fn(&mut S, std::io::SeekFrom) -> std::io::Result<u64>;

/// A `#[rewind]` argument, checked to be [`Rewindable`], with its seek: the attribute's
/// expansion calls this once per call, where the check reports on the parameter.
#[inline(always)]
pub fn rewindable<S: Rewindable + ?Sized>(stream: &mut S) -> (&mut S, Seeker<S>) {
    (stream, |stream, to| stream.seek(to))
}

/// What a `retry_if` predicate (or the closure API's `.when`) answers: `bool` or [`Verdict`].
#[diagnostic::on_unimplemented(
    message = "`retry_if` must answer `bool` or `resilience::Verdict`, not `{Self}`",
    label = "this predicate's answer is `{Self}`",
    note = "`true` retries, `false` returns the error at once; `Verdict::Unknown` leaves it to the built-in rules"
)]
pub trait PredicateAnswer {
    /// The answer as a verdict.
    fn into_verdict(self) -> Verdict;
}

impl PredicateAnswer for bool {
    fn into_verdict(self) -> Verdict {
        Verdict::from(self)
    }
}

impl PredicateAnswer for Verdict {
    fn into_verdict(self) -> Verdict {
        self
    }
}

/// Runs the body of a sync function once per attempt: it must be able to run again
/// (`FnMut`), so an argument it moves must be its own, not one `#[no_clone]` lets it borrow.
/// The attribute calls it; `shape` (from the by-value arguments) gives the closure its
/// parameter type.
#[inline(always)]
pub fn each_attempt<A, R, F: FnMut(A) -> R>(shape: PhantomData<A>, attempt: F) -> F {
    let _ = shape;
    attempt
}

/// [`each_attempt`] for an `async fn`: its body runs once per attempt (`AsyncFnMut`).
#[inline(always)]
pub fn each_async_attempt<A, R, F: AsyncFnMut(A) -> R>(shape: PhantomData<A>, attempt: F) -> F {
    let _ = shape;
    attempt
}
