//! What retried calls did, whatever their ending (the README's "The facts of a call"): how
//! many retries they made and how long they waited, for a scope the caller opens.
//!
//! A success on the first attempt writes nothing, so a caller that opens no scope pays
//! nothing on the success path; a wait costs one thread-local read. The give-up error states
//! the same facts for the call that gave up ([`MediaProcessingError::attempts`] and
//! [`waited`](crate::MediaProcessingError::waited)); a scope also tells them for a success
//! after retries, and for a non-retryable error that came after retryable ones (a 503, then
//! a 400), which is returned unchanged.
//!
//! [`MediaProcessingError::attempts`]: crate::MediaProcessingError::attempts

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The retries and the waiting of the retried calls made in one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CallStats {
    /// How many times a failed attempt was followed by another: for one call, its attempts
    /// minus one.
    pub retries: u32,
    /// The waits before those attempts, added up (the backoff, or the server's hint when
    /// longer).
    pub waited: Duration,
}

impl CallStats {
    /// The attempts of a scope that made one retried call: its retries and the first attempt.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    fn add(&mut self, other: CallStats) {
        self.retries = self.retries.saturating_add(other.retries);
        self.waited = self.waited.saturating_add(other.waited);
    }
}

thread_local! {
    /// The innermost open scope on this thread, if any.
    static SCOPE: Cell<Option<CallStats>> = const { Cell::new(None) };
}

/// Counts one retry and its wait in the open scope, if there is one. Called by the runtime
/// just before every wait.
pub(crate) fn retried(wait: Duration) {
    SCOPE.with(|scope| {
        if let Some(mut stats) = scope.get() {
            stats.add(CallStats {
                retries: 1,
                waited: wait,
            });
            scope.set(Some(stats));
        }
    });
}

/// Opens a scope for this thread and closes it when dropped, a panic included; the scope's
/// figures are added to the scope around it, so an outer scope sees the inner calls too.
struct Entered {
    outer: Option<CallStats>,
}

impl Entered {
    fn enter(stats: CallStats) -> Self {
        Entered {
            outer: SCOPE.with(|scope| scope.replace(Some(stats))),
        }
    }

    /// Closes the scope, returning its figures.
    fn exit(self) -> CallStats {
        let stats = SCOPE.with(Cell::get).unwrap_or_default();
        drop(self);
        stats
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        SCOPE.with(|scope| {
            let inner = scope.get().unwrap_or_default();
            let outer = self.outer.map(|mut outer| {
                outer.add(inner);
                outer
            });
            scope.set(outer);
        });
    }
}

/// Runs `f` and returns what the retried calls inside it did.
///
/// ```
/// use std::io;
/// use resilience::retry_with_backoff;
/// use resilience::stats::record;
///
/// #[retry_with_backoff(max_retries = 3, base_delay = 0, jitter = 0)]
/// fn fetch(calls: &mut u32) -> io::Result<&'static str> {
///     *calls += 1;
///     match calls {
///         1 => Err(io::Error::from(io::ErrorKind::ConnectionReset)),
///         // Not retryable: returned unchanged, after two attempts.
///         _ => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
///     }
/// }
///
/// let mut calls = 0;
/// let (outcome, stats) = record(|| fetch(&mut calls));
/// assert_eq!(outcome.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
/// assert_eq!(stats.attempts(), 2);
/// ```
pub fn record<R>(f: impl FnOnce() -> R) -> (R, CallStats) {
    let entered = Entered::enter(CallStats::default());
    let out = f();
    (out, entered.exit())
}

/// [`record`] for a future: `.await` gives its output and what the retried calls inside it
/// did. The scope is open while the future is polled, on whatever thread polls it. A future
/// dropped before it finishes (lost in a `select!`, cut off by a timeout) adds nothing to the
/// scope around it.
pub fn record_async<F: Future>(future: F) -> Recorded<F> {
    Recorded {
        future,
        stats: CallStats::default(),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`record_async`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Recorded<F> {
        #[pin]
        future: F,
        stats: CallStats,
    }
}

impl<F: Future> Future for Recorded<F> {
    type Output = (F::Output, CallStats);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Taken, not copied: if the poll panics, `Entered` adds these to the outer scope, and
        // a later poll must not add them again.
        let entered = Entered::enter(std::mem::take(this.stats));
        let polled = this.future.poll(cx);
        let so_far = SCOPE.with(Cell::get).unwrap_or_default();
        match polled {
            Poll::Ready(out) => {
                // Added to the outer scope once, now, when this one ends.
                *this.stats = CallStats::default();
                drop(entered);
                Poll::Ready((out, so_far))
            }
            Poll::Pending => {
                *this.stats = so_far;
                // Closed between polls without adding to the outer scope: it ends later.
                SCOPE.with(|scope| scope.set(Some(CallStats::default())));
                drop(entered);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_scope_nothing_is_kept() {
        retried(Duration::from_secs(1));
        let ((), stats) = record(|| ());
        assert_eq!(stats, CallStats::default());
        assert_eq!(stats.attempts(), 1);
    }

    #[test]
    fn scopes_nest_and_the_outer_sees_the_inner() {
        let ((), outer) = record(|| {
            retried(Duration::from_secs(1));
            let ((), inner) = record(|| retried(Duration::from_secs(2)));
            assert_eq!(inner.retries, 1);
            assert_eq!(inner.waited, Duration::from_secs(2));
        });
        assert_eq!(outer.retries, 2);
        assert_eq!(outer.waited, Duration::from_secs(3));
    }

    #[test]
    fn a_panic_closes_the_scope() {
        let caught = std::panic::catch_unwind(|| record(|| panic!("boom")));
        assert!(caught.is_err());
        assert_eq!(SCOPE.with(Cell::get), None);
    }

    #[test]
    fn an_async_scope_counts_across_polls_and_adds_to_the_outer_once() {
        struct TwoPolls(bool);
        impl Future for TwoPolls {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                retried(Duration::from_millis(10));
                if self.0 {
                    Poll::Ready(())
                } else {
                    self.0 = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
        let mut future = std::pin::pin!(record_async(TwoPolls(false)));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (polled, outer) = record(|| {
            assert!(future.as_mut().poll(&mut cx).is_pending());
            retried(Duration::from_secs(1));
            future.as_mut().poll(&mut cx)
        });
        let Poll::Ready(((), inner)) = polled else {
            panic!("ready on the second poll");
        };
        assert_eq!(inner.retries, 2);
        assert_eq!(inner.waited, Duration::from_millis(20));
        assert_eq!(outer.retries, 3, "its own retry and the inner scope's two");
    }
}
