//! `.retry(&policy)` on a closure that returns a future: the closure API's async form, on
//! tokio's timer (feature `tokio`).

use std::future::Future;

use retry_runtime::policy::RetryPolicy;
use retry_runtime::retry::{BuiltinRules, Silent};

use crate::TokioTimer;

/// The future [`Retryable::retry`] makes: [`retry::Retrying`](crate::retry::Retrying) on
/// tokio's timer. `.named`, `.when` and `.notify` configure it; `.await` runs it.
pub type Retrying<F, Fut, W = BuiltinRules, N = Silent> =
    retry_runtime::retry::Retrying<F, Fut, TokioTimer, W, N>;

/// `.retry(&policy)` on a closure that returns a future: the async form. The result is a
/// future; dropping it cancels the call at once, mid-wait included.
///
/// ```
/// use std::{io, time::Duration};
/// use resilience::{RetryError, RetryPolicy, Retryable};
///
/// static POLICY: RetryPolicy = RetryPolicy::new();
///
/// async fn fetch(url: &str) -> Result<String, io::Error> {
///     Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("{url}: refused")))
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let outcome = (|| fetch("http://127.0.0.1:9/")).retry(&POLICY).await;
/// let Err(RetryError::GaveUp(give_up)) = outcome else { panic!("expected a give-up") };
/// assert_eq!(give_up.attempts(), 5);
/// # }
/// ```
pub trait Retryable<T, E, Fut>: FnMut() -> Fut + Sized
where
    Fut: Future<Output = Result<T, E>>,
{
    /// Retries the futures this closure makes under a copy of `policy`; `.await` the
    /// result.
    fn retry(self, policy: &RetryPolicy) -> Retrying<Self, Fut>;
}

impl<T, E, Fut, F> Retryable<T, E, Fut> for F
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    fn retry(self, policy: &RetryPolicy) -> Retrying<Self, Fut> {
        Retrying::new(self, policy)
    }
}
