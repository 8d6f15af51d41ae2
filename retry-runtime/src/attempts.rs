//! The state machine a retry loop drives: which attempt this is, and what to do after a
//! failure (wait and retry, return the error unchanged, or give up).
//!
//! Both the `#[retry_with_backoff]` expansion and [`Retry`](crate::Retry) call into it, so
//! every decision lives here once. The success path is one comparison: the first attempt
//! reads no clock (unless `timeout` is set), allocates nothing and emits no event.

use std::fmt::Display;
use std::time::{Duration, Instant};

use crate::backoff::delay_before;
use crate::classify::Classified;
use crate::error::{BoxError, DeadlineExceeded, GiveUpReason, MediaProcessingError};
use crate::log;
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

/// The `timeout` ran out while an attempt was still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePassed;

/// Where one retried call stands: the attempt in progress and the deadline, if any.
#[derive(Debug)]
pub struct Attempts<'p> {
    policy: &'p RetryPolicy,
    function: &'static str,
    attempt: u32,
    deadline: Option<Instant>,
}

impl<'p> Attempts<'p> {
    /// Starts a call at attempt 1. `now` is read only when the policy has a `timeout`.
    #[inline]
    pub fn start(
        policy: &'p RetryPolicy,
        function: &'static str,
        now: impl FnOnce() -> Instant,
    ) -> Self {
        let deadline = match policy.timeout() {
            Some(timeout) => now().checked_add(timeout),
            None => None,
        };
        Self {
            policy,
            function,
            attempt: 1,
            deadline,
        }
    }

    /// The number of the attempt in progress, from 1.
    #[inline]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the whole call must be over, if the policy has a `timeout`.
    #[inline]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The attempt in progress succeeded; logs `Success on attempt {n}` after a retry.
    #[inline]
    pub fn succeeded(&self) {
        if self.attempt > 1 {
            log::succeeded_after_retry(self.function, self.attempt, self.policy.max_retries());
        }
    }

    /// Decides what follows a failed attempt and logs the decision. `now` is read only when
    /// the policy has a `timeout`: no wait starts that would end past the deadline.
    pub fn after_failure(
        &mut self,
        classified: Classified,
        error: &dyn Display,
        now: impl FnOnce() -> Instant,
    ) -> Next {
        let max_retries = self.policy.max_retries();
        if !classified.is_retryable() {
            log::not_retryable(
                self.function,
                self.attempt,
                max_retries,
                error,
                classified.rule,
            );
            return Next::Return;
        }
        if self.attempt >= max_retries {
            return self.stop(error, GiveUpReason::AttemptsExhausted);
        }
        let delay = delay_before(self.policy, self.attempt, &mut rand::rng());
        if let (Some(deadline), Some(timeout)) = (self.deadline, self.policy.timeout()) {
            let wakes_in_time = now()
                .checked_add(delay)
                .is_some_and(|wake| wake <= deadline);
            if !wakes_in_time {
                return self.stop(error, GiveUpReason::DeadlineExceeded { timeout });
            }
        }
        log::retrying(self.function, self.attempt, max_retries, error, delay);
        self.attempt += 1;
        Next::Retry(delay)
    }

    fn stop(&self, error: &dyn Display, reason: GiveUpReason) -> Next {
        log::gave_up(
            self.function,
            self.attempt,
            self.policy.max_retries(),
            error,
            reason,
        );
        Next::GiveUp(reason)
    }

    /// The error to return after [`Next::GiveUp`]: `message` is the last error's text and
    /// `last_error` the error itself when its type can be kept.
    pub fn give_up(
        &self,
        reason: GiveUpReason,
        message: String,
        last_error: Option<BoxError>,
    ) -> MediaProcessingError {
        MediaProcessingError::new(self.attempt, reason, message, last_error)
    }

    /// The error to return when the `timeout` ran out during an attempt; logs the give-up.
    #[cold]
    pub fn deadline_passed(&self, _: DeadlinePassed) -> MediaProcessingError {
        // Only reachable with a timeout set; the fallback keeps this total without a panic.
        let timeout = self.policy.timeout().unwrap_or_default();
        let last = DeadlineExceeded { timeout };
        let reason = GiveUpReason::DeadlineExceeded { timeout };
        let _ = self.stop(&last, reason);
        self.give_up(reason, last.to_string(), Some(Box::new(last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Rule, Verdict};

    const RETRYABLE: Classified = Classified {
        verdict: Verdict::Retryable,
        rule: Rule::Text,
    };

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
        let mut a = Attempts::start(&p, "f", || unreachable!("no timeout, no clock"));
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
        let mut a = Attempts::start(&p, "f", Instant::now);
        assert_eq!(
            a.after_failure(Classified::NOT_RETRYABLE, &"400", Instant::now),
            Next::Return
        );
        assert_eq!(a.attempt(), 1);
    }

    #[test]
    fn one_attempt_gives_up_on_the_first_retryable_error() {
        let p = policy(1);
        let mut a = Attempts::start(&p, "f", Instant::now);
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
        let mut a = Attempts::start(&p, "f", || t0);
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(5)));
        // 2 s wait from t0 + 1 s ends at 3 s: in time.
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", || t0 + Duration::from_secs(1)),
            Next::Retry(Duration::from_secs(2))
        );
        // 4 s wait from t0 + 3.5 s would end at 7.5 s: give up now.
        assert_eq!(
            a.after_failure(RETRYABLE, &"503", || t0 + Duration::from_millis(3500)),
            Next::GiveUp(GiveUpReason::DeadlineExceeded {
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
        let a = Attempts::start(&p, "f", Instant::now);
        let e = a.deadline_passed(DeadlinePassed);
        assert_eq!(
            e.to_string(),
            "Failed after 1 retries: no answer within the timeout of 1.5s"
        );
        assert!(e.last_error::<DeadlineExceeded>().is_some());
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
        let mut a = Attempts::start(&p, "f", Instant::now);
        // The deadline saturates to "none representable"; the wait cannot end in time.
        let next = a.after_failure(RETRYABLE, &"503", Instant::now);
        assert!(matches!(next, Next::Retry(_) | Next::GiveUp(_)));
    }
}
