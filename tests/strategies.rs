//! Backoff strategies through the attribute (README, "Backoff strategies"), on the virtual
//! clock: each strategy's waits stay within its formula, `max_delay` and the floor, and a
//! seeded run repeats. The default (the design note's additive jitter) is pinned by
//! `sync_behaviour.rs` and `closure_api.rs`.

mod common;

use std::io;
use std::time::Duration;

use resilience::backoff::with_jitter_seed;
use resilience::retry_with_backoff;

fn reset() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionReset)
}

#[retry_with_backoff(max_retries = 5, strategy = none)]
fn no_jitter() -> io::Result<()> {
    Err(reset())
}

#[retry_with_backoff(max_retries = 5, strategy = full)]
fn full() -> io::Result<()> {
    Err(reset())
}

#[retry_with_backoff(max_retries = 5, strategy = equal)]
fn equal() -> io::Result<()> {
    Err(reset())
}

#[retry_with_backoff(max_retries = 6, max_delay = 10.0, strategy = decorrelated)]
fn decorrelated() -> io::Result<()> {
    Err(reset())
}

#[retry_with_backoff(max_retries = 5, strategy = none, growth = linear)]
fn linear() -> io::Result<()> {
    Err(reset())
}

#[retry_with_backoff(max_retries = 5, strategy = "none", growth = constant)]
fn constant() -> io::Result<()> {
    Err(reset())
}

/// The waits one call sleeps, on a fresh virtual clock, with the jitter seeded.
fn waits(call: fn() -> io::Result<()>, seed: u64) -> Vec<Duration> {
    let ((), clock) = common::on_virtual_clock(|| {
        let _ = with_jitter_seed(seed, call);
    });
    clock.sleeps()
}

fn secs(s: &[u64]) -> Vec<Duration> {
    s.iter().map(|&n| Duration::from_secs(n)).collect()
}

#[test]
fn none_waits_exactly_the_growth() {
    assert_eq!(waits(no_jitter, 1), secs(&[2, 4, 8, 16]));
    assert_eq!(waits(linear, 1), secs(&[1, 2, 3, 4]));
    assert_eq!(waits(constant, 1), secs(&[1, 1, 1, 1]));
}

#[test]
fn full_jitter_draws_up_to_the_growth_and_repeats_with_its_seed() {
    let drawn = waits(full, 7);
    assert_eq!(drawn.len(), 4);
    for (wait, ceiling) in drawn.iter().zip(secs(&[2, 4, 8, 16])) {
        assert!(
            *wait >= Duration::from_millis(1) && *wait <= ceiling,
            "{drawn:?}"
        );
    }
    assert_eq!(waits(full, 7), drawn, "the same seed, the same waits");
    assert_ne!(waits(full, 8), drawn, "another seed, other waits");
    assert_ne!(drawn, secs(&[2, 4, 8, 16]), "jittered");
}

#[test]
fn equal_jitter_keeps_half_of_each_wait() {
    for seed in 0..20 {
        for (wait, ceiling) in waits(equal, seed).iter().zip(secs(&[2, 4, 8, 16])) {
            assert!(
                *wait >= ceiling / 2 && *wait <= ceiling,
                "{wait:?} of {ceiling:?}"
            );
        }
    }
}

#[test]
fn decorrelated_jitter_grows_from_the_last_wait_within_the_cap() {
    let mut longest = Duration::ZERO;
    for seed in 0..20 {
        let drawn = waits(decorrelated, seed);
        assert_eq!(drawn.len(), 5);
        let base = Duration::from_secs(1);
        let mut previous = base;
        for wait in &drawn {
            let ceiling = (previous * 3).min(Duration::from_secs(10));
            assert!(*wait >= base && *wait <= ceiling, "{drawn:?}");
            previous = *wait;
            longest = longest.max(*wait);
        }
    }
    // Grown from the last wait, not drawn afresh from the first step's `[base, 3 * base]`.
    assert!(longest > Duration::from_secs(3), "{longest:?}");
}
