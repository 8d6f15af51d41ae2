//! A policy built from the attribute's arguments when the crate compiles: literals the macro
//! has checked, and constants that only const evaluation can check. Every default comes from
//! [`RetryPolicy::new`](crate::RetryPolicy::new); nothing here is a sentinel.

use std::time::Duration;

/// Which argument a number of seconds is for, so its error names it.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    /// `base_delay`.
    BaseDelay,
    /// `max_delay`.
    MaxDelay,
    /// `jitter`.
    Jitter,
    /// `timeout`.
    Timeout,
    /// `attempt_timeout`.
    AttemptTimeout,
    /// `max_hint`.
    MaxHint,
}

impl Key {
    const fn invalid(self) -> &'static str {
        match self {
            Key::BaseDelay => "`base_delay` must be a finite number of seconds, zero or more",
            Key::MaxDelay => "`max_delay` must be a finite number of seconds, zero or more",
            Key::Jitter => "`jitter` must be a finite number of seconds, zero or more",
            Key::Timeout => "`timeout` must be a finite number of seconds, above zero",
            Key::AttemptTimeout => {
                "`attempt_timeout` must be a finite number of seconds, above zero"
            }
            Key::MaxHint => "`max_hint` must be a finite number of seconds, zero or more",
        }
    }

    const fn too_large(self) -> &'static str {
        match self {
            Key::BaseDelay => "`base_delay` is too large: at most about 584 years",
            Key::MaxDelay => "`max_delay` is too large: at most about 584 years",
            Key::Jitter => "`jitter` is too large: at most about 584 years",
            Key::Timeout => "`timeout` is too large: at most about 584 years",
            Key::AttemptTimeout => "`attempt_timeout` is too large: at most about 584 years",
            Key::MaxHint => "`max_hint` is too large: at most about 584 years",
        }
    }
}

/// The duration of a constant number of seconds, or why it cannot be one. Const, so that a
/// bad constant fails the build with this message rather than the call at run time.
pub const fn seconds(key: Key, value: f64) -> Result<Duration, &'static str> {
    if value.is_nan() || value < 0.0 || value.is_infinite() {
        return Err(key.invalid());
    }
    let nanos = value * 1e9;
    if nanos >= u64::MAX as f64 {
        return Err(key.too_large());
    }
    let nanos = nanos as u64;
    if matches!(key, Key::Timeout | Key::AttemptTimeout) && nanos == 0 {
        return Err(key.invalid());
    }
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_checked_for_their_key() {
        assert_eq!(seconds(Key::BaseDelay, 0.5), Ok(Duration::from_millis(500)));
        assert_eq!(seconds(Key::BaseDelay, 0.0), Ok(Duration::ZERO));
        assert!(seconds(Key::Timeout, 0.0).is_err());
        assert!(
            seconds(Key::Timeout, 1e-10).is_err(),
            "below a nanosecond is zero"
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(seconds(Key::Jitter, bad).is_err(), "{bad}");
        }
        assert!(
            seconds(Key::MaxHint, 1e12)
                .unwrap_err()
                .contains("too large")
        );
    }
}
