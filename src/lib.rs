// The README is the manual: rustdoc shows it as the crate's front page, and the test command
// compiles and runs every example in it.
#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub use retry_macro::{Classify, retry_with_backoff};
#[cfg(feature = "tonic")]
pub use retry_runtime::grpc;
pub use retry_runtime::{
    AttemptTimedOut, BlockingRetryable, BoxError, Classified, Classify, DeadlineExceeded,
    GiveUpReason, InvalidPolicy, MediaProcessingError, PolicyBuilder, RetryCause, RetryError,
    RetryPolicy, Rule, Verdict, attempts, backoff, breaker, budget, classify, error, fleet, guards,
    hint, http, keyed, limiter, log, policy, redact, retry, sleep, stats, strategy, testing, timer,
};

mod async_expansion;
#[cfg(feature = "redis")]
#[path = "redis_state.rs"]
pub mod redis;
pub mod requirements;
#[cfg(feature = "tokio")]
mod retryable;
#[cfg(feature = "tokio")]
mod tokio_timer;

#[cfg(feature = "tokio")]
pub use retryable::{Retryable, Retrying};
#[cfg(feature = "tokio")]
pub use tokio_timer::{TokioSleep, TokioTimer};

// Lets the crate's own tests and doctests name `::resilience` like users do.
extern crate self as resilience;

/// What `#[retry_with_backoff]` expands to calls; not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::async_expansion::*;
    pub use retry_runtime::__private::*;
}
