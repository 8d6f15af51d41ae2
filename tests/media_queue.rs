//! Graceful degradation, proven on the `media_queue` example: a SQLite task queue whose worker
//! is SIGKILLed at random points must still end with every task `done` or `failed` exactly
//! once (none lost, none completed twice), and failed tasks must keep their error, attempt
//! count and the server's retry-after hint.
//!
//! The tests drive the example's binary, as a user would, and read its database directly.
//! Run with `--nocapture` to see how many kills landed in the middle of a task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

// -------------------------------------------------------------------------------------------
// The binary and its databases

/// Builds the example once for all tests and returns its path.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let mut cargo = Command::new(env!("CARGO"));
        // Cargo gives a test the variables of the package under test (`CARGO_MANIFEST_DIR`,
        // `CARGO_PKG_NAME`, ...). Some build scripts (ring's) rebuild when one of them
        // changes, so passing them on would rebuild half the dependencies on every run, and
        // again for the next plain `cargo build`.
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let set_for_tests = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&name);
            if set_for_tests {
                cargo.env_remove(name);
            }
        }
        let output = cargo
            .args([
                "build",
                "--example",
                "media_queue",
                "--manifest-path",
                manifest,
            ])
            .args(["--message-format", "json-render-diagnostics"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(
            output.status.success(),
            "cargo build --example media_queue failed"
        );
        // Cargo says where it put the binary; a `target-dir` in a config file counts too.
        let reported = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|msg| msg["reason"] == "compiler-artifact")
            .filter(|msg| msg["target"]["name"] == "media_queue")
            .find_map(|msg| msg["executable"].as_str().map(PathBuf::from));
        let binary = reported.unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
                |dir| Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            );
            target
                .join("debug/examples")
                .join(format!("media_queue{}", std::env::consts::EXE_SUFFIX))
        });
        assert!(binary.is_file(), "no binary at {}", binary.display());
        binary
    })
}

/// A fresh directory for one test's database, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("media_queue-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        Scratch(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("queue.db")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example, on `db`, with `args`.
fn queue(db: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.arg("--db").arg(db).args(args);
    command.env_remove("MEDIA_QUEUE_SLOW_MS");
    command
}

/// Runs the example to the end and returns its stdout.
fn run(db: &Path, args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = queue(db, args).output().expect("run media_queue");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "media_queue {args:?} failed: {status}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

/// One row of `tasks`, as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Task {
    image: String,
    status: String,
    attempts: u32,
    error: Option<String>,
    retry_after_ms: Option<i64>,
}

/// Opens the database read-only (the WAL is read as well; no worker runs when this is called).
fn open(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the queue")
}

fn tasks(db: &Path) -> BTreeMap<i64, Task> {
    let conn = open(db);
    let mut rows = conn
        .prepare("SELECT id, image, status, attempts, error, retry_after_ms FROM tasks")
        .unwrap();
    rows.query_map([], |row| {
        Ok((
            row.get(0)?,
            Task {
                image: row.get(1)?,
                status: row.get(2)?,
                attempts: row.get(3)?,
                error: row.get(4)?,
                retry_after_ms: row.get(5)?,
            },
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// For each task id, its outcomes in `completions`, in order.
fn completions(db: &Path) -> BTreeMap<i64, Vec<String>> {
    let conn = open(db);
    let mut rows = conn
        .prepare("SELECT task_id, outcome FROM completions ORDER BY rowid")
        .unwrap();
    let mut by_task: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for row in rows
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
    {
        let (id, outcome) = row.unwrap();
        by_task.entry(id).or_default().push(outcome);
    }
    by_task
}

fn count(tasks: &BTreeMap<i64, Task>, status: &str) -> usize {
    tasks.values().filter(|t| t.status == status).count()
}

/// A deterministic pseudo-random sequence (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

// -------------------------------------------------------------------------------------------
// The tests

/// What the fake API does to the twelve first images, run without interruption: status,
/// attempts, and whether a retry-after hint is saved.
const EXPECTED_FIRST_PASS: [(&str, &str, u32, Option<i64>); 12] = [
    ("image-0001.jpg", "done", 1, None),
    // 400 Bad Request: not retryable, saved as failed after one attempt.
    ("image-0002.jpg", "failed", 1, None),
    // 503 once.
    ("image-0003.jpg", "done", 2, None),
    ("image-0004.jpg", "done", 1, None),
    // 429 on every attempt, with `"retryDelay": "0.02s"`.
    ("image-0005.jpg", "failed", 3, Some(20)),
    // 503 twice.
    ("image-0006.jpg", "done", 3, None),
    ("image-0007.jpg", "done", 2, None),
    ("image-0008.jpg", "done", 1, None),
    ("image-0009.jpg", "done", 3, None),
    ("image-0010.jpg", "done", 1, None),
    ("image-0011.jpg", "done", 1, None),
    ("image-0012.jpg", "failed", 3, Some(20)),
];

const RATE_LIMITED: &str = "Failed after 3 retries: 429 Resource Exhausted";
const BAD_REQUEST: &str = "400 Bad Request: invalid image format";

#[test]
fn sigkill_at_random_points_loses_no_task_and_completes_none_twice() {
    const TASKS: u32 = 40;
    const MAX_KILLS: u32 = 60;
    let started = Instant::now();

    // The reference: the same queue, worked without interruption.
    let reference = Scratch::new("reference");
    run(&reference.db(), &["--seed", &TASKS.to_string(), "--work"]);
    let expected = tasks(&reference.db());

    let scratch = Scratch::new("sigkill");
    let db = scratch.db();
    run(&db, &["--seed", &TASKS.to_string()]);

    let mut rng = Rng(0x5eed_0fc0_ffee_0042);
    let (mut kills, mut mid_task, mut runs) = (0u32, 0u32, 0u32);
    loop {
        runs += 1;
        let mut child = queue(&db, &["--work"])
            .env("MEDIA_QUEUE_SLOW_MS", "5")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a worker");
        if kills == MAX_KILLS {
            // Enough: let the last worker finish the queue.
            let status = child.wait().unwrap();
            assert!(status.success(), "the last worker failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.between(20, 150)));
        if let Some(status) = child.try_wait().unwrap() {
            // The worker emptied the queue before the kill came.
            assert!(status.success(), "a worker failed: {status}");
            break;
        }
        child.kill().expect("SIGKILL the worker");
        child.wait().unwrap();
        kills += 1;

        // After each kill: at most the one task the worker held is `processing`, and every
        // finished task has exactly one completion (status and completion commit together).
        let now = tasks(&db);
        let processing = count(&now, "processing");
        assert!(processing <= 1, "{processing} tasks processing at once");
        if processing == 1 {
            mid_task += 1;
        }
        let finished = count(&now, "done") + count(&now, "failed");
        let completed: usize = completions(&db).values().map(Vec::len).sum();
        assert_eq!(
            completed, finished,
            "a status without its completion, or the reverse"
        );
    }

    let after = tasks(&db);
    let history = completions(&db);
    assert_eq!(after.len(), TASKS as usize, "tasks were lost or added");
    for (id, task) in &after {
        assert!(
            task.status == "done" || task.status == "failed",
            "task {id} ended {}",
            task.status
        );
        assert_eq!(
            history.get(id).map(Vec::as_slice),
            Some(std::slice::from_ref(&task.status)),
            "task {id} must have exactly one completion, matching its status"
        );
        if task.status == "failed" {
            let error = task.error.as_deref().unwrap_or_default();
            assert!(!error.is_empty(), "failed task {id} has no error");
            assert!(task.attempts >= 1, "failed task {id} has no attempts");
            if error.starts_with(RATE_LIMITED) {
                assert_eq!(task.attempts, 3, "{task:?}");
                assert_eq!(
                    task.retry_after_ms,
                    Some(20),
                    "the 429's hint is kept: {task:?}"
                );
            } else {
                assert_eq!(error, BAD_REQUEST, "{task:?}");
                assert_eq!(task.attempts, 1, "a 400 is not retried: {task:?}");
                assert_eq!(task.retry_after_ms, None, "{task:?}");
            }
        }
    }
    assert!(
        count(&after, "failed") >= 2,
        "the fake API should fail some tasks"
    );
    assert!(
        after
            .values()
            .any(|t| t.error.as_deref() == Some(BAD_REQUEST)),
        "the fake API should reject one image"
    );
    // Killing the worker changed nothing: every task ended as in the uninterrupted run.
    assert_eq!(after, expected, "kills changed some outcome");

    println!(
        "media_queue SIGKILL test: {TASKS} tasks, {runs} worker runs, {kills} kills, \
         {mid_task} of them mid-task, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        mid_task > 0,
        "no kill landed mid-task: the test proved nothing"
    );
}

#[test]
fn retry_failed_requeues_failed_tasks_and_the_next_work_processes_them_again() {
    let scratch = Scratch::new("retry-failed");
    let db = scratch.db();
    run(&db, &["--seed", "12", "--work"]);
    let first = tasks(&db);
    let failed: Vec<i64> = first
        .iter()
        .filter(|(_, t)| t.status == "failed")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(failed, [2, 5, 12]);

    let stdout = run(&db, &["--retry-failed"]);
    assert!(stdout.contains("requeued 3 failed task(s)"), "{stdout}");
    let requeued = tasks(&db);
    let history = completions(&db);
    for id in &failed {
        let task = &requeued[id];
        assert_eq!(task.status, "pending", "{task:?}");
        // The history stays: the last error, its attempts and hint, and the completion row.
        assert_eq!(task.error, first[id].error);
        assert_eq!(task.attempts, first[id].attempts);
        assert_eq!(task.retry_after_ms, first[id].retry_after_ms);
        assert_eq!(history[id], ["failed"]);
    }
    // The others are untouched.
    for (id, task) in &requeued {
        if !failed.contains(id) {
            assert_eq!(task, &first[id]);
        }
    }

    run(&db, &["--work"]);
    let second = tasks(&db);
    let history = completions(&db);
    // By design, a requeued task gets a second completion row: one per outcome. Tasks that
    // were not requeued keep their single row.
    for (id, outcomes) in &history {
        if failed.contains(id) {
            assert_eq!(outcomes.len(), 2, "task {id}: {outcomes:?}");
        } else {
            assert_eq!(outcomes, &["done"], "task {id} processed again");
        }
    }
    // The rate-limited images pass on the second pass (after one more 429)...
    for id in [5, 12] {
        assert_eq!(history[&id], ["failed", "done"]);
        let task = &second[&id];
        assert_eq!(
            (task.status.as_str(), task.attempts),
            ("done", 2),
            "{task:?}"
        );
        assert_eq!((&task.error, task.retry_after_ms), (&None, None));
    }
    // ...and the invalid image fails again, as it must: no retry fixes bad data.
    assert_eq!(history[&2], ["failed", "failed"]);
    assert_eq!(second[&2].error.as_deref(), Some(BAD_REQUEST));
    assert_eq!(second[&2].attempts, 1);

    // Requeueing with nothing failed but the bad image touches only that one.
    let stdout = run(&db, &["--retry-failed", "--work"]);
    assert!(stdout.contains("requeued 1 failed task(s)"), "{stdout}");
    assert_eq!(completions(&db)[&2].len(), 3);
}

#[test]
fn an_uninterrupted_run_reports_the_expected_outcome_per_image() {
    let scratch = Scratch::new("report");
    let db = scratch.db();
    let stdout = run(&db, &["--seed", "12", "--work", "--report"]);

    // One line per finished task during the work.
    let finished = stdout
        .lines()
        .filter(|l| l.starts_with("done ") || l.starts_with("failed "))
        .count();
    assert_eq!(finished, 12, "{stdout}");

    // The report table: id, image, status, attempts, retry_after, error.
    let header = stdout
        .lines()
        .position(|l| {
            l.split_whitespace()
                .eq(["id", "image", "status", "attempts", "retry_after", "error"])
        })
        .unwrap_or_else(|| panic!("no report header in:\n{stdout}"));
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(header + 1)
        .take(12)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 12, "{stdout}");
    for (n, (row, (image, status, attempts, retry_after))) in
        rows.iter().zip(EXPECTED_FIRST_PASS).enumerate()
    {
        let retry_after = retry_after.map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let expected = [
            (n + 1).to_string(),
            image.to_owned(),
            status.to_owned(),
            attempts.to_string(),
            retry_after,
        ];
        assert_eq!(row[..5], expected, "report row {}:\n{stdout}", n + 1);
        let error = row[5..].join(" ");
        match (status, attempts) {
            ("done", _) => assert_eq!(error, "-"),
            ("failed", 1) => assert_eq!(error, BAD_REQUEST),
            _ => assert!(error.starts_with(RATE_LIMITED), "{error}"),
        }
    }
    assert!(
        stdout.contains("tasks: 9 done, 3 failed; completions recorded: 12"),
        "{stdout}"
    );

    // The database says the same, with the whole error text.
    let saved = tasks(&db);
    for (id, (image, status, attempts, retry_after_ms)) in (1..).zip(EXPECTED_FIRST_PASS) {
        let task = &saved[&id];
        assert_eq!(
            (
                task.image.as_str(),
                task.status.as_str(),
                task.attempts,
                task.retry_after_ms
            ),
            (image, status, attempts, retry_after_ms)
        );
    }
    let rate_limited = saved[&5].error.as_deref().unwrap();
    assert!(
        rate_limited.starts_with(RATE_LIMITED) && rate_limited.contains(r#""retryDelay": "0.02s""#),
        "the saved error is the give-up error's Display, JSON body included: {rate_limited}"
    );
    assert!(completions(&db).values().all(|c| c.len() == 1));
}
