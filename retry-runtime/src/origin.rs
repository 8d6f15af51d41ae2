//! The guards' time: nanoseconds since one origin for the whole process, so that a guard's
//! state fits in integers (an `AtomicU64` for the limiter) and a `static` needs no `Instant`
//! to be built. Every guard takes the time as an argument (`now: Instant`), read by the
//! caller from the clock the retries use (the thread's sleeper, tokio's paused clock in
//! tests), so the guards are tested on a fake clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An hour before the first guard read the time: a clock that starts earlier (tokio's paused
/// clock is made when the runtime is) still reads as a time after the origin.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

#[inline]
fn origin() -> Instant {
    if let Some(origin) = ORIGIN.get() {
        return *origin;
    }
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

/// `at` as nanoseconds since the origin (zero for a time before it; saturating far after).
/// In `u64` arithmetic, not `as_nanos`' `u128`: a guard converts the time on every call.
#[inline]
pub(crate) fn nanos(at: Instant) -> u64 {
    let since = at.saturating_duration_since(origin());
    since
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(since.subsec_nanos()))
}

/// The instant `nanos` after the origin (the origin itself if that is not representable).
pub(crate) fn instant(nanos: u64) -> Instant {
    let origin = origin();
    origin
        .checked_add(Duration::from_nanos(nanos))
        .unwrap_or(origin)
}

/// A duration in nanoseconds, saturating, for const settings.
pub(crate) const fn duration_nanos(duration: Duration) -> u64 {
    let nanos = duration.as_nanos();
    if nanos > u64::MAX as u128 {
        u64::MAX
    } else {
        nanos as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_through_nanos() {
        let now = Instant::now();
        let later = now + Duration::from_millis(1500);
        assert_eq!(nanos(later) - nanos(now), 1_500_000_000);
        assert_eq!(instant(nanos(later)), later);
        assert_eq!(duration_nanos(Duration::MAX), u64::MAX);
    }
}
