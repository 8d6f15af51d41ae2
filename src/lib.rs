//! Retry with exponential backoff and jitter for calls to flaky APIs, without losing data.
//!
//! ```
//! use std::io;
//! use resilience::retry_with_backoff;
//!
//! /// Asks the upstream service; 429s, 503s, timeouts and resets are retried.
//! #[retry_with_backoff(max_retries = 3, base_delay = 0.001, max_delay = 0.01, jitter = 0)]
//! fn fetch(calls: &mut u32) -> io::Result<&'static str> {
//!     *calls += 1;
//!     if *calls < 3 {
//!         return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer"));
//!     }
//!     Ok("analysis")
//! }
//!
//! let mut calls = 0;
//! assert_eq!(fetch(&mut calls)?, "analysis");
//! assert_eq!(calls, 3);
//! # Ok::<(), io::Error>(())
//! ```
//!
//! See the README for the Python-to-Rust mapping, every argument, the classification rules
//! and the give-up error, [`MediaProcessingError`].
#![forbid(unsafe_code)]

pub use retry_macro::{Classify, retry_with_backoff};
#[cfg(feature = "tonic")]
pub use retry_runtime::grpc;
pub use retry_runtime::{
    BlockingRetryable, BoxError, Classified, Classify, DeadlineExceeded, GiveUpReason,
    InvalidPolicy, MediaProcessingError, PolicyBuilder, RetryError, RetryPolicy, Rule, Verdict,
    attempts, backoff, classify, error, hint, http, log, policy, redact, retry, sleep, timer,
};

mod async_expansion;
pub mod requirements;
#[cfg(feature = "tokio")]
mod retryable;
#[cfg(feature = "tokio")]
mod tokio_timer;

#[cfg(feature = "tokio")]
pub use retryable::{Retryable, Retrying};
#[cfg(feature = "tokio")]
pub use tokio_timer::TokioTimer;

// Lets the crate's own tests and doctests name `::resilience` like users do.
extern crate self as resilience;

// The README's examples are compiled and run by the test command.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// What `#[retry_with_backoff]` expands to calls; not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::async_expansion::*;
    pub use retry_runtime::__private::*;
}
