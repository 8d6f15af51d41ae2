//! A fleet of worker processes against one API quota: the quota belongs to the API key, not
//! to a process, so the workers share one rate limit kept in Redis (the README's "When one
//! process is not enough").
//!
//! ```text
//! cargo run --example fleet --features redis -- --redis redis://127.0.0.1:6379   # shared
//! cargo run --example fleet --features redis                                     # per process
//! cargo run --example fleet --features redis -- --workers 8 --seconds 10 --redis redis://..
//! ```
//!
//! The coordinator (no `--worker`) starts `fault-server` on 127.0.0.1 as the API: it allows
//! `QUOTA` requests in each second and answers 429 with `Retry-After: 1` beyond them. It then
//! starts `--workers` copies of itself with `--worker`, each running `--callers` tasks that
//! call an annotated `async fn` in a loop for `--seconds`, and prints what the server saw:
//! requests, 429s and the rate of answered requests against the quota. With `--redis` every
//! worker's limiter is the fleet's (`RateLimiter::shared`); without it each worker keeps the
//! whole quota for itself, as a per-process limiter does, and together they overshoot it.
//!
//! A worker whose Redis stops answering goes on with its own limiter at `1/workers` of the
//! quota (`Fallback::Share`), logs one WARN when it switches and one when Redis answers
//! again, and every task still ends done or failed. Each worker prints one JSON line on
//! stdout at its end: `{"worker":..,"tasks":..,"done":..,"failed":..,..}`.
//!
//! `--guard breaker` puts the workers under a circuit breaker instead, against an API that
//! answers 503 for `--outage` seconds then recovers: with `--redis` the fleet shares one
//! circuit (it opens once failures come from two workers, `quorum(2)`), without it each
//! worker discovers the outage alone. `--bad-workers K` points K of the workers at a port
//! where nothing listens (their own broken network) while the API is healthy, under a
//! breaker that opens at 20 % of failures, which one bad worker of four reaches alone: with
//! `quorum(2)` it must not open the circuit for the others; `--any-one` shows `quorum(1)`,
//! which lets it. `--guard budget` puts them under a retry budget
//! (20 % of the calls plus 2 a second) against an API that answers 503 throughout.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use fault_server::{Fault, FaultKind, FaultServer};
use resilience::breaker::CircuitBreaker;
use resilience::budget::RetryBudget;
use resilience::http::{HttpError, error_for_status};
use resilience::limiter::RateLimiter;
use resilience::redis::{Fallback, RedisState};
use resilience::{GiveUpReason, MediaProcessingError, retry_with_backoff};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Requests a second the API allows: its quota, which the fleet's limiter is set to.
const QUOTA: u32 = 40;

/// Where the fleet's limits are kept: a call to Redis waits at most 200 ms (the workers and
/// Redis may share a small machine); while Redis is away each worker takes its share of the
/// quota (`set_fallback`, with the number of workers).
static FLEET: RedisState = RedisState::new("fleet").timeout(Duration::from_millis(200));

/// The API's quota, shared by the fleet through Redis.
static SHARED_QUOTA: RateLimiter = RateLimiter::per_second("api", QUOTA).shared(&FLEET);

/// The same quota, kept by each process for itself.
static OWN_QUOTA: RateLimiter = RateLimiter::per_second("api", QUOTA);

/// The API's breaker: opens when half of the calls of the last 2 s failed (10 at least), for
/// 1 s doubling to 2 s, with 2 probes. The fleet's needs failures from two workers.
const fn breaker() -> CircuitBreaker {
    CircuitBreaker::new("api")
        .time_window(Duration::from_secs(2))
        .minimum_calls(10)
        .failure_rate(0.5)
        .open_for(Duration::from_secs(1))
        .open_growth(2.0, Duration::from_secs(2))
        .half_open_probes(2)
}
static SHARED_BREAKER: CircuitBreaker = breaker().quorum(2).shared(&FLEET);
static OWN_BREAKER: CircuitBreaker = breaker();
/// With `--bad-workers`: a breaker that opens at 20 % of failures, which one bad worker of
/// four reaches alone; the fleet's needs them from two workers...
static WARY_BREAKER: CircuitBreaker = breaker().failure_rate(0.2).quorum(2).shared(&FLEET);
/// ...and this one from any one worker (`--any-one`): what `quorum(2)` protects against.
static ANY_ONE_BREAKER: CircuitBreaker = breaker().failure_rate(0.2).quorum(1).shared(&FLEET);

/// The retry budget: retries at most 20 % of the calls of the last 10 s, plus 2 a second.
const fn budget() -> RetryBudget {
    RetryBudget::ratio("api", 0.2)
        .window(Duration::from_secs(10))
        .floor_per_second(2)
}
static SHARED_BUDGET: RetryBudget = budget().shared(&FLEET);
static OWN_BUDGET: RetryBudget = budget();

/// Attempts this worker made, all tasks together.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

/// A fleet of workers against one API quota.
#[derive(Debug, Clone, Parser)]
#[command(override_usage = "cargo run --example fleet --features redis -- [OPTIONS]")]
struct Args {
    /// Redis for the shared limits (`redis://host:port`); without it, per-process limits
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// How many worker processes
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    /// Concurrent tasks in each worker
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    callers: u32,
    /// How long the workers run
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Which guard the workers share: limiter, breaker or budget
    #[arg(long, value_enum, default_value_t = Guard::Limiter)]
    guard: Guard,
    /// With `--guard breaker`: the API answers 503 for this many seconds, then 200
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=600))]
    outage: u64,
    /// With `--guard breaker`: this many workers call a port where nothing listens
    #[arg(long, default_value_t = 0)]
    bad_workers: u32,
    /// With `--guard breaker`: the fleet's circuit opens on any one worker's failures
    #[arg(long)]
    any_one: bool,
    /// Run as one worker against `--api` (the coordinator starts them)
    #[arg(long, requires = "api")]
    worker: bool,
    /// The API a worker calls
    #[arg(long, value_name = "URL")]
    api: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Guard {
    Limiter,
    Breaker,
    Budget,
}

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

async fn call(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    ATTEMPTS.fetch_add(1, Ordering::Relaxed);
    let response = client.get(url).send().await?;
    error_for_status(response).await?;
    Ok(())
}

/// One task, under the fleet's limit. A 429's `Retry-After` pauses the limit for the whole
/// fleet; the retries wait it out.
#[retry_with_backoff(max_retries = 4, base_delay = 0.2, max_delay = 2.0, limiter = SHARED_QUOTA)]
async fn task_shared(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

/// The same task under this process's own limit.
#[retry_with_backoff(max_retries = 4, base_delay = 0.2, max_delay = 2.0, limiter = OWN_QUOTA)]
async fn task_own(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.05, max_delay = 0.2, breaker = SHARED_BREAKER)]
async fn task_shared_breaker(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.05, max_delay = 0.2, breaker = WARY_BREAKER)]
async fn task_wary_breaker(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.05, max_delay = 0.2, breaker = ANY_ONE_BREAKER)]
async fn task_any_one_breaker(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.05, max_delay = 0.2, breaker = OWN_BREAKER)]
async fn task_own_breaker(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.02, max_delay = 0.05, budget = SHARED_BUDGET)]
async fn task_shared_budget(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.02, max_delay = 0.05, budget = OWN_BUDGET)]
async fn task_own_budget(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    call(client, url).await
}

/// One task under the guard the command line names.
async fn task(
    args: &Args,
    shared: bool,
    client: &reqwest::Client,
    url: &str,
) -> Result<(), ApiError> {
    match (args.guard, shared) {
        (Guard::Limiter, true) => task_shared(client, url).await,
        (Guard::Limiter, false) => task_own(client, url).await,
        (Guard::Breaker, true) if args.any_one => task_any_one_breaker(client, url).await,
        (Guard::Breaker, true) if args.bad_workers > 0 => task_wary_breaker(client, url).await,
        (Guard::Breaker, true) => task_shared_breaker(client, url).await,
        (Guard::Breaker, false) => task_own_breaker(client, url).await,
        (Guard::Budget, true) => task_shared_budget(client, url).await,
        (Guard::Budget, false) => task_own_budget(client, url).await,
    }
}

/// One worker: `callers` tasks in a loop until `seconds` are up; then its JSON line.
async fn worker(args: &Args, api: &str) -> anyhow::Result<()> {
    let shared = match &args.redis {
        Some(url) => {
            FLEET.set_fallback(Fallback::Share(
                args.workers.saturating_sub(args.bad_workers).max(1),
            ));
            // A Redis that is not there yet is not fatal: the limits are this process's
            // until it answers.
            if let Err(error) = FLEET.connect(url).await {
                tracing::info!("Redis at {url}: {error}; starting with this process's limits");
            }
            true
        }
        None => false,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let until = Instant::now() + Duration::from_secs(args.seconds);
    // Tasks, done, failed; of the failed: refused by an open circuit, ended by a spent budget.
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let args = Arc::new(args.clone());
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..args.callers {
        let (client, url, counts, args) = (
            client.clone(),
            api.to_owned(),
            Arc::clone(&counts),
            Arc::clone(&args),
        );
        callers.spawn(async move {
            while Instant::now() < until {
                counts[0].fetch_add(1, Ordering::Relaxed);
                let outcome = task(&args, shared, &client, &url).await;
                let slot = if outcome.is_ok() { 1 } else { 2 };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                if let Err(ApiError::GaveUp(give_up)) = &outcome {
                    match give_up.reason() {
                        GiveUpReason::CircuitOpen { retry_in, .. } => {
                            counts[3].fetch_add(1, Ordering::Relaxed);
                            // As a queue worker would: back when the circuit may let it in.
                            let pause = retry_in.unwrap_or(Duration::from_millis(100));
                            tokio::time::sleep(pause.min(Duration::from_millis(100))).await;
                        }
                        GiveUpReason::BudgetExhausted { .. } => {
                            counts[4].fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                match args.guard {
                    // A queue worker's pace: a task every 100 ms per caller.
                    Guard::Breaker => tokio::time::sleep(Duration::from_millis(100)).await,
                    // A failed task's worker moves on after a moment, not in a tight loop.
                    Guard::Budget if outcome.is_err() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {}
                }
            }
        });
    }
    while let Some(joined) = callers.join_next().await {
        joined.context("a task of the worker panicked")?;
    }
    let [tasks, done, failed, refused, spent] = counts.as_ref();
    println!(
        "{}",
        serde_json::json!({
            "worker": std::process::id(),
            "tasks": tasks.load(Ordering::Relaxed),
            "done": done.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed),
            "refused": refused.load(Ordering::Relaxed),
            "budget_spent": spent.load(Ordering::Relaxed),
            "attempts": ATTEMPTS.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

/// The API: `QUOTA` requests in each second since it started, 429 beyond.
async fn quota_server() -> anyhow::Result<(FaultServer, Instant)> {
    let started = Instant::now();
    let window = std::sync::Mutex::new((0u64, 0u32));
    let server = FaultServer::respond_with(move |_| {
        let second = started.elapsed().as_secs();
        let mut window = window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.0 != second {
            *window = (second, 0);
        }
        window.1 += 1;
        if window.1 > QUOTA {
            Fault::status(429, "quota exceeded").with_header("Retry-After", "1")
        } else {
            Fault::ok("ok")
        }
    })
    .await?;
    Ok((server, started))
}

/// The API for the breaker and the budget: 503 for `outage`, then 200.
async fn outage_server(outage: Duration) -> anyhow::Result<(FaultServer, Instant)> {
    let started = Instant::now();
    let server = FaultServer::respond_with(move |_| {
        if started.elapsed() < outage {
            Fault::status(503, "down for maintenance")
        } else {
            Fault::ok("ok")
        }
    })
    .await?;
    Ok((server, started))
}

/// The coordinator: the API, the workers, and what the API saw.
async fn coordinate(args: &Args) -> anyhow::Result<()> {
    let outage = match args.guard {
        Guard::Limiter => None,
        Guard::Breaker => Some(Duration::from_secs(args.outage)),
        // Down throughout: every call would retry, if the budget let it.
        Guard::Budget => Some(Duration::from_secs(args.seconds + 60)),
    };
    let (server, started) = match outage {
        None => quota_server().await?,
        Some(outage) => outage_server(outage).await?,
    };
    // A port nothing listens on, for the bad workers: bound, then let go.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/v1/generate", listener.local_addr()?)
    };
    let me = std::env::current_exe()?;
    let mut workers = Vec::new();
    for n in 0..args.workers {
        let api = if n < args.bad_workers {
            nowhere.clone()
        } else {
            server.url("/v1/generate")
        };
        let mut command = tokio::process::Command::new(&me);
        command
            .args(["--worker", "--api", &api])
            .args(["--guard", &format!("{:?}", args.guard).to_lowercase()])
            .args(["--workers", &args.workers.to_string()])
            .args(["--callers", &args.callers.to_string()])
            .args(["--seconds", &args.seconds.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some(url) = &args.redis {
            command.args(["--redis", url]);
        }
        if args.any_one {
            command.arg("--any-one");
        }
        workers.push((
            n < args.bad_workers,
            command.spawn().context("start a worker")?,
        ));
    }
    let mut lost = 0;
    let mut reports = Vec::new();
    let mut good_refused = 0;
    for (bad, mut worker) in workers {
        let stdout = worker.stdout.take().context("the worker's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let report = lines.next_line().await?.unwrap_or_default();
        let status = worker.wait().await?;
        let parsed: serde_json::Value = serde_json::from_str(&report)
            .with_context(|| format!("a worker's report ({status}): {report:?}"))?;
        let count = |field: &str| parsed[field].as_u64().unwrap_or(0);
        lost += count("tasks") - count("done") - count("failed");
        if !bad {
            good_refused += count("refused");
        }
        println!(
            "worker {}{}: {} tasks, {} done, {} failed ({} refused by the circuit, {} by the budget), {} attempts",
            parsed["worker"],
            if bad { " (calls a dead port)" } else { "" },
            count("tasks"),
            count("done"),
            count("failed"),
            count("refused"),
            count("budget_spent"),
            count("attempts"),
        );
        reports.push(parsed);
    }
    let served = server.served();
    let too_many = server
        .faults()
        .iter()
        .filter(|kind| **kind == FaultKind::Respond(429))
        .count();
    let ok = served.len() - too_many;
    // The steady state: from the first second to the end of the run.
    let from = started + Duration::from_secs(1);
    let to = started + Duration::from_secs(args.seconds);
    let steady = served
        .iter()
        .zip(server.faults())
        .filter(|(s, kind)| {
            s.received >= from && s.received < to && *kind != FaultKind::Respond(429)
        })
        .count();
    let rate = steady as f64 / (args.seconds as f64 - 1.0).max(1.0);
    let during_outage = outage.map_or(0, |outage| {
        served
            .iter()
            .filter(|s| s.received < started + outage)
            .count()
    });
    let sum = |field: &str| {
        reports
            .iter()
            .map(|r| r[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let mode = if args.redis.is_some() {
        "shared in Redis"
    } else {
        "one per process"
    };
    match args.guard {
        Guard::Limiter => println!(
            "{} workers, limits {mode}: {} requests, {too_many} answered 429, {ok} answered 200; {rate:.1} answered/s in the steady state against a quota of {QUOTA}/s; tasks lost: {lost}",
            args.workers,
            served.len(),
        ),
        Guard::Breaker => println!(
            "{} workers ({} bad), breakers {mode}: {during_outage} requests during the {} s outage, {} in all; {} calls refused by an open circuit ({good_refused} of the good workers'); tasks lost: {lost}",
            args.workers,
            args.bad_workers,
            args.outage,
            served.len(),
            sum("refused"),
        ),
        Guard::Budget => println!(
            "{} workers, budgets {mode}: {} calls, {} attempts ({} retries) against a down API; {} calls ended by a spent budget; tasks lost: {lost}",
            args.workers,
            sum("tasks"),
            sum("attempts"),
            sum("attempts").saturating_sub(sum("tasks")),
            sum("budget_spent"),
        ),
    }
    // The same, for `tests/fleet.rs`.
    println!(
        "{}",
        serde_json::json!({
            "requests": served.len(),
            "too_many": too_many,
            "ok": ok,
            "rate": rate,
            "quota": QUOTA,
            "tasks": sum("tasks"),
            "attempts": sum("attempts"),
            "refused": sum("refused"),
            "good_refused": good_refused,
            "budget_spent": sum("budget_spent"),
            "during_outage": during_outage,
            "lost": lost,
        })
    );
    if lost != 0 {
        bail!("{lost} task(s) ended neither done nor failed");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // The switches to and from Redis, and errors; not every retry of the per-process run.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("error,resilience::redis=warn,fleet=info")
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
    let outcome = match (&args.api, args.worker) {
        (Some(api), true) => worker(&args, api).await,
        _ => coordinate(&args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleet: {error:#}");
            ExitCode::FAILURE
        }
    }
}
