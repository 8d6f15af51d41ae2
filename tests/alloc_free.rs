//! The success path allocates nothing, and neither does the retry decision for a typed error.
//!
//! `allocation-counter` replaces the global allocator of this test binary (and of no other:
//! only a binary that uses the crate links it) and counts the allocations the current thread
//! makes inside `measure`, so tests running in parallel never see each other's. It pins the
//! README's claim that a call that succeeds at once allocates nothing: sync and async, `Copy`
//! and borrowed arguments, with and without `timeout`, the attribute and the closure API;
//! that a by-value `String` costs exactly its one copy; and that deciding to retry after an
//! `io::Error` allocates nothing either when no subscriber records the event (its text is
//! formatted only for one that does); and that a call under guards (a breaker, a limiter and a
//! budget, `static`s or a keyed guard's existing key) allocates nothing on its success path
//! either. No tracing subscriber is installed in this binary.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use resilience::attempts::Attempts;
use resilience::breaker::CircuitBreaker;
use resilience::budget::RetryBudget;
use resilience::classify::explain;
use resilience::keyed::Keyed;
use resilience::limiter::RateLimiter;
use resilience::log::Site;
use resilience::{BlockingRetryable, BoxError, RetryPolicy, retry_with_backoff};

/// Runs `f` once to warm it up, then again while counting this thread's allocations, and
/// returns that count with `f`'s second result. The first run pays for what is set up once
/// per thread or per process (a thread-local's first use, the `tracing` call site's
/// registration, the jitter generator's seeding): a cost of the first call only, not of
/// each call.
fn allocations<T>(mut f: impl FnMut() -> T) -> (u64, T) {
    drop(f());
    let mut value = None;
    let counted = allocation_counter::measure(|| value = Some(f()));
    match value {
        Some(value) => (counted.count_total, value),
        None => unreachable!("`measure` runs its closure"),
    }
}

/// Polls `future` to completion with a no-op waker, which takes one poll: the functions
/// here never wait on the success path, so no runtime (and none of a runtime's own
/// allocations) is needed.
fn poll_to_completion<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the success path waited"),
    }
}

#[retry_with_backoff]
fn scaled(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x * u64::from(factor))
}

#[retry_with_backoff(timeout = 10)]
fn scaled_within(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x * u64::from(factor))
}

#[retry_with_backoff]
fn name_length(name: &str) -> io::Result<usize> {
    if name.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    Ok(name.len())
}

#[retry_with_backoff(timeout = 10)]
fn name_length_within(name: &str) -> io::Result<usize> {
    if name.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    Ok(name.len())
}

#[retry_with_backoff]
async fn scaled_later(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x * u64::from(factor))
}

#[retry_with_backoff(timeout = 10)]
async fn scaled_later_within(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x * u64::from(factor))
}

#[retry_with_backoff]
fn uploaded_length(body: String) -> io::Result<usize> {
    if body.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    Ok(body.len())
}

#[test]
fn a_sync_call_with_copy_arguments_allocates_nothing() {
    assert_eq!(allocations(|| scaled(7, 3).ok()), (0, Some(21)));
    assert_eq!(allocations(|| scaled_within(7, 3).ok()), (0, Some(21)));
}

#[test]
fn a_sync_call_with_a_borrowed_string_allocates_nothing() {
    let name = String::from("images/beach-0001.png");
    assert_eq!(allocations(|| name_length(&name).ok()), (0, Some(21)));
    assert_eq!(
        allocations(|| name_length_within(&name).ok()),
        (0, Some(21))
    );
}

#[test]
fn an_async_call_allocates_nothing() {
    let (count, value) = allocations(|| poll_to_completion(scaled_later(7, 3)).ok());
    assert_eq!((count, value), (0, Some(21)));
}

#[test]
fn an_async_call_with_a_timeout_allocates_nothing() {
    // tokio's timer needs a runtime's context to be armed; the runtime runs nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let _context = runtime.enter();
    let (count, value) = allocations(|| poll_to_completion(scaled_later_within(7, 3)).ok());
    assert_eq!((count, value), (0, Some(21)));
}

/// What the README's "Arguments" says a by-value argument costs: one copy for the first
/// attempt, which for a `String` is one allocation; the last attempt takes the caller's.
#[test]
fn a_by_value_string_costs_its_one_copy() {
    let (count, value) = allocations(|| {
        let body = String::from("images/beach-0001.png");
        uploaded_length(body).ok()
    });
    // The caller's own `String::from`, and the first attempt's copy.
    assert_eq!((count, value), (2, Some(21)));
}

#[test]
fn the_closure_api_allocates_nothing_when_the_first_attempt_succeeds() {
    let policy = RetryPolicy::new();
    let (count, value) = allocations(|| {
        (|| Ok::<_, io::Error>(21))
            .retry(&policy)
            .named("fetch")
            .call()
            .ok()
    });
    assert_eq!((count, value), (0, Some(21)));
}

#[test]
fn deciding_to_retry_a_typed_error_allocates_nothing() {
    let policy = RetryPolicy::new();
    let (count, decision) = allocations(|| {
        let mut attempts = Attempts::after_first(&policy, Site::closure("fetch"), None);
        attempts.after_error(
            io::Error::from(io::ErrorKind::ConnectionReset),
            |e| explain(e),
            |e| e.to_string(),
            |e| Some(BoxError::from(e)),
            |_, _, _| {},
            Instant::now,
        )
    });
    assert_eq!(count, 0, "the decision allocated");
    // The defaults (README, "Delays"): the wait before attempt 2 is 2 s plus jitter below 1 s.
    let wait = decision.expect("a reset is retried");
    assert!((2.0..3.0).contains(&wait.as_secs_f64()), "{wait:?}");
}

/// A limiter that never refuses in these tests: 10^9 permits a second, as many at once.
const fn free_limiter(name: &'static str) -> RateLimiter {
    RateLimiter::per_second(name, 1_000_000_000).burst(1_000_000_000)
}

static SYNC_BREAKER: CircuitBreaker = CircuitBreaker::new("alloc-sync");
static SYNC_LIMITER: RateLimiter = free_limiter("alloc-sync");
static SYNC_BUDGET: RetryBudget = RetryBudget::ratio("alloc-sync", 0.2);
static SYNC_BUCKET: RetryBudget = RetryBudget::token_bucket("alloc-sync", 500);

#[retry_with_backoff(breaker = SYNC_BREAKER, limiter = SYNC_LIMITER, budget = SYNC_BUDGET)]
fn guarded(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x * u64::from(factor))
}

#[retry_with_backoff(breaker = SYNC_BREAKER, limiter = SYNC_LIMITER, budget = SYNC_BUCKET)]
fn guarded_by_a_bucket(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x * u64::from(factor))
}

#[test]
fn a_sync_call_under_a_breaker_a_limiter_and_a_budget_allocates_nothing() {
    assert_eq!(allocations(|| guarded(7, 3).ok()), (0, Some(21)));
    assert_eq!(
        allocations(|| guarded_by_a_bucket(7, 3).ok()),
        (0, Some(21))
    );
}

static ASYNC_BREAKER: CircuitBreaker = CircuitBreaker::new("alloc-async");
static ASYNC_LIMITER: RateLimiter = free_limiter("alloc-async");
static ASYNC_BUDGET: RetryBudget = RetryBudget::ratio("alloc-async", 0.2);

#[retry_with_backoff(breaker = ASYNC_BREAKER, limiter = ASYNC_LIMITER, budget = ASYNC_BUDGET)]
async fn guarded_later(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x * u64::from(factor))
}

#[test]
fn an_async_call_under_a_breaker_a_limiter_and_a_budget_allocates_nothing() {
    let (count, value) = allocations(|| poll_to_completion(guarded_later(7, 3)).ok());
    assert_eq!((count, value), (0, Some(21)));
}

static PER_MODEL: Keyed<CircuitBreaker> = Keyed::new(CircuitBreaker::new("alloc-per-model"));

#[retry_with_backoff(breaker = PER_MODEL.key(model))]
fn keyed_call(model: &str, x: u64) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x + model.len() as u64)
}

/// A key already held is a lookup under the map's lock and a shared count's increment: nothing
/// allocated, for the lookup as for a call through it. A new key does allocate: its owned copy
/// (`String`), its guard's `Arc`, and the map's table when it grows.
#[test]
fn a_keyed_guard_allocates_only_for_a_new_key() {
    // The first run of each (the warm-up) makes the key; the counted one finds it.
    let (count, _) = allocations(|| PER_MODEL.key("model-a"));
    assert_eq!(count, 0, "looking up an existing key allocated");
    assert_eq!(allocations(|| keyed_call("model-b", 7).ok()), (0, Some(14)));
    let new_key = allocation_counter::measure(|| drop(PER_MODEL.key("model-c")));
    assert!(new_key.count_total >= 2, "{new_key:?}");
}

/// The counter itself works: without this, a broken one would pass every test above.
#[test]
fn the_counter_sees_an_allocation() {
    let (count, boxed) = allocations(|| Box::new(std::hint::black_box(1u8)));
    assert_eq!((count, *boxed), (1, 1));
}
