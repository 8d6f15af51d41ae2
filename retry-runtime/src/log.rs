//! The `tracing` events of a retried call (the README's "Log events"), all with target
//! `resilience`.
//!
//! Every event carries the fields `function`, `attempt`, `max_retries` and `delay_ms`
//! (0 where no wait follows). Error texts arrive here with their causes and already redacted
//! ([`redact`](crate::redact::redact)). Each function is `#[cold]`: none runs when the first
//! attempt succeeds, and keeping them out of line keeps the generated loop small.

use std::time::Duration;

use crate::classify::Rule;
use crate::error::GiveUpReason;

/// WARN `Retry {n}/{max_retries} after {error}: waiting {delay:.1}s`.
#[cold]
#[inline(never)]
pub fn retrying(
    function: &'static str,
    attempt: u32,
    max_retries: u32,
    error: &str,
    delay: Duration,
) {
    tracing::warn!(
        target: "resilience",
        function,
        attempt,
        max_retries,
        delay_ms = millis(delay),
        "Retry {attempt}/{max_retries} after {error}: waiting {:.1}s",
        delay.as_secs_f64(),
    );
}

/// INFO `Success on attempt {n}`, only after at least one retry.
#[cold]
#[inline(never)]
pub fn succeeded_after_retry(function: &'static str, attempt: u32, max_retries: u32) {
    tracing::info!(
        target: "resilience",
        function,
        attempt,
        max_retries,
        delay_ms = 0u64,
        "Success on attempt {attempt}",
    );
}

/// ERROR `Giving up after {n} attempts ({reason}): {error}`.
#[cold]
#[inline(never)]
pub fn gave_up(
    function: &'static str,
    attempt: u32,
    max_retries: u32,
    error: &str,
    reason: GiveUpReason,
) {
    tracing::error!(
        target: "resilience",
        function,
        attempt,
        max_retries,
        delay_ms = 0u64,
        "Giving up after {attempt} {} ({reason}): {error}",
        attempts_word(attempt),
    );
}

/// WARN `Not retrying: {error} ({rule})`, for an error returned unchanged.
#[cold]
#[inline(never)]
pub fn not_retryable(
    function: &'static str,
    attempt: u32,
    max_retries: u32,
    error: &str,
    rule: Rule,
) {
    tracing::warn!(
        target: "resilience",
        function,
        attempt,
        max_retries,
        delay_ms = 0u64,
        "Not retrying: {error} ({rule})",
    );
}

/// "attempt" or "attempts", so a one-attempt give-up reads right.
fn attempts_word(count: u32) -> &'static str {
    if count == 1 { "attempt" } else { "attempts" }
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}
