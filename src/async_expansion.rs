//! What the expansion of an annotated `async fn` waits with: tokio's timer. Not public API
//! (re-exported in `__private` for the attribute alone).

#[cfg(feature = "tokio")]
pub use with_tokio::*;
#[cfg(not(feature = "tokio"))]
pub use without_tokio::*;

#[cfg(feature = "tokio")]
mod with_tokio {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use retry_runtime::timer::{AsyncTimer, UntilDeadline};

    use crate::TokioTimer;

    /// The timer a guarded `async fn` waits on.
    pub type Timer = TokioTimer;

    /// tokio's clock, which `#[tokio::test(start_paused = true)]` controls.
    #[inline]
    pub fn now_async() -> Instant {
        TokioTimer::now()
    }

    /// Waits without blocking the executor's thread; dropping the future cancels the wait.
    pub async fn sleep_async(wait: Duration) {
        TokioTimer::sleep(wait).await;
    }

    /// Runs `attempt` to its end, or until `deadline` if there is one.
    #[inline]
    pub fn until_deadline<F: Future>(
        deadline: Option<Instant>,
        attempt: F,
    ) -> UntilDeadline<F, crate::TokioSleep> {
        retry_runtime::timer::until_deadline::<TokioTimer, F>(deadline, attempt)
    }
}

/// Without tokio the expansion of an `async fn` does not compile (see
/// [`AsyncRuntime`](crate::requirements::AsyncRuntime)); these keep its other calls
/// well-typed so that that one error is all the user sees.
#[cfg(not(feature = "tokio"))]
mod without_tokio {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use retry_runtime::attempts::DeadlinePassed;
    use retry_runtime::timer::AsyncTimer;

    /// A timer that never waits, so that a guarded `async fn` still type-checks without tokio
    /// and the one error is the missing runtime.
    pub struct Timer;

    impl AsyncTimer for Timer {
        type Sleep = std::future::Ready<()>;
        fn now() -> Instant {
            Instant::now()
        }
        fn sleep(_: Duration) -> Self::Sleep {
            std::future::ready(())
        }
        fn sleep_until(_: Instant) -> Self::Sleep {
            std::future::ready(())
        }
    }

    pub fn now_async() -> Instant {
        Instant::now()
    }

    pub async fn sleep_async(_: Duration) {}

    pub async fn until_deadline<F: Future>(
        _: Option<Instant>,
        attempt: F,
    ) -> Result<F::Output, DeadlinePassed> {
        Ok(attempt.await)
    }
}
