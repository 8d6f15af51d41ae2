//! `#[retry_with_backoff]` with the clients beyond async reqwest: reqwest's blocking client, ureq
//! 3 and ureq 2 against the fault-injecting HTTP server on 127.0.0.1, and SQLite through
//! rusqlite on a real file locked by a second connection.
//!
//! The functions are sync, so their waits run on the thread's virtual clock
//! (`common::on_virtual_clock`): a `Retry-After: 2` is waited in no real time, and the log
//! lines and the clock say how long it was. The server runs on a tokio runtime of its own
//! (a blocking client must not run inside one).

mod common;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use fault_server::{Fault, FaultServer, refused_url};
use resilience::classify::explain;
use resilience::http::{HttpError, blocking_error_for_status, ureq_error_for_status};
use resilience::{Classify, MediaProcessingError, Rule, Verdict, retry_with_backoff};
use rusqlite::Connection;

/// A fault server on a runtime of its own, which lives as long as the server.
struct Server {
    server: FaultServer,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(script: impl IntoIterator<Item = Fault>) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let server = runtime
            .block_on(FaultServer::start(script))
            .expect("a fault server");
        Server {
            server,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        self.server.url("/v1/models")
    }

    fn requests(&self) -> usize {
        self.server.requests()
    }
}

fn refused() -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    format!("{}/v1/models", runtime.block_on(refused_url()))
}

/// The error of the HTTP client functions: a status answer, or what the client met.
#[derive(Debug, thiserror::Error, Classify)]
enum ApiError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("{0}")]
    Reqwest(#[from] reqwest::Error),
    #[error("{0}")]
    Ureq(#[from] ureq::Error),
    #[error("{0}")]
    Ureq2(#[from] Box<ureq2::Error>),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

impl ApiError {
    #[track_caller]
    fn gave_up(&self) -> &MediaProcessingError {
        match self {
            ApiError::GaveUp(e) => e,
            other => panic!("not a give-up: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// reqwest's blocking client

#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0)]
fn blocking_fetch(client: &reqwest::blocking::Client, url: &str) -> Result<String, ApiError> {
    let response = blocking_error_for_status(client.get(url).send()?)?;
    Ok(response.text()?)
}

fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}

/// Before `blocking_error_for_status`, a blocking 429 went through reqwest's own
/// `error_for_status`, which drops the headers: the wait was the backoff's 10 ms.
#[test]
fn a_blocking_429_waits_for_its_retry_after() {
    let (logs, _guard) = common::capture();
    let server = Server::start([
        Fault::status(429, "slow down").with_header("Retry-After", "2"),
        Fault::ok("ok"),
    ]);
    let client = blocking_client();
    let (text, clock) = common::on_virtual_clock(|| blocking_fetch(&client, &server.url()));
    assert_eq!(text.expect("the second answer"), "ok");
    assert_eq!(server.requests(), 2);
    assert_eq!(logs.waits_ms(), [2000]);
    assert_eq!(clock.elapsed(), Duration::from_secs(2));
    assert_eq!(
        logs.messages()[0],
        "Retry 1/3 after HTTP 429: slow down: waiting 2.0s"
    );
}

#[test]
fn a_blocking_reset_is_retried_as_a_reset() {
    let (logs, _guard) = common::capture();
    let server = Server::start([Fault::ResetBeforeResponse, Fault::ok("ok")]);
    let client = blocking_client();
    let (text, _) = common::on_virtual_clock(|| blocking_fetch(&client, &server.url()));
    assert_eq!(text.expect("the second answer"), "ok");
    assert_eq!(server.requests(), 2);
    let retry = &logs.messages()[0];
    assert!(
        retry.starts_with("Retry 1/3 after error sending request"),
        "{retry}"
    );
    assert!(
        !retry.contains("timed out"),
        "a reset, not a timeout: {retry}"
    );
}

// ---------------------------------------------------------------------------------------------
// ureq 3

fn ureq_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0)]
fn ureq_fetch(agent: &ureq::Agent, url: &str) -> Result<String, ApiError> {
    let response = ureq_error_for_status(agent.get(url).call()?)?;
    Ok(response.into_body().read_to_string()?)
}

/// `Result<_, ureq::Error>` itself: ureq's own status errors, and the give-up as
/// `ureq::Error::Other`.
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0)]
fn ureq_plain(url: &str) -> Result<String, ureq::Error> {
    ureq::get(url).call()?.into_body().read_to_string()
}

#[test]
fn a_ureq_503_waits_for_its_retry_after() {
    let (logs, _guard) = common::capture();
    let server = Server::start([
        Fault::status(503, "maintenance").with_header("Retry-After", "2"),
        Fault::ok("ok"),
    ]);
    let (text, clock) = common::on_virtual_clock(|| ureq_fetch(&ureq_agent(), &server.url()));
    assert_eq!(text.expect("the second answer"), "ok");
    assert_eq!(server.requests(), 2);
    assert_eq!(logs.waits_ms(), [2000]);
    assert_eq!(clock.elapsed(), Duration::from_secs(2));
}

/// ureq 3's error has no `source()`: a peer that hangs up was not retried before the rule read
/// the variant.
#[test]
fn a_ureq_peer_that_hangs_up_is_retried() {
    let (logs, _guard) = common::capture();
    let server = Server::start([Fault::ResetBeforeResponse, Fault::ok("ok")]);
    let (text, _) = common::on_virtual_clock(|| ureq_fetch(&ureq_agent(), &server.url()));
    assert_eq!(text.expect("the second answer"), "ok");
    assert_eq!(server.requests(), 2);
    let retry = &logs.messages()[0];
    assert!(retry.starts_with("Retry 1/3 after io: "), "{retry}");

    // What the client met, outside the attribute: an I/O error inside ureq's, by its kind.
    let reset_server = Server::start([Fault::ResetBeforeResponse]);
    let met = ureq_agent()
        .get(&reset_server.url())
        .call()
        .expect_err("reset");
    let ureq::Error::Io(io) = &met else {
        panic!("not an I/O error: {met:?}");
    };
    assert!(
        matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{io:?}"
    );
    let decided = explain(&met);
    assert_eq!(
        (decided.verdict, decided.rule),
        (Verdict::Retryable, Rule::KnownType)
    );
}

#[test]
fn a_refused_ureq_connection_is_retried_then_given_up() {
    let url = refused();
    let (error, _) = common::on_virtual_clock(|| ureq_fetch(&ureq_agent(), &url));
    let error = error.expect_err("nothing listens");
    let gave_up = error.gave_up();
    assert_eq!(gave_up.attempts(), 3);
    assert!(
        matches!(
            gave_up.last_error::<ApiError>(),
            Some(ApiError::Ureq(
                ureq::Error::ConnectionFailed | ureq::Error::Io(_)
            ))
        ),
        "{gave_up:?}"
    );
}

#[test]
fn ureq_s_own_status_error_is_retried_and_the_give_up_is_a_ureq_error() {
    let server = Server::start([Fault::status(503, "busy")]);
    let (error, _) = common::on_virtual_clock(|| ureq_plain(&server.url()));
    let error = error.expect_err("always busy");
    assert_eq!(server.requests(), 3);
    let ureq::Error::Other(boxed) = &error else {
        panic!("not the give-up: {error:?}");
    };
    let gave_up = boxed
        .downcast_ref::<MediaProcessingError>()
        .expect("the give-up error");
    assert_eq!(gave_up.attempts(), 3);
    // ureq's own `Display` of `Other`.
    assert_eq!(
        error.to_string(),
        "other: Failed after 3 retries: http status: 503",
    );
    assert_eq!(explain(&error).rule, Rule::InnerGiveUp);
}

// ---------------------------------------------------------------------------------------------
// ureq 2

#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0)]
fn ureq2_fetch(url: &str) -> Result<String, ApiError> {
    let response = ureq2::get(url).call().map_err(Box::new)?;
    Ok(response.into_string()?)
}

/// ureq 2 keeps the response in its status error: the `Retry-After` header is the hint.
#[test]
fn a_ureq2_429_waits_for_its_retry_after() {
    let (logs, _guard) = common::capture();
    let server = Server::start([
        Fault::status(429, "slow down").with_header("Retry-After", "2"),
        Fault::ok("ok"),
    ]);
    let (text, clock) = common::on_virtual_clock(|| ureq2_fetch(&server.url()));
    assert_eq!(text.expect("the second answer"), "ok");
    assert_eq!(server.requests(), 2);
    assert_eq!(logs.waits_ms(), [2000]);
    assert_eq!(clock.elapsed(), Duration::from_secs(2));
}

#[test]
fn a_ureq2_400_is_not_retried_and_a_reset_is() {
    let server = Server::start([Fault::status(400, "bad model name")]);
    let (error, _) = common::on_virtual_clock(|| ureq2_fetch(&server.url()));
    let error = error.expect_err("a bad request");
    assert_eq!(server.requests(), 1);
    assert!(matches!(&error, ApiError::Ureq2(e) if matches!(**e, ureq2::Error::Status(400, _))));

    let server = Server::start([Fault::ResetBeforeResponse, Fault::ok("ok")]);
    let (text, _) = common::on_virtual_clock(|| ureq2_fetch(&server.url()));
    assert_eq!(text.expect("the second answer"), "ok");
    assert_eq!(server.requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[derive(Debug, thiserror::Error, Classify)]
enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

/// Inserts a row. On its second attempt, the other connection's write transaction ends (the
/// holder is dropped), as a competing writer's would.
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0)]
fn insert(
    conn: &Connection,
    holder: &RefCell<Option<Connection>>,
    attempts: &Cell<u32>,
    image: &str,
) -> Result<usize, DbError> {
    attempts.set(attempts.get() + 1);
    if attempts.get() == 2 {
        holder.borrow_mut().take();
    }
    Ok(conn.execute("INSERT INTO tasks (image) VALUES (?1)", [image])?)
}

struct Db {
    _dir: tempdir::Dir,
    path: std::path::PathBuf,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn database(test: &str) -> Db {
    let dir =
        std::env::temp_dir().join(format!("resilience-clients-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join("tasks.db");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE tasks (image TEXT NOT NULL UNIQUE);",
    )
    .expect("schema");
    Db {
        _dir: tempdir::Dir(dir),
        path,
    }
}

/// A second connection holding a write transaction: `database is locked` for everyone else.
fn lock(db: &Db) -> Connection {
    let holder = Connection::open(&db.path).expect("open");
    holder
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO tasks (image) VALUES ('held.jpg');")
        .expect("hold the write lock");
    holder
}

/// Before the SQLite rule, `database is locked` came back at once: "no rule calls it
/// retryable".
#[test]
fn a_locked_sqlite_file_is_retried_until_the_other_writer_is_done() {
    let (logs, _guard) = common::capture();
    let db = database("locked");
    let holder = RefCell::new(Some(lock(&db)));
    let conn = Connection::open(&db.path).expect("open");
    // No busy timeout: SQLite answers SQLITE_BUSY at once, and the retry does the waiting.
    conn.busy_timeout(Duration::ZERO).expect("busy timeout");
    let attempts = Cell::new(0);
    let (inserted, _) = common::on_virtual_clock(|| insert(&conn, &holder, &attempts, "beach.jpg"));
    assert_eq!(inserted.expect("the second attempt"), 1);
    assert_eq!(attempts.get(), 2);
    assert_eq!(
        logs.messages(),
        [
            "Retry 1/3 after database is locked: Error code 5: The database file is locked: \
             waiting 0.0s",
            "Success on attempt 2"
        ]
    );
    // The held transaction was rolled back with its connection; only this row is there.
    let rows: u32 = conn
        .query_row("SELECT count(*) FROM tasks", [], |row| row.get(0))
        .expect("count");
    assert_eq!(rows, 1);
}

#[test]
fn a_sqlite_constraint_is_not_retried() {
    let (logs, _guard) = common::capture();
    let db = database("constraint");
    let conn = Connection::open(&db.path).expect("open");
    let holder = RefCell::new(None);
    let attempts = Cell::new(0);
    common::on_virtual_clock(|| insert(&conn, &holder, &attempts, "beach.jpg"))
        .0
        .expect("the first insert");
    attempts.set(0);
    let (error, _) = common::on_virtual_clock(|| insert(&conn, &holder, &attempts, "beach.jpg"));
    let error = error.expect_err("a duplicate");
    assert_eq!(attempts.get(), 1);
    assert!(
        matches!(error, DbError::Sqlite(_)),
        "returned unchanged: {error:?}"
    );
    let messages = logs.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with("Not retrying: UNIQUE constraint failed")
            && messages[0].ends_with("(decided by the error's type)"),
        "{messages:?}"
    );
}
