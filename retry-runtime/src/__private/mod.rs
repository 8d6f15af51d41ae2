//! What the `#[retry_with_backoff]` expansion and `#[derive(Classify)]` call. Not public API:
//! names and signatures here change whenever the macros change, and the facade re-exports
//! them only for the macros.
//!
//! The requirements the attribute checks on the user's types are public, in
//! [`requirements`](crate::requirements), so that a compile error names only public items.
//! `probes.rs` learns what the rules can see of an error type; `derive.rs` serves the derive;
//! `policy.rs` builds a policy from the attribute's arguments at compile time.

mod derive;
mod policy;
mod probes;
mod rewind;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

pub use derive::*;
pub use policy::*;
pub use probes::*;
pub use rewind::Rewind;
pub use tracing;

pub use crate::attempts::{
    Attempts, DeadlinePassed, Ending, Failure, RetryCause, attempt_deadline, deadline,
    ends_the_call, only_attempt_failed, retry_blocking, started,
};
pub use crate::classify::order::Seen;
pub use crate::classify::{Classified, Rule, Verdict};
pub use crate::emit_event;
pub use crate::error::MediaProcessingError;
pub use crate::guards::{GuardedCall, Guards, arguments, failure_of, guarded_blocking};
pub use crate::log::{Event, Site};
pub use crate::policy::RetryPolicy;
pub use crate::sleep::{now_current, sleep_current};

use crate::classify::order::decide_lazily;

/// The built-in rules' answer for what was seen of an error, or a `retry_if` predicate's
/// when it knows (its `Unknown` leaves the decision to the rules; their hint is kept).
/// `text` is asked for only when the error has no chain.
#[inline]
pub fn classify(
    seen: Seen<'_>,
    text: impl FnOnce() -> String,
    predicate: Option<Verdict>,
) -> Classified {
    let builtin = decide_lazily(seen, text);
    match predicate.and_then(|verdict| Classified::by(Rule::Predicate, verdict)) {
        Some(own) => own.with_retry_after(builtin.retry_after),
        None => builtin,
    }
}

/// The `T` of an attempt's `Result<T, E>`, for [`failed`]: a `Failure` names `T` only when it
/// holds a value that is not ready, so an attempt's error needs it stated.
#[inline(always)]
pub fn ok_type<T, E>(_: &Result<T, E>) -> PhantomData<T> {
    PhantomData
}

/// An attempt's error as its [`Failure`](crate::attempts::Failure).
#[inline(always)]
pub fn failed<E, T>(error: E, _: PhantomData<T>) -> crate::attempts::Failure<E, T> {
    crate::attempts::Failure::Error(error)
}

/// The type of the nested tuple `(a, (b, ()))` that carries an attempt's by-value
/// arguments, learned from what `fresh` makes of them borrowed: the attempt closure's
/// parameter then needs no type written, so `impl Trait` arguments work too (see
/// [`each_attempt`](crate::requirements::each_attempt)).
#[inline(always)]
pub fn shape_from<R, A, F: Fn(R) -> A>(_: R, _: &F) -> PhantomData<A> {
    PhantomData
}

/// The retries after a failed first attempt, boxed: the function's own future stays as
/// small as the plain one, and the box is made only on the failure path.
#[cold]
#[inline(never)]
pub fn boxed<F: Future>(retries: F) -> Pin<Box<F>> {
    Box::pin(retries)
}
