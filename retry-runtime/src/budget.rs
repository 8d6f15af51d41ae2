//! [`RetryBudget`]: how many retries all callers of a service may make together, so that
//! when the service fails for everybody the retries do not multiply its load.
//!
//! Two models, chosen by the constructor:
//!
//! - [`RetryBudget::ratio`], Finagle's `RetryBudget` and tower's `TpsBudget`: retries may be
//!   at most a fraction of the calls made in the last `window` (10 s), plus a floor of
//!   retries per second (10) so that a quiet service can still be retried. Each call is
//!   counted by [`deposit`](RetryBudget::deposit), each retry by
//!   [`try_withdraw`](RetryBudget::try_withdraw); the window is kept in ten slots of a tenth
//!   of it each, so a count leaves the window between 9/10 and all of `window` after it was
//!   made.
//! - [`RetryBudget::token_bucket`], the AWS SDKs' "standard" retry mode: a bucket of tokens,
//!   full at first (500), which a retry drains (5, or 10 after a timeout) and a success
//!   refills (1 for a success at the first attempt, the retry's cost back for one after
//!   retries).
//!
//! A retry loop calls `deposit` when a call starts, `try_withdraw` before each retry (and
//! gives up when it answers `false`), and `succeeded` when a call succeeds. The time is
//! passed in (`now`), read from the clock the retries wait on, so budgets are tested on fake
//! times; a budget is `const`-constructible, for a `static` shared by every caller, and
//! allocates nothing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::fleet::{Answer, BudgetRule, FleetState};
use crate::keyed::{KeyedGuard, Shared};
use crate::origin::{duration_nanos, nanos};

/// The target of the budget's `tracing` events.
const TARGET: &str = "resilience::budget";

/// The ratio model's window is kept in this many slots.
const SLOTS: usize = 10;

/// The ratio is kept in billionths, so that the check `retries <= ratio * calls + floor` is
/// exact integer arithmetic (0.57 of 100 calls is 57 retries, not 56.99...).
const RATIO_SCALE: u64 = 1_000_000_000;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A budget of retries shared by every caller of a service (a `static`, or one key of a
/// [`Keyed`](crate::keyed)), in one of two models: a ratio of the recent calls
/// ([`ratio`](Self::ratio)) or a bucket of tokens ([`token_bucket`](Self::token_bucket)).
///
/// ```
/// use std::time::Instant;
/// use resilience::budget::RetryBudget;
///
/// // 20% of the calls of the last 10 s, without Finagle's floor of 10 retries a second.
/// static GEMINI: RetryBudget = RetryBudget::ratio("gemini", 0.2).floor_per_second(0);
///
/// let now = Instant::now();
/// for _ in 0..10 {
///     GEMINI.deposit(now);
/// }
/// assert!(GEMINI.try_withdraw(now, false));
/// assert!(GEMINI.try_withdraw(now, false));
/// assert!(!GEMINI.try_withdraw(now, false), "2 retries for 10 calls");
///
/// // The AWS SDKs' standard model.
/// static S3: RetryBudget = RetryBudget::token_bucket("s3", 500);
/// assert_eq!(S3.available(now), 100);
/// ```
pub struct RetryBudget {
    name: &'static str,
    model: Model,
    /// Where a fleet's budget is kept, when the budget is a fleet's (see
    /// [`shared`](Self::shared)).
    fleet: Option<&'static dyn FleetState>,
}

// A budget is built in a `const` and allocates nothing, so the ratio model's slots are kept
// inline rather than boxed: the few hundred bytes are a `static`'s, once per service.
#[allow(clippy::large_enum_variant)]
enum Model {
    Ratio(Ratio),
    Bucket(Bucket),
}

/// The ratio model: its settings, and the window's counts behind a lock (a withdrawal
/// checks and counts in one step, so concurrent retries never overdraw it).
struct Ratio {
    settings: RatioSettings,
    window: Mutex<Window>,
}

#[derive(Clone, Copy)]
struct RatioSettings {
    /// The ratio, in billionths.
    ratio: u64,
    /// The width of one slot: the window is `SLOTS` of them.
    slot_nanos: u64,
    floor_per_second: u32,
}

impl RatioSettings {
    /// The retries the floor allows per window: `floor_per_second` times the window in
    /// seconds, rounded down.
    fn floor_retries(&self) -> u128 {
        u128::from(self.floor_per_second)
            .saturating_mul(u128::from(self.slot_nanos))
            .saturating_mul(SLOTS as u128)
            / NANOS_PER_SECOND
    }

    /// The slot a time falls in.
    fn epoch(&self, now: Instant) -> u64 {
        nanos(now) / self.slot_nanos
    }
}

/// The last `SLOTS` slots' counts, each slot reused for the epoch `SLOTS` later.
struct Window {
    slots: [Slot; SLOTS],
    /// Whether the last withdrawal was refused: events are emitted on the changes only.
    spent: bool,
}

#[derive(Clone, Copy)]
struct Slot {
    /// The slot's index in time: nanoseconds since the origin / the slot width.
    epoch: u64,
    deposits: u64,
    withdrawals: u64,
}

impl Window {
    const EMPTY: Window = Window {
        slots: [Slot {
            epoch: 0,
            deposits: 0,
            withdrawals: 0,
        }; SLOTS],
        spent: false,
    };

    /// The slot for `epoch`, emptied first if it still holds an older epoch's counts.
    fn slot(&mut self, epoch: u64) -> &mut Slot {
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        // A slot newer than `epoch` (a caller whose `now` was read just before another's)
        // is counted into as it is: a stale call is not worth losing newer counts for.
        if slot.epoch < epoch {
            *slot = Slot {
                epoch,
                deposits: 0,
                withdrawals: 0,
            };
        }
        slot
    }

    /// Deposits and withdrawals in the window that ends with `epoch`.
    fn totals(&self, epoch: u64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|slot| slot.epoch.saturating_add(SLOTS as u64) > epoch)
            .fold((0, 0), |(deposits, withdrawals), slot| {
                (
                    deposits.saturating_add(slot.deposits),
                    withdrawals.saturating_add(slot.withdrawals),
                )
            })
    }

    /// Takes one retry from the window if it allows one now: whether it did.
    fn take(&mut self, settings: &RatioSettings, epoch: u64) -> bool {
        let allowed = self.available(settings, epoch) >= 1;
        if allowed {
            let slot = self.slot(epoch);
            slot.withdrawals = slot.withdrawals.saturating_add(1);
        }
        allowed
    }

    /// Retries the window allows now: `floor + ratio * deposits - withdrawals`, rounded
    /// down, at least 0.
    fn available(&self, settings: &RatioSettings, epoch: u64) -> u64 {
        let (deposits, withdrawals) = self.totals(epoch);
        let earned = u128::from(settings.ratio).saturating_mul(u128::from(deposits))
            / u128::from(RATIO_SCALE);
        let allowed = settings.floor_retries().saturating_add(earned);
        let left = allowed.saturating_sub(u128::from(withdrawals));
        u64::try_from(left).unwrap_or(u64::MAX)
    }
}

/// The bucket model: its settings and its tokens.
struct Bucket {
    settings: BucketSettings,
    /// The tokens in the low 32 bits, and [`SPENT`] when the last withdrawal was refused: in
    /// one word, so that a refusal and a withdrawal racing agree on which one changed it.
    state: AtomicU64,
}

#[derive(Clone, Copy)]
struct BucketSettings {
    capacity: u32,
    retry_cost: u32,
    timeout_cost: u32,
    success_refund: u32,
}

impl BucketSettings {
    /// The tokens a retry costs, more after a timeout.
    fn cost(&self, timed_out: bool) -> u32 {
        if timed_out {
            self.timeout_cost
        } else {
            self.retry_cost
        }
    }
}

/// The bucket's flag: its last withdrawal was refused.
const SPENT: u64 = 1 << 32;

/// The bucket's tokens, out of its state.
fn tokens(state: u64) -> u32 {
    (state & u64::from(u32::MAX)) as u32
}

/// What a withdrawal changed, for the events emitted after it (outside any lock).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transition {
    None,
    Spent,
    Available,
}

impl RetryBudget {
    /// Finagle's and tower's `TpsBudget` model: retries may be at most `ratio` of the calls
    /// made in the last `window` (10 s, [`window`](Self::window)), plus a floor of
    /// `floor_per_second` retries per second (10, [`floor_per_second`](Self::floor_per_second)),
    /// Finagle's defaults. `ratio` 0.2 is one retry per five calls; a ratio above 1 lets a
    /// call be retried more than once on average. It is kept to the nearest billionth.
    ///
    /// # Panics
    ///
    /// If `ratio` is not a number from 0 to 1000 (NaN and infinities included). In a
    /// `static`, its intended use, the panic is a compile error:
    ///
    /// ```compile_fail
    /// use resilience::budget::RetryBudget;
    ///
    /// static WRONG: RetryBudget = RetryBudget::ratio("percent", 20.0 / 0.0);
    /// ```
    pub const fn ratio(name: &'static str, ratio: f64) -> Self {
        assert!(
            ratio >= 0.0 && ratio <= 1000.0,
            "a retry budget's ratio is a number from 0 to 1000"
        );
        Self {
            name,
            model: Model::Ratio(Ratio {
                settings: RatioSettings {
                    // Rounded to the nearest: 0.57 is 570_000_000.0000001 billionths.
                    ratio: (ratio * RATIO_SCALE as f64 + 0.5) as u64,
                    slot_nanos: 1_000_000_000,
                    floor_per_second: 10,
                },
                window: Mutex::new(Window::EMPTY),
            }),
            fleet: None,
        }
    }

    /// The same ratio budget, counting the calls and retries of the last `window` (10 s by
    /// default). It is kept in 10 slots of `window / 10` each (whole nanoseconds, at least
    /// one), so a count leaves it between 9/10 of `window` and `window` after it was made.
    ///
    /// # Panics
    ///
    /// If `window` is zero, or the budget is a token bucket, which has no window (a compile
    /// error in a `static`).
    #[must_use]
    pub const fn window(self, window: Duration) -> Self {
        assert!(
            !window.is_zero(),
            "a retry budget's window must not be zero"
        );
        let Self { name, model, fleet } = self;
        let Model::Ratio(Ratio {
            mut settings,
            window: counts,
        }) = model
        else {
            panic!("`window` is a setting of the ratio model, not of a token bucket")
        };
        let slot = duration_nanos(window) / SLOTS as u64;
        settings.slot_nanos = if slot == 0 { 1 } else { slot };
        Self {
            name,
            model: Model::Ratio(Ratio {
                settings,
                window: counts,
            }),
            fleet,
        }
    }

    /// The same ratio budget, always allowing `retries` retries per second of the window on
    /// top of the ratio (10 by default): 10 s and 10 per second allow 100 retries per window
    /// even with no call made. 0 leaves only the ratio.
    ///
    /// # Panics
    ///
    /// If the budget is a token bucket (a compile error in a `static`).
    #[must_use]
    pub const fn floor_per_second(self, retries: u32) -> Self {
        let Self { name, model, fleet } = self;
        let Model::Ratio(Ratio {
            mut settings,
            window,
        }) = model
        else {
            panic!("`floor_per_second` is a setting of the ratio model, not of a token bucket")
        };
        settings.floor_per_second = retries;
        Self {
            name,
            model: Model::Ratio(Ratio { settings, window }),
            fleet,
        }
    }

    /// The AWS SDKs' standard model: a bucket of `capacity` tokens (the SDKs: 500), full at
    /// first. A retry costs [`retry_cost`](Self::retry_cost) tokens (5), a retry after a
    /// timeout [`timeout_cost`](Self::timeout_cost) (10); a call that succeeds at its first
    /// attempt puts back [`success_refund`](Self::success_refund) (1), one that succeeds
    /// after retries puts back `retry_cost`. The bucket never holds more than `capacity`.
    pub const fn token_bucket(name: &'static str, capacity: u32) -> Self {
        Self {
            name,
            model: Model::Bucket(Bucket {
                settings: BucketSettings {
                    capacity,
                    retry_cost: 5,
                    timeout_cost: 10,
                    success_refund: 1,
                },
                state: AtomicU64::new(capacity as u64),
            }),
            fleet: None,
        }
    }

    /// The same token bucket, a retry costing `tokens` (5 by default; 0 makes retries
    /// free).
    ///
    /// # Panics
    ///
    /// If the budget is a ratio budget, which has no tokens (a compile error in a `static`).
    #[must_use]
    pub const fn retry_cost(self, tokens: u32) -> Self {
        let (name, mut bucket, fleet) = self.into_bucket(
            "`retry_cost` is a setting of the token bucket model, not of a ratio budget",
        );
        bucket.settings.retry_cost = tokens;
        Self::from_bucket(name, bucket, fleet)
    }

    /// The same token bucket, a retry after a timeout costing `tokens` (10 by default: a
    /// timeout says more about the service's state than a quick error, and a retry of it
    /// costs the service more).
    ///
    /// # Panics
    ///
    /// If the budget is a ratio budget (a compile error in a `static`).
    #[must_use]
    pub const fn timeout_cost(self, tokens: u32) -> Self {
        let (name, mut bucket, fleet) = self.into_bucket(
            "`timeout_cost` is a setting of the token bucket model, not of a ratio budget",
        );
        bucket.settings.timeout_cost = tokens;
        Self::from_bucket(name, bucket, fleet)
    }

    /// The same token bucket, a call that succeeds at its first attempt putting back
    /// `tokens` (1 by default).
    ///
    /// # Panics
    ///
    /// If the budget is a ratio budget (a compile error in a `static`).
    #[must_use]
    pub const fn success_refund(self, tokens: u32) -> Self {
        let (name, mut bucket, fleet) = self.into_bucket(
            "`success_refund` is a setting of the token bucket model, not of a ratio budget",
        );
        bucket.settings.success_refund = tokens;
        Self::from_bucket(name, bucket, fleet)
    }

    /// The parts of a token bucket, for its builders (every part moved: a `const fn` may
    /// not drop the ratio model's lock).
    #[allow(clippy::type_complexity)] // the parts, each named where it is taken apart
    const fn into_bucket(
        self,
        misuse: &'static str,
    ) -> (&'static str, Bucket, Option<&'static dyn FleetState>) {
        let Self { name, model, fleet } = self;
        let Model::Bucket(bucket) = model else {
            panic!("{}", misuse)
        };
        (name, bucket, fleet)
    }

    const fn from_bucket(
        name: &'static str,
        bucket: Bucket,
        fleet: Option<&'static dyn FleetState>,
    ) -> Self {
        Self {
            name,
            model: Model::Bucket(bucket),
            fleet,
        }
    }

    /// The budget of a whole fleet of processes, kept in `fleet` (such as
    /// `resilience::redis::RedisState`, feature `redis`): every process that names this
    /// budget pays its retries from one budget there. While the backend cannot answer, this
    /// process pays from this budget's own state (the README's "When one process is not
    /// enough").
    #[must_use]
    pub const fn shared(self, fleet: &'static dyn FleetState) -> Self {
        let Self { name, model, .. } = self;
        Self {
            name,
            model,
            fleet: Some(fleet),
        }
    }

    /// Whether the budget is a fleet's (see [`shared`](Self::shared)).
    pub fn is_shared(&self) -> bool {
        self.fleet.is_some()
    }

    /// The rule as a fleet backend runs it.
    pub fn rule(&self) -> BudgetRule {
        match &self.model {
            Model::Ratio(ratio) => BudgetRule::Ratio {
                ratio: ratio.settings.ratio as f64 / RATIO_SCALE as f64,
                window: Duration::from_nanos(
                    ratio.settings.slot_nanos.saturating_mul(SLOTS as u64),
                ),
                floor_per_second: ratio.settings.floor_per_second,
            },
            Model::Bucket(bucket) => BudgetRule::Bucket {
                capacity: bucket.settings.capacity,
                retry_cost: bucket.settings.retry_cost,
                timeout_cost: bucket.settings.timeout_cost,
            },
        }
    }

    /// What a call that succeeded gives back to the token bucket (`retried`: after retries);
    /// 0 for a ratio budget.
    fn refund(&self, retried: bool) -> u32 {
        match &self.model {
            Model::Ratio(_) => 0,
            Model::Bucket(bucket) if retried => bucket.settings.retry_cost,
            Model::Bucket(bucket) => bucket.settings.success_refund,
        }
    }

    /// The name given at construction, as events show it.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// A call started: the ratio model counts it (it earns the next retries their share);
    /// the token bucket ignores it.
    pub fn deposit(&self, now: Instant) {
        self.deposit_at(|| now);
    }

    /// [`deposit`](Self::deposit) with the time read only if the model needs it (the token
    /// bucket does not): what a retried call does, so that it reads no clock it need not.
    #[inline]
    pub fn deposit_at(&self, now: impl FnOnce() -> Instant) {
        if let Model::Ratio(ratio) = &self.model {
            let epoch = ratio.settings.epoch(now());
            let mut window = lock(&ratio.window);
            let slot = window.slot(epoch);
            slot.deposits = slot.deposits.saturating_add(1);
        }
    }

    /// A retry is about to be made after a retryable failure (`timed_out`: the failure was
    /// a timeout, which the token bucket charges more for). `true`: the retry is allowed and
    /// paid for; `false`: the budget is spent and nothing was taken.
    ///
    /// Events (target `resilience::budget`, field `budget` = the name): one WARN when the
    /// budget becomes spent (the first refusal after an allowed retry), and one INFO when a
    /// retry is allowed again after refusals; not one per refusal.
    pub fn try_withdraw(&self, now: Instant, timed_out: bool) -> bool {
        self.try_withdraw_at(|| now, timed_out)
    }

    /// [`try_withdraw`](Self::try_withdraw) with the time read only if the model needs it.
    pub fn try_withdraw_at(&self, now: impl FnOnce() -> Instant, timed_out: bool) -> bool {
        let (allowed, transition) = match &self.model {
            Model::Ratio(ratio) => Self::withdraw_ratio(ratio, now()),
            Model::Bucket(bucket) => Self::withdraw_bucket(bucket, timed_out),
        };
        match transition {
            Transition::None => {}
            Transition::Spent => self.spent_event(),
            Transition::Available => self.available_event(),
        }
        allowed
    }

    /// A retry the fleet paid for, taken from this budget where it still can be, quietly:
    /// this budget did not decide it, so it emits nothing and its spent flag stays as it was.
    fn mirror_at(&self, now: impl FnOnce() -> Instant, timed_out: bool) {
        match &self.model {
            Model::Ratio(ratio) => {
                let epoch = ratio.settings.epoch(now());
                lock(&ratio.window).take(&ratio.settings, epoch);
            }
            Model::Bucket(bucket) => {
                let cost = bucket.settings.cost(timed_out);
                let _ = bucket
                    .state
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |state| {
                        let left = tokens(state).checked_sub(cost)?;
                        Some(u64::from(left) | (state & SPENT))
                    });
            }
        }
    }

    fn withdraw_ratio(ratio: &Ratio, now: Instant) -> (bool, Transition) {
        let epoch = ratio.settings.epoch(now);
        let mut window = lock(&ratio.window);
        let allowed = window.take(&ratio.settings, epoch);
        let transition = match (allowed, window.spent) {
            (true, true) => Transition::Available,
            (false, false) => Transition::Spent,
            _ => Transition::None,
        };
        window.spent = !allowed;
        (allowed, transition)
    }

    fn withdraw_bucket(bucket: &Bucket, timed_out: bool) -> (bool, Transition) {
        let cost = bucket.settings.cost(timed_out);
        // Relaxed is enough: the state is one word, changed only by read-modify-writes, and
        // nothing else is published through it.
        let mut state = bucket.state.load(Ordering::Relaxed);
        loop {
            let spent = state & SPENT != 0;
            let (next, allowed) = match tokens(state).checked_sub(cost) {
                // The flag goes: the next refusal is a new transition.
                Some(left) => (u64::from(left), true),
                // Already flagged: a refusal writes nothing.
                None if spent => return (false, Transition::None),
                None => (state | SPENT, false),
            };
            match bucket.state.compare_exchange_weak(
                state,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let transition = match (allowed, spent) {
                        (true, true) => Transition::Available,
                        (false, _) => Transition::Spent,
                        (true, false) => Transition::None,
                    };
                    return (allowed, transition);
                }
                Err(current) => state = current,
            }
        }
    }

    /// The call succeeded; `retried`: after at least one retry. The token bucket puts
    /// tokens back (`success_refund`, or `retry_cost` after retries), never above its
    /// capacity; the ratio model does nothing (the call was counted when it started).
    ///
    /// The budget is not told which kind of retry the call's last was, so a call whose last
    /// retry followed a timeout gets `retry_cost` back, not `timeout_cost`: the bucket
    /// refills no faster than the SDKs' does.
    pub fn succeeded(&self, retried: bool) {
        let Model::Bucket(bucket) = &self.model else {
            return;
        };
        let settings = &bucket.settings;
        let refund = if retried {
            settings.retry_cost
        } else {
            settings.success_refund
        };
        if refund == 0 {
            return;
        }
        // A full bucket, the usual state, is only read: every call succeeding does not
        // write the shared word.
        let mut state = bucket.state.load(Ordering::Relaxed);
        loop {
            let held = tokens(state);
            if held >= settings.capacity {
                return;
            }
            let refilled = held.saturating_add(refund).min(settings.capacity);
            let next = (state & SPENT) | u64::from(refilled);
            match bucket.state.compare_exchange_weak(
                state,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => state = current,
            }
        }
    }

    /// How many retries could be made now. Ratio: `floor * window + ratio * calls -
    /// retries` over the window, rounded down, at least 0. Bucket: tokens / `retry_cost`
    /// (`u64::MAX` when retries are free).
    pub fn available(&self, now: Instant) -> u64 {
        match &self.model {
            Model::Ratio(ratio) => {
                lock(&ratio.window).available(&ratio.settings, ratio.settings.epoch(now))
            }
            Model::Bucket(bucket) => {
                let held = tokens(bucket.state.load(Ordering::Relaxed));
                match bucket.settings.retry_cost {
                    0 => u64::MAX,
                    cost => u64::from(held / cost),
                }
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn spent_event(&self) {
        tracing::warn!(
            target: TARGET,
            budget = self.name,
            "retry budget `{}` spent: failed calls are not retried until it recovers",
            self.name,
        );
    }

    #[cold]
    #[inline(never)]
    fn available_event(&self) {
        tracing::info!(
            target: TARGET,
            budget = self.name,
            "retry budget `{}` available again: failed calls are retried",
            self.name,
        );
    }
}

/// The window's lock. Nothing panics while holding it, but a poisoned lock still holds
/// counts that are whole (each change is one assignment), so it is used as it is.
fn lock(window: &Mutex<Window>) -> MutexGuard<'_, Window> {
    window.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KeyedGuard for RetryBudget {
    fn fresh(&self) -> Self {
        let model = match &self.model {
            Model::Ratio(ratio) => Model::Ratio(Ratio {
                settings: ratio.settings,
                window: Mutex::new(Window::EMPTY),
            }),
            Model::Bucket(bucket) => Model::Bucket(Bucket {
                settings: bucket.settings,
                state: AtomicU64::new(u64::from(bucket.settings.capacity)),
            }),
        };
        Self {
            name: self.name,
            model,
            fleet: self.fleet,
        }
    }

    fn key_name(&self, key: &dyn fmt::Display) -> Option<std::sync::Arc<str>> {
        self.fleet
            .map(|_| std::sync::Arc::from(format!("{}:{key}", self.name)))
    }
}

impl Shared<RetryBudget> {
    /// The key the fleet's backend keeps this budget under: its name, or `name:key` for one
    /// key of a [`Keyed`](crate::keyed::Keyed).
    pub fn fleet_key(&self) -> &str {
        self.key_name().unwrap_or(self.name)
    }

    /// A call started: counted here, and by the fleet when the budget is shared.
    pub fn deposit_everywhere(&self, now: impl FnOnce() -> Instant) {
        self.deposit_at(now);
        if let Some(fleet) = self.fleet {
            fleet.budget_deposit(self.fleet_key(), self.rule());
        }
    }

    /// A retry of a shared budget, paid from the fleet's budget on this thread, or from this
    /// process's own when the backend cannot answer: whether it is allowed.
    pub fn pay_blocking(&self, now: impl FnOnce() -> Instant, timed_out: bool) -> bool {
        let answer = match self.fleet {
            Some(fleet) => fleet.budget_withdraw_blocking(self.fleet_key(), self.rule(), timed_out),
            None => Answer::Unavailable { share: 1 },
        };
        self.settle(answer, now, timed_out)
    }

    /// [`pay_blocking`](Self::pay_blocking) for an async caller: the fleet's answer is
    /// awaited.
    pub async fn pay_async(&self, now: impl FnOnce() -> Instant, timed_out: bool) -> bool {
        let answer = match self.fleet {
            Some(fleet) => {
                fleet
                    .budget_withdraw(self.fleet_key(), self.rule(), timed_out)
                    .await
            }
            None => Answer::Unavailable { share: 1 },
        };
        self.settle(answer, now, timed_out)
    }

    /// The fleet's answer, or this process's own decision when it had none. A retry the
    /// fleet paid for is taken from this process's budget too (where it still can be), so
    /// that, should the fleet go away, this process starts from what it spent rather than
    /// from a full budget.
    fn settle(&self, answer: Answer<bool>, now: impl FnOnce() -> Instant, timed_out: bool) -> bool {
        match answer {
            Answer::Decided(allowed) => {
                if allowed {
                    self.mirror_at(now, timed_out);
                }
                allowed
            }
            Answer::Unavailable { .. } => self.try_withdraw_at(now, timed_out),
        }
    }

    /// A call succeeded (`retried`: after retries): the bucket refunds here, and in the
    /// fleet's bucket when the budget is shared.
    pub fn succeeded_everywhere(&self, retried: bool) {
        self.succeeded(retried);
        let tokens = self.refund(retried);
        if let (Some(fleet), true) = (self.fleet, tokens > 0) {
            fleet.budget_refund(self.fleet_key(), self.rule(), tokens);
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RetryBudget");
        debug.field("name", &self.name);
        match &self.model {
            // The window's counts are behind the lock, which `Debug` does not take.
            Model::Ratio(ratio) => {
                let settings = &ratio.settings;
                debug
                    .field("model", &"ratio")
                    .field("ratio", &(settings.ratio as f64 / RATIO_SCALE as f64))
                    .field(
                        "window",
                        &Duration::from_nanos(settings.slot_nanos.saturating_mul(SLOTS as u64)),
                    )
                    .field("floor_per_second", &settings.floor_per_second)
            }
            Model::Bucket(bucket) => {
                let settings = &bucket.settings;
                debug
                    .field("model", &"token_bucket")
                    .field("capacity", &settings.capacity)
                    .field("retry_cost", &settings.retry_cost)
                    .field("timeout_cost", &settings.timeout_cost)
                    .field("success_refund", &settings.success_refund)
                    .field("tokens", &tokens(bucket.state.load(Ordering::Relaxed)))
            }
        };
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::tests::Recorder;
    use proptest::prelude::*;
    use std::sync::Barrier;
    use tracing::Level;

    const SECOND: Duration = Duration::from_secs(1);

    /// A time at the start of a slot of `width`, so that tests can say which slots a count
    /// falls in.
    fn aligned(width: Duration) -> Instant {
        let t0 = Instant::now();
        let width = duration_nanos(width);
        t0 + Duration::from_nanos(width - nanos(t0) % width)
    }

    fn withdrawals(budget: &RetryBudget, now: Instant, timed_out: bool) -> usize {
        std::iter::from_fn(|| budget.try_withdraw(now, timed_out).then_some(()))
            .take(1_000_000)
            .count()
    }

    #[test]
    fn the_floor_alone_allows_floor_times_window_retries() {
        let budget = RetryBudget::ratio("api", 0.0);
        let t = aligned(SECOND);
        assert_eq!(budget.available(t), 100);
        assert_eq!(withdrawals(&budget, t, false), 100);
        assert_eq!(budget.available(t), 0);
        // A 2.5 s window with 4 per second: 10.
        let budget = RetryBudget::ratio("api", 0.0)
            .window(Duration::from_millis(2500))
            .floor_per_second(4);
        assert_eq!(withdrawals(&budget, t, false), 10);
    }

    #[test]
    fn retries_are_a_ratio_of_the_calls() {
        let budget = RetryBudget::ratio("api", 0.2).floor_per_second(0);
        let t = aligned(SECOND);
        assert_eq!(budget.available(t), 0);
        assert!(!budget.try_withdraw(t, false));
        for _ in 0..100 {
            budget.deposit(t);
        }
        assert_eq!(budget.available(t), 20);
        assert_eq!(withdrawals(&budget, t, true), 20);
        // Four more calls are not yet a fifth of a retry; the fifth is.
        for _ in 0..4 {
            budget.deposit(t);
        }
        assert!(!budget.try_withdraw(t, false));
        budget.deposit(t);
        assert!(budget.try_withdraw(t, false));
        // With the default floor, the ratio comes on top of it.
        let budget = RetryBudget::ratio("api", 0.5);
        for _ in 0..10 {
            budget.deposit(t);
        }
        assert_eq!(budget.available(t), 105);
    }

    #[test]
    fn the_ratio_is_exact_in_billionths() {
        let budget = RetryBudget::ratio("api", 0.57).floor_per_second(0);
        let t = aligned(SECOND);
        for _ in 0..100 {
            budget.deposit(t);
        }
        assert_eq!(budget.available(t), 57);
        let budget = RetryBudget::ratio("api", 1000.0).floor_per_second(0);
        budget.deposit(t);
        assert_eq!(budget.available(t), 1000);
    }

    #[test]
    fn slots_expire_after_the_window() {
        let budget = RetryBudget::ratio("api", 1.0).floor_per_second(1);
        let t = aligned(SECOND);
        for _ in 0..5 {
            budget.deposit(t);
        }
        assert_eq!(withdrawals(&budget, t, false), 15);
        // Nine seconds on, the first slot is still in the window.
        assert_eq!(budget.available(t + 9 * SECOND), 0);
        assert!(!budget.try_withdraw(t + 9 * SECOND + Duration::from_millis(999), false));
        // Ten seconds on, it has left: only the floor is back, the calls left with it.
        assert_eq!(budget.available(t + 10 * SECOND), 10);
        // Retries counted later leave later.
        let budget = RetryBudget::ratio("api", 0.0).floor_per_second(1);
        assert_eq!(withdrawals(&budget, t, false), 10);
        assert_eq!(budget.available(t + 5 * SECOND), 0);
        assert_eq!(budget.available(t + 10 * SECOND), 10);
        // A call counted at 3 s is in the window until 13 s.
        let budget = RetryBudget::ratio("api", 1.0).floor_per_second(0);
        budget.deposit(t + 3 * SECOND);
        assert_eq!(budget.available(t + 12 * SECOND), 1);
        assert_eq!(budget.available(t + 13 * SECOND), 0);
    }

    #[test]
    fn a_long_idle_time_empties_every_slot() {
        let budget = RetryBudget::ratio("api", 1.0).floor_per_second(0);
        let t = aligned(SECOND);
        for second in 0..10 {
            budget.deposit(t + second * SECOND);
        }
        assert_eq!(budget.available(t + 9 * SECOND), 10);
        let later = t + 3600 * SECOND;
        assert_eq!(budget.available(later), 0);
        budget.deposit(later);
        assert_eq!(budget.available(later), 1);
    }

    #[test]
    fn a_bucket_of_500_allows_100_retries_then_refuses() {
        let budget = RetryBudget::token_bucket("s3", 500);
        let t = Instant::now();
        assert_eq!(budget.available(t), 100);
        assert_eq!(withdrawals(&budget, t, false), 100);
        assert_eq!(budget.available(t), 0);
        assert!(!budget.try_withdraw(t, true));
        // The bucket ignores the calls and does not refill with time.
        budget.deposit(t);
        assert!(!budget.try_withdraw(t + 3600 * SECOND, false));
    }

    #[test]
    fn a_retry_after_a_timeout_costs_more() {
        let budget = RetryBudget::token_bucket("s3", 500);
        let t = Instant::now();
        assert_eq!(withdrawals(&budget, t, true), 50);
        let budget = RetryBudget::token_bucket("s3", 500);
        assert!(budget.try_withdraw(t, true));
        assert_eq!(budget.available(t), 98);
        // 490 left: 49 timeouts, and not a 50th, though a 5-token retry still fits.
        let budget = RetryBudget::token_bucket("s3", 15);
        assert!(budget.try_withdraw(t, true));
        assert!(!budget.try_withdraw(t, true));
        assert!(budget.try_withdraw(t, false));
    }

    #[test]
    fn refunds_never_exceed_the_capacity() {
        let budget = RetryBudget::token_bucket("s3", 500);
        let t = Instant::now();
        for _ in 0..10 {
            budget.succeeded(false);
            budget.succeeded(true);
        }
        assert_eq!(budget.available(t), 100);
        assert!(format!("{budget:?}").contains("tokens: 500"));
        assert!(budget.try_withdraw(t, false));
        budget.succeeded(true);
        budget.succeeded(true);
        assert!(format!("{budget:?}").contains("tokens: 500"));
        // A refund bigger than the room left fills the bucket exactly.
        let budget = RetryBudget::token_bucket("s3", 12)
            .retry_cost(5)
            .success_refund(4);
        assert!(budget.try_withdraw(t, false));
        budget.succeeded(false);
        budget.succeeded(false);
        assert!(format!("{budget:?}").contains("tokens: 12"));
        let budget = RetryBudget::token_bucket("s3", u32::MAX).success_refund(u32::MAX);
        assert!(budget.try_withdraw(t, false));
        budget.succeeded(false);
        assert_eq!(budget.available(t), u64::from(u32::MAX / 5));
    }

    #[test]
    fn a_successful_retry_refunds_its_cost() {
        let budget = RetryBudget::token_bucket("s3", 500);
        let t = Instant::now();
        assert!(budget.try_withdraw(t, false));
        assert!(format!("{budget:?}").contains("tokens: 495"));
        budget.succeeded(true);
        assert!(format!("{budget:?}").contains("tokens: 500"));
        // A first-attempt success puts back one token.
        assert_eq!(withdrawals(&budget, t, false), 100);
        for _ in 0..4 {
            budget.succeeded(false);
        }
        assert!(!budget.try_withdraw(t, false));
        budget.succeeded(false);
        assert!(budget.try_withdraw(t, false));
    }

    #[test]
    fn custom_costs_and_free_retries() {
        let t = Instant::now();
        let budget = RetryBudget::token_bucket("s3", 100)
            .retry_cost(20)
            .timeout_cost(50);
        assert_eq!(budget.available(t), 5);
        assert_eq!(withdrawals(&budget, t, true), 2);
        let free = RetryBudget::token_bucket("s3", 0)
            .retry_cost(0)
            .timeout_cost(0);
        assert_eq!(free.available(t), u64::MAX);
        assert!(free.try_withdraw(t, true));
        let empty = RetryBudget::token_bucket("s3", 0);
        assert!(!empty.try_withdraw(t, false));
    }

    #[test]
    fn a_bucket_logs_once_per_transition() {
        let budget = RetryBudget::token_bucket("s3", 10);
        let t = Instant::now();
        let events = Recorder::record("budget", || {
            assert!(budget.try_withdraw(t, false));
            assert!(budget.try_withdraw(t, false));
            for _ in 0..3 {
                assert!(!budget.try_withdraw(t, false));
            }
            budget.succeeded(true);
            assert!(budget.try_withdraw(t, false));
            assert!(!budget.try_withdraw(t, false));
            assert!(!budget.try_withdraw(t, true));
        });
        let event = |level| (level, "resilience::budget".to_owned(), "s3".to_owned());
        assert_eq!(
            events,
            [event(Level::WARN), event(Level::INFO), event(Level::WARN)]
        );
    }

    #[test]
    fn a_ratio_budget_logs_once_per_transition() {
        let budget = RetryBudget::ratio("gemini", 0.0).floor_per_second(1);
        let t = aligned(SECOND);
        let events = Recorder::record("budget", || {
            assert_eq!(withdrawals(&budget, t, false), 10);
            assert!(!budget.try_withdraw(t, false));
            assert_eq!(withdrawals(&budget, t + 10 * SECOND, false), 10);
        });
        let event = |level| (level, "resilience::budget".to_owned(), "gemini".to_owned());
        // `withdrawals` ends on a refusal: spent, available again, spent.
        assert_eq!(
            events,
            [event(Level::WARN), event(Level::INFO), event(Level::WARN)]
        );
    }

    #[test]
    fn concurrent_retries_never_overdraw() {
        const THREADS: usize = 8;
        let budgets = [
            RetryBudget::ratio("api", 0.0),
            RetryBudget::token_bucket("s3", 500),
        ];
        let t = aligned(SECOND);
        for budget in &budgets {
            let start = Barrier::new(THREADS);
            let allowed: usize = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            (0..50).filter(|_| budget.try_withdraw(t, false)).count()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(allowed, 100, "{budget:?}");
        }
    }

    static GEMINI: RetryBudget = RetryBudget::ratio("gemini", 0.2)
        .window(Duration::from_secs(10))
        .floor_per_second(10);
    static S3: RetryBudget = RetryBudget::token_bucket("s3", 500)
        .retry_cost(5)
        .timeout_cost(10)
        .success_refund(1);

    #[test]
    fn budgets_are_const_in_a_static() {
        let t = aligned(SECOND);
        assert_eq!(GEMINI.name(), "gemini");
        assert_eq!(S3.name(), "s3");
        GEMINI.deposit(t);
        assert!(GEMINI.try_withdraw(t, false));
        assert!(S3.try_withdraw(t, true));
        S3.succeeded(true);
        let debug = format!("{GEMINI:?}");
        assert!(debug.contains("ratio: 0.2"), "{debug}");
        assert!(debug.contains("window: 10s"), "{debug}");
        assert!(debug.contains("floor_per_second: 10"), "{debug}");
        let debug = format!("{S3:?}");
        assert!(debug.contains("capacity: 500"), "{debug}");
    }

    #[test]
    fn a_fresh_budget_has_the_settings_and_none_of_the_state() {
        let t = aligned(SECOND);
        let ratio = RetryBudget::ratio("tenant", 0.5).floor_per_second(0);
        for _ in 0..4 {
            ratio.deposit(t);
        }
        assert!(ratio.try_withdraw(t, false));
        let fresh = ratio.fresh();
        assert_eq!(fresh.name(), "tenant");
        assert_eq!(fresh.available(t), 0);
        for _ in 0..4 {
            fresh.deposit(t);
        }
        assert_eq!(fresh.available(t), 2);
        assert_eq!(ratio.available(t), 1);

        let bucket = RetryBudget::token_bucket("tenant", 20).retry_cost(10);
        assert_eq!(withdrawals(&bucket, t, false), 2);
        let fresh = bucket.fresh();
        assert_eq!(fresh.available(t), 2);
        assert_eq!(bucket.available(t), 0);
        assert_eq!(
            format!("{:?}", fresh).replace("tokens: 20", "tokens: 0"),
            format!("{bucket:?}")
        );
    }

    /// One step of the property test: after `gap` milliseconds, a call starts or a retry is
    /// asked for.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Deposit { gap: u64 },
        Withdraw { gap: u64 },
    }

    proptest! {
        /// At every retry allowed, the retries counted in the window it falls in (its own
        /// included) are at most `ratio * calls + floor * window` over the same window; and
        /// the budget is exact: a retry is refused only when one more would break that
        /// bound, and `available` is the room left, rounded down. The window is the last 10
        /// slots of `window / 10`, computed here from a log of every step.
        #[test]
        fn retries_in_a_window_stay_within_the_ratio_and_the_floor(
            ratio_thousandths in prop_oneof![Just(0u32), 0u32..2000],
            floor in prop_oneof![Just(0u32), 0u32..20],
            window_ms in 10u64..30_000,
            steps in prop::collection::vec(
                prop_oneof![
                    (0u64..500).prop_map(|gap| Step::Deposit { gap }),
                    (0u64..500).prop_map(|gap| Step::Withdraw { gap }),
                    Just(Step::Withdraw { gap: 0 }),
                ],
                1..400,
            ),
        ) {
            let ratio = f64::from(ratio_thousandths) / 1000.0;
            let window = Duration::from_millis(window_ms);
            let budget = RetryBudget::ratio("p", ratio).window(window).floor_per_second(floor);
            let slot = duration_nanos(window) / SLOTS as u64;
            let floor_retries = u128::from(floor) * u128::from(slot) * SLOTS as u128 / NANOS_PER_SECOND;
            let mut at = Instant::now();
            // (epoch, deposit?) of every step that counted.
            let mut log: Vec<(u64, bool)> = Vec::new();
            for step in steps {
                let (gap, deposit) = match step {
                    Step::Deposit { gap } => (gap, true),
                    Step::Withdraw { gap } => (gap, false),
                };
                at += Duration::from_millis(gap);
                let epoch = nanos(at) / slot;
                // The calls (or retries) counted in this slot and the 9 before it.
                let counted = |calls: bool| {
                    log.iter().filter(|&&(e, d)| d == calls && e + SLOTS as u64 > epoch).count() as u128
                };
                let (calls, retries) = (counted(true), counted(false));
                // The bound, in billionths of a retry.
                let bound = floor_retries * u128::from(RATIO_SCALE) + u128::from(ratio_thousandths) * 1_000_000 * calls;
                let room = (bound / u128::from(RATIO_SCALE)).saturating_sub(retries);
                prop_assert_eq!(u128::from(budget.available(at)), room);
                if deposit {
                    budget.deposit(at);
                    log.push((epoch, true));
                } else {
                    let allowed = budget.try_withdraw(at, false);
                    prop_assert_eq!(allowed, (retries + 1) * u128::from(RATIO_SCALE) <= bound);
                    if allowed {
                        log.push((epoch, false));
                    }
                }
            }
        }
    }
}
