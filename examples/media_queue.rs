//! Graceful degradation with a real database: a media-task queue kept in SQLite.
//!
//! Each task is an image to analyse. A worker claims one pending task at a time, analyses it
//! through a function under `#[retry_with_backoff]`, and records the outcome. When the retries
//! are spent, the `MediaProcessingError` is saved with the task: status `failed`, the error
//! message, the attempt count and the server's retry-after hint, in one transaction. A bad
//! request (not retryable) is saved as `failed` too. Nothing is lost; `--retry-failed` puts the
//! failed tasks back in the queue for another go.
//!
//! ```text
//! cargo run --example media_queue                       # the whole story, in a temp dir
//! cargo run --example media_queue -- --db q.db --seed 20
//! cargo run --example media_queue -- --db q.db --work --report
//! cargo run --example media_queue -- --db q.db --retry-failed --work --report
//! ```
//!
//! Actions given together run in this order: seed, retry-failed, work, report.
//!
//! The guarantee, which `tests/media_queue.rs` checks by SIGKILLing the worker at random points:
//! every task ends `done` or `failed`, and each (re)queueing of a task gets exactly one terminal
//! outcome, recorded in the same transaction as the task's new status. A worker killed mid-task
//! leaves the task `processing`; the next worker puts it back to `pending` and analyses it again,
//! so the API may be called again for that image (at-least-once calls), but its outcome is never
//! recorded twice and never dropped.
//!
//! The "Gemini API" is `fault-server`'s fake Gemini on 127.0.0.1, called over HTTP; each
//! `--work` starts one, scripted per image (see `fake_gemini`). Setting `MEDIA_QUEUE_SLOW_MS`
//! makes each attempt sleep that long first, so that a test can kill the worker mid-task.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use fault_server::{FakeGemini, Fault, FaultServer, GeminiFaults};
use resilience::http::{HttpError, error_for_status};
use resilience::{Classify, MediaProcessingError, retry_with_backoff};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

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
    /// Process tasks until none is pending
    #[arg(long)]
    work: bool,
    /// Print every task: id, image, status, attempts, error, retry_after
    #[arg(long)]
    report: bool,
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

/// Analyses one image, stored at `gs://media-queue-demo/{image}`, with Gemini.
///
/// `attempts` counts the attempts of this call: the attribute reports the count only when it
/// gives up, so a successful call counts its own (`&mut` arguments are reborrowed for each
/// attempt, and the count survives).
///
/// Production would use the defaults, `max_retries = 5, base_delay = 1.0, max_delay = 30.0`;
/// the demo waits a hundred times less.
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn analyze(
    gemini: &Gemini,
    image: &str,
    attempts: &mut u32,
) -> Result<String, AnalysisError> {
    *attempts += 1;
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

/// The fake Gemini for one `--work`: each pending image gets the answers of its behaviour on
/// this pass (how many outcomes its task already had). Fixed by the name and the pass, they
/// are the same in every run and after every restart of a killed worker.
fn fake_gemini(conn: &Connection) -> anyhow::Result<FakeGemini> {
    let mut pending = conn.prepare(
        "SELECT image, (SELECT count(*) FROM completions WHERE task_id = tasks.id)
         FROM tasks WHERE status = 'pending'",
    )?;
    let rows = pending.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, u32>(1)?))
    })?;
    let unavailable = || Fault::status(503, "Service Unavailable");
    let quota = || Fault::status(429, RESOURCE_EXHAUSTED);
    let mut fake = FakeGemini::new(GeminiFaults::NONE);
    for row in rows {
        let (image, pass) = row?;
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
// The queue

/// The schema. `completions` gets one row per terminal transition (`done` or `failed`), written
/// in the same transaction as the task's status: a task processed twice would show two rows.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id             INTEGER PRIMARY KEY,
    image          TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    retry_after_ms INTEGER,
    result         TEXT,
    updated_at     TEXT
);
CREATE TABLE IF NOT EXISTS completions (
    task_id INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    at      TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, id);
CREATE INDEX IF NOT EXISTS completions_by_task ON completions (task_id);
";

/// SQLite's clock, to the millisecond, in UTC.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Opens (and if need be creates) the queue. WAL lets `--report` read while a worker writes;
/// `synchronous = FULL` makes every commit durable, not only against a killed process (which
/// WAL survives anyway) but against a power cut too.
fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!(
            "{}: could not switch to WAL (journal_mode is {mode})",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Inserts `count` pending tasks, numbering on from the tasks already there.
fn seed(conn: &mut Connection, count: u32) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: u32 = tx.query_row("SELECT count(*) FROM tasks", [], |row| row.get(0))?;
    {
        let mut insert = tx.prepare(&format!(
            "INSERT INTO tasks (image, status, updated_at) VALUES (?1, 'pending', {NOW})"
        ))?;
        for n in existing + 1..=existing + count {
            insert.execute([format!("image-{n:04}.jpg")])?;
        }
    }
    tx.commit()?;
    println!("seeded {count} pending tasks");
    Ok(())
}

/// Puts tasks left `processing` by a killed worker back to `pending`.
///
/// This is only correct because there is a single worker per database: a task is
/// `processing` at startup only if the worker that claimed it is dead. Several concurrent
/// workers would need a lease instead (a `claimed_until` time that others may take over
/// after), or they would steal each other's live tasks.
fn recover(conn: &mut Connection) -> anyhow::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let recovered = tx.execute(
        &format!(
            "UPDATE tasks SET status = 'pending', updated_at = {NOW} WHERE status = 'processing'"
        ),
        [],
    )?;
    tx.commit()?;
    Ok(recovered)
}

/// A task claimed by this worker.
struct Claimed {
    id: i64,
    image: String,
}

/// Moves the oldest pending task to `processing`, in one transaction.
fn claim(conn: &mut Connection) -> anyhow::Result<Option<Claimed>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let next = tx
        .query_row(
            "SELECT id, image FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 1",
            [],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()?;
    let Some((id, image)) = next else {
        return Ok(None);
    };
    tx.execute(
        &format!("UPDATE tasks SET status = 'processing', updated_at = {NOW} WHERE id = ?1"),
        [id],
    )?;
    tx.commit()?;
    Ok(Some(Claimed { id, image }))
}

/// How a task ended.
enum Outcome {
    Done {
        result: String,
        attempts: u32,
    },
    Failed {
        error: String,
        attempts: u32,
        retry_after: Option<Duration>,
    },
}

/// Records a task's outcome: its new status and its `completions` row, in one transaction.
/// The update only applies to a task this worker holds (`processing`); anything else is a bug,
/// and the transaction is rolled back rather than record an outcome twice.
fn finish(conn: &mut Connection, id: i64, outcome: &Outcome) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (status, changed) = match outcome {
        Outcome::Done { result, attempts } => (
            "done",
            tx.execute(
                &format!(
                    "UPDATE tasks SET status = 'done', result = ?2, attempts = ?3, error = NULL,
                     retry_after_ms = NULL, updated_at = {NOW}
                     WHERE id = ?1 AND status = 'processing'"
                ),
                params![id, result, attempts],
            )?,
        ),
        Outcome::Failed {
            error,
            attempts,
            retry_after,
        } => {
            let retry_after_ms =
                retry_after.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            (
                "failed",
                tx.execute(
                    &format!(
                        "UPDATE tasks SET status = 'failed', error = ?2, attempts = ?3,
                         retry_after_ms = ?4, result = NULL, updated_at = {NOW}
                         WHERE id = ?1 AND status = 'processing'"
                    ),
                    params![id, error, attempts, retry_after_ms],
                )?,
            )
        }
    };
    if changed != 1 {
        bail!("task {id} was not being processed; its outcome is not recorded twice");
    }
    tx.execute(
        &format!("INSERT INTO completions (task_id, outcome, at) VALUES (?1, ?2, {NOW})"),
        params![id, status],
    )?;
    tx.commit()?;
    Ok(())
}

/// Processes tasks until none is pending. Returns how many were finished.
async fn work(conn: &mut Connection) -> anyhow::Result<u32> {
    let recovered = recover(conn)?;
    if recovered > 0 {
        println!("recovered {recovered} task(s) left `processing` by a stopped worker");
    }
    // Started after `recover`, so that its scripts cover the tasks a killed worker left.
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
    while let Some(task) = claim(conn)? {
        let mut attempts = 0;
        let outcome = match analyze(&gemini, &task.image, &mut attempts).await {
            Ok(result) => Outcome::Done { result, attempts },
            // All retries spent: the give-up error has all we need to save the task.
            Err(AnalysisError::GaveUp(e)) => {
                tracing::error!("Image analysis failed: {e}");
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
        finish(conn, task.id, &outcome)?;
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
    Ok(finished)
}

/// Requeues every failed task. Its error, attempt count and hint stay on the row until its
/// next outcome, and its `completions` rows stay: the history is kept.
fn retry_failed(conn: &mut Connection) -> anyhow::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let requeued = tx.execute(
        &format!("UPDATE tasks SET status = 'pending', updated_at = {NOW} WHERE status = 'failed'"),
        [],
    )?;
    tx.commit()?;
    println!("requeued {requeued} failed task(s)");
    Ok(requeued)
}

/// Prints every task as a table; long errors are shortened (the database keeps them whole).
fn report(conn: &Connection) -> anyhow::Result<()> {
    let mut rows = conn.prepare(
        "SELECT id, image, status, attempts, error, retry_after_ms FROM tasks ORDER BY id",
    )?;
    let rows = rows.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u32>(3)?,
            row.get::<_, Option<String>>(4)?,
            row.get::<_, Option<i64>>(5)?,
        ))
    })?;
    println!(
        "{:>4}  {:<16} {:<10} {:>8}  {:<11}  error",
        "id", "image", "status", "attempts", "retry_after"
    );
    for row in rows {
        let (id, image, status, attempts, error, retry_after_ms) = row?;
        let retry_after = retry_after_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let error = error.map_or_else(|| "-".to_owned(), |e| shorten(&e, 64));
        println!("{id:>4}  {image:<16} {status:<10} {attempts:>8}  {retry_after:<11}  {error}");
    }
    let mut counts =
        conn.prepare("SELECT status, count(*) FROM tasks GROUP BY status ORDER BY status")?;
    let counts: Vec<String> = counts
        .query_map([], |row| {
            Ok(format!(
                "{} {}",
                row.get::<_, u32>(1)?,
                row.get::<_, String>(0)?
            ))
        })?
        .collect::<Result<_, _>>()?;
    let completions: u32 =
        conn.query_row("SELECT count(*) FROM completions", [], |row| row.get(0))?;
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

// -------------------------------------------------------------------------------------------
// Command line

async fn run(args: &Args) -> anyhow::Result<()> {
    let mut conn = open(&args.db)?;
    if let Some(count) = args.seed {
        seed(&mut conn, count)?;
    }
    if args.retry_failed {
        retry_failed(&mut conn)?;
    }
    if args.work {
        let finished = work(&mut conn).await?;
        println!("no pending task left ({finished} finished in this run)");
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
    let mut conn = open(db)?;
    println!("A media queue in {} (removed at the end).", db.display());
    println!("The retry log goes to stderr; the outcome of each task to stdout.\n");

    println!("== 1. Seed twelve images ==");
    seed(&mut conn, 12)?;

    println!("\n== 2. Work: 503s and 429s are retried; what still fails is saved, not lost ==");
    work(&mut conn).await?;

    println!("\n== 3. Report ==");
    report(&conn)?;

    println!("\n== 4. Requeue the failed tasks (by hand, later: the quota has come back) ==");
    retry_failed(&mut conn)?;

    println!("\n== 5. Work again: the rate-limited images pass; the invalid image fails again ==");
    work(&mut conn).await?;

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
