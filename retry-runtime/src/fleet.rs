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
pub trait FleetState: FleetGuards + Send + Sync {
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

/// A retry budget's rule, as a fleet backend runs it (see [`crate::budget`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetRule {
    /// The retries in the last `window` are at most `ratio` of the calls made in it, plus
    /// `floor_per_second` a second.
    Ratio {
        /// The share of the calls that may be retried.
        ratio: f64,
        /// The window the calls and retries are counted over.
        window: Duration,
        /// Retries always allowed, per second of the window.
        floor_per_second: u32,
    },
    /// A bucket of `capacity` tokens, full at first; a retry costs `retry_cost` tokens, one
    /// after an attempt cut off at its `attempt_timeout` `timeout_cost`.
    Bucket {
        /// The most tokens the bucket holds.
        capacity: u32,
        /// What a retry costs.
        retry_cost: u32,
        /// What a retry after a timeout costs.
        timeout_cost: u32,
    },
}

/// A circuit breaker's rule, as a fleet backend runs it (see [`crate::breaker`]). A fleet's
/// calls come in no one order, so its window is a time window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerRule {
    /// It opens when at least this share of the window's calls failed...
    pub failure_rate: f64,
    /// ...over the calls of this last stretch of time...
    pub window: Duration,
    /// ...once the window holds at least this many calls...
    pub minimum_calls: u32,
    /// ...and at least this many processes reported failures in it: one bad process (its
    /// own network, its own bug) cannot open the breaker for the fleet.
    pub quorum: u32,
    /// The first opening's duration.
    pub open_for: Duration,
    /// Each consecutive opening (failed probes) multiplies the duration by this...
    pub growth: f64,
    /// ...up to this.
    pub max_open: Duration,
    /// The probes let through, one at a time across the fleet, once the duration is over.
    pub probes: u32,
}

/// The fleet's circuit, as a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetCircuit {
    /// Calls pass.
    Closed,
    /// Calls are refused for `retry_in`.
    Open {
        /// Until the next probe may go.
        retry_in: Duration,
    },
    /// Half-open: this call is one of the probes (answered to a probe request only).
    Probe,
    /// Half-open, and the probes are all out: refused, for at most `retry_in`.
    Busy {
        /// Until a probe's slot comes free, if none answers before.
        retry_in: Duration,
    },
}

/// The outcome of a call, as a fleet backend records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetOutcome {
    /// The service's failure (a retryable error); a success or the caller's error otherwise.
    pub failed: bool,
    /// The call was a half-open probe.
    pub probe: bool,
}

/// What a backend does with the fleet's answer to a recorded outcome: the breaker keeps it
/// as its view of the fleet's circuit.
pub type OnCircuit = Box<dyn FnOnce(Answer<FleetCircuit>) + Send>;

/// The guards' operations besides the limiter's, each one atomic step on the backend's side;
/// every one has a default that says the backend cannot answer, so a backend may keep only
/// limits. Implemented by `resilience::redis::RedisState`.
pub trait FleetGuards: Send + Sync {
    /// Whether the last call reached the backend: while it does not, a shared breaker
    /// decides alone, on its own state, without asking.
    fn is_reachable(&self) -> bool {
        false
    }

    /// A call of the budget `key` started (fire and forget).
    fn budget_deposit(&self, key: &str, rule: BudgetRule) {
        let _ = (key, rule);
    }

    /// A retry is about to be made (`timed_out`: after an attempt cut off at its
    /// `attempt_timeout`): `true` if the budget allows it and it was paid for, `false` if the
    /// budget is spent (nothing taken).
    fn budget_withdraw<'a>(
        &'a self,
        key: &'a str,
        rule: BudgetRule,
        timed_out: bool,
    ) -> Pending<'a, Answer<bool>> {
        let _ = (key, rule, timed_out);
        Box::pin(std::future::ready(Answer::Unavailable { share: 1 }))
    }

    /// [`budget_withdraw`](Self::budget_withdraw) for a blocking caller.
    fn budget_withdraw_blocking(
        &self,
        key: &str,
        rule: BudgetRule,
        timed_out: bool,
    ) -> Answer<bool> {
        let _ = (key, rule, timed_out);
        Answer::Unavailable { share: 1 }
    }

    /// A call that succeeded gives `tokens` back to the bucket `key` (fire and forget; the
    /// ratio model ignores it).
    fn budget_refund(&self, key: &str, rule: BudgetRule, tokens: u32) {
        let _ = (key, rule, tokens);
    }

    /// The breaker `key` is due for a half-open probe by this process's view: may this call
    /// be one?
    fn breaker_probe<'a>(
        &'a self,
        key: &'a str,
        rule: BreakerRule,
    ) -> Pending<'a, Answer<FleetCircuit>> {
        let _ = (key, rule);
        Box::pin(std::future::ready(Answer::Unavailable { share: 1 }))
    }

    /// [`breaker_probe`](Self::breaker_probe) for a blocking caller.
    fn breaker_probe_blocking(&self, key: &str, rule: BreakerRule) -> Answer<FleetCircuit> {
        let _ = (key, rule);
        Answer::Unavailable { share: 1 }
    }

    /// A half-open probe granted for the breaker `key` whose call never ran (a limiter
    /// refused it after the breaker let it through): its slot is free again (fire and forget).
    fn breaker_release(&self, key: &str, rule: BreakerRule) {
        let _ = (key, rule);
    }

    /// Records a call's outcome for the breaker `key`, under this process's name (fire and
    /// forget); `then` receives the fleet's circuit as the backend answers, for the breaker's
    /// view (it may run on another thread, later, or not at all when the backend is away).
    /// `jitter` scales the open duration should this outcome open the circuit.
    fn breaker_record(
        &self,
        key: &str,
        rule: BreakerRule,
        outcome: FleetOutcome,
        jitter: f64,
        then: OnCircuit,
    ) {
        let _ = (key, rule, outcome, jitter, then);
    }
}
