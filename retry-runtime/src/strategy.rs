//! Backoff strategies: how a wait grows with the attempt ([`Growth`]) and how it is spread
//! at random ([`Jitter`]). A [`RetryPolicy`](crate::RetryPolicy) holds one of each; the
//! waits themselves are computed in [`backoff`](crate::backoff).
//!
//! The default is additive jitter on exponential growth (the README's "Delays"), so a policy that
//! names no strategy waits exactly as before. The other jitters are the AWS Architecture
//! Blog's ("Exponential Backoff And Jitter", 2015), which spread a herd of clients that
//! failed together far better: see the README's "Backoff strategies".
//!
//! ```
//! use std::time::Duration;
//! use retry_runtime::RetryPolicy;
//! use retry_runtime::strategy::{Growth, Jitter};
//!
//! let policy = RetryPolicy::builder()
//!     .base_delay(Duration::from_millis(100))
//!     .jitter_strategy(Jitter::Full)
//!     .growth(Growth::Linear)
//!     .build()?;
//! assert_eq!(policy.jitter_strategy(), Jitter::Full);
//! # Ok::<(), retry_runtime::InvalidPolicy>(())
//! ```

/// How the wait before attempt `n + 1` grows with `n`, the number of the attempt that failed
/// (1 for the first). The result is the *ceiling* `t(n)`, always capped at `max_delay`, that
/// the [`Jitter`] then spreads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Growth {
    /// `t(n) = min(base_delay * 2^n, max_delay)`: 2, 4, 8, 16 s with a 1 s base. The default.
    #[default]
    Exponential,
    /// `t(n) = min(base_delay * n, max_delay)`: 1, 2, 3, 4 s with a 1 s base.
    Linear,
    /// `t(n) = base_delay` for every `n`: a fixed pause between attempts.
    Constant,
}

/// How the wait is spread at random around the ceiling `t(n)` that [`Growth`] gives. `cap` is
/// `max_delay`; `U(a, b)` is uniform between `a` and `b`.
///
/// Every strategy keeps each wait within `[floor, max_delay]`, where the floor is
/// [`MIN_WAIT`](crate::backoff::MIN_WAIT) (1 ms), or `base_delay` when that is smaller: a
/// random draw near zero never turns a retry loop into a spin, while a policy with
/// `base_delay = 0` (common in tests) still waits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// `min(t(n) + U(0, jitter), cap)`, the README's "Delays", with `jitter` the policy's
    /// [`jitter`](crate::RetryPolicy::jitter) (1 s by default). The default. It moves each
    /// client by at most `jitter`, so once the waits are much longer than that, clients that
    /// failed together still come back nearly together.
    #[default]
    Additive,
    /// AWS's "full jitter": `U(0, t(n))`. The least work for a contended server, at the price
    /// of some short waits.
    Full,
    /// AWS's "equal jitter": `t(n)/2 + U(0, t(n)/2)`. Never shorter than half the ceiling.
    Equal,
    /// AWS's "decorrelated jitter": `min(cap, U(base_delay, previous * 3))`, where `previous`
    /// is the last wait this strategy chose (`base_delay` before the first). It grows by
    /// itself, so it takes no [`Growth`] but the default. A retry loop must keep the previous
    /// wait in a [`BackoffState`](crate::backoff::BackoffState).
    Decorrelated,
    /// No randomness: `t(n)` exactly. Clients that failed together retry together.
    None,
}

impl Jitter {
    /// Every strategy, the default first.
    pub const ALL: [Jitter; 5] = [
        Jitter::Additive,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::None,
    ];

    /// The strategy's name in lower case, as the README and the herd example write it.
    pub const fn name(self) -> &'static str {
        match self {
            Jitter::Additive => "additive",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
            Jitter::None => "none",
        }
    }
}

impl Growth {
    /// Every growth, the default first.
    pub const ALL: [Growth; 3] = [Growth::Exponential, Growth::Linear, Growth::Constant];

    /// The growth's name in lower case.
    pub const fn name(self) -> &'static str {
        match self {
            Growth::Exponential => "exponential",
            Growth::Linear => "linear",
            Growth::Constant => "constant",
        }
    }
}

impl std::fmt::Display for Jitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Growth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_design_notes() {
        assert_eq!(Jitter::default(), Jitter::Additive);
        assert_eq!(Growth::default(), Growth::Exponential);
        assert_eq!(Jitter::ALL[0], Jitter::default());
        assert_eq!(Growth::ALL[0], Growth::default());
    }

    #[test]
    fn names_are_distinct_and_displayed() {
        let names: std::collections::HashSet<_> = Jitter::ALL.iter().map(|j| j.name()).collect();
        assert_eq!(names.len(), Jitter::ALL.len());
        assert_eq!(Jitter::Decorrelated.to_string(), "decorrelated");
        assert_eq!(Growth::Linear.to_string(), "linear");
    }
}
