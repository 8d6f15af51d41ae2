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
//! The "Gemini API" is an in-process fake whose answers are deterministic per image. Setting
//! `MEDIA_QUEUE_SLOW_MS` makes each attempt sleep that long first, so that a test can kill the
//! worker in the middle of a task.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use resilience::{Classify, MediaProcessingError, retry_with_backoff};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

const USAGE: &str = "\
usage: media_queue [--db PATH] [--seed N] [--retry-failed] [--work] [--report]

  --db PATH        the SQLite file (default: media_queue.db in the current directory)
  --seed N         insert N pending tasks (image-0001.jpg, image-0002.jpg, ...)
  --retry-failed   requeue every failed task as pending, keeping its history
  --work           process tasks until none is pending
  --report         print every task: id, image, status, attempts, error, retry_after

With no arguments at all: a self-contained demo in a temporary directory.
Actions given together run in the order seed, retry-failed, work, report.";

// -------------------------------------------------------------------------------------------
// The annotated function and its fake API

/// Everything `analyze` can fail with. `#[derive(Classify)]` classifies each variant as the
/// error it wraps; `Api` wraps only a text, which the built-in rules read.
#[derive(Debug, thiserror::Error, Classify)]
enum AnalysisError {
    /// An error answer from the API, with its text as a Gemini client reports it (the JSON
    /// body included). The built-in rules read the text: 429 and 503 are retried, 400 is not,
    /// and a `RetryInfo` `retryDelay` in it is the server's hint.
    #[error("{0}")]
    Api(String),
    /// All attempts failed: the attribute returns this through `From`.
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

/// Analyses one image with the (fake) Gemini API.
///
/// `pass` is how many times this task already reached an outcome (0 the first time; a task
/// requeued by `--retry-failed` comes back with 1, ...). `attempts` counts the attempts of this
/// call: the attribute reports the count only when it gives up, so a successful call counts
/// its own (`&mut` arguments are reborrowed for each attempt, and the count survives).
///
/// Production would use the design note's `max_retries = 5, base_delay = 1.0, max_delay = 30.0`;
/// the demo waits a hundred times less.
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn analyze(image: &str, pass: u32, attempts: &mut u32) -> Result<String, AnalysisError> {
    *attempts += 1;
    if let Some(slow) = slow_attempts() {
        tokio::time::sleep(slow).await;
    }
    fake_gemini::generate_content(image, pass, *attempts)
}

/// `MEDIA_QUEUE_SLOW_MS`: how long each attempt takes before the fake API answers.
fn slow_attempts() -> Option<Duration> {
    let ms: u64 = std::env::var("MEDIA_QUEUE_SLOW_MS").ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// A stand-in for Gemini's `generateContent`. How it treats an image is fixed by a hash of the
/// image's name, so every run (and every restart after a crash) sees the same answers.
mod fake_gemini {
    use super::AnalysisError;

    /// How the fake API treats an image.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Behaviour {
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

    /// Picks the salt so that the twelve demo images show every behaviour, and one bad image.
    const SALT: &[u8] = b"gemini-754:";

    /// The behaviour for `image`: FNV-1a over the salted name, finished with MurmurHash3's
    /// mixer so that names differing in one digit land far apart.
    pub fn behaviour(image: &str) -> Behaviour {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in SALT.iter().chain(image.as_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        match h % 16 {
            0..=7 => Behaviour::Fine,
            8..=10 => Behaviour::Unavailable1,
            11..=12 => Behaviour::Unavailable2,
            13..=14 => Behaviour::QuotaExhausted,
            _ => Behaviour::InvalidImage,
        }
    }

    /// A Gemini 429 as a client library reports it: the status line and the JSON body, whose
    /// `RetryInfo` says how long to wait.
    const RESOURCE_EXHAUSTED: &str = r#"429 Resource Exhausted: {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.02s"}]}}"#;

    pub fn generate_content(image: &str, pass: u32, attempt: u32) -> Result<String, AnalysisError> {
        let error = |text: &str| Err(AnalysisError::Api(text.to_owned()));
        match (behaviour(image), pass, attempt) {
            (Behaviour::Unavailable1, _, 1) | (Behaviour::Unavailable2, _, 1 | 2) => {
                error("503 Service Unavailable")
            }
            (Behaviour::QuotaExhausted, 0, _) | (Behaviour::QuotaExhausted, _, 1) => {
                error(RESOURCE_EXHAUSTED)
            }
            (Behaviour::InvalidImage, _, _) => error("400 Bad Request: invalid image format"),
            _ => Ok(format!(
                r#"{{"caption": "a photo", "image": "{image}", "labels": ["outdoor"]}}"#
            )),
        }
    }
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
    /// How many outcomes the task already had: 0 unless it was requeued.
    pass: u32,
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
    let pass = tx.query_row(
        "SELECT count(*) FROM completions WHERE task_id = ?1",
        [id],
        |row| row.get(0),
    )?;
    tx.commit()?;
    Ok(Some(Claimed { id, image, pass }))
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
    let mut finished = 0;
    while let Some(task) = claim(conn)? {
        let mut attempts = 0;
        let outcome = match analyze(&task.image, task.pass, &mut attempts).await {
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
            Err(e @ AnalysisError::Api(_)) => Outcome::Failed {
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

#[derive(Debug, Default)]
struct Args {
    db: Option<PathBuf>,
    seed: Option<u32>,
    retry_failed: bool,
    work: bool,
    report: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--db" => {
                let path = args.next().context("--db needs a path")?;
                parsed.db = Some(PathBuf::from(path));
            }
            "--seed" => {
                let n = args.next().context("--seed needs a number")?;
                let n = n
                    .parse()
                    .with_context(|| format!("--seed {n}: not a count"))?;
                parsed.seed = Some(n);
            }
            "--retry-failed" => parsed.retry_failed = true,
            "--work" => parsed.work = true,
            "--report" => parsed.report = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(parsed)
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| PathBuf::from("media_queue.db"));
    let mut conn = open(&db)?;
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
    // The attribute's events (target `resilience`): `Retry 1/3 after 503 ...: waiting 0.0s`,
    // `Success on attempt 2`, `Giving up after 3 attempts ...`, `Not retrying: 400 ...`.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_none() {
        return demo().await;
    }
    let args = parse_args(args)?;
    if args.seed.is_none() && !args.retry_failed && !args.work && !args.report {
        bail!("nothing to do: give --seed N, --retry-failed, --work or --report\n\n{USAGE}");
    }
    run(&args).await
}
