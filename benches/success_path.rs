//! What a successful first attempt costs, in instructions: the same small functions called
//! plainly, under `#[retry_with_backoff]` (with and without `timeout`, and with each guard:
//! `breaker =`, `limiter =`, `budget =`, all three), and under backon's and tryhard's retries. `scripts/callgrind.sh` runs each case under callgrind and prints
//! the table; this binary is its target.
//!
//! Instruction counts are the measure, not seconds: they repeat exactly on a busy machine.
//! ```text
//! scripts/callgrind.sh                                       # every case, the table
//! cargo bench --bench success_path --no-run                  # or by hand:
//! valgrind --tool=callgrind target/release/deps/success_path-<hash> attribute
//! ```
//! One case name runs that case alone, a million calls; subtract the `none` case (the loop
//! alone) and divide by the number of calls. `cargo bench --bench success_path` runs every
//! case once with wall-clock times, for a glance; `sizes` prints the futures' sizes.
//!
//! No function here waits on the success path, so the async cases poll each future once
//! with a no-op waker: a real executor's overhead (tokio's) would swamp the differences.
//! tryhard retries futures only, so it has no sync case.

use std::future::Future;
use std::hint::black_box;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use backon::{BlockingRetryable as _, ExponentialBuilder, Retryable as _};
use resilience::breaker::CircuitBreaker;
use resilience::budget::RetryBudget;
use resilience::limiter::RateLimiter;
use resilience::retry_with_backoff;

/// Calls per case under callgrind (and `cargo bench`): enough that the program's start-up,
/// which `none` subtracts anyway, and one-time set-ups vanish in the per-call figure.
const CALLS: u64 = 1_000_000;

/// Calls per case when run without arguments, as `cargo test --benches` does: a smoke run.
const SMOKE_CALLS: u64 = 1_000;

/// The error every function would return for an input no case passes, so that the error
/// path exists (and is compiled) as in real code.
fn refused() -> io::Error {
    io::Error::from(io::ErrorKind::TimedOut)
}

// --- sync, `Copy` arguments -------------------------------------------------------------

#[inline(never)]
fn plain(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff]
fn attribute(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(timeout = 10)]
fn attribute_timeout(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

/// `plain` plus one read of the clock: what `timeout` may add on top of the attribute.
#[inline(never)]
fn clock(x: u64, factor: u32) -> io::Result<u64> {
    black_box(Instant::now());
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

// --- sync, under guards ------------------------------------------------------------------
//
// Each function has `static` guards of its own, on their success path: a closed breaker (the
// default settings), a limiter that is always free (10^9 permits a second, bursts of 10^9: a
// million calls advance it a millisecond), a ratio budget (Finagle's) or a token bucket
// (AWS's). A guarded call reads the clock (the `clock` case is one read): once before the
// attempt, and once more for the breaker after its success and for the budget at the start.

/// A limiter that never refuses here.
const fn free_limiter(name: &'static str) -> RateLimiter {
    RateLimiter::per_second(name, 1_000_000_000).burst(1_000_000_000)
}

static BREAKER: CircuitBreaker = CircuitBreaker::new("breaker");
static LIMITER: RateLimiter = free_limiter("limiter");
static BUDGET: RetryBudget = RetryBudget::ratio("budget", 0.2);
static BUCKET: RetryBudget = RetryBudget::token_bucket("bucket", 500);
static ALL_BREAKER: CircuitBreaker = CircuitBreaker::new("all");
static ALL_LIMITER: RateLimiter = free_limiter("all");
static ALL_BUDGET: RetryBudget = RetryBudget::ratio("all", 0.2);

#[inline(never)]
#[retry_with_backoff(breaker = BREAKER)]
fn attribute_breaker(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(limiter = LIMITER)]
fn attribute_limiter(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(budget = BUDGET)]
fn attribute_budget(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(budget = BUCKET)]
fn attribute_budget_bucket(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(breaker = ALL_BREAKER, limiter = ALL_LIMITER, budget = ALL_BUDGET)]
fn attribute_guards(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

// --- sync, a `String` argument ------------------------------------------------------------

#[inline(never)]
fn string_plain(name: String) -> io::Result<usize> {
    if name.is_empty() {
        return Err(refused());
    }
    Ok(name.len())
}

/// By value, so the attribute clones `name` for the first attempt (`max_retries > 1`) and
/// keeps the caller's for a retry.
#[inline(never)]
#[retry_with_backoff]
fn string_attribute(name: String) -> io::Result<usize> {
    if name.is_empty() {
        return Err(refused());
    }
    Ok(name.len())
}

// --- async ------------------------------------------------------------------------------

#[inline(never)]
async fn async_plain(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff]
async fn async_attribute(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(timeout = 10)]
async fn async_attribute_timeout(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(refused());
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

/// Polls `future` once with a no-op waker: every future here is ready at its first poll
/// on the success path, so this is all an executor needs to do for them.
#[inline(always)]
fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a success-path future waited"),
    }
}

/// A fresh `String` for each call, as a caller that builds its argument would pass it.
#[inline(always)]
fn fresh_name() -> String {
    black_box("images/beach-0001.png").to_owned()
}

/// Runs `call` on `calls` inputs, keeping inputs and outputs opaque to the optimiser.
#[inline(never)]
fn run(calls: u64, call: impl Fn(u64, u32) -> u64) -> u64 {
    (0..calls).fold(0u64, |acc, i| {
        acc.wrapping_add(black_box(call(black_box(i), black_box(3))))
    })
}

/// Every case, by name. Each takes the input and the factor and returns a checksum term.
type Case = (&'static str, fn(u64, u32) -> u64);

const CASES: &[Case] = &[
    ("none", |x, factor| x ^ u64::from(factor)),
    ("plain", |x, f| plain(x, f).unwrap_or(0)),
    ("attribute", |x, f| attribute(x, f).unwrap_or(0)),
    ("attribute_timeout", |x, f| {
        attribute_timeout(x, f).unwrap_or(0)
    }),
    ("clock", |x, f| clock(x, f).unwrap_or(0)),
    ("attribute_breaker", |x, f| {
        attribute_breaker(x, f).unwrap_or(0)
    }),
    ("attribute_limiter", |x, f| {
        attribute_limiter(x, f).unwrap_or(0)
    }),
    ("attribute_budget", |x, f| {
        attribute_budget(x, f).unwrap_or(0)
    }),
    ("attribute_budget_bucket", |x, f| {
        attribute_budget_bucket(x, f).unwrap_or(0)
    }),
    ("attribute_guards", |x, f| {
        attribute_guards(x, f).unwrap_or(0)
    }),
    ("backon", |x, f| {
        (|| plain(x, f))
            .retry(ExponentialBuilder::default())
            .call()
            .unwrap_or(0)
    }),
    ("string_plain", |_, _| {
        string_plain(fresh_name()).map_or(0, |n| n as u64)
    }),
    ("string_attribute", |_, _| {
        string_attribute(fresh_name()).map_or(0, |n| n as u64)
    }),
    ("string_backon", |_, _| {
        let name = fresh_name();
        // backon's closure runs again for each attempt, so it clones, as the attribute does.
        (|| string_plain(name.clone()))
            .retry(ExponentialBuilder::default())
            .call()
            .map_or(0, |n| n as u64)
    }),
    ("async_plain", |x, f| {
        poll_once(async_plain(x, f)).unwrap_or(0)
    }),
    ("async_attribute", |x, f| {
        poll_once(async_attribute(x, f)).unwrap_or(0)
    }),
    ("async_attribute_timeout", |x, f| {
        poll_once(async_attribute_timeout(x, f)).unwrap_or(0)
    }),
    ("async_timeout_by_hand", |x, f| {
        // What the attribute's `timeout` replaces: the plain call under tokio's timeout.
        poll_once(tokio::time::timeout(
            Duration::from_secs(10),
            async_plain(x, f),
        ))
        .map_or(0, |result| result.unwrap_or(0))
    }),
    ("async_backon", |x, f| {
        poll_once((|| async_plain(x, f)).retry(ExponentialBuilder::default())).unwrap_or(0)
    }),
    ("async_tryhard", |x, f| {
        // The attribute's defaults: 5 attempts (4 retries), 1 s doubling, capped at 30 s.
        let retried = tryhard::retry_fn(|| async_plain(x, f))
            .retries(4)
            .exponential_backoff(Duration::from_secs(1))
            .max_delay(Duration::from_secs(30));
        poll_once(retried).unwrap_or(0)
    }),
];

/// The futures' sizes: the attribute keeps the plain future's state and adds its own
/// locals; the retries after a failure live in a separate boxed future.
fn print_sizes() {
    let sizes = [
        ("async_plain", size_of_val(&async_plain(1, 3))),
        ("async_attribute", size_of_val(&async_attribute(1, 3))),
        (
            "async_attribute_timeout",
            size_of_val(&async_attribute_timeout(1, 3)),
        ),
        (
            "async_timeout_by_hand",
            size_of_val(&tokio::time::timeout(
                Duration::from_secs(10),
                async_plain(1, 3),
            )),
        ),
    ];
    for (name, bytes) in sizes {
        println!("size {name} {bytes}");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a case name picks that case (for callgrind); `sizes`
    // prints the futures' sizes only. With no argument at all (`cargo test --benches`) each
    // case runs a few calls, to show that it works.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // The timeout of an `async fn` arms tokio's timer, which needs a runtime's context; the
    // runtime never runs anything here (the futures are polled by hand).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let _context = runtime.enter();
    if chosen == ["sizes"] {
        print_sizes();
        return;
    }
    let full = !chosen.is_empty() || args.iter().any(|a| a == "--bench");
    let calls = if full { CALLS } else { SMOKE_CALLS };
    let unknown: Vec<&&str> = chosen
        .iter()
        .filter(|c| !CASES.iter().any(|(name, _)| name == *c))
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = CASES.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "unknown case {unknown:?}; the cases: sizes {}",
            names.join(" ")
        );
        std::process::exit(2);
    }
    for &(name, call) in CASES {
        if !chosen.is_empty() && !chosen.contains(&name) {
            continue;
        }
        let started = Instant::now();
        let sum = run(calls, call);
        let per_call = started.elapsed().as_nanos() as f64 / calls as f64;
        // `scripts/callgrind.sh` reads the number of calls from this line.
        println!("{name:>24}: {per_call:7.2} ns/call over {calls} calls (checksum {sum})");
    }
    if chosen.is_empty() {
        print_sizes();
    }
}
