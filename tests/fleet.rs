//! The fleet example (`examples/fleet.rs`) as a test: four worker processes against one API
//! quota of 40 requests a second (the fault server answers 429 beyond it), sharing one limit
//! in a real `redis-server` that this test starts on a free loopback port, against the same
//! run with a limit per process; then Redis stopped in the middle of a run and started again.
//! Then the breaker (an outage, shared against per process; one bad worker against a quorum of
//! two and of one) and the retry budget (shared against per process), each shared in Redis.
//! Its own harness (`harness = false`), so the figures are printed by the test command; the
//! README's "When one process is not enough" quotes them.
//!
//! Without `redis-server` on the machine the test says so and passes, unless
//! `RESILIENCE_REQUIRE_REDIS` is set, as `.ci/run` sets it after installing Debian's package.

mod common;
#[path = "common/harness.rs"]
mod harness;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;

const WORKERS: &str = "4";

/// One run of the coordinator: its JSON summary, and what its workers logged.
struct Run {
    summary: Value,
    log: String,
}

impl Run {
    fn count(&self, field: &str) -> u64 {
        self.summary[field].as_u64().unwrap_or(0)
    }

    fn rate(&self) -> f64 {
        self.summary["rate"].as_f64().unwrap_or(0.0)
    }
}

/// Starts the fleet with `args`, calls `meanwhile` while it runs, and waits for it.
fn run(binary: &std::path::Path, args: &[&str], meanwhile: impl FnOnce()) -> Run {
    let mut child = Command::new(binary)
        .args(["--workers", WORKERS])
        .args(args)
        .env("RUST_LOG", "error,resilience::redis=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the fleet example");
    let stderr = child.stderr.take().expect("its stderr");
    let log = thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    meanwhile();
    let output = child
        .wait_with_output()
        .expect("wait for the fleet example");
    let log = log.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the fleet example failed ({}):\n{stdout}\n{log}",
        output.status
    );
    let summary = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    for line in stdout.lines().filter(|line| !line.starts_with('{')) {
        println!("    {line}");
    }
    Run { summary, log }
}

struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, holds: bool, what: String) {
        println!("  {} {what}", if holds { "ok  " } else { "FAIL" });
        if !holds {
            self.0.push(what);
        }
    }
}

fn main() -> ExitCode {
    if harness::skipped("fleet") {
        return ExitCode::SUCCESS;
    }
    let Some(mut redis) = common::redis::redis_server() else {
        return ExitCode::SUCCESS;
    };
    // The features of the test command (`--all-features`), so the build it made is reused.
    let binary = common::example::binary_with("fleet", &["--all-features"]);
    let url = redis.url();
    let mut failures = Failures(Vec::new());

    println!("fleet: {WORKERS} worker processes, a quota of 40 requests a second");
    println!("  one limit in Redis:");
    let shared = run(&binary, &["--seconds", "5", "--redis", &url], || {});
    println!("  a limit per process:");
    let own = run(&binary, &["--seconds", "5"], || {});
    let quota = shared.count("quota") as f64;
    let off = (shared.rate() - quota).abs() / quota;
    failures.check(
        off <= 0.10,
        format!(
            "shared: {:.1} answered a second, within 10 % of the quota",
            shared.rate()
        ),
    );
    failures.check(
        shared.count("too_many") * 100 <= shared.count("requests"),
        format!(
            "shared: 429s near zero ({} of {} requests, at most 1 %)",
            shared.count("too_many"),
            shared.count("requests")
        ),
    );
    failures.check(
        own.count("too_many") >= 10 * shared.count("too_many").max(10),
        format!(
            "per process: the storm ({} answered 429, against {} shared)",
            own.count("too_many"),
            shared.count("too_many")
        ),
    );

    println!("  Redis stopped 2 s into an 8 s run, started again 2 s later:");
    let chaos = run(&binary, &["--seconds", "8", "--redis", &url], || {
        thread::sleep(Duration::from_secs(2));
        redis.stop();
        thread::sleep(Duration::from_secs(2));
        redis.restart();
    });
    failures.check(
        chaos.count("lost") == 0 && chaos.count("tasks") > 0,
        format!(
            "every task ended done or failed ({} tasks, {} lost)",
            chaos.count("tasks"),
            chaos.count("lost")
        ),
    );
    let lost_redis = chaos.log.matches("did not answer").count();
    let back = chaos.log.matches("answers again").count();
    failures.check(
        lost_redis >= 1 && back >= 1 && lost_redis <= 8 && back <= 8,
        format!(
            "the workers logged the switch both ways, not on every call ({lost_redis} away, {back} back, {WORKERS} workers)"
        ),
    );

    println!("  breakers: the API answers 503 for 3 s, then 200 (5 s runs):");
    let outage = ["--guard", "breaker", "--outage", "3", "--seconds", "5"];
    let fleet_breaker = run(&binary, &[&outage[..], &["--redis", &url]].concat(), || {});
    let own_breakers = run(&binary, &outage, || {});
    failures.check(
        fleet_breaker.count("during_outage") < own_breakers.count("during_outage"),
        format!(
            "the fleet's circuit saw the outage together: {} requests during it, against {} with a breaker per process",
            fleet_breaker.count("during_outage"),
            own_breakers.count("during_outage")
        ),
    );
    failures.check(
        fleet_breaker.count("lost") == 0 && own_breakers.count("lost") == 0,
        "every task ended done or failed".into(),
    );
    println!("  one bad worker (its calls go to a dead port), the API healthy (3 s runs):");
    let bad = [
        "--guard",
        "breaker",
        "--outage",
        "0",
        "--bad-workers",
        "1",
        "--seconds",
        "3",
        "--redis",
        &url,
    ];
    let quorum = run(&binary, &bad, || {});
    let any_one = run(&binary, &[&bad[..], &["--any-one"]].concat(), || {});
    failures.check(
        quorum.count("good_refused") == 0,
        format!(
            "with quorum(2) one bad worker cannot open the circuit for the others ({} of their calls refused)",
            quorum.count("good_refused")
        ),
    );
    failures.check(
        any_one.count("good_refused") > 0,
        format!(
            "with quorum(1) it does ({} of the good workers' calls refused)",
            any_one.count("good_refused")
        ),
    );
    println!("  budgets: 20 % of the calls plus 2 a second, the API down throughout (3 s runs):");
    let down = ["--guard", "budget", "--seconds", "3"];
    let fleet_budget = run(&binary, &[&down[..], &["--redis", &url]].concat(), || {});
    let own_budgets = run(&binary, &down, || {});
    let retries = |run: &Run| run.count("attempts").saturating_sub(run.count("tasks"));
    // The floor: 2 a second over the 10 s window, which the run stays inside. A worker that
    // found Redis away paid from its own budget meanwhile, whose floor is its own: the log
    // says whether that happened.
    let away = fleet_budget.log.matches("did not answer").count() as u64;
    let bound = fleet_budget.count("tasks") / 5 + 20 + away * 20;
    failures.check(
        retries(&fleet_budget) <= bound,
        format!(
            "the fleet's retries {} <= 0.2 x {} calls + 20 = {bound} (Redis away for {away} worker(s))",
            retries(&fleet_budget),
            fleet_budget.count("tasks")
        ),
    );
    // Beyond the 20 % share, a fleet's budget allows one floor (20); four budgets, four.
    let beyond = |run: &Run| retries(run).saturating_sub(run.count("tasks") / 5);
    failures.check(
        beyond(&own_budgets) > beyond(&fleet_budget),
        format!(
            "a budget per process lets more through: {} retries beyond 20 % of the calls, against {} for the fleet's (each process has its own floor)",
            beyond(&own_budgets),
            beyond(&fleet_budget)
        ),
    );

    if failures.0.is_empty() {
        println!("fleet: every bound held");
        ExitCode::SUCCESS
    } else {
        println!(
            "fleet: {} bound(s) failed: {:?}",
            failures.0.len(),
            failures.0
        );
        println!("workers' log of the chaos run:\n{}", chaos.log);
        ExitCode::FAILURE
    }
}
