//! A guard's state shared by a fleet of processes (the README's "When one process is not
//! enough"): what a backend such as `resilience::redis::RedisState` does for a
//! [`RateLimiter`](crate::limiter::RateLimiter) made with
//! [`.shared(&BACKEND)`](crate::limiter::RateLimiter::shared). Each operation is one atomic
//! step on the backend's side, timed by the backend's own clock, so the processes' clocks
//! need not agree.
//!
//! A backend that cannot answer (down, slow, not connected yet) says so with
//! [`Answer::Unavailable`], and the limiter decides alone, on its own state: a backend's
//! outage never fails a call that would otherwise succeed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A limiter's settings, as the backend runs them (see [`crate::limiter`] for the
/// algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// The spacing of permits: `period / permits`.
    pub emission: Duration,
    /// How far ahead of its even spacing a permit may go: `emission * (burst - 1)`.
    pub tolerance: Duration,
}

/// What a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<T> {
    /// It decided.
    Decided(T),
    /// It could not answer in time: the limiter decides alone, allowing `1 / share` of its
    /// rate to this process (1: its whole rate, the default fallback; the number of workers,
    /// to split the quota while the backend is away).
    Unavailable {
        /// How many processes are taken to share the limit while the backend is away.
        share: u32,
    },
}

/// A reservation: `Ok(wait)` before the permit, or `Err(wait)` when that wait would have been
/// longer than the caller allows (nothing reserved).
pub type Reservation = Result<Duration, Duration>;

/// A backend's answer to come.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the limiters made with `.shared(..)` keep their state: implemented by
/// `resilience::redis::RedisState` (feature `redis`), and by anything else that can run the
/// GCRA as one atomic step.
pub trait FleetState: Send + Sync {
    /// Reserves the next permit of the limiter `key`: the wait before it, or the wait it
    /// would have needed when that is longer than `max_wait`.
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        gcra: Gcra,
        max_wait: Option<Duration>,
    ) -> Pending<'a, Answer<Reservation>>;

    /// [`reserve`](Self::reserve) for a blocking caller, on the current thread.
    fn reserve_blocking(
        &self,
        key: &str,
        gcra: Gcra,
        max_wait: Option<Duration>,
    ) -> Answer<Reservation>;

    /// A server asked every caller of `key` to wait `wait` from now: no permit before then,
    /// for the whole fleet. Fire and forget: the caller does not wait for it.
    fn pause(&self, key: &str, gcra: Gcra, wait: Duration);
}
