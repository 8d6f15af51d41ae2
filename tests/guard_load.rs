//! The guards under load, against the fault-injecting HTTP server on loopback, in real time:
//! 200 concurrent callers, each a worker that calls an annotated `async fn` again and again.
//! Its own harness (`harness = false`), so the figures are printed by the test command and
//! by CI, and the scenarios run one after the other, alone on the machine's cores.
//!
//! - Outage: the server answers 503 to everything for 10 s, then 200. With a shared breaker
//!   the requests that reach it during the outage drop at least tenfold against the same run
//!   without one, and traffic resumes within the longest open duration plus one probe.
//! - Budget: the same outage for 3 s; with a retry budget of 20 % plus 10 a second, the
//!   attempts stay within `1.2 x calls + floor`; without it every call makes all three.
//! - Quota: the server allows 50 requests a second (429 with `Retry-After: 1` beyond); with a
//!   limiter of 50 a second shared by the callers, the rate the server sees stays within 5 %
//!   of 50 and its 429s near zero; without it, the same callers meet a storm of 429s.
//!
//! Each scenario runs its two versions side by side, each against a server of its own. Each
//! figure is asserted with its bound, and printed (the README's "Guards under load" quotes
//! them).

#[path = "common/harness.rs"]
mod harness;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fault_server::{Fault, FaultServer, Served};
use resilience::breaker::CircuitBreaker;
use resilience::budget::RetryBudget;
use resilience::http::{HttpError, error_for_status};
use resilience::limiter::RateLimiter;
use resilience::{GiveUpReason, MediaProcessingError, retry_with_backoff};

const CALLERS: usize = 200;
const OUTAGE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    let response = client.get(url).send().await?;
    error_for_status(response).await?;
    Ok(())
}

/// The breaker of the outage run: opens when half of the last 40 calls failed (after 20),
/// for 1 s, doubling to at most 2 s, with 3 probes.
static OUTAGE_BREAKER: CircuitBreaker = CircuitBreaker::new("outage")
    .count_window(40)
    .minimum_calls(20)
    .failure_rate(0.5)
    .open_for(Duration::from_secs(1))
    .open_growth(2.0, MAX_OPEN)
    .half_open_probes(3);
const MAX_OPEN: Duration = Duration::from_secs(2);

static OUTAGE_BUDGET: RetryBudget = RetryBudget::ratio("outage", 0.2)
    .window(Duration::from_secs(10))
    .floor_per_second(10);

static QUOTA: RateLimiter = RateLimiter::per_second("quota", 50);

#[retry_with_backoff(max_retries = 3, base_delay = 0.1, max_delay = 0.4, jitter = 0.05)]
async fn unguarded(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    get(client, url).await
}

#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.1,
    max_delay = 0.4,
    jitter = 0.05,
    breaker = OUTAGE_BREAKER
)]
async fn with_breaker(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    get(client, url).await
}

#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.1,
    max_delay = 0.4,
    jitter = 0.05,
    budget = OUTAGE_BUDGET
)]
async fn with_budget(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    get(client, url).await
}

#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.1,
    max_delay = 0.4,
    jitter = 0.05,
    limiter = QUOTA
)]
async fn with_limiter(client: &reqwest::Client, url: &str) -> Result<(), ApiError> {
    get(client, url).await
}

/// What the callers did.
#[derive(Default)]
struct Calls {
    made: AtomicU64,
    succeeded: AtomicU64,
    /// Ended by a guard before any attempt (an open circuit).
    refused: AtomicU64,
}

/// Which annotated function the callers call.
#[derive(Clone, Copy)]
enum Call {
    Unguarded,
    Breaker,
    Budget,
    Limiter,
}

/// `CALLERS` workers calling `call` until `until`; after a failed call a worker pauses
/// 100 ms (or until the open circuit's next probe, if sooner), as a queue worker would
/// before its next task.
async fn run(call: Call, url: String, until: Instant) -> Arc<Calls> {
    let calls = Arc::new(Calls::default());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client without TLS builds");
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (calls, client, url) = (Arc::clone(&calls), client.clone(), url.clone());
        workers.spawn(async move {
            while Instant::now() < until {
                calls.made.fetch_add(1, Ordering::Relaxed);
                let outcome = match call {
                    Call::Unguarded => unguarded(&client, &url).await,
                    Call::Breaker => with_breaker(&client, &url).await,
                    Call::Budget => with_budget(&client, &url).await,
                    Call::Limiter => with_limiter(&client, &url).await,
                };
                let pause = match outcome {
                    Ok(()) => {
                        calls.succeeded.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(ApiError::GaveUp(give_up)) => match give_up.reason() {
                        GiveUpReason::CircuitOpen { retry_in, .. } => {
                            calls.refused.fetch_add(1, Ordering::Relaxed);
                            retry_in.unwrap_or(Duration::MAX)
                        }
                        _ => Duration::MAX,
                    },
                    Err(_) => Duration::MAX,
                };
                tokio::time::sleep(pause.min(Duration::from_millis(100))).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    calls
}

/// Requests the server received in `[from, to)`.
fn received(served: &[Served], from: Instant, to: Instant) -> usize {
    served
        .iter()
        .filter(|s| s.received >= from && s.received < to)
        .count()
}

/// A server that answers 503 until `OUTAGE` after it starts, then 200.
async fn outage_server(outage: Duration) -> (FaultServer, Instant) {
    let started = Instant::now();
    let server = FaultServer::respond_with(move |_| {
        if started.elapsed() < outage {
            Fault::status(503, "down for maintenance")
        } else {
            Fault::ok("ok")
        }
    })
    .await
    .expect("the fault server starts on loopback");
    (server, started)
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

/// One scenario's two runs, side by side: the same callers with and without the guard, each
/// against a server of its own, so the pair takes the time of one.
async fn side_by_side<F, Fut>(
    without: Call,
    with: Call,
    start: F,
) -> [(Arc<Calls>, FaultServer, Instant); 2]
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (FaultServer, Instant, Instant)>,
{
    let (plain, guarded) = tokio::join!(
        async {
            let (server, started, until) = start().await;
            (
                run(without, server.url("/v1/generate"), until).await,
                server,
                started,
            )
        },
        async {
            let (server, started, until) = start().await;
            (
                run(with, server.url("/v1/generate"), until).await,
                server,
                started,
            )
        }
    );
    [plain, guarded]
}

async fn outage(failures: &mut Failures) {
    println!("outage: {CALLERS} callers, 503 for {OUTAGE:?}, then 200, for 14 s");
    let runs = side_by_side(Call::Unguarded, Call::Breaker, || async {
        let (server, started) = outage_server(OUTAGE).await;
        (server, started, started + OUTAGE + Duration::from_secs(4))
    })
    .await;
    let mut during = [0usize; 2];
    for (slot, (calls, server, started)) in runs.iter().enumerate() {
        let recovered_at = *started + OUTAGE;
        let served = server.served();
        during[slot] = received(&served, *started, recovered_at);
        let first_ok = served
            .iter()
            .filter(|s| s.received >= recovered_at)
            .map(|s| s.received - recovered_at)
            .min();
        let label = if slot == 0 {
            "without a breaker"
        } else {
            "with the breaker "
        };
        println!(
            "  {label}: {} requests during the outage, {} calls ({} refused at once, {} ok); first request after recovery {:?} later",
            during[slot],
            calls.made.load(Ordering::Relaxed),
            calls.refused.load(Ordering::Relaxed),
            calls.succeeded.load(Ordering::Relaxed),
            first_ok.unwrap_or(Duration::MAX),
        );
        if slot == 1 {
            // The longest open duration (2 s, jittered by up to 10 %) plus one probe.
            let bound = MAX_OPEN.mul_f64(1.1) + Duration::from_millis(500);
            failures.check(
                first_ok.is_some_and(|lag| lag <= bound),
                format!("traffic resumed within {bound:?} of the recovery"),
            );
            failures.check(
                calls.succeeded.load(Ordering::Relaxed) > 0,
                "calls succeed again after the recovery".into(),
            );
        }
    }
    let drop = during[0] as f64 / during[1].max(1) as f64;
    println!(
        "  requests during the outage: {} without, {} with: {drop:.1}x fewer",
        during[0], during[1]
    );
    failures.check(
        drop >= 10.0,
        format!("the breaker cut the outage's requests at least tenfold ({drop:.1}x)"),
    );
}

async fn budget(failures: &mut Failures) {
    let outage = Duration::from_secs(3);
    println!("budget: {CALLERS} callers, 503 for {outage:?}; 20 % of calls plus 10 a second");
    let runs = side_by_side(Call::Unguarded, Call::Budget, || async {
        let (server, started) = outage_server(outage).await;
        (server, started, started + outage)
    })
    .await;
    for (slot, (calls, server, _)) in runs.iter().enumerate() {
        let made = calls.made.load(Ordering::Relaxed);
        let attempts = server.requests() as u64;
        let per_call = attempts as f64 / made.max(1) as f64;
        if slot == 0 {
            println!(
                "  without a budget: {made} calls, {attempts} attempts ({per_call:.2} per call)"
            );
            continue;
        }
        // The floor: 10 a second over the 10 s window, which the run stays inside.
        let bound = (1.2 * made as f64) as u64 + 100;
        println!(
            "  with the budget:  {made} calls, {attempts} attempts ({per_call:.2} per call); bound (1 + 0.2) x calls + floor = {bound}"
        );
        failures.check(attempts <= bound, format!("attempts {attempts} <= {bound}"));
    }
}

const LIMIT: usize = 50;

/// A server that allows `LIMIT` requests in each second since it started (429 with
/// `Retry-After: 1` beyond them), for `run_for`.
async fn quota_server(run_for: Duration) -> (FaultServer, Instant, Instant) {
    let started = Instant::now();
    let window = std::sync::Mutex::new((0u64, 0usize));
    let server = FaultServer::respond_with(move |_| {
        let second = started.elapsed().as_secs();
        let mut window = window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.0 != second {
            *window = (second, 0);
        }
        window.1 += 1;
        if window.1 > LIMIT {
            Fault::status(429, "quota exceeded").with_header("Retry-After", "1")
        } else {
            Fault::ok("ok")
        }
    })
    .await
    .expect("the fault server starts on loopback");
    (server, started, started + run_for)
}

async fn quota(failures: &mut Failures) {
    let run_for = Duration::from_secs(4);
    println!("quota: {CALLERS} callers, the server allows {LIMIT} requests a second (429 beyond)");
    let runs = side_by_side(Call::Unguarded, Call::Limiter, || quota_server(run_for)).await;
    for (slot, (calls, server, started)) in runs.iter().enumerate() {
        let served = server.served();
        let too_many = server
            .faults()
            .iter()
            .filter(|f| **f == fault_server::FaultKind::Respond(429))
            .count();
        // The steady state: from the first second to the end of the run.
        let steady = received(
            &served,
            *started + Duration::from_secs(1),
            *started + run_for,
        );
        let rate = steady as f64 / (run_for.as_secs_f64() - 1.0);
        let label = if slot == 0 {
            "without a limiter"
        } else {
            "with the limiter "
        };
        println!(
            "  {label}: {} requests, {too_many} answered 429, {rate:.1} requests/s in the steady state, {} calls ok",
            served.len(),
            calls.succeeded.load(Ordering::Relaxed),
        );
        if slot == 1 {
            let off = (rate - LIMIT as f64).abs() / LIMIT as f64;
            failures.check(
                off <= 0.05,
                format!("rate {rate:.1}/s within 5 % of {LIMIT}/s"),
            );
            failures.check(
                too_many * 100 <= served.len(),
                format!(
                    "429s near zero: {too_many} of {} (at most 1 %)",
                    served.len()
                ),
            );
        }
    }
}

fn main() -> ExitCode {
    // `cargo test -- --list` and filters: this harness has one test, the whole run.
    if harness::skipped("guard_load") {
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut failures = Failures(Vec::new());
    runtime.block_on(async {
        outage(&mut failures).await;
        budget(&mut failures).await;
        quota(&mut failures).await;
    });
    if failures.0.is_empty() {
        println!("guard_load: every bound held");
        ExitCode::SUCCESS
    } else {
        println!(
            "guard_load: {} bound(s) failed: {:?}",
            failures.0.len(),
            failures.0
        );
        ExitCode::FAILURE
    }
}
