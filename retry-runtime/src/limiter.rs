//! [`RateLimiter`]: at most so many attempts per period, shared by every caller of a `static`,
//! and paused for all of them when a server says how long to wait.
//!
//! It is the generic cell rate algorithm (GCRA), as the `governor` crate models it: the
//! whole state is one "theoretical arrival time" (TAT), the time at which the limiter would
//! next be idle if permits went out exactly evenly. A request at `t` conforms when
//! `t >= tat - tolerance`; the permit is then scheduled at `s = max(t, tat - tolerance)` and
//! the TAT moves to `max(tat, t) + emission`. `emission` is the spacing of permits
//! (`period / permits`) and `tolerance` lets `burst` permits go at once
//! (`emission * (burst - 1)`).
//!
//! The bound this gives, and the one the tests check: any `k` permits handed out are spread
//! over at least `(k - burst) * emission`, so an interval of length `L` (ends included) holds
//! at most `floor(L / emission) + burst` of them. The emission is `period / permits` rounded
//! up, so a window of one `period` (start included, end excluded) holds at most
//! `permits + burst - 1`.
//!
//! The TAT is kept as nanoseconds since the process's guard origin in one `AtomicU64`, so a
//! limiter is `const`-constructible, takes no lock, and a free permit costs one load and one
//! compare-exchange. Every time is passed in (`now`), read from the clock the retries wait
//! on, so the limiter is tested on fake times. Every step saturates: the far end of time
//! (about 584 years after the origin) is where a saturated limiter parks, never an overflow.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fleet::{Answer, FleetState, Gcra, Reservation};
use crate::keyed::{KeyedGuard, Shared};
use crate::origin::{duration_nanos, instant, nanos};

/// The target of the limiter's `tracing` event.
const TARGET: &str = "resilience::limiter";

/// At most `permits` attempts per `period`, `burst` of them at once, for every caller that
/// shares it (a `static`, or one key of a [`Keyed`](crate::keyed)); paused for all of them
/// by [`pause_until`](Self::pause_until) when a server answers "too many requests".
///
/// ```
/// use std::time::{Duration, Instant};
/// use resilience::limiter::RateLimiter;
///
/// // Gemini's free tier: 15 requests a minute, evenly spaced.
/// static GEMINI: RateLimiter = RateLimiter::per_minute("gemini", 15);
///
/// let now = Instant::now();
/// assert_eq!(GEMINI.reserve(now, None), Ok(Duration::ZERO));
/// // The next caller, at the same instant, waits one spacing: 60 s / 15.
/// assert_eq!(GEMINI.reserve(now, None), Ok(Duration::from_secs(4)));
/// // A caller whose deadline is nearer than its turn is refused, and nothing is reserved.
/// let refused = GEMINI.reserve(now, Some(now + Duration::from_secs(1))).unwrap_err();
/// assert_eq!(refused.wait, Duration::from_secs(8));
/// ```
pub struct RateLimiter {
    name: &'static str,
    /// The spacing of permits, `period / permits` rounded up (never zero).
    emission_nanos: u64,
    /// How far ahead of its even spacing a permit may go: `emission * (burst - 1)`.
    tolerance_nanos: u64,
    /// Kept for `Debug` and `fresh`; the algorithm reads only `tolerance_nanos`.
    burst: u32,
    /// The theoretical arrival time, nanoseconds since the origin: 0 for a limiter never
    /// used, which every time conforms to. With a fleet backend, the state used while the
    /// backend cannot answer.
    tat: AtomicU64,
    /// Where the fleet's state is kept, when the limit is the fleet's (see
    /// [`shared`](Self::shared)).
    fleet: Option<&'static dyn FleetState>,
}

impl RateLimiter {
    /// `permits` per `period`, evenly spaced (a burst of 1: see [`burst`](Self::burst)).
    ///
    /// The spacing is `period / permits` rounded up to a whole nanosecond, so the limit is
    /// never exceeded by rounding (and more than one permit per nanosecond is one per
    /// nanosecond).
    ///
    /// # Panics
    ///
    /// If `permits` is 0 or `period` is zero: a limiter that never gives a permit is a
    /// mistake. In a `static`, its intended use, the panic is a compile error:
    ///
    /// ```compile_fail
    /// use std::time::Duration;
    /// use resilience::limiter::RateLimiter;
    ///
    /// static NEVER: RateLimiter = RateLimiter::new("never", 0, Duration::from_secs(1));
    /// ```
    pub const fn new(name: &'static str, permits: u32, period: Duration) -> Self {
        assert!(permits > 0, "a rate limiter needs at least one permit");
        assert!(!period.is_zero(), "a rate limiter needs a non-zero period");
        // Rounded up: rounded down, `permits + 1` permits would fit in one period.
        let emission_nanos = duration_nanos(period).div_ceil(permits as u64);
        Self {
            name,
            emission_nanos,
            tolerance_nanos: 0,
            burst: 1,
            tat: AtomicU64::new(0),
            fleet: None,
        }
    }

    /// `permits` per second, evenly spaced.
    ///
    /// # Panics
    ///
    /// If `permits` is 0 (a compile error in a `static`).
    pub const fn per_second(name: &'static str, permits: u32) -> Self {
        Self::new(name, permits, Duration::from_secs(1))
    }

    /// `permits` per minute, evenly spaced.
    ///
    /// # Panics
    ///
    /// If `permits` is 0 (a compile error in a `static`).
    pub const fn per_minute(name: &'static str, permits: u32) -> Self {
        Self::new(name, permits, Duration::from_secs(60))
    }

    /// The same limiter, letting up to `burst` permits go at once after an idle time (0 is
    /// taken as 1). Idle time banks no more than that: after a long quiet spell, `burst`
    /// callers go at once and the rest are spaced again.
    #[must_use]
    pub const fn burst(self, burst: u32) -> Self {
        let burst = if burst == 0 { 1 } else { burst };
        Self {
            tolerance_nanos: self.emission_nanos.saturating_mul(burst as u64 - 1),
            burst,
            ..self
        }
    }

    /// The name given at construction, as events and errors show it.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The limit of a whole fleet of processes, kept in `fleet` (such as
    /// `resilience::redis::RedisState`, feature `redis`): every process that names this
    /// limiter shares one GCRA there, timed by the backend's clock. While the backend cannot
    /// answer, this process decides alone, on this limiter's own state (the README's "When
    /// one process is not enough").
    #[must_use]
    pub const fn shared(self, fleet: &'static dyn FleetState) -> Self {
        Self {
            fleet: Some(fleet),
            ..self
        }
    }

    /// Whether the limit is a fleet's (see [`shared`](Self::shared)).
    pub fn is_shared(&self) -> bool {
        self.fleet.is_some()
    }

    /// The settings as a backend runs them.
    pub fn gcra(&self) -> Gcra {
        Gcra {
            emission: Duration::from_nanos(self.emission_nanos),
            tolerance: Duration::from_nanos(self.tolerance_nanos),
        }
    }

    /// [`reserve`](Self::reserve) from the fleet's state under `key` when the limit is
    /// shared, on the current thread; from this limiter's own when it is not, or when the
    /// backend cannot answer. (A call reaches it through [`Shared::reserve_blocking`], which
    /// knows the key.)
    pub(crate) fn reserve_in_fleet_blocking(
        &self,
        key: &str,
        now: Instant,
        latest: Option<Instant>,
    ) -> Result<Duration, RateLimited> {
        match self.fleet {
            Some(fleet) => {
                let answer = fleet.reserve_blocking(key, self.gcra(), max_wait(now, latest));
                self.settle(answer, now, latest)
            }
            None => self.reserve(now, latest),
        }
    }

    /// [`reserve_in_fleet_blocking`](Self::reserve_in_fleet_blocking) for an async caller:
    /// the fleet's answer is awaited, not waited for on the thread.
    pub(crate) async fn reserve_in_fleet(
        &self,
        key: &str,
        now: Instant,
        latest: Option<Instant>,
    ) -> Result<Duration, RateLimited> {
        match self.fleet {
            Some(fleet) => {
                let answer = fleet.reserve(key, self.gcra(), max_wait(now, latest)).await;
                self.settle(answer, now, latest)
            }
            None => self.reserve(now, latest),
        }
    }

    /// The server asked to wait `wait` from `now`: [`pause_until`](Self::pause_until) here,
    /// and in the fleet's state under `key` when the limit is shared.
    pub(crate) fn pause_in_fleet(&self, key: &str, now: Instant, wait: Duration) {
        if let Some(until) = now.checked_add(wait) {
            self.pause_until(until);
        }
        if let Some(fleet) = self.fleet {
            fleet.pause(key, self.gcra(), wait);
        }
    }

    /// A backend's answer as the limiter's, or the limiter's own decision when the backend
    /// had none (its share of the rate: the spacing times `share`).
    fn settle(
        &self,
        answer: Answer<Reservation>,
        now: Instant,
        latest: Option<Instant>,
    ) -> Result<Duration, RateLimited> {
        match answer {
            Answer::Decided(Ok(wait)) => Ok(wait),
            Answer::Decided(Err(wait)) => Err(RateLimited {
                limiter: self.name,
                wait,
            }),
            Answer::Unavailable { share } => {
                let emission = self.emission_nanos.saturating_mul(u64::from(share.max(1)));
                self.schedule_with(nanos(now), latest.map(nanos), emission)
            }
        }
    }

    /// Reserves the next permit and returns how long the caller must wait before using it
    /// (zero when a permit is free now). Callers that reserve at the same time queue up:
    /// their waits are 0, one spacing, two spacings, ...
    ///
    /// If the wait would end after `latest` (the call's deadline; a `latest` already
    /// passed refuses even a free permit), nothing is reserved and the error says how long
    /// the wait would have been.
    pub fn reserve(&self, now: Instant, latest: Option<Instant>) -> Result<Duration, RateLimited> {
        self.schedule(nanos(now), latest.map(nanos))
    }

    /// A permit now, or an error saying how long until one is free (nothing is reserved
    /// then).
    pub fn try_acquire(&self, now: Instant) -> Result<(), RateLimited> {
        let now = nanos(now);
        self.schedule(now, Some(now)).map(|_| ())
    }

    /// The server said to wait until `until` (a 429's `Retry-After`, gRPC's `RetryInfo`): no
    /// permit is given out before `until`, to any caller sharing the limiter, and after it
    /// they resume evenly spaced, with no burst at `until` (the quota the server counts
    /// restarts then; a burst would likely earn another 429).
    ///
    /// An `until` no later than the current pause (or than the end of the permits already
    /// reserved) changes nothing. One INFO event (target `resilience::limiter`, field
    /// `limiter` = the name) is emitted only when the pause moves later, so a burst of 429s
    /// carrying the same hint logs once.
    pub fn pause_until(&self, until: Instant) {
        // A TAT of `until + tolerance` makes `until` the first conforming time and spends the
        // burst: the permit at `until` moves the TAT a spacing further, and so on.
        let paused = nanos(until).saturating_add(self.tolerance_nanos);
        let before = self.tat.fetch_max(paused, Ordering::Relaxed);
        if before < paused {
            self.paused_event();
        }
    }

    /// When the next permit is free: `now` if it is free now.
    pub fn next_free(&self, now: Instant) -> Instant {
        let at = nanos(now);
        let start = self.start(at, self.tat.load(Ordering::Relaxed));
        if start <= at {
            return now;
        }
        now.checked_add(Duration::from_nanos(start.saturating_sub(at)))
            .unwrap_or_else(|| instant(start))
    }

    /// When a request at `now` would be scheduled, given `tat`.
    #[inline]
    fn start(&self, now: u64, tat: u64) -> u64 {
        now.max(tat.saturating_sub(self.tolerance_nanos))
    }

    /// The GCRA step: schedules a permit for a request at `now` unless its start would be
    /// after `latest`, and returns the wait.
    #[inline]
    fn schedule(&self, now: u64, latest: Option<u64>) -> Result<Duration, RateLimited> {
        self.schedule_with(now, latest, self.emission_nanos)
    }

    /// [`schedule`](Self::schedule) with this spacing of permits.
    #[inline]
    fn schedule_with(
        &self,
        now: u64,
        latest: Option<u64>,
        emission_nanos: u64,
    ) -> Result<Duration, RateLimited> {
        // Relaxed is enough: the TAT is the only state, and every change to it is one
        // read-modify-write, so the changes form one order in which each slot is handed out
        // once. Nothing else is published through it.
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = self.start(now, tat);
            let wait = Duration::from_nanos(start.saturating_sub(now));
            if latest.is_some_and(|latest| start > latest) {
                return Err(RateLimited {
                    limiter: self.name,
                    wait,
                });
            }
            // `max(tat, now)`: time the limiter sat idle is not banked beyond the tolerance.
            let next = tat.max(now).saturating_add(emission_nanos);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(wait),
                Err(current) => tat = current,
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn paused_event(&self) {
        tracing::info!(
            target: TARGET,
            limiter = self.name,
            "rate limit `{}` paused by the server: no permit until its wait is over",
            self.name,
        );
    }
}

/// How long a caller may wait for its permit: until `latest`, if it has one.
fn max_wait(now: Instant, latest: Option<Instant>) -> Option<Duration> {
    latest.map(|latest| latest.saturating_duration_since(now))
}

impl KeyedGuard for RateLimiter {
    fn fresh(&self) -> Self {
        Self {
            name: self.name,
            emission_nanos: self.emission_nanos,
            tolerance_nanos: self.tolerance_nanos,
            burst: self.burst,
            tat: AtomicU64::new(0),
            fleet: self.fleet,
        }
    }

    fn key_name(&self, key: &dyn fmt::Display) -> Option<Arc<str>> {
        // Only a shared limiter names its keys (made once per new key): the fleet keeps one
        // state per key.
        self.fleet
            .map(|_| Arc::from(format!("{}:{key}", self.name)))
    }
}

impl Shared<RateLimiter> {
    /// The key the fleet's backend keeps this limiter's state under: its name, or
    /// `name:key` for one key of a [`Keyed`](crate::keyed::Keyed).
    pub fn fleet_key(&self) -> &str {
        self.key_name().unwrap_or(self.name)
    }

    /// [`RateLimiter::reserve`], from the fleet's state when the limit is
    /// [shared](RateLimiter::shared), on the current thread; from this process's own when
    /// it is not, or when the backend cannot answer.
    pub fn reserve_blocking(
        &self,
        now: Instant,
        latest: Option<Instant>,
    ) -> Result<Duration, RateLimited> {
        self.reserve_in_fleet_blocking(self.fleet_key(), now, latest)
    }

    /// [`reserve_blocking`](Self::reserve_blocking) for an async caller: the fleet's answer
    /// is awaited.
    pub async fn reserve_async(
        &self,
        now: Instant,
        latest: Option<Instant>,
    ) -> Result<Duration, RateLimited> {
        self.reserve_in_fleet(self.fleet_key(), now, latest).await
    }

    /// A server asked every caller to wait `wait` from `now`: the limiter is paused here, and
    /// in the fleet's state when the limit is shared.
    pub fn pause_for(&self, now: Instant, wait: Duration) {
        self.pause_in_fleet(self.fleet_key(), now, wait);
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.name)
            .field("spacing", &Duration::from_nanos(self.emission_nanos))
            .field("burst", &self.burst)
            .field("tat_nanos", &self.tat.load(Ordering::Relaxed))
            .field("shared", &self.fleet.is_some())
            .finish()
    }
}

/// A permit refused: the limiter's next free permit is `wait` away, past the call's
/// deadline (from [`RateLimiter::reserve`]) or not now (from
/// [`RateLimiter::try_acquire`]). Nothing was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// The limiter's name.
    pub limiter: &'static str,
    /// How long the caller would have had to wait for its permit.
    pub wait: Duration,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit `{}`: the next permit is {:.1}s away, past the call's deadline",
            self.limiter,
            self.wait.as_secs_f64()
        )
    }
}

impl Error for RateLimited {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Barrier, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::{Interest, Subscriber};
    use tracing::{Event, Level, Metadata};

    const MS: Duration = Duration::from_millis(1);

    /// A `tracing` subscriber that keeps `(level, target, field)` of every event, `field`
    /// being the value of the field named at construction: retry-runtime has no
    /// `tracing-subscriber`, and this is all the guards' tests need.
    pub(crate) struct Recorder {
        field: &'static str,
        events: Arc<Mutex<Vec<(Level, String, String)>>>,
    }

    impl Recorder {
        /// Runs `f` with a recorder of `field` as this thread's subscriber and returns the
        /// events `f` emitted.
        pub(crate) fn record(
            field: &'static str,
            f: impl FnOnce(),
        ) -> Vec<(Level, String, String)> {
            let events = Arc::new(Mutex::new(Vec::new()));
            let recorder = Recorder {
                field,
                events: Arc::clone(&events),
            };
            tracing::subscriber::with_default(recorder, f);
            events.lock().unwrap().clone()
        }
    }

    struct FieldValue(&'static str, String);

    impl Visit for FieldValue {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == self.0 {
                self.1 = value.to_owned();
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == self.0 {
                self.1 = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Recorder {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            // Asked every time, so that threads without this subscriber do not fix the
            // callsite's interest for this one.
            Interest::sometimes()
        }
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut value = FieldValue(self.field, String::new());
            event.record(&mut value);
            let meta = event.metadata();
            self.events
                .lock()
                .unwrap()
                .push((*meta.level(), meta.target().to_owned(), value.1));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn refused(limiter: &RateLimiter, wait: Duration) -> Result<Duration, RateLimited> {
        Err(RateLimited {
            limiter: limiter.name(),
            wait,
        })
    }

    #[test]
    fn permits_are_evenly_spaced() {
        let limiter = RateLimiter::per_second("api", 10);
        let t0 = Instant::now();
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        let early = limiter.try_acquire(t0 + 40 * MS).unwrap_err();
        assert_eq!(early.wait, 60 * MS);
        assert_eq!(limiter.try_acquire(t0 + 100 * MS), Ok(()));
        assert_eq!(limiter.try_acquire(t0 + 199 * MS).unwrap_err().wait, MS);
        assert_eq!(limiter.try_acquire(t0 + 200 * MS), Ok(()));
        assert_eq!(limiter.next_free(t0 + 200 * MS), t0 + 300 * MS);
        assert_eq!(limiter.next_free(t0 + 400 * MS), t0 + 400 * MS);
    }

    #[test]
    fn a_burst_goes_at_once_then_permits_are_spaced() {
        let limiter = RateLimiter::per_second("api", 10).burst(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(t0), Ok(()));
        }
        assert_eq!(limiter.try_acquire(t0).unwrap_err().wait, 100 * MS);
        assert_eq!(limiter.try_acquire(t0 + 100 * MS), Ok(()));
        assert_eq!(
            limiter.try_acquire(t0 + 100 * MS).unwrap_err().wait,
            100 * MS
        );
        // Queued reservations after the burst are spaced too.
        assert_eq!(limiter.reserve(t0 + 100 * MS, None), Ok(100 * MS));
        assert_eq!(limiter.reserve(t0 + 100 * MS, None), Ok(200 * MS));
    }

    #[test]
    fn a_burst_of_zero_is_one() {
        let limiter = RateLimiter::per_second("api", 10).burst(0);
        let t0 = Instant::now();
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        assert!(limiter.try_acquire(t0).is_err());
    }

    #[test]
    fn a_refused_request_reserves_nothing() {
        let limiter = RateLimiter::per_second("api", 10);
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(t0, None), Ok(Duration::ZERO));
        assert_eq!(
            limiter.reserve(t0, Some(t0 + 50 * MS)),
            refused(&limiter, 100 * MS)
        );
        assert!(limiter.try_acquire(t0 + 10 * MS).is_err());
        assert_eq!(limiter.next_free(t0), t0 + 100 * MS);
        // The refusals took no slot: the next reservation is the one right after the first.
        assert_eq!(limiter.reserve(t0, None), Ok(100 * MS));
    }

    #[test]
    fn a_deadline_refusal_reports_the_wait() {
        let limiter = RateLimiter::new("gemini", 2, Duration::from_secs(3));
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(t0, None), Ok(Duration::ZERO));
        let error = limiter
            .reserve(t0, Some(t0 + Duration::from_secs(1)))
            .unwrap_err();
        assert_eq!(
            error,
            RateLimited {
                limiter: "gemini",
                wait: Duration::from_millis(1500)
            }
        );
        assert_eq!(
            error.to_string(),
            "rate limit `gemini`: the next permit is 1.5s away, past the call's deadline"
        );
        // A wait that ends exactly at the deadline fits.
        assert_eq!(
            limiter.reserve(t0, Some(t0 + Duration::from_millis(1500))),
            Ok(Duration::from_millis(1500))
        );
        // A deadline already passed refuses even a free permit, and says it was free.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            limiter.reserve(t1, Some(t1 - MS)),
            refused(&limiter, Duration::ZERO)
        );
        assert_eq!(limiter.reserve(t1, Some(t1)), Ok(Duration::ZERO));
    }

    #[test]
    fn waits_accumulate_for_queued_callers() {
        let limiter = RateLimiter::per_second("api", 4);
        let t0 = Instant::now();
        let waits: Vec<_> = (0..3).map(|_| limiter.reserve(t0, None)).collect();
        assert_eq!(waits, [Ok(Duration::ZERO), Ok(250 * MS), Ok(500 * MS)]);
        // A caller arriving later waits only for the rest of the queue.
        assert_eq!(limiter.reserve(t0 + 600 * MS, None), Ok(150 * MS));
    }

    #[test]
    fn a_pause_blocks_everybody_until_it_ends_then_spaces() {
        let limiter = RateLimiter::per_second("api", 10).burst(5);
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(2);
        limiter.pause_until(until);
        assert_eq!(limiter.next_free(t0), until);
        assert_eq!(
            limiter.try_acquire(t0 + Duration::from_secs(1)),
            Err(RateLimited {
                limiter: "api",
                wait: Duration::from_secs(1)
            })
        );
        // Callers queued during the pause go at its end, one spacing apart: no burst.
        assert_eq!(limiter.reserve(t0, None), Ok(Duration::from_secs(2)));
        assert_eq!(limiter.reserve(t0, None), Ok(2100 * MS));
        assert_eq!(limiter.try_acquire(until + 200 * MS), Ok(()));
        assert!(limiter.try_acquire(until + 200 * MS).is_err());
        // Once idle again, the burst comes back.
        let later = until + Duration::from_secs(10);
        for _ in 0..5 {
            assert_eq!(limiter.try_acquire(later), Ok(()));
        }
        assert!(limiter.try_acquire(later).is_err());
    }

    #[test]
    fn the_first_permit_after_a_pause_is_at_its_end() {
        let limiter = RateLimiter::per_second("api", 10).burst(3);
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(1);
        limiter.pause_until(until);
        assert!(
            limiter
                .try_acquire(until - Duration::from_nanos(1))
                .is_err()
        );
        assert_eq!(limiter.try_acquire(until), Ok(()));
        assert_eq!(limiter.try_acquire(until).unwrap_err().wait, 100 * MS);
    }

    #[test]
    fn an_earlier_pause_does_not_shorten_a_later_one() {
        let limiter = RateLimiter::per_second("api", 10);
        let t0 = Instant::now();
        limiter.pause_until(t0 + Duration::from_secs(2));
        limiter.pause_until(t0 + Duration::from_secs(1));
        assert_eq!(limiter.next_free(t0), t0 + Duration::from_secs(2));
        // Nor does a pause that ends before the queue already reserved.
        let limiter = RateLimiter::per_second("api", 10);
        for _ in 0..5 {
            let _ = limiter.reserve(t0, None);
        }
        limiter.pause_until(t0 + 200 * MS);
        assert_eq!(limiter.next_free(t0), t0 + 500 * MS);
    }

    #[test]
    fn a_pause_logs_once_and_only_when_it_moves_later() {
        let limiter = RateLimiter::per_second("gemini", 10);
        let t0 = Instant::now();
        let events = Recorder::record("limiter", || {
            limiter.pause_until(t0 + Duration::from_secs(2));
            limiter.pause_until(t0 + Duration::from_secs(2));
            limiter.pause_until(t0 + Duration::from_secs(1));
            limiter.pause_until(t0 + Duration::from_secs(3));
        });
        let expected = (
            Level::INFO,
            "resilience::limiter".to_owned(),
            "gemini".to_owned(),
        );
        assert_eq!(events, [expected.clone(), expected]);
    }

    #[test]
    fn idle_time_banks_no_more_than_the_burst() {
        let limiter = RateLimiter::per_second("api", 10).burst(3);
        let t0 = Instant::now();
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(later), Ok(()));
        }
        assert_eq!(limiter.try_acquire(later).unwrap_err().wait, 100 * MS);
    }

    #[test]
    fn contended_reservations_hand_out_each_slot_once() {
        const THREADS: usize = 8;
        const EACH: usize = 2_000;
        let limiter = RateLimiter::per_second("api", 1000);
        let t0 = Instant::now();
        let start = Barrier::new(THREADS);
        let mut waits: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        (0..EACH)
                            .map(|_| limiter.reserve(t0, None).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|handle| handle.join().unwrap())
                .collect()
        });
        waits.sort();
        let expected: Vec<Duration> = (0..THREADS * EACH)
            .map(|slot| MS * u32::try_from(slot).unwrap())
            .collect();
        assert_eq!(waits, expected);
    }

    #[test]
    fn a_fresh_limiter_has_the_settings_and_none_of_the_state() {
        let limiter = RateLimiter::per_second("tenant", 10).burst(2);
        let t0 = Instant::now();
        for _ in 0..5 {
            let _ = limiter.reserve(t0, None);
        }
        limiter.pause_until(t0 + Duration::from_secs(60));
        let fresh = limiter.fresh();
        assert_eq!(fresh.name(), "tenant");
        assert_eq!(fresh.next_free(t0), t0);
        assert_eq!(fresh.try_acquire(t0), Ok(()));
        assert_eq!(fresh.try_acquire(t0), Ok(()));
        assert_eq!(fresh.try_acquire(t0).unwrap_err().wait, 100 * MS);
        // The original is untouched by the fresh one.
        assert_eq!(limiter.next_free(t0), t0 + Duration::from_secs(60));
    }

    static GEMINI: RateLimiter = RateLimiter::per_minute("gemini", 60).burst(5);
    static TIGHT: RateLimiter = RateLimiter::new("tight", 3, Duration::from_secs(1));

    #[test]
    fn limiters_are_const_in_a_static() {
        let t0 = Instant::now();
        assert_eq!(GEMINI.name(), "gemini");
        for _ in 0..5 {
            assert_eq!(GEMINI.reserve(t0, None), Ok(Duration::ZERO));
        }
        assert_eq!(GEMINI.reserve(t0, None), Ok(Duration::from_secs(1)));
        // 3 per second is spaced by 333_333_334 ns, rounded up: a 4th permit never fits in
        // the same second.
        assert_eq!(TIGHT.emission_nanos, 333_333_334);
        let debug = format!("{TIGHT:?}");
        assert!(debug.contains("name: \"tight\""), "{debug}");
        assert!(debug.contains("burst: 1"), "{debug}");
    }

    #[test]
    fn extreme_settings_neither_panic_nor_overflow() {
        let t0 = Instant::now();
        let far = t0.checked_add(Duration::from_nanos(u64::MAX)).unwrap_or(t0);
        let limiters = [
            RateLimiter::new("many", u32::MAX, Duration::from_nanos(1)),
            RateLimiter::new("many", u32::MAX, Duration::MAX).burst(u32::MAX),
            RateLimiter::new("one", 1, Duration::MAX),
            RateLimiter::new("one", 1, Duration::MAX).burst(u32::MAX),
            RateLimiter::per_second("fast", u32::MAX).burst(u32::MAX),
        ];
        for limiter in &limiters {
            for at in [t0, far, t0] {
                let _ = limiter.reserve(at, None);
                let _ = limiter.reserve(at, Some(at));
                let _ = limiter.reserve(at, Some(far));
                let _ = limiter.try_acquire(at);
                assert!(limiter.next_free(at) >= at);
                limiter.pause_until(far);
                let _ = limiter.reserve(at, None);
                assert!(limiter.next_free(at) >= at);
            }
        }
        // One permit per `Duration::MAX`: the second one is at the far end of time.
        let once = RateLimiter::new("once", 1, Duration::MAX);
        assert_eq!(once.try_acquire(t0), Ok(()));
        assert!(once.try_acquire(t0).unwrap_err().wait > Duration::from_secs(500 * 365 * 86400));
    }

    /// One request of the property tests: after a gap, in thousandths of a spacing, either
    /// `try_acquire`, or `reserve` with a deadline this many thousandths of a spacing away
    /// (or none).
    #[derive(Debug, Clone, Copy)]
    enum Request {
        TryAcquire { gap: u32 },
        Reserve { gap: u32, latest: Option<u32> },
    }

    fn requests() -> impl Strategy<Value = Vec<Request>> {
        // Runs of requests at the same instant fill the bursts and queues; longer gaps
        // empty them.
        let gap = prop_oneof![Just(0u32), 0u32..3000];
        let request = prop_oneof![
            gap.clone().prop_map(|gap| Request::TryAcquire { gap }),
            (gap, prop::option::of(0u32..5000))
                .prop_map(|(gap, latest)| Request::Reserve { gap, latest }),
        ];
        prop::collection::vec(request, 1..250)
    }

    /// `thousandths` of `spacing`, in nanoseconds.
    fn part(spacing: u64, thousandths: u32) -> u64 {
        u64::try_from(u128::from(spacing) * u128::from(thousandths) / 1000).unwrap()
    }

    proptest! {
        /// Every permit granted, at the time it may be used (the request's time for
        /// `try_acquire`, its time plus the wait for `reserve`): any `k` of them span at least
        /// `(k - burst) * spacing`, i.e. an interval of length `L`, ends included, holds at
        /// most `floor(L / spacing) + burst`; and a window of one period (start included, end
        /// excluded) at most `permits + burst - 1`. The limiter is also exact: a reference
        /// GCRA in unbounded integers grants and refuses the same requests with the same
        /// waits, so the bound is not met by refusing too much.
        #[test]
        fn no_window_holds_more_permits_than_the_bound(
            permits in prop_oneof![1u32..8, 1u32..100],
            period_us in 1u64..10_000_000,
            burst in 1u32..10,
            requests in requests(),
        ) {
            let period = Duration::from_micros(period_us);
            let limiter = RateLimiter::new("p", permits, period).burst(burst);
            let spacing = limiter.emission_nanos;
            let tolerance = u128::from(spacing) * u128::from(burst - 1);
            let t0 = Instant::now();
            let mut at = t0;
            let mut model_tat: u128 = 0;
            let mut granted: Vec<u128> = Vec::new();
            for request in requests {
                let (gap, latest) = match request {
                    Request::TryAcquire { gap } => (gap, Some(0)),
                    Request::Reserve { gap, latest } => (gap, latest),
                };
                at += Duration::from_nanos(part(spacing, gap));
                let latest_at = latest.map(|l| at + Duration::from_nanos(part(spacing, l)));
                let got = match request {
                    Request::TryAcquire { .. } => limiter.try_acquire(at).map(|()| Duration::ZERO),
                    Request::Reserve { .. } => limiter.reserve(at, latest_at),
                };
                // The reference model.
                let now = u128::from(nanos(at));
                let start = now.max(model_tat.saturating_sub(tolerance));
                let wait = Duration::from_nanos(u64::try_from(start - now).unwrap());
                let fits = latest_at.is_none_or(|l| start <= u128::from(nanos(l)));
                if fits {
                    model_tat = model_tat.max(now) + u128::from(spacing);
                    prop_assert_eq!(got, Ok(wait));
                    granted.push(start);
                } else {
                    prop_assert_eq!(got, Err(RateLimited { limiter: "p", wait }));
                }
            }
            granted.sort_unstable();
            let period = period.as_nanos();
            for (i, &first) in granted.iter().enumerate() {
                for (k, &last) in granted[i..].iter().enumerate() {
                    let k = k as u128 + 1;
                    prop_assert!(k <= (last - first) / u128::from(spacing) + u128::from(burst));
                }
                let in_period = granted[i..].iter().take_while(|&&g| g < first + period).count();
                // At most `permits + burst - 1`.
                prop_assert!((in_period as u128) < u128::from(permits) + u128::from(burst));
            }
        }

        /// Any settings, any times, any pause: no panic, no overflow, and the answers stay
        /// consistent (a granted wait fits the deadline, a refused one does not, the next free
        /// permit is never in the past).
        #[test]
        fn nothing_panics_on_any_settings_or_times(
            permits in prop_oneof![Just(1u32), Just(u32::MAX), 1u32..=u32::MAX],
            period in prop_oneof![
                Just(Duration::MAX),
                Just(Duration::from_nanos(1)),
                (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            ],
            burst in prop_oneof![Just(u32::MAX), any::<u32>()],
            steps in prop::collection::vec(
                (any::<u64>(), prop::option::of(any::<u64>()), any::<bool>()),
                1..40,
            ),
        ) {
            prop_assume!(!period.is_zero());
            let limiter = RateLimiter::new("x", permits, period).burst(burst);
            let t0 = Instant::now();
            for (offset, latest, pause) in steps {
                let at = t0.checked_add(Duration::from_nanos(offset)).unwrap_or(t0);
                let latest = latest.map(|l| at.checked_add(Duration::from_nanos(l)).unwrap_or(at));
                if pause {
                    limiter.pause_until(latest.unwrap_or(at));
                }
                match limiter.reserve(at, latest) {
                    Ok(wait) => prop_assert!(latest.is_none_or(|l| at + wait <= l)),
                    Err(refused) => {
                        prop_assert!(latest.is_some_and(|l| at.checked_add(refused.wait).is_none_or(|end| end > l)));
                    }
                }
                let _ = limiter.try_acquire(at);
                prop_assert!(limiter.next_free(at) >= at);
            }
        }
    }
}
