//! The herd simulation (`examples/herd/`), run on the example's own code: with a fixed seed
//! the strategies keep the AWS study's order at 100 clients, honouring a quota's hint wastes
//! fewer 429s, and a quick run draws its plot.

mod common;

use std::path::PathBuf;

use resilience::strategy::Jitter;

// The example's own simulation; the test uses only part of it.
#[allow(dead_code)]
#[path = "../examples/herd/sim.rs"]
mod sim;

use sim::{Outcome, STRATEGIES};

const SEED: u64 = 2015;

fn at_100_clients(trials: u32) -> Vec<(Jitter, Outcome)> {
    let table = sim::occ_table(&[100], trials, SEED);
    STRATEGIES.into_iter().zip(table.outcomes[0]).collect()
}

fn outcome(results: &[(Jitter, Outcome)], jitter: Jitter) -> Outcome {
    results
        .iter()
        .find(|(j, _)| *j == jitter)
        .map(|&(_, o)| o)
        .unwrap_or_else(|| panic!("{jitter} was not simulated"))
}

#[test]
fn full_and_decorrelated_jitter_make_far_fewer_calls_than_additive_and_none() {
    // The example's 100 trials and seed, so this is its N = 100 table; a debug build runs
    // them in a few seconds.
    let results = at_100_clients(100);
    let [none, additive, equal, full, decorrelated] = [
        Jitter::None,
        Jitter::Additive,
        Jitter::Equal,
        Jitter::Full,
        Jitter::Decorrelated,
    ]
    .map(|j| outcome(&results, j));
    let table = format!("{results:#?}");

    // The AWS study's picture (about 1846, 1825, 796 and 1000 calls): the design note's
    // additive jitter barely helps, full and decorrelated cut the calls roughly in half.
    for spread in [full, decorrelated] {
        assert!(spread.calls < 0.65 * additive.calls, "{table}");
        assert!(spread.calls < 0.65 * none.calls, "{table}");
        assert!(spread.time < 0.2 * additive.time, "{table}");
    }
    assert!(full.calls < decorrelated.calls, "{table}");
    assert!(equal.calls < 0.65 * additive.calls, "{table}");
    assert!(additive.calls <= none.calls, "{table}");
    assert!(additive.calls > 0.9 * none.calls, "{table}");
    // Every client writes once: at least 100 calls, whatever the strategy.
    assert!(results.iter().all(|(_, o)| o.calls >= 100.0), "{table}");
}

#[test]
fn a_seed_replays_the_same_run() {
    for jitter in STRATEGIES {
        assert_eq!(
            sim::occ_run(40, jitter, 7),
            sim::occ_run(40, jitter, 7),
            "{jitter}"
        );
    }
    assert_ne!(
        sim::occ_run(40, Jitter::Full, 7),
        sim::occ_run(40, Jitter::Full, 8)
    );
}

#[test]
fn honouring_the_quota_hint_wastes_fewer_429s_and_gives_no_one_up() {
    let setup = sim::QuotaSetup::default();
    let rows = sim::quota_table(setup, 10, SEED);
    assert_eq!(rows.len(), 4);
    for jitter in [Jitter::Additive, Jitter::Full] {
        let find = |honour| {
            rows.iter()
                .find(|r| r.jitter == jitter && r.honour == honour)
                .map(|r| r.outcome)
                .unwrap_or_else(|| panic!("no row for {jitter}, honour {honour}"))
        };
        let (ignored, honoured) = (find(false), find(true));
        assert!(
            honoured.rejected < ignored.rejected / 2.0,
            "{jitter}: {honoured:?} vs {ignored:?}"
        );
        // One 429 per client per window it waits through: 40 + 30 + 20 + 10.
        assert_eq!(honoured.rejected, 100.0, "{jitter}");
        assert_eq!(honoured.past_default_attempts, 0.0, "{jitter}");
        assert!(ignored.past_default_attempts > 0.0, "{jitter}");
        // The quota sets the pace either way: 50 requests at 10 a minute end in the fifth.
        assert!(
            (240.0..300.0).contains(&honoured.seconds),
            "{jitter}: {honoured:?}"
        );
    }
}

/// The example itself, as CI runs it: `--quick` (10 trials), its table on stdout and its plot
/// where `--plot` says.
#[test]
fn the_example_s_quick_run_prints_its_table_and_writes_its_plot() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("herd-test.png");
    let _ = std::fs::remove_file(&path);
    let output = std::process::Command::new(common::example::binary("herd"))
        .arg("--quick")
        .arg("--plot")
        .arg(&path)
        .output()
        .expect("run the herd example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", output.status);
    for strategy in STRATEGIES {
        assert!(
            stdout.contains(strategy.name()),
            "{strategy} missing:\n{stdout}"
        );
    }

    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // The IHDR chunk comes first: width and height, big-endian, at bytes 16 and 20.
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!(
        (width, height),
        (1400, 1000),
        "`SIZE` in examples/herd/plot.rs"
    );
    // Lines, bars and text compress to tens of kilobytes; a blank canvas to far less.
    assert!(png.len() > 20_000, "{} bytes: an empty plot?", png.len());
}
