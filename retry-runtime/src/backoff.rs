//! Exponential backoff with jitter: how long to wait after a failed attempt.

use std::cell::RefCell;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::policy::RetryPolicy;

/// The wait after failed attempt `attempt` (1-based), before attempt `attempt + 1`:
/// `min(base_delay * 2^attempt + U, max_delay)` with `U` uniform in `[0, jitter)`.
///
/// With the defaults this gives about 2.x s, 4.x s, 8.x s, 16.x s. Every step saturates, so
/// no attempt number and no policy can overflow or panic, and the result never exceeds
/// `max_delay` (jitter included: it is inside the `min`).
///
/// ```
/// use std::time::Duration;
/// use rand::{SeedableRng, rngs::SmallRng};
/// use resilience::{RetryPolicy, backoff::delay_before};
///
/// let policy = RetryPolicy::default();
/// let mut rng = SmallRng::seed_from_u64(7);
/// let wait = delay_before(&policy, 1, &mut rng);
/// assert!(wait >= Duration::from_secs(2) && wait < Duration::from_secs(3));
/// assert_eq!(delay_before(&policy, u32::MAX, &mut rng), Duration::from_secs(30));
/// ```
pub fn delay_before<R: Rng + ?Sized>(policy: &RetryPolicy, attempt: u32, rng: &mut R) -> Duration {
    let exponential = exponential_part(policy.base_delay(), attempt);
    exponential
        .saturating_add(jitter_part(policy.jitter(), rng))
        .min(policy.max_delay())
}

thread_local! {
    static SEEDED: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
    /// This thread's generator for jitter: a small, fast one (jitter needs spread, not
    /// secrecy), seeded from the standard library's per-process random keys, so no
    /// cryptographic generator is compiled in and drawing allocates nothing.
    static JITTER: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// The wait a retry loop uses after failed attempt `attempt`: [`delay_before`] with jitter
/// from this thread's generator, or from the seeded one while [`with_jitter_seed`] runs.
pub fn next_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    SEEDED.with(|seeded| match &mut *seeded.borrow_mut() {
        Some(rng) => delay_before(policy, attempt, rng),
        None => JITTER.with(|jitter| {
            let mut jitter = jitter.borrow_mut();
            let rng = jitter.get_or_insert_with(|| SmallRng::seed_from_u64(random_seed()));
            delay_before(policy, attempt, rng)
        }),
    })
}

/// A seed that differs between threads and processes: `RandomState` draws its keys from the
/// operating system once per thread and changes them with every call.
fn random_seed() -> u64 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(0u64)
}

/// Runs `f` with every jitter on this thread drawn from a generator seeded with `seed`, so a
/// test sees the same waits on every run; the previous generator is restored afterwards.
///
/// ```
/// use std::time::Duration;
/// use resilience::{RetryPolicy, backoff::{next_delay, with_jitter_seed}};
///
/// let policy = RetryPolicy::default();
/// let first = with_jitter_seed(7, || next_delay(&policy, 1));
/// let again = with_jitter_seed(7, || next_delay(&policy, 1));
/// assert_eq!(first, again);
/// assert!(first >= Duration::from_secs(2) && first < Duration::from_secs(3));
/// ```
pub fn with_jitter_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<SmallRng>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SEEDED.with(|seeded| *seeded.borrow_mut() = previous);
        }
    }
    let previous = SEEDED.with(|seeded| seeded.borrow_mut().replace(SmallRng::seed_from_u64(seed)));
    let _restore = Restore(previous);
    f()
}

/// `base * 2^attempt`, saturating at `Duration::MAX`.
fn exponential_part(base: Duration, attempt: u32) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    // In nanoseconds as u128 so a 1 ns base still doubles exactly up to 2^127; only a
    // product that no `Duration` can hold saturates.
    let nanos = 1u128
        .checked_shl(attempt)
        .and_then(|factor| base.as_nanos().checked_mul(factor));
    nanos.map_or(Duration::MAX, saturating_from_nanos)
}

fn saturating_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9, so it always fits a u32.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Uniform in `[0, jitter)`; zero when jitter is off.
fn jitter_part<R: Rng + ?Sized>(jitter: Duration, rng: &mut R) -> Duration {
    let bound = jitter.as_nanos().min(u128::from(u64::MAX)) as u64;
    if bound == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.random_range(0..bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn defaults_give_the_design_note_table() {
        let policy = RetryPolicy::default();
        for seed in 0..500 {
            let mut rng = SmallRng::seed_from_u64(seed);
            for (attempt, low) in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0)] {
                let d = delay_before(&policy, attempt, &mut rng);
                assert!(
                    d >= secs(low) && d < secs(low + 1.0),
                    "attempt {attempt}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_never_pushes_a_wait_past_max_delay() {
        let policy = RetryPolicy::builder()
            .base_delay(secs(1.0))
            .max_delay(secs(2.5))
            .jitter(secs(10.0))
            .build()
            .unwrap();
        for seed in 0..1000 {
            let mut rng = SmallRng::seed_from_u64(seed);
            for attempt in 0..40 {
                assert!(delay_before(&policy, attempt, &mut rng) <= secs(2.5));
            }
        }
    }

    #[test]
    fn jitter_spreads_waits_over_its_whole_range() {
        let policy = RetryPolicy::default();
        let mut rng = SmallRng::seed_from_u64(42);
        let waits: Vec<f64> = (0..2000)
            .map(|_| delay_before(&policy, 1, &mut rng).as_secs_f64() - 2.0)
            .collect();
        let min = waits.iter().copied().fold(f64::MAX, f64::min);
        let max = waits.iter().copied().fold(f64::MIN, f64::max);
        assert!((0.0..0.05).contains(&min), "min spread {min}");
        assert!((0.95..1.0).contains(&max), "max spread {max}");
    }

    #[test]
    fn any_attempt_number_saturates_without_panic() {
        let policy = RetryPolicy::builder()
            .base_delay(Duration::MAX)
            .max_delay(Duration::MAX)
            .jitter(Duration::MAX)
            .build()
            .unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        for attempt in [0, 1, 31, 32, 33, 63, 64, 1000, u32::MAX - 1, u32::MAX] {
            assert_eq!(delay_before(&policy, attempt, &mut rng), Duration::MAX);
        }
        for attempt in [5, 31, 32, 64, u32::MAX] {
            let wait = delay_before(&RetryPolicy::default(), attempt, &mut rng);
            assert_eq!(wait, secs(30.0), "attempt {attempt}");
        }
    }

    #[test]
    fn a_tiny_base_keeps_doubling_past_two_to_the_32() {
        let policy = RetryPolicy::builder()
            .base_delay(Duration::from_nanos(1))
            .max_delay(Duration::from_secs(3600))
            .jitter(Duration::ZERO)
            .build()
            .unwrap();
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(
            delay_before(&policy, 33, &mut rng),
            Duration::from_nanos(1 << 33)
        );
    }

    #[test]
    fn threads_draw_different_jitter() {
        let policy = RetryPolicy::default();
        let draw = move || (1..6).map(|n| next_delay(&policy, n)).collect::<Vec<_>>();
        let here = draw();
        let there = std::thread::spawn(draw).join().unwrap_or_default();
        assert_ne!(here, there, "two threads drew the same five waits");
    }

    #[test]
    fn a_seed_repeats_the_same_waits_and_is_scoped() {
        let policy = RetryPolicy::default();
        let waits = |seed| {
            with_jitter_seed(seed, || {
                (1..5).map(|n| next_delay(&policy, n)).collect::<Vec<_>>()
            })
        };
        assert_eq!(waits(11), waits(11));
        assert_ne!(waits(11), waits(12));
        // Outside the scope the thread's own generator is back.
        assert!(SEEDED.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn zero_base_and_zero_jitter_wait_nothing() {
        let policy = RetryPolicy::builder()
            .base_delay(Duration::ZERO)
            .jitter(Duration::ZERO)
            .build()
            .unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        for attempt in [1, 40, u32::MAX] {
            assert_eq!(delay_before(&policy, attempt, &mut rng), Duration::ZERO);
        }
    }

    #[test]
    fn without_jitter_the_wait_is_exact() {
        let policy = RetryPolicy::builder()
            .base_delay(Duration::from_millis(100))
            .jitter(Duration::ZERO)
            .build()
            .unwrap();
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(
            delay_before(&policy, 3, &mut rng),
            Duration::from_millis(800)
        );
        assert_eq!(delay_before(&policy, 9, &mut rng), Duration::from_secs(30));
    }
}
