//! tokio's timer, as the async retries' [`AsyncTimer`]: what an annotated `async fn` and
//! [`Retryable`](crate::Retryable) wait on (feature `tokio`, on by default). Outside a tokio
//! runtime (`futures::executor::block_on`, smol, async-std), where a tokio sleep would panic
//! ("there is no reactor running"), the same waits run on a helper thread instead (the
//! README's "Other executors").

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use retry_runtime::timer::AsyncTimer;

/// Waits with `tokio::time::sleep` and reads tokio's clock, so that
/// `#[tokio::test(start_paused = true)]` runs the waits at once. Outside any tokio runtime it
/// waits on a helper thread, one per wait, so that an `async fn` under the attribute works on
/// any executor. A tokio runtime must have its timer enabled (`enable_time`, or `enable_all`),
/// as every tokio sleep needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl AsyncTimer for TokioTimer {
    type Sleep = TokioSleep;

    #[inline]
    fn now() -> Instant {
        // Outside a runtime this is the system's monotonic clock; it never panics.
        tokio::time::Instant::now().into_std()
    }

    #[inline]
    fn sleep(wait: Duration) -> Self::Sleep {
        // A wait too long for an `Instant` (`max_delay = Duration::MAX`) ends "never", in
        // practice: about 30 years on, as tokio's own sleeps saturate.
        let now = Self::now();
        let far = Duration::from_secs(30 * 365 * 24 * 3600);
        let deadline = now
            .checked_add(wait)
            .or_else(|| now.checked_add(far))
            .unwrap_or(now);
        Self::sleep_until(deadline)
    }

    /// Nothing is set up until the sleep is first polled: a deadline raced against an attempt
    /// that finishes at once (the success path of a call with a `timeout`) costs no timer.
    #[inline]
    fn sleep_until(deadline: Instant) -> Self::Sleep {
        TokioSleep {
            inner: Inner::Unstarted { deadline },
        }
    }
}

pin_project_lite::pin_project! {
    /// A sleep of [`TokioTimer`]: tokio's, or outside a tokio runtime, a helper
    /// thread's. Dropping it cancels the wait.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct TokioSleep {
        #[pin]
        inner: Inner,
    }
}

pin_project_lite::pin_project! {
    /// Not polled yet, then tokio's sleep or the helper thread's, never both: the future
    /// holds only the larger.
    #[project = InnerProjection]
    #[derive(Debug)]
    enum Inner {
        Unstarted { deadline: Instant },
        OnTokio { #[pin] sleep: tokio::time::Sleep },
        Elsewhere { sleep: ThreadSleep },
    }
}

impl Future for TokioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.project().inner;
        if let InnerProjection::Unstarted { deadline } = inner.as_mut().project() {
            let deadline = *deadline;
            // Decided where the sleep is polled: inside a tokio runtime, or not.
            inner.set(if tokio::runtime::Handle::try_current().is_ok() {
                Inner::OnTokio {
                    sleep: tokio::time::sleep_until(deadline.into()),
                }
            } else {
                Inner::Elsewhere {
                    sleep: ThreadSleep::new(deadline),
                }
            });
        }
        match inner.project() {
            InnerProjection::OnTokio { sleep } => sleep.poll(cx),
            InnerProjection::Elsewhere { sleep } => sleep.poll(cx),
            // Replaced just above.
            InnerProjection::Unstarted { .. } => Poll::Pending,
        }
    }
}

/// A wait outside tokio: the first poll starts a thread that waits for the deadline (or for
/// the sleep to be dropped) and then wakes the task. Waits between attempts happen only after
/// a failure; a `timeout`'s deadline is a sleep too, started once an attempt has not finished
/// on its first poll, so outside tokio such a call costs a thread, ended when the attempt
/// ends. No timer crate or global timer thread is needed for the rare caller outside tokio.
#[derive(Debug)]
struct ThreadSleep {
    deadline: Instant,
    shared: Option<Arc<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    done: bool,
    cancelled: bool,
    waker: Option<Waker>,
}

impl ThreadSleep {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            shared: None,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let shared = match &self.shared {
            Some(shared) => shared,
            None => {
                let shared = Arc::new(Shared::default());
                let waiting = Arc::clone(&shared);
                let deadline = self.deadline;
                let started = std::thread::Builder::new()
                    .name("resilience-wait".to_owned())
                    .spawn(move || waiting.wait_until(deadline));
                if started.is_err() {
                    // No thread to be had (the process is at its limit): ask to be polled
                    // again and try then, rather than end early; a millisecond's pause keeps
                    // that from spinning a core while the process has no thread to give.
                    std::thread::sleep(Duration::from_millis(1));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.shared.insert(shared)
            }
        };
        let mut state = shared.lock();
        if state.done {
            return Poll::Ready(());
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The helper thread: waits for the deadline unless the sleep is dropped first.
    fn wait_until(&self, deadline: Instant) {
        let mut state = self.lock();
        loop {
            if state.cancelled {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.done = true;
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }
}

impl Drop for ThreadSleep {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.lock().cancelled = true;
            shared.changed.notify_all();
        }
    }
}
