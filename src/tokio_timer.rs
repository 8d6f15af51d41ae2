//! tokio's timer, as the async retries' [`AsyncTimer`]: what an annotated `async fn` and
//! [`Retryable`](crate::Retryable) wait on (feature `tokio`, on by default).

use std::time::{Duration, Instant};

use retry_runtime::timer::AsyncTimer;

/// Waits with `tokio::time::sleep` and reads tokio's clock, so that
/// `#[tokio::test(start_paused = true)]` runs the waits at once. Needs a tokio runtime with
/// its timer enabled, as every tokio sleep does.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

impl AsyncTimer for TokioTimer {
    type Sleep = tokio::time::Sleep;

    #[inline]
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[inline]
    fn sleep(wait: Duration) -> Self::Sleep {
        tokio::time::sleep(wait)
    }

    #[inline]
    fn sleep_until(deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }
}
