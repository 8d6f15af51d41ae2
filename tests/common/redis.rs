//! A real `redis-server` for the tests of `resilience::redis`, on a free loopback port, and a
//! capture of that module's events. Without `redis-server` installed the tests are skipped
//! (or fail, with `RESILIENCE_REQUIRE_REDIS` set, as CI sets it).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::Record;

/// How long a server may take to answer its first PING.
const STARTUP: Duration = Duration::from_secs(5);

/// A `redis-server` of this test alone: no persistence, loopback only. Killed when dropped.
pub struct RedisServer {
    program: PathBuf,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

/// A server started with the default settings, or `None` (the test returns early) when
/// `redis-server` is not installed.
pub fn redis_server() -> Option<RedisServer> {
    redis_server_with(&[])
}

/// [`redis_server`] with more command-line settings (`["--requirepass", "secret"]`).
pub fn redis_server_with(args: &[&str]) -> Option<RedisServer> {
    let Some(program) = find_redis_server() else {
        if std::env::var_os("RESILIENCE_REQUIRE_REDIS").is_some() {
            panic!("redis-server not found: install Debian's redis-server (.ci/run does)");
        }
        eprintln!("skipped: redis-server not found (set RESILIENCE_REQUIRE_REDIS=1 to require it)");
        return None;
    };
    let args = args.iter().map(|arg| (*arg).to_owned()).collect();
    Some(RedisServer::start(program, args))
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

impl RedisServer {
    fn start(program: PathBuf, args: Vec<String>) -> Self {
        // A port found free may be taken before the server binds it: then the server exits,
        // and another port is tried.
        for _ in 0..5 {
            let mut server = Self {
                program: program.clone(),
                port: free_port(),
                args: args.clone(),
                child: None,
            };
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 tries");
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and waits for it to exit: Redis stops answering at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen server is killed all the same: SIGKILL needs no running process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server's process (`SIGSTOP`) without closing its connections: Redis takes
    /// the calls and never answers, as a server that hangs does.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a [frozen](Self::freeze) server run again (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is not running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("cannot run `kill`");
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Starts the server again on the same port, with none of its data, and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        // The port was this server's a moment ago; rebinding it may take a few tries.
        while !self.spawn_and_wait() {
            assert!(
                started.elapsed() < STARTUP,
                "redis-server did not restart on port {}",
                self.port
            );
        }
    }

    /// Spawns the server and waits for its PONG: false if it exited first (the port was
    /// taken), and it is not running then.
    fn spawn_and_wait(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new(&self.program)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.program.display()));
        let child = self.child.insert(child);
        let started = Instant::now();
        while started.elapsed() < STARTUP {
            if answers_ping(self.port) {
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        panic!(
            "{} did not answer PING on port {} within {STARTUP:?}",
            self.program.display(),
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("program", &Path::new(&self.program))
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish()
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("no free port on the loopback");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// Whether a server on `port` answers PING (a password-protected one answers `-NOAUTH`,
/// which says it is up too).
fn answers_ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(100)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 64];
    match stream.read(&mut answer) {
        Ok(read) => answer[..read].starts_with(b"+PONG") || answer[..read].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

/// The events of `resilience::redis` so far, from every thread.
static EVENTS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

/// The events of target `resilience::redis` whose `prefix` field is `prefix` (each test uses
/// its own prefix, so tests running in parallel do not see each other's). Records from the
/// first call on: call it at the start of the test. It installs the global subscriber, so it
/// does not combine with `capture()` in one test binary.
pub fn redis_events(prefix: &str) -> Vec<Record> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let installed =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Redis));
        assert!(
            installed.is_ok(),
            "another global subscriber was installed first"
        );
    });
    EVENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|record| record.field("prefix") == Some(prefix))
        .cloned()
        .collect()
}

/// Records the events of `resilience::redis`.
struct Redis;

impl<S: Subscriber> Layer<S> for Redis {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "resilience::redis" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        EVENTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Record {
                level: *event.metadata().level(),
                message,
                fields: fields.0,
                target: event.metadata().target().to_owned(),
                span: None,
            });
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}
