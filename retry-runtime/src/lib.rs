//! The runtime of [`resilience`](https://docs.rs/resilience): everything the
//! `#[retry_with_backoff]` attribute calls, usable on its own through the closure API
//! ([`BlockingRetryable`], and [`Retrying`](retry::Retrying) on any [`timer::AsyncTimer`]).
//!
//! One concept per module: [`policy`] (the settings), [`backoff`] (the waits),
//! [`classify`] (retryable or not), [`hint`] (what the server says about waiting),
//! [`http`] (HTTP answers as typed errors), [`attempts`] (the state machine a retry loop
//! drives), [`error`] (`MediaProcessingError`), [`redact`] (credentials out of texts),
//! [`log`] (the `tracing` events), [`sleep`] (waiting, and the clock `timeout` is
//! measured on) and [`timer`] (what an async retry needs of an executor).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attempts;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod classify;
pub mod error;
pub mod fleet;
#[cfg(feature = "tonic")]
pub mod grpc;
pub mod guards;
pub mod hint;
pub mod http;
pub mod keyed;
pub mod limiter;
pub mod log;
mod origin;
pub mod policy;
pub mod redact;
pub mod requirements;
pub mod retry;
mod scan;
pub mod sleep;
pub mod stats;
pub mod strategy;
pub mod testing;
pub mod timer;

#[doc(hidden)]
pub mod __private;

pub use attempts::RetryCause;
pub use classify::{Classified, Classify, Rule, Verdict};
pub use error::{AttemptTimedOut, BoxError, DeadlineExceeded, GiveUpReason, MediaProcessingError};
pub use policy::{InvalidPolicy, PolicyBuilder, RetryPolicy};
pub use retry::{BlockingRetryable, RetryError};
