//! The settings of one retried call: how many attempts, how long to wait, when to stop. The
//! defaults are written here once; the attribute builds its policy from them.

use std::time::Duration;

use crate::strategy::{Growth, Jitter};

/// How a call is retried: attempts, backoff and an optional bound on the whole call.
///
/// The `#[retry_with_backoff]` attribute builds one of these at compile time from its
/// arguments; code that retries without the attribute builds one with [`RetryPolicy::builder`].
///
/// ```
/// use std::time::Duration;
/// use retry_runtime::RetryPolicy;
///
/// let policy = RetryPolicy::builder()
///     .max_retries(3)
///     .base_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(5))
///     .timeout(Duration::from_secs(20))
///     .build()?;
/// assert_eq!(policy.max_retries(), 3);
/// # Ok::<(), retry_runtime::InvalidPolicy>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
    jitter: Duration,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    max_hint: Duration,
    jitter_strategy: Jitter,
    growth: Growth,
}

impl RetryPolicy {
    /// Attempts made by default, the first included (the Python original's `max_retries=5`).
    pub const DEFAULT_MAX_RETRIES: u32 = 5;
    /// Base of the exponential backoff by default: 1 s.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
    /// Cap of one wait by default: 30 s.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
    /// Upper bound of the random spread added to each wait by default: 1 s.
    pub const DEFAULT_JITTER: Duration = Duration::from_secs(1);
    /// Longest server-requested wait (`Retry-After`, `RetryInfo`) honoured by default: 2 min.
    /// A longer one fails the call at once, carrying the hint.
    pub const DEFAULT_MAX_HINT: Duration = Duration::from_secs(120);

    /// The defaults (the README's "Arguments"): 5 attempts, 1 s base, 30 s cap, up to 1 s jitter,
    /// no bound on the whole call.
    pub const fn new() -> Self {
        Self {
            max_retries: Self::DEFAULT_MAX_RETRIES,
            base_delay: Self::DEFAULT_BASE_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
            jitter: Self::DEFAULT_JITTER,
            timeout: None,
            attempt_timeout: None,
            max_hint: Self::DEFAULT_MAX_HINT,
            jitter_strategy: Jitter::Additive,
            growth: Growth::Exponential,
        }
    }

    /// Starts from the defaults; [`PolicyBuilder::build`] checks the result.
    pub const fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Self::new(),
        }
    }

    /// Total attempts, the first included (at least 1).
    pub const fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Base of the exponential backoff.
    pub const fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// Cap of one wait, jitter included.
    pub const fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Upper bound (exclusive) of the random spread added to each wait by
    /// [`Jitter::Additive`]; the other strategies draw their own spread and ignore it.
    pub const fn jitter(&self) -> Duration {
        self.jitter
    }

    /// Bound on the whole call, all attempts and waits; `None` when unbounded.
    pub const fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Bound on each attempt of an async call: one that runs longer is cut off and counts as
    /// a retryable timeout ([`AttemptTimedOut`](crate::error::AttemptTimedOut)); `None` when
    /// unbounded.
    pub const fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// Longest wait a server may ask for (`Retry-After`, Gemini's `RetryInfo`); a longer
    /// one makes the call give up at once, with the hint in the error.
    pub const fn max_hint(&self) -> Duration {
        self.max_hint
    }

    /// How each wait is spread at random: [`Jitter::Additive`] (the README's "Delays") unless set.
    pub const fn jitter_strategy(&self) -> Jitter {
        self.jitter_strategy
    }

    /// How the waits grow with the attempt: [`Growth::Exponential`] unless set.
    pub const fn growth(&self) -> Growth {
        self.growth
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`RetryPolicy`] and checks it in [`build`](PolicyBuilder::build).
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PolicyBuilder {
    policy: RetryPolicy,
}

impl PolicyBuilder {
    /// Total attempts, the first included; must be at least 1.
    pub const fn max_retries(mut self, attempts: u32) -> Self {
        self.policy.max_retries = attempts;
        self
    }

    /// Base of the exponential backoff.
    pub const fn base_delay(mut self, delay: Duration) -> Self {
        self.policy.base_delay = delay;
        self
    }

    /// Cap of one wait; must not be below the base delay.
    pub const fn max_delay(mut self, delay: Duration) -> Self {
        self.policy.max_delay = delay;
        self
    }

    /// Upper bound of the random spread added to each wait by [`Jitter::Additive`] (the
    /// default strategy); zero turns it off. Other strategies ignore it.
    pub const fn jitter(mut self, jitter: Duration) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// How each wait is spread at random (see [`Jitter`]); [`Jitter::Additive`] by default.
    pub const fn jitter_strategy(mut self, strategy: Jitter) -> Self {
        self.policy.jitter_strategy = strategy;
        self
    }

    /// How the waits grow with the attempt (see [`Growth`]); [`Growth::Exponential`] by
    /// default. [`Jitter::Decorrelated`] grows by itself and takes only the default.
    pub const fn growth(mut self, growth: Growth) -> Self {
        self.policy.growth = growth;
        self
    }

    /// Bound on the whole call, all attempts and waits; must be above zero.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = Some(timeout);
        self
    }

    /// Bound on each attempt of an async call (the attribute's `async fn`, the closure API's
    /// [`Retrying`](crate::retry::Retrying)), apart from `timeout`; must be above zero. A
    /// blocking attempt cannot be cut off: [`BlockingRetry`](crate::retry::BlockingRetry)
    /// ignores it.
    pub const fn attempt_timeout(mut self, attempt_timeout: Duration) -> Self {
        self.policy.attempt_timeout = Some(attempt_timeout);
        self
    }

    /// Longest server-requested wait to honour; a longer hint fails the call at once.
    pub const fn max_hint(mut self, max_hint: Duration) -> Self {
        self.policy.max_hint = max_hint;
        self
    }

    /// Checks the settings against the same rules the attribute enforces at compile time.
    pub const fn build(self) -> Result<RetryPolicy, InvalidPolicy> {
        let p = self.policy;
        if p.max_retries == 0 {
            return Err(InvalidPolicy::NoAttempts);
        }
        if p.base_delay.as_nanos() > p.max_delay.as_nanos() {
            return Err(InvalidPolicy::BaseAboveMax {
                base_delay: p.base_delay,
                max_delay: p.max_delay,
            });
        }
        if let Some(timeout) = p.timeout
            && timeout.is_zero()
        {
            return Err(InvalidPolicy::ZeroTimeout);
        }
        if let Some(timeout) = p.attempt_timeout
            && timeout.is_zero()
        {
            return Err(InvalidPolicy::ZeroAttemptTimeout);
        }
        // Decorrelated jitter multiplies the previous wait and never reads a growth: a
        // linear or constant one would be silently ignored, so it is refused instead.
        if matches!(p.jitter_strategy, Jitter::Decorrelated)
            && !matches!(p.growth, Growth::Exponential)
        {
            return Err(InvalidPolicy::GrowthWithDecorrelated { growth: p.growth });
        }
        Ok(p)
    }
}

impl InvalidPolicy {
    /// What is wrong, without the values: the text a constant argument of the attribute
    /// fails the build with (const evaluation cannot format).
    pub const fn message(&self) -> &'static str {
        match self {
            InvalidPolicy::NoAttempts => {
                "`max_retries` must be at least 1: it counts all attempts, the first included"
            }
            InvalidPolicy::BaseAboveMax { .. } => {
                "`base_delay` must not be above `max_delay` (30 s unless you set it)"
            }
            InvalidPolicy::ZeroTimeout => "`timeout` must be above zero",
            InvalidPolicy::ZeroAttemptTimeout => "`attempt_timeout` must be above zero",
            InvalidPolicy::GrowthWithDecorrelated { .. } => {
                "decorrelated jitter grows from the previous wait: it takes no linear or constant growth"
            }
        }
    }
}

/// Why [`PolicyBuilder::build`] refused its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidPolicy {
    /// `max_retries` was 0: at least the first attempt must be allowed.
    NoAttempts,
    /// The base delay was above the cap.
    BaseAboveMax {
        /// The base delay asked for.
        base_delay: Duration,
        /// The cap asked for.
        max_delay: Duration,
    },
    /// A timeout of zero would fail every call before it starts.
    ZeroTimeout,
    /// An attempt timeout of zero would cut off every attempt before it starts.
    ZeroAttemptTimeout,
    /// [`Jitter::Decorrelated`] with a growth other than [`Growth::Exponential`]: that
    /// strategy grows from its previous wait and would ignore the growth.
    GrowthWithDecorrelated {
        /// The growth asked for.
        growth: Growth,
    },
}

impl std::fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BaseAboveMax {
                base_delay,
                max_delay,
            } => write!(
                f,
                "`base_delay` ({base_delay:?}) must not be above `max_delay` ({max_delay:?})"
            ),
            Self::GrowthWithDecorrelated { growth } => write!(
                f,
                "decorrelated jitter grows from the previous wait: it takes no {growth} growth"
            ),
            Self::NoAttempts | Self::ZeroTimeout | Self::ZeroAttemptTimeout => {
                f.write_str(self.message())
            }
        }
    }
}

impl std::error::Error for InvalidPolicy {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design_note() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries(), 5);
        assert_eq!(p.base_delay(), Duration::from_secs(1));
        assert_eq!(p.max_delay(), Duration::from_secs(30));
        assert_eq!(p.jitter(), Duration::from_secs(1));
        assert_eq!(p.timeout(), None);
        assert_eq!(p.max_hint(), Duration::from_secs(120));
        assert_eq!(p.jitter_strategy(), Jitter::Additive);
        assert_eq!(p.growth(), Growth::Exponential);
    }

    /// The builder's strategy methods are const, so a policy with a strategy can still be a
    /// `const` (as the attribute builds its policy).
    #[test]
    fn strategies_are_set_in_const_context() {
        const FULL_LINEAR: RetryPolicy = match RetryPolicy::builder()
            .jitter_strategy(Jitter::Full)
            .growth(Growth::Linear)
            .build()
        {
            Ok(policy) => policy,
            Err(_) => RetryPolicy::new(),
        };
        assert_eq!(FULL_LINEAR.jitter_strategy(), Jitter::Full);
        assert_eq!(FULL_LINEAR.growth(), Growth::Linear);
        // The rest stays at the defaults.
        assert_eq!(FULL_LINEAR.base_delay(), RetryPolicy::DEFAULT_BASE_DELAY);
    }

    #[test]
    fn every_strategy_builds_with_every_growth_but_decorrelated() {
        for jitter in Jitter::ALL {
            for growth in Growth::ALL {
                let built = RetryPolicy::builder()
                    .jitter_strategy(jitter)
                    .growth(growth)
                    .build();
                if jitter == Jitter::Decorrelated && growth != Growth::Exponential {
                    assert_eq!(built, Err(InvalidPolicy::GrowthWithDecorrelated { growth }));
                } else {
                    assert!(built.is_ok(), "{jitter} with {growth}: {built:?}");
                }
            }
        }
    }

    #[test]
    fn the_decorrelated_growth_error_names_the_growth() {
        let err = RetryPolicy::builder()
            .jitter_strategy(Jitter::Decorrelated)
            .growth(Growth::Constant)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "decorrelated jitter grows from the previous wait: it takes no constant growth"
        );
        assert!(err.message().starts_with("decorrelated jitter"));
    }

    /// The one other place the default cap is written: the message a constant `base_delay`
    /// above it fails the build with (const evaluation cannot format the constant in).
    #[test]
    fn the_base_above_max_message_states_the_default_cap() {
        let message = InvalidPolicy::BaseAboveMax {
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
        .message();
        let cap = RetryPolicy::DEFAULT_MAX_DELAY;
        assert_eq!(cap.subsec_nanos(), 0, "a whole number of seconds to state");
        assert!(
            message.ends_with(&format!("({} s unless you set it)", cap.as_secs())),
            "{message}"
        );
    }

    #[test]
    fn builder_rejects_zero_attempts() {
        assert_eq!(
            RetryPolicy::builder().max_retries(0).build(),
            Err(InvalidPolicy::NoAttempts)
        );
    }

    #[test]
    fn builder_rejects_base_above_max() {
        let err = RetryPolicy::builder()
            .base_delay(Duration::from_secs(2))
            .max_delay(Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(matches!(err, InvalidPolicy::BaseAboveMax { .. }));
    }

    #[test]
    fn builder_rejects_zero_timeout() {
        assert_eq!(
            RetryPolicy::builder().timeout(Duration::ZERO).build(),
            Err(InvalidPolicy::ZeroTimeout)
        );
    }
}
