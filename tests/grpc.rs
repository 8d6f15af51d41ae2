//! `#[retry_with_backoff]` on gRPC calls, against a real tonic server on 127.0.0.1 that the
//! tests start: the `grpc.health.v1.Health` service (its generated code comes with
//! `tonic-health`, so no `protoc` is needed), answering each request with the next step of a
//! script. Between client and server sits a TCP relay that can reset every open connection, for
//! a connection dropped in the middle of a stream.
//!
//! Real sockets run on real time (tokio's paused clock would fire the client's deadline at
//! once), so the backoff is tiny (`base_delay = 0.01`) and only the server's own hints, whose
//! waits are under test, take tenths of a second. Each test asserts what the server counted,
//! the waits the log lines announced, and the error the caller got.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use resilience::classify::explain;
use resilience::{Classify, MediaProcessingError, Rule, Verdict, retry_with_backoff};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_types::{ErrorDetails, QuotaViolation, StatusExt};
use tracing::Level;

// ---------------------------------------------------------------------------------------------
// The scripted server

/// What the server does with one request.
#[derive(Clone, Copy)]
enum Step {
    /// Answers `SERVING` (on `Watch`: `SERVING`, then `NOT_SERVING`, then ends the stream).
    Serve,
    /// Fails with the status this makes (a `Status` is not `Clone`).
    Fail(fn() -> Status),
    /// Answers after this long: past the client's deadline.
    Stall(Duration),
    /// `Watch` only: sends `SERVING`, then the relay resets the connection.
    DropMidStream,
}

/// Follows the script, one step per request; the last step repeats.
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    requests: Mutex<Vec<Instant>>,
    relay: Arc<Notify>,
}

impl Scripted {
    fn next(&self) -> Step {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Instant::now());
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        match steps.len() {
            0 | 1 => steps.front().copied().unwrap_or(Step::Serve),
            _ => steps.pop_front().unwrap_or(Step::Serve),
        }
    }
}

fn serving(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

/// The service the server runs: the script, shared with the test that reads its counts.
struct Service(Arc<Scripted>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Service {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match self.0.next() {
            Step::Serve | Step::DropMidStream => {}
            Step::Fail(make) => return Err(make()),
            Step::Stall(duration) => tokio::time::sleep(duration).await,
        }
        Ok(Response::new(serving(ServingStatus::Serving)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let stream: WatchStream = match self.0.next() {
            Step::Fail(make) => return Err(make()),
            Step::Stall(duration) => {
                tokio::time::sleep(duration).await;
                Box::pin(tokio_stream::iter([Ok(serving(ServingStatus::Serving))]))
            }
            Step::Serve => Box::pin(tokio_stream::iter([
                Ok(serving(ServingStatus::Serving)),
                Ok(serving(ServingStatus::NotServing)),
            ])),
            Step::DropMidStream => {
                // Once the first message is on its way, the relay resets the connection; the
                // stream itself never ends.
                let relay = Arc::clone(&self.0.relay);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    relay.notify_waiters();
                });
                let first = tokio_stream::iter([Ok(serving(ServingStatus::Serving))]);
                Box::pin(tokio_stream::StreamExt::chain(
                    first,
                    tokio_stream::pending(),
                ))
            }
        };
        Ok(Response::new(stream))
    }
}

/// A running server, reached through its relay; dropping it stops both.
struct GrpcServer {
    script: Arc<Scripted>,
    relay_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl GrpcServer {
    async fn start(steps: impl IntoIterator<Item = Step>) -> GrpcServer {
        let relay = Arc::new(Notify::new());
        let script = Arc::new(Scripted {
            steps: Mutex::new(steps.into_iter().collect()),
            requests: Mutex::new(Vec::new()),
            relay: Arc::clone(&relay),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server_addr = listener.local_addr().expect("address");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let service = HealthServer::new(Service(Arc::clone(&script)));
        let server = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        let relay_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay_addr = relay_listener.local_addr().expect("address");
        let relay_task = tokio::spawn(relay_loop(relay_listener, server_addr, relay));
        GrpcServer {
            script,
            relay_addr,
            tasks: vec![server, relay_task],
        }
    }

    /// How many requests reached the service.
    fn requests(&self) -> usize {
        self.script
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// When each request reached the service.
    fn received(&self) -> Vec<Instant> {
        self.script
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.relay_addr)).expect("a valid URI")
    }

    async fn client(&self) -> HealthClient<Channel> {
        HealthClient::new(self.endpoint().connect().await.expect("connect"))
    }
}

/// Relays each connection to the server; when `reset` is notified, resets (RST, not FIN) the
/// client side of every connection open at that moment.
async fn relay_loop(listener: TcpListener, server: SocketAddr, reset: Arc<Notify>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let reset = Arc::clone(&reset);
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(server).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let reset_now = reset.notified();
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                () = reset_now => {
                    let _ = client.set_zero_linger();
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Statuses as a Google API sends them

fn unavailable() -> Status {
    Status::unavailable("backend warming up")
}

/// A per-minute quota, with the server's `RetryInfo` of 0.4 s.
fn rate_limited() -> Status {
    let mut violation = QuotaViolation::new("project:demo", "requests per minute exceeded");
    violation.quota_id = "GenerateRequestsPerMinutePerProjectPerModel".to_owned();
    let mut details = ErrorDetails::with_retry_info(Some(Duration::from_millis(400)));
    details.set_quota_failure(vec![violation]);
    Status::with_error_details(Code::ResourceExhausted, "quota exceeded", details)
}

/// A per-day quota: `RetryInfo` says 30 s, but no wait of seconds brings a day's quota back.
fn per_day_quota() -> Status {
    let mut violation = QuotaViolation::new("project:demo", "requests per day exceeded");
    violation.quota_id = "GenerateRequestsPerDayPerProjectPerModel-FreeTier".to_owned();
    let mut details = ErrorDetails::with_retry_info(Some(Duration::from_secs(30)));
    details.set_quota_failure(vec![violation]);
    Status::with_error_details(Code::ResourceExhausted, "daily quota exceeded", details)
}

fn invalid_argument() -> Status {
    Status::invalid_argument("service name must be ASCII")
}

fn with_pushback(mut status: Status, value: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(resilience::grpc::PUSHBACK, value.parse().expect("ASCII"));
    status
}

fn pushback_300ms() -> Status {
    with_pushback(unavailable(), "300")
}

fn pushback_refused() -> Status {
    with_pushback(unavailable(), "-1")
}

// ---------------------------------------------------------------------------------------------
// The client: annotated functions, as a user writes them

/// The natural gRPC signature: `Result<_, Status>`. After the last attempt the give-up comes
/// back as a `Status` (its last code, the give-up's text, the `MediaProcessingError` as source).
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn check(client: &mut HealthClient<Channel>) -> Result<i32, Status> {
    let request = HealthCheckRequest {
        service: "gemini.vision".to_owned(),
    };
    Ok(client.check(request).await?.into_inner().status)
}

/// Reads the first two messages of a `Watch` stream: a drop between them fails the attempt.
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn watch_two(client: &mut HealthClient<Channel>) -> Result<Vec<i32>, Status> {
    let request = HealthCheckRequest {
        service: "gemini.vision".to_owned(),
    };
    let mut stream = client.watch(request).await?.into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match stream.message().await? {
            Some(message) => seen.push(message.status),
            None => return Err(Status::data_loss("the stream ended early")),
        }
    }
    Ok(seen)
}

/// An application's own error, through `#[derive(Classify)]`: connecting is part of the call.
#[derive(Debug, thiserror::Error, Classify)]
enum CallError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{}", resilience::grpc::text(.0))]
    Status(#[from] Status),
    #[error(transparent)]
    GaveUp(#[from] MediaProcessingError),
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn connect_and_check(endpoint: &Endpoint) -> Result<i32, CallError> {
    let mut client = HealthClient::new(endpoint.connect().await?);
    let request = HealthCheckRequest {
        service: "gemini.vision".to_owned(),
    };
    Ok(client.check(request).await?.into_inner().status)
}

const SERVING: i32 = ServingStatus::Serving as i32;
const NOT_SERVING: i32 = ServingStatus::NotServing as i32;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The give-up inside a `Status` returned by the attribute.
#[track_caller]
fn give_up(status: &Status) -> &MediaProcessingError {
    std::error::Error::source(status)
        .and_then(|source| source.downcast_ref::<MediaProcessingError>())
        .unwrap_or_else(|| panic!("not a give-up: {status:?}"))
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn unavailable_twice_then_ok_is_retried_twice() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([
        Step::Fail(unavailable),
        Step::Fail(unavailable),
        Step::Serve,
    ])
    .await;
    let mut client = server.client().await;
    assert_eq!(check(&mut client).await.expect("served"), SERVING);
    assert_eq!(server.requests(), 3);
    let messages = logs.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    // The status reads as its code and message: no metadata, no tonic `Display` sentence.
    for (n, message) in messages[..2].iter().enumerate() {
        let prefix = format!(
            "Retry {}/3 after gRPC UNAVAILABLE: backend warming up: waiting ",
            n + 1
        );
        assert!(message.starts_with(&prefix), "{message}");
    }
    assert_eq!(messages[2], "Success on attempt 3");
    logs.assert_fields("check", 3);
}

#[tokio::test]
async fn always_unavailable_gives_up_with_a_status_that_keeps_the_code_and_the_count() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([Step::Fail(unavailable)]).await;
    let mut client = server.client().await;
    let status = check(&mut client).await.expect_err("never served");
    assert_eq!(server.requests(), 3);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "Failed after 3 retries: gRPC UNAVAILABLE: backend warming up"
    );
    let give_up = give_up(&status);
    assert_eq!(give_up.attempts(), 3);
    assert_eq!(
        give_up.last_error::<Status>().map(Status::code),
        Some(Code::Unavailable)
    );
    assert_eq!(logs.at_level(Level::ERROR).len(), 1, "one give-up event");
    // Returned by a server, it tells the clients above not to retry again.
    let pushback = status.metadata().get(resilience::grpc::PUSHBACK);
    assert_eq!(pushback.and_then(|v| v.to_str().ok()), Some("-1"));
    // Handed to an outer retried call, it is known as a give-up and not retried again.
    assert_eq!(explain(&status).rule, Rule::InnerGiveUp);
}

#[tokio::test]
async fn resource_exhausted_waits_for_the_retry_info_delay() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([Step::Fail(rate_limited), Step::Serve]).await;
    let mut client = server.client().await;
    assert_eq!(check(&mut client).await.expect("served"), SERVING);
    assert_eq!(server.requests(), 2);
    // The backoff alone would be ~20 ms: the wait is the server's.
    assert_eq!(logs.waits_ms(), [400]);
    let retry = &logs.messages()[0];
    assert!(
        retry.starts_with("Retry 1/3 after gRPC RESOURCE_EXHAUSTED: quota exceeded: waiting 0.4s"),
        "{retry}"
    );
    let received = server.received();
    let gap = received[1] - received[0];
    assert!(gap >= ms(400), "the server saw the retry after {gap:?}");
}

#[tokio::test]
async fn a_per_day_quota_failure_is_not_retried_and_keeps_its_hint() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([Step::Fail(per_day_quota), Step::Serve]).await;
    let mut client = server.client().await;
    let status = check(&mut client).await.expect_err("not retried");
    assert_eq!(server.requests(), 1);
    // Not retryable: returned unchanged, not as a give-up.
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "daily quota exceeded");
    let decided = explain(&status);
    assert_eq!(
        (decided.verdict, decided.rule, decided.retry_after),
        (
            Verdict::NotRetryable,
            Rule::PerDayQuota,
            Some(Duration::from_secs(30))
        )
    );
    let messages = logs.messages();
    assert_eq!(
        messages,
        [
            "Not retrying: gRPC RESOURCE_EXHAUSTED: daily quota exceeded (the server names a per-day quota)"
        ]
    );
    assert_eq!(logs.records()[0].field("delay_ms"), Some("0"));
}

#[tokio::test]
async fn invalid_argument_is_returned_at_once_unchanged() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([Step::Fail(invalid_argument), Step::Serve]).await;
    let mut client = server.client().await;
    let status = check(&mut client).await.expect_err("not retried");
    assert_eq!(server.requests(), 1);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "service name must be ASCII");
    assert!(
        std::error::Error::source(&status).is_none(),
        "not a give-up"
    );
    assert_eq!(
        logs.messages(),
        [
            "Not retrying: gRPC INVALID_ARGUMENT: service name must be ASCII (decided by the error's type)"
        ]
    );
}

#[tokio::test]
async fn a_pushback_of_300_ms_is_the_wait() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([Step::Fail(pushback_300ms), Step::Serve]).await;
    let mut client = server.client().await;
    assert_eq!(check(&mut client).await.expect("served"), SERVING);
    assert_eq!(server.requests(), 2);
    assert_eq!(logs.waits_ms(), [300]);
    let received = server.received();
    assert!(received[1] - received[0] >= ms(300));
}

#[tokio::test]
async fn a_negative_pushback_means_do_not_retry() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([Step::Fail(pushback_refused), Step::Serve]).await;
    let mut client = server.client().await;
    let status = check(&mut client).await.expect_err("not retried");
    assert_eq!(server.requests(), 1);
    assert_eq!(status.code(), Code::Unavailable, "returned unchanged");
    assert_eq!(explain(&status).rule, Rule::ServerPushback);
    assert_eq!(
        logs.messages(),
        [
            "Not retrying: gRPC UNAVAILABLE: backend warming up (the server's pushback asks not to retry)"
        ]
    );
}

#[tokio::test]
async fn a_stall_past_the_client_deadline_is_retried_as_a_timeout() {
    let (logs, _guard) = common::capture();
    // The stall is ten times the deadline, and the normal answer takes a few ms: no race.
    let server = GrpcServer::start([Step::Stall(Duration::from_secs(10)), Step::Serve]).await;
    let channel = server
        .endpoint()
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    let started = Instant::now();
    assert_eq!(check(&mut client).await.expect("served"), SERVING);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.requests(), 2);
    // tonic reports the client's own deadline as CANCELLED, with its `TimeoutExpired` as the
    // cause: the typed rule calls that a timeout.
    let retry = &logs.messages()[0];
    assert!(
        retry.starts_with("Retry 1/3 after gRPC CANCELLED: Timeout expired"),
        "{retry}"
    );
}

#[tokio::test]
async fn a_connection_reset_in_the_middle_of_a_stream_is_retried() {
    let (logs, _guard) = common::capture();
    let server = GrpcServer::start([Step::DropMidStream, Step::DropMidStream, Step::Serve]).await;
    let mut client = server.client().await;

    // One stream by hand first: what the client meets is the reset itself, not a timeout.
    // h2 keeps only the `io::ErrorKind` (no `io::Error` in the chain) and tonic calls it
    // UNKNOWN, which the code table leaves to the text rule: "connection reset" decides.
    let request = HealthCheckRequest::default();
    let mut stream = client.watch(request).await.expect("a stream").into_inner();
    let first = stream.message().await.expect("the first message");
    assert_eq!(first.map(|m| m.status), Some(SERVING));
    let reset = stream
        .message()
        .await
        .expect_err("the connection was reset");
    assert_eq!(reset.code(), Code::Unknown, "{reset:?}");
    assert!(
        format!("{reset:?}").contains("ConnectionReset"),
        "{reset:?}"
    );
    let decided = explain(&reset);
    assert_eq!(
        (decided.verdict, decided.rule),
        (Verdict::Retryable, Rule::Keyword)
    );

    let seen = watch_two(&mut client)
        .await
        .expect("the second stream is whole");
    assert_eq!(seen, [SERVING, NOT_SERVING]);
    assert_eq!(server.requests(), 3, "two reset streams, then a whole one");
    assert_eq!(
        logs.messages(),
        [
            "Retry 1/3 after gRPC UNKNOWN: h2 protocol error: error reading a body from \
             connection: connection reset: waiting 0.0s",
            "Success on attempt 2"
        ]
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_through_the_users_own_error_type() {
    let (logs, _guard) = common::capture();
    // Nothing listens on this port.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("a valid URI");
    let error = connect_and_check(&endpoint)
        .await
        .expect_err("nothing listens");
    let CallError::GaveUp(give_up) = &error else {
        panic!("not a give-up: {error:?}");
    };
    assert_eq!(give_up.attempts(), 3);
    assert!(
        give_up
            .last_error::<CallError>()
            .is_some_and(|e| matches!(e, CallError::Transport(_)))
    );
    assert_eq!(logs.waits_ms().len(), 2);
    assert_eq!(
        error.to_string(),
        "Failed after 3 retries: transport error: tcp connect error: Connection refused (os error 111)"
    );
    let io = give_up.find::<std::io::Error>().map(std::io::Error::kind);
    assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused));
}

#[tokio::test]
async fn a_status_inside_the_users_own_error_is_classified_by_its_code() {
    let server = GrpcServer::start([Step::Fail(unavailable), Step::Serve]).await;
    assert_eq!(
        connect_and_check(&server.endpoint()).await.expect("served"),
        SERVING
    );
    assert_eq!(server.requests(), 2);
    // And a code that is not retried, through the same enum.
    let wrapped = CallError::Status(invalid_argument());
    assert_eq!(wrapped.classify(), Verdict::NotRetryable);
    assert_eq!(
        CallError::Status(unavailable()).classify(),
        Verdict::Retryable
    );
    // Behind `#[error(transparent)]` too: the derive knows the field is a `Status`.
    #[derive(Debug, thiserror::Error, Classify)]
    enum Transparent {
        #[error(transparent)]
        Status(#[from] Status),
    }
    assert_eq!(
        Transparent::from(unavailable()).classify(),
        Verdict::Retryable
    );
    assert_eq!(
        Transparent::from(pushback_refused()).classify(),
        Verdict::NotRetryable
    );
    assert_eq!(
        Transparent::from(rate_limited()).retry_after(),
        Some(ms(400))
    );
}
