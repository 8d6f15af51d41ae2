//! Retrying a closure, for code that does not use the attribute (or cannot: a call built at
//! run time, a policy read from configuration). The README's "The closure API".
//!
//! One expression, as in backon: `(|| fetch(url)).retry(&POLICY).await` for a closure that
//! returns a future, `(|| read(path)).retry(&POLICY).call()` for a blocking one. The rules,
//! waits, log events and give-up error are the attribute's. The result says which way the
//! call failed, [`RetryError`], so the closure's error type needs no
//! `From<MediaProcessingError>`.

use std::error::Error;
use std::fmt::{self, Display};
use std::time::{Duration, Instant};

use std::marker::PhantomData;

use crate::attempts::{Attempts, Ending, Next, RetryCause, Shown, started};
use crate::classify::chain::{redacted, text_of};
use crate::classify::order::{Seen, decide_lazily};
use crate::classify::{Classified, Classify, Rule};
use crate::error::{BoxError, MediaProcessingError};
use crate::guards::{Guards, guarded_blocking};
use crate::log::Site;
use crate::policy::RetryPolicy;
use crate::requirements::PredicateAnswer as IntoVerdict;
use crate::sleep::{now_current, sleep_current};

/// How a retried closure failed: the error came back at once, or the attempts were spent.
///
/// The closure's own error is kept as it is in both cases: as [`NotRetryable`](Self::NotRetryable),
/// or inside the give-up error ([`MediaProcessingError::last_error`]). An error type that can
/// hold the give-up error gets it back with [`into_error`](Self::into_error), so `?` works
/// as with the attribute: `.await.map_err(RetryError::into_error)?`.
#[derive(Debug)]
pub enum RetryError<E> {
    /// No rule called the error worth another attempt: returned as the closure returned it.
    NotRetryable(E),
    /// Every attempt failed, or the `timeout` ran out: the give-up error, with the last
    /// error inside.
    GaveUp(MediaProcessingError),
}

impl<E> RetryError<E> {
    /// The error as the function's own type: the closure's error, or the give-up error
    /// converted with `From` (an `anyhow::Error`, `io::Error`, `Box<dyn Error + Send + Sync>`
    /// or a `thiserror` enum with a `#[from] MediaProcessingError` variant).
    pub fn into_error(self) -> E
    where
        E: From<MediaProcessingError>,
    {
        match self {
            RetryError::NotRetryable(error) => error,
            RetryError::GaveUp(give_up) => E::from(give_up),
        }
    }

    /// The give-up error, when the attempts were spent.
    pub fn give_up(&self) -> Option<&MediaProcessingError> {
        match self {
            RetryError::GaveUp(give_up) => Some(give_up),
            RetryError::NotRetryable(_) => None,
        }
    }
}

impl<E: Display> Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryError::NotRetryable(error) => error.fmt(f),
            RetryError::GaveUp(give_up) => give_up.fmt(f),
        }
    }
}

/// Its source is the error it holds, so that what reads the chain (an outer retry, anyhow's
/// `downcast_ref`) finds the closure's error or the give-up error itself, typed.
impl<E: Error + 'static> Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RetryError::NotRetryable(error) => Some(error),
            RetryError::GaveUp(give_up) => Some(give_up),
        }
    }
}

/// Who decides before the built-in rules: nobody, or a `.when` predicate.
pub trait Decide<E: ?Sized> {
    /// The answer for `error`; `builtin` runs the built-in rules.
    fn decide(&self, error: &E, builtin: impl FnOnce() -> Classified) -> Classified;
}

/// No predicate: the built-in rules decide.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinRules;

impl<E: ?Sized> Decide<E> for BuiltinRules {
    fn decide(&self, _: &E, builtin: impl FnOnce() -> Classified) -> Classified {
        builtin()
    }
}

/// A `.when` predicate, asked first: its `bool` or [`Verdict`](crate::Verdict) decides, and
/// its `Verdict::Unknown` leaves the decision to the built-in rules, as `retry_if` does.
#[derive(Debug, Clone, Copy)]
pub struct When<P>(pub(crate) P);

impl<E: ?Sized, V: IntoVerdict, P: Fn(&E) -> V> Decide<E> for When<P> {
    fn decide(&self, error: &E, builtin: impl FnOnce() -> Classified) -> Classified {
        let builtin = builtin();
        Classified::by(Rule::Predicate, (self.0)(error).into_verdict())
            .map_or(builtin, |own| own.with_retry_after(builtin.retry_after))
    }
}

/// Called before each wait with the error and the wait: count, persist or alert.
pub trait Notify<E: ?Sized> {
    /// One retry is about to wait `wait` after `error`.
    fn notify(&mut self, error: &E, wait: Duration);
}

/// No hook.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl<E: ?Sized> Notify<E> for Silent {
    fn notify(&mut self, _: &E, _: Duration) {}
}

/// A `.notify` hook.
#[derive(Debug, Clone, Copy)]
pub struct OnRetry<N>(N);

impl<E: ?Sized, N: FnMut(&E, Duration)> Notify<E> for OnRetry<N> {
    fn notify(&mut self, error: &E, wait: Duration) {
        (self.0)(error, wait);
    }
}

/// The settings a retried closure carries: the policy (a copy, so the retried call does not
/// borrow it), the name its events show, the predicate and the hook. Shared by
/// [`BlockingRetry`] and [`Retrying`].
#[derive(Debug, Clone, Copy)]
struct Settings<W, N> {
    policy: RetryPolicy,
    name: &'static str,
    when: W,
    notify: N,
}

impl Settings<BuiltinRules, Silent> {
    fn new(policy: &RetryPolicy) -> Self {
        Self {
            policy: *policy,
            name: "closure",
            when: BuiltinRules,
            notify: Silent,
        }
    }
}

impl<W, N> Settings<W, N> {
    fn when<P>(self, predicate: P) -> Settings<When<P>, N> {
        Settings {
            policy: self.policy,
            name: self.name,
            when: When(predicate),
            notify: self.notify,
        }
    }

    fn notify<M>(self, hook: M) -> Settings<W, OnRetry<M>> {
        Settings {
            policy: self.policy,
            name: self.name,
            when: self.when,
            notify: OnRetry(hook),
        }
    }

    /// One failed attempt, for both loops: the wait before the next attempt, or how the call
    /// ends (`error` itself when it is not retryable, else the give-up error).
    #[cold]
    fn after_failure<E>(
        &mut self,
        attempts: &mut Attempts,
        error: E,
        now: fn() -> Instant,
    ) -> Result<Duration, RetryError<E>>
    where
        E: Classify + Display + Into<BoxError>,
        W: Decide<E>,
        N: Notify<E>,
    {
        let seen = Seen::classify(&error, None);
        let text = || text_of(&error, seen.chain);
        let classified = self.when.decide(&error, || decide_lazily(seen, text));
        match attempts.after_failure(classified, &Shown(&text), now) {
            Next::Retry(wait) => {
                self.notify.notify(&error, wait);
                Ok(wait)
            }
            Next::Return => Err(RetryError::NotRetryable(error)),
            Next::GiveUp(reason) => {
                let message = redacted(text());
                Err(RetryError::GaveUp(attempts.give_up(
                    reason,
                    message,
                    Some(keep(error)),
                )))
            }
        }
    }
}

/// What the guarded loop needs of the closure API's settings.
struct GuardedRules<'s, E, W, N> {
    policy: RetryPolicy,
    site: Site,
    guards: Guards,
    when: &'s W,
    notify: &'s mut N,
    error: PhantomData<fn(&E)>,
}

impl<'s, E, W, N> GuardedRules<'s, E, W, N> {
    fn of(settings: &'s mut Settings<W, N>, guards: Guards) -> Self {
        GuardedRules {
            policy: settings.policy,
            site: Site::closure(settings.name),
            guards,
            when: &settings.when,
            notify: &mut settings.notify,
            error: PhantomData,
        }
    }
}

/// The loop's ending as the closure API's result.
fn retry_error<E>(ending: Ending<E>) -> RetryError<E> {
    match ending {
        Ending::NotRetryable(error) => RetryError::NotRetryable(error),
        Ending::GaveUp(give_up) => RetryError::GaveUp(give_up),
    }
}

impl<E: Classify + Display + Into<BoxError>, W: Decide<E>, N: Notify<E>> GuardedRules<'_, E, W, N> {
    fn read(when: &W) -> impl Fn(&E) -> Classified + '_ {
        move |error| {
            let seen = Seen::classify(error, None);
            when.decide(error, || decide_lazily(seen, || text_of(error, seen.chain)))
        }
    }

    fn text(error: &E) -> String {
        text_of(error, Seen::classify(error, None).chain)
    }

    fn keep(error: E) -> Option<BoxError> {
        Some(keep(error))
    }

    fn on_retry<T>(notify: &mut N) -> impl FnMut(RetryCause<'_, E, T>, u32, Duration) + '_ {
        move |cause, _, wait| {
            if let Some(error) = cause.error() {
                notify.notify(error, wait);
            }
        }
    }
}

/// The error itself, boxed to be kept in the give-up error, where a caller can downcast it.
fn keep<E: Classify + Into<BoxError>>(error: E) -> BoxError {
    match error.__resilience_into_last_error() {
        Ok(kept) => kept,
        Err(error) => error.into(),
    }
}

/// `.retry(&policy)` on a closure that returns a `Result`: the blocking form.
///
/// ```
/// use std::{io, rc::Rc, time::Duration};
/// use resilience::{BlockingRetryable, RetryPolicy, sleep::{VirtualClock, with_sleeper}};
///
/// static POLICY: RetryPolicy = RetryPolicy::new();
/// let mut calls = 0;
/// let clock = Rc::new(VirtualClock::new());
/// let answer = with_sleeper(clock.clone(), || {
///     (|| {
///         calls += 1;
///         if calls < 3 { Err(io::Error::from(io::ErrorKind::ConnectionReset)) } else { Ok("done") }
///     })
///     .retry(&POLICY)
///     .named("fetch")
///     .call()
/// });
/// assert_eq!(answer.unwrap(), "done");
/// assert_eq!(clock.sleeps().len(), 2);
/// ```
pub trait BlockingRetryable<T, E>: FnMut() -> Result<T, E> + Sized {
    /// Retries this closure under a copy of `policy`; run it with [`BlockingRetry::call`].
    fn retry(self, policy: &RetryPolicy) -> BlockingRetry<Self>;
}

impl<T, E, F: FnMut() -> Result<T, E>> BlockingRetryable<T, E> for F {
    fn retry(self, policy: &RetryPolicy) -> BlockingRetry<Self> {
        BlockingRetry {
            op: self,
            settings: Settings::new(policy),
        }
    }
}

/// A blocking closure and how to retry it; [`call`](Self::call) runs it, waiting on the
/// current thread's [sleeper](crate::sleep::with_sleeper).
#[derive(Debug, Clone, Copy)]
#[must_use = "nothing runs until `call`"]
pub struct BlockingRetry<F, W = BuiltinRules, N = Silent> {
    op: F,
    settings: Settings<W, N>,
}

/// [`BlockingRetry`] under guards: made by [`BlockingRetry::guards`], run by
/// [`call`](Self::call).
#[derive(Debug)]
#[must_use = "nothing runs until `call`"]
pub struct GuardedBlockingRetry<F, W = BuiltinRules, N = Silent> {
    retry: BlockingRetry<F, W, N>,
    guards: Guards,
}

impl<F, W, N> GuardedBlockingRetry<F, W, N> {
    /// Runs the call: every attempt passes the guards (the README's "Guards together").
    pub fn call<T, E>(self) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Result<T, E>,
        E: Classify + Display + Into<BoxError>,
        W: Decide<E>,
        N: Notify<E>,
    {
        let GuardedBlockingRetry { retry, guards } = self;
        let BlockingRetry {
            mut op,
            mut settings,
        } = retry;
        let started = started(&settings.policy, now_current);
        let GuardedRules {
            policy,
            site,
            guards,
            when,
            notify,
            ..
        } = GuardedRules::<E, W, N>::of(&mut settings, guards);
        guarded_blocking(
            &policy,
            site,
            started,
            guards,
            (),
            |()| op(),
            |()| (),
            GuardedRules::<E, W, N>::read(when),
            GuardedRules::<E, W, N>::text,
            GuardedRules::<E, W, N>::keep,
            GuardedRules::<E, W, N>::on_retry(notify),
            |_: &T| false,
        )
        .map_err(retry_error)
    }
}

impl<F, W, N> BlockingRetry<F, W, N> {
    /// The name the log events carry in their `function` field (default `closure`).
    pub fn named(mut self, name: &'static str) -> Self {
        self.settings.name = name;
        self
    }

    /// Asks `predicate` first, as the attribute's `retry_if`: it answers `bool` or a
    /// [`Verdict`](crate::Verdict), whose `Unknown` leaves the decision to the built-in rules.
    /// Given twice, the last one counts.
    pub fn when<T, E, P, V>(self, predicate: P) -> BlockingRetry<F, When<P>, N>
    where
        F: FnMut() -> Result<T, E>,
        P: Fn(&E) -> V,
        V: IntoVerdict,
    {
        BlockingRetry {
            op: self.op,
            settings: self.settings.when(predicate),
        }
    }

    /// Calls `hook(&error, wait)` before each wait. Given twice, the last one counts.
    pub fn notify<T, E, M>(self, hook: M) -> BlockingRetry<F, W, OnRetry<M>>
    where
        F: FnMut() -> Result<T, E>,
        M: FnMut(&E, Duration),
    {
        BlockingRetry {
            op: self.op,
            settings: self.settings.notify(hook),
        }
    }

    /// The same call under `guards`: a circuit breaker, a rate limiter, a retry budget.
    ///
    /// ```
    /// use std::io;
    /// use resilience::{BlockingRetryable, RetryPolicy};
    /// use resilience::breaker::CircuitBreaker;
    /// use resilience::guards::Guards;
    ///
    /// static DISK: CircuitBreaker = CircuitBreaker::new("disk");
    /// static POLICY: RetryPolicy = RetryPolicy::new();
    ///
    /// let read = (|| std::fs::read_to_string("Cargo.toml"))
    ///     .retry(&POLICY)
    ///     .guards(Guards::new().breaker(&DISK))
    ///     .call();
    /// assert!(read.is_ok());
    /// ```
    pub fn guards(self, guards: Guards) -> GuardedBlockingRetry<F, W, N> {
        GuardedBlockingRetry {
            retry: self,
            guards,
        }
    }

    /// Calls the closure until it succeeds, fails with an error that is not retryable, or
    /// the policy gives up.
    pub fn call<T, E>(mut self) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Result<T, E>,
        E: Classify + Display + Into<BoxError>,
        W: Decide<E>,
        N: Notify<E>,
    {
        let policy = self.settings.policy;
        let started = started(&policy, now_current);
        // The first attempt, alone: a call that succeeds at once builds no retry state.
        let mut error = match (self.op)() {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let site = Site::closure(self.settings.name);
        let mut attempts = Attempts::after_first(&policy, site, started);
        loop {
            let wait = self
                .settings
                .after_failure(&mut attempts, error, now_current)?;
            sleep_current(wait);
            error = match (self.op)() {
                Ok(value) => {
                    attempts.succeeded();
                    return Ok(value);
                }
                Err(error) => error,
            };
        }
    }
}

pub use with_timer::Retrying;

mod with_timer {
    use std::fmt::Display;
    use std::future::Future;
    use std::marker::PhantomData;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use pin_project_lite::pin_project;

    use std::time::Duration;

    use super::{
        BuiltinRules, Decide, GuardedRules, Notify, OnRetry, RetryError, Settings, Silent, When,
        retry_error,
    };
    use crate::attempts::{
        Attempts, DeadlinePassed, attempt_deadline, deadline, ends_the_call, started,
    };
    use crate::classify::Classify;
    use crate::error::BoxError;
    use crate::guards::{Guards, guarded_async};
    use crate::log::Site;
    use crate::policy::RetryPolicy;
    use crate::requirements::PredicateAnswer as IntoVerdict;
    use crate::timer::{AsyncTimer, UntilDeadline, until_deadline};

    pin_project! {
        /// A closure that makes futures, retried: a future itself, made by
        /// `resilience::Retryable::retry` (with tokio's timer) or [`Retrying::new`] (with any
        /// [`AsyncTimer`]). Waits on the timer `T`, and the policy's `timeout` also cuts off an
        /// attempt still running.
        #[must_use = "futures do nothing unless polled"]
        pub struct Retrying<F, Fut, T: AsyncTimer, W = BuiltinRules, N = Silent> {
            op: F,
            settings: Settings<W, N>,
            // When the call started (`Some(None)` without a timeout), read at the first poll:
            // the `timeout` runs from when the call starts.
            started: Option<Option<std::time::Instant>>,
            // Built after the first failure only.
            attempts: Option<Attempts>,
            #[pin]
            state: State<Fut, T::Sleep>,
            timer: PhantomData<fn() -> T>,
        }
    }

    pin_project! {
        #[project = StateProj]
        enum State<Fut, S> {
            Idle,
            Running { #[pin] attempt: Fut },
            Bounded { #[pin] attempt: UntilDeadline<Fut, S> },
            Sleeping { #[pin] sleep: S },
            Done,
        }
    }

    impl<F, Fut, T: AsyncTimer> Retrying<F, Fut, T> {
        /// Retries the futures `op` makes under a copy of `policy`, waiting on the timer `T`.
        /// With tokio, `(|| fetch(url)).retry(&policy)` (`resilience::Retryable`) makes
        /// the same future.
        pub fn new(op: F, policy: &RetryPolicy) -> Self {
            Retrying {
                op,
                settings: Settings::new(policy),
                started: None,
                attempts: None,
                state: State::Idle,
                timer: PhantomData,
            }
        }
    }

    impl<F, Fut, T: AsyncTimer, W, N> Retrying<F, Fut, T, W, N> {
        /// The name the log events carry in their `function` field (default `closure`).
        pub fn named(mut self, name: &'static str) -> Self {
            self.settings.name = name;
            self
        }

        /// Asks `predicate` first, as the attribute's `retry_if`: it answers `bool` or a
        /// [`Verdict`](crate::Verdict), whose `Unknown` leaves the decision to the built-in
        /// rules. Given twice, the last one counts.
        pub fn when<O, E, P, V>(self, predicate: P) -> Retrying<F, Fut, T, When<P>, N>
        where
            F: FnMut() -> Fut,
            Fut: Future<Output = Result<O, E>>,
            P: Fn(&E) -> V,
            V: IntoVerdict,
        {
            Retrying {
                op: self.op,
                settings: self.settings.when(predicate),
                started: self.started,
                attempts: self.attempts,
                state: self.state,
                timer: PhantomData,
            }
        }

        /// Calls `hook(&error, wait)` before each wait. Given twice, the last one counts.
        pub fn notify<O, E, M>(self, hook: M) -> Retrying<F, Fut, T, W, OnRetry<M>>
        where
            F: FnMut() -> Fut,
            Fut: Future<Output = Result<O, E>>,
            M: FnMut(&E, Duration),
        {
            Retrying {
                op: self.op,
                settings: self.settings.notify(hook),
                started: self.started,
                attempts: self.attempts,
                state: self.state,
                timer: PhantomData,
            }
        }
    }

    impl<F, Fut, T: AsyncTimer, W, N> Retrying<F, Fut, T, W, N> {
        /// The same call under `guards` (a circuit breaker, a rate limiter, a retry budget):
        /// every attempt passes them (the README's "Guards together"); `.await` the result.
        pub fn guards<O, E>(self, guards: Guards) -> impl Future<Output = Result<O, RetryError<E>>>
        where
            F: FnMut() -> Fut,
            Fut: Future<Output = Result<O, E>>,
            E: Classify + Display + Into<BoxError>,
            W: Decide<E>,
            N: Notify<E>,
        {
            let Retrying {
                mut op,
                mut settings,
                ..
            } = self;
            async move {
                let started = started(&settings.policy, T::now);
                let GuardedRules {
                    policy,
                    site,
                    guards,
                    when,
                    notify,
                    ..
                } = GuardedRules::<E, W, N>::of(&mut settings, guards);
                guarded_async::<T, _, _, _>(
                    &policy,
                    site,
                    started,
                    guards,
                    &mut op,
                    GuardedRules::<E, W, N>::read(when),
                    GuardedRules::<E, W, N>::text,
                    GuardedRules::<E, W, N>::keep,
                    GuardedRules::<E, W, N>::on_retry(notify),
                )
                .await
                .map_err(retry_error)
            }
        }
    }

    impl<F, Fut, T, O, E, W, N> Future for Retrying<F, Fut, T, W, N>
    where
        T: AsyncTimer,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<O, E>>,
        E: Classify + Display + Into<BoxError>,
        W: Decide<E>,
        N: Notify<E>,
    {
        type Output = Result<O, RetryError<E>>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut this = self.project();
            loop {
                let policy = &this.settings.policy;
                let started = *this.started.get_or_insert_with(|| started(policy, T::now));
                let outcome = match this.state.as_mut().project() {
                    StateProj::Idle => {
                        let attempt = (this.op)();
                        let call = match this.attempts {
                            Some(attempts) => attempts.deadline(),
                            None => deadline(policy, started),
                        };
                        // The call's `timeout`, or the attempt's own `attempt_timeout` when
                        // that ends first.
                        let deadline = attempt_deadline(policy, call, T::now);
                        this.state.set(match deadline {
                            None => State::Running { attempt },
                            Some(deadline) => State::Bounded {
                                attempt: until_deadline::<T, _>(Some(deadline), attempt),
                            },
                        });
                        continue;
                    }
                    StateProj::Running { attempt } => ready!(attempt.poll(cx)),
                    StateProj::Bounded { attempt } => match ready!(attempt.poll(cx)) {
                        Ok(outcome) => outcome,
                        Err(DeadlinePassed) => {
                            let site = Site::closure(this.settings.name);
                            let attempts = this.attempts.get_or_insert_with(|| {
                                Attempts::after_first(policy, site, started)
                            });
                            if ends_the_call(policy, attempts.deadline(), T::now) {
                                this.state.set(State::Done);
                                let give_up = attempts.deadline_passed(DeadlinePassed);
                                return Poll::Ready(Err(RetryError::GaveUp(give_up)));
                            }
                            // Cut off at its `attempt_timeout`: a retryable timeout.
                            match attempts.after_attempt_timed_out(T::now) {
                                Ok(wait) => this.state.set(State::Sleeping {
                                    sleep: T::sleep(wait),
                                }),
                                Err(give_up) => {
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(RetryError::GaveUp(give_up)));
                                }
                            }
                            continue;
                        }
                    },
                    StateProj::Sleeping { sleep } => {
                        ready!(sleep.poll(cx));
                        this.state.set(State::Idle);
                        continue;
                    }
                    StateProj::Done => panic!("a `Retrying` future was polled after it completed"),
                };
                let next = match outcome {
                    Ok(value) => {
                        if let Some(attempts) = this.attempts {
                            attempts.succeeded();
                        }
                        Err(Ok(value))
                    }
                    Err(error) => {
                        let site = Site::closure(this.settings.name);
                        let attempts = this
                            .attempts
                            .get_or_insert_with(|| Attempts::after_first(policy, site, started));
                        this.settings
                            .after_failure(attempts, error, T::now)
                            .map_err(Err)
                    }
                };
                match next {
                    Ok(wait) => this.state.set(State::Sleeping {
                        sleep: T::sleep(wait),
                    }),
                    Err(done) => {
                        this.state.set(State::Done);
                        return Poll::Ready(done);
                    }
                }
            }
        }
    }
}
