//! Wall-clock times, side by side in one run: a plain call, the same function under
//! `#[retry_with_backoff]`, and under backon's and tryhard's retries, on the success path;
//! and the runtime's decision after a failure (classification, then the wait).
//!
//! ```text
//! cargo bench --bench compare                    # every group, ~30 s, then a table of medians
//! cargo bench --bench compare -- retry_decision  # one group
//! ```
//! Groups: `sync_copy_args` (a sync function with `Copy` arguments), `sync_string_arg` (one
//! taking a `String` by value, passed fresh on each call), `async_current_thread` (an
//! `async fn` on tokio's current-thread runtime) and `retry_decision`. tryhard retries
//! futures only, so the sync groups have no tryhard case. The medians are read back from
//! criterion's own files (`target/criterion/<group>/<case>/new/estimates.json`).
//! Instruction counts of the same cases, which repeat exactly, come from
//! `scripts/callgrind.sh`.

use std::error::Error;
use std::fs;
use std::hint::black_box;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use backon::{BlockingRetryable as _, ExponentialBuilder, Retryable as _};
use criterion::Criterion;
use resilience::attempts::Attempts;
use resilience::classify::explain;
use resilience::log::Site;
use resilience::{BoxError, RetryPolicy, retry_with_backoff};

// --- the functions measured (the same as in `success_path.rs`) ---------------------------

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
fn string_plain(name: String) -> io::Result<usize> {
    if name.is_empty() {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(name.len())
}

#[inline(never)]
#[retry_with_backoff]
fn string_attribute(name: String) -> io::Result<usize> {
    if name.is_empty() {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(name.len())
}

#[inline(never)]
async fn async_plain(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

#[inline(never)]
#[retry_with_backoff]
async fn async_attribute(x: u64, factor: u32) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(u64::from(factor)))
}

/// A fresh `String` for each call, as a caller that builds its argument would pass it.
fn fresh_name() -> String {
    black_box("images/beach-0001.png").to_owned()
}

/// tryhard with the attribute's defaults: 5 attempts (4 retries), 1 s doubling, capped at 30 s.
fn tryhard_retry(x: u64, factor: u32) -> impl Future<Output = io::Result<u64>> {
    tryhard::retry_fn(move || async_plain(x, factor))
        .retries(4)
        .exponential_backoff(Duration::from_secs(1))
        .max_delay(Duration::from_secs(30))
}

// --- the groups ----------------------------------------------------------------------------

fn sync_copy_args(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_copy_args");
    group.bench_function("plain", |b| b.iter(|| plain(black_box(41), black_box(3))));
    group.bench_function("attribute", |b| {
        b.iter(|| attribute(black_box(41), black_box(3)))
    });
    group.bench_function("backon", |b| {
        b.iter(|| {
            let (x, factor) = (black_box(41), black_box(3));
            (|| plain(x, factor))
                .retry(ExponentialBuilder::default())
                .call()
        })
    });
    group.finish();
}

fn sync_string_arg(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_string_arg");
    group.bench_function("plain", |b| b.iter(|| string_plain(fresh_name())));
    // The attribute clones the argument for the first attempt (`max_retries > 1`), keeping
    // the caller's for a retry: one more allocation than the plain call.
    group.bench_function("attribute", |b| b.iter(|| string_attribute(fresh_name())));
    group.bench_function("backon", |b| {
        b.iter(|| {
            let name = fresh_name();
            // backon's closure runs again for each attempt, so it clones too.
            (|| string_plain(name.clone()))
                .retry(ExponentialBuilder::default())
                .call()
        })
    });
    group.finish();
}

fn async_current_thread(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let mut group = c.benchmark_group("async_current_thread");
    group.bench_function("plain", |b| {
        b.to_async(&runtime)
            .iter(|| async_plain(black_box(41), black_box(3)))
    });
    group.bench_function("attribute", |b| {
        b.to_async(&runtime)
            .iter(|| async_attribute(black_box(41), black_box(3)))
    });
    group.bench_function("backon", |b| {
        b.to_async(&runtime).iter(|| {
            let (x, factor) = (black_box(41), black_box(3));
            (move || async_plain(x, factor)).retry(ExponentialBuilder::default())
        })
    });
    group.bench_function("tryhard", |b| {
        b.to_async(&runtime)
            .iter(|| tryhard_retry(black_box(41), black_box(3)))
    });
    group.finish();
}

/// The runtime's work after a failed attempt, through the public API: the classification
/// alone (`explain`), and the whole decision (`Attempts::after_first` then `after_error`:
/// classification, backoff with jitter, and the `Retrying` event, which no subscriber
/// records here, so its text is never formatted).
fn retry_decision(c: &mut Criterion) {
    let policy = RetryPolicy::new();
    let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
    // Three deep, the status only in the innermost text: the rules walk the whole chain.
    let chain = anyhow::Error::new(io::Error::other("503 Service Unavailable"))
        .context("calling the vision API")
        .context("analysing images/beach-0001.png");
    let chain_error: &(dyn Error + 'static) = AsRef::<dyn Error>::as_ref(&chain);
    // Two contexts over the `io::Error` that holds the status: three errors for the rules.
    assert_eq!(
        chain_error
            .source()
            .and_then(Error::source)
            .map(|e| e.to_string())
            .as_deref(),
        Some("503 Service Unavailable")
    );

    let decide_reset = || {
        let mut attempts = Attempts::after_first(&policy, Site::closure("bench"), None);
        attempts.after_error(
            black_box(reset()),
            |e| explain(e),
            |e| e.to_string(),
            |e| Some(BoxError::from(e)),
            |_, _, _| {},
            Instant::now,
        )
    };
    // The chain is lent (`E = &anyhow::Error`), so each iteration decides on the same error
    // without building it again.
    let decide_chain = || {
        let mut attempts = Attempts::after_first(&policy, Site::closure("bench"), None);
        attempts.after_error(
            black_box(&chain),
            |e| explain(AsRef::<dyn Error>::as_ref(*e)),
            |e| format!("{e:#}"),
            |_| None,
            |_, _, _| {},
            Instant::now,
        )
    };
    // Both are retried after a wait, not returned or given up: that is the path measured.
    assert!(decide_reset().is_ok(), "a reset is retried");
    assert!(decide_chain().is_ok(), "a 503 deep in the chain is retried");

    let mut group = c.benchmark_group("retry_decision");
    group.bench_function("classify_io_reset", |b| {
        let error = reset();
        b.iter(|| explain(black_box(&error)))
    });
    group.bench_function("classify_text_chain3", |b| {
        b.iter(|| explain(black_box(chain_error)))
    });
    group.bench_function("decide_io_reset", |b| b.iter(decide_reset));
    group.bench_function("decide_text_chain3", |b| b.iter(decide_chain));
    group.finish();
}

// --- the run and its table -----------------------------------------------------------------

/// Every case, by group, in the table's order; the first of each sync and async group is
/// the baseline the others are compared with.
const CASES: &[(&str, &[&str])] = &[
    ("sync_copy_args", &["plain", "attribute", "backon"]),
    ("sync_string_arg", &["plain", "attribute", "backon"]),
    (
        "async_current_thread",
        &["plain", "attribute", "backon", "tryhard"],
    ),
    (
        "retry_decision",
        &[
            "classify_io_reset",
            "classify_text_chain3",
            "decide_io_reset",
            "decide_text_chain3",
        ],
    ),
];

/// Where criterion keeps its results: `$CRITERION_HOME`, else `criterion/` in the target
/// directory this bench was built in (its executable is `<target>/release/deps/compare-*`).
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
        let medians: Vec<(&str, Option<f64>)> = cases
            .iter()
            .map(|&case| (case, median_ns(dir, group, case, started)))
            .collect();
        let baseline = match medians.first() {
            Some(&("plain", Some(ns))) => Some(ns),
            _ => None,
        };
        for (case, median) in medians {
            let Some(ns) = median else { continue };
            if !header {
                println!(
                    "\nMedians (criterion, ns per call; results in {})",
                    dir.display()
                );
                println!(
                    "{:<22} {:<22} {:>10} {:>10}",
                    "group", "case", "median", "vs plain"
                );
                header = true;
            }
            let versus = match baseline {
                Some(base) if case != "plain" => format!("{:+.2}", ns - base),
                _ => String::new(),
            };
            println!("{group:<22} {case:<22} {ns:>10.2} {versus:>10}");
        }
    }
}

fn main() {
    let started = SystemTime::now();
    let dir = output_directory();
    // Short runs keep the whole bench under 30 s: these cases take nanoseconds, so a second
    // of samples is plenty for a stable median, and a fifth of the default resamples still
    // gives its confidence interval to a few percent.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .nresamples(20_000)
        .output_directory(&dir)
        .configure_from_args();
    sync_copy_args(&mut c);
    sync_string_arg(&mut c);
    async_current_thread(&mut c);
    retry_decision(&mut c);
    c.final_summary();
    print_medians(&dir, started);
}
