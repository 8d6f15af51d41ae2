//! What `#[retry_with_backoff]` asks of the annotated function's types, one trait each.
//!
//! You never implement these: each has an implementation for every type that qualifies
//! (`Result<T, E>`, any `Display` error, any `Clone` argument, ...). They exist so that a
//! function the attribute cannot serve gets one compile error, on your own token, that says
//! what to change, instead of an error deep inside the expansion.

pub use retry_runtime::requirements::*;

/// The timer an `async fn` waits on between attempts.
pub struct Tokio;

/// An `async fn` under the attribute needs an async timer: the `tokio` feature.
#[diagnostic::on_unimplemented(
    message = "`#[retry_with_backoff]` on an `async fn` needs the `tokio` feature of `resilience`",
    label = "this `async fn` waits between attempts with tokio's timer",
    note = "the feature is on by default; with `default-features = false`, add `features = [\"tokio\"]`"
)]
pub trait AsyncRuntime {
    /// Nothing: its only use is to be required.
    fn available() {}
}

#[cfg(feature = "tokio")]
impl AsyncRuntime for Tokio {}
