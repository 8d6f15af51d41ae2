//! Retrying a closure, for code that does not use the attribute (or cannot: a call built at
//! run time, a policy read from configuration).

use std::fmt::Display;

use crate::attempts::{Attempts, Next};
use crate::classify::{
    Classified, Classify, Rule, Verdict, classify_chain, classify_message, classify_own,
};
use crate::error::{BoxError, MediaProcessingError};
use crate::policy::RetryPolicy;
use crate::redact::error_text;
use crate::sleep::{now_current, sleep_current};

/// Decides whether an error of type `E` is worth another attempt.
pub trait Classifier<E: ?Sized> {
    /// The answer and the rule that gave it.
    fn classify(&self, error: &E) -> Classified;
}

/// The built-in rules, through the error type's [`Classify`] implementation; where that
/// answers [`Verdict::Unknown`], the server's words and the text rule on the error's text.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinRules;

impl<E: Classify + Display + ?Sized> Classifier<E> for BuiltinRules {
    fn classify(&self, error: &E) -> Classified {
        classify_own(error, &error_text(&error))
    }
}

/// The built-in rules over an `std::error::Error`'s `source()` chain, for error types that
/// do not implement [`Classify`] (a plain `thiserror` enum):
/// `Retry::new(&policy).classify_with(ChainRules)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainRules;

impl<E: std::error::Error + 'static> Classifier<E> for ChainRules {
    fn classify(&self, error: &E) -> Classified {
        classify_chain(error)
    }
}

/// A predicate answering `bool` or [`Verdict`]. Its `Verdict::Unknown` leaves the decision
/// to the server's words and the text rule on the error's text (the macro's `retry_if` goes
/// through all the built-in rules; a closure cannot, as it does not know the error's type).
impl<E: Display + ?Sized, V: Into<Verdict>, F: Fn(&E) -> V> Classifier<E> for F {
    fn classify(&self, error: &E) -> Classified {
        let text = || classify_message(&error_text(&error));
        match Classified::by(Rule::Predicate, self(error).into()) {
            Some(own) => own.with_retry_after(text().retry_after),
            None => text(),
        }
    }
}

/// Retries a closure under a [`RetryPolicy`], with the same waits, log lines and give-up
/// error as `#[retry_with_backoff]`.
///
/// The rules: by default, through the error type's [`Classify`] (implemented by
/// `io::Error`, the boxed `dyn Error`s, `anyhow::Error`, `HttpError`, `reqwest::Error`, or your
/// own type); for another `std::error::Error`, `.classify_with(ChainRules)` walks its
/// `source()` chain as the attribute does; any closure `Fn(&E) -> bool` may decide instead.
/// The error type must be `Send + Sync + 'static` (`Into<BoxError>`), to be kept in the
/// give-up error.
///
/// ```
/// use std::{io, rc::Rc, time::Duration};
/// use retry_runtime::{Retry, RetryPolicy, sleep::{VirtualClock, with_sleeper}};
///
/// let policy = RetryPolicy::builder().max_retries(3).build()?;
/// let mut calls = 0;
/// let clock = Rc::new(VirtualClock::new());
/// let answer = with_sleeper(clock.clone(), || {
///     Retry::new(&policy).named("fetch").call(|| {
///         calls += 1;
///         if calls < 3 {
///             Err(io::Error::from(io::ErrorKind::ConnectionReset))
///         } else {
///             Ok("done")
///         }
///     })
/// });
/// assert_eq!(answer?, "done");
/// assert_eq!(clock.sleeps().len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use = "a `Retry` does nothing until `call` or `call_async` runs it"]
pub struct Retry<'p, C = BuiltinRules> {
    policy: &'p RetryPolicy,
    function: &'static str,
    classifier: C,
}

impl<'p> Retry<'p> {
    /// Retries under `policy` with the built-in rules.
    pub fn new(policy: &'p RetryPolicy) -> Self {
        Self {
            policy,
            function: "closure",
            classifier: BuiltinRules,
        }
    }
}

impl<'p, C> Retry<'p, C> {
    /// The name the log events carry in their `function` field.
    pub fn named(self, function: &'static str) -> Self {
        Self { function, ..self }
    }

    /// Decides retryability with `classifier` instead of the built-in rules, for instance a
    /// closure `|e: &MyError| -> bool` or one that calls [`classify_error`](crate::classify::classify_error).
    pub fn classify_with<D>(self, classifier: D) -> Retry<'p, D> {
        Retry {
            policy: self.policy,
            function: self.function,
            classifier,
        }
    }

    /// Calls `op` until it succeeds, fails with an error that is not retryable, or the
    /// policy gives up; waits on the current thread's [sleeper](crate::sleep::with_sleeper).
    pub fn call<T, E, Op>(&self, mut op: Op) -> Result<T, E>
    where
        Op: FnMut() -> Result<T, E>,
        C: Classifier<E>,
        E: Display + Into<BoxError> + From<MediaProcessingError>,
    {
        let mut attempts = Attempts::start(self.policy, self.function, now_current);
        loop {
            let error = match op() {
                Ok(value) => {
                    attempts.succeeded();
                    return Ok(value);
                }
                Err(error) => error,
            };
            sleep_current(self.after_failure(&mut attempts, error, now_current)?);
        }
    }

    /// The async form of [`call`](Self::call): waits with tokio's timer, and the `timeout`
    /// also cuts off an attempt still running. Dropping the future cancels the call.
    #[cfg(feature = "tokio")]
    pub async fn call_async<T, E, Op, Fut>(&self, mut op: Op) -> Result<T, E>
    where
        Op: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        C: Classifier<E>,
        E: Display + Into<BoxError> + From<MediaProcessingError>,
    {
        use crate::sleep::{now_async, sleep_async, until_deadline};

        let mut attempts = Attempts::start(self.policy, self.function, now_async);
        loop {
            let outcome = match until_deadline(attempts.deadline(), op()).await {
                Ok(outcome) => outcome,
                Err(passed) => return Err(attempts.deadline_passed(passed).into()),
            };
            // The error is dropped before the wait, so a non-`Send` error never makes the
            // future non-`Send`.
            let delay = match outcome {
                Ok(value) => {
                    attempts.succeeded();
                    return Ok(value);
                }
                Err(error) => self.after_failure(&mut attempts, error, now_async)?,
            };
            sleep_async(delay).await;
        }
    }

    /// One failed attempt, for both loops: the wait before the next attempt, or the error to
    /// return (`error` itself when it is not retryable, else the give-up error).
    fn after_failure<E>(
        &self,
        attempts: &mut Attempts<'_>,
        error: E,
        now: impl FnOnce() -> std::time::Instant,
    ) -> Result<std::time::Duration, E>
    where
        C: Classifier<E>,
        E: Display + Into<BoxError> + From<MediaProcessingError>,
    {
        let text = error_text(&error);
        let classified = self.classifier.classify(&error);
        match attempts.after_failure(classified, &text, now) {
            Next::Retry(delay) => Ok(delay),
            Next::Return => Err(error),
            Next::GiveUp(reason) => Err(attempts.give_up(reason, text, Some(error.into())).into()),
        }
    }
}
