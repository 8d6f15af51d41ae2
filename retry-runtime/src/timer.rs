//! The async timer the async retries wait on, and an attempt raced against a deadline.
//!
//! The runtime names no executor: [`AsyncTimer`] is what it needs of one, and the facade
//! `resilience` implements it with tokio's timer (`resilience::TokioTimer`, feature `tokio`).
//! Another runtime's timer fits the same trait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::attempts::DeadlinePassed;

/// What an async retry needs of an executor: its clock and its sleeps. Dropping a sleep
/// cancels it.
///
/// ```
/// use std::time::{Duration, Instant};
/// use resilience::timer::AsyncTimer;
///
/// /// A timer whose sleeps end at once: every wait is skipped.
/// struct NoWaits;
///
/// impl AsyncTimer for NoWaits {
///     type Sleep = std::future::Ready<()>;
///     fn now() -> Instant {
///         Instant::now()
///     }
///     fn sleep(_: Duration) -> Self::Sleep {
///         std::future::ready(())
///     }
///     fn sleep_until(_: Instant) -> Self::Sleep {
///         std::future::ready(())
///     }
/// }
/// ```
pub trait AsyncTimer {
    /// A pending sleep.
    type Sleep: Future<Output = ()>;
    /// The time on this timer's clock (the one `timeout` is measured on).
    fn now() -> Instant;
    /// Sleeps for `wait`.
    fn sleep(wait: Duration) -> Self::Sleep;
    /// Sleeps until `deadline`, a time read from [`now`](Self::now).
    fn sleep_until(deadline: Instant) -> Self::Sleep;
}

/// Runs `attempt` to its end, or until `deadline` if there is one.
#[inline]
pub fn until_deadline<T: AsyncTimer, F: Future>(
    deadline: Option<Instant>,
    attempt: F,
) -> UntilDeadline<F, T::Sleep> {
    UntilDeadline {
        attempt,
        timer: deadline.map(T::sleep_until),
    }
}

pin_project_lite::pin_project! {
    /// An attempt raced against the call's deadline: [`DeadlinePassed`] when the timer ends
    /// first. The annotated function's future holds it inline during its first attempt, so
    /// it holds the attempt once and the timer once (see the README's "Performance").
    #[must_use = "futures do nothing unless polled"]
    pub struct UntilDeadline<F, S> {
        #[pin]
        attempt: F,
        #[pin]
        timer: Option<S>,
    }
}

impl<F: Future, S: Future<Output = ()>> Future for UntilDeadline<F, S> {
    type Output = Result<F::Output, DeadlinePassed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The attempt first: one that is ready at the deadline still counts.
        if let Poll::Ready(output) = this.attempt.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Err(DeadlinePassed)),
            None => Poll::Pending,
        }
    }
}
