//! `resilience::redis::RedisState` against a real `redis-server` (skipped when it is not
//! installed, unless `RESILIENCE_REQUIRE_REDIS` is set): each test starts its own server on a
//! free loopback port, and plays two processes with two states (leaked, as the `static`s of
//! two processes would be) connected to it. Real time, tiny rates (10 a second): a permit's
//! time is the moment it was asked plus the wait Redis answered, so the checks hold whatever
//! the machine's load adds to the test's own sleeps.

mod common;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{RedisServer, redis_events, redis_server, redis_server_with};
use resilience::fleet::{Answer, FleetState, Gcra, Reservation};
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
