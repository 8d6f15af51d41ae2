//! The queue in SQLite: tasks, their claims under a lease, and the record of their outcomes.
//!
//! Every change is one `IMMEDIATE` transaction, so two workers never interleave inside one.
//! A worker claims a task for a lease (`--lease-ms`); another worker may take the task over
//! only once the lease has run out, so a crashed worker cannot hold a task for ever, and a
//! live worker keeps its task as long as it finishes within its lease (keep the lease above
//! the call's `timeout`). Each claim gets a new number (`tasks.claim`), and an outcome is
//! recorded only by the holder of the task's current claim: a worker that outlived its lease
//! and lost the task finds its outcome refused, and the task's new holder records it instead.
//! Times are SQLite's clock (the system clock of the machine the file is on), in ms.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// The schema's version, in `PRAGMA user_version`: a file made by an older version of this
/// example (no leases) is refused rather than misread.
const VERSION: i64 = 2;

/// `completions` gets one row per terminal transition (`done` or `failed`), written in the same
/// transaction as the task's status: a task processed twice would show two rows. `claims` is the
/// history of every claim: who held the task, from when, until when, and how it ended.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id             INTEGER PRIMARY KEY,
    image          TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    retry_after_ms INTEGER,
    result         TEXT,
    claim          INTEGER NOT NULL DEFAULT 0,
    lease_until_ms INTEGER,
    updated_at     TEXT
);
CREATE TABLE IF NOT EXISTS completions (
    task_id INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    at      TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    task_id        INTEGER NOT NULL,
    claim          INTEGER NOT NULL,
    worker         TEXT NOT NULL,
    claimed_ms     INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL,
    released_ms    INTEGER,
    outcome        TEXT,
    PRIMARY KEY (task_id, claim)
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, id);
CREATE INDEX IF NOT EXISTS completions_by_task ON completions (task_id);
";

/// SQLite's clock, to the millisecond, in UTC, as text.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// SQLite's clock in ms since 1970: leases are compared with it.
const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// Opens (and if need be creates) the queue. WAL lets `--report` and other workers read while a
/// worker writes; `synchronous = FULL` makes every commit durable, not only against a killed
/// process (which WAL survives anyway) but against a power cut too.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Workers queue for the write lock instead of failing with `database is locked`.
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!(
            "{}: could not switch to WAL (journal_mode is {mode})",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let has_tasks: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'tasks'",
        [],
        |row| row.get(0),
    )?;
    if has_tasks && version != VERSION {
        bail!(
            "{} was made by another version of this example (schema {version}, this one \
             reads {VERSION}): remove it and seed again",
            path.display()
        );
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", VERSION)?;
    Ok(conn)
}

/// Inserts `count` pending tasks, numbering on from the tasks already there.
pub fn seed(conn: &mut Connection, count: u32) -> anyhow::Result<()> {
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
    Ok(())
}

/// A task this worker holds.
#[derive(Debug)]
pub struct Claimed {
    pub id: i64,
    pub image: String,
    /// The claim's number: the outcome is recorded only while it is still the task's claim.
    pub claim: i64,
    /// The worker whose lease ran out, when this claim took the task over from it.
    pub taken_over_from: Option<String>,
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// A task, now held by this worker.
    Task(Claimed),
    /// Nothing to claim now, but `held` tasks are held by other workers whose leases have not
    /// run out; the first lease ends in `next_expiry` (or a task may finish before that).
    Wait { held: u32, next_expiry: Duration },
    /// Every task is `done` or `failed`.
    Empty,
}

/// Claims the oldest task that is `pending`, or `processing` under a lease that has run out,
/// for `lease`, in one transaction.
pub fn claim(conn: &mut Connection, worker: &str, lease: Duration) -> anyhow::Result<Claim> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_ms: i64 = tx.query_row(&format!("SELECT {NOW_MS}"), [], |row| row.get(0))?;
    let next = tx
        .query_row(
            "SELECT id, image, claim, status FROM tasks
             WHERE status = 'pending' OR (status = 'processing' AND lease_until_ms <= ?1)
             ORDER BY id LIMIT 1",
            [now_ms],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)? == "processing",
                ))
            },
        )
        .optional()?;
    let Some((id, image, previous, expired)) = next else {
        let (held, first_end): (u32, Option<i64>) = tx.query_row(
            "SELECT count(*), min(lease_until_ms) FROM tasks WHERE status = 'processing'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        return Ok(match first_end {
            Some(end) if held > 0 => Claim::Wait {
                held,
                next_expiry: Duration::from_millis(
                    u64::try_from(end.saturating_sub(now_ms)).unwrap_or(0),
                ),
            },
            _ => Claim::Empty,
        });
    };
    let taken_over_from = if expired {
        tx.query_row(
            "SELECT worker FROM claims WHERE task_id = ?1 AND claim = ?2",
            params![id, previous],
            |row| row.get(0),
        )
        .optional()?
    } else {
        None
    };
    let claim = previous + 1;
    let lease_until = now_ms.saturating_add(lease_ms);
    tx.execute(
        &format!(
            "UPDATE tasks SET status = 'processing', claim = ?2, lease_until_ms = ?3,
             updated_at = {NOW} WHERE id = ?1"
        ),
        params![id, claim, lease_until],
    )?;
    tx.execute(
        "INSERT INTO claims (task_id, claim, worker, claimed_ms, lease_until_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, claim, worker, now_ms, lease_until],
    )?;
    tx.commit()?;
    Ok(Claim::Task(Claimed {
        id,
        image,
        claim,
        taken_over_from,
    }))
}

/// How a task ended.
pub enum Outcome {
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

/// Whether [`finish`] recorded the outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// The task's claim is no longer this worker's: its lease ran out and another worker took
    /// the task over. That worker records the outcome; this one is dropped.
    LeaseLost,
}

/// Records a task's outcome: its new status, its `completions` row and the end of its claim,
/// in one transaction, and only while `task.claim` is still the task's claim.
pub fn finish(
    conn: &mut Connection,
    task: &Claimed,
    outcome: &Outcome,
) -> anyhow::Result<Recorded> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (status, changed) = match outcome {
        Outcome::Done { result, attempts } => (
            "done",
            tx.execute(
                &format!(
                    "UPDATE tasks SET status = 'done', result = ?3, attempts = ?4, error = NULL,
                     retry_after_ms = NULL, lease_until_ms = NULL, updated_at = {NOW}
                     WHERE id = ?1 AND claim = ?2 AND status = 'processing'"
                ),
                params![task.id, task.claim, result, attempts],
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
                        "UPDATE tasks SET status = 'failed', error = ?3, attempts = ?4,
                         retry_after_ms = ?5, result = NULL, lease_until_ms = NULL,
                         updated_at = {NOW}
                         WHERE id = ?1 AND claim = ?2 AND status = 'processing'"
                    ),
                    params![task.id, task.claim, error, attempts, retry_after_ms],
                )?,
            )
        }
    };
    if changed != 1 {
        // Dropping the transaction rolls it back: nothing of this outcome is written.
        return Ok(Recorded::LeaseLost);
    }
    crate::crash_points::reached(crate::crash_points::Point::StatusUpdated);
    tx.execute(
        &format!("INSERT INTO completions (task_id, outcome, at) VALUES (?1, ?2, {NOW})"),
        params![task.id, status],
    )?;
    tx.execute(
        &format!(
            "UPDATE claims SET released_ms = {NOW_MS}, outcome = ?3
             WHERE task_id = ?1 AND claim = ?2"
        ),
        params![task.id, task.claim, status],
    )?;
    tx.commit()?;
    Ok(Recorded::Yes)
}

/// Requeues every failed task. Its error, attempt count and hint stay on the row until its next
/// outcome, and its `completions` rows stay: the history is kept.
pub fn requeue_failed(conn: &mut Connection) -> anyhow::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let requeued = tx.execute(
        &format!("UPDATE tasks SET status = 'pending', updated_at = {NOW} WHERE status = 'failed'"),
        [],
    )?;
    tx.commit()?;
    Ok(requeued)
}

/// The images of the tasks not finished yet (`pending`, or `processing` under any lease), each
/// with how many outcomes its task already had: what the fake API is scripted for.
pub fn unfinished(conn: &Connection) -> anyhow::Result<Vec<(String, u32)>> {
    let mut rows = conn.prepare(
        "SELECT image, (SELECT count(*) FROM completions WHERE task_id = tasks.id)
         FROM tasks WHERE status IN ('pending', 'processing') ORDER BY id",
    )?;
    let rows = rows.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One row of the report.
pub struct Row {
    pub id: i64,
    pub image: String,
    pub status: String,
    pub attempts: u32,
    pub error: Option<String>,
    pub retry_after_ms: Option<i64>,
}

/// What `--report` shows.
pub struct Report {
    /// Every task, by id.
    pub rows: Vec<Row>,
    /// How many tasks have each status, by status.
    pub counts: Vec<(String, u32)>,
    /// How many outcomes were recorded in all.
    pub completions: u32,
}

/// Reads the report.
pub fn report(conn: &Connection) -> anyhow::Result<Report> {
    let mut tasks = conn.prepare(
        "SELECT id, image, status, attempts, error, retry_after_ms FROM tasks ORDER BY id",
    )?;
    let rows = tasks
        .query_map([], |row| {
            Ok(Row {
                id: row.get(0)?,
                image: row.get(1)?,
                status: row.get(2)?,
                attempts: row.get(3)?,
                error: row.get(4)?,
                retry_after_ms: row.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut counts =
        conn.prepare("SELECT status, count(*) FROM tasks GROUP BY status ORDER BY status")?;
    let counts = counts
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let completions = conn.query_row("SELECT count(*) FROM completions", [], |row| row.get(0))?;
    Ok(Report {
        rows,
        counts,
        completions,
    })
}
