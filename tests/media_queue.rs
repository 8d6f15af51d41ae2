//! Graceful degradation, proven on the `media_queue` example: a SQLite task queue whose
//! workers are crashed at every point between two writes, SIGKILLed at random, run several at
//! once, and held past their lease, must still end with every task `done` or `failed` exactly
//! once (none lost, none completed twice, none held by two workers at once), and failed tasks
//! must keep their error, attempt count and the server's retry-after hint.
//!
//! The tests drive the example's binary, as a user would, and read its database directly.
//! Run with `--nocapture` to see the figures of each run (kills, how many mid-task, claims).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

// -------------------------------------------------------------------------------------------
// The binary and its databases

/// The example's binary, built once for all tests.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| common::example::binary("media_queue"))
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
    for variable in [
        "MEDIA_QUEUE_SLOW_MS",
        "MEDIA_QUEUE_CRASH_AT",
        "MEDIA_QUEUE_PAUSE_AT",
    ] {
        command.env_remove(variable);
    }
    command
}

/// Waits for `child`, at most `limit`: a worker that never ends (a task held for ever) fails
/// the test instead of hanging it.
fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for a worker") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a worker still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The signal `abort()` raises: how a crash point ends the worker.
const SIGABRT: i32 = 6;

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

/// One row of `claims`: a worker held a task from `claimed_ms` under a lease until
/// `lease_until_ms`, and released it at `released_ms` with `outcome` if it recorded one.
#[derive(Debug, Clone)]
struct ClaimRow {
    task: i64,
    worker: String,
    claimed_ms: i64,
    lease_until_ms: i64,
    released_ms: Option<i64>,
    outcome: Option<String>,
}

impl ClaimRow {
    /// Until when the worker held the task: its release, or else the end of its lease.
    fn held_until(&self) -> i64 {
        self.released_ms.unwrap_or(self.lease_until_ms)
    }
}

fn claims(db: &Path) -> Vec<ClaimRow> {
    let conn = open(db);
    let mut rows = conn
        .prepare(
            "SELECT task_id, worker, claimed_ms, lease_until_ms, released_ms, outcome
             FROM claims ORDER BY task_id, claim",
        )
        .unwrap();
    rows.query_map([], |row| {
        Ok(ClaimRow {
            task: row.get(0)?,
            worker: row.get(1)?,
            claimed_ms: row.get(2)?,
            lease_until_ms: row.get(3)?,
            released_ms: row.get(4)?,
            outcome: row.get(5)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The queue's invariants at any moment no worker is inside a transaction (all of them dead or
/// done, or between two transactions): every finished task has exactly as many completions as
/// released claims, and no two claims of one task were held at once.
fn assert_consistent(db: &Path) {
    let tasks = tasks(db);
    let history = completions(db);
    let claims = claims(db);
    let finished = count(&tasks, "done") + count(&tasks, "failed");
    let completed: usize = history.values().map(Vec::len).sum();
    assert_eq!(
        completed, finished,
        "a status without its completion, or the reverse: {tasks:?}\n{history:?}"
    );
    let released: Vec<_> = claims.iter().filter(|c| c.released_ms.is_some()).collect();
    assert_eq!(
        released.len(),
        completed,
        "a completion without its claim's release"
    );
    for (id, outcomes) in &history {
        let mine: Vec<_> = released.iter().filter(|c| c.task == *id).collect();
        let recorded: Vec<_> = mine.iter().filter_map(|c| c.outcome.as_deref()).collect();
        assert_eq!(
            recorded, *outcomes,
            "task {id}: claims and completions disagree"
        );
    }
    // A worker holds one task at a time: each `processing` task's current claim is another
    // worker's.
    let mut holders: Vec<&str> = tasks
        .iter()
        .filter(|(_, t)| t.status == "processing")
        .filter_map(|(id, _)| claims.iter().rev().find(|c| c.task == *id))
        .map(|c| c.worker.as_str())
        .collect();
    let processing = holders.len();
    holders.sort_unstable();
    holders.dedup();
    assert_eq!(
        holders.len(),
        processing,
        "a worker holds two tasks: {claims:?}"
    );
    for pair in claims.windows(2) {
        let (first, next) = (&pair[0], &pair[1]);
        if first.task == next.task {
            assert!(
                next.claimed_ms >= first.held_until(),
                "task {} claimed by {} while {} held it: {first:?} {next:?}",
                first.task,
                next.worker,
                first.worker
            );
        }
    }
}

/// The task `worker` held when it died, if any: its last claim, never released, on a task still
/// `processing`.
fn held_by(db: &Path, worker: &str) -> Option<i64> {
    let tasks = tasks(db);
    claims(db)
        .into_iter()
        .rev()
        .find(|c| c.worker == worker)
        .filter(|c| c.released_ms.is_none() && tasks[&c.task].status == "processing")
        .map(|c| c.task)
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

/// The tasks of an uninterrupted run over `count` seeded tasks: what every interrupted run must
/// end with.
fn reference(count: u32) -> BTreeMap<i64, Task> {
    let reference = Scratch::new(&format!("reference-{count}"));
    run(&reference.db(), &["--seed", &count.to_string(), "--work"]);
    tasks(&reference.db())
}

/// The end of every interrupted run: each task ended as in the uninterrupted run, with exactly
/// one completion, its error, attempts and hint kept.
fn assert_ended_as(db: &Path, expected: &BTreeMap<i64, Task>) {
    assert_consistent(db);
    let after = tasks(db);
    let history = completions(db);
    assert_eq!(after.len(), expected.len(), "tasks were lost or added");
    for (id, task) in &after {
        assert_eq!(
            history.get(id).map(Vec::as_slice),
            Some(std::slice::from_ref(&task.status)),
            "task {id} must have exactly one completion, matching its status"
        );
        if task.status == "failed" {
            let error = task.error.as_deref().unwrap_or_default();
            if error.starts_with(RATE_LIMITED) {
                assert_eq!(task.attempts, 3, "{task:?}");
                assert_eq!(task.retry_after_ms, Some(20), "the hint is kept: {task:?}");
            } else {
                assert_eq!(error, BAD_REQUEST, "{task:?}");
                assert_eq!(task.attempts, 1, "a 400 is not retried: {task:?}");
            }
        }
    }
    assert_eq!(&after, expected, "an interruption changed some outcome");
}

/// Crashes a worker (`abort()`, as hard as a kill) at each named point between two writes, at
/// several arrivals, restarts, and checks the database after every crash and at the end. A
/// finishing step split into two transactions fails at `status_updated` (a status without its
/// completion); a claim that does not let a dead worker's task go hangs the restart (caught by
/// `wait_at_most`).
#[test]
fn a_crash_at_every_point_between_two_writes_loses_nothing() {
    let expected = reference(12);
    // Each point is reached once per task but `attempted` (once per attempt): the arrivals
    // below reach plain, retried, rate-limited and rejected tasks.
    let points = [
        ("claimed", [1, 2, 5]),
        ("attempted", [1, 3, 6]),
        ("analyzed", [1, 2, 4]),
        ("status_updated", [1, 2, 3]),
        ("finished", [1, 3, 4]),
    ];
    let mut crashes = 0;
    for (point, arrivals) in points {
        let scratch = Scratch::new(&format!("crash-{point}"));
        let db = scratch.db();
        run(&db, &["--seed", "12"]);
        for nth in arrivals {
            let before = completions(&db).values().map(Vec::len).sum::<usize>();
            let mut child = queue(&db, &["--work", "--lease-ms", "1"])
                .env("MEDIA_QUEUE_CRASH_AT", format!("{point}@{nth}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn a worker");
            let worker = format!("worker {}", child.id());
            let status = wait_at_most(&mut child, Duration::from_secs(60));
            let mut stdout = String::new();
            if let Some(mut out) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
            }
            assert_eq!(
                status.signal(),
                Some(SIGABRT),
                "{point}@{nth} was never reached: {status}\n{stdout}"
            );
            crashes += 1;
            assert_consistent(&db);
            let now = tasks(&db);
            let after = completions(&db).values().map(Vec::len).sum::<usize>();
            let held = held_by(&db, &worker);
            if point == "finished" {
                // Committed before the crash: the outcome stays, nothing is held.
                assert_eq!(held, None, "{point}@{nth}: {now:?}");
                assert_eq!(count(&now, "processing"), 0, "{point}@{nth}: {now:?}");
                assert!(
                    after > before,
                    "{point}@{nth}: the committed outcome is gone"
                );
            } else {
                // Mid-task: the dead worker's task stays processing, under its lease, with no
                // outcome of this pass recorded.
                let id = held.unwrap_or_else(|| panic!("{point}@{nth}: no task held: {now:?}"));
                assert_eq!(count(&now, "processing"), 1, "{point}@{nth}: {now:?}");
                assert!(
                    !completions(&db).contains_key(&id),
                    "{point}@{nth}: task {id} has an outcome although its worker died first"
                );
            }
        }
        // The restarted worker takes the dead worker's task over once the lease has run out
        // and drains the queue.
        let mut child = queue(&db, &["--work", "--lease-ms", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a worker");
        let status = wait_at_most(&mut child, Duration::from_secs(60));
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut stdout);
        }
        assert!(status.success(), "{status}\n{stdout}");
        if point != "finished" {
            assert!(stdout.contains("took over #"), "{point}: {stdout}");
        }
        assert_ended_as(&db, &expected);
    }
    println!("media_queue crash points: {crashes} crashes at 5 points, all recovered");
}

#[test]
fn sigkill_at_random_points_loses_no_task_and_completes_none_twice() {
    const TASKS: u32 = 40;
    const KILLS: u32 = 40;
    let started = Instant::now();
    let expected = reference(TASKS);

    let scratch = Scratch::new("sigkill");
    let db = scratch.db();
    run(&db, &["--seed", &TASKS.to_string()]);

    let mut rng = Rng(0x5eed_0fc0_ffee_0042);
    let (mut kills, mut mid_task, mut runs) = (0u32, 0u32, 0u32);
    loop {
        runs += 1;
        // A lease of 20 ms: the next worker takes a killed worker's task over almost at once,
        // so that most kills land in a task rather than in the wait for a lease.
        let mut child = queue(&db, &["--work", "--lease-ms", "20"])
            .env("MEDIA_QUEUE_SLOW_MS", "5")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a worker");
        let worker = format!("worker {}", child.id());
        if kills == KILLS {
            // Enough: let the last worker finish the queue.
            let status = wait_at_most(&mut child, Duration::from_secs(60));
            assert!(status.success(), "the last worker failed: {status}");
            break;
        }
        // The random moment is counted from the worker's first claim, not from its start: a
        // slow start on a loaded machine must not turn the kills into kills at start-up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while claims(&db).iter().all(|c| c.worker != worker)
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.between(5, 100)));
        if let Some(status) = child.try_wait().unwrap() {
            // The worker emptied the queue before the kill came.
            assert!(status.success(), "a worker failed: {status}");
            break;
        }
        child.kill().expect("SIGKILL the worker");
        child.wait().unwrap();
        kills += 1;

        // After each kill: each `processing` task is a dead worker's (one each), and every
        // finished task has exactly one completion (status and completion commit together).
        assert_consistent(&db);
        if held_by(&db, &worker).is_some() {
            mid_task += 1;
        }
    }
    assert_ended_as(&db, &expected);
    let after = tasks(&db);
    assert!(
        count(&after, "failed") >= 2,
        "the fake API fails some tasks"
    );

    println!(
        "media_queue SIGKILL test: {TASKS} tasks, {runs} worker runs, {kills} kills, \
         {mid_task} of them mid-task, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // All kills happened (the queue outlasted them), and most landed while the worker held a
    // task: a kill in the start-up or the wait for a lease proves little.
    assert_eq!(kills, KILLS, "the queue drained before {KILLS} kills");
    assert!(
        mid_task * 2 >= kills,
        "only {mid_task} of {kills} kills landed mid-task"
    );
}

/// Four workers on one file at once, one of them crashing mid-task: every task ends once, no
/// task is held by two workers at once, and the dead worker's task is taken over after its
/// lease. A claim that ignores the lease (takes `processing` tasks at once) is caught by the
/// overlap check in `assert_consistent`.
#[test]
fn concurrent_workers_finish_every_task_once_and_never_share_a_held_task() {
    const TASKS: u32 = 48;
    const WORKERS: usize = 4;
    const LEASE: &str = "1000";
    let expected = reference(TASKS);
    let scratch = Scratch::new("concurrent");
    let db = scratch.db();
    run(&db, &["--seed", &TASKS.to_string()]);

    let started = Instant::now();
    // Each worker holds its first claim until all four hold one, so that they really run at
    // once however slowly the machine starts them, and worker 1 meets its crash point.
    let mut workers: Vec<(String, Child)> = (0..WORKERS)
        .map(|n| {
            let mut command = queue(&db, &["--work", "--lease-ms", LEASE]);
            command
                .env("MEDIA_QUEUE_SLOW_MS", "5")
                .env("MEDIA_QUEUE_PAUSE_AT", "claimed@1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if n == 1 {
                // Dies in its third attempt's aftermath, holding a task.
                command.env("MEDIA_QUEUE_CRASH_AT", "attempted@3");
            }
            let child = command.spawn().expect("spawn a worker");
            (format!("worker {}", child.id()), child)
        })
        .collect();
    let mut outputs = Vec::new();
    for (_, child) in &mut workers {
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        while !line.starts_with("paused at claimed@1") {
            line.clear();
            let read = out.read_line(&mut line).expect("read a worker");
            assert!(read > 0, "a worker ended before its first claim");
        }
        outputs.push(out);
    }
    for (_, child) in &mut workers {
        // Dropping stdin after the line also lets a worker that pauses again go on.
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(b"\n").expect("release a worker");
    }
    // Their output is read to the end in the background, so that no pipe fills up.
    let drains: Vec<_> = outputs
        .into_iter()
        .map(|mut out| {
            std::thread::spawn(move || {
                let _ = std::io::Read::read_to_end(&mut out, &mut Vec::new());
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for (_, child) in &mut workers {
        statuses.push(wait_at_most(child, Duration::from_secs(120)));
    }
    let elapsed = started.elapsed();
    for drain in drains {
        let _ = drain.join();
    }
    for (n, status) in statuses.iter().enumerate() {
        if n == 1 {
            assert_eq!(status.signal(), Some(SIGABRT), "worker 1 crashed: {status}");
        } else {
            assert!(status.success(), "worker {n}: {status}");
        }
    }

    assert_ended_as(&db, &expected);
    let claims = claims(&db);
    // The dead worker's task: its claim never released, then claimed again after its lease.
    let dead = &workers[1].0;
    let abandoned: Vec<_> = claims
        .iter()
        .filter(|c| &c.worker == dead && c.released_ms.is_none())
        .collect();
    assert_eq!(
        abandoned.len(),
        1,
        "the crashed worker held one task: {claims:?}"
    );
    let taken_over = claims
        .iter()
        .find(|c| c.task == abandoned[0].task && c.released_ms.is_some())
        .expect("the abandoned task was finished by another worker");
    assert!(taken_over.claimed_ms >= abandoned[0].lease_until_ms);
    // They really ran at once: every live worker finished tasks, and some claims overlapped.
    for (n, (worker, _)) in workers.iter().enumerate() {
        let finished = claims
            .iter()
            .filter(|c| &c.worker == worker && c.released_ms.is_some())
            .count();
        assert!(n == 1 || finished > 0, "{worker} finished nothing");
    }
    let most_at_once = claims
        .iter()
        .map(|c| {
            claims
                .iter()
                .filter(|o| o.claimed_ms <= c.claimed_ms && c.claimed_ms < o.held_until())
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(most_at_once >= 2, "the workers never held tasks at once");
    println!(
        "media_queue concurrent test: {TASKS} tasks, {WORKERS} workers (one crashed), \
         {} claims, at most {most_at_once} held at once, {:.1}s",
        claims.len(),
        elapsed.as_secs_f64()
    );
}

/// A live worker held past its lease (paused after `analyze`, before it records the outcome):
/// another worker takes the task over and records it; the first worker's outcome is refused.
/// With the claim guard removed from the finishing update, the task gets two completions.
#[test]
fn a_worker_that_outlived_its_lease_cannot_record_its_outcome() {
    let scratch = Scratch::new("lease");
    let db = scratch.db();
    run(&db, &["--seed", "1"]);

    let mut first = queue(&db, &["--work", "--lease-ms", "300"])
        .env("MEDIA_QUEUE_PAUSE_AT", "analyzed")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the first worker");
    let first_worker = format!("worker {}", first.id());
    let mut first_out = BufReader::new(first.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    while !line.starts_with("paused at analyzed@1") {
        line.clear();
        let read = first_out
            .read_line(&mut line)
            .expect("read the first worker");
        assert!(read > 0, "the first worker ended without pausing");
    }

    // The second worker waits for the lease to run out, takes the task over, records it.
    let second = run(&db, &["--work", "--lease-ms", "300"]);
    assert!(second.contains("took over #1 image-0001.jpg"), "{second}");
    assert!(second.contains("done    #1 image-0001.jpg"), "{second}");

    // Released, the first worker finds its claim gone and records nothing.
    first
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"\n")
        .expect("resume the first worker");
    let status = wait_at_most(&mut first, Duration::from_secs(30));
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut first_out, &mut rest);
    assert!(status.success(), "{status}\n{rest}");
    assert!(rest.contains("lost    #1 image-0001.jpg"), "{rest}");

    assert_consistent(&db);
    assert_eq!(completions(&db)[&1], ["done"], "recorded once");
    let claims = claims(&db);
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert_eq!(claims[0].worker, first_worker);
    assert_eq!(
        claims[0].released_ms, None,
        "the first claim ended with its lease"
    );
    assert_eq!(claims[1].outcome.as_deref(), Some("done"));
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

/// `cargo run --example media_queue` with no arguments, as the README's first lines offer it:
/// the whole story in a temporary directory, with the outcomes the README tells.
#[test]
fn the_demo_without_arguments_tells_the_story_the_readme_tells() {
    let output = Command::new(binary())
        .stderr(Stdio::null())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", output.status);
    // First pass: the 400 and both rate-limited images fail; second pass: the rate-limited
    // images pass after one more 429, the invalid image fails again.
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("tasks: "))
        .collect();
    assert_eq!(
        summaries,
        [
            "tasks: 9 done, 3 failed; completions recorded: 12",
            "tasks: 11 done, 1 failed; completions recorded: 15",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("requeued 3 failed task(s)"), "{stdout}");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("A media queue in "))
        .and_then(|l| l.strip_suffix(" (removed at the end)."))
        .unwrap_or_else(|| panic!("no database path in:\n{stdout}"));
    assert!(!Path::new(dir).exists(), "{dir} was not removed");
}
