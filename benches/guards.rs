//! Wall-clock times of each guard on the success path, side by side with other crates' own: a
//! closed circuit breaker (against failsafe's and tower-resilience's), a free rate limiter
//! (against governor's), alone and shared by 8 threads, a retry budget, a keyed guard's lookup,
//! and a sync function under `#[retry_with_backoff]` with each guard and all three.
//!
//! ```text
//! cargo bench --bench guards                      # every group, ~1 min, then a table of medians
//! cargo bench --bench guards -- limiter_free      # one group
//! ```
//!
//! The target: **< 50 ns and no allocation per guard on the success path**. The allocations are
//! counted by `tests/alloc_free.rs` (`cargo test --test alloc_free`), the instructions of the
//! `attribute_*` cases by `scripts/callgrind.sh attribute attribute_breaker attribute_limiter
//! attribute_budget attribute_guards`.
//!
//! The clock: every guard takes the time as an argument, which a real call reads from the
//! clock (`Instant::now()`; under guards the attribute reads it once before each attempt,
//! whatever the guards, once more after a success when there is a breaker, and once at the
//! call's start when there is a budget). A `clock_in` case reads it in each iteration as such
//! a call does; a `clock_out` case reads it once, outside the measured loop, and passes the
//! same time (the guard's own cost); the case `breaker_closed/clock_alone` is one
//! `Instant::now()`. failsafe, tower-resilience and governor read their clocks themselves:
//! compare them with the `clock_in` cases.
//!
//! Groups (each case's baseline in the table's last column):
//!
//! - `breaker_closed`: `try_acquire` then `record(permit, Outcome::Success, ..)` on a closed
//!   breaker with the default settings; failsafe's `CircuitBreaker::call` on an `Ok` closure
//!   (`Config::new().build()`, its default policy); tower-resilience's breaker (default
//!   builder) around a `service_fn` that is ready at once, `poll_ready` then `call`, its boxed
//!   future awaited on tokio's current-thread runtime (`tower_current_thread`) or polled once
//!   with a no-op waker (`tower_poll_once`: its lock is tokio's async mutex, which an
//!   uncontended poll takes at once, so it needs no executor).
//! - `limiter_free`: `try_acquire` on a limiter of 10^9 permits a second, bursts of 10^9, so
//!   always free; governor's `RateLimiter::direct(Quota::per_second(10^9)).check()`, the same
//!   quota (its burst is the rate).
//! - `limiter_contended_8_threads`: 8 threads, each its share of the iterations on one shared
//!   limiter; the time is the wall time from their common start to the last one's end, so the
//!   figure is ns per operation of all 8 together (on this 2-core machine, 4 threads a core).
//! - `budget`: `deposit` on the ratio model (Finagle's, behind a lock); `deposit` then
//!   `succeeded(false)` on the token bucket (AWS's; a full bucket is only read).
//! - `keyed`: `Keyed::key("model-a")`, a key already held among 12 (it reads the clock),
//!   `key_at` with the time passed, and `key_new_when_full`: a new key each time into a full
//!   map of 10 000 keys.
//! - `attribute_guarded`: the plain function, under `#[retry_with_backoff]`, and with
//!   `breaker =`, `limiter =`, `budget =` (ratio, and a token bucket), and all three, each
//!   guard a `static` of its own.
//!
//! The medians are read back from criterion's own files
//! (`target/criterion/<group>/<case>/new/estimates.json`), as `benches/compare.rs` does.

use std::fs;
use std::future::Future;
use std::hint::black_box;
use std::io;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use failsafe::CircuitBreaker as _;
use resilience::breaker::{CircuitBreaker, Outcome};
use resilience::budget::RetryBudget;
use resilience::keyed::Keyed;
use resilience::limiter::RateLimiter;
use resilience::retry_with_backoff;
use tower::Service as _;

// --- the guards ----------------------------------------------------------------------------

/// Permits a second of the free limiters, theirs and ours: one every nanosecond, and as many
/// at once, so that neither ever refuses in a run (a `clock_out` batch advances ours by one
/// nanosecond per permit, against a second of burst).
const FREE_RATE: u32 = 1_000_000_000;

/// A free limiter of ours.
const fn free_limiter(name: &'static str) -> RateLimiter {
    RateLimiter::per_second(name, FREE_RATE).burst(FREE_RATE)
}

/// governor's limiter with the same quota, on its default clock.
fn governor_limiter() -> governor::DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(FREE_RATE).expect("a non-zero rate");
    governor::RateLimiter::direct(governor::Quota::per_second(rate))
}

static BREAKER: CircuitBreaker = CircuitBreaker::new("bench");
static LIMITER_OUT: RateLimiter = free_limiter("bench-out");
static LIMITER_IN: RateLimiter = free_limiter("bench-in");
static SHARED_OUT: RateLimiter = free_limiter("shared-out");
static SHARED_IN: RateLimiter = free_limiter("shared-in");
static RATIO: RetryBudget = RetryBudget::ratio("bench", 0.2);
static RATIO_IN: RetryBudget = RetryBudget::ratio("bench-in", 0.2);
static BUCKET: RetryBudget = RetryBudget::token_bucket("bench", 500);
static PER_MODEL: Keyed<RateLimiter> = Keyed::new(free_limiter("per-model"));

// The attribute's guards, one set per function.
static ATTR_BREAKER: CircuitBreaker = CircuitBreaker::new("attribute");
static ATTR_LIMITER: RateLimiter = free_limiter("attribute");
static ATTR_BUDGET: RetryBudget = RetryBudget::ratio("attribute", 0.2);
static ATTR_BUCKET: RetryBudget = RetryBudget::token_bucket("attribute", 500);
static ALL_BREAKER: CircuitBreaker = CircuitBreaker::new("all");
static ALL_LIMITER: RateLimiter = free_limiter("all");
static ALL_BUDGET: RetryBudget = RetryBudget::ratio("all", 0.2);

// --- the functions measured (as in `compare.rs` and `success_path.rs`) ----------------------

#[inline(never)]
fn plain(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff]
fn attribute(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(breaker = ATTR_BREAKER)]
fn attribute_breaker(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(limiter = ATTR_LIMITER)]
fn attribute_limiter(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(budget = ATTR_BUDGET)]
fn attribute_budget(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(budget = ATTR_BUCKET)]
fn attribute_budget_bucket(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff(breaker = ALL_BREAKER, limiter = ALL_LIMITER, budget = ALL_BUDGET)]
fn attribute_guards(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

/// Polls `future` once with a no-op waker; it must be ready then.
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

/// `iters` iterations of `step`, each given the same time, read once before the loop.
fn clock_out(iters: u64, mut step: impl FnMut(Instant)) -> Duration {
    let now = Instant::now();
    let started = Instant::now();
    for _ in 0..iters {
        step(black_box(now));
    }
    started.elapsed()
}

// --- the groups ----------------------------------------------------------------------------

fn breaker_closed(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_closed");
    group.bench_function("clock_alone", |b| b.iter(Instant::now));
    group.bench_function("resilience_clock_out", |b| {
        b.iter_custom(|iters| {
            clock_out(iters, |now| {
                let permit = BREAKER.try_acquire(now).expect("closed");
                BREAKER.record(permit, Outcome::Success, now);
            })
        })
    });
    // Two reads, as the attribute makes for a breaker: before the attempt, after its success.
    group.bench_function("resilience_clock_in", |b| {
        b.iter(|| {
            let permit = BREAKER.try_acquire(Instant::now()).expect("closed");
            BREAKER.record(permit, Outcome::Success, Instant::now());
        })
    });
    let failsafe = failsafe::Config::new().build();
    group.bench_function("failsafe", |b| {
        b.iter(|| {
            failsafe
                .call(|| Ok::<u64, io::Error>(black_box(41)))
                .expect("closed")
        })
    });
    let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("the default settings");
    let mut service = layer.layer_fn(tower::service_fn(|x: u64| {
        std::future::ready(Ok::<u64, io::Error>(x))
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    group.bench_function("tower_current_thread", |b| {
        b.to_async(&runtime).iter(|| {
            // Closed, it answers at once; the call's future is boxed and owns what it needs.
            let ready = service.poll_ready(&mut Context::from_waker(Waker::noop()));
            assert!(matches!(ready, Poll::Ready(Ok(()))), "closed and ready");
            service.call(black_box(41))
        })
    });
    group.bench_function("tower_poll_once", |b| {
        b.iter(|| {
            let ready = service.poll_ready(&mut Context::from_waker(Waker::noop()));
            assert!(matches!(ready, Poll::Ready(Ok(()))), "closed and ready");
            poll_once(service.call(black_box(41))).expect("closed")
        })
    });
    group.finish();
}

fn limiter_free(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_free");
    group.bench_function("resilience_clock_out", |b| {
        b.iter_custom(|iters| clock_out(iters, |now| LIMITER_OUT.try_acquire(now).expect("free")))
    });
    group.bench_function("resilience_clock_in", |b| {
        b.iter(|| LIMITER_IN.try_acquire(Instant::now()).expect("free"))
    });
    let governor = governor_limiter();
    group.bench_function("governor", |b| b.iter(|| governor.check().expect("free")));
    group.finish();
}

const THREADS: u64 = 8;

/// `iters` operations shared by [`THREADS`] threads that start together; the wall time from
/// their start to the end of the last one. Each thread is handed the time it starts at.
fn contended(iters: u64, op: impl Fn(Instant) + Sync) -> Duration {
    let start = Barrier::new(THREADS as usize + 1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let (start, op) = (&start, &op);
                let share = iters / THREADS + u64::from(i < iters % THREADS);
                scope.spawn(move || {
                    start.wait();
                    let now = Instant::now();
                    for _ in 0..share {
                        op(black_box(now));
                    }
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        for thread in threads {
            thread.join().expect("a bench thread");
        }
        started.elapsed()
    })
}

fn limiter_contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_contended_8_threads");
    group.bench_function("resilience_clock_out", |b| {
        b.iter_custom(|iters| contended(iters, |now| SHARED_OUT.try_acquire(now).expect("free")))
    });
    group.bench_function("resilience_clock_in", |b| {
        b.iter_custom(|iters| {
            contended(iters, |_| {
                SHARED_IN.try_acquire(Instant::now()).expect("free");
            })
        })
    });
    let governor = governor_limiter();
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| contended(iters, |_| governor.check().expect("free")))
    });
    group.finish();
}

fn budget(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget");
    group.bench_function("ratio_deposit_clock_out", |b| {
        b.iter_custom(|iters| clock_out(iters, |now| RATIO.deposit(now)))
    });
    group.bench_function("ratio_deposit_clock_in", |b| {
        b.iter(|| RATIO_IN.deposit(Instant::now()))
    });
    group.bench_function("bucket_deposit_succeeded", |b| {
        b.iter_custom(|iters| {
            clock_out(iters, |now| {
                BUCKET.deposit(now);
                BUCKET.succeeded(black_box(false));
            })
        })
    });
    group.finish();
}

fn keyed(c: &mut Criterion) {
    for model in ["model-a", "model-b", "model-c", "model-d"] {
        for tier in ["", "-mini", "-pro"] {
            drop(PER_MODEL.key(&format!("{model}{tier}")));
        }
    }
    let mut group = c.benchmark_group("keyed");
    group.bench_function("key_existing", |b| {
        b.iter(|| PER_MODEL.key(black_box("model-a")))
    });
    group.bench_function("key_at_existing", |b| {
        b.iter_custom(|iters| {
            clock_out(iters, |now| {
                black_box(PER_MODEL.key_at(black_box("model-a"), now));
            })
        })
    });
    // A stream of new keys into a full map (10 000 keys): what a tenant seen for the first
    // time costs, the map's scans for the least recently used included.
    group.bench_function("key_new_when_full", |b| {
        let full: Keyed<RateLimiter, u64> = Keyed::new(RateLimiter::per_second("tenant", 10));
        let start = Instant::now();
        let mut next = 0u64;
        let mut insert = |full: &Keyed<RateLimiter, u64>| {
            next += 1;
            black_box(full.key_at(&next, start + Duration::from_nanos(next)));
        };
        for _ in 0..resilience::keyed::DEFAULT_MAX_KEYS {
            insert(&full);
        }
        b.iter(|| insert(&full))
    });
    group.finish();
}

fn attribute_guarded(c: &mut Criterion) {
    let mut group = c.benchmark_group("attribute_guarded");
    group.bench_function("plain", |b| b.iter(|| plain(black_box(41), black_box(3))));
    group.bench_function("attribute", |b| {
        b.iter(|| attribute(black_box(41), black_box(3)))
    });
    group.bench_function("attribute_breaker", |b| {
        b.iter(|| attribute_breaker(black_box(41), black_box(3)))
    });
    group.bench_function("attribute_limiter", |b| {
        b.iter(|| attribute_limiter(black_box(41), black_box(3)))
    });
    group.bench_function("attribute_budget", |b| {
        b.iter(|| attribute_budget(black_box(41), black_box(3)))
    });
    group.bench_function("attribute_budget_bucket", |b| {
        b.iter(|| attribute_budget_bucket(black_box(41), black_box(3)))
    });
    group.bench_function("attribute_guards", |b| {
        b.iter(|| attribute_guards(black_box(41), black_box(3)))
    });
    group.finish();
}

// --- the run and its table -----------------------------------------------------------------

/// Every case, by group, in the table's order, each with the case of its group it is compared
/// with (`-`: none).
const CASES: &[(&str, &[(&str, &str)])] = &[
    (
        "breaker_closed",
        &[
            ("clock_alone", "-"),
            ("resilience_clock_out", "-"),
            ("resilience_clock_in", "clock_alone"),
            ("failsafe", "resilience_clock_in"),
            ("tower_current_thread", "resilience_clock_in"),
            ("tower_poll_once", "resilience_clock_in"),
        ],
    ),
    (
        "limiter_free",
        &[
            ("resilience_clock_out", "-"),
            ("resilience_clock_in", "-"),
            ("governor", "resilience_clock_in"),
        ],
    ),
    (
        "limiter_contended_8_threads",
        &[
            ("resilience_clock_out", "-"),
            ("resilience_clock_in", "-"),
            ("governor", "resilience_clock_in"),
        ],
    ),
    (
        "budget",
        &[
            ("ratio_deposit_clock_out", "-"),
            ("ratio_deposit_clock_in", "-"),
            ("bucket_deposit_succeeded", "-"),
        ],
    ),
    (
        "keyed",
        &[
            ("key_existing", "-"),
            ("key_at_existing", "-"),
            ("key_new_when_full", "-"),
        ],
    ),
    (
        "attribute_guarded",
        &[
            ("plain", "-"),
            ("attribute", "plain"),
            ("attribute_breaker", "attribute"),
            ("attribute_limiter", "attribute"),
            ("attribute_budget", "attribute"),
            ("attribute_budget_bucket", "attribute"),
            ("attribute_guards", "attribute"),
        ],
    ),
];

/// Where criterion keeps its results: `$CRITERION_HOME`, else `criterion/` in the target
/// directory this bench was built in (its executable is `<target>/release/deps/guards-*`).
/// It is also handed to criterion, so that both agree whatever cargo's configuration says.
fn output_directory() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median, in ns, that criterion saved for `group/case` during this run (since
/// `started`); `None` for a case that this run filtered out or did not save.
fn median_ns(dir: &Path, group: &str, case: &str, started: SystemTime) -> Option<f64> {
    let file = dir
        .join(group)
        .join(case)
        .join("new")
        .join("estimates.json");
    let modified = fs::metadata(&file).and_then(|m| m.modified()).ok()?;
    if modified < started {
        return None;
    }
    let estimates: serde_json::Value = serde_json::from_slice(&fs::read(&file).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn print_medians(dir: &Path, started: SystemTime) {
    let mut header = false;
    for &(group, cases) in CASES {
        let medians: Vec<(&str, &str, Option<f64>)> = cases
            .iter()
            .map(|&(case, baseline)| (case, baseline, median_ns(dir, group, case, started)))
            .collect();
        for &(case, baseline, median) in &medians {
            let Some(ns) = median else { continue };
            if !header {
                println!(
                    "\nMedians (criterion, ns per call or operation; results in {})",
                    dir.display()
                );
                println!(
                    "{:<28} {:<25} {:>9} {:>9}  vs",
                    "group", "case", "median", "diff"
                );
                header = true;
            }
            let base = medians
                .iter()
                .find(|&&(other, _, _)| other == baseline)
                .and_then(|&(_, _, median)| median);
            let (diff, versus) = match base {
                Some(base) => (format!("{:+.2}", ns - base), baseline),
                None => (String::new(), ""),
            };
            println!("{group:<28} {case:<25} {ns:>9.2} {diff:>9}  {versus}");
        }
    }
}

fn main() {
    let started = SystemTime::now();
    let dir = output_directory();
    // Short runs keep the whole bench near a minute: these cases take nanoseconds, so a second
    // of samples is plenty for a stable median, as in `compare.rs`.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .nresamples(20_000)
        .output_directory(&dir)
        .configure_from_args();
    breaker_closed(&mut c);
    limiter_free(&mut c);
    limiter_contended(&mut c);
    budget(&mut c);
    keyed(&mut c);
    attribute_guarded(&mut c);
    c.final_summary();
    print_medians(&dir, started);
}
