//! The `tracing` events of a retried call (the README's "Log events").
//!
//! Every event carries the fields `function`, `attempt`, `max_retries` and `delay_ms` (0 where
//! no wait follows). Under the attribute, the events are emitted from the annotated
//! function's own crate with its module path as their target, as `#[tracing::instrument]`
//! does, so an application's filter (`EnvFilter::new("myapp=info")`) shows them: the
//! expansion defines one small emitter per function with [`emit_event!`](crate::emit_event).
//! The closure API's events have the target `resilience`. Error texts arrive here with their
//! causes and already redacted. Nothing here runs when the first attempt succeeds.

use std::fmt::{self, Display};
use std::time::Duration;

use crate::classify::Rule;
use crate::error::GiveUpReason;

/// One event of a retried call. The error's text is formatted only if a subscriber records
/// the event.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    /// WARN `Retry {n}/{max_retries} after {error}: waiting {delay:.1}s`.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// Attempts allowed.
        max_retries: u32,
        /// Its error's text.
        error: &'a dyn Display,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// INFO `Success on attempt {n}`, only after at least one retry.
    Succeeded {
        /// The attempt that succeeded.
        attempt: u32,
        /// Attempts allowed.
        max_retries: u32,
    },
    /// ERROR `Giving up after {n} attempt(s) ({reason}): {error}`.
    GaveUp {
        /// Attempts made.
        attempt: u32,
        /// Attempts allowed.
        max_retries: u32,
        /// The last error's text.
        error: &'a dyn Display,
        /// Why.
        reason: GiveUpReason,
    },
    /// WARN `Not retrying: {error} ({rule})`, for an error returned unchanged.
    NotRetryable {
        /// The attempt that failed.
        attempt: u32,
        /// Attempts allowed.
        max_retries: u32,
        /// Its error's text.
        error: &'a dyn Display,
        /// The rule that decided.
        rule: Rule,
    },
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Event::Retrying { .. } => "Retrying",
            Event::Succeeded { .. } => "Succeeded",
            Event::GaveUp { .. } => "GaveUp",
            Event::NotRetryable { .. } => "NotRetryable",
        })
    }
}

/// Where a retried call's events come from: the function's name, and the emitter that
/// gives them the right target.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    /// The `function` field of every event.
    pub function: &'static str,
    /// Emits one event.
    pub emit: fn(&'static str, &Event<'_>),
}

impl Site {
    /// The closure API's site: events with target `resilience`.
    pub const fn closure(function: &'static str) -> Self {
        Self {
            function,
            emit: emit_with_crate_target,
        }
    }

    /// Emits `event`.
    #[cold]
    #[inline(never)]
    pub fn emit(&self, event: Event<'_>) {
        (self.emit)(self.function, &event);
    }
}

#[cold]
fn emit_with_crate_target(function: &'static str, event: &Event<'_>) {
    crate::emit_event!(function, event, "resilience");
}

/// "attempt" or "attempts", so a one-attempt give-up reads right.
#[doc(hidden)]
pub fn attempts_word(count: u32) -> &'static str {
    if count == 1 { "attempt" } else { "attempts" }
}

/// Milliseconds for the `delay_ms` field, saturating.
#[doc(hidden)]
pub fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// Emits one [`Event`] as a `tracing` event with the given target, which must be a constant
/// (`module_path!()` where the expansion calls it: the annotated function's module).
#[doc(hidden)]
#[macro_export]
macro_rules! emit_event {
    ($function:expr, $event:expr, $target:expr) => {{
        use $crate::log::Event;
        let function: &'static str = $function;
        match *$event {
            Event::Retrying { attempt, max_retries, error, delay } => $crate::__private::tracing::warn!(
                target: $target,
                function,
                attempt,
                max_retries,
                delay_ms = $crate::log::millis(delay),
                "Retry {attempt}/{max_retries} after {error}: waiting {:.1}s",
                delay.as_secs_f64(),
            ),
            Event::Succeeded { attempt, max_retries } => $crate::__private::tracing::info!(
                target: $target,
                function,
                attempt,
                max_retries,
                delay_ms = 0u64,
                "Success on attempt {attempt}",
            ),
            Event::GaveUp { attempt, max_retries, error, reason } => $crate::__private::tracing::error!(
                target: $target,
                function,
                attempt,
                max_retries,
                delay_ms = 0u64,
                "Giving up after {attempt} {} ({reason}): {error}",
                $crate::log::attempts_word(attempt),
            ),
            Event::NotRetryable { attempt, max_retries, error, rule } => $crate::__private::tracing::warn!(
                target: $target,
                function,
                attempt,
                max_retries,
                delay_ms = 0u64,
                "Not retrying: {error} ({rule})",
            ),
        }
    }};
}
