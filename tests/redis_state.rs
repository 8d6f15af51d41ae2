//! `resilience::redis::RedisState` against a real `redis-server` (skipped when it is not
//! installed, unless `RESILIENCE_REQUIRE_REDIS` is set): each test starts its own server on a
//! free loopback port, and plays two processes with two states (leaked, as the `static`s of
//! two processes would be) connected to it. Real time, tiny rates (10 a second): a permit's
//! time is the moment it was asked plus the wait Redis answered, so the checks hold whatever
//! the machine's load adds to the test's own sleeps.
//!
//! The budgets' and breakers' steps ([`FleetGuards`]) are called as the guards will call
//! them, on the same states: their answers are exact (the scripts count in integers), and
//! their times are the server's, tiny (open 100 to 200 ms) so each test takes well under 2 s,
//! the ratio window's test excepted (it waits for the server's clock to pass two seconds).

mod common;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{RedisServer, redis_events, redis_server, redis_server_with};
use resilience::fleet::{
    Answer, BreakerRule, BudgetRule, FleetCircuit, FleetGuards, FleetOutcome, FleetState, Gcra,
    Reservation,
};
use resilience::http::HttpError;
use resilience::keyed::{Keyed, Shared};
use resilience::limiter::RateLimiter;
use resilience::redis::{Fallback, RedisState};
use resilience::{MediaProcessingError, retry_with_backoff};
use tracing::Level;

/// The spacing of the tests' limiters: 10 permits a second.
const SPACING: Duration = Duration::from_millis(100);

/// How far a permit's measured time may stray from its slot: the loopback round trips, and
/// the time between reading the clock and Redis reading its own.
const SLACK: Duration = Duration::from_millis(25);

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// A state with keys `{prefix}:limiter:..`, connected to `server`.
async fn connected(prefix: &'static str, server: &RedisServer) -> &'static RedisState {
    let state = leak(RedisState::new(prefix));
    state
        .connect(&server.url())
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", server.url()));
    assert!(state.is_reachable());
    state
}

/// The settings of `per_second` permits a second, `burst` at once.
fn gcra(per_second: u32, burst: u32) -> Gcra {
    RateLimiter::per_second("settings", per_second)
        .burst(burst)
        .gcra()
}

/// The wait of a permit Redis granted.
#[track_caller]
fn granted(answer: Answer<Reservation>) -> Duration {
    match answer {
        Answer::Decided(Ok(wait)) => wait,
        other => panic!("expected a permit from Redis, got {other:?}"),
    }
}

/// When the permit of a reservation asked now may be used, on this process's clock.
async fn permit_at(state: &RedisState, key: &str, gcra: Gcra) -> Instant {
    let asked = Instant::now();
    asked + granted(state.reserve(key, gcra, None).await)
}

/// [`permit_at`] on the blocking path.
fn permit_at_blocking(state: &RedisState, key: &str, gcra: Gcra) -> Instant {
    let asked = Instant::now();
    asked + granted(state.reserve_blocking(key, gcra, None))
}

#[track_caller]
fn assert_near(actual: Duration, expected: Duration) {
    let off = actual.abs_diff(expected);
    assert!(
        off <= SLACK,
        "{actual:?} is {off:?} away from {expected:?} (at most {SLACK:?})"
    );
}

/// Asserts that each permit comes one spacing after the one before it.
#[track_caller]
fn assert_spaced(permits: &[Instant]) {
    for (i, at) in permits.iter().enumerate() {
        assert_near(*at - permits[0], SPACING * u32::try_from(i).unwrap());
    }
}

/// Compiles only for a `Send` value: what `tokio::spawn` needs of a future.
fn is_send<T: Send>(_: &T) {}

/// A plain connection to `server`, to look at what the script stored.
fn inspect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|client| client.get_connection())
        .unwrap()
}

#[tokio::test]
async fn two_processes_sharing_a_limiter_get_evenly_spaced_permits() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("even", &server).await,
        connected("even", &server).await,
    );
    let settings = gcra(10, 1);
    let mut permits = Vec::new();
    for state in [a, b, a, b, a, b] {
        permits.push(permit_at(state, "gemini", settings).await);
    }
    // 0, T, 2T ... whichever process asked: one limit for both.
    assert_spaced(&permits);
    // A limiter of another name is another limit.
    assert_eq!(
        granted(b.reserve("other", settings, None).await),
        Duration::ZERO
    );
}

#[tokio::test]
async fn a_burst_goes_at_once_then_the_permits_are_spaced() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("burst", &server).await,
        connected("burst", &server).await,
    );
    let settings = gcra(10, 3);
    let first = Instant::now();
    for state in [a, b, a] {
        assert_eq!(
            granted(state.reserve("api", settings, None).await),
            Duration::ZERO
        );
    }
    // The burst is spent: the 4th permit is one spacing after the 1st, the 5th two.
    assert_near(permit_at(b, "api", settings).await - first, SPACING);
    assert_near(permit_at(a, "api", settings).await - first, 2 * SPACING);
}

#[tokio::test]
async fn a_refusal_past_the_callers_wait_reserves_nothing() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("refusal", &server).await,
        connected("refusal", &server).await,
    );
    let settings = gcra(10, 1);
    let first = Instant::now();
    assert_eq!(
        granted(a.reserve("api", settings, None).await),
        Duration::ZERO
    );
    // The next permit is a spacing away, more than this caller waits: refused, with the wait.
    let refused_at = Instant::now();
    match b.reserve("api", settings, Some(SPACING / 2)).await {
        Answer::Decided(Err(wait)) => assert_near(refused_at + wait - first, SPACING),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // ... and took nothing: the next caller gets that same slot, not the one after.
    assert_near(permit_at(b, "api", settings).await - first, SPACING);
    // A caller that waits long enough is granted.
    let asked = Instant::now();
    let wait = granted(a.reserve("api", settings, Some(SPACING * 3)).await);
    assert_near(asked + wait - first, 2 * SPACING);
}

#[tokio::test]
async fn a_pause_blocks_both_processes_then_they_resume_spaced() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("pause", &server).await,
        connected("pause", &server).await,
    );
    let settings = gcra(10, 3);
    let mut redis = inspect(&server);
    let paused = Instant::now();
    // Fire and forget: sent by a task of this runtime, seen once the key exists.
    a.pause("api", settings, Duration::from_millis(300));
    while !redis::cmd("EXISTS")
        .arg("pause:limiter:api")
        .query::<bool>(&mut redis)
        .unwrap()
    {
        assert!(
            paused.elapsed() < Duration::from_secs(1),
            "the pause never landed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Nobody before its end, then evenly spaced: no burst at the end of a pause.
    let permits = [
        permit_at(b, "api", settings).await,
        permit_at(a, "api", settings).await,
        permit_at(b, "api", settings).await,
    ];
    assert_near(permits[0] - paused, Duration::from_millis(300));
    assert_spaced(&permits);
    // A shorter pause afterwards changes nothing.
    b.pause("api", settings, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_near(
        permit_at(a, "api", settings).await - paused,
        Duration::from_millis(600),
    );
}

#[tokio::test]
async fn an_idle_key_expires_once_its_time_is_past() {
    let Some(server) = redis_server() else { return };
    let a = connected("expiry", &server).await;
    let settings = gcra(10, 1);
    let mut redis = inspect(&server);
    let key = "expiry:limiter:idle";
    assert_eq!(
        granted(a.reserve("idle", settings, None).await),
        Duration::ZERO
    );
    let first = Instant::now();
    // The TAT, in whole microseconds of the server's clock, kept one spacing (and a margin).
    let tat: u64 = redis::cmd("GET").arg(key).query(&mut redis).unwrap();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut redis).unwrap();
    let now = seconds * 1_000_000 + micros;
    assert!(
        tat > now && tat <= now + 100_000,
        "TAT {tat}, server time {now}"
    );
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut redis).unwrap();
    assert!(ttl > 50 && ttl <= 110, "PTTL {ttl} ms");
    // A queued permit keeps it longer.
    let _ = granted(a.reserve("idle", settings, None).await);
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut redis).unwrap();
    assert!(ttl > 150 && ttl <= 210, "PTTL {ttl} ms");
    // Once the TAT is past, the key is gone, and the limiter is as good as new.
    tokio::time::sleep(
        (first + Duration::from_millis(230)).saturating_duration_since(Instant::now()),
    )
    .await;
    let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut redis).unwrap();
    assert!(!exists, "the key outlived its TAT");
    assert_eq!(
        granted(a.reserve("idle", settings, None).await),
        Duration::ZERO
    );
}

#[tokio::test]
async fn the_blocking_path_answers_as_the_async_one() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("blocking", &server).await,
        connected("blocking", &server).await,
    );
    let settings = gcra(10, 1);
    let mut permits = vec![permit_at(a, "api", settings).await];
    // On this thread, inside the runtime (a sync function called from async code).
    permits.push(permit_at_blocking(b, "api", settings));
    // On a thread outside any runtime: the blocking path, and the async one on another
    // executor, which takes the blocking connection too.
    let outside = std::thread::spawn(move || {
        let blocking = permit_at_blocking(a, "api", settings);
        let elsewhere = futures_executor::block_on(permit_at(b, "api", settings));
        (blocking, elsewhere)
    })
    .join()
    .unwrap();
    permits.extend([outside.0, outside.1]);
    assert_spaced(&permits);
    // A refusal, the same on both paths.
    let asked = Instant::now();
    match b.reserve_blocking("api", settings, Some(Duration::from_millis(10))) {
        Answer::Decided(Err(wait)) => assert_near(asked + wait - permits[0], 4 * SPACING),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A pause outside any runtime is sent before `pause` returns.
    let paused = std::thread::spawn(move || {
        let paused = Instant::now();
        a.pause("paused", settings, Duration::from_millis(200));
        (paused, permit_at_blocking(b, "paused", settings))
    })
    .join()
    .unwrap();
    assert_near(paused.1 - paused.0, Duration::from_millis(200));
}

#[tokio::test]
async fn unavailable_before_connect_and_while_down_then_decided_again_after_a_restart() {
    // A password, which no event may show.
    let Some(mut server) = redis_server_with(&["--requirepass", "hunter2"]) else {
        return;
    };
    assert!(redis_events("health").is_empty());
    let settings = gcra(10, 1);
    let local = leak(RedisState::new("health-local"));
    assert_eq!(
        local.reserve("api", settings, None).await,
        Answer::Unavailable { share: 1 }
    );
    let state = leak(RedisState::new("health").fallback(Fallback::Share(4)));
    let unavailable = Answer::Unavailable { share: 4 };
    assert_eq!(state.reserve("api", settings, None).await, unavailable);
    assert_eq!(state.reserve_blocking("api", settings, None), unavailable);
    assert!(!state.is_reachable());

    let url = format!("redis://:hunter2@127.0.0.1:{}", server.port());
    state.connect(&url).await.unwrap();
    assert!(state.is_reachable());
    granted(state.reserve("api", settings, None).await);
    granted(state.reserve_blocking("api", settings, None));

    server.stop();
    let stopped = Instant::now();
    assert_eq!(state.reserve("api", settings, None).await, unavailable);
    assert!(!state.is_reachable());
    let first_failure = stopped.elapsed();
    // Known to be down: every call answers at once, none waits for the timeout.
    let known_down = Instant::now();
    for _ in 0..50 {
        assert_eq!(state.reserve("api", settings, None).await, unavailable);
        assert_eq!(state.reserve_blocking("api", settings, None), unavailable);
    }
    let hundred_calls = known_down.elapsed();
    assert!(
        hundred_calls < Duration::from_millis(50),
        "{hundred_calls:?}"
    );
    // Meanwhile the limit is this process's own, a quarter of the rate.
    let limiter = leak(RateLimiter::per_second("api", 10).shared(state));
    let now = Instant::now();
    let limiter = Shared::of(limiter);
    assert_eq!(limiter.reserve_async(now, None).await, Ok(Duration::ZERO));
    assert_eq!(
        limiter.reserve_async(now, None).await,
        Ok(Duration::from_millis(400))
    );

    server.restart();
    let restarted = Instant::now();
    while !matches!(
        state.reserve("api", settings, None).await,
        Answer::Decided(_)
    ) {
        assert!(
            restarted.elapsed() < Duration::from_millis(1500),
            "still unavailable {:?} after the restart",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back_after = restarted.elapsed();
    assert!(state.is_reachable());
    // The blocking connection, closed by the restart, is made again within the same call.
    granted(state.reserve_blocking("api", settings, None));
    eprintln!(
        "first failure after {first_failure:?}, 100 calls while down in {hundred_calls:?}, \
         back {back_after:?} after the restart"
    );

    let events = redis_events("health");
    let at = format!("127.0.0.1:{}", server.port());
    let lines: Vec<(Level, &str)> = events
        .iter()
        .map(|event| (event.level, event.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (
                Level::WARN,
                format!(
                    "Redis at {at} did not answer: the limits are this process's own, \
                     at 1/4 of the rate, until it does"
                )
                .as_str()
            ),
            (
                Level::WARN,
                format!("Redis at {at} answers again: the limits are the fleet's").as_str()
            ),
        ]
    );
    assert!(
        events
            .iter()
            .all(|event| event.target == "resilience::redis")
    );
    assert!(!events[0].field("error").unwrap_or_default().is_empty());
    assert!(
        events
            .iter()
            .all(|event| !format!("{event:?}").contains("hunter2")),
        "{events:?}"
    );
    assert!(redis_events("health-local").is_empty());
}

#[tokio::test]
async fn a_redis_that_hangs_costs_one_timeout_then_nothing() {
    let Some(server) = redis_server() else { return };
    let timeout = Duration::from_millis(50);
    let state = leak(RedisState::new("hangs").timeout(timeout));
    state.connect(&server.url()).await.unwrap();
    let settings = gcra(10, 1);
    granted(state.reserve("api", settings, None).await);
    granted(state.reserve_blocking("api", settings, None));
    assert!(redis_events("hangs").is_empty());

    server.freeze();
    let unavailable = Answer::Unavailable { share: 1 };
    // The first call waits for the timeout, and no longer.
    let asked = Instant::now();
    assert_eq!(state.reserve("api", settings, None).await, unavailable);
    let first = asked.elapsed();
    assert!(first >= timeout && first < timeout * 3, "{first:?}");
    // Then nobody waits, until it is time to try again.
    let asked = Instant::now();
    assert_eq!(state.reserve_blocking("api", settings, None), unavailable);
    assert_eq!(state.reserve("api", settings, None).await, unavailable);
    assert!(
        asked.elapsed() < Duration::from_millis(5),
        "{:?}",
        asked.elapsed()
    );
    // The blocking connection's try is bounded by the timeout too.
    tokio::time::sleep(Duration::from_millis(510)).await;
    let asked = Instant::now();
    assert_eq!(state.reserve_blocking("api", settings, None), unavailable);
    let blocking = asked.elapsed();
    assert!(
        blocking >= timeout && blocking < timeout * 3,
        "{blocking:?}"
    );

    server.thaw();
    let thawed = Instant::now();
    while !matches!(
        state.reserve("api", settings, None).await,
        Answer::Decided(_)
    ) {
        assert!(thawed.elapsed() < Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    granted(state.reserve_blocking("api", settings, None));
    let events = redis_events("hangs");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].field("error"), Some("no answer within 50ms"));
    eprintln!(
        "hung Redis: first call {first:?}, blocking try {blocking:?}, back {:?} after SIGCONT",
        thawed.elapsed()
    );
}

#[tokio::test]
async fn a_failed_connect_keeps_trying_and_shares_the_limits_once_redis_answers() {
    let Some(mut server) = redis_server() else {
        return;
    };
    server.stop();
    let state = leak(RedisState::new("late"));
    let settings = gcra(10, 1);
    let url = server.url();
    let connecting = state.connect(&url);
    is_send(&connecting);
    assert!(connecting.await.is_err());
    assert_eq!(
        state.reserve("api", settings, None).await,
        Answer::Unavailable { share: 1 }
    );
    server.restart();
    let restarted = Instant::now();
    while !matches!(
        state.reserve("api", settings, None).await,
        Answer::Decided(_)
    ) {
        assert!(restarted.elapsed() < Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(state.is_reachable());
    // An invalid URL is an error at once, and keeps nothing.
    let invalid = leak(RedisState::new("invalid"));
    assert!(invalid.connect("http://127.0.0.1:1").await.is_err());
    assert!(format!("{invalid:?}").contains("at: None"), "{invalid:?}");
}

#[retry_with_backoff(limiter = Shared::of(limiter))]
async fn paced(limiter: &'static RateLimiter, ran: &Mutex<Vec<Instant>>) -> io::Result<()> {
    ran.lock().unwrap().push(Instant::now());
    Ok(())
}

#[tokio::test]
async fn the_attribute_paces_the_calls_of_two_processes_as_one() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("attribute", &server).await,
        connected("attribute", &server).await,
    );
    // The same limiter in two processes: one limit, kept in Redis.
    let in_a = leak(RateLimiter::per_second("gemini", 10).shared(a));
    let in_b = leak(RateLimiter::per_second("gemini", 10).shared(b));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let limiter = if i % 2 == 0 { in_a } else { in_b };
            let ran = Arc::clone(&ran);
            tokio::spawn(async move { paced(limiter, &ran).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_unstable();
    // Two limits of their own would have let two calls go at each slot.
    assert_spaced(&ran);
}

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 2, base_delay = 0.0, jitter = 0.0, limiter = Shared::of(limiter))]
async fn told_to_wait(limiter: &'static RateLimiter, calls: &AtomicU32) -> Result<(), ApiError> {
    if calls.fetch_add(1, Ordering::Relaxed) == 0 {
        return Err(HttpError::new(429, Some(Duration::from_millis(300)), "slow down").into());
    }
    Ok(())
}

#[retry_with_backoff(limiter = Shared::of(limiter))]
async fn bystander(limiter: &'static RateLimiter) -> Result<Instant, ApiError> {
    Ok(Instant::now())
}

#[tokio::test]
async fn a_429_in_one_process_pauses_the_other() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("told", &server).await,
        connected("told", &server).await,
    );
    let in_a = leak(RateLimiter::per_second("gemini", 10).shared(a));
    let in_b = leak(RateLimiter::per_second("gemini", 10).shared(b));
    let calls = AtomicU32::new(0);
    let t0 = Instant::now();
    // The 429 says 300 ms, to process a; process b, which never saw it, waits as long.
    let (told, other) = tokio::join!(told_to_wait(in_a, &calls), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        bystander(in_b).await
    });
    told.unwrap();
    let other_ran = other.unwrap() - t0;
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert!(
        other_ran >= Duration::from_millis(300) - SLACK,
        "process b ran {other_ran:?} after the 429"
    );
    assert!(other_ran < Duration::from_millis(500), "{other_ran:?}");
}

#[tokio::test]
async fn each_key_of_a_keyed_shared_limiter_is_a_limit_of_its_own() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("keyed", &server).await,
        connected("keyed", &server).await,
    );
    let per_model_a = leak(Keyed::<RateLimiter>::new(
        RateLimiter::per_second("model", 10).shared(a),
    ));
    let per_model_b = leak(Keyed::<RateLimiter>::new(
        RateLimiter::per_second("model", 10).shared(b),
    ));
    let flash = per_model_a.key("flash");
    assert_eq!(flash.fleet_key(), "model:flash");
    let first = Instant::now();
    assert_eq!(flash.reserve_async(first, None).await, Ok(Duration::ZERO));
    // The other process's guard of the same key shares its limit...
    let asked = Instant::now();
    let wait = per_model_b
        .key("flash")
        .reserve_async(asked, None)
        .await
        .unwrap();
    assert_near(asked + wait - first, SPACING);
    // ... and another key is another limit, in both processes.
    let now = Instant::now();
    assert_eq!(
        per_model_b.key("pro").reserve_async(now, None).await,
        Ok(Duration::ZERO)
    );
    let asked = Instant::now();
    let wait = per_model_a
        .key("pro")
        .reserve_async(asked, None)
        .await
        .unwrap();
    assert_near(asked + wait - now, SPACING);
    // The blocking form reads the same state.
    let asked = Instant::now();
    let wait = per_model_b
        .key("flash")
        .reserve_blocking(asked, None)
        .unwrap();
    assert_near(asked + wait - first, 2 * SPACING);
    let mut redis = inspect(&server);
    for key in ["keyed:limiter:model:flash", "keyed:limiter:model:pro"] {
        let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut redis).unwrap();
        assert!(exists, "{key}");
    }
}

// ---------------------------------------------------------------------------------------
// Retry budgets and circuit breakers in Redis.

/// `key`'s `field` as the script stored it, once it is `value`: the fire-and-forget steps
/// are sent by a task of this runtime, which runs when the test waits.
async fn until_field(redis: &mut redis::Connection, key: &str, field: &str, value: i64) {
    let started = Instant::now();
    loop {
        let stored: Option<i64> = redis::cmd("HGET").arg(key).arg(field).query(redis).unwrap();
        if stored == Some(value) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{key} {field} is {stored:?}, never {value}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn exists(redis: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(redis).unwrap()
}

fn pttl(redis: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(redis).unwrap()
}

/// The server's clock: its second, and the microseconds into it.
fn server_time(redis: &mut redis::Connection) -> (u64, u64) {
    redis::cmd("TIME").query(redis).unwrap()
}

/// Sleeps until the server's clock is 20 ms into its second `second`.
async fn into_second(redis: &mut redis::Connection, second: u64) {
    let (now, micros) = server_time(redis);
    let target = second * 1_000_000 + 20_000;
    let now = now * 1_000_000 + micros;
    tokio::time::sleep(Duration::from_micros(target.saturating_sub(now))).await;
}

#[track_caller]
fn decided<T: std::fmt::Debug>(answer: Answer<T>) -> T {
    match answer {
        Answer::Decided(value) => value,
        other => panic!("expected Redis to decide, got {other:?}"),
    }
}

/// The ratio budget's withdrawals allowed out of `tries`, asked in turn by `a` (async) and
/// `b` (blocking, on this thread).
async fn withdrawals(
    a: &RedisState,
    b: &RedisState,
    key: &str,
    rule: BudgetRule,
    timed_out: bool,
    tries: u32,
) -> u32 {
    let mut allowed = 0;
    for i in 0..tries {
        let answer = if i % 2 == 0 {
            a.budget_withdraw(key, rule, timed_out).await
        } else {
            b.budget_withdraw_blocking(key, rule, timed_out)
        };
        allowed += u32::from(decided(answer));
    }
    allowed
}

#[tokio::test]
async fn a_ratio_budget_allows_the_fleet_its_floor_and_its_share_of_the_calls() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("ratio", &server).await,
        connected("ratio", &server).await,
    );
    let mut redis = inspect(&server);
    let rule = BudgetRule::Ratio {
        ratio: 0.25,
        window: Duration::from_secs(10),
        floor_per_second: 2,
    };
    let key = "ratio:budget:api";
    for i in 0..40 {
        [a, b][i % 2].budget_deposit("api", rule);
    }
    until_field(&mut redis, key, "calls", 40).await;
    // 2 a second over 10 s, and a quarter of 40 calls: 30 retries between the two processes.
    assert_eq!(withdrawals(a, b, "api", rule, false, 40).await, 30);
    // The refusals took nothing.
    until_field(&mut redis, key, "retries", 30).await;
    // Three more calls earn three quarters of a retry: none yet; the fourth, one.
    for state in [a, b, a] {
        state.budget_deposit("api", rule);
    }
    until_field(&mut redis, key, "calls", 43).await;
    assert!(!decided(b.budget_withdraw("api", rule, false).await));
    // Outside any runtime, a deposit is sent before it returns.
    std::thread::spawn(move || b.budget_deposit("api", rule))
        .join()
        .unwrap();
    let calls: i64 = redis::cmd("HGET")
        .arg(key)
        .arg("calls")
        .query(&mut redis)
        .unwrap();
    assert_eq!(calls, 44);
    assert_eq!(withdrawals(a, b, "api", rule, false, 3).await, 1);
    // A ratio budget ignores refunds, and another key is another budget: the floor alone.
    a.budget_refund("api", rule, 100);
    assert_eq!(withdrawals(a, b, "other", rule, false, 25).await, 20);
    // Counted until the window has passed the second of the last count, and no longer.
    let ttl = pttl(&mut redis, key);
    assert!(ttl > 9_000 && ttl <= 10_010, "PTTL {ttl} ms");
}

#[tokio::test]
async fn a_ratio_budgets_counts_leave_the_window_with_their_second() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("window", &server).await,
        connected("window", &server).await,
    );
    let mut redis = inspect(&server);
    let rule = BudgetRule::Ratio {
        ratio: 0.5,
        window: Duration::from_secs(2),
        floor_per_second: 0,
    };
    let key = "window:budget:api";
    // Well inside one second of the server's clock.
    let (mut second, micros) = server_time(&mut redis);
    if micros > 700_000 {
        second += 1;
        into_second(&mut redis, second).await;
    }
    for i in 0..10 {
        [a, b][i % 2].budget_deposit("api", rule);
    }
    until_field(&mut redis, key, "calls", 10).await;
    assert_eq!(withdrawals(a, b, "api", rule, false, 8).await, 5);
    // A second later, still in the window: 2 more calls, 1 more retry.
    into_second(&mut redis, second + 1).await;
    a.budget_deposit("api", rule);
    b.budget_deposit("api", rule);
    until_field(&mut redis, key, "calls", 12).await;
    assert_eq!(withdrawals(a, b, "api", rule, false, 3).await, 1);
    // Two seconds later, the first second's counts are out: 2 calls and the 1 retry of the
    // second second are left, so no retry...
    into_second(&mut redis, second + 2).await;
    assert_eq!(withdrawals(a, b, "api", rule, false, 2).await, 0);
    until_field(&mut redis, key, "calls", 2).await;
    until_field(&mut redis, key, "retries", 1).await;
    // ... until 2 more calls earn one.
    a.budget_deposit("api", rule);
    b.budget_deposit("api", rule);
    until_field(&mut redis, key, "calls", 4).await;
    assert_eq!(withdrawals(a, b, "api", rule, false, 3).await, 1);
    let fields: Vec<String> = redis::cmd("HKEYS").arg(key).query(&mut redis).unwrap();
    let first = format!(":{second}");
    assert!(
        !fields.iter().any(|field| field.ends_with(&first)),
        "{fields:?}"
    );
}

#[tokio::test]
async fn an_idle_ratio_budget_expires_with_its_window() {
    let Some(server) = redis_server() else { return };
    let a = connected("budget-expiry", &server).await;
    let mut redis = inspect(&server);
    let rule = BudgetRule::Ratio {
        ratio: 0.5,
        window: Duration::from_millis(300),
        floor_per_second: 1,
    };
    let key = "budget-expiry:budget:api";
    // Well inside one second of the server's clock: the window is that second.
    let (second, micros) = server_time(&mut redis);
    if micros > 700_000 {
        into_second(&mut redis, second + 1).await;
    }
    // A window under a second is a second: 1 retry for the floor, 1 for 2 calls.
    a.budget_deposit("api", rule);
    a.budget_deposit("api", rule);
    until_field(&mut redis, key, "calls", 2).await;
    let counted = Instant::now();
    let ttl = pttl(&mut redis, key);
    assert!(ttl > 0 && ttl <= 1_010, "PTTL {ttl} ms");
    assert_eq!(withdrawals(a, a, "api", rule, false, 3).await, 2);
    while exists(&mut redis, key) {
        assert!(
            counted.elapsed() < Duration::from_millis(1_100),
            "the budget outlived its window"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Gone, and the budget is as new: its floor.
    assert_eq!(withdrawals(a, a, "api", rule, false, 2).await, 1);
}

#[tokio::test]
async fn a_token_bucket_is_one_bucket_for_the_fleet() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("bucket", &server).await,
        connected("bucket", &server).await,
    );
    let mut redis = inspect(&server);
    let rule = BudgetRule::Bucket {
        capacity: 500,
        retry_cost: 5,
        timeout_cost: 10,
    };
    let key = "bucket:budget:api";
    // Full at first: a call's start changes nothing.
    a.budget_deposit("api", rule);
    assert!(!exists(&mut redis, key));
    // 500 tokens at 5 a retry: 100 retries between the two processes.
    assert_eq!(withdrawals(a, b, "api", rule, false, 120).await, 100);
    until_field(&mut redis, key, "tokens", 0).await;
    // Kept for an hour of idleness.
    let ttl = pttl(&mut redis, key);
    assert!(ttl > 3_590_000 && ttl <= 3_600_000, "PTTL {ttl} ms");
    // 3 tokens back are not a retry; 2 more are.
    a.budget_refund("api", rule, 3);
    until_field(&mut redis, key, "tokens", 3).await;
    assert_eq!(withdrawals(a, b, "api", rule, false, 1).await, 0);
    b.budget_refund("api", rule, 2);
    until_field(&mut redis, key, "tokens", 5).await;
    assert_eq!(withdrawals(b, a, "api", rule, false, 2).await, 1);
    // A retry after a timeout costs 10.
    a.budget_refund("api", rule, 9);
    until_field(&mut redis, key, "tokens", 9).await;
    assert_eq!(withdrawals(a, b, "api", rule, true, 2).await, 0);
    assert_eq!(withdrawals(a, b, "api", rule, false, 1).await, 1);
    until_field(&mut redis, key, "tokens", 4).await;
    // Refunds stop at the capacity: a full bucket is a missing key.
    std::thread::spawn(move || a.budget_refund("api", rule, 10_000))
        .join()
        .unwrap();
    assert!(!exists(&mut redis, key));
    assert_eq!(withdrawals(a, b, "api", rule, true, 60).await, 50);
}

/// A breaker of the tests: half the calls of 10 s failed, at least 4 calls, failures from
/// 2 workers; open 200 ms, then 400, up to 500; 2 probes.
const RULE: BreakerRule = BreakerRule {
    failure_rate: 0.5,
    window: Duration::from_secs(10),
    minimum_calls: 4,
    quorum: 2,
    open_for: Duration::from_millis(200),
    growth: 2.0,
    max_open: Duration::from_millis(500),
    probes: 2,
};

const FAILED: FleetOutcome = FleetOutcome {
    failed: true,
    probe: false,
};
const SUCCEEDED: FleetOutcome = FleetOutcome {
    failed: false,
    probe: false,
};
const PROBE_FAILED: FleetOutcome = FleetOutcome {
    failed: true,
    probe: true,
};
const PROBE_SUCCEEDED: FleetOutcome = FleetOutcome {
    failed: false,
    probe: true,
};

/// Records `outcome` (no jitter) and waits for the circuit `then` receives.
async fn record(
    state: &RedisState,
    key: &str,
    rule: BreakerRule,
    outcome: FleetOutcome,
) -> Answer<FleetCircuit> {
    record_jittered(state, key, rule, outcome, 1.0).await
}

async fn record_jittered(
    state: &RedisState,
    key: &str,
    rule: BreakerRule,
    outcome: FleetOutcome,
    jitter: f64,
) -> Answer<FleetCircuit> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    state.breaker_record(
        key,
        rule,
        outcome,
        jitter,
        Box::new(move |circuit| {
            let _ = sender.send(circuit);
        }),
    );
    receiver.await.expect("`then` was dropped uncalled")
}

/// The wait of an open circuit.
#[track_caller]
fn open(answer: Answer<FleetCircuit>) -> Duration {
    match answer {
        Answer::Decided(FleetCircuit::Open { retry_in }) => retry_in,
        other => panic!("expected an open circuit, got {other:?}"),
    }
}

/// Opens the breaker `key` with failures from both workers: its open duration, and when.
async fn open_breaker(
    a: &RedisState,
    b: &RedisState,
    key: &str,
    rule: BreakerRule,
) -> (Duration, Instant) {
    for state in [a, b, a] {
        assert_eq!(
            record(state, key, rule, FAILED).await,
            Answer::Decided(FleetCircuit::Closed)
        );
    }
    let asked = Instant::now();
    (open(record(b, key, rule, FAILED).await), asked)
}

/// Sleeps until `from + wait`, and a little more: the server's clock is past it then.
async fn sleep_past(from: Instant, wait: Duration) {
    let at = from + wait + Duration::from_millis(5);
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}

#[tokio::test]
async fn one_workers_failures_alone_never_open_a_breaker_with_a_quorum_of_two() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("quorum", &server).await,
        connected("quorum", &server).await,
    );
    let closed = Answer::Decided(FleetCircuit::Closed);
    // Every call of the window failed, all of them in process a: closed.
    for _ in 0..20 {
        assert_eq!(record(a, "api", RULE, FAILED).await, closed);
    }
    assert_eq!(b.breaker_probe("api", RULE).await, closed);
    // A failure from b makes the quorum: open, for the first opening's duration exactly.
    let asked = Instant::now();
    assert_eq!(
        open(record(b, "api", RULE, FAILED).await),
        Duration::from_millis(200)
    );
    // Both processes see it open, until then.
    let retry_in = open(a.breaker_probe("api", RULE).await);
    assert_near(retry_in, Duration::from_millis(200) - asked.elapsed());
    open(b.breaker_probe_blocking("api", RULE));
    // The workers are the two connections: the process id and a random number each.
    let mut redis = inspect(&server);
    let workers: Vec<String> = redis::cmd("ZRANGE")
        .arg("quorum:breaker:api:workers")
        .arg(0)
        .arg(-1)
        .query(&mut redis)
        .unwrap();
    let pid = format!("{}-", std::process::id());
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(
        workers.iter().all(|worker| worker.starts_with(&pid)),
        "{workers:?}"
    );

    // The rate, compared exactly: 2 of 5 calls is under a half, 3 of 6 reaches it.
    for (state, outcome) in [(a, SUCCEEDED), (b, SUCCEEDED), (a, SUCCEEDED), (a, FAILED)] {
        assert_eq!(record(state, "rate", RULE, outcome).await, closed);
    }
    assert_eq!(record(b, "rate", RULE, FAILED).await, closed);
    open(record(b, "rate", RULE, FAILED).await);
    // The minimum: 3 failures of 3 calls are too few; a 4th call, even a success, opens it.
    for state in [a, b, a] {
        assert_eq!(record(state, "minimum", RULE, FAILED).await, closed);
    }
    open(record(b, "minimum", RULE, SUCCEEDED).await);
}

#[tokio::test]
async fn once_open_for_has_passed_exactly_probes_calls_of_the_fleet_are_probes() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("probes", &server).await,
        connected("probes", &server).await,
    );
    let (duration, opened) = open_breaker(a, b, "api", RULE).await;
    assert_eq!(duration, Duration::from_millis(200));
    sleep_past(opened, duration).await;
    // Four processes' calls at once: two are the probes, two are refused until a slot would
    // be given out again.
    let answers = tokio::join!(
        a.breaker_probe("api", RULE),
        b.breaker_probe("api", RULE),
        a.breaker_probe("api", RULE),
        b.breaker_probe("api", RULE),
    );
    let answers = [answers.0, answers.1, answers.2, answers.3].map(decided);
    let probes = answers
        .iter()
        .filter(|answer| **answer == FleetCircuit::Probe)
        .count();
    assert_eq!(probes, 2, "{answers:?}");
    for answer in answers {
        match answer {
            FleetCircuit::Probe => {}
            FleetCircuit::Busy { retry_in } => {
                assert!(
                    retry_in > Duration::from_millis(150) && retry_in <= duration,
                    "{retry_in:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        decided(b.breaker_probe_blocking("api", RULE)),
        FleetCircuit::Busy { .. }
    ));
}

#[tokio::test]
async fn a_failed_probe_opens_it_again_for_longer_up_to_the_cap() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("growth", &server).await,
        connected("growth", &server).await,
    );
    let rule = BreakerRule {
        open_for: Duration::from_millis(100),
        max_open: Duration::from_millis(300),
        probes: 1,
        ..RULE
    };
    let (mut duration, mut opened) = open_breaker(a, b, "api", rule).await;
    assert_eq!(duration, Duration::from_millis(100));
    // Each failed probe doubles it, up to the cap.
    for expected in [200, 300, 300] {
        sleep_past(opened, duration).await;
        assert_eq!(
            a.breaker_probe("api", rule).await,
            Answer::Decided(FleetCircuit::Probe)
        );
        opened = Instant::now();
        duration = open(record(a, "api", rule, PROBE_FAILED).await);
        assert_eq!(duration, Duration::from_millis(expected));
    }
    // The jitter scales the capped duration.
    sleep_past(opened, duration).await;
    assert_eq!(
        b.breaker_probe("api", rule).await,
        Answer::Decided(FleetCircuit::Probe)
    );
    assert_eq!(
        open(record_jittered(b, "api", rule, PROBE_FAILED, 0.5).await),
        Duration::from_millis(150)
    );
    let mut redis = inspect(&server);
    let openings: i64 = redis::cmd("HGET")
        .arg("growth:breaker:api")
        .arg("openings")
        .query(&mut redis)
        .unwrap();
    assert_eq!(openings, 5);
}

#[tokio::test]
async fn probes_successful_probes_close_it_as_new() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("close", &server).await,
        connected("close", &server).await,
    );
    let rule = BreakerRule {
        open_for: Duration::from_millis(100),
        ..RULE
    };
    let (duration, opened) = open_breaker(a, b, "api", rule).await;
    sleep_past(opened, duration).await;
    let probe = Answer::Decided(FleetCircuit::Probe);
    assert_eq!(a.breaker_probe("api", rule).await, probe);
    assert_eq!(b.breaker_probe("api", rule).await, probe);
    // One answer is not enough: still half-open, which `record` says as "open, probe now".
    assert_eq!(
        record(a, "api", rule, PROBE_SUCCEEDED).await,
        Answer::Decided(FleetCircuit::Open {
            retry_in: Duration::ZERO
        })
    );
    let closed = Answer::Decided(FleetCircuit::Closed);
    assert_eq!(record(b, "api", rule, PROBE_SUCCEEDED).await, closed);
    assert_eq!(a.breaker_probe("api", rule).await, closed);
    let mut redis = inspect(&server);
    assert!(!exists(&mut redis, "close:breaker:api"));
    assert!(!exists(&mut redis, "close:breaker:api:workers"));
    // The window starts afresh: three failures are under the minimum again, and the first
    // opening is the first duration again.
    let (duration, _) = open_breaker(b, a, "api", rule).await;
    assert_eq!(duration, Duration::from_millis(100));
}

#[tokio::test]
async fn lost_probes_slots_are_given_out_again_after_open_for() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("lost", &server).await,
        connected("lost", &server).await,
    );
    let rule = BreakerRule {
        open_for: Duration::from_millis(100),
        ..RULE
    };
    let (duration, opened) = open_breaker(a, b, "api", rule).await;
    sleep_past(opened, duration).await;
    let probe = Answer::Decided(FleetCircuit::Probe);
    assert_eq!(a.breaker_probe("api", rule).await, probe);
    assert_eq!(b.breaker_probe("api", rule).await, probe);
    let given = Instant::now();
    // Neither answers (their callers are gone): busy until open_for after the last went out...
    let Answer::Decided(FleetCircuit::Busy { retry_in }) = a.breaker_probe("api", rule).await
    else {
        panic!("expected busy")
    };
    assert!(retry_in <= duration, "{retry_in:?}");
    sleep_past(given, duration).await;
    // ... then both slots are given out again.
    assert_eq!(b.breaker_probe("api", rule).await, probe);
    assert_eq!(a.breaker_probe_blocking("api", rule), probe);
    assert!(matches!(
        decided(b.breaker_probe("api", rule).await),
        FleetCircuit::Busy { .. }
    ));
    // An answer gives the one still out another open_for; the second closes it.
    record(a, "api", rule, PROBE_SUCCEEDED).await;
    let answered = Instant::now();
    let Answer::Decided(FleetCircuit::Busy { retry_in }) = a.breaker_probe("api", rule).await
    else {
        panic!("expected busy")
    };
    assert!(
        retry_in > duration - answered.elapsed() - SLACK,
        "{retry_in:?}"
    );
    assert_eq!(
        record(b, "api", rule, PROBE_SUCCEEDED).await,
        Answer::Decided(FleetCircuit::Closed)
    );
}

#[tokio::test]
async fn a_released_probe_s_slot_is_given_out_again_at_once() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("released", &server).await,
        connected("released", &server).await,
    );
    // Lost probes would wait 5 s: a slot free sooner was released.
    let rule = BreakerRule {
        open_for: Duration::from_millis(100),
        max_open: Duration::from_millis(100),
        ..RULE
    };
    let (duration, opened) = open_breaker(a, b, "api", rule).await;
    sleep_past(opened, duration).await;
    let rule = BreakerRule {
        open_for: Duration::from_secs(5),
        max_open: Duration::from_secs(5),
        ..rule
    };
    let probe = Answer::Decided(FleetCircuit::Probe);
    assert_eq!(a.breaker_probe("api", rule).await, probe);
    assert_eq!(b.breaker_probe("api", rule).await, probe);
    assert!(matches!(
        decided(a.breaker_probe("api", rule).await),
        FleetCircuit::Busy { .. }
    ));
    // b's probe never ran (its limiter refused it): handed back, fire and forget.
    let released = Instant::now();
    b.breaker_release("api", rule);
    loop {
        match decided(a.breaker_probe("api", rule).await) {
            FleetCircuit::Probe => break,
            FleetCircuit::Busy { .. } if released.elapsed() < Duration::from_secs(2) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("expected the released slot, got {other:?}"),
        }
    }
    // One slot, not more; and a release of a closed circuit's pass changes nothing.
    assert!(matches!(
        decided(b.breaker_probe("api", rule).await),
        FleetCircuit::Busy { .. }
    ));
    record(a, "api", rule, PROBE_SUCCEEDED).await;
    assert_eq!(
        record(a, "api", rule, PROBE_SUCCEEDED).await,
        Answer::Decided(FleetCircuit::Closed)
    );
    a.breaker_release("api", rule);
    assert_eq!(
        record(b, "api", rule, SUCCEEDED).await,
        Answer::Decided(FleetCircuit::Closed)
    );
}

#[tokio::test]
async fn a_late_outcome_while_open_changes_nothing() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("late", &server).await,
        connected("late", &server).await,
    );
    let mut redis = inspect(&server);
    let key = "late:breaker:api";
    let (duration, opened) = open_breaker(a, b, "api", RULE).await;
    let until = |redis: &mut redis::Connection| -> (u64, u64) {
        redis::cmd("HMGET")
            .arg(key)
            .arg("open_until")
            .arg("openings")
            .query(redis)
            .unwrap()
    };
    let before = until(&mut redis);
    // Answers to calls let through before it opened, and a probe's of long ago.
    for (state, outcome) in [
        (a, SUCCEEDED),
        (b, FAILED),
        (a, PROBE_FAILED),
        (b, PROBE_SUCCEEDED),
    ] {
        let retry_in = open(record(state, "api", RULE, outcome).await);
        assert!(
            retry_in > Duration::ZERO && retry_in <= duration,
            "{retry_in:?}"
        );
    }
    assert_eq!(until(&mut redis), before);
    // Kept while open, then for the probes, and long enough for the window.
    let ttl = pttl(&mut redis, key);
    assert!(ttl > 10_000 && ttl <= 10_710, "PTTL {ttl} ms");
    // Half-open: a call that was no probe still changes nothing, and says "probe now".
    sleep_past(opened, duration).await;
    assert_eq!(
        record(a, "api", RULE, FAILED).await,
        Answer::Decided(FleetCircuit::Open {
            retry_in: Duration::ZERO
        })
    );
    assert_eq!(until(&mut redis), before);
    assert_eq!(
        b.breaker_probe("api", RULE).await,
        Answer::Decided(FleetCircuit::Probe)
    );
    // A closed breaker's state lasts as long as its window.
    record(a, "closed", RULE, FAILED).await;
    let ttl = pttl(&mut redis, "late:breaker:closed");
    assert!(ttl > 9_000 && ttl <= 10_010, "PTTL {ttl} ms");
    let ttl = pttl(&mut redis, "late:breaker:closed:workers");
    assert!(ttl > 9_000 && ttl <= 10_010, "PTTL {ttl} ms");
}

#[tokio::test]
async fn outside_a_runtime_the_fire_and_forget_steps_are_done_when_they_return() {
    let Some(server) = redis_server() else { return };
    let (a, b) = (
        connected("outside", &server).await,
        connected("outside", &server).await,
    );
    let circuits = std::thread::spawn(move || {
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut circuits = Vec::new();
        for state in [a, b, a, b] {
            let sender = sender.clone();
            state.breaker_record(
                "api",
                RULE,
                FAILED,
                1.0,
                Box::new(move |circuit| sender.send(circuit).unwrap()),
            );
            // Called on this thread, before `breaker_record` returned.
            circuits.push(receiver.try_recv().unwrap());
        }
        circuits.push(a.breaker_probe_blocking("api", RULE));
        circuits.push(futures_executor::block_on(b.breaker_probe("api", RULE)));
        circuits
    })
    .join()
    .unwrap();
    let closed = Answer::Decided(FleetCircuit::Closed);
    assert_eq!(circuits[..3], [closed, closed, closed]);
    for circuit in &circuits[3..] {
        open(*circuit);
    }
}

#[tokio::test]
async fn the_guards_are_unavailable_while_redis_is_and_share_the_limiters_health() {
    let Some(mut server) = redis_server() else {
        return;
    };
    assert!(redis_events("guards").is_empty());
    let state = leak(RedisState::new("guards").fallback(Fallback::Share(3)));
    let ratio = BudgetRule::Ratio {
        ratio: 0.1,
        window: Duration::from_secs(10),
        floor_per_second: 1,
    };
    let unavailable = Answer::Unavailable { share: 3 };
    let circuit_unavailable = Answer::<FleetCircuit>::Unavailable { share: 3 };
    // Before `connect`: nothing is asked, every answer says so, and `then` hears it at once.
    assert!(!FleetGuards::is_reachable(state));
    assert_eq!(
        state.budget_withdraw("api", ratio, false).await,
        unavailable
    );
    assert_eq!(
        state.budget_withdraw_blocking("api", ratio, false),
        unavailable
    );
    assert_eq!(state.breaker_probe("api", RULE).await, circuit_unavailable);
    assert_eq!(
        state.breaker_probe_blocking("api", RULE),
        circuit_unavailable
    );
    assert_eq!(
        record(state, "api", RULE, FAILED).await,
        circuit_unavailable
    );
    state.budget_deposit("api", ratio);

    state.connect(&server.url()).await.unwrap();
    assert!(FleetGuards::is_reachable(state));
    assert!(decided(state.budget_withdraw("api", ratio, false).await));
    assert_eq!(
        record(state, "api", RULE, FAILED).await,
        Answer::Decided(FleetCircuit::Closed)
    );

    server.stop();
    let stopped = Instant::now();
    assert_eq!(state.breaker_probe("api", RULE).await, circuit_unavailable);
    let first_failure = stopped.elapsed();
    assert!(!FleetGuards::is_reachable(state));
    // Known to be down, for the limiter too: every step answers at once.
    let known_down = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            state.reserve("api", gcra(10, 1), None).await,
            Answer::Unavailable { share: 3 }
        );
        assert_eq!(
            state.budget_withdraw("api", ratio, false).await,
            unavailable
        );
        assert_eq!(
            state.budget_withdraw_blocking("api", ratio, true),
            unavailable
        );
        assert_eq!(
            state.breaker_probe_blocking("api", RULE),
            circuit_unavailable
        );
        assert_eq!(
            record(state, "api", RULE, FAILED).await,
            circuit_unavailable
        );
        state.budget_deposit("api", ratio);
    }
    let hundred_calls = known_down.elapsed();
    assert!(
        hundred_calls < Duration::from_millis(50),
        "{hundred_calls:?}"
    );

    server.restart();
    let restarted = Instant::now();
    while !matches!(state.breaker_probe("api", RULE).await, Answer::Decided(_)) {
        assert!(
            restarted.elapsed() < Duration::from_millis(1500),
            "still unavailable {:?} after the restart",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back_after = restarted.elapsed();
    assert!(FleetGuards::is_reachable(state));
    // A new server, with none of the old one's state.
    assert_eq!(
        state.breaker_probe_blocking("api", RULE),
        Answer::Decided(FleetCircuit::Closed)
    );
    assert_eq!(
        record(state, "api", RULE, FAILED).await,
        Answer::Decided(FleetCircuit::Closed)
    );
    assert!(decided(state.budget_withdraw_blocking("api", ratio, false)));
    granted(state.reserve("api", gcra(10, 1), None).await);
    eprintln!(
        "guards: first failure after {first_failure:?}, 100 steps while down in \
         {hundred_calls:?}, back {back_after:?} after the restart"
    );
    // One event each way, as for the limits alone.
    let events = redis_events("guards");
    let messages: Vec<&str> = events.iter().map(|event| event.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("did not answer"), "{messages:?}");
    assert!(messages[1].contains("answers again"), "{messages:?}");
}
