//! What a successful first attempt costs: a plain call, the same function under
//! `#[retry_with_backoff]`, and under it with a `timeout` (which reads the clock).
//!
//! Instruction counts are the measure, not seconds: they repeat exactly on a busy machine.
//! ```text
//! cargo bench --bench success_path --no-run
//! valgrind --tool=callgrind target/release/deps/success_path-<hash> plain     # and retried, timeout
//! ```
//! Subtract a run with `none` (the loop alone) and divide by the number of calls.
//! `cargo bench --bench success_path` runs all three once with wall-clock times, for a glance.

use std::hint::black_box;
use std::io;
use std::time::Instant;

use resilience::retry_with_backoff;

const CALLS: u64 = 1_000_000;

/// The shape of every function measured.
type Call = fn(u64) -> io::Result<u64>;

#[inline(never)]
fn plain(x: u64) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(3))
}

#[inline(never)]
#[retry_with_backoff]
fn retried(x: u64) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(3))
}

#[inline(never)]
#[retry_with_backoff(timeout = 10)]
fn retried_with_timeout(x: u64) -> io::Result<u64> {
    if x == u64::MAX {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(x.wrapping_mul(3))
}

fn run(call: Call) -> u64 {
    (0..CALLS).fold(0u64, |acc, i| {
        acc.wrapping_add(call(black_box(i)).unwrap_or(0))
    })
}

fn none(x: u64) -> io::Result<u64> {
    Ok(x)
}

fn main() {
    let cases: [(&str, Call); 4] = [
        ("none", none),
        ("plain", plain),
        ("retried", retried),
        ("timeout", retried_with_timeout),
    ];
    // `cargo bench` passes `--bench`; a case name picks one case, for callgrind.
    let chosen = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for (name, call) in cases {
        if chosen.as_deref().is_some_and(|c| c != name) {
            continue;
        }
        let started = Instant::now();
        let sum = run(call);
        let per_call = started.elapsed().as_nanos() as f64 / CALLS as f64;
        println!("{name:>8}: {per_call:6.2} ns/call (checksum {sum})");
    }
}
