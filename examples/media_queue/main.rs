//! Graceful degradation with a real database: a media-task queue kept in SQLite.
//!
//! Each task is an image to analyse. A worker claims one task at a time, analyses it through a
//! function under `#[retry_with_backoff]`, and records the outcome. When the retries are spent,
//! the `MediaProcessingError` is saved with the task: status `failed`, the error message, the
//! attempt count and the server's retry-after hint, in one transaction. A bad request (not
//! retryable) is saved as `failed` too. Nothing is lost; `--retry-failed` puts the failed tasks
//! back in the queue for another go.
//!
//! ```text
//! cargo run --example media_queue                       # the whole story, in a temp dir
//! cargo run --example media_queue -- --db q.db --seed 20
//! cargo run --example media_queue -- --db q.db --work --report
//! cargo run --example media_queue -- --db q.db --work &  # as many workers as you like
//! cargo run --example media_queue -- --db q.db --retry-failed --work --report
//! ```
//!
//! Actions given together run in this order: seed, retry-failed, work, report.
//!
//! The guarantee, which `tests/media_queue.rs` checks by crashing workers at every point
//! between two writes, by SIGKILLing them at random, and by running several at once: every task
//! ends `done` or `failed`, and each (re)queueing of a task gets exactly one terminal outcome,
//! recorded in the same transaction as the task's new status. Workers claim a task under a
//! lease (`queue.rs`); a worker killed mid-task leaves the task `processing` until its lease
//! runs out, then another worker takes it over and analyses it again, so the API may be called
//! again for that image (at-least-once calls), but its outcome is never recorded twice and
//! never dropped.
//!
//! The "Gemini API" is `fault-server`'s fake Gemini on 127.0.0.1, called over HTTP; each
//! `--work` starts one, scripted per image (see `fake_gemini`). For the tests: setting
//! `MEDIA_QUEUE_SLOW_MS` makes each attempt sleep that long first, and `crash_points.rs` names
//! the points where `MEDIA_QUEUE_CRASH_AT` crashes the worker and `MEDIA_QUEUE_PAUSE_AT` holds it.

mod crash_points;
mod queue;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use crash_points::Point;
use fault_server::{FakeGemini, Fault, FaultServer, GeminiFaults};
use queue::{Claim, Outcome, Recorded};
use resilience::breaker::CircuitBreaker;
use resilience::http::{HttpError, error_for_status};
use resilience::limiter::RateLimiter;
use resilience::{Classify, GiveUpReason, MediaProcessingError, retry_with_backoff};
use rusqlite::Connection;

/// A media-task queue in SQLite, worked through a flaky fake Gemini.
///
/// With no arguments at all: a self-contained demo in a temporary directory.
#[derive(Debug, Parser)]
#[command(
    after_help = "Actions given together run in the order seed, retry-failed, work, report.",
    group(clap::ArgGroup::new("action").required(true).multiple(true)
        .args(["seed", "retry_failed", "work", "report"])),
)]
struct Args {
    /// The SQLite file
    #[arg(long, value_name = "PATH", default_value = "media_queue.db")]
    db: PathBuf,
    /// Insert N pending tasks (image-0001.jpg, image-0002.jpg, ...)
    #[arg(long, value_name = "N")]
    seed: Option<u32>,
    /// Requeue every failed task as pending, keeping its history
    #[arg(long)]
    retry_failed: bool,
    /// Process tasks until every one is done or failed
    #[arg(long)]
    work: bool,
    /// Print every task: id, image, status, attempts, error, retry_after
    #[arg(long)]
    report: bool,
    /// How long a claim holds a task before another worker may take it over. Keep it above
    /// `analyze`'s `timeout` (30 s), so that a live worker always finishes inside its lease.
    #[arg(long, value_name = "MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    lease_ms: u64,
}

// -------------------------------------------------------------------------------------------
// The annotated function and its fake API

/// Everything `analyze` can fail with. `#[derive(Classify)]` classifies each variant as the
/// error it wraps.
#[derive(Debug, thiserror::Error, Classify)]
enum AnalysisError {
    /// An error answer, as a Gemini client reports it: the status, then the body. The status
    /// decides (429 and 503 are retried, 400 is not), and a `RetryInfo` `retryDelay` in the
    /// body is the server's hint. Not `#[from]`: the text already holds the whole body.
    #[error("{} {}", .0.status(), .0.body())]
    Api(HttpError),
    /// No answer: a timeout or a failed connection is retried.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// All attempts failed: the attribute returns this through `From`.
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

/// The client and the `generateContent` URL.
struct Gemini {
    client: reqwest::Client,
    url: String,
}

/// The API's circuit breaker, shared by every task of a worker: when 80 % of the last 20
/// attempts failed with the service's errors (a 400 does not count), the next tasks are not
/// sent for 2 s (doubling while it stays down) and are saved as `failed`, with the time of
/// the next probe as their "retry after". The demo's scripted faults (about half of its
/// attempts) stay below it; an outage does not.
static GEMINI_BREAKER: CircuitBreaker = CircuitBreaker::new("gemini")
    .count_window(20)
    .minimum_calls(20)
    .failure_rate(0.8)
    .open_for(Duration::from_secs(2))
    .open_growth(2.0, Duration::from_secs(60));

/// The API's quota, as the client keeps it: at most 100 requests a second, 10 at once, so the
/// worker does not meet the 429s it can foresee (a 429's hint pauses it for every task).
static GEMINI_RPM: RateLimiter = RateLimiter::per_second("gemini", 100).burst(10);

/// Analyses one image, stored at `gs://media-queue-demo/{image}`, with Gemini.
///
/// `attempts` counts the attempts of this call: the attribute reports the count only when it
/// gives up, so a successful call counts its own (`&mut` arguments are reborrowed for each
/// attempt, and the count survives).
///
/// Production would use the defaults, `max_retries = 5, base_delay = 1.0, max_delay = 30.0`;
/// the demo waits a hundred times less. `timeout` bounds the whole call, waits included, so
/// that a worker finishes each task well inside its lease (`--lease-ms`).
#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.01,
    max_delay = 0.05,
    jitter = 0.01,
    timeout = 30.0,
    breaker = GEMINI_BREAKER,
    limiter = GEMINI_RPM
)]
async fn analyze(
    gemini: &Gemini,
    image: &str,
    attempts: &mut u32,
) -> Result<String, AnalysisError> {
    *attempts += 1;
    let answer = ask(gemini, image).await;
    crash_points::reached(Point::Attempted);
    answer
}

/// One attempt: the request, its status and its answer's text.
async fn ask(gemini: &Gemini, image: &str) -> Result<String, AnalysisError> {
    if let Some(slow) = slow_attempts() {
        tokio::time::sleep(slow).await;
    }
    let request = serde_json::json!({ "contents": [{ "parts": [
        { "text": "Caption this image in one sentence." },
        { "file_data": {
            "mime_type": "image/jpeg",
            "file_uri": format!("gs://media-queue-demo/{image}"),
        } },
    ] }] });
    let response = gemini
        .client
        .post(&gemini.url)
        .json(&request)
        .send()
        .await?;
    let response = error_for_status(response)
        .await
        .map_err(AnalysisError::Api)?;
    let answer: serde_json::Value = response.json().await?;
    let text = answer["candidates"][0]["content"]["parts"][0]["text"].as_str();
    Ok(text.unwrap_or_default().to_owned())
}

/// `MEDIA_QUEUE_SLOW_MS`: how long each attempt takes before the request is sent.
fn slow_attempts() -> Option<Duration> {
    let ms: u64 = std::env::var("MEDIA_QUEUE_SLOW_MS").ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// How the fake API treats an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers at once.
    Fine,
    /// 503 Service Unavailable on the first attempt, then an answer.
    Unavailable1,
    /// 503 Service Unavailable on the first two attempts, then an answer.
    Unavailable2,
    /// 429 Resource Exhausted with `"retryDelay": "0.02s"` on every attempt of the first
    /// pass. By the time someone requeues the task, the quota has come back: one more 429,
    /// then an answer.
    QuotaExhausted,
    /// 400 Bad Request, always: the data is wrong and no retry will fix it.
    InvalidImage,
}

/// How the fake treats `image-NNNN.jpg`: the twelve demo images show every behaviour, one bad
/// image among them, and the pattern repeats for the images after them.
fn behaviour(image: &str) -> Behaviour {
    use Behaviour::*;
    #[rustfmt::skip]
    const PATTERN: [Behaviour; 12] = [
        Fine, InvalidImage, Unavailable1, Fine, QuotaExhausted, Unavailable2,
        Unavailable1, Fine, Unavailable2, Fine, Fine, QuotaExhausted,
    ];
    let number = image.trim_start_matches("image-").trim_end_matches(".jpg");
    // Another name (not from `--seed`) is treated as the first image is: fine.
    let n: usize = number.parse().unwrap_or(1);
    PATTERN[n.saturating_sub(1) % PATTERN.len()]
}

/// A 429 as a Gemini client reports it: words, then the JSON, whose `RetryInfo` says how long
/// to wait.
const RESOURCE_EXHAUSTED: &str = r#"Resource Exhausted: {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.02s"}]}}"#;

/// The fake Gemini for one `--work`: each unfinished image gets the answers of its behaviour on
/// this pass (how many outcomes its task already had). Fixed by the name and the pass, they
/// are the same in every run, after every restart of a killed worker, and in every worker.
fn fake_gemini(conn: &Connection) -> anyhow::Result<FakeGemini> {
    let unavailable = || Fault::status(503, "Service Unavailable");
    let quota = || Fault::status(429, RESOURCE_EXHAUSTED);
    let mut fake = FakeGemini::new(GeminiFaults::NONE);
    for (image, pass) in queue::unfinished(conn)? {
        fake = match (behaviour(&image), pass) {
            (Behaviour::Fine, _) => fake,
            (Behaviour::Unavailable1, _) => fake.script(image, [unavailable()]),
            (Behaviour::Unavailable2, _) => fake.script(image, [unavailable(), unavailable()]),
            (Behaviour::QuotaExhausted, 0) => fake.always(image, quota()),
            (Behaviour::QuotaExhausted, _) => fake.script(image, [quota()]),
            (Behaviour::InvalidImage, _) => fake.always(
                image,
                Fault::status(400, "Bad Request: invalid image format"),
            ),
        };
    }
    Ok(fake)
}

// -------------------------------------------------------------------------------------------
// The worker

/// How long a worker with nothing to claim waits before it looks again, at most: a task held by
/// another worker may finish long before its lease ends.
const POLL: Duration = Duration::from_millis(50);

/// Processes tasks until every one is `done` or `failed`. Returns how many this worker finished.
async fn work(conn: &mut Connection, lease: Duration) -> anyhow::Result<u32> {
    let worker = format!("worker {}", std::process::id());
    // Started before the first claim, so that its scripts cover every unfinished task,
    // those held by other workers too: any of them may be taken over.
    let server = FaultServer::gemini(fake_gemini(conn)?).await?;
    let gemini = Gemini {
        // `no_proxy`: 127.0.0.1 is reached directly, even where HTTP_PROXY is set.
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?,
        url: server.url("/v1beta/models/gemini-2.0-flash:generateContent"),
    };
    let mut finished = 0;
    let mut waiting = false;
    loop {
        let task = match queue::claim(conn, &worker, lease)? {
            Claim::Task(task) => task,
            Claim::Empty => return Ok(finished),
            Claim::Wait { held, next_expiry } => {
                if !waiting {
                    println!("waiting: {held} task(s) held by other workers");
                    waiting = true;
                }
                tokio::time::sleep(next_expiry.min(POLL)).await;
                continue;
            }
        };
        waiting = false;
        if let Some(previous) = &task.taken_over_from {
            println!(
                "took over #{} {}: the lease of {previous} ran out",
                task.id, task.image
            );
        }
        crash_points::reached(Point::Claimed);
        let mut attempts = 0;
        let outcome = match analyze(&gemini, &task.image, &mut attempts).await {
            Ok(result) => Outcome::Done { result, attempts },
            // All retries spent: the give-up error has all we need to save the task.
            Err(AnalysisError::GaveUp(e)) => {
                if let GiveUpReason::CircuitOpen { .. } = e.reason() {
                    // Not sent at all: the task keeps its data, and the next probe's time.
                    tracing::warn!("Image analysis deferred: {e}");
                } else {
                    tracing::error!("Image analysis failed: {e}");
                }
                Outcome::Failed {
                    error: e.to_string(),
                    attempts: e.attempts(),
                    retry_after: e.retry_after(),
                }
            }
            // Not retryable: returned unchanged after one attempt. Saved as failed all the same.
            Err(e) => Outcome::Failed {
                error: e.to_string(),
                attempts,
                retry_after: None,
            },
        };
        crash_points::reached(Point::Analyzed);
        if queue::finish(conn, &task, &outcome)? == Recorded::LeaseLost {
            println!(
                "lost    #{} {}: the lease ran out and another worker took the task over; \
                 it records the outcome",
                task.id, task.image
            );
            continue;
        }
        crash_points::reached(Point::Finished);
        finished += 1;
        match &outcome {
            Outcome::Done { attempts, .. } => {
                println!("done    #{} {} (attempts: {attempts})", task.id, task.image)
            }
            Outcome::Failed {
                error, attempts, ..
            } => println!(
                "failed  #{} {} (attempts: {attempts}): {error}",
                task.id, task.image
            ),
        }
    }
}

/// Prints every task as a table; long errors are shortened (the database keeps them whole).
fn report(conn: &Connection) -> anyhow::Result<()> {
    let queue::Report {
        rows,
        counts,
        completions,
    } = queue::report(conn)?;
    println!(
        "{:>4}  {:<16} {:<10} {:>8}  {:<11}  error",
        "id", "image", "status", "attempts", "retry_after"
    );
    for row in rows {
        let retry_after = row
            .retry_after_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let error = row
            .error
            .map_or_else(|| "-".to_owned(), |e| shorten(&e, 64));
        println!(
            "{:>4}  {:<16} {:<10} {:>8}  {retry_after:<11}  {error}",
            row.id, row.image, row.status, row.attempts
        );
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    println!(
        "tasks: {}; completions recorded: {completions}",
        counts.join(", ")
    );
    Ok(())
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars - 1).collect();
    short.push('…');
    short
}

fn seed(conn: &mut Connection, count: u32) -> anyhow::Result<()> {
    queue::seed(conn, count)?;
    println!("seeded {count} pending tasks");
    Ok(())
}

fn retry_failed(conn: &mut Connection) -> anyhow::Result<()> {
    let requeued = queue::requeue_failed(conn)?;
    println!("requeued {requeued} failed task(s)");
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Command line

async fn run(args: &Args) -> anyhow::Result<()> {
    let mut conn = queue::open(&args.db)?;
    if let Some(count) = args.seed {
        seed(&mut conn, count)?;
    }
    if args.retry_failed {
        retry_failed(&mut conn)?;
    }
    if args.work {
        let finished = work(&mut conn, Duration::from_millis(args.lease_ms)).await?;
        println!("no task left to do ({finished} finished by this worker)");
    }
    if args.report {
        report(&conn)?;
    }
    Ok(())
}

/// `cargo run --example media_queue` with no arguments: the whole story in a temp dir.
async fn demo() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("media_queue-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("media_queue.db");
    let result = demo_in(&db).await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn demo_in(db: &Path) -> anyhow::Result<()> {
    let mut conn = queue::open(db)?;
    let lease = Duration::from_secs(60);
    println!("A media queue in {} (removed at the end).", db.display());
    println!("The retry log goes to stderr; the outcome of each task to stdout.\n");

    println!("== 1. Seed twelve images ==");
    seed(&mut conn, 12)?;

    println!("\n== 2. Work: 503s and 429s are retried; what still fails is saved, not lost ==");
    work(&mut conn, lease).await?;

    println!("\n== 3. Report ==");
    report(&conn)?;

    println!("\n== 4. Requeue the failed tasks (by hand, later: the quota has come back) ==");
    retry_failed(&mut conn)?;

    println!("\n== 5. Work again: the rate-limited images pass; the invalid image fails again ==");
    work(&mut conn, lease).await?;

    println!("\n== 6. Report ==");
    report(&conn)?;
    println!(
        "\nEvery task ended done or failed, with its error and attempt count. A requeued task has\n\
         one completion row per pass: `completions` is the history of its outcomes."
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // A bad flag, or none of the actions, prints clap's error and the usage (exit code 2).
    let args = (std::env::args_os().len() > 1).then(Args::parse);
    crash_points::install_from_env()?;

    // The attribute's events (target `resilience`): `Retry 1/3 after 503 ...: waiting 0.0s`,
    // `Success on attempt 2`, `Giving up after 3 attempts ...`, `Not retrying: 400 ...`.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match args {
        Some(args) => run(&args).await,
        None => demo().await,
    }
}
