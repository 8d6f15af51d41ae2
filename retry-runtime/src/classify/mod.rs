//! Which errors are worth another attempt (the README's "Classification" section).
//!
//! The first rule that knows decides, in this order (`order.rs` applies it, for every path):
//! 1. the function's own predicate (`retry_if`, or `.when` in the closure API);
//! 2. an inner retried call that already gave up is never retried again;
//! 3. the server's own words: a per-day quota, or a gRPC pushback that refuses retries, is not
//!    retried ([`hint`](crate::hint));
//! 4. the error type's own answer: its [`Classify`] implementation, or `#[derive(Classify)]`;
//! 5. known types along the `source()` chain: an [`io::Error`](std::io::Error)'s kind, an
//!    HTTP status, a gRPC code, a SQLite result code, what `reqwest`, `ureq` and tonic say, a
//!    tokio timeout;
//! 6. an HTTP status stated in the text, then retryable words and codes in it ([`by_text`]).
//!
//! Whatever no rule calls retryable is returned at once, unchanged. One rule a file:
//! `io_kind.rs`, `status.rs`, `text.rs`, `inner_give_up.rs`, `known_types.rs`; `chain.rs`
//! walks `source()`, `builtin.rs` gives the common error types their `Classify`.

use std::error::Error;
use std::fmt;
use std::time::Duration;

mod builtin;
pub(crate) mod chain;
#[cfg(feature = "tonic")]
mod grpc_code;
pub(crate) mod inner_give_up;
mod io_kind;
pub(crate) mod known_types;
pub(crate) mod order;
#[cfg(feature = "rusqlite")]
mod sqlite;
mod status;
mod text;
#[cfg(any(feature = "ureq", feature = "ureq2"))]
mod ureq;

#[cfg(feature = "tonic")]
pub use grpc_code::by_grpc_code;
pub use io_kind::by_io_kind;
pub use status::by_status;
pub use text::by_text;

/// One rule's answer about one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Another attempt may succeed: wait and retry.
    Retryable,
    /// Another attempt will fail the same way: return the error at once.
    NotRetryable,
    /// This rule does not know; the next rule decides.
    Unknown,
}

impl Verdict {
    /// `self` unless it is [`Unknown`](Verdict::Unknown), in which case `next()`.
    #[inline]
    pub fn or_else(self, next: impl FnOnce() -> Verdict) -> Verdict {
        match self {
            Verdict::Unknown => next(),
            known => known,
        }
    }
}

/// A predicate's `true` means retry and `false` means do not; it never defers.
impl From<bool> for Verdict {
    fn from(retry: bool) -> Self {
        if retry {
            Verdict::Retryable
        } else {
            Verdict::NotRetryable
        }
    }
}

/// An error type's own answer to "is this worth another attempt?".
///
/// Most types need no hand-written implementation: `#[derive(Classify)]` classifies each
/// variant as the error it wraps (through `#[error(transparent)]` too) and takes
/// `#[classify(retryable)]` / `#[classify(not_retryable)]` on a variant. Implement it by
/// hand when the type knows better than that. Return [`Verdict::Unknown`] for the cases you
/// do not decide: the built-in rules then decide, as they would without your answer.
///
/// ```
/// use resilience::{Classify, Verdict};
///
/// #[derive(Debug, thiserror::Error)]
/// enum ApiError {
///     #[error("quota exceeded (per day: {per_day})")]
///     Quota { per_day: bool },
///     #[error("i/o")]
///     Io(#[source] std::io::Error),
/// }
///
/// impl Classify for ApiError {
///     fn classify(&self) -> Verdict {
///         match self {
///             ApiError::Quota { per_day } => Verdict::from(!per_day),
///             ApiError::Io(_) => Verdict::Unknown, // the io::Error's kind decides
///         }
///     }
/// }
/// assert_eq!(ApiError::Quota { per_day: true }.classify(), Verdict::NotRetryable);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say which of its errors are worth another attempt",
    label = "`{Self}` does not implement `Classify`",
    note = "add `#[derive(resilience::Classify)]` to the error type, or use `io::Error`, `anyhow::Error`, `Box<dyn Error + Send + Sync>`, `reqwest::Error` or `HttpError`, which implement it"
)]
pub trait Classify {
    /// Whether another attempt may succeed.
    fn classify(&self) -> Verdict;

    /// How long the server asked to wait before the next attempt, if the error knows (the
    /// README's "What the server says"). The wait is then at least this long.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The type's own answer with the rule credited for it, or `None` when it leaves the
    /// decision to the built-in rules. Types whose whole answer *is* the built-in rules over
    /// their chain return `None` here and their chain below.
    #[doc(hidden)]
    fn __resilience_own_answer(&self) -> Option<Classified> {
        Classified::by(Rule::OwnAnswer, self.classify())
            .map(|c| c.with_retry_after(self.retry_after()))
    }

    /// The error as an `std::error::Error`, so that the built-in rules also walk its
    /// `source()` chain around your answer, where generic code cannot see the type is one
    /// (the closure API). `#[derive(Classify)]` and the built-in implementations give it; a
    /// hand-written implementation on an error type returns `Some(self)`:
    ///
    /// ```
    /// # use resilience::{Classify, Verdict};
    /// # #[derive(Debug, thiserror::Error)]
    /// # #[error("x")]
    /// # struct ApiError;
    /// impl Classify for ApiError {
    ///     fn classify(&self) -> Verdict {
    ///         Verdict::Unknown
    ///     }
    ///
    ///     fn error_chain(&self) -> Option<&(dyn std::error::Error + 'static)> {
    ///         Some(self)
    ///     }
    /// }
    /// ```
    fn error_chain(&self) -> Option<&(dyn Error + 'static)> {
        None
    }

    /// The error boxed so that the give-up error can hand it back typed, for types whose own
    /// `Into<BoxError>` would hide it (`anyhow::Error`); `Err(self)` for the others.
    #[doc(hidden)]
    fn __resilience_into_last_error(self) -> Result<crate::error::BoxError, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

/// Which rule gave the final answer; logged with a give-up or a non-retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// The function's predicate: `retry_if`, or `.when` in the closure API.
    Predicate,
    /// A retried call inside already gave up (a `MediaProcessingError` in the chain).
    InnerGiveUp,
    /// What the server said: a per-day quota.
    PerDayQuota,
    /// What the server said: a gRPC pushback (`grpc-retry-pushback-ms`) that refuses retries.
    ServerPushback,
    /// `#[classify(retryable)]` or `#[classify(not_retryable)]` on the variant.
    Declared,
    /// The error type's own [`Classify`] implementation.
    OwnAnswer,
    /// A type the library knows, in the chain: an `io::Error`'s kind, an HTTP status, a gRPC
    /// code, a `reqwest`, tonic or tokio timeout.
    KnownType,
    /// An HTTP status stated in the text (`400 Bad Request`, `status: 503`).
    StatusInText,
    /// A retryable word or code in the text (`timeout`, `connection`, `429`, ...).
    Keyword,
    /// No rule called it retryable.
    NoRule,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Predicate => "decided by the predicate",
            Rule::InnerGiveUp => "an inner retried call already gave up",
            Rule::PerDayQuota => "the server names a per-day quota",
            Rule::ServerPushback => "the server's pushback asks not to retry",
            Rule::Declared => "declared by `#[classify]`",
            Rule::OwnAnswer => "decided by the error type's `Classify`",
            Rule::KnownType => "decided by the error's type",
            Rule::StatusInText => "decided by the HTTP status in the error's text",
            Rule::Keyword => "decided by a word in the error's text",
            Rule::NoRule => "no rule calls it retryable",
        })
    }
}

/// A final answer: retryable or not, the rule that said so, and the server's delay hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classified {
    /// [`Verdict::Retryable`] or [`Verdict::NotRetryable`], never `Unknown`.
    pub verdict: Verdict,
    /// The rule that decided.
    pub rule: Rule,
    /// How long the server asked to wait, if it said.
    pub retry_after: Option<Duration>,
}

impl Classified {
    /// The answer of `rule`, or `None` when it does not know.
    #[inline]
    pub fn by(rule: Rule, verdict: Verdict) -> Option<Self> {
        match verdict {
            Verdict::Unknown => None,
            verdict => Some(Self {
                verdict,
                rule,
                retry_after: None,
            }),
        }
    }

    /// What is left when no rule called an error retryable.
    pub const NOT_RETRYABLE: Self = Self {
        verdict: Verdict::NotRetryable,
        rule: Rule::NoRule,
        retry_after: None,
    };

    /// The same answer, with the server's delay hint.
    #[inline]
    #[must_use]
    pub fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..self
        }
    }

    /// Whether the error is worth another attempt.
    #[inline]
    pub fn is_retryable(&self) -> bool {
        self.verdict == Verdict::Retryable
    }
}

/// The built-in rules (2, 3, 5 and 6 of the list above) over an error and its `source()`
/// chain. Call it in a [`Classify`] implementation for the cases the type does not decide,
/// or to see what the attribute would decide.
///
/// ```
/// use std::io;
/// use resilience::{Rule, Verdict, classify::explain};
///
/// let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
/// assert_eq!(explain(&reset).verdict, Verdict::Retryable);
/// assert_eq!(explain(&reset).rule, Rule::KnownType);
/// let bad = io::Error::other("HTTP status client error (400 Bad Request) for url (https://h.test/v1/reset)");
/// assert_eq!(explain(&bad).rule, Rule::StatusInText);
/// assert_eq!(explain(&bad).verdict, Verdict::NotRetryable);
/// ```
pub fn explain(error: &(dyn Error + 'static)) -> Classified {
    order::decide(order::Seen::chain(error), "")
}

/// What the attribute decides for an error type with its own [`Classify`] (hand-written or
/// derived): its own answer, with the built-in rules of [`explain`] around it.
///
/// ```
/// use resilience::{Classify, Rule, classify::explain_own};
///
/// #[derive(Debug, thiserror::Error, Classify)]
/// enum ApiError {
///     #[error("503 Service Unavailable: the quota is spent")]
///     #[classify(not_retryable)]
///     QuotaSpent,
/// }
/// assert_eq!(explain_own(&ApiError::QuotaSpent).rule, Rule::Declared);
/// ```
pub fn explain_own<E: Classify + Error + 'static>(error: &E) -> Classified {
    order::decide(order::Seen::classify(error, Some(error)), "")
}
