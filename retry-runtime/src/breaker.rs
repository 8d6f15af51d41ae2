//! A circuit breaker, shared by every caller of one service (a `static`, or one key's of a
//! [`Keyed`](crate::keyed)): once enough of the recent calls failed, or were slow, it stops
//! letting attempts through for a while, so a service that is down is not hammered by
//! retries, and the callers give up at once instead of waiting out their backoff.
//!
//! The states and their changes follow resilience4j's `CircuitBreakerStateMachine`:
//!
//! - **Closed**: every call passes. Each outcome enters a window of the last calls (a count
//!   window of the last N, or a time window of the last T); once the window holds at least
//!   `minimum_calls`, a failure rate or a slow-call rate at or above its threshold opens it.
//! - **Open**: every call is refused until the open duration has passed; the first
//!   [`try_acquire`](CircuitBreaker::try_acquire) after that makes it half-open (lazily: no
//!   timer thread) and is let through as a probe.
//! - **Half-open**: `half_open_probes` calls are let through; once they have all answered,
//!   it opens again (for longer) if their failure or slow rate reaches the threshold, and
//!   closes otherwise.
//! - **Held open**: opened by hand ([`open`](CircuitBreaker::open)), until
//!   [`close`](CircuitBreaker::close).
//!
//! Every guard takes the time as an argument, read by the caller from the clock the retries
//! use, so the breaker is tested on a fake clock. Every state change emits one `tracing`
//! event with target `resilience::breaker` and the field `breaker` (its name).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use resilience::breaker::{CircuitBreaker, CircuitState, Outcome};
//!
//! static GEMINI: CircuitBreaker = CircuitBreaker::new("gemini")
//!     .count_window(20)
//!     .minimum_calls(10)
//!     .open_for(Duration::from_secs(30));
//!
//! let now = Instant::now();
//! for _ in 0..10 {
//!     let permit = GEMINI.try_acquire(now).expect("closed: the call passes");
//!     GEMINI.record(permit, Outcome::Failure, now);
//! }
//! assert!(matches!(GEMINI.state(now), CircuitState::Open { .. }));
//! let refused = GEMINI.try_acquire(now).unwrap_err();
//! assert!(refused.to_string().starts_with("circuit `gemini` is open: next probe in"));
//! ```

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::fleet::{Answer, BreakerRule, FleetCircuit, FleetOutcome, FleetState};
use crate::keyed::{KeyedGuard, Shared};
use crate::origin::{duration_nanos, instant, nanos};

/// The target of the breaker's events: a filter `resilience::breaker=info` shows them.
const TARGET: &str = "resilience::breaker";

/// The windows hold at most this many outcomes: 16 words of 64 bits, so no allocation.
const MAX_COUNT_WINDOW: u32 = 1024;

/// A time window is kept in this many buckets.
const BUCKETS: usize = 16;

/// The state's tag in the low bits of [`CircuitBreaker::word`]; the generation is above it.
const TAG_BITS: u32 = 2;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const HELD_OPEN: u64 = 3;

/// A circuit breaker: see the [module](self) for its states.
///
/// Built in a `const` context, so it can be a `static` shared by all callers:
///
/// ```
/// use std::time::Duration;
/// use resilience::breaker::CircuitBreaker;
///
/// static STORAGE: CircuitBreaker = CircuitBreaker::new("storage")
///     .time_window(Duration::from_secs(60))
///     .minimum_calls(20)
///     .failure_rate(0.25)
///     .slow_calls(Duration::from_secs(5), 0.5)
///     .open_for(Duration::from_secs(10))
///     .half_open_probes(3);
/// assert_eq!(STORAGE.name(), "storage");
/// ```
pub struct CircuitBreaker {
    settings: Settings,
    /// The state's tag and generation, `generation << 2 | tag`, written under the lock at
    /// every change and read without it: a closed breaker lets a call through on one load.
    word: AtomicU64,
    state: Mutex<State>,
    /// Where a fleet's circuit is kept, when the breaker is a fleet's (see
    /// [`shared`](Self::shared)).
    fleet: Option<&'static dyn FleetState>,
    /// The fleet's circuit as last answered: 0 closed, else when it may be probed (in
    /// [`nanos`] of the real clock), so that a call asks the fleet only when a probe is due.
    view: AtomicU64,
}

/// What the builders set; never changed afterwards.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Settings {
    name: &'static str,
    failure_rate: f64,
    window: WindowKind,
    minimum_calls: u32,
    slow_nanos: u64,
    slow_rate: f64,
    open_nanos: u64,
    growth: f64,
    max_open_nanos: u64,
    jitter: f64,
    probes: u32,
    /// A fleet's breaker opens only when at least this many processes reported failures.
    quorum: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowKind {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `n` nanoseconds.
    Time(u64),
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the name is in its events and errors), with
    /// resilience4j's defaults: it opens when 50 % of the last 100 calls failed (a count
    /// window of 100 calls, at least 100 calls seen); it stays open 60 s, then lets 10
    /// probes through in half-open. Slow calls are not counted unless
    /// [`slow_calls`](Self::slow_calls) is set (resilience4j counts calls over 60 s, and
    /// opens when all of them are): so a closed breaker reads no clock.
    ///
    /// Two settings resilience4j does not have by default: each consecutive opening (the
    /// probes failed) doubles the open duration, up to 10 minutes ([`open_growth`]), and
    /// every open duration is scaled by a random factor in [0.9, 1.1] ([`open_jitter`]), so
    /// that the breakers of many processes do not probe a recovering service in step.
    ///
    /// [`open_growth`]: Self::open_growth
    /// [`open_jitter`]: Self::open_jitter
    pub const fn new(name: &'static str) -> Self {
        Self::with_settings(Settings {
            name,
            failure_rate: 0.5,
            window: WindowKind::Count(100),
            minimum_calls: 100,
            // Off: no call is slower than the end of time. resilience4j's default (60 s at
            // 100 %) opens only when every call of the window took a minute, and would cost
            // every call a second clock read.
            slow_nanos: u64::MAX,
            slow_rate: 1.0,
            open_nanos: 60_000_000_000,
            growth: 2.0,
            max_open_nanos: 600_000_000_000,
            jitter: 0.1,
            probes: 10,
            quorum: 2,
        })
    }

    const fn with_settings(settings: Settings) -> Self {
        Self {
            settings,
            word: AtomicU64::new(CLOSED),
            state: Mutex::new(State::new()),
            fleet: None,
            view: AtomicU64::new(0),
        }
    }

    /// The breaker of a whole fleet of processes, its circuit kept in `fleet` (such as
    /// `resilience::redis::RedisState`, feature `redis`): the fleet's outcomes open it for
    /// every process, once failures come from at least [`quorum`](Self::quorum) of them, so
    /// one bad process cannot open it for all; the half-open probes are shared too. It counts
    /// over a time window (its [`time_window`](Self::time_window), 10 s unless set). While
    /// the backend cannot answer, this process decides alone, on this breaker's own state.
    #[must_use]
    pub const fn shared(self, fleet: &'static dyn FleetState) -> Self {
        Self {
            fleet: Some(fleet),
            ..self
        }
    }

    /// How many processes must report failures before a [shared](Self::shared) breaker
    /// opens (default 2; 1 lets any one process open it).
    #[must_use]
    pub const fn quorum(self, processes: u32) -> Self {
        Self {
            settings: Settings {
                quorum: if processes == 0 { 1 } else { processes },
                ..self.settings
            },
            ..self
        }
    }

    /// Whether the breaker is a fleet's (see [`shared`](Self::shared)).
    pub fn is_shared(&self) -> bool {
        self.fleet.is_some()
    }

    /// The rule as a fleet backend runs it.
    pub fn rule(&self) -> BreakerRule {
        let s = &self.settings;
        BreakerRule {
            failure_rate: s.failure_rate,
            window: match s.window {
                WindowKind::Time(span) => Duration::from_nanos(span),
                WindowKind::Count(_) => FLEET_WINDOW,
            },
            minimum_calls: s.minimum_calls,
            quorum: s.quorum,
            open_for: Duration::from_nanos(s.open_nanos),
            growth: s.growth,
            max_open: Duration::from_nanos(s.max_open_nanos),
            probes: s.probes,
        }
    }

    /// Keeps the fleet's answer as this process's view of its circuit, at `now` (the real
    /// clock: the fleet's durations are the backend's).
    fn see(&self, answer: Answer<FleetCircuit>, now: Instant) {
        let view = match answer {
            Answer::Decided(FleetCircuit::Closed) => 0,
            Answer::Decided(FleetCircuit::Open { retry_in }) => {
                nanos(now).saturating_add(duration_nanos(retry_in)).max(1)
            }
            Answer::Decided(FleetCircuit::Busy { retry_in }) => nanos(now)
                .saturating_add(duration_nanos(retry_in.min(BUSY_RECHECK)))
                .max(1),
            // A probe granted, or no answer: the view stays as it was.
            Answer::Decided(FleetCircuit::Probe) | Answer::Unavailable { .. } => return,
        };
        self.view.store(view, Ordering::Relaxed);
    }

    /// Opens when at least this share of the calls in the window failed (`0 < ratio <= 1`;
    /// default 0.5). Also the threshold for the half-open probes.
    ///
    /// # Panics
    ///
    /// If `ratio` is not in (0, 1]. In a `static`, the breaker's intended use, that is a
    /// compile error:
    ///
    /// ```compile_fail,E0080
    /// use resilience::breaker::CircuitBreaker;
    ///
    /// static BAD: CircuitBreaker = CircuitBreaker::new("bad").failure_rate(1.5);
    /// ```
    #[must_use]
    pub const fn failure_rate(self, ratio: f64) -> Self {
        assert!(
            ratio > 0.0 && ratio <= 1.0,
            "CircuitBreaker::failure_rate: the ratio must be in (0, 1]"
        );
        Self {
            settings: Settings {
                failure_rate: ratio,
                ..self.settings
            },
            ..self
        }
    }

    /// The window holds the last `calls` outcomes (1 to 1024; default 100), kept as bits.
    ///
    /// A `minimum_calls` above `calls` counts as `calls`, as in resilience4j: the window can
    /// never hold more.
    ///
    /// # Panics
    ///
    /// If `calls` is 0 or above 1024. In a `static`, the breaker's intended use, that is a
    /// compile error.
    #[must_use]
    pub const fn count_window(self, calls: u32) -> Self {
        assert!(
            calls >= 1 && calls <= MAX_COUNT_WINDOW,
            "CircuitBreaker::count_window: the window must hold 1 to 1024 calls"
        );
        Self {
            settings: Settings {
                window: WindowKind::Count(calls),
                ..self.settings
            },
            ..self
        }
    }

    /// The window holds the calls of the last `window` instead, kept in 16 buckets of
    /// `window / 16`: a bucket is forgotten whole, so the calls counted are those of the
    /// last 15/16 of `window` to the whole of it.
    ///
    /// # Panics
    ///
    /// If `window` is zero. In a `static`, the breaker's intended use, that is a compile
    /// error.
    #[must_use]
    pub const fn time_window(self, window: Duration) -> Self {
        assert!(
            !window.is_zero(),
            "CircuitBreaker::time_window: the window must be longer than zero"
        );
        Self {
            settings: Settings {
                window: WindowKind::Time(duration_nanos(window)),
                ..self.settings
            },
            ..self
        }
    }

    /// It does not open before the window holds at least `calls` calls (default 100): a
    /// rate over three calls says little.
    ///
    /// # Panics
    ///
    /// If `calls` is 0. In a `static`, the breaker's intended use, that is a compile error.
    #[must_use]
    pub const fn minimum_calls(self, calls: u32) -> Self {
        assert!(
            calls >= 1,
            "CircuitBreaker::minimum_calls: at least 1 call is needed"
        );
        Self {
            settings: Settings {
                minimum_calls: calls,
                ..self.settings
            },
            ..self
        }
    }

    /// A call that took longer than `slower_than` (from `try_acquire` to `record`, whatever
    /// its outcome) is slow; it opens when at least `rate` of the calls in the window were
    /// (`0 < rate <= 1`). Default: off (resilience4j's is 60 s at 100 %, which opens only
    /// when every call of the window took a minute); with it set, every call reads the clock
    /// when it ends, to measure itself.
    ///
    /// # Panics
    ///
    /// If `rate` is not in (0, 1]. In a `static`, the breaker's intended use, that is a
    /// compile error.
    #[must_use]
    pub const fn slow_calls(self, slower_than: Duration, rate: f64) -> Self {
        assert!(
            rate > 0.0 && rate <= 1.0,
            "CircuitBreaker::slow_calls: the rate must be in (0, 1]"
        );
        Self {
            settings: Settings {
                slow_nanos: duration_nanos(slower_than),
                slow_rate: rate,
                ..self.settings
            },
            ..self
        }
    }

    /// How long the first opening lasts (default 60 s), before jitter. It is also how long
    /// the half-open probes have to answer before their slots are given out again.
    #[must_use]
    pub const fn open_for(self, duration: Duration) -> Self {
        Self {
            settings: Settings {
                open_nanos: duration_nanos(duration),
                ..self.settings
            },
            ..self
        }
    }

    /// Each consecutive opening (the half-open probes failed) lasts `factor` times the one
    /// before (`factor >= 1`; 1 keeps it constant), never more than `max` before jitter
    /// (which also caps the first opening). Default: 2, 10 minutes. The growth is forgotten
    /// when the breaker closes.
    ///
    /// # Panics
    ///
    /// If `factor` is below 1 (or NaN). In a `static`, the breaker's intended use, that is a
    /// compile error.
    #[must_use]
    pub const fn open_growth(self, factor: f64, max: Duration) -> Self {
        assert!(
            factor >= 1.0,
            "CircuitBreaker::open_growth: the factor must be at least 1"
        );
        Self {
            settings: Settings {
                growth: factor,
                max_open_nanos: duration_nanos(max),
                ..self.settings
            },
            ..self
        }
    }

    /// Each open duration is scaled by a random factor in `[1 - fraction, 1 + fraction]`
    /// (`0 <= fraction < 1`; 0 turns it off; default 0.1), drawn after growth and its cap,
    /// so that the breakers of many processes, opened together, do not all probe together.
    ///
    /// # Panics
    ///
    /// If `fraction` is not in [0, 1). In a `static`, the breaker's intended use, that is a
    /// compile error.
    #[must_use]
    pub const fn open_jitter(self, fraction: f64) -> Self {
        assert!(
            fraction >= 0.0 && fraction < 1.0,
            "CircuitBreaker::open_jitter: the fraction must be in [0, 1)"
        );
        Self {
            settings: Settings {
                jitter: fraction,
                ..self.settings
            },
            ..self
        }
    }

    /// How many calls are let through in half-open (at least 1; default 10); it closes or
    /// opens again once they have all answered.
    ///
    /// # Panics
    ///
    /// If `probes` is 0. In a `static`, the breaker's intended use, that is a compile error.
    #[must_use]
    pub const fn half_open_probes(self, probes: u32) -> Self {
        assert!(
            probes >= 1,
            "CircuitBreaker::half_open_probes: at least 1 probe is needed"
        );
        Self {
            settings: Settings {
                probes,
                ..self.settings
            },
            ..self
        }
    }

    /// The breaker's name, as its events and errors show it.
    pub const fn name(&self) -> &'static str {
        self.settings.name
    }

    /// Asks to start an attempt at `now`: a [`Permit`] to hand back to [`record`] once the
    /// attempt has an outcome, or [`BreakerOpen`] if the breaker refuses it.
    ///
    /// When closed, this is one atomic load and no lock. When open and its duration has
    /// passed, this call makes it half-open and is its first probe. In half-open, once all
    /// probes are out, further calls are refused with `retry_in` the time until the probes'
    /// slots are given out again if none of them answers (an upper bound: answered probes
    /// close or reopen it sooner).
    ///
    /// [`record`]: Self::record
    #[inline]
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, BreakerOpen> {
        self.try_acquire_at(|| now)
    }

    /// [`try_acquire`](Self::try_acquire) with the time read only when it is needed: a
    /// closed breaker without slow-call detection reads no clock at all (what a retried call
    /// uses, so that its success path costs one atomic load here).
    #[inline]
    pub fn try_acquire_at(&self, now: impl FnOnce() -> Instant) -> Result<Permit, BreakerOpen> {
        let word = self.word.load(Ordering::Acquire);
        if word & TAG_MASK == CLOSED {
            return Ok(Permit {
                started: if self.settings.slow_on() {
                    nanos(now())
                } else {
                    0
                },
                probe: false,
                generation: word >> TAG_BITS,
            });
        }
        self.acquire_locked(nanos(now()))
    }

    /// The path of every state but closed: under the lock.
    #[inline(never)]
    fn acquire_locked(&self, now: u64) -> Result<Permit, BreakerOpen> {
        let mut state = self.lock();
        let generation = state.generation;
        let (result, change) = state.acquire(&self.settings, now);
        self.publish(&state, generation);
        drop(state);
        if let Some(change) = change {
            change.emit(&self.settings);
        }
        result
    }

    /// Hands back the permit of an attempt that ended at `now` with `outcome`.
    ///
    /// [`Outcome::Ignored`] counts as a success (the service answered). A permit issued
    /// before the last state change (before it opened, closed, or gave the half-open probes'
    /// slots out again) is ignored: its call belongs to a state that is over.
    pub fn record(&self, permit: Permit, outcome: Outcome, now: Instant) {
        self.record_at(permit, outcome, || now);
    }

    /// [`record`](Self::record) with the time read only when it is needed: for a slow-call
    /// check, a time window, a probe, or a change of state. A success in a closed count
    /// window reads no clock.
    pub fn record_at(&self, permit: Permit, outcome: Outcome, now: impl FnOnce() -> Instant) {
        // The generation only grows, so a permit that is already stale needs no lock.
        if self.word.load(Ordering::Acquire) >> TAG_BITS != permit.generation {
            return;
        }
        let mut now = LazyNanos {
            read: Some(now),
            at: 0,
        };
        let mut state = self.lock();
        let generation = state.generation;
        let change = state.record(&self.settings, permit, outcome, &mut now);
        self.publish(&state, generation);
        drop(state);
        if let Some(change) = change {
            change.emit(&self.settings);
        }
    }

    /// Hands back the permit of an attempt that never ran (a rate limiter after the breaker
    /// refused it): nothing is counted, and a half-open probe's slot is free again at once,
    /// rather than after the open duration that a lost probe is given. Each permit is
    /// handed back once, by [`record`](Self::record) or by `release`.
    pub fn release(&self, permit: Permit) {
        if !permit.probe || self.word.load(Ordering::Acquire) >> TAG_BITS != permit.generation {
            return;
        }
        let mut state = self.lock();
        if state.generation != permit.generation {
            return;
        }
        if let Mode::HalfOpen(mut probes) = state.mode
            && probes.issued > probes.recorded
        {
            probes.issued -= 1;
            state.mode = Mode::HalfOpen(probes);
        }
    }

    /// The state at `now`. An open breaker whose duration has passed reads as half-open,
    /// which the next [`try_acquire`](Self::try_acquire) makes it; reading changes nothing.
    pub fn state(&self, now: Instant) -> CircuitState {
        let now = nanos(now);
        match self.lock().mode {
            Mode::Open { until } if now >= until => CircuitState::HalfOpen,
            mode => mode.public(),
        }
    }

    /// Manual: held open (every call refused, [`BreakerOpen::retry_in`] `None`) until
    /// [`close`](Self::close), whatever the calls' outcomes and however long it takes.
    pub fn open(&self) {
        let mut state = self.lock();
        let generation = state.generation;
        let change = (!matches!(state.mode, Mode::HeldOpen)).then(|| {
            state.enter(Mode::HeldOpen);
            Change::HeldOpen
        });
        self.publish(&state, generation);
        drop(state);
        if let Some(change) = change {
            change.emit(&self.settings);
        }
    }

    /// Manual: closed, window emptied, consecutive openings forgotten (the next opening
    /// lasts `open_for`). On a closed breaker it only empties the window, and emits nothing.
    pub fn close(&self) {
        let mut state = self.lock();
        let generation = state.generation;
        state.window.clear(self.settings.window);
        state.openings = 0;
        let change = (!matches!(state.mode, Mode::Closed)).then(|| {
            state.enter(Mode::Closed);
            Change::ClosedByHand
        });
        self.publish(&state, generation);
        drop(state);
        if let Some(change) = change {
            change.emit(&self.settings);
        }
    }

    /// The state, whoever panicked while holding it: nothing here panics under the lock,
    /// and every change leaves it consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the new tag and generation for the lock-free readers, if they changed.
    fn publish(&self, state: &State, before: u64) {
        if state.generation != before {
            self.word.store(state.word(), Ordering::Release);
        }
    }
}

impl KeyedGuard for CircuitBreaker {
    fn fresh(&self) -> Self {
        Self {
            fleet: self.fleet,
            ..Self::with_settings(self.settings)
        }
    }

    fn key_name(&self, key: &dyn fmt::Display) -> Option<std::sync::Arc<str>> {
        self.fleet
            .map(|_| std::sync::Arc::from(format!("{}:{key}", self.settings.name)))
    }
}

/// The window a [shared](CircuitBreaker::shared) breaker set with a count window counts
/// over: a fleet's calls come in no one order, so it needs a time.
const FLEET_WINDOW: Duration = Duration::from_secs(10);

/// How a fleet's breaker lets a call through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// This process's own breaker let it through (no fleet, or the fleet did not answer).
    Local(Permit),
    /// The fleet's circuit did: closed, or half-open with this call as a probe.
    Fleet {
        /// Whether it is a probe.
        probe: bool,
    },
}

impl Shared<CircuitBreaker> {
    /// The key the fleet's backend keeps this breaker under: its name, or `name:key` for one
    /// key of a [`Keyed`](crate::keyed::Keyed).
    pub fn fleet_key(&self) -> &str {
        self.key_name().unwrap_or(self.settings.name)
    }

    /// Asks to start an attempt: this process's breaker when it is not a fleet's or the
    /// fleet cannot answer; else the fleet's circuit as last seen, the fleet itself asked (on
    /// this thread) only when a probe is due.
    #[inline]
    pub fn pass_blocking(&self, now: impl FnOnce() -> Instant) -> Result<Pass, BreakerOpen> {
        match self.fleet_view() {
            FleetView::Local => self.try_acquire_at(now).map(Pass::Local),
            FleetView::Decided(decided) => decided,
            FleetView::ProbeDue(fleet) => {
                let answer = fleet.breaker_probe_blocking(self.fleet_key(), self.rule());
                self.probed(answer, now)
            }
        }
    }

    /// [`pass_blocking`](Self::pass_blocking) for an async caller: the fleet's answer to a
    /// probe is awaited.
    pub async fn pass_async(&self, now: impl FnOnce() -> Instant) -> Result<Pass, BreakerOpen> {
        match self.fleet_view() {
            FleetView::Local => self.try_acquire_at(now).map(Pass::Local),
            FleetView::Decided(decided) => decided,
            FleetView::ProbeDue(fleet) => {
                let answer = fleet.breaker_probe(self.fleet_key(), self.rule()).await;
                self.probed(answer, now)
            }
        }
    }

    /// Whether the call needs the fleet asked before it may go (a probe is due).
    pub fn probe_due(&self) -> bool {
        matches!(self.fleet_view(), FleetView::ProbeDue(_))
    }

    /// Whether this process's breaker is held open by hand ([`CircuitBreaker::open`]): that
    /// wins over the fleet's circuit, for this process.
    fn held_open(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TAG_MASK == HELD_OPEN
    }

    /// Hands back how the attempt was let through, with its outcome: to this process's
    /// breaker, or to the fleet's (which answers with its circuit, kept as this process's
    /// view), reading the clock only when needed.
    #[inline]
    pub fn record_pass(&self, pass: Pass, outcome: Outcome, now: impl FnOnce() -> Instant) {
        match pass {
            Pass::Local(permit) => {
                self.record_at(permit, outcome, now);
                // While the fleet is away its outcomes still go to it: the backend tries it
                // again at its own pace, and its answer brings this process back.
                if self.fleet.is_some() {
                    self.record_in_fleet(false, outcome);
                }
            }
            Pass::Fleet { probe } => self.record_in_fleet(probe, outcome),
        }
    }

    /// Hands back a pass whose attempt never ran (a rate limiter refused it after this
    /// breaker let it through): a probe's slot, this process's or the fleet's, is free again.
    pub fn release_pass(&self, pass: Pass) {
        match (pass, self.fleet) {
            (Pass::Local(permit), _) => self.release(permit),
            (Pass::Fleet { probe: true }, Some(fleet)) => {
                fleet.breaker_release(self.fleet_key(), self.rule());
            }
            (Pass::Fleet { .. }, _) => {}
        }
    }

    /// A fleet pass's outcome, sent to the fleet, whose answer becomes this process's view.
    #[inline(never)]
    fn record_in_fleet(&self, probe: bool, outcome: Outcome) {
        let Some(fleet) = self.fleet else { return };
        let seen = self.clone();
        let outcome = FleetOutcome {
            failed: outcome == Outcome::Failure,
            probe,
        };
        fleet.breaker_record(
            self.fleet_key(),
            self.rule(),
            outcome,
            jitter_factor(self.settings.jitter),
            Box::new(move |answer| seen.see(answer, Instant::now())),
        );
    }

    /// The fleet's circuit as this process last saw it; this process's own breaker when it
    /// is not a fleet's, the fleet cannot answer, or it is held open here by hand.
    #[inline]
    fn fleet_view(&self) -> FleetView {
        let Some(fleet) = self.fleet else {
            return FleetView::Local;
        };
        if self.held_open() || !fleet.is_reachable() {
            return FleetView::Local;
        }
        let view = self.view.load(Ordering::Relaxed);
        if view == 0 {
            return FleetView::Decided(Ok(Pass::Fleet { probe: false }));
        }
        let now = nanos(Instant::now());
        if now < view {
            return FleetView::Decided(Err(BreakerOpen {
                breaker: self.settings.name,
                retry_in: Some(Duration::from_nanos(view - now)),
            }));
        }
        FleetView::ProbeDue(fleet)
    }

    /// The fleet's answer to a probe request as this call's pass.
    fn probed(
        &self,
        answer: Answer<FleetCircuit>,
        now: impl FnOnce() -> Instant,
    ) -> Result<Pass, BreakerOpen> {
        self.see(answer, Instant::now());
        match answer {
            Answer::Decided(FleetCircuit::Closed) => Ok(Pass::Fleet { probe: false }),
            Answer::Decided(FleetCircuit::Probe) => Ok(Pass::Fleet { probe: true }),
            Answer::Decided(FleetCircuit::Open { retry_in }) => Err(BreakerOpen {
                breaker: self.settings.name,
                retry_in: Some(retry_in),
            }),
            Answer::Decided(FleetCircuit::Busy { retry_in }) => Err(BreakerOpen {
                breaker: self.settings.name,
                retry_in: Some(retry_in.min(BUSY_RECHECK)),
            }),
            Answer::Unavailable { .. } => self.try_acquire_at(now).map(Pass::Local),
        }
    }
}

/// While the fleet's probes are all out, a process asks again this often: their answers
/// may close the circuit long before the probes would count as lost, and a process that
/// refuses every call sends no outcome that would bring it the news.
const BUSY_RECHECK: Duration = Duration::from_millis(500);

/// What the view says of a fleet's breaker.
enum FleetView {
    /// Not a fleet's, the fleet cannot answer, or held open here: this process's breaker decides.
    Local,
    /// The view decides.
    Decided(Result<Pass, BreakerOpen>),
    /// A probe is due: the fleet must be asked.
    ProbeDue(&'static dyn FleetState),
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock().mode.public();
        f.debug_struct("CircuitBreaker")
            .field("name", &self.settings.name)
            .field("state", &state)
            .finish()
    }
}

/// Proof that an attempt was let through, handed back to [`CircuitBreaker::record`]. Plain
/// data (`Copy`, no borrow), so the retry loop can keep it in its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// When the attempt started, in [`nanos`]: a slow call is measured from here.
    started: u64,
    /// Whether it is one of the half-open probes.
    probe: bool,
    /// The breaker's generation when it was issued: `record` ignores it after a change.
    generation: u64,
}

impl Permit {
    /// The same permit for an attempt that starts `by` later (after a rate limiter's wait):
    /// a slow call is measured from the attempt's start.
    #[must_use]
    pub fn delayed(self, by: Duration) -> Permit {
        Permit {
            started: match self.started {
                0 => 0,
                started => started.saturating_add(duration_nanos(by)),
            },
            ..self
        }
    }
}

/// What an attempt came to, as the classifier says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered.
    Success,
    /// A retryable error: the service's fault (a 503, a timeout, a reset connection).
    Failure,
    /// A non-retryable error (a 400: the caller's fault). The service answered, so it
    /// counts as a success, in the window and among the probes.
    Ignored,
}

/// The state of a breaker, as [`CircuitBreaker::state`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open {
        /// When the next call will be let through, as a probe (jitter included).
        until: Instant,
    },
    /// A few probes are let through; their outcomes close it or open it again.
    HalfOpen,
    /// Opened by hand: calls are refused until [`CircuitBreaker::close`].
    HeldOpen,
}

/// The error of a refused attempt: `circuit `gemini` is open: next probe in 12.3s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen {
    /// The breaker's name.
    pub breaker: &'static str,
    /// How long until a call may be let through again; `None` when held open by hand.
    pub retry_in: Option<Duration>,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_in {
            Some(wait) => write!(
                f,
                "circuit `{}` is open: next probe in {:.1}s",
                self.breaker,
                wait.as_secs_f64()
            ),
            None => write!(f, "circuit `{}` is held open", self.breaker),
        }
    }
}

impl Error for BreakerOpen {}

/// What the lock guards.
struct State {
    mode: Mode,
    /// Grows at every change of `mode`, and when lost probes' slots are given out again.
    generation: u64,
    /// Openings since it was last closed, minus one: how often the open duration has grown.
    openings: u32,
    /// The last open duration (grown, jittered): also the time probes have to answer.
    last_open: u64,
    window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open {
        /// In [`nanos`].
        until: u64,
    },
    HalfOpen(Probes),
    HeldOpen,
}

/// The half-open probes of the current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probes {
    /// Slots given out, the recorded ones included.
    issued: u32,
    recorded: u32,
    failures: u32,
    slow: u32,
    /// When a probe's slot was last given out, or a probe last answered: the outstanding
    /// probes count as lost `last_open` after it.
    progress: u64,
}

/// The outcomes in a window, or among the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Why it opened: the outcomes of which a rate reached its threshold.
#[derive(Debug, Clone, Copy)]
struct Rates {
    calls: u32,
    failures: u32,
    slow: u32,
    /// The failure rate reached its threshold (else the slow rate did).
    by_failures: bool,
}

impl State {
    const fn new() -> Self {
        Self {
            mode: Mode::Closed,
            generation: 0,
            openings: 0,
            last_open: 0,
            window: Window::Count(CountWindow::EMPTY),
        }
    }

    fn word(&self) -> u64 {
        let tag = match self.mode {
            Mode::Closed => CLOSED,
            Mode::Open { .. } => OPEN,
            Mode::HalfOpen(_) => HALF_OPEN,
            Mode::HeldOpen => HELD_OPEN,
        };
        (self.generation << TAG_BITS) | tag
    }

    /// Every change of mode starts a generation, so the permits of the last one are ignored.
    fn enter(&mut self, mode: Mode) {
        self.mode = mode;
        self.generation = self.generation.wrapping_add(1) & (u64::MAX >> TAG_BITS);
    }

    fn permit(&self, now: u64, probe: bool) -> Permit {
        Permit {
            started: now,
            probe,
            generation: self.generation,
        }
    }

    fn acquire(
        &mut self,
        settings: &Settings,
        now: u64,
    ) -> (Result<Permit, BreakerOpen>, Option<Change>) {
        let refused = |retry_in: Option<u64>| BreakerOpen {
            breaker: settings.name,
            retry_in: retry_in.map(Duration::from_nanos),
        };
        match self.mode {
            // The lock-free read saw another state a moment ago.
            Mode::Closed => (Ok(self.permit(now, false)), None),
            Mode::HeldOpen => (Err(refused(None)), None),
            Mode::Open { until } if now < until => (Err(refused(Some(until - now))), None),
            Mode::Open { .. } => {
                self.enter(Mode::HalfOpen(Probes {
                    issued: 1,
                    recorded: 0,
                    failures: 0,
                    slow: 0,
                    progress: now,
                }));
                (Ok(self.permit(now, true)), Some(Change::HalfOpened))
            }
            Mode::HalfOpen(mut probes) => {
                if probes.issued < settings.probes {
                    // Each slot given out restarts the probes' time, so the last one given
                    // has its whole `last_open` to answer before the slots count as lost.
                    probes.issued += 1;
                    probes.progress = now;
                    self.mode = Mode::HalfOpen(probes);
                    return (Ok(self.permit(now, true)), None);
                }
                let lost_at = probes.progress.saturating_add(self.last_open);
                if now < lost_at {
                    return (Err(refused(Some(lost_at - now))), None);
                }
                // The outstanding probes' callers are gone (a dropped future) or stuck: a
                // new generation disowns them, and their slots are given out again; the
                // answers already recorded are kept.
                probes.issued = probes.recorded + 1;
                probes.progress = now;
                self.enter(Mode::HalfOpen(probes));
                (Ok(self.permit(now, true)), None)
            }
        }
    }

    fn record<F: FnOnce() -> Instant>(
        &mut self,
        settings: &Settings,
        permit: Permit,
        outcome: Outcome,
        now: &mut LazyNanos<F>,
    ) -> Option<Change> {
        if permit.generation != self.generation {
            return None;
        }
        let failed = outcome == Outcome::Failure;
        let slow =
            settings.slow_on() && now.get().saturating_sub(permit.started) > settings.slow_nanos;
        match &mut self.mode {
            Mode::Closed if !permit.probe => {
                // A count window keeps no time.
                let at = match settings.window {
                    WindowKind::Count(_) => 0,
                    WindowKind::Time(_) => now.get(),
                };
                self.window.push(settings.window, failed, slow, at);
                let tally = self.window.tally(settings.window, at);
                // A success in a count window that held its minimum already cannot raise a
                // rate that did not trip before: the common case skips the rates.

                let rates = settings.tripped(tally, settings.minimum())?;
                Some(self.open(settings, now.get(), rates, false))
            }
            Mode::HalfOpen(probes) if permit.probe => {
                probes.recorded = probes.recorded.saturating_add(1);
                probes.failures += u32::from(failed);
                probes.slow += u32::from(slow);
                probes.progress = now.get();
                let tally = Tally {
                    calls: probes.recorded,
                    failures: probes.failures,
                    slow: probes.slow,
                };
                if tally.calls < settings.probes {
                    return None;
                }
                match settings.tripped(tally, 1) {
                    Some(rates) => {
                        self.openings = self.openings.saturating_add(1);
                        Some(self.open(settings, now.get(), rates, true))
                    }
                    None => {
                        self.window.clear(settings.window);
                        self.openings = 0;
                        self.enter(Mode::Closed);
                        Some(Change::Closed(tally))
                    }
                }
            }
            // A permit of this generation is of this state: the arms above.
            _ => None,
        }
    }

    fn open(&mut self, settings: &Settings, now: u64, rates: Rates, again: bool) -> Change {
        let duration = settings.open_duration(self.openings, jitter_factor(settings.jitter));
        self.last_open = duration;
        self.enter(Mode::Open {
            until: now.saturating_add(duration),
        });
        Change::Opened {
            rates,
            duration,
            again,
        }
    }
}

impl Mode {
    fn public(self) -> CircuitState {
        match self {
            Mode::Closed => CircuitState::Closed,
            Mode::Open { until } => CircuitState::Open {
                until: instant(until),
            },
            Mode::HalfOpen(_) => CircuitState::HalfOpen,
            Mode::HeldOpen => CircuitState::HeldOpen,
        }
    }
}

/// The time, read from the caller's clock the first time it is asked for.
struct LazyNanos<F> {
    read: Option<F>,
    at: u64,
}

impl<F: FnOnce() -> Instant> LazyNanos<F> {
    fn get(&mut self) -> u64 {
        if let Some(read) = self.read.take() {
            self.at = nanos(read());
        }
        self.at
    }
}

impl Settings {
    /// Whether slow calls are counted (`slow_calls` was set).
    const fn slow_on(&self) -> bool {
        self.slow_nanos != u64::MAX
    }

    /// The calls the window must hold before it may open: a count window holds no more
    /// than its size.
    fn minimum(&self) -> u32 {
        match self.window {
            WindowKind::Count(size) => self.minimum_calls.min(size),
            WindowKind::Time(_) => self.minimum_calls,
        }
    }

    /// The rates of `tally`, if it holds at least `minimum` calls and one of them reaches
    /// its threshold.
    fn tripped(&self, tally: Tally, minimum: u32) -> Option<Rates> {
        if tally.calls < minimum.max(1) {
            return None;
        }
        let calls = f64::from(tally.calls);
        let failure_rate = f64::from(tally.failures) / calls;
        let slow_rate = f64::from(tally.slow) / calls;
        let by_failures = failure_rate >= self.failure_rate;
        (by_failures || slow_rate >= self.slow_rate).then_some(Rates {
            calls: tally.calls,
            failures: tally.failures,
            slow: tally.slow,
            by_failures,
        })
    }

    /// The open duration after `openings` consecutive openings: `open_for * growth^openings`,
    /// capped at the maximum, then scaled by `jitter` (a factor near 1).
    fn open_duration(&self, openings: u32, jitter: f64) -> u64 {
        let exponent = i32::try_from(openings).unwrap_or(i32::MAX);
        let grown = self.open_nanos as f64 * self.growth.powi(exponent);
        // `as` saturates, and makes NaN (0 ns times an infinite growth) zero.
        let capped = (grown as u64).min(self.max_open_nanos);
        (capped as f64 * jitter) as u64
    }
}

thread_local! {
    /// This thread's generator for the open durations' jitter, as the backoff's: a small,
    /// fast one (spread, not secrecy), seeded from the standard library's per-process
    /// random keys, made on first use.
    static JITTER: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// A factor uniform in `[1 - fraction, 1 + fraction]`; 1 when jitter is off, or when this
/// thread's generator is unavailable (while the thread is being torn down).
fn jitter_factor(fraction: f64) -> f64 {
    if fraction <= 0.0 {
        return 1.0;
    }
    JITTER
        .try_with(|jitter| {
            let Ok(mut jitter) = jitter.try_borrow_mut() else {
                return 1.0;
            };
            let rng = jitter.get_or_insert_with(|| SmallRng::seed_from_u64(random_seed()));
            rng.random_range(1.0 - fraction..=1.0 + fraction)
        })
        .unwrap_or(1.0)
}

/// A seed that differs between threads and processes: `RandomState` draws its keys from the
/// operating system once per thread and changes them with every call.
fn random_seed() -> u64 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(0u64)
}

/// The closed state's recent outcomes. It takes the shape of the settings' window at its
/// first outcome (a builder cannot replace the state in a `const fn`, so the state starts as
/// a count window whatever the settings say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    fn clear(&mut self, kind: WindowKind) {
        *self = match kind {
            WindowKind::Count(_) => Window::Count(CountWindow::EMPTY),
            WindowKind::Time(_) => Window::Time(TimeWindow::EMPTY),
        };
    }

    fn push(&mut self, kind: WindowKind, failed: bool, slow: bool, now: u64) {
        match (kind, &mut *self) {
            (WindowKind::Count(size), Window::Count(window)) => window.push(size, failed, slow),
            (WindowKind::Time(span), Window::Time(window)) => window.push(span, failed, slow, now),
            _ => {
                self.clear(kind);
                self.push(kind, failed, slow, now);
            }
        }
    }

    fn tally(&self, kind: WindowKind, now: u64) -> Tally {
        match (kind, self) {
            (WindowKind::Count(_), Window::Count(window)) => window.tally(),
            (WindowKind::Time(span), Window::Time(window)) => window.tally(span, now),
            _ => Tally {
                calls: 0,
                failures: 0,
                slow: 0,
            },
        }
    }
}

/// The last `size` outcomes as bits in a ring: bit `i` of the sets is the `i`-th slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CountWindow {
    failures: [u64; 16],
    slow: [u64; 16],
    /// The slot the next outcome goes to.
    head: u32,
    /// Slots holding an outcome (the window's size once it is full).
    filled: u32,
    /// Set bits among the filled slots, kept so a tally reads three numbers.
    failed: u32,
    slowed: u32,
}

impl CountWindow {
    const EMPTY: Self = Self {
        failures: [0; 16],
        slow: [0; 16],
        head: 0,
        filled: 0,
        failed: 0,
        slowed: 0,
    };

    fn push(&mut self, size: u32, failed: bool, slow: bool) {
        let size = size.clamp(1, MAX_COUNT_WINDOW);
        // `head < size` always; a comparison rather than a division on every call.
        let slot = if self.head < size { self.head } else { 0 };
        // `slot < 1024`, so the word index is below 16.
        let word = ((slot >> 6) as usize) & 15;
        let bit = 1u64 << (slot & 63);
        if self.filled >= size {
            // The oldest outcome is in the slot the new one takes.
            self.failed = self
                .failed
                .saturating_sub(u32::from(self.failures[word] & bit != 0));
            self.slowed = self
                .slowed
                .saturating_sub(u32::from(self.slow[word] & bit != 0));
        } else {
            self.filled += 1;
        }
        set_bit(&mut self.failures[word], bit, failed);
        set_bit(&mut self.slow[word], bit, slow);
        self.failed += u32::from(failed);
        self.slowed += u32::from(slow);
        self.head = if slot + 1 < size { slot + 1 } else { 0 };
    }

    fn tally(&self) -> Tally {
        Tally {
            calls: self.filled,
            failures: self.failed,
            slow: self.slowed,
        }
    }
}

fn set_bit(word: &mut u64, bit: u64, on: bool) {
    if on {
        *word |= bit;
    } else {
        *word &= !bit;
    }
}

/// The calls of the last `span` nanoseconds in 16 buckets of `span / 16`, bucket `e % 16`
/// holding the calls of interval `e` (the time divided by the bucket's width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeWindow {
    buckets: [Bucket; BUCKETS],
    /// The latest interval seen: the callers' clocks are read before the lock, so an
    /// outcome may arrive a little after a later one.
    latest: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    interval: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

impl TimeWindow {
    const EMPTY: Self = Self {
        buckets: [Bucket {
            interval: 0,
            calls: 0,
            failures: 0,
            slow: 0,
        }; BUCKETS],
        latest: 0,
    };

    fn width(span: u64) -> u64 {
        (span / BUCKETS as u64).max(1)
    }

    fn push(&mut self, span: u64, failed: bool, slow: bool, now: u64) {
        let interval = now / Self::width(span);
        self.latest = self.latest.max(interval);
        if self.latest - interval >= BUCKETS as u64 {
            // Older than the window already.
            return;
        }
        let bucket = &mut self.buckets[(interval % BUCKETS as u64) as usize];
        if bucket.interval != interval {
            *bucket = Bucket {
                interval,
                calls: 0,
                failures: 0,
                slow: 0,
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failed));
        bucket.slow = bucket.slow.saturating_add(u32::from(slow));
    }

    fn tally(&self, span: u64, now: u64) -> Tally {
        let latest = self.latest.max(now / Self::width(span));
        let mut tally = Tally {
            calls: 0,
            failures: 0,
            slow: 0,
        };
        // Every bucket's interval is at most `latest`: pushes raise it first.
        for bucket in self
            .buckets
            .iter()
            .filter(|b| latest - b.interval < BUCKETS as u64)
        {
            tally.calls = tally.calls.saturating_add(bucket.calls);
            tally.failures = tally.failures.saturating_add(bucket.failures);
            tally.slow = tally.slow.saturating_add(bucket.slow);
        }
        tally
    }
}

/// A state change, emitted as one event once the lock is released.
#[derive(Debug, Clone, Copy)]
enum Change {
    Opened {
        rates: Rates,
        /// In nanoseconds.
        duration: u64,
        /// From half-open: the probes failed.
        again: bool,
    },
    HalfOpened,
    /// From half-open: the probes' outcomes.
    Closed(Tally),
    HeldOpen,
    ClosedByHand,
}

impl Change {
    fn emit(self, settings: &Settings) {
        let breaker = settings.name;
        match self {
            Change::Opened {
                rates,
                duration,
                again,
            } => {
                // Percentages as `100 * count / calls`: 55 of 100 reads 55, not 55.00000000000001.
                let calls = rates.calls;
                let percent = |count: u32| f64::from(count) * 100.0 / f64::from(calls.max(1));
                let failure_rate = percent(rates.failures);
                let slow_rate = percent(rates.slow);
                let open_ms = duration / 1_000_000;
                let (what, of, noun) = if again {
                    ("opened again", "of", "probes")
                } else {
                    ("opened", "of the last", "calls")
                };
                if rates.by_failures {
                    tracing::warn!(
                        target: TARGET,
                        breaker,
                        failure_rate,
                        slow_rate,
                        open_ms,
                        calls,
                        "circuit `{breaker}` {what} for {:.1}s: {failure_rate:.0}% {of} {calls} {noun} failed",
                        seconds(duration),
                    );
                } else {
                    tracing::warn!(
                        target: TARGET,
                        breaker,
                        failure_rate,
                        slow_rate,
                        open_ms,
                        calls,
                        "circuit `{breaker}` {what} for {:.1}s: {slow_rate:.0}% {of} {calls} {noun} took longer than {:.1}s",
                        seconds(duration),
                        seconds(settings.slow_nanos),
                    );
                }
            }
            Change::HalfOpened => tracing::info!(
                target: TARGET,
                breaker,
                probes = settings.probes,
                "circuit `{breaker}` is half-open: letting {} probes through",
                settings.probes,
            ),
            Change::Closed(tally) => tracing::info!(
                target: TARGET,
                breaker,
                probes = tally.calls,
                failures = tally.failures,
                "circuit `{breaker}` closed: {} of {} probes succeeded",
                tally.calls - tally.failures,
                tally.calls,
            ),
            Change::HeldOpen => tracing::warn!(
                target: TARGET,
                breaker,
                "circuit `{breaker}` held open by hand",
            ),
            Change::ClosedByHand => tracing::info!(
                target: TARGET,
                breaker,
                "circuit `{breaker}` closed by hand",
            ),
        }
    }
}

fn seconds(nanos: u64) -> f64 {
    Duration::from_nanos(nanos).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A window of the last 10 calls, all 10 needed, open 10 s, no jitter, 3 probes.
    fn small() -> CircuitBreaker {
        CircuitBreaker::new("test")
            .count_window(10)
            .minimum_calls(10)
            .open_for(secs(10.0))
            .open_jitter(0.0)
            .half_open_probes(3)
    }

    /// One attempt that starts and ends at `at`.
    fn call(breaker: &CircuitBreaker, at: Instant, outcome: Outcome) -> Result<(), BreakerOpen> {
        let permit = breaker.try_acquire(at)?;
        breaker.record(permit, outcome, at);
        Ok(())
    }

    fn calls(breaker: &CircuitBreaker, at: Instant, outcome: Outcome, n: usize) {
        for _ in 0..n {
            call(breaker, at, outcome).expect("let through");
        }
    }

    fn is_open(state: CircuitState) -> bool {
        matches!(state, CircuitState::Open { .. })
    }

    /// Opens `breaker` (closed, `small()`-like) at `at` with ten failures.
    fn trip(breaker: &CircuitBreaker, at: Instant) {
        calls(breaker, at, Outcome::Failure, 10);
        assert!(is_open(breaker.state(at)), "{breaker:?}");
    }

    fn until(breaker: &CircuitBreaker, now: Instant) -> Duration {
        match breaker.state(now) {
            CircuitState::Open { until } => until - now,
            other => panic!("not open: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_resilience4j_s_but_slow_calls_are_off() {
        let s = CircuitBreaker::new("d").settings;
        assert_eq!(s.name, "d");
        assert_eq!(s.failure_rate, 0.5);
        assert_eq!(s.window, WindowKind::Count(100));
        assert_eq!(s.minimum_calls, 100);
        assert!(!s.slow_on());
        assert_eq!(s.slow_rate, 1.0);
        assert_eq!(s.open_nanos, 60_000_000_000);
        assert_eq!(s.growth, 2.0);
        assert_eq!(s.max_open_nanos, 600_000_000_000);
        assert_eq!(s.jitter, 0.1);
        assert_eq!(s.probes, 10);
    }

    #[test]
    fn a_closed_count_window_without_slow_calls_reads_no_clock_on_success() {
        let b = CircuitBreaker::new("no-clock")
            .count_window(4)
            .minimum_calls(4)
            .failure_rate(1.0);
        let never = || -> Instant { panic!("the clock was read") };
        for _ in 0..10 {
            let permit = b.try_acquire_at(never).unwrap();
            b.record_at(permit, Outcome::Success, never);
        }
        // A failure that opens it needs the time, for the open duration's end.
        let t0 = Instant::now();
        for _ in 0..4 {
            let permit = b.try_acquire_at(never).unwrap();
            b.record_at(permit, Outcome::Failure, || t0);
        }
        assert!(matches!(b.state(t0), CircuitState::Open { .. }));
    }

    #[test]
    fn closed_stays_closed_below_minimum_calls() {
        let b = small();
        let t0 = Instant::now();
        calls(&b, t0, Outcome::Failure, 9);
        assert_eq!(b.state(t0), CircuitState::Closed, "9 failures of 9 calls");
        calls(&b, t0, Outcome::Failure, 1);
        assert!(is_open(b.state(t0)));
    }

    #[test]
    fn a_minimum_above_the_count_window_counts_as_its_size() {
        let b = small().minimum_calls(500);
        let t0 = Instant::now();
        trip(&b, t0);
    }

    #[test]
    fn opens_at_the_threshold_exactly_and_not_just_below() {
        let b = small(); // 50 %
        let t0 = Instant::now();
        calls(&b, t0, Outcome::Success, 5);
        calls(&b, t0, Outcome::Failure, 4);
        calls(&b, t0, Outcome::Success, 1);
        assert_eq!(b.state(t0), CircuitState::Closed, "4 of the last 10 failed");
        // The oldest success leaves the window: 5 of the last 10.
        calls(&b, t0, Outcome::Failure, 1);
        assert!(is_open(b.state(t0)), "5 of the last 10 failed");

        // A threshold that is not a power of two: 3 of 10 is 30 %.
        let b = small().failure_rate(0.3);
        calls(&b, t0, Outcome::Success, 8);
        calls(&b, t0, Outcome::Failure, 2);
        assert_eq!(b.state(t0), CircuitState::Closed, "20 %");
        calls(&b, t0, Outcome::Failure, 1);
        assert!(is_open(b.state(t0)), "30 %");
    }

    #[test]
    fn ignored_outcomes_count_as_successes_not_failures() {
        let t0 = Instant::now();
        let b = small();
        calls(&b, t0, Outcome::Ignored, 6);
        calls(&b, t0, Outcome::Failure, 4);
        assert_eq!(b.state(t0), CircuitState::Closed, "4 of 10 failed");
        calls(&b, t0, Outcome::Ignored, 100);
        assert_eq!(b.state(t0), CircuitState::Closed);

        // They are calls: 1 failure among 9 ignored reaches the minimum and 10 %.
        let b = small().failure_rate(0.1);
        calls(&b, t0, Outcome::Ignored, 9);
        assert_eq!(b.state(t0), CircuitState::Closed);
        calls(&b, t0, Outcome::Failure, 1);
        assert!(is_open(b.state(t0)));
    }

    #[test]
    fn slow_calls_open_it_whatever_their_outcome() {
        let t0 = Instant::now();
        let b = small().slow_calls(secs(1.0), 0.5);
        for i in 0..10 {
            let permit = b.try_acquire(t0).unwrap();
            // Exactly the bound is not slow; the odd calls take 2 s.
            let took = if i % 2 == 0 { 1.0 } else { 2.0 };
            let outcome = if i % 3 == 0 {
                Outcome::Ignored
            } else {
                Outcome::Success
            };
            b.record(permit, outcome, t0 + secs(took));
            if i < 9 {
                assert_eq!(b.state(t0), CircuitState::Closed, "call {i}");
            }
        }
        assert!(is_open(b.state(t0 + secs(2.0))), "5 of 10 slow");

        // Calls that take exactly the bound are not slow, even all of them.
        let b = small().slow_calls(secs(1.0), 0.1);
        for _ in 0..20 {
            let permit = b.try_acquire(t0).unwrap();
            b.record(permit, Outcome::Success, t0 + secs(1.0));
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
    }

    #[test]
    fn the_count_window_forgets_old_outcomes() {
        let t0 = Instant::now();
        let b = small();
        calls(&b, t0, Outcome::Failure, 4);
        calls(&b, t0, Outcome::Success, 6);
        // Four successes push the four failures out.
        calls(&b, t0, Outcome::Success, 4);
        calls(&b, t0, Outcome::Failure, 4);
        assert_eq!(
            b.state(t0),
            CircuitState::Closed,
            "4 of the last 10, not 8 of 18"
        );
        calls(&b, t0, Outcome::Failure, 1);
        assert!(is_open(b.state(t0)));
    }

    #[test]
    fn the_time_window_forgets_outcomes_older_than_the_window() {
        let t0 = Instant::now();
        let timed = || small().time_window(secs(16.0)).minimum_calls(4);
        let b = timed();
        calls(&b, t0, Outcome::Failure, 3);
        // 17 s later the three failures are out of the window: one call of one.
        calls(&b, t0 + secs(17.0), Outcome::Failure, 1);
        assert_eq!(b.state(t0 + secs(17.0)), CircuitState::Closed);
        calls(&b, t0 + secs(20.0), Outcome::Failure, 2);
        assert_eq!(b.state(t0 + secs(20.0)), CircuitState::Closed, "3 calls");
        calls(&b, t0 + secs(21.0), Outcome::Failure, 1);
        assert!(is_open(b.state(t0 + secs(21.0))), "4 of 4 within 16 s");

        // Within the window, the same calls open it.
        let b = timed();
        calls(&b, t0, Outcome::Failure, 3);
        calls(&b, t0 + secs(10.0), Outcome::Failure, 1);
        assert!(is_open(b.state(t0 + secs(10.0))));

        // Successes expire too: 4 old successes, then 4 failures 20 s later, is 4 of 4.
        let b = timed().failure_rate(0.9);
        calls(&b, t0, Outcome::Success, 4);
        calls(&b, t0 + secs(20.0), Outcome::Failure, 4);
        assert!(is_open(b.state(t0 + secs(20.0))));
    }

    #[test]
    fn a_late_outcome_in_the_time_window_is_counted_or_dropped_by_its_own_time() {
        let t0 = Instant::now();
        let b = small().time_window(secs(16.0)).minimum_calls(3);
        let old = b.try_acquire(t0).unwrap();
        let recent = b.try_acquire(t0 + secs(5.0)).unwrap();
        calls(&b, t0 + secs(30.0), Outcome::Failure, 1);
        // Read before the other call's clock: 16 buckets late, dropped (it must not take the
        // latest bucket, which has its index); 1 s late, counted.
        b.record(old, Outcome::Failure, t0 + secs(14.0));
        assert_eq!(b.state(t0 + secs(30.0)), CircuitState::Closed);
        b.record(recent, Outcome::Failure, t0 + secs(29.0));
        assert_eq!(b.state(t0 + secs(30.0)), CircuitState::Closed, "2 calls");
        calls(&b, t0 + secs(30.0), Outcome::Failure, 1);
        assert!(is_open(b.state(t0 + secs(30.0))));
    }

    #[test]
    fn open_refuses_with_the_time_left() {
        let t0 = Instant::now();
        let b = small();
        trip(&b, t0);
        let refused = b.try_acquire(t0 + secs(4.0)).unwrap_err();
        assert_eq!(
            refused,
            BreakerOpen {
                breaker: "test",
                retry_in: Some(secs(6.0)),
            }
        );
        assert_eq!(
            refused.to_string(),
            "circuit `test` is open: next probe in 6.0s"
        );
        assert_eq!(until(&b, t0 + secs(4.0)), secs(6.0));
        let error: Box<dyn Error> = Box::new(refused);
        assert!(error.source().is_none());
    }

    #[test]
    fn it_becomes_half_open_after_the_open_duration() {
        let t0 = Instant::now();
        let b = small();
        trip(&b, t0);
        assert!(b.try_acquire(t0 + ms(9_999)).is_err());
        // Reading the state changes nothing.
        assert_eq!(b.state(t0 + secs(10.0)), CircuitState::HalfOpen);
        assert_eq!(
            b.lock().mode,
            Mode::Open {
                until: nanos(t0 + secs(10.0))
            }
        );
        let probe = b.try_acquire(t0 + secs(10.0)).unwrap();
        assert!(probe.probe);
        assert_eq!(b.state(t0 + secs(10.0)), CircuitState::HalfOpen);
    }

    #[test]
    fn half_open_admits_exactly_n_probes() {
        let t0 = Instant::now();
        let b = small();
        trip(&b, t0);
        let at = t0 + secs(10.0);
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(at).unwrap()).collect();
        assert!(probes.iter().all(|p| p.probe));
        // Refused until the probes would count as lost: the open duration after the last
        // progress.
        let refused = b.try_acquire(at + secs(1.0)).unwrap_err();
        assert_eq!(refused.retry_in, Some(secs(9.0)));
        // A probe that answers frees no slot: the decision waits for the three.
        b.record(probes[0], Outcome::Success, at + secs(2.0));
        let refused = b.try_acquire(at + secs(2.0)).unwrap_err();
        assert_eq!(refused.retry_in, Some(secs(10.0)));
        assert_eq!(b.state(at + secs(2.0)), CircuitState::HalfOpen);
    }

    #[test]
    fn n_successful_probes_close_it_with_an_empty_window() {
        let t0 = Instant::now();
        let b = small();
        trip(&b, t0);
        let at = t0 + secs(10.0);
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(at).unwrap()).collect();
        b.record(probes[0], Outcome::Success, at);
        b.record(probes[1], Outcome::Ignored, at);
        assert_eq!(b.state(at), CircuitState::HalfOpen, "2 of 3");
        b.record(probes[2], Outcome::Failure, at);
        assert_eq!(
            b.state(at),
            CircuitState::Closed,
            "1 of 3 failed: below 50 %"
        );
        // The window starts empty: 9 failures are below the minimum.
        calls(&b, at, Outcome::Failure, 9);
        assert_eq!(b.state(at), CircuitState::Closed);
        // And the growth was forgotten: the next opening lasts the base duration.
        calls(&b, at, Outcome::Failure, 1);
        assert_eq!(until(&b, at), secs(10.0));
    }

    /// Takes the three probes at `at` and fails two of them.
    fn fail_probes(b: &CircuitBreaker, at: Instant) {
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(at).unwrap()).collect();
        b.record(probes[0], Outcome::Failure, at);
        b.record(probes[1], Outcome::Success, at);
        b.record(probes[2], Outcome::Failure, at);
    }

    #[test]
    fn failed_probes_reopen_it_for_longer_up_to_the_cap() {
        let t0 = Instant::now();
        let b = small().open_growth(2.0, secs(35.0));
        trip(&b, t0);
        assert_eq!(until(&b, t0), secs(10.0));
        let mut at = t0 + secs(10.0);
        for expected in [20.0, 35.0, 35.0] {
            fail_probes(&b, at);
            assert_eq!(until(&b, at), secs(expected), "2 of 3 probes failed");
            at += secs(expected);
        }
        // A manual close forgets the openings.
        b.close();
        trip(&b, at);
        assert_eq!(until(&b, at), secs(10.0));
    }

    #[test]
    fn slow_probes_reopen_it() {
        let t0 = Instant::now();
        let b = small().slow_calls(secs(1.0), 1.0);
        trip(&b, t0);
        let at = t0 + secs(10.0);
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(at).unwrap()).collect();
        for probe in probes {
            b.record(probe, Outcome::Success, at + secs(1.5));
        }
        assert!(is_open(b.state(at + secs(1.5))));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let t0 = Instant::now();
        let b = small().open_for(secs(100.0)).open_jitter(0.25);
        let (mut low, mut high) = (f64::MAX, 0.0f64);
        for _ in 0..1000 {
            trip(&b, t0);
            let open = until(&b, t0).as_secs_f64();
            assert!((75.0..=125.0).contains(&open), "{open}");
            low = low.min(open);
            high = high.max(open);
            b.close();
        }
        // And it does spread.
        assert!(low < 80.0 && high > 120.0, "{low} {high}");

        // The factor itself, on the cap: jitter is drawn after it.
        let s = small().open_growth(2.0, secs(30.0)).settings;
        for _ in 0..1000 {
            let factor = jitter_factor(0.1);
            assert!((0.9..=1.1).contains(&factor), "{factor}");
            let open = s.open_duration(5, factor);
            assert!((27_000_000_000..=33_000_000_000).contains(&open), "{open}");
        }
        assert_eq!(jitter_factor(0.0), 1.0);
    }

    #[test]
    fn open_durations_saturate() {
        let s = small()
            .open_for(Duration::MAX)
            .open_growth(1e300, Duration::MAX)
            .settings;
        assert_eq!(s.open_duration(u32::MAX, 1.0), u64::MAX);
        let s = small()
            .open_for(Duration::ZERO)
            .open_growth(f64::MAX, Duration::MAX)
            .settings;
        assert_eq!(s.open_duration(u32::MAX, 1.0), 0);
    }

    #[test]
    fn a_probe_given_out_late_has_its_whole_open_duration() {
        let t0 = Instant::now();
        let b = small();
        trip(&b, t0);
        let at = t0 + secs(10.0);
        let _early: Vec<Permit> = (0..2).map(|_| b.try_acquire(at).unwrap()).collect();
        // The third slot goes out 9 s later: the probes count as lost 10 s after that, not
        // 10 s after the first, which would give a fourth probe while the third is running.
        let _late = b.try_acquire(at + secs(9.0)).unwrap();
        let refused = b.try_acquire(at + secs(11.0)).unwrap_err();
        assert_eq!(refused.retry_in, Some(secs(8.0)));
        assert!(b.try_acquire(at + secs(19.0)).unwrap().probe);
    }

    #[test]
    fn a_released_probe_frees_its_slot_at_once() {
        let t0 = Instant::now();
        let b = small();
        trip(&b, t0);
        let at = t0 + secs(10.0);
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(at).unwrap()).collect();
        assert!(b.try_acquire(at).is_err());
        // One never ran (a limiter refused it): handed back, its slot is free, and nothing
        // was counted.
        b.release(probes[0]);
        let again = b.try_acquire(at).unwrap();
        assert!(again.probe);
        assert!(b.try_acquire(at).is_err(), "one slot, not more");
        for probe in [probes[1], probes[2], again] {
            b.record(probe, Outcome::Success, at);
        }
        assert_eq!(b.state(at), CircuitState::Closed, "3 successes");
        // A closed breaker's permit: nothing to give back.
        b.release(b.try_acquire(at).unwrap());
        assert_eq!(b.state(at), CircuitState::Closed);
    }

    #[test]
    fn a_lost_probe_is_given_out_again_after_the_open_duration() {
        let t0 = Instant::now();
        let b = small();
        trip(&b, t0);
        let at = t0 + secs(10.0);
        let first = b.try_acquire(at).unwrap();
        let lost: Vec<Permit> = (0..2).map(|_| b.try_acquire(at).unwrap()).collect();
        // One answers at +3 s; the other two are never recorded (their futures dropped).
        b.record(first, Outcome::Success, at + secs(3.0));
        assert_eq!(
            b.try_acquire(at + ms(12_999)).unwrap_err().retry_in,
            Some(ms(1))
        );
        // Ten seconds without an answer: the two slots are given out again.
        let again: Vec<Permit> = (0..2)
            .map(|_| b.try_acquire(at + secs(13.0)).unwrap())
            .collect();
        assert!(
            b.try_acquire(at + secs(13.0)).is_err(),
            "two slots, not three"
        );
        // The lost ones, answering after all, are ignored.
        for probe in lost {
            b.record(probe, Outcome::Failure, at + secs(14.0));
        }
        assert_eq!(b.state(at + secs(14.0)), CircuitState::HalfOpen);
        for probe in again {
            b.record(probe, Outcome::Success, at + secs(14.0));
        }
        assert_eq!(
            b.state(at + secs(14.0)),
            CircuitState::Closed,
            "3 successes"
        );
    }

    #[test]
    fn an_old_generation_permit_is_ignored() {
        let t0 = Instant::now();
        let b = small();
        let before = b.try_acquire(t0).unwrap();
        trip(&b, t0);
        // A failure from before the opening does not count against the probes.
        let at = t0 + secs(10.0);
        let probes: Vec<Permit> = (0..3).map(|_| b.try_acquire(at).unwrap()).collect();
        b.record(before, Outcome::Failure, at);
        b.record(probes[0], Outcome::Success, at);
        b.record(probes[1], Outcome::Success, at);
        b.record(probes[2], Outcome::Success, at);
        assert_eq!(b.state(at), CircuitState::Closed);
        // Nor against the window of the next closed state.
        b.record(before, Outcome::Failure, at);
        calls(&b, at, Outcome::Failure, 9);
        assert_eq!(b.state(at), CircuitState::Closed, "9 calls, not 10");
        // Nor does a probe of the last half-open state.
        b.record(probes[0], Outcome::Failure, at);
        assert_eq!(b.state(at), CircuitState::Closed);
        calls(&b, at, Outcome::Failure, 1);
        assert!(is_open(b.state(at)));
    }

    #[test]
    fn the_lock_checks_the_generation_again() {
        // Between `record`'s lock-free read and its lock, the state may change.
        let t0 = Instant::now();
        let b = small();
        let before = b.try_acquire(t0).unwrap();
        trip(&b, t0);
        b.close();
        let settings = b.settings;
        let mut state = b.lock();
        let mut now = LazyNanos {
            read: Some(|| t0),
            at: 0,
        };
        let change = state.record(&settings, before, Outcome::Failure, &mut now);
        assert!(change.is_none());
        assert_eq!(state.window.tally(settings.window, nanos(t0)).calls, 0);
    }

    #[test]
    fn manual_open_holds_it_until_close() {
        let t0 = Instant::now();
        let b = small();
        let before = b.try_acquire(t0).unwrap();
        b.open();
        assert_eq!(b.state(t0), CircuitState::HeldOpen);
        let refused = b.try_acquire(t0 + secs(1e6)).unwrap_err();
        assert_eq!(refused.retry_in, None);
        assert_eq!(refused.to_string(), "circuit `test` is held open");
        b.record(before, Outcome::Success, t0);
        assert_eq!(b.state(t0 + secs(1e6)), CircuitState::HeldOpen);

        b.close();
        assert_eq!(b.state(t0), CircuitState::Closed);
        assert!(b.try_acquire(t0).is_ok());

        // Held open from open or half-open too, and closed from there.
        trip(&b, t0);
        b.open();
        assert_eq!(b.state(t0 + secs(60.0)), CircuitState::HeldOpen);
        b.close();
        calls(&b, t0, Outcome::Failure, 9);
        assert_eq!(b.state(t0), CircuitState::Closed, "the window was emptied");
    }

    #[test]
    fn state_reads_every_state() {
        let t0 = Instant::now();
        let b = small();
        assert_eq!(b.state(t0), CircuitState::Closed);
        trip(&b, t0);
        assert_eq!(
            b.state(t0 + secs(1.0)),
            CircuitState::Open {
                until: t0 + secs(10.0)
            }
        );
        assert_eq!(b.state(t0 + secs(10.0)), CircuitState::HalfOpen);
        b.try_acquire(t0 + secs(10.0)).unwrap();
        assert_eq!(b.state(t0 + secs(10.0)), CircuitState::HalfOpen);
        b.open();
        assert_eq!(b.state(t0), CircuitState::HeldOpen);
        assert_eq!(
            format!("{b:?}"),
            "CircuitBreaker { name: \"test\", state: HeldOpen }"
        );
    }

    #[test]
    fn fresh_gives_a_closed_breaker_with_the_same_settings() {
        let t0 = Instant::now();
        let b = small().time_window(secs(30.0)).half_open_probes(2);
        trip(&b, t0);
        let fresh = b.fresh();
        assert_eq!(fresh.settings, b.settings);
        assert_eq!(fresh.state(t0), CircuitState::Closed);
        assert!(is_open(b.state(t0)));
        calls(&fresh, t0, Outcome::Failure, 9);
        assert_eq!(fresh.state(t0), CircuitState::Closed);
    }

    static SHARED: CircuitBreaker = CircuitBreaker::new("shared")
        .failure_rate(0.5)
        .count_window(4)
        .minimum_calls(4)
        .slow_calls(Duration::from_secs(1), 1.0)
        .open_for(Duration::from_secs(5))
        .open_growth(1.5, Duration::from_secs(60))
        .open_jitter(0.0)
        .half_open_probes(1);

    #[test]
    fn const_construction_works_in_a_static() {
        let t0 = Instant::now();
        assert_eq!(SHARED.name(), "shared");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| call(&SHARED, t0, Outcome::Failure));
            }
        });
        assert_eq!(until(&SHARED, t0), secs(5.0));
        call(&SHARED, t0 + secs(5.0), Outcome::Failure).unwrap();
        assert_eq!(until(&SHARED, t0 + secs(5.0)), secs(7.5));
    }

    #[test]
    fn it_is_a_shared_guard() {
        fn check<T: KeyedGuard + fmt::Debug>() {}
        check::<CircuitBreaker>();
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::failure_rate: the ratio must be in (0, 1]")]
    fn a_zero_failure_rate_panics() {
        let _ = CircuitBreaker::new("x").failure_rate(0.0);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::failure_rate")]
    fn a_nan_failure_rate_panics() {
        let _ = CircuitBreaker::new("x").failure_rate(f64::NAN);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::count_window: the window must hold 1 to 1024 calls")]
    fn a_count_window_above_1024_panics() {
        let _ = CircuitBreaker::new("x").count_window(1025);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::count_window")]
    fn an_empty_count_window_panics() {
        let _ = CircuitBreaker::new("x").count_window(0);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::time_window: the window must be longer than zero")]
    fn an_empty_time_window_panics() {
        let _ = CircuitBreaker::new("x").time_window(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::minimum_calls: at least 1 call is needed")]
    fn a_zero_minimum_panics() {
        let _ = CircuitBreaker::new("x").minimum_calls(0);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::slow_calls: the rate must be in (0, 1]")]
    fn a_slow_rate_above_one_panics() {
        let _ = CircuitBreaker::new("x").slow_calls(Duration::from_secs(1), 1.5);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::open_growth: the factor must be at least 1")]
    fn a_shrinking_growth_panics() {
        let _ = CircuitBreaker::new("x").open_growth(0.5, Duration::from_secs(1));
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::open_jitter: the fraction must be in [0, 1)")]
    fn a_full_jitter_panics() {
        let _ = CircuitBreaker::new("x").open_jitter(1.0);
    }

    #[test]
    #[should_panic(expected = "CircuitBreaker::half_open_probes: at least 1 probe is needed")]
    fn zero_probes_panic() {
        let _ = CircuitBreaker::new("x").half_open_probes(0);
    }

    /// One event as the capture saw it.
    #[derive(Debug)]
    struct Captured {
        level: tracing::Level,
        target: String,
        message: String,
        fields: Vec<(String, String)>,
    }

    impl Captured {
        fn field(&self, name: &str) -> Option<&str> {
            self.fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    thread_local! {
        /// The events of this thread, while [`captured`] runs.
        static CAPTURED: RefCell<Option<Vec<Captured>>> = const { RefCell::new(None) };
    }

    /// The process's subscriber in this test binary (`tracing-subscriber` is not a dependency
    /// here): it keeps the events of the threads that are capturing. A global one, as the
    /// facade's tests have, because a scoped subscriber (`with_default`) races with the
    /// other tests' threads over the callsites' cached interest, and misses events.
    struct Capture;

    struct Fields(Vec<(String, String)>);

    impl tracing::field::Visit for Fields {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl tracing::Subscriber for Capture {
        fn register_callsite(
            &self,
            _: &'static tracing::Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            // Asked again at every event: whether the thread is capturing changes.
            tracing::subscriber::Interest::sometimes()
        }
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            CAPTURED.with(|captured| captured.borrow().is_some())
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = Fields(Vec::new());
            event.record(&mut fields);
            let message = fields
                .0
                .iter()
                .find(|(n, _)| n == "message")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            CAPTURED.with(|captured| {
                if let Some(events) = captured.borrow_mut().as_mut() {
                    events.push(Captured {
                        level: *event.metadata().level(),
                        target: event.metadata().target().to_owned(),
                        message,
                        fields: fields.0,
                    });
                }
            });
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// The events this thread emits while `f` runs.
    fn captured(f: impl FnOnce()) -> Vec<Captured> {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(Capture).expect("the only global subscriber");
        });
        CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
        f();
        CAPTURED.with(|captured| captured.borrow_mut().take().unwrap_or_default())
    }

    #[test]
    fn every_state_change_emits_one_event() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new("gemini")
            .open_jitter(0.0)
            .open_growth(2.0, Duration::from_secs(600));
        let events = captured(|| {
            calls(&b, t0, Outcome::Success, 45);
            calls(&b, t0, Outcome::Failure, 55);
            let at = t0 + secs(60.0);
            let probes: Vec<Permit> = (0..10).map(|_| b.try_acquire(at).unwrap()).collect();
            for (i, probe) in probes.into_iter().enumerate() {
                let outcome = if i < 6 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                b.record(probe, outcome, at);
            }
            let at = at + secs(120.0);
            let probes: Vec<Permit> = (0..10).map(|_| b.try_acquire(at).unwrap()).collect();
            for probe in probes {
                b.record(probe, Outcome::Success, at);
            }
            b.open();
            b.open();
            b.close();
            b.close();
        });
        let summary: Vec<(tracing::Level, &str)> = events
            .iter()
            .map(|e| (e.level, e.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    tracing::Level::WARN,
                    "circuit `gemini` opened for 60.0s: 55% of the last 100 calls failed"
                ),
                (
                    tracing::Level::INFO,
                    "circuit `gemini` is half-open: letting 10 probes through"
                ),
                (
                    tracing::Level::WARN,
                    "circuit `gemini` opened again for 120.0s: 60% of 10 probes failed"
                ),
                (
                    tracing::Level::INFO,
                    "circuit `gemini` is half-open: letting 10 probes through"
                ),
                (
                    tracing::Level::INFO,
                    "circuit `gemini` closed: 10 of 10 probes succeeded"
                ),
                (tracing::Level::WARN, "circuit `gemini` held open by hand"),
                (tracing::Level::INFO, "circuit `gemini` closed by hand"),
            ]
        );
        assert!(events.iter().all(|e| e.target == "resilience::breaker"));
        assert!(events.iter().all(|e| e.field("breaker") == Some("gemini")));
        let opened = &events[0];
        assert_eq!(opened.field("failure_rate"), Some("55.0"));
        assert_eq!(opened.field("slow_rate"), Some("0.0"));
        assert_eq!(opened.field("open_ms"), Some("60000"));
        assert_eq!(opened.field("calls"), Some("100"));
        assert_eq!(events[2].field("open_ms"), Some("120000"));
    }

    #[test]
    fn a_slow_opening_says_so() {
        let t0 = Instant::now();
        let b = small().slow_calls(secs(2.0), 0.8);
        let events = captured(|| {
            for _ in 0..10 {
                let permit = b.try_acquire(t0).unwrap();
                b.record(permit, Outcome::Success, t0 + secs(3.0));
            }
        });
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].message,
            "circuit `test` opened for 10.0s: 100% of the last 10 calls took longer than 2.0s"
        );
        assert_eq!(events[0].field("slow_rate"), Some("100.0"));
    }

    /// The invariants of the state, checked under its lock.
    fn check_consistent(b: &CircuitBreaker) {
        let s = b.settings;
        let state = b.lock();
        assert_eq!(b.word.load(Ordering::Acquire), state.word());
        if let Mode::HalfOpen(p) = state.mode {
            assert!(p.issued <= s.probes, "{p:?}");
            assert!(p.recorded < s.probes && p.recorded <= p.issued, "{p:?}");
            assert!(p.failures <= p.recorded && p.slow <= p.recorded, "{p:?}");
        }
        // A hair of room for the float rounding of the jitter's product.
        let max_open = s.max_open_nanos as f64 * (1.0 + s.jitter) * (1.0 + 1e-9);
        assert!(state.last_open as f64 <= max_open);
        match (s.window, state.window) {
            (WindowKind::Count(size), Window::Count(w)) => {
                assert!(w.filled <= size && w.head < size);
                let ones = |bits: &[u64; 16]| -> u32 {
                    (0..w.filled)
                        .map(|slot| ((bits[slot as usize / 64] >> (slot % 64)) & 1) as u32)
                        .sum()
                };
                assert_eq!(ones(&w.failures), w.failed);
                assert_eq!(ones(&w.slow), w.slowed);
            }
            (WindowKind::Time(_), Window::Time(w)) => {
                for bucket in w.buckets {
                    assert!(bucket.interval <= w.latest);
                    assert!(bucket.failures <= bucket.calls && bucket.slow <= bucket.calls);
                }
            }
            // Not shaped yet: nothing recorded since it was built.
            (WindowKind::Time(_), Window::Count(w)) => assert_eq!(w, CountWindow::EMPTY),
            (WindowKind::Count(_), Window::Time(_)) => panic!("a time window for a count"),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Wait(u64),
        Acquire,
        Record(usize, u8, u64),
        Open,
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..3000).prop_map(Op::Wait),
            4 => Just(Op::Acquire),
            4 => (any::<usize>(), 0u8..3, 0u64..3000).prop_map(|(i, o, d)| Op::Record(i, o, d)),
            1 => Just(Op::Open),
            1 => Just(Op::Close),
        ]
    }

    proptest! {
        #[test]
        fn random_sequences_keep_the_state_consistent(
            timed in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let b = CircuitBreaker::new("prop")
                .count_window(8)
                .minimum_calls(4)
                .slow_calls(secs(1.0), 0.5)
                .open_for(secs(2.0))
                .open_growth(3.0, secs(20.0))
                .open_jitter(0.2)
                .half_open_probes(3);
            let b = if timed { b.time_window(secs(8.0)) } else { b };
            let t0 = Instant::now();
            let mut now = t0;
            let mut held: Vec<Permit> = Vec::new();
            for op in ops {
                match op {
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                    Op::Acquire => match b.try_acquire(now) {
                        Ok(permit) => held.push(permit),
                        Err(refused) => {
                            prop_assert_eq!(refused.breaker, "prop");
                            let held_open = b.state(now) == CircuitState::HeldOpen;
                            prop_assert_eq!(refused.retry_in.is_none(), held_open);
                        }
                    },
                    Op::Record(i, outcome, ms) if !held.is_empty() => {
                        let permit = held.swap_remove(i % held.len());
                        let outcome = [Outcome::Success, Outcome::Failure, Outcome::Ignored][usize::from(outcome)];
                        b.record(permit, outcome, now + Duration::from_millis(ms));
                    }
                    Op::Record(..) => {}
                    Op::Open => b.open(),
                    Op::Close => b.close(),
                }
                check_consistent(&b);
                // The live probes never exceed the slots.
                let generation = b.lock().generation;
                let live = held.iter().filter(|p| p.probe && p.generation == generation).count();
                prop_assert!(live <= 3, "{} live probes", live);
                if let CircuitState::Open { until } = b.state(now) {
                    prop_assert!(until > now);
                    prop_assert!(until - now <= secs(24.0));
                }
            }
        }
    }
}
