//! The state machine a retry loop drives after a failed attempt: which attempt this is, and
//! what to do next (wait and retry, return the error unchanged, or give up).
//!
//! The `#[retry_with_backoff]` expansion and the closure API both run the first attempt
//! themselves and build an `Attempts` only when it fails, so a call that succeeds at once
//! never gets here: no state, no clock read (unless `timeout` is set), no event. Every
//! decision after a failure lives here once.

use std::fmt::{self, Display};
use std::time::{Duration, Instant};

use crate::backoff::BackoffState;
use crate::budget::RetryBudget;
use crate::classify::chain::redacted;
use crate::classify::{Classified, Rule, Verdict};
use crate::error::{
    AttemptTimedOut, BoxError, DeadlineExceeded, GiveUpReason, MediaProcessingError,
};
use crate::keyed::Shared;
use crate::log::{Event, Site};
use crate::policy::RetryPolicy;

/// What the loop does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// Wait this long, then run the next attempt.
    Retry(Duration),
    /// The error is not retryable: return it unchanged.
    Return,
    /// Stop trying: return a [`MediaProcessingError`] built with [`Attempts::give_up`].
    GiveUp(GiveUpReason),
}

/// How a retried call ends when it does not succeed.
#[derive(Debug)]
#[must_use]
pub enum Ending<E> {
    /// The error was not worth another attempt: return it unchanged.
    NotRetryable(E),
    /// The attempts or the timeout were spent.
    GaveUp(MediaProcessingError),
}

/// An error's text, formatted (and redacted) only when something shows it.
pub(crate) struct Shown<'a>(pub(crate) &'a dyn Fn() -> String);

impl Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted((self.0)()))
    }
}

/// The `timeout` ran out while an attempt was still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePassed;

/// The retries of a blocking call whose first attempt failed with `first`: waits on the
/// current thread's sleeper, runs `attempt` with `fresh` copies of `args`, and the last
/// attempt with `args` themselves. Out of line and cold, so that the caller's success path
/// is the plain call.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)] // each is one thing the loop needs; a struct would only name them again
pub fn retry_blocking<A, T, E>(
    policy: &RetryPolicy,
    site: Site,
    started: Option<Instant>,
    first: Failure<E, T>,
    args: A,
    mut attempt: impl FnMut(A) -> Result<T, E>,
    fresh: impl Fn(&A) -> A,
    read: impl Fn(&E) -> Classified,
    text: impl Fn(&E) -> String,
    keep: impl Fn(E) -> Option<BoxError>,
    mut on_retry: impl FnMut(RetryCause<'_, E, T>, u32, Duration),
    not_ready: impl Fn(&T) -> bool,
) -> Result<T, Ending<E>> {
    use crate::sleep::{now_current, sleep_current};

    let mut attempts = Attempts::after_first(policy, site, started);
    let mut failure = first;
    let failed = |outcome: Result<T, E>| match outcome {
        Ok(value) if not_ready(&value) => Err(Failure::NotReady(value)),
        Ok(value) => Ok(value),
        Err(error) => Err(Failure::Error(error)),
    };
    loop {
        let wait = attempts.after(failure, &read, &text, &keep, &mut on_retry, now_current)?;
        sleep_current(wait);
        if attempts.is_last() {
            return match failed(attempt(args)) {
                Ok(value) => {
                    attempts.succeeded();
                    Ok(value)
                }
                Err(failure) => Err(attempts.after_last(failure, &read, &text, &keep)),
            };
        }
        failure = match failed(attempt(fresh(&args))) {
            Ok(value) => {
                attempts.succeeded();
                return Ok(value);
            }
            Err(failure) => failure,
        };
    }
}

/// The ending of a call whose only attempt (`max_retries = 1`) failed.
#[cold]
#[inline(never)]
pub fn only_attempt_failed<E, T>(
    policy: &RetryPolicy,
    site: Site,
    started: Option<Instant>,
    failure: Failure<E, T>,
    read: impl FnOnce(&E) -> Classified,
    text: impl Fn(&E) -> String,
    keep: impl FnOnce(E) -> Option<BoxError>,
) -> Ending<E> {
    Attempts::after_first(policy, site, started).after_last(failure, read, text, keep)
}

/// When a call started, read only when the policy has a `timeout`: the one clock read a
/// successful call with a timeout makes.
#[inline(always)]
pub fn started(policy: &RetryPolicy, now: impl FnOnce() -> Instant) -> Option<Instant> {
    policy.timeout().map(|_| now())
}

/// When a call that `started` must be over, if the policy has a `timeout`.
#[inline(always)]
pub fn deadline(policy: &RetryPolicy, started: Option<Instant>) -> Option<Instant> {
    match (started, policy.timeout()) {
        (Some(started), Some(timeout)) => started.checked_add(timeout),
        _ => None,
    }
}

/// The deadline an async attempt starting now runs under: the call's (`timeout`), or
/// `attempt_timeout` from now when that ends first. The clock is read only with an
/// `attempt_timeout`.
#[inline]
pub fn attempt_deadline(
    policy: &RetryPolicy,
    call: Option<Instant>,
    now: impl FnOnce() -> Instant,
) -> Option<Instant> {
    let own = policy
        .attempt_timeout()
        .and_then(|timeout| now().checked_add(timeout));
    match (call, own) {
        (Some(call), Some(own)) => Some(call.min(own)),
        (call, own) => call.or(own),
    }
}

/// Whether an attempt cut off at its deadline ran into the call's `timeout` (the call gives
/// up) rather than its own `attempt_timeout` (the attempt failed, and may be retried).
/// Asked only once an attempt was cut off; without an `attempt_timeout` it is always the call's.
#[cold]
pub fn ends_the_call(
    policy: &RetryPolicy,
    call: Option<Instant>,
    now: impl FnOnce() -> Instant,
) -> bool {
    policy.attempt_timeout().is_none() || call.is_some_and(|call| now() >= call)
}

/// How an attempt failed: with an error of the function's type, or in a way the runtime saw
/// itself.
#[derive(Debug)]
pub enum Failure<E, T> {
    /// The attempt returned `Err`.
    Error(E),
    /// The attempt returned this value, which `not_ready` called not ready; it is dropped
    /// once the decision (and the `on_retry` hook) has seen it, before the wait.
    NotReady(T),
    /// An async attempt ran past its `attempt_timeout` and was cut off.
    TimedOut,
}

/// Why a failed attempt is about to be retried: what the attribute's `on_retry` hook sees,
/// with the number of the attempt that failed and the wait that follows.
#[derive(Debug, Clone, Copy)]
pub enum RetryCause<'a, E, T> {
    /// It returned this error, which the rules call retryable.
    Error(&'a E),
    /// It returned this value, which `not_ready` calls not ready.
    NotReady(&'a T),
    /// It ran past its `attempt_timeout` and was cut off.
    TimedOut(AttemptTimedOut),
}

impl<'a, E, T> RetryCause<'a, E, T> {
    /// The error, when the attempt returned one.
    pub fn error(&self) -> Option<&'a E> {
        match self {
            RetryCause::Error(error) => Some(error),
            _ => None,
        }
    }
}

/// Where one retried call stands after a failure: the attempt, the deadline, the server's
/// last hint.
#[derive(Debug, Clone)]
pub struct Attempts {
    /// A copy: made once, after the first failure, so the closure API's future need not
    /// borrow the policy.
    policy: RetryPolicy,
    site: Site,
    attempt: u32,
    deadline: Option<Instant>,
    /// The server's hint in the last failure, kept for the give-up error.
    retry_after: Option<Duration>,
    /// The waits so far, added up, for the give-up error.
    waited: Duration,
    /// The attempts allowed: the policy's, or fewer under the [testing mode](crate::testing).
    max_retries: u32,
    /// The testing mode is on: every wait is zero.
    no_waits: bool,
    /// The previous backoff wait, which decorrelated jitter grows from.
    backoff: BackoffState,
    /// The retry budget every retry is paid from, when the call has one.
    budget: Option<Shared<RetryBudget>>,
    /// The failure being decided on is an attempt cut off at its `attempt_timeout` (a
    /// budget's retry after a timeout may cost more).
    deciding_cut_off: bool,
}

impl Attempts {
    /// The state after the first attempt of a call that [`started`] then, which failed.
    #[cold]
    #[inline(never)]
    pub fn after_first(policy: &RetryPolicy, site: Site, started: Option<Instant>) -> Self {
        let testing = crate::testing::current();
        let cap = testing.and_then(|mode| mode.attempt_cap());
        Self {
            max_retries: cap.map_or(policy.max_retries(), |cap| cap.min(policy.max_retries())),
            no_waits: testing.is_some(),
            backoff: BackoffState::new(),
            policy: *policy,
            site,
            attempt: 1,
            deadline: deadline(policy, started),
            retry_after: None,
            waited: Duration::ZERO,
            budget: None,
            deciding_cut_off: false,
        }
    }

    /// The same state, paying every retry from `budget` (the README's "Retry budget").
    #[must_use]
    pub fn with_budget(mut self, budget: Option<Shared<RetryBudget>>) -> Self {
        self.budget = budget;
        self
    }

    /// The number of attempts made so far: the one about to run is not counted.
    #[inline]
    pub fn made(&self) -> u32 {
        self.attempt.saturating_sub(1)
    }

    /// The number of the attempt that failed, or that is about to run after a wait.
    #[inline]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the whole call must be over, if the policy has a `timeout`.
    #[inline]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the attempt about to run is the last one allowed: it may take the caller's
    /// by-value arguments rather than copies.
    #[inline]
    pub fn is_last(&self) -> bool {
        self.attempt >= self.max_retries
    }

    /// An attempt after a retry succeeded: logs `Success on attempt {n}`.
    #[cold]
    #[inline(never)]
    pub fn succeeded(&self) {
        self.site.emit(Event::Succeeded {
            attempt: self.attempt,
            max_retries: self.max_retries,
        });
    }

    /// Decides what follows a failed attempt and logs the decision. `error` shows the
    /// error's text with its causes, redacted; it is formatted only for an event that a
    /// subscriber records.
    ///
    /// The wait is the backoff delay, or the server's hint when that is longer; a hint above
    /// `max_hint` gives up at once. `now` is read only when the policy has a `timeout`: no
    /// wait starts that would end past the deadline.
    pub fn after_failure(
        &mut self,
        classified: Classified,
        error: &dyn Display,
        now: impl FnOnce() -> Instant,
    ) -> Next {
        let mut now = ReadOnce::new(now);
        let max_retries = self.max_retries;
        self.retry_after = classified.retry_after;
        if !classified.is_retryable() {
            self.site.emit(Event::NotRetryable {
                attempt: self.attempt,
                max_retries,
                error,
                rule: classified.rule,
            });
            return Next::Return;
        }
        if self.attempt >= max_retries {
            return self.stop(error, GiveUpReason::AttemptsExhausted);
        }
        let mut wait = self.backoff.next_delay(&self.policy, self.attempt);
        if let Some(hint) = classified.retry_after {
            let max_hint = self.policy.max_hint();
            if hint > max_hint {
                let reason = GiveUpReason::HintAboveCap {
                    retry_after: hint,
                    max_hint,
                };
                return self.stop(error, reason);
            }
            wait = wait.max(hint);
        }
        if self.no_waits {
            wait = Duration::ZERO;
        }
        if let (Some(deadline), Some(timeout)) = (self.deadline, self.policy.timeout()) {
            let wakes_in_time = now
                .get()
                .checked_add(wait)
                .is_some_and(|wake| wake <= deadline);
            if !wakes_in_time {
                return self.stop(error, GiveUpReason::WaitPastDeadline { wait, timeout });
            }
        }
        // Paid last: a retry the other rules refuse costs the budget nothing.
        if let Some(budget) = &self.budget
            && !budget.try_withdraw(now.get(), self.deciding_cut_off)
        {
            let reason = GiveUpReason::BudgetExhausted {
                budget: budget.name(),
            };
            return self.stop(error, reason);
        }
        self.site.emit(Event::Retrying {
            attempt: self.attempt,
            max_retries,
            error,
            delay: wait,
        });
        self.attempt += 1;
        self.waited = self.waited.saturating_add(wait);
        crate::stats::retried(wait);
        Next::Retry(wait)
    }

    /// [`after_failure`](Self::after_failure) for an error the caller can `read` (the rules'
    /// answer), show (`text`: as the rules read it, redacted here before it is shown) and
    /// `keep` (boxed for the give-up error, when its type allows): the wait before the next
    /// attempt, or how the call ends. Nothing is formatted unless an event is recorded or the
    /// call gives up. Before a wait, `on_retry` sees the error, the number of the attempt that
    /// failed and the wait (the attribute's `on_retry` hook), inline. The error is dropped
    /// before the wait.
    pub fn after_error<E>(
        &mut self,
        error: E,
        read: impl FnOnce(&E) -> Classified,
        text: impl Fn(&E) -> String,
        keep: impl FnOnce(E) -> Option<BoxError>,
        on_retry: impl FnOnce(&E, u32, Duration),
        now: impl FnOnce() -> Instant,
    ) -> Result<Duration, Ending<E>> {
        let classified = read(&error);
        let shown = Shown(&|| text(&error));
        match self.after_failure(classified, &shown, now) {
            Next::Retry(wait) => {
                // `after_failure` has counted the next attempt already.
                on_retry(&error, self.attempt - 1, wait);
                Ok(wait)
            }
            Next::Return => Err(Ending::NotRetryable(error)),
            Next::GiveUp(reason) => {
                let message = redacted(text(&error));
                Err(Ending::GaveUp(self.give_up(reason, message, keep(error))))
            }
        }
    }

    /// [`after_error`](Self::after_error) for any [`Failure`]: a value that is not ready and
    /// an attempt cut off at its `attempt_timeout` are retried with the same waits; after
    /// the last attempt the call gives up, with `NeverReady` for a value never ready, and an
    /// [`AttemptTimedOut`] as the last error for an attempt cut off.
    pub fn after<E, T>(
        &mut self,
        failure: Failure<E, T>,
        read: impl FnOnce(&E) -> Classified,
        text: impl Fn(&E) -> String,
        keep: impl FnOnce(E) -> Option<BoxError>,
        on_retry: impl FnOnce(RetryCause<'_, E, T>, u32, Duration),
        now: impl FnOnce() -> Instant,
    ) -> Result<Duration, Ending<E>> {
        let failed = self.attempt;
        match failure {
            Failure::Error(error) => self.after_error(
                error,
                read,
                text,
                keep,
                |error, attempt, wait| on_retry(RetryCause::Error(error), attempt, wait),
                now,
            ),
            Failure::NotReady(value) => {
                let wait = self.after_unready(false, now).map_err(Ending::GaveUp)?;
                on_retry(RetryCause::NotReady(&value), failed, wait);
                Ok(wait)
            }
            Failure::TimedOut => {
                let wait = self.after_unready(true, now).map_err(Ending::GaveUp)?;
                on_retry(RetryCause::TimedOut(self.cut_off()), failed, wait);
                Ok(wait)
            }
        }
    }

    /// [`after`](Self::after) for the last attempt allowed: no wait follows it.
    pub fn after_last<E, T>(
        &mut self,
        failure: Failure<E, T>,
        read: impl FnOnce(&E) -> Classified,
        text: impl Fn(&E) -> String,
        keep: impl FnOnce(E) -> Option<BoxError>,
    ) -> Ending<E> {
        let timed_out = match failure {
            Failure::Error(error) => return self.after_last_error(error, read, text, keep),
            Failure::NotReady(_) => false,
            Failure::TimedOut => true,
        };
        // At the last attempt `after_failure` gives up before it reads a clock.
        match self.after_unready(timed_out, Instant::now) {
            Err(give_up) => Ending::GaveUp(give_up),
            // Not reached (no retry follows the last attempt); stopping is the safe answer.
            Ok(_) => {
                let reason = GiveUpReason::AttemptsExhausted;
                Ending::GaveUp(self.give_up(reason, String::new(), None))
            }
        }
    }

    /// An attempt cut off at its `attempt_timeout`, for the closure API: the wait before the
    /// next attempt, or the give-up error.
    pub(crate) fn after_attempt_timed_out(
        &mut self,
        now: impl FnOnce() -> Instant,
    ) -> Result<Duration, MediaProcessingError> {
        self.after_unready(true, now)
    }

    /// What an attempt cut off at its `attempt_timeout` failed with.
    fn cut_off(&self) -> AttemptTimedOut {
        AttemptTimedOut {
            attempt_timeout: self.policy.attempt_timeout().unwrap_or_default(),
        }
    }

    /// A value not ready (`timed_out` false) or an attempt cut off: retryable, with no error
    /// of the function's type to show, keep or hand to `on_retry`.
    fn after_unready(
        &mut self,
        timed_out: bool,
        now: impl FnOnce() -> Instant,
    ) -> Result<Duration, MediaProcessingError> {
        let cut_off = self.cut_off();
        self.deciding_cut_off = timed_out;
        let (message, rule) = if timed_out {
            (cut_off.to_string(), Rule::KnownType)
        } else {
            ("the value is not ready".to_owned(), Rule::Predicate)
        };
        let classified = Classified {
            verdict: Verdict::Retryable,
            rule,
            retry_after: None,
        };
        let give_up = |attempts: &Self, reason: GiveUpReason| {
            let (reason, last): (_, Option<BoxError>) = match (timed_out, reason) {
                (false, GiveUpReason::AttemptsExhausted) => (GiveUpReason::NeverReady, None),
                (false, reason) => (reason, None),
                (true, reason) => (reason, Some(Box::new(cut_off))),
            };
            attempts.give_up(reason, message.clone(), last)
        };
        let next = self.after_failure(classified, &message, now);
        self.deciding_cut_off = false;
        match next {
            Next::Retry(wait) => Ok(wait),
            Next::GiveUp(reason) => Err(give_up(self, reason)),
            // A retryable failure is never returned as it is; giving up is the safe answer.
            Next::Return => Err(give_up(self, GiveUpReason::AttemptsExhausted)),
        }
    }

    /// [`after_error`](Self::after_error) for the last attempt allowed: no wait follows it.
    pub fn after_last_error<E>(
        &mut self,
        error: E,
        read: impl FnOnce(&E) -> Classified,
        text: impl Fn(&E) -> String,
        keep: impl FnOnce(E) -> Option<BoxError>,
    ) -> Ending<E> {
        // At the last attempt `after_failure` returns or gives up before it reads a clock.
        match self.after_error(error, read, text, keep, |_, _, _| {}, Instant::now) {
            Err(ending) => ending,
            // Not reached (no retry follows the last attempt); stopping is the safe answer.
            Ok(_) => {
                let reason = GiveUpReason::AttemptsExhausted;
                Ending::GaveUp(self.give_up(reason, String::new(), None))
            }
        }
    }

    /// The error to return when a guard refused the attempt about to run (an open circuit, a
    /// permit past the deadline): no attempt is made, and `refusal` is the last error. Logs
    /// the give-up.
    #[cold]
    #[inline(never)]
    pub fn refused(
        &self,
        reason: GiveUpReason,
        refusal: impl std::error::Error + Send + Sync + 'static,
    ) -> MediaProcessingError {
        let message = refusal.to_string();
        self.site.emit(Event::GaveUp {
            attempt: self.made(),
            max_retries: self.max_retries,
            error: &message,
            reason,
        });
        MediaProcessingError::new(self.made(), reason, message, Some(Box::new(refusal)))
            .with_retry_after(self.retry_after)
            .with_waited(self.waited)
    }

    /// The error to return when a retry already decided on may not be made after all (a
    /// fleet's budget refused to pay for it): `message` is the last failure's text. Logs the
    /// give-up.
    #[cold]
    #[inline(never)]
    pub fn gave_up_before_retry(
        &self,
        reason: GiveUpReason,
        message: String,
        not_waited: Duration,
    ) -> MediaProcessingError {
        self.site.emit(Event::GaveUp {
            attempt: self.made(),
            max_retries: self.max_retries,
            error: &message,
            reason,
        });
        MediaProcessingError::new(self.made(), reason, message, None)
            .with_retry_after(self.retry_after)
            .with_waited(self.waited.saturating_sub(not_waited))
    }

    /// The give-up for a loop that found no attempt left to run: not reached (the last
    /// attempt always ends the call), and stopping is the safe answer if it were.
    #[cold]
    pub fn ran_out(&self) -> MediaProcessingError {
        self.give_up(GiveUpReason::AttemptsExhausted, String::new(), None)
    }

    fn stop(&self, error: &dyn Display, reason: GiveUpReason) -> Next {
        self.site.emit(Event::GaveUp {
            attempt: self.attempt,
            max_retries: self.max_retries,
            error,
            reason,
        });
        Next::GiveUp(reason)
    }

    /// The error to return after [`Next::GiveUp`]: `message` is the last error's text and
    /// `last_error` the error itself when its type can be kept. It carries the server's last
    /// hint, so the caller can store "retry after X" with the failed task.
    pub fn give_up(
        &self,
        reason: GiveUpReason,
        message: String,
        last_error: Option<BoxError>,
    ) -> MediaProcessingError {
        MediaProcessingError::new(self.attempt, reason, message, last_error)
            .with_retry_after(self.retry_after)
            .with_waited(self.waited)
    }

    /// The error to return when the `timeout` ran out during an attempt; logs the give-up.
    #[cold]
    #[inline(never)]
    pub fn deadline_passed(&self, _: DeadlinePassed) -> MediaProcessingError {
        // Only reachable with a timeout set; the fallback keeps this total without a panic.
        let timeout = self.policy.timeout().unwrap_or_default();
        let last = DeadlineExceeded { timeout };
        let reason = GiveUpReason::DeadlineExceeded { timeout };
        let message = last.to_string();
        let _ = self.stop(&message, reason);
        // The running attempt had no answer, so no hint of its own.
        MediaProcessingError::new(self.attempt, reason, message, Some(Box::new(last)))
            .with_waited(self.waited)
    }
}

/// A clock read at most once, when first asked: a decision reads it only for a `timeout` or
/// a budget.
struct ReadOnce<F> {
    read: Option<F>,
    at: Option<Instant>,
}

impl<F: FnOnce() -> Instant> ReadOnce<F> {
    fn new(read: F) -> Self {
        Self {
            read: Some(read),
            at: None,
        }
    }

    fn get(&mut self) -> Instant {
        if let Some(at) = self.at {
            return at;
        }
        let at = self.read.take().map_or_else(Instant::now, |read| read());
        self.at = Some(at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Rule, Verdict};

    const SITE: Site = Site::closure("f");

    const RETRYABLE: Classified = Classified {
        verdict: Verdict::Retryable,
        rule: Rule::Keyword,
        retry_after: None,
    };

    fn hinted(secs: u64) -> Classified {
        RETRYABLE.with_retry_after(Some(Duration::from_secs(secs)))
    }

    fn policy(max: u32) -> RetryPolicy {
        RetryPolicy::builder()
            .max_retries(max)
            .base_delay(Duration::from_millis(100))
            .jitter(Duration::ZERO)
            .build()
            .unwrap()
    }

    #[test]
    fn retries_until_the_last_attempt_then_gives_up() {
        let p = policy(3);
        let mut a = Attempts::after_first(&p, SITE, None);
        assert_eq!(a.attempt(), 1);
        let now = || -> Instant { unreachable!("no timeout, no clock") };
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", now),
            Next::Retry(Duration::from_millis(200))
        );
        assert_eq!(a.attempt(), 2);
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", now),
            Next::Retry(Duration::from_millis(400))
        );
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", now),
            Next::GiveUp(GiveUpReason::AttemptsExhausted)
        );
        assert_eq!(a.attempt(), 3);
        let e = a.give_up(GiveUpReason::AttemptsExhausted, "503".into(), None);
        assert_eq!(e.to_string(), "Failed after 3 retries: 503");
    }

    #[test]
    fn a_non_retryable_error_returns_at_once() {
        let p = policy(5);
        let mut a = Attempts::after_first(&p, SITE, started(&p, Instant::now));
        assert_eq!(
            a.after_failure(Classified::NOT_RETRYABLE, &"400", Instant::now),
            Next::Return
        );
        assert_eq!(a.attempt(), 1);
    }

    #[test]
    fn one_attempt_gives_up_on_the_first_retryable_error() {
        let p = policy(1);
        let mut a = Attempts::after_first(&p, SITE, started(&p, Instant::now));
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", Instant::now),
            Next::GiveUp(GiveUpReason::AttemptsExhausted)
        );
    }

    #[test]
    fn no_wait_starts_that_would_end_past_the_deadline() {
        let p = RetryPolicy::builder()
            .base_delay(Duration::from_secs(1))
            .jitter(Duration::ZERO)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut a = Attempts::after_first(&p, SITE, Some(t0));
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(5)));
        // 2 s wait from t0 + 1 s ends at 3 s: in time.
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", || t0 + Duration::from_secs(1)),
            Next::Retry(Duration::from_secs(2))
        );
        // 4 s wait from t0 + 3.5 s would end at 7.5 s: give up now.
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", || t0 + Duration::from_millis(3500)),
            Next::GiveUp(GiveUpReason::WaitPastDeadline {
                wait: Duration::from_secs(4),
                timeout: Duration::from_secs(5)
            })
        );
    }

    #[test]
    fn a_deadline_during_an_attempt_names_the_timeout() {
        let p = RetryPolicy::builder()
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap();
        let a = Attempts::after_first(&p, SITE, started(&p, Instant::now));
        let e = a.deadline_passed(DeadlinePassed);
        assert_eq!(
            e.to_string(),
            "Failed after 1 retries: no answer within the timeout of 1.5s"
        );
        assert!(e.last_error::<DeadlineExceeded>().is_some());
    }

    #[test]
    fn the_wait_is_the_longer_of_backoff_and_hint() {
        let p = policy(5);
        let mut a = Attempts::after_first(&p, SITE, started(&p, Instant::now));
        assert_eq!(
            a.after_failure(hinted(53), &"429", Instant::now),
            Next::Retry(Duration::from_secs(53))
        );
        // A hint shorter than the backoff does not shorten it.
        let mut a = Attempts::after_first(&p, SITE, started(&p, Instant::now));
        assert_eq!(
            a.after_failure(
                RETRYABLE.with_retry_after(Some(Duration::ZERO)),
                &"429",
                Instant::now
            ),
            Next::Retry(Duration::from_millis(200))
        );
    }

    #[test]
    fn a_hint_above_the_cap_gives_up_at_once_and_is_kept() {
        let p = RetryPolicy::builder()
            .max_hint(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut a = Attempts::after_first(&p, SITE, started(&p, Instant::now));
        let next = a.after_failure(hinted(61), &"429", Instant::now);
        let reason = GiveUpReason::HintAboveCap {
            retry_after: Duration::from_secs(61),
            max_hint: Duration::from_secs(60),
        };
        assert_eq!(next, Next::GiveUp(reason));
        let e = a.give_up(reason, "429".into(), None);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(61)));
        assert_eq!(e.attempts(), 1);
    }

    #[test]
    fn a_hint_counts_against_the_timeout() {
        let p = RetryPolicy::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let t0 = Instant::now();
        let mut a = Attempts::after_first(&p, SITE, Some(t0));
        assert_eq!(
            a.after_failure(hinted(40), &"429", || t0),
            Next::GiveUp(GiveUpReason::WaitPastDeadline {
                wait: Duration::from_secs(40),
                timeout: Duration::from_secs(30)
            })
        );
        assert_eq!(
            a.give_up(GiveUpReason::AttemptsExhausted, "429".into(), None)
                .retry_after(),
            Some(Duration::from_secs(40))
        );
    }

    #[test]
    fn huge_attempt_counts_and_waits_do_not_overflow() {
        let p = RetryPolicy::builder()
            .max_retries(u32::MAX)
            .base_delay(Duration::MAX)
            .max_delay(Duration::MAX)
            .timeout(Duration::MAX)
            .build()
            .unwrap();
        let mut a = Attempts::after_first(&p, SITE, started(&p, Instant::now));
        // The deadline is not representable (`Instant + Duration::MAX`), so there is none: the
        // saturated wait is taken, and nothing overflows.
        assert_eq!(a.deadline(), None);
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", Instant::now),
            Next::Retry(Duration::MAX)
        );
    }
}
