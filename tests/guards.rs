//! The guards through the attribute and the closure API: a breaker, a limiter, a budget and
//! keyed guards, alone and composed, on virtual time (the thread's virtual clock for sync
//! functions, tokio's paused clock for async ones). Each test has its own `static` guards, so
//! tests running in parallel do not share state.

mod common;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{media_error, on_virtual_clock};
use resilience::breaker::{BreakerOpen, CircuitBreaker, CircuitState};
use resilience::budget::RetryBudget;
use resilience::guards::Guards;
use resilience::http::HttpError;
use resilience::keyed::Keyed;
use resilience::limiter::{RateLimited, RateLimiter};
use resilience::sleep::now_current;
use resilience::{
    BlockingRetryable, GiveUpReason, MediaProcessingError, RetryError, RetryPolicy, Retryable,
    retry_with_backoff,
};

fn unavailable() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionReset)
}

fn bad_request() -> io::Error {
    io::Error::from(io::ErrorKind::InvalidInput)
}

/// Opens after 4 calls of which half failed, for 10 s; 1 probe.
static SYNC_BREAKER: CircuitBreaker = CircuitBreaker::new("sync")
    .count_window(4)
    .minimum_calls(4)
    .failure_rate(0.5)
    .open_for(Duration::from_secs(10))
    .open_jitter(0.0)
    .half_open_probes(1);

#[retry_with_backoff(max_retries = 2, base_delay = 0.1, jitter = 0.0, breaker = SYNC_BREAKER)]
fn flaky(calls: &AtomicU32, fail: bool) -> io::Result<u32> {
    calls.fetch_add(1, Ordering::Relaxed);
    if fail { Err(unavailable()) } else { Ok(1) }
}

#[test]
fn an_open_breaker_refuses_at_once_then_lets_a_probe_through_and_closes() {
    let calls = AtomicU32::new(0);
    let ((), clock) = on_virtual_clock(|| {
        // Two calls of two failed attempts each: 4 failures in the window of 4, so it opens.
        for _ in 0..2 {
            let error = flaky(&calls, true).unwrap_err();
            assert_eq!(
                media_error(&error).reason(),
                GiveUpReason::AttemptsExhausted
            );
        }
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        assert!(matches!(
            SYNC_BREAKER.state(now_current()),
            CircuitState::Open { .. }
        ));
        // Open: the call fails at once, the body is not run, the error says when to come back.
        let error = flaky(&calls, false).unwrap_err();
        let give_up = media_error(&error);
        assert_eq!(calls.load(Ordering::Relaxed), 4, "no attempt while open");
        assert_eq!(give_up.attempts(), 0);
        let GiveUpReason::CircuitOpen { breaker, retry_in } = give_up.reason() else {
            panic!("expected an open circuit, got {:?}", give_up.reason());
        };
        assert_eq!(breaker, "sync");
        let retry_in = retry_in.expect("an automatic opening says when it probes");
        assert!(retry_in <= Duration::from_secs(10), "{retry_in:?}");
        assert!(give_up.last_error::<BreakerOpen>().is_some());
        assert!(
            give_up.to_string().contains("circuit `sync` is open"),
            "{give_up}"
        );
    });
    // After the open duration (the virtual clock moved 0.2 s in the waits), one probe.
    clock.advance(Duration::from_secs(10));
    resilience::sleep::with_sleeper(clock.clone(), || {
        assert_eq!(flaky(&calls, false).unwrap(), 1);
        assert_eq!(SYNC_BREAKER.state(now_current()), CircuitState::Closed);
    });
    assert_eq!(calls.load(Ordering::Relaxed), 5);
}

static IGNORING_BREAKER: CircuitBreaker = CircuitBreaker::new("ignoring")
    .count_window(4)
    .minimum_calls(4)
    .failure_rate(0.5);

#[retry_with_backoff(max_retries = 3, base_delay = 0.0, breaker = IGNORING_BREAKER)]
fn rejected() -> io::Result<()> {
    Err(bad_request())
}

#[test]
fn a_caller_error_does_not_count_against_the_service() {
    for _ in 0..20 {
        let error = rejected().unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::InvalidInput,
            "returned unchanged"
        );
    }
    assert_eq!(
        IGNORING_BREAKER.state(std::time::Instant::now()),
        CircuitState::Closed
    );
}

static HELD_BREAKER: CircuitBreaker = CircuitBreaker::new("held");
static HELD_LIMITER: RateLimiter = RateLimiter::per_second("held", 1);

#[retry_with_backoff(breaker = HELD_BREAKER, limiter = HELD_LIMITER)]
fn held(calls: &AtomicU32) -> io::Result<()> {
    calls.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[test]
fn the_breaker_is_asked_before_the_limiter_and_a_held_circuit_names_no_time() {
    let calls = AtomicU32::new(0);
    let ((), _) = on_virtual_clock(|| {
        HELD_BREAKER.open();
        let before = HELD_LIMITER.next_free(now_current());
        let error = held(&calls).unwrap_err();
        assert_eq!(
            media_error(&error).reason(),
            GiveUpReason::CircuitOpen {
                breaker: "held",
                retry_in: None
            }
        );
        // The refused call took no permit.
        assert_eq!(HELD_LIMITER.next_free(now_current()), before);
        HELD_BREAKER.close();
        held(&calls).unwrap();
    });
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

static SPACED: RateLimiter = RateLimiter::per_second("spaced", 10);

#[retry_with_backoff(limiter = SPACED)]
async fn spaced(started: &std::sync::Mutex<Vec<tokio::time::Instant>>) -> io::Result<()> {
    started.lock().unwrap().push(tokio::time::Instant::now());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn callers_sharing_a_limiter_are_spaced_by_its_rate_without_blocking() {
    let started = std::sync::Mutex::new(Vec::new());
    let t0 = tokio::time::Instant::now();
    let calls: Vec<_> = (0..5).map(|_| spaced(&started)).collect();
    for outcome in futures_join_all(calls).await {
        outcome.unwrap();
    }
    let mut offsets: Vec<u128> = started
        .lock()
        .unwrap()
        .iter()
        .map(|at| (*at - t0).as_millis())
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, [0, 100, 200, 300, 400]);
}

/// Awaits every future, concurrently, on the current task.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if set.iter().any(|(done, _)| *done == i) {
                continue;
            }
            match future.as_mut().poll(cx) {
                std::task::Poll::Ready(out) => set.push((i, out)),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    set.sort_by_key(|(i, _)| *i);
    set.into_iter().map(|(_, out)| out).collect()
}

static SLOW_QUOTA: RateLimiter = RateLimiter::per_second("slow", 1);

#[retry_with_backoff(timeout = 1.5, limiter = SLOW_QUOTA)]
async fn within_a_timeout() -> io::Result<()> {
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_permit_past_the_deadline_gives_up_at_once() {
    within_a_timeout().await.unwrap(); // at once
    within_a_timeout().await.unwrap(); // its permit 1 s later: inside the 1.5 s timeout
    // Three at once: the next permits are 1, 2 and 3 s away. The first fits; the others
    // would end past the deadline, so they give up at once, and a refusal reserves nothing
    // (both see the same 2 s).
    let t0 = tokio::time::Instant::now();
    let outcomes = futures_join_all(vec![
        within_a_timeout(),
        within_a_timeout(),
        within_a_timeout(),
    ])
    .await;
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    for outcome in &outcomes[1..] {
        let refused = media_error(outcome.as_ref().unwrap_err());
        assert_eq!(
            refused.reason(),
            GiveUpReason::RateLimited {
                limiter: "slow",
                wait: Duration::from_secs(2)
            }
        );
        assert_eq!(refused.attempts(), 0);
        assert!(refused.last_error::<RateLimited>().is_some());
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(2)));
    }
    assert_eq!(tokio::time::Instant::now() - t0, Duration::from_secs(1));
}

static LEARNING: RateLimiter = RateLimiter::per_second("learning", 100);

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 2, base_delay = 0.01, jitter = 0.0, limiter = LEARNING)]
async fn told_to_wait(first: &AtomicU32) -> Result<(), ApiError> {
    if first.fetch_add(1, Ordering::Relaxed) == 0 {
        return Err(HttpError::new(429, Some(Duration::from_secs(3)), "slow down").into());
    }
    Ok(())
}

#[retry_with_backoff(limiter = LEARNING)]
async fn bystander() -> Result<tokio::time::Instant, ApiError> {
    Ok(tokio::time::Instant::now())
}

#[tokio::test(start_paused = true)]
async fn a_429_hint_pauses_the_limiter_for_every_caller_that_shares_it() {
    let t0 = tokio::time::Instant::now();
    let first = AtomicU32::new(0);
    // The 429 says 3 s; the caller waits 3 s, and so does a caller that never saw it.
    let (told, other) = tokio::join!(told_to_wait(&first), async {
        tokio::task::yield_now().await;
        bystander().await
    });
    told.unwrap();
    let other_ran_at = other.unwrap();
    assert!(
        other_ran_at - t0 >= Duration::from_secs(3),
        "{:?}",
        other_ran_at - t0
    );
    assert!(tokio::time::Instant::now() - t0 < Duration::from_secs(4));
}

static SMALL_BUDGET: RetryBudget = RetryBudget::token_bucket("small", 10)
    .retry_cost(5)
    .success_refund(0);

#[retry_with_backoff(max_retries = 5, base_delay = 0.0, budget = SMALL_BUDGET)]
fn always_down(calls: &AtomicU32) -> io::Result<()> {
    calls.fetch_add(1, Ordering::Relaxed);
    Err(unavailable())
}

#[test]
fn a_spent_budget_returns_the_retryable_failure_at_once() {
    let calls = AtomicU32::new(0);
    // 10 tokens, 5 a retry: the first call retries twice, then the budget is spent.
    let error = always_down(&calls).unwrap_err();
    let give_up = media_error(&error);
    assert_eq!(
        give_up.reason(),
        GiveUpReason::BudgetExhausted { budget: "small" }
    );
    assert_eq!(give_up.attempts(), 3);
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert!(
        give_up.find::<io::Error>().is_some(),
        "the last failure is kept"
    );
    // The next call makes its one attempt and stops.
    let error = always_down(&calls).unwrap_err();
    assert_eq!(media_error(&error).attempts(), 1);
    assert_eq!(calls.load(Ordering::Relaxed), 4);
}

static PER_HOST: Keyed<CircuitBreaker> = Keyed::new(
    CircuitBreaker::new("per-host")
        .count_window(2)
        .minimum_calls(2)
        .failure_rate(1.0),
);

#[retry_with_backoff(max_retries = 2, base_delay = 0.0, breaker = PER_HOST.key(host))]
fn call_host(host: &str, fail: bool) -> io::Result<&'static str> {
    if fail { Err(unavailable()) } else { Ok("ok") }
}

#[test]
fn a_keyed_breaker_opens_for_one_key_only() {
    assert!(call_host("down.example", true).is_err());
    let error = call_host("down.example", false).unwrap_err();
    assert!(matches!(
        media_error(&error).reason(),
        GiveUpReason::CircuitOpen { .. }
    ));
    assert_eq!(call_host("up.example", false).unwrap(), "ok");
    assert_eq!(PER_HOST.len(), 2);
}

static CLOSURE_BREAKER: CircuitBreaker = CircuitBreaker::new("closure")
    .count_window(2)
    .minimum_calls(2)
    .failure_rate(1.0);
static POLICY: RetryPolicy = RetryPolicy::new();

#[test]
fn the_closure_api_takes_the_same_guards() {
    let attempts = AtomicU32::new(0);
    let ((), _) = on_virtual_clock(|| {
        let outcome: Result<(), RetryError<io::Error>> = (|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(unavailable())
        })
        .retry(&POLICY)
        .guards(Guards::new().breaker(&CLOSURE_BREAKER))
        .call();
        // Two failures open it; the third attempt is refused.
        let Err(RetryError::GaveUp(give_up)) = outcome else {
            panic!("expected a give-up");
        };
        assert!(matches!(give_up.reason(), GiveUpReason::CircuitOpen { .. }));
        assert_eq!(give_up.attempts(), 2);
    });
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
}

static ASYNC_BUDGET: RetryBudget = RetryBudget::token_bucket("async", 5).retry_cost(5);

#[tokio::test(start_paused = true)]
async fn the_async_closure_api_takes_the_same_guards() {
    let attempts = AtomicU32::new(0);
    let outcome: Result<(), RetryError<io::Error>> = (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        async { Err(unavailable()) }
    })
    .retry(&POLICY)
    .guards(Guards::new().budget(&ASYNC_BUDGET))
    .await;
    let Err(RetryError::GaveUp(give_up)) = outcome else {
        panic!("expected a give-up");
    };
    assert_eq!(
        give_up.reason(),
        GiveUpReason::BudgetExhausted { budget: "async" }
    );
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        2,
        "one retry paid, then spent"
    );
}

static NOT_TOLD: RateLimiter = RateLimiter::per_second("not-told", 100);

#[retry_with_backoff(limiter = NOT_TOLD)]
async fn refused_for_the_day() -> Result<(), ApiError> {
    // Not retryable, with a hint: a quota for the day, which the limiter must not take as
    // a pause for the next requests.
    Err(HttpError::new(400, Some(Duration::from_secs(3600)), "quota for the day").into())
}

#[tokio::test(start_paused = true)]
async fn the_hint_of_an_error_that_is_not_retried_does_not_pause_the_limiter() {
    assert!(matches!(
        refused_for_the_day().await,
        Err(ApiError::Http(_))
    ));
    let now = <resilience::TokioTimer as resilience::timer::AsyncTimer>::now();
    let next = NOT_TOLD.next_free(now);
    assert!(
        next <= now + Duration::from_millis(10),
        "paused {:?}",
        next - now
    );
}

static CAPPED_HINT: RateLimiter = RateLimiter::per_second("capped-hint", 100);

#[retry_with_backoff(max_retries = 2, base_delay = 0.0, max_hint = 60.0, limiter = CAPPED_HINT)]
async fn asks_for_an_hour() -> Result<(), ApiError> {
    Err(HttpError::new(429, Some(Duration::from_secs(3600)), "come back in an hour").into())
}

#[tokio::test(start_paused = true)]
async fn a_hint_above_max_hint_gives_up_and_leaves_the_limiter_alone() {
    let Err(ApiError::GaveUp(give_up)) = asks_for_an_hour().await else {
        panic!("expected a give-up");
    };
    assert!(matches!(
        give_up.reason(),
        GiveUpReason::HintAboveCap { .. }
    ));
    let now = <resilience::TokioTimer as resilience::timer::AsyncTimer>::now();
    let next = CAPPED_HINT.next_free(now);
    assert!(
        next <= now + Duration::from_millis(10),
        "paused {:?}",
        next - now
    );
}

static SLOW_CHECKED: CircuitBreaker = CircuitBreaker::new("slow-checked")
    .count_window(10)
    .minimum_calls(10)
    .slow_calls(Duration::from_millis(500), 0.5);
static ONE_A_SECOND: RateLimiter = RateLimiter::per_second("one-a-second", 1);

#[retry_with_backoff(breaker = SLOW_CHECKED, limiter = ONE_A_SECOND)]
fn fast_but_queued() -> io::Result<()> {
    Ok(())
}

#[test]
fn the_limiter_s_queue_is_not_a_slow_call() {
    let ((), clock) = on_virtual_clock(|| {
        // Ten calls, each waiting its turn for up to 9 s on the limiter: the service answers
        // at once, so none is slow.
        for _ in 0..12 {
            fast_but_queued().unwrap();
        }
        assert_eq!(SLOW_CHECKED.state(now_current()), CircuitState::Closed);
    });
    assert!(
        clock.elapsed() >= Duration::from_secs(11),
        "the limiter made them wait"
    );
}
