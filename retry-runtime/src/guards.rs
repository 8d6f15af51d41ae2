//! The guards of one retried call, composed in one order (the README's "Guards together"):
//! the budget, then the deadline, then the retry loop; around each attempt the breaker, the
//! limiter, the attempt timeout and the body.
//!
//! A call with guards runs every attempt, the first too, through a [`GuardedCall`]: the
//! steps of its loop, which [`guarded_blocking`] drives for a blocking call, and the
//! attribute's expansion (or [`guarded_async`], for the closure API) for an async one. Its
//! success path is the plain call plus each guard's own check. A call without guards never
//! comes here.

use std::time::{Duration, Instant};

use std::cell::Cell;

use crate::attempts::{
    Attempts, DeadlinePassed, Ending, Failure, RetryCause, attempt_deadline, deadline,
    ends_the_call,
};
use crate::breaker::BreakerOpen;
use crate::breaker::{CircuitBreaker, Outcome, Pass};
use crate::budget::RetryBudget;
use crate::classify::Classified;
use crate::error::{BoxError, GiveUpReason, MediaProcessingError};
use crate::keyed::{GuardSource, Shared};
use crate::limiter::RateLimited;
use crate::limiter::RateLimiter;
use crate::log::Site;
use crate::policy::RetryPolicy;
use crate::timer::{AsyncTimer, until_deadline};

/// The guards a retried call runs under: a circuit breaker, a rate limiter and a retry budget,
/// each optional and each shared with every call that names the same one.
///
/// ```
/// use std::time::Duration;
/// use resilience::breaker::CircuitBreaker;
/// use resilience::guards::Guards;
/// use resilience::limiter::RateLimiter;
///
/// static GEMINI: CircuitBreaker = CircuitBreaker::new("gemini");
/// static GEMINI_RPM: RateLimiter = RateLimiter::per_minute("gemini", 60);
///
/// let guards = Guards::new().breaker(&GEMINI).limiter(&GEMINI_RPM);
/// assert!(guards.has_breaker() && !guards.has_budget());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Guards {
    breaker: Option<Shared<CircuitBreaker>>,
    limiter: Option<Shared<RateLimiter>>,
    budget: Option<Shared<RetryBudget>>,
}

impl Guards {
    /// No guards.
    #[inline]
    pub const fn new() -> Self {
        Self {
            breaker: None,
            limiter: None,
            budget: None,
        }
    }

    /// Each attempt asks `breaker` first; an open circuit ends the call at once.
    #[must_use]
    #[inline(always)]
    pub fn breaker(mut self, breaker: impl GuardSource<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker.shared());
        self
    }

    /// Each attempt waits for a permit of `limiter`; a server's hint pauses it for every call.
    #[must_use]
    #[inline(always)]
    pub fn limiter(mut self, limiter: impl GuardSource<RateLimiter>) -> Self {
        self.limiter = Some(limiter.shared());
        self
    }

    /// Each retry is paid from `budget`; a spent budget ends the call at once.
    #[must_use]
    #[inline(always)]
    pub fn budget(mut self, budget: impl GuardSource<RetryBudget>) -> Self {
        self.budget = Some(budget.shared());
        self
    }

    /// Whether there is a breaker.
    pub fn has_breaker(&self) -> bool {
        self.breaker.is_some()
    }

    /// Whether there is a limiter.
    pub fn has_limiter(&self) -> bool {
        self.limiter.is_some()
    }

    /// Whether there is a budget.
    pub fn has_budget(&self) -> bool {
        self.budget.is_some()
    }

    /// Lets the attempt about to run through the breaker, then the limiter (its fleet's
    /// state read on this thread): the permit and the wait for it, or the guard that
    /// refused. The clock is read once, and only if a guard needs it.
    #[inline]
    fn admit(
        &self,
        now: &Clock<impl Fn() -> Instant>,
        deadline: Option<Instant>,
    ) -> Result<Admitted, Refusal> {
        let permit = self.pass_breaker(now)?;
        let wait = match &self.limiter {
            Some(limiter) => limiter
                .reserve_blocking(now.now(), deadline)
                .map_err(|refused| self.refused_after(permit, refused))?,
            None => Duration::ZERO,
        };
        Ok(Admitted::new(permit, wait))
    }

    /// [`admit`](Self::admit) for an async call: a fleet's answer is awaited.
    async fn admit_async(
        &self,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Result<Admitted, Refusal> {
        let permit = match &self.breaker {
            Some(breaker) => Some(breaker.pass_async(|| now).await.map_err(Refusal::Open)?),
            None => None,
        };
        let wait = match &self.limiter {
            Some(limiter) => limiter
                .reserve_async(now, deadline)
                .await
                .map_err(|refused| self.refused_after(permit, refused))?,
            None => Duration::ZERO,
        };
        Ok(Admitted::new(permit, wait))
    }

    /// The limiter refused an attempt the breaker had let through: the breaker's pass goes
    /// back unused, so a half-open probe's slot is not lost to a call that never ran.
    #[cold]
    fn refused_after(&self, permit: Option<Pass>, refused: RateLimited) -> Refusal {
        if let (Some(breaker), Some(pass)) = (&self.breaker, permit) {
            breaker.release_pass(pass);
        }
        Refusal::Limited(refused)
    }

    /// The breaker's pass, if there is a breaker and it lets the attempt through.
    #[inline]
    fn pass_breaker(&self, now: &Clock<impl Fn() -> Instant>) -> Result<Option<Pass>, Refusal> {
        match &self.breaker {
            Some(breaker) => breaker
                .pass_blocking(|| now.now())
                .map(Some)
                .map_err(Refusal::Open),
            None => Ok(None),
        }
    }

    /// Whether admitting the next attempt may need a fleet's answer, to be awaited: a shared
    /// limiter, or a shared breaker (whose view may call for a probe at any moment, so the
    /// blocking path, which would ask on the executor's thread, is never taken for it).
    fn asks_a_fleet(&self) -> bool {
        self.limiter
            .as_ref()
            .is_some_and(|limiter| limiter.is_shared())
            || self
                .breaker
                .as_ref()
                .is_some_and(|breaker| breaker.is_shared())
    }

    /// An attempt succeeded (`retried`: not the first); the breaker reads the clock only if
    /// it needs the time.
    #[inline]
    fn succeeded(&self, admitted: &Admitted, retried: bool, now: impl FnOnce() -> Instant) {
        if let (Some(breaker), Some(pass)) = (&self.breaker, admitted.permit) {
            breaker.record_pass(pass, Outcome::Success, now);
        }
        if let Some(budget) = &self.budget {
            budget.succeeded_everywhere(retried);
        }
    }

    /// An attempt failed: what the breaker counts it as, and the server's hint, which pauses
    /// the limiter for every call that shares it.
    fn failed(
        &self,
        admitted: &Admitted,
        seen: Seen,
        max_hint: Duration,
        now: impl Fn() -> Instant,
    ) {
        if let (Some(breaker), Some(pass)) = (&self.breaker, admitted.permit) {
            breaker.record_pass(pass, seen.outcome, &now);
        }
        // Only a retryable failure's hint, and only one the call itself honours (at most
        // `max_hint`): a per-day quota (not retried) says nothing about the next minute's
        // requests, and a server asking for an hour must not stop every caller for an hour.
        if let (Some(limiter), Some(hint), Outcome::Failure) =
            (&self.limiter, seen.retry_after, seen.outcome)
            && hint <= max_hint
        {
            limiter.pause_for(now(), hint);
        }
    }
}

/// The time of one step, read from the call's clock the first time a guard asks for it.
struct Clock<F> {
    read: F,
    at: Cell<Option<Instant>>,
}

impl<F: Fn() -> Instant> Clock<F> {
    #[inline]
    fn new(read: F, at: Option<Instant>) -> Self {
        Clock {
            read,
            at: Cell::new(at),
        }
    }

    #[inline]
    fn now(&self) -> Instant {
        if let Some(at) = self.at.get() {
            return at;
        }
        let at = (self.read)();
        self.at.set(Some(at));
        at
    }
}

/// The guard that refused an attempt.
enum Refusal {
    Open(BreakerOpen),
    Limited(RateLimited),
}

impl Refusal {
    /// The give-up of the call it refused, which keeps when to come back as its "retry
    /// after": the next probe, or the permit. The breaker's permit of a call the limiter
    /// refuses has been handed back unused already (`Guards::refused_after`).
    #[cold]
    fn give_up(self, attempts: &Attempts) -> MediaProcessingError {
        match self {
            Refusal::Open(open) => {
                let reason = GiveUpReason::CircuitOpen {
                    breaker: open.breaker,
                    retry_in: open.retry_in,
                };
                attempts
                    .refused(reason, open)
                    .with_retry_after(open.retry_in)
            }
            Refusal::Limited(limited) => {
                let reason = GiveUpReason::RateLimited {
                    limiter: limited.limiter,
                    wait: limited.wait,
                };
                attempts
                    .refused(reason, limited)
                    .with_retry_after(Some(limited.wait))
            }
        }
    }
}

/// An attempt let through: the breaker's permit, and the wait for the limiter's.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    permit: Option<Pass>,
    wait: Duration,
}

impl Admitted {
    const NONE: Admitted = Admitted {
        permit: None,
        wait: Duration::ZERO,
    };

    #[inline]
    fn new(permit: Option<Pass>, wait: Duration) -> Self {
        // Under the testing mode every wait is zero, the limiter's too (its permit is
        // taken). Read only when there is a wait.
        let wait = if !wait.is_zero() && crate::testing::current().is_some() {
            Duration::ZERO
        } else {
            wait
        };
        // A slow call is measured from when the attempt starts, after the permit's wait: the
        // limiter's queue is not the service's slowness.
        let permit = match permit {
            Some(Pass::Local(local)) if !wait.is_zero() => Some(Pass::Local(local.delayed(wait))),
            permit => permit,
        };
        Admitted { permit, wait }
    }
}

/// What the guards learn of a failed attempt.
#[derive(Clone, Copy)]
struct Seen {
    outcome: Outcome,
    retry_after: Option<Duration>,
}

impl Seen {
    /// A value not ready: the service answered.
    const NOT_READY: Seen = Seen {
        outcome: Outcome::Success,
        retry_after: None,
    };
    /// Cut off at the `attempt_timeout`: the service's failure.
    const CUT_OFF: Seen = Seen {
        outcome: Outcome::Failure,
        retry_after: None,
    };

    fn of<E, T>(failure: &Failure<E, T>) -> Option<Seen> {
        match failure {
            Failure::Error(_) => None,
            Failure::NotReady(_) => Some(Seen::NOT_READY),
            Failure::TimedOut => Some(Seen::CUT_OFF),
        }
    }

    /// A retryable error is the service's failure; one that is not (a 400) is the caller's,
    /// which the breaker does not count against the service.
    fn classified(classified: &Classified) -> Seen {
        Seen {
            outcome: if classified.is_retryable() {
                Outcome::Failure
            } else {
                Outcome::Ignored
            },
            retry_after: classified.retry_after,
        }
    }
}

/// `read`, remembering what it answered, so the guards learn the rules' verdict without
/// asking them (and a `retry_if` predicate) twice.
fn reading<'s, E>(
    read: &'s impl Fn(&E) -> Classified,
    seen: &'s mut Option<Seen>,
) -> impl FnOnce(&E) -> Classified + 's {
    move |error| {
        let classified = read(error);
        *seen = Some(Seen::classified(&classified));
        classified
    }
}

/// The arguments of the attempt about to run: copies, or for the last the caller's values
/// themselves. `None` only after the last attempt, which no loop reaches.
#[inline]
pub fn arguments<A>(args: &mut Option<A>, last: bool, fresh: impl Fn(&A) -> A) -> Option<A> {
    if last {
        args.take()
    } else {
        args.as_ref().map(fresh)
    }
}

/// One call under its guards: the permit of the attempt running, and after a failure the
/// retry state. Each method is one step of the loop; the loop itself only awaits or sleeps
/// between them. Nothing is made for the retries until an attempt fails, and the clock is
/// read only for a guard that needs the time: the success path is the guards' own checks.
#[derive(Debug)]
pub struct GuardedCall<'p> {
    policy: &'p RetryPolicy,
    site: Site,
    started: Option<Instant>,
    guards: Guards,
    /// The retry state, made at the first failure (or refusal); boxed, so that the call's
    /// state stays small to move on the success path.
    attempts: Option<Box<Attempts>>,
    admitted: Admitted,
    /// The time the budget read as the call started, for the first attempt's guards.
    first_now: Option<Instant>,
    /// A retry decided on and not yet paid from a fleet's budget.
    owed: Option<Owed>,
}

/// A retry to pay from a fleet's budget: whether it follows a timeout, and the failure's text
/// for the give-up if the budget is spent.
#[derive(Debug)]
struct Owed {
    timed_out: bool,
    message: String,
    /// The wait the decision counted, which is not made.
    wait: Duration,
}

impl<'p> GuardedCall<'p> {
    /// A call that starts now (the budget counts it).
    #[inline]
    pub fn start(
        policy: &'p RetryPolicy,
        site: Site,
        started: Option<Instant>,
        guards: Guards,
        now: impl FnOnce() -> Instant,
    ) -> Self {
        let mut first_now = started;
        if let Some(budget) = &guards.budget {
            budget.deposit_everywhere(|| *first_now.get_or_insert_with(now));
        }
        GuardedCall {
            policy,
            site,
            started,
            guards,
            attempts: None,
            admitted: Admitted::NONE,
            first_now,
            owed: None,
        }
    }

    /// Whether the call's budget is a fleet's, paid after each decision to retry.
    fn pays_a_fleet(&self) -> bool {
        self.guards
            .budget
            .as_ref()
            .is_some_and(|budget| budget.is_shared())
    }

    /// Pays the retry just decided on from a fleet's budget, on this thread (nothing to do
    /// without one): the call gives up when it is spent. Call it before the wait.
    pub fn pay(&mut self, now: impl FnOnce() -> Instant) -> Result<(), MediaProcessingError> {
        let (Some(owed), Some(budget)) = (self.owed.take(), self.guards.budget.clone()) else {
            return Ok(());
        };
        if budget.pay_blocking(now, owed.timed_out) {
            Ok(())
        } else {
            Err(self.spent(budget.name(), owed))
        }
    }

    /// [`pay`](Self::pay) for an async call: the fleet's answer is awaited.
    pub async fn pay_async(
        &mut self,
        now: impl FnOnce() -> Instant,
    ) -> Result<(), MediaProcessingError> {
        let (Some(owed), Some(budget)) = (self.owed.take(), self.guards.budget.clone()) else {
            return Ok(());
        };
        if budget.pay_async(now, owed.timed_out).await {
            Ok(())
        } else {
            Err(self.spent(budget.name(), owed))
        }
    }

    /// The give-up of a retry a fleet's budget refused.
    #[cold]
    fn spent(&mut self, budget: &'static str, owed: Owed) -> MediaProcessingError {
        let reason = GiveUpReason::BudgetExhausted { budget };
        self.attempts()
            .gave_up_before_retry(reason, owed.message, owed.wait)
    }

    /// The retry state, made on first use.
    #[cold]
    fn attempts(&mut self) -> &mut Attempts {
        // A fleet's budget is paid after the decision ([`pay`](Self::pay)), where an async
        // call can await it; this process's own, inside it.
        let budget = self
            .guards
            .budget
            .as_ref()
            .filter(|budget| !budget.is_shared());
        let (policy, site, started) = (self.policy, self.site, self.started);
        self.attempts.get_or_insert_with(|| {
            Box::new(Attempts::after_first(policy, site, started).with_budget(budget.cloned()))
        })
    }

    /// The next attempt passes the breaker and the limiter: the wait for its permit, or the
    /// give-up when one refuses.
    #[inline]
    pub fn admit(&mut self, now: impl Fn() -> Instant) -> Result<Duration, MediaProcessingError> {
        let clock = Clock::new(now, self.first_now.take());
        match self.guards.admit(&clock, self.deadline()) {
            Ok(admitted) => {
                self.admitted = admitted;
                Ok(admitted.wait)
            }
            Err(refusal) => Err(refusal.give_up(self.attempts())),
        }
    }

    /// [`admit`](Self::admit) for an async call: a fleet's answer is awaited.
    pub async fn admit_async(
        &mut self,
        now: impl Fn() -> Instant,
    ) -> Result<Duration, MediaProcessingError> {
        if !self.guards.asks_a_fleet() {
            return self.admit(now);
        }
        let now = self.first_now.take().unwrap_or_else(now);
        match self.guards.admit_async(now, self.deadline()).await {
            Ok(admitted) => {
                self.admitted = admitted;
                Ok(admitted.wait)
            }
            Err(refusal) => Err(refusal.give_up(self.attempts())),
        }
    }

    /// Whether the attempt about to run is the last one allowed.
    #[inline]
    pub fn is_last(&self) -> bool {
        match &self.attempts {
            Some(attempts) => attempts.is_last(),
            None => self.policy.max_retries() <= 1,
        }
    }

    /// When the whole call must be over, if the policy has a `timeout`.
    #[inline]
    pub fn deadline(&self) -> Option<Instant> {
        match &self.attempts {
            Some(attempts) => attempts.deadline(),
            None => deadline(self.policy, self.started),
        }
    }

    /// The attempt succeeded: the breaker and the budget learn it; after retries, it is logged.
    #[inline]
    pub fn succeeded(&mut self, now: impl FnOnce() -> Instant) {
        let retried = self.attempts.is_some();
        self.guards.succeeded(&self.admitted, retried, now);
        if let Some(attempts) = &self.attempts {
            attempts.succeeded();
        }
    }

    /// The attempt failed and another may follow: the wait before it, or how the call ends
    /// (as [`Attempts::after`]). The breaker learns the rules' verdict, the limiter the
    /// server's hint.
    pub fn after<E, T>(
        &mut self,
        failure: Failure<E, T>,
        read: impl Fn(&E) -> Classified,
        text: impl Fn(&E) -> String,
        keep: impl FnOnce(E) -> Option<BoxError>,
        on_retry: impl FnOnce(RetryCause<'_, E, T>, u32, Duration),
        now: impl Fn() -> Instant,
    ) -> Result<Duration, Ending<E>> {
        let mut seen = Seen::of(&failure);
        // For a fleet's budget, paid after the decision: what the give-up would say.
        let owed = self.pays_a_fleet().then(|| Owed {
            wait: Duration::ZERO,
            timed_out: matches!(failure, Failure::TimedOut),
            message: match &failure {
                Failure::Error(error) => crate::classify::chain::redacted(text(error)),
                Failure::NotReady(_) => "the value is not ready".to_owned(),
                Failure::TimedOut => crate::error::AttemptTimedOut {
                    attempt_timeout: self.policy.attempt_timeout().unwrap_or_default(),
                }
                .to_string(),
            },
        });
        let decision = self.attempts().after(
            failure,
            reading(&read, &mut seen),
            text,
            keep,
            on_retry,
            &now,
        );
        if let Some(seen) = seen {
            self.guards
                .failed(&self.admitted, seen, self.policy.max_hint(), now);
        }
        if let Ok(wait) = decision {
            self.owed = owed.map(|owed| Owed { wait, ..owed });
        }
        decision
    }

    /// The last attempt failed: how the call ends (as [`Attempts::after_last`]).
    pub fn after_last<E, T>(
        &mut self,
        failure: Failure<E, T>,
        read: impl Fn(&E) -> Classified,
        text: impl Fn(&E) -> String,
        keep: impl FnOnce(E) -> Option<BoxError>,
        now: impl Fn() -> Instant,
    ) -> Ending<E> {
        let mut seen = Seen::of(&failure);
        let ending = self
            .attempts()
            .after_last(failure, reading(&read, &mut seen), text, keep);
        if let Some(seen) = seen {
            self.guards
                .failed(&self.admitted, seen, self.policy.max_hint(), now);
        }
        ending
    }

    /// The call's `timeout` ran out during the attempt: the breaker counts a failure, and the
    /// call gives up.
    pub fn deadline_passed(
        &mut self,
        passed: DeadlinePassed,
        now: impl Fn() -> Instant,
    ) -> MediaProcessingError {
        self.guards
            .failed(&self.admitted, Seen::CUT_OFF, self.policy.max_hint(), now);
        self.attempts().deadline_passed(passed)
    }

    /// The give-up of a loop with no attempt left (not reached).
    pub fn ran_out(&mut self) -> MediaProcessingError {
        self.attempts().ran_out()
    }
}

/// An attempt's outcome as a [`Failure`], or its value.
#[inline]
pub fn failure_of<T, E>(
    outcome: Result<T, E>,
    not_ready: impl Fn(&T) -> bool,
) -> Result<T, Failure<E, T>> {
    match outcome {
        Ok(value) if not_ready(&value) => Err(Failure::NotReady(value)),
        Ok(value) => Ok(value),
        Err(error) => Err(Failure::Error(error)),
    }
}

/// A blocking call with guards, every attempt included: the budget counts the call, each
/// attempt passes the breaker and waits for the limiter's permit on the current thread's
/// sleeper, and the rules decide on each failure as in
/// [`retry_blocking`](crate::attempts::retry_blocking), paying each retry from the budget.
/// The last attempt takes `args`; the others `fresh` copies.
#[allow(clippy::too_many_arguments)] // each is one thing the loop needs, as in `retry_blocking`
pub fn guarded_blocking<A, T, E>(
    policy: &RetryPolicy,
    site: Site,
    started: Option<Instant>,
    guards: Guards,
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

    let mut call = GuardedCall::start(policy, site, started, guards, now_current);
    let mut args = Some(args);
    loop {
        let wait = call.admit(now_current).map_err(Ending::GaveUp)?;
        if !wait.is_zero() {
            sleep_current(wait);
        }
        let last = call.is_last();
        let Some(given) = arguments(&mut args, last, &fresh) else {
            return Err(Ending::GaveUp(call.ran_out()));
        };
        let failure = match failure_of(attempt(given), &not_ready) {
            Ok(value) => {
                call.succeeded(now_current);
                return Ok(value);
            }
            Err(failure) => failure,
        };
        if last {
            return Err(call.after_last(failure, &read, &text, &keep, now_current));
        }
        let wait = call.after(failure, &read, &text, &keep, &mut on_retry, now_current)?;
        call.pay(now_current).map_err(Ending::GaveUp)?;
        sleep_current(wait);
    }
}

/// [`guarded_blocking`] for the closure API's async form, on the timer `Tm`: the waits do not
/// block the executor, and each attempt runs under the call's `timeout` and its own
/// `attempt_timeout`. (The attribute's expansion drives a [`GuardedCall`] itself, in the
/// function's body, where the attempt's borrows are the caller's own.)
#[allow(clippy::too_many_arguments)] // as `guarded_blocking`
pub async fn guarded_async<Tm, T, E, Fut>(
    policy: &RetryPolicy,
    site: Site,
    started: Option<Instant>,
    guards: Guards,
    mut attempt: impl FnMut() -> Fut,
    read: impl Fn(&E) -> Classified,
    text: impl Fn(&E) -> String,
    keep: impl Fn(E) -> Option<BoxError>,
    mut on_retry: impl FnMut(RetryCause<'_, E, T>, u32, Duration),
) -> Result<T, Ending<E>>
where
    Tm: AsyncTimer,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut call = GuardedCall::start(policy, site, started, guards, Tm::now);
    loop {
        let wait = call.admit_async(Tm::now).await.map_err(Ending::GaveUp)?;
        if !wait.is_zero() {
            Tm::sleep(wait).await;
        }
        let last = call.is_last();
        let deadline = call.deadline();
        let bounded = attempt_deadline(policy, deadline, Tm::now);
        let failure = match until_deadline::<Tm, _>(bounded, attempt()).await {
            Ok(Ok(value)) => {
                call.succeeded(Tm::now);
                return Ok(value);
            }
            Ok(Err(error)) => Failure::Error(error),
            Err(passed) if ends_the_call(policy, deadline, Tm::now) => {
                return Err(Ending::GaveUp(call.deadline_passed(passed, Tm::now)));
            }
            Err(_) => Failure::TimedOut,
        };
        if last {
            return Err(call.after_last(failure, &read, &text, &keep, Tm::now));
        }
        let wait = call.after(failure, &read, &text, &keep, &mut on_retry, Tm::now)?;
        call.pay_async(Tm::now).await.map_err(Ending::GaveUp)?;
        Tm::sleep(wait).await;
    }
}
