//! The state machine a retry loop drives: which attempt this is, and what to do after a
//! failure (wait and retry, return the error unchanged, or give up).
//!
//! Both the `#[retry_with_backoff]` expansion and the closure API ([`retry`](crate::retry))
//! call into it, so
//! every decision lives here once. The success path is one comparison: the first attempt
//! reads no clock (unless `timeout` is set), allocates nothing and emits no event.

use std::time::{Duration, Instant};

use crate::backoff::next_delay;
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
#[derive(Debug, Clone)]
pub struct Attempts {
    /// A copy: the attribute's policy is a constant, the closure API's may be a local.
    policy: RetryPolicy,
    function: &'static str,
    attempt: u32,
    deadline: Option<Instant>,
    /// The server's hint in the last failure, kept for the give-up error.
    retry_after: Option<Duration>,
}

impl Attempts {
    /// Starts a call at attempt 1. `now` is read only when the policy has a `timeout`.
    #[inline]
    pub fn start(
        policy: &RetryPolicy,
        function: &'static str,
        now: impl FnOnce() -> Instant,
    ) -> Self {
        let deadline = match policy.timeout() {
            Some(timeout) => now().checked_add(timeout),
            None => None,
        };
        Self {
            policy: *policy,
            function,
            attempt: 1,
            deadline,
            retry_after: None,
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

    /// Decides what follows a failed attempt and logs the decision. `error` is the error's
    /// text with its causes, already redacted.
    ///
    /// The wait is the backoff delay, or the server's hint when that is longer; a hint above
    /// `max_hint` gives up at once. `now` is read only when the policy has a
    /// `timeout`: no wait starts that would end past the deadline.
    pub fn after_failure(
        &mut self,
        classified: Classified,
        error: &str,
        now: impl FnOnce() -> Instant,
    ) -> Next {
        let max_retries = self.policy.max_retries();
        self.retry_after = classified.retry_after;
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
        let mut wait = next_delay(&self.policy, self.attempt);
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
        if let (Some(deadline), Some(timeout)) = (self.deadline, self.policy.timeout()) {
            let wakes_in_time = now().checked_add(wait).is_some_and(|wake| wake <= deadline);
            if !wakes_in_time {
                return self.stop(error, GiveUpReason::WaitPastDeadline { wait, timeout });
            }
        }
        log::retrying(self.function, self.attempt, max_retries, error, wait);
        self.attempt += 1;
        Next::Retry(wait)
    }

    fn stop(&self, error: &str, reason: GiveUpReason) -> Next {
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
    }

    /// The error to return when the `timeout` ran out during an attempt; logs the give-up.
    #[cold]
    pub fn deadline_passed(&self, _: DeadlinePassed) -> MediaProcessingError {
        // Only reachable with a timeout set; the fallback keeps this total without a panic.
        let timeout = self.policy.timeout().unwrap_or_default();
        let last = DeadlineExceeded { timeout };
        let reason = GiveUpReason::DeadlineExceeded { timeout };
        let message = last.to_string();
        let _ = self.stop(&message, reason);
        // The running attempt had no answer, so no hint of its own.
        MediaProcessingError::new(self.attempt, reason, message, Some(Box::new(last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Rule, Verdict};

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
        let mut a = Attempts::start(&p, "f", || unreachable!("no timeout, no clock"));
        assert_eq!(a.attempt(), 1);
        let now = || -> Instant { unreachable!("no timeout, no clock") };
        assert_eq!(
            a.after_failure(RETRYABLE, "503", now),
            Next::Retry(Duration::from_millis(200))
        );
        assert_eq!(a.attempt(), 2);
        assert_eq!(
            a.after_failure(RETRYABLE, "503", now),
            Next::Retry(Duration::from_millis(400))
        );
        assert_eq!(
            a.after_failure(RETRYABLE, "503", now),
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
            a.after_failure(Classified::NOT_RETRYABLE, "400", Instant::now),
            Next::Return
        );
        assert_eq!(a.attempt(), 1);
    }

    #[test]
    fn one_attempt_gives_up_on_the_first_retryable_error() {
        let p = policy(1);
        let mut a = Attempts::start(&p, "f", Instant::now);
        assert_eq!(
            a.after_failure(RETRYABLE, "503", Instant::now),
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
            a.after_failure(RETRYABLE, "503", || t0 + Duration::from_secs(1)),
            Next::Retry(Duration::from_secs(2))
        );
        // 4 s wait from t0 + 3.5 s would end at 7.5 s: give up now.
        assert_eq!(
            a.after_failure(RETRYABLE, "503", || t0 + Duration::from_millis(3500)),
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
        let a = Attempts::start(&p, "f", Instant::now);
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
        let mut a = Attempts::start(&p, "f", Instant::now);
        assert_eq!(
            a.after_failure(hinted(53), "429", Instant::now),
            Next::Retry(Duration::from_secs(53))
        );
        // A hint shorter than the backoff does not shorten it.
        let mut a = Attempts::start(&p, "f", Instant::now);
        assert_eq!(
            a.after_failure(
                RETRYABLE.with_retry_after(Some(Duration::ZERO)),
                "429",
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
        let mut a = Attempts::start(&p, "f", Instant::now);
        let next = a.after_failure(hinted(61), "429", Instant::now);
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
        let mut a = Attempts::start(&p, "f", || t0);
        assert_eq!(
            a.after_failure(hinted(40), "429", || t0),
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
        let mut a = Attempts::start(&p, "f", Instant::now);
        // The deadline is not representable (`Instant + Duration::MAX`), so there is none: the
        // saturated wait is taken, and nothing overflows.
        assert_eq!(a.deadline(), None);
        assert_eq!(
            a.after_failure(RETRYABLE, "503", Instant::now),
            Next::Retry(Duration::MAX)
        );
    }
}
