//! [`RedisState`]: rate limits, retry budgets and circuit breakers shared by every process
//! that names the same guard, kept in Redis (feature `redis`; the README's "When one process
//! is not enough").
//!
//! A [`RateLimiter`](crate::limiter::RateLimiter) made with
//! [`.shared(&STATE)`](crate::limiter::RateLimiter::shared) keeps its GCRA in Redis under
//! `{prefix}:limiter:{name}` (`{name}:{key}` for one key of a [`Keyed`](crate::keyed::Keyed)),
//! so that 20 workers calling Gemini share one quota instead of taking 20. Each permit is one
//! `EVALSHA` of a small Lua script that runs the limiter's own algorithm, timed by the Redis
//! server's clock (`TIME`), so the workers' clocks need not agree; a key left idle expires once
//! it can no longer change an answer.
//!
//! The retry budgets and circuit breakers of the fleet ([`FleetGuards`]) are kept the same
//! way, each step one script call on the server's clock: a budget under `{prefix}:budget:{key}`
//! (per-second counts of the calls and retries of its window, or a bucket's tokens), a breaker
//! under `{prefix}:breaker:{key}` (its state and per-second counts) and
//! `{prefix}:breaker:{key}:workers` (the workers that reported failures in the window, for its
//! quorum). Each connection is one worker, named at [`connect`](RedisState::connect) by its
//! process id and a random number.
//!
//! Redis is never what fails a call: until [`connect`](RedisState::connect) succeeds, and
//! whenever Redis does not answer within the [`timeout`](RedisState::timeout), each process
//! decides alone on its own guards (see [`Fallback`]). One WARN event (target
//! `resilience::redis`) marks the moment Redis stops answering, one the moment it answers
//! again; in between, Redis is tried again at most every 500 ms and every other call decides
//! at once, without waiting for the timeout.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use resilience::limiter::RateLimiter;
//! use resilience::redis::RedisState;
//! use resilience::retry_with_backoff;
//!
//! /// Where the fleet's limits are kept: keys `media:limiter:{name}`.
//! static FLEET: RedisState = RedisState::new("media").timeout(Duration::from_millis(50));
//! /// Gemini's quota is the project's: 60 requests a minute for all the workers together.
//! static GEMINI_RPM: RateLimiter = RateLimiter::per_minute("gemini", 60).shared(&FLEET);
//!
//! #[retry_with_backoff(limiter = GEMINI_RPM)]
//! async fn describe(image: &[u8]) -> std::io::Result<String> {
//!     Ok(format!("{} bytes", image.len()))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // At start-up; until then (and while Redis is away) the limit is this process's own.
//!     FLEET.connect("redis://127.0.0.1:6379").await?;
//!     println!("{}", describe(b"png").await?);
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    Client, Connection, ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation, Value,
};
use retry_runtime::__private::tracing;
use retry_runtime::fleet::{
    Answer, BreakerRule, BudgetRule, FleetCircuit, FleetGuards, FleetOutcome, FleetState, Gcra,
    OnCircuit, Pending, Reservation,
};
use retry_runtime::redact::redact;

/// The target of this module's `tracing` events.
const TARGET: &str = "resilience::redis";

/// How long a Redis call may take by default: a permit's round trip on a local network is well
/// under a millisecond, and a limiter that waits longer than this for Redis slows every call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// While Redis does not answer, how often it is tried again: often enough to come back within
/// a second, seldom enough that the calls meanwhile do not each wait for a timeout.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The connection manager's own reconnection while Redis is away: attempts at most 100 ms
/// apart, for about 5 s, after which the next call that tries Redis starts another round.
/// Its defaults wait up to seconds between attempts, which would keep the limits local long
/// after Redis is back.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(10);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_ATTEMPTS: usize = 50;

/// The far end of time in microseconds, as the script saturates (`2^53 - 1`, the last integer
/// a Lua double holds exactly).
const FAR_MICROS: u64 = (1 << 53) - 1;

/// The GCRA as one atomic step (`src/redis/limiter.lua`), sent by its SHA and loaded when
/// Redis does not know it yet (`NOSCRIPT`).
static LIMITER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/limiter.lua")));

/// The retry budgets' steps (`src/redis/budget.lua`): a call, a retry, a refund.
static BUDGET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/budget.lua")));

/// The circuit breakers' steps (`src/redis/breaker.lua`): an outcome, a probe.
static BREAKER: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/breaker.lua")));

/// The unit of the ratios sent to the scripts: billionths keep their comparisons exact
/// integer arithmetic, as the local budget's.
const RATIO_SCALE: f64 = 1_000_000_000.0;

/// Rate limits (and retry budgets and circuit breakers) shared by every process that names
/// the same guard, kept in Redis.
///
/// Defined once, as a `static`, and named by the limiters made with
/// [`RateLimiter::shared`](crate::limiter::RateLimiter::shared); [`connect`](Self::connect)
/// once at start-up, on tokio. Async callers use a connection manager that reconnects by
/// itself; blocking callers a blocking connection of their own, made when first needed and
/// made again after an error. Every call to Redis, connecting included, is bounded by the
/// [`timeout`](Self::timeout): past it, the limiter decides alone (see [`Fallback`]). An
/// async call on tokio needs the runtime's timer (as [`TokioTimer`](crate::TokioTimer)
/// does); on another executor it is answered on the blocking connection.
///
/// ```
/// use std::time::Duration;
///
/// use resilience::limiter::RateLimiter;
/// use resilience::redis::{Fallback, RedisState};
///
/// static FLEET: RedisState = RedisState::new("media")
///     .timeout(Duration::from_millis(50))
///     .fallback(Fallback::Share(8));
/// static GEMINI_RPM: RateLimiter = RateLimiter::per_minute("gemini", 60).shared(&FLEET);
///
/// assert!(GEMINI_RPM.is_shared());
/// // Not connected yet: the limit is this process's own, an eighth of the rate.
/// assert!(!FLEET.is_reachable());
/// ```
pub struct RedisState {
    prefix: &'static str,
    timeout: Duration,
    fallback: Fallback,
    /// The fallback set at run time ([`set_fallback`](Self::set_fallback)), encoded (0: none
    /// set, the builder's holds; else the share plus one).
    set: AtomicU32,
    /// Set by `connect`; read (and the `Arc` cloned) by every call, so that a call holds the
    /// connection it started with even if `connect` is called again meanwhile.
    connected: Mutex<Option<Arc<Connected>>>,
}

/// How a process limits its calls while Redis does not answer: on its own limiter's state,
/// at the whole rate or at its share of it.
///
/// ```
/// use resilience::redis::{Fallback, RedisState};
///
/// // Eight workers share one quota: while Redis is away, each takes an eighth of it, so the
/// // fleet as a whole stays within the quota.
/// static FLEET: RedisState = RedisState::new("media").fallback(Fallback::Share(8));
/// assert_eq!(Fallback::default(), Fallback::Local);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// This process's own limiter, at its whole rate (the default): no call is slowed by the
    /// outage, and the fleet may exceed the quota as many times as it has processes.
    #[default]
    Local,
    /// This process's own limiter at 1/n of the rate: the quota split among `n` workers while
    /// Redis is away (0 is taken as 1).
    Share(u32),
}

impl Fallback {
    /// The share [`Answer::Unavailable`] carries.
    const fn share(self) -> u32 {
        match self {
            Fallback::Local | Fallback::Share(0) => 1,
            Fallback::Share(n) => n,
        }
    }
}

impl RedisState {
    /// A state whose keys are `{prefix}:limiter:{name}` (and `{prefix}:budget:..`,
    /// `{prefix}:breaker:..` for the other guards), with a 100 ms
    /// [`timeout`](Self::timeout) and the [`Fallback::Local`] fallback; not connected until
    /// [`connect`](Self::connect).
    ///
    /// ```
    /// use resilience::redis::RedisState;
    ///
    /// static FLEET: RedisState = RedisState::new("media");
    /// ```
    pub const fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            timeout: DEFAULT_TIMEOUT,
            fallback: Fallback::Local,
            set: AtomicU32::new(0),
            connected: Mutex::new(None),
        }
    }

    /// Sets the fallback at run time, when only the command line knows it (`--workers 8`:
    /// `Fallback::Share(8)`). The answers follow it at once; the WARN event that names the
    /// fallback follows it from the next [`connect`](Self::connect), so set it before.
    ///
    /// ```
    /// use resilience::redis::{Fallback, RedisState};
    ///
    /// static FLEET: RedisState = RedisState::new("media");
    /// FLEET.set_fallback(Fallback::Share(8));
    /// assert_eq!(FLEET.current_fallback(), Fallback::Share(8));
    /// ```
    pub fn set_fallback(&self, fallback: Fallback) {
        let encoded = match fallback {
            Fallback::Local => 1,
            Fallback::Share(n) => n.saturating_add(1).max(2),
        };
        self.set.store(encoded, Ordering::Relaxed);
    }

    /// The fallback in force: the one [`set_fallback`](Self::set_fallback) set, else the
    /// builder's.
    pub fn current_fallback(&self) -> Fallback {
        match self.set.load(Ordering::Relaxed) {
            0 => self.fallback,
            1 => Fallback::Local,
            n => Fallback::Share(n - 1),
        }
    }

    /// The same state, every Redis call bounded by `timeout` (connecting included): past it,
    /// the limiter decides alone.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience::redis::RedisState;
    ///
    /// static FLEET: RedisState = RedisState::new("media").timeout(Duration::from_millis(50));
    /// ```
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        // Assigned, not rebuilt with `..self`: a const fn may not drop the rest of a value
        // that owns a mutex.
        self.timeout = timeout;
        self
    }

    /// The same state, limiting calls this way while Redis does not answer.
    ///
    /// ```
    /// use resilience::redis::{Fallback, RedisState};
    ///
    /// static FLEET: RedisState = RedisState::new("media").fallback(Fallback::Share(4));
    /// ```
    #[must_use]
    pub const fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Connects to the Redis server at `url` (`redis://[user:password@]host:port[/db]`) and
    /// loads the guards' scripts. It runs on tokio (the connection manager's tasks are
    /// spawned on the current runtime), within the [`timeout`](Self::timeout).
    ///
    /// Until it is called, and whenever Redis does not answer within the timeout, every
    /// guard of this state decides alone. An error here is not final: unless `url` is
    /// invalid (or there is no tokio runtime), the state keeps the connection and tries again
    /// at most every 500 ms as calls come, so a fleet that starts before Redis shares its
    /// limits as soon as Redis answers. Calling it again replaces the connection.
    ///
    /// ```no_run
    /// use resilience::redis::RedisState;
    ///
    /// static FLEET: RedisState = RedisState::new("media");
    ///
    /// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
    /// FLEET.connect("redis://127.0.0.1:6379").await?;
    /// assert!(FLEET.is_reachable());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(&self, url: &str) -> Result<(), RedisError> {
        let client = Client::open(url)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::from((
                ErrorKind::Client,
                "no tokio runtime",
                "`RedisState::connect` must be awaited on a tokio runtime: its connection \
                 manager's tasks are spawned there"
                    .to_owned(),
            )));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        // Lazy, so that a Redis still down keeps a manager that connects once it is up.
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let connected = Arc::new(Connected {
            prefix: self.prefix,
            timeout: self.timeout,
            fallback: self.current_fallback(),
            // Only the host and port: the URL may carry a password.
            at: client.get_connection_info().addr().to_string(),
            client,
            manager,
            blocking: Mutex::new(None),
            health: Health::new(),
            worker: worker_id(),
        });
        // Loading the scripts now makes each first step one `EVALSHA`, and tells whether
        // Redis answers. All three within the one timeout: `connect` is bounded as a call is.
        let mut manager = connected.manager.clone();
        let load = async {
            for script in [&*LIMITER, &*BUDGET, &*BREAKER] {
                script.load_async(&mut manager).await?;
            }
            Ok(())
        };
        let loaded = match tokio::time::timeout(self.timeout, load).await {
            Ok(result) => result,
            Err(_) => Err(Failure::TimedOut(self.timeout).into_redis_error()),
        };
        match &loaded {
            Ok(()) => connected.health.reachable.store(true, Ordering::Release),
            // Tried just now: the next try waits its turn.
            Err(_) => connected.health.retry_later(),
        }
        *self.slot() = Some(connected);
        loaded
    }

    /// Whether the last call reached Redis (false until [`connect`](Self::connect) succeeds).
    ///
    /// ```
    /// use resilience::redis::RedisState;
    ///
    /// static FLEET: RedisState = RedisState::new("media");
    /// assert!(!FLEET.is_reachable());
    /// ```
    pub fn is_reachable(&self) -> bool {
        self.connection()
            .is_some_and(|connected| connected.health.reachable.load(Ordering::Acquire))
    }

    /// The connection, if this call may go to Redis (see [`Connected::pass`]).
    fn admitted(&self) -> Option<(Arc<Connected>, Pass)> {
        let connected = self.connection()?;
        let pass = connected.pass()?;
        Some((connected, pass))
    }

    /// The connection, once `connect` was called.
    fn connection(&self) -> Option<Arc<Connected>> {
        self.slot().clone()
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<Connected>>> {
        // A panic while the slot was held leaves it whole: it is only ever read or replaced.
        self.connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unavailable<T>(&self) -> Answer<T> {
        Answer::Unavailable {
            share: self.current_fallback().share(),
        }
    }

    /// The answer of the script call `invocation` makes, for an async caller: on the
    /// connection manager on tokio, on the blocking connection on another executor (the
    /// manager's timers and reconnection need tokio), within the timeout. `None` when Redis
    /// does not answer, or is not asked (before `connect`, or while it is known to be away).
    async fn ask<T: FromRedisValue>(
        &self,
        invocation: impl FnOnce(&Connected) -> ScriptInvocation<'static>,
    ) -> Option<T> {
        let (connected, pass) = self.admitted()?;
        let invocation = invocation(&connected);
        if tokio::runtime::Handle::try_current().is_ok() {
            connected.call_async(&invocation).await
        } else {
            connected.call_blocking(pass, &invocation)
        }
    }

    /// [`ask`](Self::ask) for a blocking caller, on the blocking connection.
    fn ask_blocking<T: FromRedisValue>(
        &self,
        invocation: impl FnOnce(&Connected) -> ScriptInvocation<'static>,
    ) -> Option<T> {
        let (connected, pass) = self.admitted()?;
        connected.call_blocking(pass, &invocation(&connected))
    }

    /// A fire-and-forget call: sent by a task spawned on the current tokio runtime, or on
    /// this thread, blocking, outside one; `then` receives its answer (`None`: none, as for
    /// [`ask`](Self::ask)), there and then.
    fn send<T: FromRedisValue + Send + 'static>(
        &self,
        invocation: impl FnOnce(&Connected) -> ScriptInvocation<'static>,
        then: impl FnOnce(Option<T>) + Send + 'static,
    ) {
        // Asked first, so that no task is spawned while Redis is known to be away.
        let Some((connected, pass)) = self.admitted() else {
            then(None);
            return;
        };
        let invocation = invocation(&connected);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { then(connected.call_async(&invocation).await) });
            }
            Err(_) => then(connected.call_blocking(pass, &invocation)),
        }
    }
}

/// The retry budgets' and the circuit breakers' steps, each one `EVALSHA` of
/// `src/redis/budget.lua` or `src/redis/breaker.lua` under `{prefix}:budget:{key}` and
/// `{prefix}:breaker:{key}` (and `{prefix}:breaker:{key}:workers`), timed by the server's
/// clock, with the limiter's timeout, health and fallback: [`Answer::Unavailable`] (with the
/// fallback's share) whenever Redis does not answer, and before [`connect`](Self::connect).
///
/// The fire-and-forget steps (`budget_deposit`, `budget_refund`, `breaker_record`) are sent
/// by a task spawned on the current tokio runtime, or on the calling thread, blocking,
/// outside one. `breaker_record` calls its `then` once (unless the runtime shuts down before
/// its task runs): with the fleet's circuit, or with [`Answer::Unavailable`] when Redis does
/// not answer, rather than dropping it, so the breaker's view learns of the outage at once.
/// It is called on the calling thread before `breaker_record` returns when Redis is not asked
/// (not connected, known to be away) and outside a runtime: the caller must not hold what
/// `then` locks.
impl FleetGuards for RedisState {
    fn is_reachable(&self) -> bool {
        RedisState::is_reachable(self)
    }

    fn budget_deposit(&self, key: &str, rule: BudgetRule) {
        // The bucket counts no calls: nothing to send.
        if matches!(rule, BudgetRule::Ratio { .. }) {
            self.send(
                |connected| budget("deposit", &connected.key("budget", key), rule, 0),
                |_: Option<Value>| {},
            );
        }
    }

    fn budget_withdraw<'a>(
        &'a self,
        key: &'a str,
        rule: BudgetRule,
        timed_out: bool,
    ) -> Pending<'a, Answer<bool>> {
        Box::pin(async move {
            let cost = withdrawal_cost(rule, timed_out);
            self.ask(|connected| budget("withdraw", &connected.key("budget", key), rule, cost))
                .await
                .map_or_else(
                    || self.unavailable(),
                    |allowed: i64| Answer::Decided(allowed == 1),
                )
        })
    }

    fn budget_withdraw_blocking(
        &self,
        key: &str,
        rule: BudgetRule,
        timed_out: bool,
    ) -> Answer<bool> {
        let cost = withdrawal_cost(rule, timed_out);
        self.ask_blocking(|connected| budget("withdraw", &connected.key("budget", key), rule, cost))
            .map_or_else(
                || self.unavailable(),
                |allowed: i64| Answer::Decided(allowed == 1),
            )
    }

    fn budget_refund(&self, key: &str, rule: BudgetRule, tokens: u32) {
        // The ratio model takes no refunds, and nothing is nothing to send.
        if matches!(rule, BudgetRule::Bucket { .. }) && tokens > 0 {
            self.send(
                |connected| budget("refund", &connected.key("budget", key), rule, tokens),
                |_: Option<Value>| {},
            );
        }
    }

    fn breaker_probe<'a>(
        &'a self,
        key: &'a str,
        rule: BreakerRule,
    ) -> Pending<'a, Answer<FleetCircuit>> {
        Box::pin(async move {
            self.ask(|connected| breaker("probe", connected, key, rule))
                .await
                .map_or_else(|| self.unavailable(), circuit)
        })
    }

    fn breaker_probe_blocking(&self, key: &str, rule: BreakerRule) -> Answer<FleetCircuit> {
        self.ask_blocking(|connected| breaker("probe", connected, key, rule))
            .map_or_else(|| self.unavailable(), circuit)
    }

    fn breaker_record(
        &self,
        key: &str,
        rule: BreakerRule,
        outcome: FleetOutcome,
        jitter: f64,
        then: OnCircuit,
    ) {
        let unavailable = self.unavailable();
        self.send(
            |connected| {
                let mut invocation = breaker("record", connected, key, rule);
                invocation
                    .arg(&connected.worker)
                    .arg(u8::from(outcome.failed))
                    .arg(u8::from(outcome.probe))
                    .arg(float(jitter_factor(jitter)));
                invocation
            },
            move |reply| then(reply.map_or(unavailable, circuit)),
        );
    }

    fn breaker_release(&self, key: &str, rule: BreakerRule) {
        self.send(
            |connected| breaker("release", connected, key, rule),
            |_: Option<Reply>| {},
        );
    }
}

impl FleetState for RedisState {
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        gcra: Gcra,
        max_wait: Option<Duration>,
    ) -> Pending<'a, Answer<Reservation>> {
        Box::pin(async move {
            self.ask(|connected| {
                Step::Reserve { max_wait }.invocation(&connected.key("limiter", key), gcra)
            })
            .await
            .map_or_else(|| self.unavailable(), reservation)
        })
    }

    fn reserve_blocking(
        &self,
        key: &str,
        gcra: Gcra,
        max_wait: Option<Duration>,
    ) -> Answer<Reservation> {
        self.ask_blocking(|connected| {
            Step::Reserve { max_wait }.invocation(&connected.key("limiter", key), gcra)
        })
        .map_or_else(|| self.unavailable(), reservation)
    }

    fn pause(&self, key: &str, gcra: Gcra, wait: Duration) {
        self.send(
            |connected| Step::Pause { wait }.invocation(&connected.key("limiter", key), gcra),
            |_: Option<Value>| {},
        );
    }
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let connected = self.connection();
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("fallback", &self.current_fallback())
            .field("at", &connected.as_ref().map(|connected| &connected.at))
            .field(
                "worker",
                &connected.as_ref().map(|connected| &connected.worker),
            )
            .field("reachable", &self.is_reachable())
            .finish()
    }
}

/// One operation of the script.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The next permit, unless its wait is longer than `max_wait`.
    Reserve { max_wait: Option<Duration> },
    /// No permit before `wait` from now.
    Pause { wait: Duration },
}

impl Step {
    /// The script's call: the key, then the operation, the emission, the tolerance, and the
    /// wait bound or the pause, all in microseconds of the server's clock.
    fn invocation(self, key: &str, gcra: Gcra) -> ScriptInvocation<'static> {
        let mut invocation = LIMITER.key(key);
        // Both rounded up to whole microseconds: the spacing only grows, and the tolerance
        // stays within `burst - 1` of those spacings, so Redis never lets more permits
        // through than this process's limiter would.
        let emission = micros_up(gcra.emission).max(1);
        let tolerance = micros_up(gcra.tolerance);
        match self {
            Step::Reserve { max_wait } => {
                invocation.arg("reserve").arg(emission).arg(tolerance);
                // Rounded down: a whole number of microseconds fits `max_wait` exactly when
                // it fits its floor.
                if let Some(max_wait) = max_wait {
                    invocation.arg(micros_down(max_wait));
                }
            }
            Step::Pause { wait } => {
                invocation
                    .arg("pause")
                    .arg(emission)
                    .arg(tolerance)
                    .arg(micros_up(wait));
            }
        }
        invocation
    }
}

/// `duration` in whole microseconds, rounded up, at most the script's far end of time.
fn micros_up(duration: Duration) -> u64 {
    let micros = duration.as_nanos().div_ceil(1000);
    u64::try_from(micros).map_or(FAR_MICROS, |micros| micros.min(FAR_MICROS))
}

/// `duration` in whole microseconds, rounded down, at most the script's far end of time.
fn micros_down(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).map_or(FAR_MICROS, |micros| micros.min(FAR_MICROS))
}

/// The limiter script's answer: `(1, wait)` when reserved (or moved by a pause), `(0, wait)`
/// when refused (or not moved), the wait in microseconds.
type Reply = (i64, u64);

/// A reservation's answer as the limiter takes it.
fn reservation((reserved, wait): Reply) -> Answer<Reservation> {
    let wait = Duration::from_micros(wait);
    Answer::Decided(if reserved == 1 { Ok(wait) } else { Err(wait) })
}

/// The budget script's call: the key, the operation, the model and its settings (the ratio
/// in billionths, the window in whole seconds, the floor; or the capacity and `tokens`, the
/// withdrawal's cost or the refund).
fn budget(operation: &str, key: &str, rule: BudgetRule, tokens: u32) -> ScriptInvocation<'static> {
    let mut invocation = BUDGET.key(key);
    invocation.arg(operation);
    match rule {
        BudgetRule::Ratio {
            ratio,
            window,
            floor_per_second,
        } => {
            invocation
                .arg("ratio")
                .arg(billionths(ratio))
                .arg(whole_seconds(window))
                .arg(floor_per_second);
        }
        BudgetRule::Bucket { capacity, .. } => {
            invocation.arg("bucket").arg(capacity).arg(tokens);
        }
    }
    invocation
}

/// What a retry costs the bucket (the ratio model counts it, whatever the cost).
fn withdrawal_cost(rule: BudgetRule, timed_out: bool) -> u32 {
    match rule {
        BudgetRule::Ratio { .. } => 0,
        BudgetRule::Bucket { timeout_cost, .. } if timed_out => timeout_cost,
        BudgetRule::Bucket { retry_cost, .. } => retry_cost,
    }
}

/// The breaker script's call: its two keys, the operation and the rule, the failure rate in
/// billionths, the window in whole seconds, the durations in microseconds (rounded up, as the
/// limiter's), the growth as a float; `record` adds its outcome.
fn breaker(
    operation: &str,
    connected: &Connected,
    key: &str,
    rule: BreakerRule,
) -> ScriptInvocation<'static> {
    let state = connected.key("breaker", key);
    let workers = format!("{state}:workers");
    let mut invocation = BREAKER.key(state);
    invocation
        .key(workers)
        .arg(operation)
        // Above 1, it never opens (failures never outnumber calls); a NaN rate is never
        // reached, as the local breaker compares.
        .arg(billionths(if rule.failure_rate.is_nan() {
            2.0
        } else {
            rule.failure_rate.min(2.0)
        }))
        .arg(whole_seconds(rule.window))
        .arg(rule.minimum_calls)
        .arg(rule.quorum)
        .arg(micros_up(rule.open_for))
        .arg(float(if rule.growth.is_nan() {
            1.0
        } else {
            rule.growth.max(0.0)
        }))
        .arg(micros_up(rule.max_open))
        .arg(rule.probes.max(1));
    invocation
}

/// The breaker script's answer: the circuit's code and the wait, in microseconds.
fn circuit((code, retry_in): Reply) -> Answer<FleetCircuit> {
    let retry_in = Duration::from_micros(retry_in);
    Answer::Decided(match code {
        0 => FleetCircuit::Closed,
        2 => FleetCircuit::Probe,
        3 => FleetCircuit::Busy { retry_in },
        // 1, and anything a future script might add: refused, for the time it says.
        _ => FleetCircuit::Open { retry_in },
    })
}

/// `ratio` in billionths, rounded to the nearest as the local budget rounds it (0 for a
/// negative or NaN ratio, a float-to-integer `as` saturating).
fn billionths(ratio: f64) -> u64 {
    (ratio * RATIO_SCALE + 0.5) as u64
}

/// `duration` in whole seconds, rounded up, at least 1: the scripts count per second of the
/// server's clock. At most the far end of time in microseconds, over a million.
fn whole_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_nanos().div_ceil(1_000_000_000);
    u64::try_from(seconds).map_or(FAR_MICROS, |seconds| {
        seconds.clamp(1, FAR_MICROS / 1_000_000)
    })
}

/// A float as the scripts read it (`tonumber`): `1.5e0`, every digit that tells it apart,
/// for a finite `value` (the callers make it so).
fn float(value: f64) -> String {
    if value.is_finite() {
        format!("{value:e}")
    } else {
        format!("{:e}", f64::MAX)
    }
}

/// The jitter factor as the script takes it: at least 0, and 1 when it is no number.
fn jitter_factor(jitter: f64) -> f64 {
    if jitter.is_finite() {
        jitter.max(0.0)
    } else {
        1.0
    }
}

/// This connection's name among the fleet's workers, for the breakers' quorum: the process
/// id, which tells the workers of one host apart, and a random number, which tells the hosts
/// apart, and the states of one process.
fn worker_id() -> String {
    use std::hash::BuildHasher as _;
    // `RandomState` draws its keys from the operating system once per thread and changes them
    // with every call: random enough for a name, with no dependency.
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    format!("{}-{random:016x}", std::process::id())
}

/// What `connect` made: both connections, and whether Redis answers. Shared (an `Arc`) with
/// the tasks that send the fire-and-forget steps, which outlive the call that spawned them.
struct Connected {
    prefix: &'static str,
    timeout: Duration,
    fallback: Fallback,
    /// `host:port`, as the events show it.
    at: String,
    /// Makes the blocking connection.
    client: Client,
    /// The async callers' connection; it reconnects by itself.
    manager: ConnectionManager,
    /// The blocking callers' connection, made on first use and dropped after an error. An
    /// async connection must not be waited on from a thread that may be the runtime's own.
    blocking: Mutex<Option<Connection>>,
    health: Health,
    /// This connection's name among the fleet's workers, sent with every breaker outcome
    /// (see [`worker_id`]).
    worker: String,
}

/// Whether Redis answers, and when to try it again while it does not.
struct Health {
    reachable: AtomicBool,
    /// While not reachable: when Redis may be tried again, in nanoseconds since `origin`.
    next_try: AtomicU64,
    origin: Instant,
}

impl Health {
    fn new() -> Self {
        Self {
            reachable: AtomicBool::new(false),
            next_try: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Redis was just tried: the next try, while it does not answer, is `RETRY_EVERY` away.
    fn retry_later(&self) {
        let next = self.now().saturating_add(nanos(RETRY_EVERY));
        self.next_try.store(next, Ordering::Release);
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Why a call may go to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Redis answered the last call.
    Reachable,
    /// Redis did not, and this call is the one that tries again.
    Retry,
}

impl Connected {
    /// The key of the guard `name` of this `kind` (`limiter`, `budget`, `breaker`) in Redis.
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    /// Whether this call may go to Redis: always while it answers; while it does not, one
    /// call every `RETRY_EVERY`, and the others decide alone at once.
    fn pass(&self) -> Option<Pass> {
        let health = &self.health;
        if health.reachable.load(Ordering::Acquire) {
            return Some(Pass::Reachable);
        }
        let now = health.now();
        let next = health.next_try.load(Ordering::Acquire);
        let turn = now.saturating_add(nanos(RETRY_EVERY));
        // Of the calls that find the time has come, the one that moves it on tries.
        (now >= next
            && health
                .next_try
                .compare_exchange(next, turn, Ordering::AcqRel, Ordering::Acquire)
                .is_ok())
        .then_some(Pass::Retry)
    }

    /// The script's answer from the async connection, within the timeout (`None` when there
    /// is none), for a call let through by [`pass`](Self::pass).
    async fn call_async<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'static>,
    ) -> Option<T> {
        let mut manager = self.manager.clone();
        let result =
            match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut manager)).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(error)) => Err(Failure::from_error(error, self.timeout)),
                Err(_) => Err(Failure::TimedOut(self.timeout)),
            };
        self.settle(result)
    }

    /// [`call_async`](Self::call_async) on the blocking connection, on this thread.
    fn call_blocking<T: FromRedisValue>(
        &self,
        pass: Pass,
        invocation: &ScriptInvocation<'static>,
    ) -> Option<T> {
        let deadline = Instant::now().checked_add(self.timeout);
        // One blocking connection: callers take turns, each a round trip.
        let mut slot = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
        // Redis stopped answering while this call waited its turn: no need to wait again.
        if pass == Pass::Reachable && !self.health.reachable.load(Ordering::Acquire) {
            return None;
        }
        let result = self.invoke_blocking(&mut slot, invocation, deadline);
        drop(slot);
        self.settle(result)
    }

    fn invoke_blocking<T: FromRedisValue>(
        &self,
        slot: &mut Option<Connection>,
        invocation: &ScriptInvocation<'static>,
        deadline: Option<Instant>,
    ) -> Result<T, Failure> {
        if let Some(connection) = slot.as_mut() {
            match invocation.invoke(connection) {
                Ok(reply) => return Ok(reply),
                // Closed while idle (Redis restarted, a proxy's idle timeout): one new
                // connection is tried, in the time left.
                Err(error) if error.is_connection_dropped() && !error.is_timeout() => {
                    *slot = None;
                }
                Err(error) => {
                    *slot = None;
                    return Err(Failure::from_error(error, self.timeout));
                }
            }
        }
        let left = |deadline: Option<Instant>| match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(Failure::TimedOut(self.timeout))
                } else {
                    Ok(left)
                }
            }
            None => Ok(self.timeout),
        };
        let blocking = |error| Failure::from_error(error, self.timeout);
        let mut connection = self
            .client
            .get_connection_with_timeout(left(deadline)?)
            .map_err(blocking)?;
        // This call's reads and writes end at its deadline; later calls get the whole timeout.
        let this_call = left(deadline)?;
        set_timeouts(&connection, this_call).map_err(blocking)?;
        let reply = invocation.invoke(&mut connection).map_err(blocking)?;
        set_timeouts(&connection, self.timeout).map_err(blocking)?;
        *slot = Some(connection);
        Ok(reply)
    }

    /// Records whether Redis answered, with one event when that changes.
    fn settle<T>(&self, result: Result<T, Failure>) -> Option<T> {
        let health = &self.health;
        match result {
            Ok(reply) => {
                if !health.reachable.load(Ordering::Acquire)
                    && !health.reachable.swap(true, Ordering::AcqRel)
                {
                    self.answers_again();
                }
                Some(reply)
            }
            Err(failure) => {
                // Before it is marked unreachable, so that no call sees it unreachable with
                // an old time to try again.
                health.retry_later();
                if health.reachable.swap(false, Ordering::AcqRel) {
                    self.did_not_answer(&failure);
                }
                None
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn did_not_answer(&self, failure: &Failure) {
        let error = failure.to_string();
        let limits = match self.fallback {
            Fallback::Local | Fallback::Share(0 | 1) => "this process's own".to_owned(),
            Fallback::Share(n) => format!("this process's own, at 1/{n} of the rate,"),
        };
        tracing::warn!(
            target: TARGET,
            prefix = self.prefix,
            error = %error,
            "Redis at {} did not answer: the limits are {limits} until it does",
            self.at,
        );
    }

    #[cold]
    #[inline(never)]
    fn answers_again(&self) {
        tracing::warn!(
            target: TARGET,
            prefix = self.prefix,
            "Redis at {} answers again: the limits are the fleet's",
            self.at,
        );
    }
}

/// Bounds each read and write of `connection` by `timeout` (at least a millisecond: a zero
/// timeout is refused by the socket).
fn set_timeouts(connection: &Connection, timeout: Duration) -> Result<(), RedisError> {
    let timeout = Some(timeout.max(Duration::from_millis(1)));
    connection.set_read_timeout(timeout)?;
    connection.set_write_timeout(timeout)
}

/// Why Redis gave no answer.
#[derive(Debug)]
enum Failure {
    Redis(RedisError),
    TimedOut(Duration),
}

impl Failure {
    /// A call's error: a timeout (a socket's, or the connection manager's own) is said as the
    /// timeout it is.
    fn from_error(error: RedisError, timeout: Duration) -> Self {
        if error.is_timeout() {
            Failure::TimedOut(timeout)
        } else {
            Failure::Redis(error)
        }
    }

    fn into_redis_error(self) -> RedisError {
        match self {
            Failure::Redis(error) => error,
            Failure::TimedOut(timeout) => RedisError::from(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // An error's text may quote what the connection carried.
            Failure::Redis(error) => f.write_str(&redact(&error.to_string())),
            Failure::TimedOut(timeout) => write!(f, "no answer within {timeout:?}"),
        }
    }
}
