//! Backoff with jitter: how long to wait after a failed attempt, by the policy's
//! [`Growth`] and [`Jitter`] (see [`strategy`](crate::strategy)).
//!
//! Every wait lies within `[floor(policy), max_delay]`: the cap holds for every strategy,
//! random spread included, and the [`floor`] keeps a draw near zero from making a retry loop
//! spin. Every step saturates, so no attempt number, previous wait or policy can overflow or
//! panic.

use std::cell::RefCell;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::policy::RetryPolicy;
use crate::strategy::{Growth, Jitter};

/// The shortest wait any strategy yields when `base_delay` is at least this long: 1 ms.
///
/// Full jitter draws from `[0, t]`, so without a floor a wait could be a few nanoseconds and
/// the next attempt would follow at once, as if no backoff were there. 1 ms is far below any
/// backoff worth setting and far above a spin.
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// The shortest wait `policy` yields: [`MIN_WAIT`], or `base_delay` when that is shorter.
///
/// Following the base keeps two promises at once: `base_delay = 0` (a test's "do not
/// wait") still waits zero with every strategy, and the floor is never above `base_delay`,
/// so it never changes the default additive waits (which never go below the base) and
/// never exceeds `max_delay` (which is at least the base).
///
/// ```
/// use std::time::Duration;
/// use retry_runtime::{RetryPolicy, backoff::floor};
///
/// assert_eq!(floor(&RetryPolicy::new()), Duration::from_millis(1));
/// let no_waits = RetryPolicy::builder().base_delay(Duration::ZERO).build()?;
/// assert_eq!(floor(&no_waits), Duration::ZERO);
/// # Ok::<(), retry_runtime::InvalidPolicy>(())
/// ```
pub const fn floor(policy: &RetryPolicy) -> Duration {
    let base = policy.base_delay();
    if base.as_nanos() < MIN_WAIT.as_nanos() {
        base
    } else {
        MIN_WAIT
    }
}

/// The wait after failed attempt `attempt` (1-based), before attempt `attempt + 1`, with no
/// memory of earlier waits: [`delay_after`] with no previous wait.
///
/// With the default strategy (additive jitter on exponential growth, the README's "Delays") it is
/// `min(base_delay * 2^attempt + U, max_delay)` with `U` uniform in `[0, jitter)`: about
/// 2.x s, 4.x s, 8.x s, 16.x s with the defaults, never above `max_delay` (jitter included:
/// it is inside the `min`). [`Jitter::Decorrelated`] grows from the previous wait, which this
/// function does not know: every call is its first step, `U(base_delay, 3 * base_delay)`. A
/// retry loop keeps a [`BackoffState`] instead.
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
    delay_after(policy, attempt, None, rng)
}

/// The wait after failed attempt `attempt` (1-based), by the policy's strategy, with `rng`
/// drawing the spread. `previous` is the wait this function returned last for the same call
/// (`None` before its first wait); only [`Jitter::Decorrelated`] reads it. Let
/// `t = min(growth(attempt), max_delay)`:
///
/// | [`Jitter`] | wait |
/// |---|---|
/// | `Additive` (default) | `min(growth(attempt) + U[0, jitter), max_delay)` |
/// | `Full` | `U[0, t]` |
/// | `Equal` | `U[t/2, t]` |
/// | `Decorrelated` | `min(max_delay, U[base_delay, 3 * previous])`, `previous` = `base_delay` at first |
/// | `None` | `t` |
///
/// then raised to the [`floor`]: the result is always within `[floor(policy), max_delay]`.
/// [`BackoffState`] keeps `previous` for a retry loop.
///
/// ```
/// use std::time::Duration;
/// use rand::{SeedableRng, rngs::SmallRng};
/// use retry_runtime::{RetryPolicy, backoff::delay_after, strategy::Jitter};
///
/// let policy = RetryPolicy::builder()
///     .base_delay(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(2))
///     .jitter_strategy(Jitter::Decorrelated)
///     .build()?;
/// let mut rng = SmallRng::seed_from_u64(7);
/// let first = delay_after(&policy, 1, None, &mut rng);
/// assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(300));
/// let second = delay_after(&policy, 2, Some(first), &mut rng);
/// assert!(second >= Duration::from_millis(100) && second <= first * 3);
/// # Ok::<(), retry_runtime::InvalidPolicy>(())
/// ```
pub fn delay_after<R: Rng + ?Sized>(
    policy: &RetryPolicy,
    attempt: u32,
    previous: Option<Duration>,
    rng: &mut R,
) -> Duration {
    let cap = policy.max_delay();
    let wait = match policy.jitter_strategy() {
        // The README's "Delays" formula, step for step as it always was (the jitter is drawn
        // with the same call), so seeded tests and users see the same waits as before.
        Jitter::Additive => grown(policy, attempt)
            .saturating_add(jitter_part(policy.jitter(), rng))
            .min(cap),
        Jitter::Full => uniform(Duration::ZERO, ceiling(policy, attempt), rng),
        Jitter::Equal => {
            let t = ceiling(policy, attempt);
            // `t - t/2` rounds the half up, so the draw never goes below t/2.
            uniform(t - t / 2, t, rng)
        }
        Jitter::Decorrelated => {
            let base = policy.base_delay();
            // AWS starts its `sleep` at the base; a previous wait below the base (one a
            // caller made up) still draws from `[base, base]` rather than an empty range.
            let high = previous.unwrap_or(base).saturating_mul(3).max(base);
            uniform(base, high, rng).min(cap)
        }
        Jitter::None => ceiling(policy, attempt),
    };
    // The floor is at most `base_delay <= max_delay`, so raising to it keeps the cap.
    wait.max(floor(policy))
}

/// What a retry loop keeps between its waits: the previous wait, which
/// [`Jitter::Decorrelated`] grows from. Small and `Copy`; a new call starts from
/// [`BackoffState::new`].
///
/// ```
/// use std::time::Duration;
/// use retry_runtime::{RetryPolicy, backoff::{BackoffState, with_jitter_seed}, strategy::Jitter};
///
/// let policy = RetryPolicy::builder()
///     .base_delay(Duration::from_millis(100))
///     .jitter_strategy(Jitter::Decorrelated)
///     .build()?;
/// let waits = |seed| with_jitter_seed(seed, || {
///     let mut state = BackoffState::new();
///     (1..5).map(|attempt| state.next_delay(&policy, attempt)).collect::<Vec<_>>()
/// });
/// assert_eq!(waits(3), waits(3));
/// for pair in waits(3).windows(2) {
///     assert!(pair[1] <= pair[0] * 3);
/// }
/// # Ok::<(), retry_runtime::InvalidPolicy>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffState {
    previous: Option<Duration>,
}

impl BackoffState {
    /// The state before the first wait of a call.
    pub const fn new() -> Self {
        Self { previous: None }
    }

    /// The last wait this state chose (the backoff's own, before any server hint lengthened
    /// it), or `None` before the first.
    pub const fn previous(&self) -> Option<Duration> {
        self.previous
    }

    /// The wait after failed attempt `attempt`, drawn from this thread's generator (the
    /// seeded one inside [`with_jitter_seed`]), as [`next_delay`] draws; remembers it for the
    /// next call.
    pub fn next_delay(&mut self, policy: &RetryPolicy, attempt: u32) -> Duration {
        with_thread_rng(|rng| self.delay_with(policy, attempt, rng))
    }

    /// [`next_delay`](Self::next_delay) with the spread drawn from `rng`: for simulations
    /// and tests that own their generator.
    pub fn delay_with<R: Rng + ?Sized>(
        &mut self,
        policy: &RetryPolicy,
        attempt: u32,
        rng: &mut R,
    ) -> Duration {
        let wait = delay_after(policy, attempt, self.previous, rng);
        self.previous = Some(wait);
        wait
    }
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
///
/// It keeps no state, so [`Jitter::Decorrelated`] gets its first step on every call; a loop
/// that allows that strategy calls [`BackoffState::next_delay`] instead.
pub fn next_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    with_thread_rng(|rng| delay_before(policy, attempt, rng))
}

/// Runs `f` with this thread's generator: the seeded one while [`with_jitter_seed`] runs,
/// else the thread's own, made on first use.
fn with_thread_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    SEEDED.with(move |seeded| match &mut *seeded.borrow_mut() {
        Some(rng) => f(rng),
        None => JITTER.with(|jitter| {
            let mut jitter = jitter.borrow_mut();
            let rng = jitter.get_or_insert_with(|| SmallRng::seed_from_u64(random_seed()));
            f(rng)
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

/// The growth of the policy at `attempt`, before the cap: `base * 2^attempt`, `base *
/// attempt` or `base`, saturating at `Duration::MAX`.
fn grown(policy: &RetryPolicy, attempt: u32) -> Duration {
    let base = policy.base_delay();
    match policy.growth() {
        Growth::Exponential => exponential_part(base, attempt),
        Growth::Linear => base.saturating_mul(attempt),
        Growth::Constant => base,
    }
}

/// `t(n)`: the growth capped at `max_delay`, the range the AWS jitters draw from.
fn ceiling(policy: &RetryPolicy, attempt: u32) -> Duration {
    grown(policy, attempt).min(policy.max_delay())
}

/// Uniform in `[low, high]` to the nanosecond (`low` when the range is empty). In `u128`
/// nanoseconds, so even `Duration::MAX` (about 2^94 ns) is drawn from without overflow.
fn uniform<R: Rng + ?Sized>(low: Duration, high: Duration, rng: &mut R) -> Duration {
    let (low, high) = (low.as_nanos(), high.as_nanos());
    if high <= low {
        return saturating_from_nanos(low);
    }
    saturating_from_nanos(rng.random_range(low..=high))
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

/// The strategies beyond the default: bounds, cap, floor, seeds, and the default left
/// exactly as it was.
#[cfg(test)]
mod strategy_tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(jitter: Jitter, growth: Growth, base: Duration, cap: Duration) -> RetryPolicy {
        RetryPolicy::builder()
            .base_delay(base)
            .max_delay(cap)
            .jitter_strategy(jitter)
            .growth(growth)
            .build()
            .expect("a valid test policy")
    }

    /// The additive wait as `delay_before` computed it before strategies existed, copied
    /// here so that any change to the default's arithmetic or its draws fails a test.
    fn additive_as_it_was(policy: &RetryPolicy, attempt: u32, rng: &mut SmallRng) -> Duration {
        exponential_part(policy.base_delay(), attempt)
            .saturating_add(jitter_part(policy.jitter(), rng))
            .min(policy.max_delay())
    }

    #[test]
    fn the_default_draws_exactly_what_it_drew_before() {
        let policies = [
            RetryPolicy::default(),
            RetryPolicy::builder()
                .base_delay(Duration::from_nanos(1))
                .max_delay(Duration::MAX)
                .jitter(Duration::from_nanos(3))
                .build()
                .expect("valid"),
        ];
        for policy in policies {
            for seed in 0..200 {
                let mut old = SmallRng::seed_from_u64(seed);
                let mut new = SmallRng::seed_from_u64(seed);
                let mut state = BackoffState::new();
                let mut stateful = SmallRng::seed_from_u64(seed);
                for attempt in [0, 1, 2, 3, 4, 5, 20, 64, u32::MAX] {
                    let was = additive_as_it_was(&policy, attempt, &mut old);
                    assert_eq!(delay_before(&policy, attempt, &mut new), was);
                    assert_eq!(state.delay_with(&policy, attempt, &mut stateful), was);
                }
            }
        }
    }

    #[test]
    fn full_jitter_spreads_from_the_floor_to_the_ceiling() {
        let p = policy(Jitter::Full, Growth::Exponential, ms(100), ms(10_000));
        let mut rng = SmallRng::seed_from_u64(1);
        for attempt in 1..8 {
            let ceiling = ms(100 << attempt).min(ms(10_000));
            let waits: Vec<_> = (0..3000)
                .map(|_| delay_before(&p, attempt, &mut rng))
                .collect();
            let (low, high) = (waits.iter().min(), waits.iter().max());
            let (Some(&low), Some(&high)) = (low, high) else {
                panic!("no waits")
            };
            assert!(
                low >= MIN_WAIT && high <= ceiling,
                "{attempt}: {low:?}..{high:?}"
            );
            // The whole range is used: some waits near zero, some near the ceiling.
            assert!(low < ceiling / 50, "attempt {attempt}: lowest {low:?}");
            assert!(
                high > ceiling * 49 / 50,
                "attempt {attempt}: highest {high:?}"
            );
        }
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let p = policy(Jitter::Equal, Growth::Exponential, ms(100), ms(3_000));
        let mut rng = SmallRng::seed_from_u64(2);
        for attempt in 1..10 {
            let t = ms(100u64 << attempt).min(ms(3_000));
            let waits: Vec<_> = (0..2000)
                .map(|_| delay_before(&p, attempt, &mut rng))
                .collect();
            assert!(
                waits.iter().all(|&w| w >= t / 2 && w <= t),
                "attempt {attempt}"
            );
            assert!(waits.iter().any(|&w| w < t / 2 + t / 50));
            assert!(waits.iter().any(|&w| w > t - t / 50));
        }
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_previous_wait_up_to_the_cap() {
        let (base, cap) = (ms(10), ms(2_000));
        let p = policy(Jitter::Decorrelated, Growth::Exponential, base, cap);
        let mut reached_cap = false;
        for seed in 0..200 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut state = BackoffState::new();
            let mut previous = base;
            for attempt in 1..30 {
                let wait = state.delay_with(&p, attempt, &mut rng);
                assert!(wait >= base && wait <= (previous * 3).min(cap), "{wait:?}");
                assert_eq!(state.previous(), Some(wait));
                reached_cap |= wait == cap;
                previous = wait;
            }
        }
        assert!(reached_cap, "the AWS `min(cap, ..)` puts weight on the cap");
    }

    #[test]
    fn decorrelated_without_state_is_its_first_step() {
        let p = policy(Jitter::Decorrelated, Growth::Exponential, ms(10), ms(2_000));
        let mut rng = SmallRng::seed_from_u64(5);
        for attempt in [1, 5, 30, u32::MAX] {
            let wait = delay_before(&p, attempt, &mut rng);
            assert!(wait >= ms(10) && wait <= ms(30), "{wait:?}");
        }
    }

    #[test]
    fn no_jitter_is_the_growth_exactly() {
        let cases = [
            (
                Growth::Exponential,
                [ms(200), ms(400), ms(800), ms(1_600), ms(2_500)],
            ),
            (
                Growth::Linear,
                [ms(100), ms(200), ms(300), ms(400), ms(500)],
            ),
            (Growth::Constant, [ms(100); 5]),
        ];
        let mut rng = SmallRng::seed_from_u64(0);
        for (growth, expected) in cases {
            let p = policy(Jitter::None, growth, ms(100), ms(2_500));
            let waits: Vec<_> = (1..=5).map(|n| delay_before(&p, n, &mut rng)).collect();
            assert_eq!(waits, expected, "{growth}");
        }
    }

    #[test]
    fn linear_and_constant_growth_carry_the_additive_jitter() {
        let mut rng = SmallRng::seed_from_u64(9);
        for (growth, low) in [(Growth::Linear, ms(300)), (Growth::Constant, ms(100))] {
            let p = RetryPolicy::builder()
                .base_delay(ms(100))
                .jitter(ms(50))
                .growth(growth)
                .build()
                .expect("valid");
            for _ in 0..500 {
                let wait = delay_before(&p, 3, &mut rng);
                assert!(wait >= low && wait < low + ms(50), "{growth}: {wait:?}");
            }
        }
    }

    #[test]
    fn every_strategy_respects_the_cap_at_any_attempt() {
        for jitter in Jitter::ALL {
            let p = RetryPolicy::builder()
                .base_delay(ms(100))
                .max_delay(ms(250))
                .jitter(Duration::from_secs(10))
                .jitter_strategy(jitter)
                .build()
                .expect("valid");
            let mut rng = SmallRng::seed_from_u64(4);
            let mut state = BackoffState::new();
            for attempt in (0..70).chain([u32::MAX - 1, u32::MAX]) {
                let wait = state.delay_with(&p, attempt, &mut rng);
                assert!(wait <= ms(250), "{jitter} at {attempt}: {wait:?}");
            }
        }
    }

    #[test]
    fn the_floor_stops_a_spin_but_a_zero_base_still_waits_zero() {
        // Full jitter on a 1 s base draws below 1 ms about once in 2000 first waits; the
        // floor turns each of those into 1 ms.
        let p = policy(
            Jitter::Full,
            Growth::Constant,
            Duration::from_secs(1),
            ms(30_000),
        );
        let mut rng = SmallRng::seed_from_u64(6);
        let floored = (0..20_000)
            .map(|_| delay_before(&p, 1, &mut rng))
            .inspect(|&w| assert!(w >= MIN_WAIT, "{w:?}"))
            .filter(|&w| w == MIN_WAIT)
            .count();
        assert!(
            floored > 0,
            "no draw came near zero: the floor is not exercised"
        );

        // A base below 1 ms is its own floor.
        let tiny = policy(
            Jitter::Full,
            Growth::Constant,
            Duration::from_micros(200),
            ms(1),
        );
        assert_eq!(floor(&tiny), Duration::from_micros(200));
        for _ in 0..1000 {
            assert!(delay_before(&tiny, 1, &mut rng) >= Duration::from_micros(200));
        }

        // `base_delay = 0, jitter = 0`, as tests write it: every strategy waits zero.
        for jitter in Jitter::ALL {
            let p = RetryPolicy::builder()
                .base_delay(Duration::ZERO)
                .jitter(Duration::ZERO)
                .jitter_strategy(jitter)
                .build()
                .expect("valid");
            let mut state = BackoffState::new();
            for attempt in [1, 2, 3, 40, u32::MAX] {
                assert_eq!(
                    state.delay_with(&p, attempt, &mut rng),
                    Duration::ZERO,
                    "{jitter}"
                );
            }
        }
    }

    #[test]
    fn linear_growth_at_attempt_zero_is_floored_not_zero() {
        let p = policy(Jitter::None, Growth::Linear, ms(100), ms(1_000));
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(delay_before(&p, 0, &mut rng), MIN_WAIT);
    }

    #[test]
    fn every_strategy_repeats_under_a_seed() {
        for jitter in Jitter::ALL {
            let p = policy(jitter, Growth::Exponential, ms(100), ms(30_000));
            let waits = |seed| {
                with_jitter_seed(seed, || {
                    let mut state = BackoffState::new();
                    (1..8).map(|n| state.next_delay(&p, n)).collect::<Vec<_>>()
                })
            };
            assert_eq!(waits(21), waits(21), "{jitter}");
            if jitter != Jitter::None {
                assert_ne!(waits(21), waits(22), "{jitter} ignores its seed");
            }
        }
        assert!(SEEDED.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn the_stateful_and_stateless_entry_points_draw_alike() {
        // For every strategy but decorrelated the state changes nothing: the attribute's
        // loop may switch to `BackoffState` without changing any wait.
        for jitter in [Jitter::Additive, Jitter::Full, Jitter::Equal, Jitter::None] {
            let p = policy(jitter, Growth::Exponential, ms(100), ms(30_000));
            let stateless =
                with_jitter_seed(8, || (1..8).map(|n| next_delay(&p, n)).collect::<Vec<_>>());
            let stateful = with_jitter_seed(8, || {
                let mut state = BackoffState::new();
                (1..8).map(|n| state.next_delay(&p, n)).collect::<Vec<_>>()
            });
            assert_eq!(stateless, stateful, "{jitter}");
        }
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            // Small values, where rounding and the floor matter.
            (0u64..5_000_000).prop_map(Duration::from_nanos),
            (0u64..100_000).prop_map(Duration::from_millis),
            // Anything a `Duration` holds, up to `Duration::MAX`.
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            Just(Duration::MAX),
        ]
    }

    fn any_attempt() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..80, any::<u32>(), Just(u32::MAX)]
    }

    proptest! {
        #[test]
        fn every_wait_is_within_the_floor_and_the_cap(
            base in any_duration(),
            extra in any_duration(),
            jitter_amount in any_duration(),
            jitter in prop::sample::select(&Jitter::ALL[..]),
            growth in prop::sample::select(&Growth::ALL[..]),
            attempt in any_attempt(),
            previous in prop::option::of(any_duration()),
            seed in any::<u64>(),
        ) {
            // Decorrelated takes only the default growth (the builder refuses the others).
            let growth = if jitter == Jitter::Decorrelated { Growth::Exponential } else { growth };
            let p = RetryPolicy::builder()
                .base_delay(base)
                .max_delay(base.saturating_add(extra))
                .jitter(jitter_amount)
                .jitter_strategy(jitter)
                .growth(growth)
                .build();
            prop_assert!(p.is_ok(), "{:?}", p);
            let Ok(p) = p else { unreachable!() };
            let mut rng = SmallRng::seed_from_u64(seed);
            let wait = delay_after(&p, attempt, previous, &mut rng);
            prop_assert!(wait >= floor(&p), "{:?} below the floor {:?}", wait, floor(&p));
            prop_assert!(wait <= p.max_delay(), "{:?} above the cap {:?}", wait, p.max_delay());
            prop_assert!(floor(&p) <= MIN_WAIT && floor(&p) <= p.base_delay());
            // The same seed draws the same wait.
            let mut again = SmallRng::seed_from_u64(seed);
            prop_assert_eq!(delay_after(&p, attempt, previous, &mut again), wait);
        }

        #[test]
        fn the_default_is_the_design_notes_formula_on_any_input(
            base in any_duration(),
            extra in any_duration(),
            jitter_amount in any_duration(),
            attempt in any_attempt(),
            seed in any::<u64>(),
        ) {
            let p = RetryPolicy::builder()
                .base_delay(base)
                .max_delay(base.saturating_add(extra))
                .jitter(jitter_amount)
                .build();
            let Ok(p) = p else { return Err(TestCaseError::fail("invalid policy")) };
            let mut old = SmallRng::seed_from_u64(seed);
            let mut new = SmallRng::seed_from_u64(seed);
            prop_assert_eq!(delay_before(&p, attempt, &mut new), additive_as_it_was(&p, attempt, &mut old));
        }

        #[test]
        fn a_state_chain_stays_within_bounds(
            base in (0u64..10_000).prop_map(Duration::from_millis),
            extra in (0u64..100_000).prop_map(Duration::from_millis),
            jitter in prop::sample::select(&Jitter::ALL[..]),
            seed in any::<u64>(),
        ) {
            let p = RetryPolicy::builder()
                .base_delay(base)
                .max_delay(base + extra)
                .jitter_strategy(jitter)
                .build();
            let Ok(p) = p else { return Err(TestCaseError::fail("invalid policy")) };
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut state = BackoffState::new();
            for attempt in 1..40 {
                let wait = state.delay_with(&p, attempt, &mut rng);
                prop_assert!(wait >= floor(&p) && wait <= p.max_delay(), "{:?}", wait);
            }
        }
    }
}
