//! A scripted, fault-injecting HTTP/1.1 server on `127.0.0.1`, for the tests and examples of
//! `resilience`.
//!
//! Each connection carries one request and gets the next [`Fault`] of the script: an answer
//! (with `Connection: close`), a stall, or a reset at an exact point. HTTP is written by hand
//! on tokio's `TcpListener` so that resets and stalls happen exactly where scripted. When the
//! script runs out, its last entry answers every further request. [`FaultServer::gemini`]
//! serves a fake Gemini `generateContent` instead, with faults at a seeded rate and answers
//! scripted per image; [`FaultServer::respond_with`] answers with what a closure returns.
//!
//! The server keeps a log: each request as received ([`FaultServer::recorded`]) and what it
//! met, and when ([`FaultServer::served`]), so a test can check the failure each attempt of
//! its client saw against the fault the server really served, and measure a wait from the
//! moment the header that asked for it was written.
//!
//! ```
//! use fault_server::{Fault, FaultKind, FaultServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FaultServer::start([
//!     Fault::gemini_429("0.4s"),
//!     Fault::status(503, "busy").with_header("Retry-After", "1"),
//!     Fault::ok("hello"),
//! ])
//! .await?;
//! let client = reqwest::Client::builder().no_proxy().build()?;
//!
//! let first = client.get(server.url("/v1/thing?alt=json")).send().await?;
//! assert_eq!(first.status(), 429);
//! let second = client.get(server.url("/v1/thing")).send().await?;
//! assert_eq!(second.headers()["retry-after"], "1");
//! let third = client.get(server.url("/v1/thing")).send().await?;
//! assert_eq!(third.text().await?, "hello");
//!
//! assert_eq!(server.requests(), 3);
//! assert_eq!(server.recorded()[0].query.as_deref(), Some("alt=json"));
//! assert_eq!(
//!     server.faults(),
//!     [FaultKind::Respond(429), FaultKind::Respond(503), FaultKind::Respond(200)]
//! );
//! let served = server.served();
//! assert!(served[1].answered.is_some_and(|at| at <= served[2].received));
//! # Ok(())
//! # }
//! ```
//!
//! Dropping the [`FaultServer`] stops it: the accept loop and every open connection end.
//! Nothing here panics on what a client sends; a malformed request gets a `400` (or `413`,
//! `431`, `501`) and its connection closes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fault;
mod gemini;
mod wire;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use fault::{Fault, FaultKind, http_date};
pub use gemini::{FAKE_RETRY_DELAY, FakeGemini, GeminiFaults};

use wire::BadRequest;

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query: `/v1beta/models/m:generateContent`.
    pub path: String,
    /// What followed the `?`, if anything: `key=...&alt=json`.
    pub query: Option<String>,
    /// Header names and values, in the order and spelling received (values trimmed).
    pub headers: Vec<(String, String)>,
    /// The body (invalid UTF-8 replaced by U+FFFD).
    pub body: String,
    /// When the request head was complete: the gap between two requests is the client's
    /// wait, without the time of its own work.
    pub received: Instant,
}

impl Recorded {
    /// The first value of header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server did with one request, and when: one entry of [`FaultServer::served`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The fault the request met.
    pub kind: FaultKind,
    /// When the request head was complete: the request's [`Recorded::received`].
    pub received: Instant,
    /// When the server began to write its answer: a [`Fault::Respond`], or the head of a
    /// [`Fault::ResetMidBody`]. Taken before the first byte is written, so no client can have
    /// read the head (and a `Retry-After` in it) earlier: a wait that the header asks for is
    /// measured from here, whatever the client's own set-up cost. `None` for a stall and a
    /// reset before the response, which write nothing.
    pub answered: Option<Instant>,
}

/// A running server on `127.0.0.1`; dropping it stops it.
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    responder: Mutex<Responder>,
    log: Mutex<Log>,
}

/// The two logs, in step: entry `i` of each is the `i`th request.
#[derive(Debug, Default)]
struct Log {
    recorded: Vec<Recorded>,
    served: Vec<Served>,
}

/// A closure that answers requests ([`FaultServer::respond_with`]).
type Respond = Box<dyn FnMut(&Recorded) -> Fault + Send>;

enum Responder {
    Script { queue: VecDeque<Fault>, last: Fault },
    Gemini(FakeGemini),
    Custom(Respond),
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Responder::Script { queue, last } => f
                .debug_struct("Script")
                .field("queue", queue)
                .field("last", last)
                .finish(),
            Responder::Gemini(fake) => f.debug_tuple("Gemini").field(fake).finish(),
            // A closure has nothing to show.
            Responder::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Responder {
    fn next(&mut self, request: &Recorded) -> Fault {
        match self {
            Responder::Script { queue, last } => {
                if let Some(next) = queue.pop_front() {
                    *last = next;
                }
                last.clone()
            }
            Responder::Gemini(fake) => fake.answer(request),
            Responder::Custom(respond) => respond(request),
        }
    }
}

impl FaultServer {
    /// Starts a server on `127.0.0.1` (a free port) that answers the `n`th request with the
    /// `n`th fault of `script`, and every request after the script with its last fault (or
    /// `200 ok` if the script is empty).
    pub async fn start(script: impl IntoIterator<Item = Fault>) -> io::Result<FaultServer> {
        let queue: VecDeque<Fault> = script.into_iter().collect();
        let last = Fault::ok("ok");
        Self::serve(Responder::Script { queue, last }).await
    }

    /// Starts a fake Gemini API (see [`FakeGemini`]): with faults at random as
    /// [`GeminiFaults`] says, or with a [`FakeGemini`] that also has scripts per image.
    pub async fn gemini(fake: impl Into<FakeGemini>) -> io::Result<FaultServer> {
        Self::serve(Responder::Gemini(fake.into())).await
    }

    /// Starts a server that answers each request with what `respond` returns for it. It is
    /// called once per well-formed request, one call at a time, in the order of
    /// [`recorded`](FaultServer::recorded), just before the answer is written: for answers
    /// that depend on that moment, such as a `Retry-After` date a set time ahead of it.
    ///
    /// ```
    /// use fault_server::{Fault, FaultServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FaultServer::respond_with(|request| Fault::ok(request.path.clone())).await?;
    /// let client = reqwest::Client::builder().no_proxy().build()?;
    /// let answer = client.get(server.url("/echo")).send().await?;
    /// assert_eq!(answer.text().await?, "/echo");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn respond_with(
        respond: impl FnMut(&Recorded) -> Fault + Send + 'static,
    ) -> io::Result<FaultServer> {
        Self::serve(Responder::Custom(Box::new(respond))).await
    }

    async fn serve(responder: Responder) -> io::Result<FaultServer> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            responder: Mutex::new(responder),
            log: Mutex::new(Log::default()),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultServer { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT/path` (a leading `/` on `path` is optional; it may hold a query).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url(), path.trim_start_matches('/'))
    }

    /// `http://127.0.0.1:PORT`, without a trailing `/`: a base URL for clients that append
    /// their own paths.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many well-formed requests arrived (each met one fault).
    pub fn requests(&self) -> usize {
        lock(&self.shared.log).recorded.len()
    }

    /// The well-formed requests received so far, in the order they were read.
    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.shared.log).recorded.clone()
    }

    /// What each request of [`recorded`](FaultServer::recorded) met, in the same order, and
    /// when its answer began.
    pub fn served(&self) -> Vec<Served> {
        lock(&self.shared.log).served.clone()
    }

    /// The fault each request met, in order: [`served`](FaultServer::served) without the times.
    pub fn faults(&self) -> Vec<FaultKind> {
        lock(&self.shared.log)
            .served
            .iter()
            .map(|served| served.kind)
            .collect()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        // The connections live in a `JoinSet` owned by the task: aborting it ends them all.
        self.task.abort();
    }
}

/// A `http://127.0.0.1:PORT` URL (no trailing `/`) where nothing listens: connecting to it
/// is refused. The port was free a moment ago and is not bound again by this process.
pub async fn refused_url() -> String {
    match TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await {
        Ok(listener) => match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            // Port 1 (tcpmux) is closed on any machine that runs these tests.
            Err(_) => "http://127.0.0.1:1".to_owned(),
        },
        Err(_) => "http://127.0.0.1:1".to_owned(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Reap finished connections so a long run does not keep their results.
                while connections.try_join_next().is_some() {}
                connections.spawn(handle(stream, Arc::clone(&shared)));
            }
            // Out of file descriptors and the like: wait instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn handle(mut stream: TcpStream, shared: Arc<Shared>) {
    // Small writes (the 10 bytes of a reset mid-body) must leave at once.
    let _ = stream.set_nodelay(true);
    let request = match wire::read_request(&mut stream).await {
        Ok(request) => request,
        Err(BadRequest::Gone) => return,
        Err(BadRequest::Malformed(status, why)) => {
            wire::send(&mut stream, &wire::answer(status, &[], why)).await;
            return;
        }
    };
    let (fault, index) = {
        // Logged under the responder's lock, so that the log's order is the order in which
        // the faults were handed out, even when requests arrive at once.
        let mut responder = lock(&shared.responder);
        let fault = responder.next(&request);
        let mut log = lock(&shared.log);
        let index = log.served.len();
        log.served.push(Served {
            kind: fault.kind(),
            received: request.received,
            answered: None,
        });
        log.recorded.push(request);
        (fault, index)
    };
    // Before the first byte: see `Served::answered`.
    let answering = || {
        let now = Instant::now();
        if let Some(served) = lock(&shared.log).served.get_mut(index) {
            served.answered = Some(now);
        }
    };

    match fault {
        Fault::Respond {
            status,
            headers,
            body,
        } => {
            let bytes = wire::answer(status, &headers, &body);
            answering();
            wire::send(&mut stream, &bytes).await;
        }
        Fault::Stall(duration) => tokio::time::sleep(duration).await,
        Fault::ResetMidBody => {
            use tokio::io::AsyncWriteExt;
            answering();
            if stream.write_all(&wire::truncated_answer()).await.is_ok() {
                let _ = stream.flush().await;
                // Lets the client read the head first, so it fails inside the body.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            reset(stream);
        }
        Fault::ResetBeforeResponse => reset(stream),
    }
}

/// Closes with a TCP RST instead of a FIN: `SO_LINGER` 0, then drop.
fn reset(stream: TcpStream) {
    // If the option cannot be set, the close is a FIN: still a failed request for the client.
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

    /// Sends one request on a raw connection; returns the bytes received until the
    /// connection ended, and whether it ended with an error (a reset) rather than a FIN.
    async fn exchange(server: &FaultServer) -> (Vec<u8>, bool) {
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
        stream.write_all(GET).await.expect("write");
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let read_all = async {
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) => return false,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(_) => return true,
                }
            }
        };
        let reset = tokio::time::timeout(Duration::from_secs(5), read_all)
            .await
            .expect("the server ends the connection");
        (got, reset)
    }

    #[tokio::test]
    async fn the_script_is_followed_then_its_last_entry_repeats() {
        let server = FaultServer::start([Fault::status(503, "a"), Fault::ok("b")])
            .await
            .expect("start");
        for expected in ["HTTP/1.1 503 ", "HTTP/1.1 200 ", "HTTP/1.1 200 "] {
            let (got, reset) = exchange(&server).await;
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with(expected) && !reset, "{text}");
            assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        }
        assert_eq!(server.requests(), 3);
        let empty = FaultServer::start([]).await.expect("start");
        let (got, _) = exchange(&empty).await;
        assert!(got.ends_with(b"\r\n\r\nok"));
    }

    #[tokio::test]
    async fn resets_happen_where_scripted() {
        let server = FaultServer::start([Fault::ResetMidBody, Fault::ResetBeforeResponse])
            .await
            .expect("start");
        let (got, reset) = exchange(&server).await;
        let text = String::from_utf8_lossy(&got);
        assert!(reset, "a reset, not a close");
        assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n{\"candidat"),
            "10 bytes of body: {text}"
        );
        let (got, reset) = exchange(&server).await;
        assert!(reset && got.is_empty(), "{got:?}");
    }

    #[tokio::test]
    async fn the_log_says_what_each_request_met_and_when_its_answer_began() {
        let stall = Duration::from_millis(10);
        let server = FaultServer::start([
            Fault::status(503, "a"),
            Fault::ResetMidBody,
            Fault::ResetBeforeResponse,
            Fault::Stall(stall),
        ])
        .await
        .expect("start");
        for _ in 0..4 {
            let before = Instant::now();
            exchange(&server).await;
            let after = Instant::now();
            let served = server.served();
            let last = served.last().expect("logged");
            assert!(before <= last.received && last.received <= after);
            if let Some(answered) = last.answered {
                assert!(last.received <= answered && answered <= after);
            }
        }
        assert_eq!(
            server.faults(),
            [
                FaultKind::Respond(503),
                FaultKind::ResetMidBody,
                FaultKind::ResetBeforeResponse,
                FaultKind::Stall(stall),
            ]
        );
        let answered: Vec<bool> = server
            .served()
            .iter()
            .map(|s| s.answered.is_some())
            .collect();
        assert_eq!(
            answered,
            [true, true, false, false],
            "only what writes an answer"
        );
        let received: Vec<Instant> = server.recorded().iter().map(|r| r.received).collect();
        let served: Vec<Instant> = server.served().iter().map(|s| s.received).collect();
        assert_eq!(received, served, "the two logs are in step");
    }

    #[tokio::test]
    async fn respond_with_answers_what_the_closure_returns() {
        let mut count = 0;
        let server = FaultServer::respond_with(move |request| {
            count += 1;
            match count {
                1 => Fault::ResetBeforeResponse,
                _ => Fault::ok(format!("{count} {}", request.path)),
            }
        })
        .await
        .expect("start");
        let (got, reset) = exchange(&server).await;
        assert!(reset && got.is_empty(), "{got:?}");
        let (got, _) = exchange(&server).await;
        assert!(
            got.ends_with(b"\r\n\r\n2 /x"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(
            server.faults(),
            [FaultKind::ResetBeforeResponse, FaultKind::Respond(200)]
        );
    }

    #[tokio::test]
    async fn dropping_the_server_ends_its_listener_and_its_connections() {
        let server = FaultServer::start([Fault::Stall(Duration::from_secs(60))])
            .await
            .expect("start");
        let addr = server.addr();
        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        stalled.write_all(GET).await.expect("write");
        // Bounded: the request is read within a few turns of the scheduler.
        for _ in 0..1000 {
            if server.requests() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(server.requests(), 1);
        drop(server);
        // The stall of 60 s ends now, not in a minute.
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest));
        assert!(ended.await.is_ok(), "the stalled connection was closed");
        assert!(TcpStream::connect(addr).await.is_err(), "nothing listens");
    }

    #[tokio::test]
    async fn urls_point_at_the_server() {
        let server = FaultServer::start([]).await.expect("start");
        let port = server.addr().port();
        assert_eq!(
            server.url("/a?b=c"),
            format!("http://127.0.0.1:{port}/a?b=c")
        );
        assert_eq!(server.url("a"), format!("http://127.0.0.1:{port}/a"));
        assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}"));
        let refused = refused_url().await;
        let addr = refused.trim_start_matches("http://");
        assert!(TcpStream::connect(addr).await.is_err(), "{refused}");
    }
}
