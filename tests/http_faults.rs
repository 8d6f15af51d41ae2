//! `#[retry_with_backoff]` against a real HTTP server that misbehaves (`fault-server`): a
//! reqwest client, real sockets and real time (tokio's paused clock does not drive sockets).
//! Waits are tiny (`base_delay = 0.01`, `max_delay = 0.05`) except the server hints whose
//! waits are under test.
//!
//! Each test checks, attempt by attempt, the failure the client saw (the status, or the kind
//! of `reqwest::Error` and the `io::Error` beneath it) and the fault the server says it
//! served, so a reset that turned into a timeout, or a normal answer that came too late,
//! fails the test instead of passing as one more attempt. No count rides on a client timeout
//! racing a normal answer: the client waits 10 s for answers the server writes at once, and
//! only the stall tests use a short timeout (1 s) against stalls of a minute. A wait that a
//! header asks for is measured from the moment the server began to write that header; the
//! lower time bounds are the point (the wait happened), the upper ones loose (it did not run
//! away).

mod common;

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use fault_server::{Fault, FaultKind, FaultServer, GeminiFaults, http_date, refused_url};
use resilience::classify::explain;
use resilience::http::{HttpError, error_for_status};
use resilience::{GiveUpReason, MediaProcessingError, Rule, Verdict, retry_with_backoff};
use serde_json::{Value, json};
use tracing::Level;

/// The error of the client functions.
///
/// `Http` and `Transport` show their inner error with `#[error("{0}")]` instead of
/// `#[error(transparent)]` on purpose: a transparent variant forwards `source()` to the inner
/// error's *own* source, so the `HttpError` or `reqwest::Error` itself never appears in the
/// chain and the typed rules cannot see it (a 400 whose body says "timeout" would then be
/// retried by the text rule). `Exhausted` may be transparent: nothing classifies it.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("the answer holds no text")]
    NoText,
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

impl ApiError {
    fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http(e) => Some(e.status()),
            _ => None,
        }
    }

    #[track_caller]
    fn exhausted(&self) -> &MediaProcessingError {
        match self {
            ApiError::Exhausted(e) => e,
            other => panic!("not a give-up error: {other:?}"),
        }
    }
}

/// What one attempt met, read from what the client got: the test's view of the failure. The
/// shapes are the ones reqwest 0.12 (hyper 1) reports on Linux, as seen in these tests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Met {
    /// A 2xx answer, read to its end.
    Answer,
    /// An error status, as the `HttpError` holds it.
    Status(u16),
    /// The connection reset before any answer: `is_request()`, not `is_connect()`, above
    /// hyper-util's `SendRequest`, hyper's `Io` and an `io::Error` of kind `ConnectionReset`
    /// (os error 104).
    ResetBeforeAnswer,
    /// The connection reset while the body was read: `is_decode()` (`text()` and `json()`
    /// read the body to decode it) or `is_body()`, above hyper's `Body` and an `io::Error` of
    /// kind `ConnectionReset`.
    ResetInBody,
    /// The client's own timeout ran out: `is_timeout()` (reqwest's `TimedOut` beneath).
    Timeout,
    /// Nothing listened: `is_connect()`, above an `io::Error` of kind `ConnectionRefused`.
    Refused,
    /// Anything else, with its `Debug` text: never what a test expects.
    Other(String),
}

impl Met {
    fn of(error: &ApiError) -> Met {
        let transport = match error {
            ApiError::Http(e) => return Met::Status(e.status()),
            ApiError::Transport(e) => e,
            other => return Met::Other(format!("{other:?}")),
        };
        let io = io_kind(transport);
        if transport.is_timeout() {
            Met::Timeout
        } else if transport.is_connect() && io == Some(io::ErrorKind::ConnectionRefused) {
            Met::Refused
        } else if transport.is_request()
            && !transport.is_connect()
            && io == Some(io::ErrorKind::ConnectionReset)
        {
            Met::ResetBeforeAnswer
        } else if (transport.is_body() || transport.is_decode())
            && io == Some(io::ErrorKind::ConnectionReset)
        {
            Met::ResetInBody
        } else {
            Met::Other(format!("{transport:?}"))
        }
    }

    /// What a client sees of each fault the server serves.
    fn expected(kind: FaultKind) -> Met {
        match kind {
            FaultKind::Respond(status) if (200..300).contains(&status) => Met::Answer,
            FaultKind::Respond(status) => Met::Status(status),
            FaultKind::Stall(_) => Met::Timeout,
            FaultKind::ResetMidBody => Met::ResetInBody,
            FaultKind::ResetBeforeResponse => Met::ResetBeforeAnswer,
        }
    }
}

/// The kind of the first `io::Error` in `error`'s `source()` chain.
fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut next = error.source();
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        next = cause.source();
    }
    None
}

/// What each attempt of one call met, in order; every client function below notes its
/// attempts here.
#[derive(Debug, Default)]
struct Attempts(Mutex<Vec<Met>>);

impl Attempts {
    /// Notes what this attempt met, and hands its result on unchanged.
    fn note<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        let met = match &result {
            Ok(_) => Met::Answer,
            Err(error) => Met::of(error),
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(met);
        result
    }

    fn met(&self) -> Vec<Met> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Asserts that the server served `faults`, in order, and that each attempt of the client
/// met what that fault looks like from the client's side.
#[track_caller]
fn assert_met(server: &FaultServer, attempts: &Attempts, faults: &[FaultKind]) {
    assert_eq!(server.faults(), faults, "what the server served");
    let expected: Vec<Met> = faults.iter().copied().map(Met::expected).collect();
    assert_eq!(
        attempts.met(),
        expected,
        "what each attempt of the client saw"
    );
}

/// A Google-shaped API key, 39 characters, fake.
const FAKE_KEY: &str = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";

/// The client of every test but the stall tests: the server answers at once, so 10 s is a
/// margin no loaded machine eats, and a slow answer is never taken for a failed attempt.
fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

/// The client of the stall tests: its 1 s timeout is far below their stalls of a minute, and
/// still far above the time a normal answer takes.
fn stall_client() -> reqwest::Client {
    client_with_timeout(STALL_CLIENT_TIMEOUT)
}

const STALL_CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
const STALL: Duration = Duration::from_secs(60);

fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("a reqwest client")
}

async fn start(script: impl IntoIterator<Item = Fault>) -> FaultServer {
    FaultServer::start(script).await.expect("a fault server")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// The client: functions under the attribute, one per policy under test

/// GETs `url`; an error status becomes an `HttpError`; the body is read to its end.
async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, ApiError> {
    let response = client.get(url).send().await?;
    let response = error_for_status(response).await?;
    Ok(response.text().await?)
}

/// `get_text`, retried; each attempt is noted in `attempts`.
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    attempts: &Attempts,
) -> Result<String, ApiError> {
    attempts.note(get_text(client, url).await)
}

/// `fetch`, honouring server hints of at most half a second.
#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.01,
    max_delay = 0.05,
    jitter = 0.01,
    max_hint = 0.5
)]
async fn fetch_capped(
    client: &reqwest::Client,
    url: &str,
    attempts: &Attempts,
) -> Result<String, ApiError> {
    attempts.note(get_text(client, url).await)
}

/// `fetch`, all attempts and waits within one second.
#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.01,
    max_delay = 0.05,
    jitter = 0.01,
    timeout = 1.0
)]
async fn fetch_within_1s(
    client: &reqwest::Client,
    url: &str,
    attempts: &Attempts,
) -> Result<String, ApiError> {
    attempts.note(get_text(client, url).await)
}

/// A Gemini `generateContent` call: the prompt and an inline image in, the text out.
#[retry_with_backoff(max_retries = 6, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn generate(
    client: &reqwest::Client,
    url: &str,
    prompt: &str,
    image: &[u8],
    attempts: &Attempts,
) -> Result<String, ApiError> {
    attempts.note(generate_once(client, url, prompt, image).await)
}

async fn generate_once(
    client: &reqwest::Client,
    url: &str,
    prompt: &str,
    image: &[u8],
) -> Result<String, ApiError> {
    let request = json!({ "contents": [{ "parts": [
        { "text": prompt },
        { "inline_data": {
            "mime_type": "image/png",
            "data": base64::engine::general_purpose::STANDARD.encode(image),
        } },
    ] }] });
    let response = client.post(url).json(&request).send().await?;
    let answer: Value = error_for_status(response).await?.json().await?;
    answer["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or(ApiError::NoText)
}

const GENERATE: &str = "/v1beta/models/gemini-2.0-flash:generateContent";

// ---------------------------------------------------------------------------------------------
// Retryable statuses

use FaultKind::{ResetBeforeResponse, ResetMidBody, Respond};

#[tokio::test]
async fn a_429_then_200_is_retried_once() {
    let server = start([Fault::status(429, "Too Many Requests"), Fault::ok("done")]).await;
    let attempts = Attempts::default();
    let text = fetch(&client(), &server.url("/a"), &attempts).await;
    assert_eq!(text.unwrap(), "done");
    assert_met(&server, &attempts, &[Respond(429), Respond(200)]);
}

async fn retried_then_ok(status: u16) {
    let (logs, _guard) = common::capture();
    let server = start([Fault::status(status, "upstream trouble"), Fault::ok("ok")]).await;
    let attempts = Attempts::default();
    let text = fetch(&client(), &server.url("/a"), &attempts).await;
    assert_eq!(text.unwrap(), "ok");
    assert_met(&server, &attempts, &[Respond(status), Respond(200)]);
    let messages = logs.messages();
    assert!(
        messages[0].starts_with(&format!("Retry 1/3 after HTTP {status}: upstream trouble")),
        "{messages:?}"
    );
    assert_eq!(messages[1], "Success on attempt 2");
}

#[tokio::test]
async fn a_500_is_retried_then_succeeds() {
    retried_then_ok(500).await;
}

#[tokio::test]
async fn a_502_is_retried_then_succeeds() {
    retried_then_ok(502).await;
}

#[tokio::test]
async fn a_503_is_retried_then_succeeds() {
    retried_then_ok(503).await;
}

#[tokio::test]
async fn a_504_is_retried_then_succeeds() {
    retried_then_ok(504).await;
}

#[tokio::test]
async fn always_503_gives_up_after_max_retries_with_the_last_status() {
    let (logs, _guard) = common::capture();
    let server = start([Fault::status(503, "Service Unavailable")]).await;
    let attempts = Attempts::default();
    let err = fetch(&client(), &server.url("/a"), &attempts)
        .await
        .unwrap_err();
    assert_met(&server, &attempts, &[Respond(503); 3]);
    assert_eq!(
        err.to_string(),
        "Failed after 3 retries: HTTP 503: Service Unavailable"
    );
    let mpe = err.exhausted();
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    assert_eq!(
        mpe.last_error::<ApiError>().and_then(ApiError::status),
        Some(503)
    );
    assert_eq!(logs.waits_ms().len(), 2);
    let errors = logs.at_level(Level::ERROR);
    assert_eq!(errors.len(), 1, "one give-up event");
    assert!(errors[0].message.starts_with("Giving up after 3 attempts"));
}

// ---------------------------------------------------------------------------------------------
// Not retried: the typed status wins over the text, and the server's own words

#[tokio::test]
async fn a_400_whose_body_mentions_timeout_is_not_retried() {
    let server = start([Fault::status(400, "timeout must be a positive number")]).await;
    let attempts = Attempts::default();
    let err = fetch(&client(), &server.url("/a"), &attempts)
        .await
        .unwrap_err();
    assert_met(&server, &attempts, &[Respond(400)]);
    assert_eq!(err.status(), Some(400), "returned unchanged: {err:?}");
    // The typed rule decided, reaching the `HttpError` through `source()`.
    let classified = explain(&err);
    assert_eq!(
        (classified.verdict, classified.rule),
        (Verdict::NotRetryable, Rule::KnownType)
    );
}

#[tokio::test]
async fn a_401_is_not_retried() {
    let server = start([Fault::gemini_error(
        401,
        "UNAUTHENTICATED",
        "API key not valid. Please pass a valid API key.",
    )])
    .await;
    let attempts = Attempts::default();
    let err = fetch(&client(), &server.url("/a"), &attempts)
        .await
        .unwrap_err();
    assert_met(&server, &attempts, &[Respond(401)]);
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn a_per_day_quota_429_is_not_retried_although_it_says_reset() {
    let (logs, _guard) = common::capture();
    let server = start([Fault::gemini_429_per_day(), Fault::gemini_ok("never")]).await;
    let attempts = Attempts::default();
    let err = fetch(&client(), &server.url(GENERATE), &attempts)
        .await
        .unwrap_err();
    assert_met(&server, &attempts, &[Respond(429)]);
    assert_eq!(err.status(), Some(429), "returned unchanged: {err:?}");
    let ApiError::Http(http) = &err else {
        unreachable!()
    };
    assert!(
        http.body()
            .contains("Your quota will reset after 12h34m16s.")
    );
    let messages = logs.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].starts_with("Not retrying: HTTP 429"));
    assert!(messages[0].ends_with("(the server names a per-day quota)"));
}

// ---------------------------------------------------------------------------------------------
// Server delay hints: each wait is measured from the moment the server began to write the
// header that asked for it (`Served::answered`), not from the test's own start, so slow set-up
// on a loaded machine cannot eat into it.

/// From when the server began to write answer `i` to when it received request `i + 1`: the
/// client's wait, plus the time to read the answer and send the next request.
#[track_caller]
fn gap_after(server: &FaultServer, i: usize) -> Duration {
    let served = server.served();
    let answered = served[i].answered.expect("an answer was written");
    served[i + 1].received - answered
}

#[tokio::test]
async fn retry_after_seconds_is_waited() {
    let server = start([
        Fault::status(429, "slow down").with_header("Retry-After", "1"),
        Fault::ok("ok"),
    ])
    .await;
    let attempts = Attempts::default();
    let text = fetch(&client(), &server.url("/a"), &attempts).await;
    assert_eq!(text.unwrap(), "ok");
    assert_met(&server, &attempts, &[Respond(429), Respond(200)]);
    let gap = gap_after(&server, 0);
    assert!(
        gap >= ms(1000) && gap < ms(5000),
        "the server saw the retry {gap:?} after it began to write `Retry-After: 1`"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_waited_until_that_date() {
    /// What the server did, on its wall clock: when it made the 503 and the date it named,
    /// and when the retry arrived.
    #[derive(Default)]
    struct Dates {
        made: Option<(SystemTime, SystemTime)>,
        retried: Option<SystemTime>,
    }

    let (logs, _guard) = common::capture();
    let dates = Arc::new(Mutex::new(Dates::default()));
    let shared = Arc::clone(&dates);
    // The date is made as the answer is written: the first whole second at least 1.5 s ahead
    // (HTTP dates have no fractions), so the client is asked to wait 1.5 to 2.5 s whatever
    // the set-up cost.
    let server = FaultServer::respond_with(move |_| {
        let now = SystemTime::now();
        let mut dates = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if dates.made.is_some() {
            dates.retried.get_or_insert(now);
            return Fault::ok("ok");
        }
        let ahead = (now + ms(1500))
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970");
        let target = SystemTime::UNIX_EPOCH + Duration::from_secs(ahead.as_secs() + 1);
        dates.made = Some((now, target));
        Fault::status(503, "maintenance").with_header("Retry-After", http_date(target))
    })
    .await
    .expect("a fault server");
    let attempts = Attempts::default();
    let text = fetch(&client(), &server.url("/a"), &attempts).await;
    assert_eq!(text.unwrap(), "ok");
    assert_met(&server, &attempts, &[Respond(503), Respond(200)]);

    let dates = dates.lock().unwrap_or_else(PoisonError::into_inner);
    let ((made, target), retried) = (dates.made.expect("a 503"), dates.retried.expect("a retry"));
    let asked = target.duration_since(made).expect("a date ahead");
    assert!(asked >= ms(1500) && asked < ms(2500), "{asked:?}");
    // Timers end at or after their deadline; a millisecond of rounding is allowed.
    assert!(
        retried + ms(1) >= target,
        "retried {:?} before the date in Retry-After",
        target.duration_since(retried).unwrap_or_default()
    );
    // The client counts the wait from when it read the header, a little after it was made:
    // at most what was asked, and at least 200 ms (the date is 1.5 s away or more, and the
    // backoff alone is 10 to 60 ms), however slowly a loaded machine reads the answer.
    let waits = logs.waits_ms();
    let asked_ms = u64::try_from(asked.as_millis()).expect("a short wait");
    assert!(
        waits.len() == 1 && waits[0] <= asked_ms + 1 && waits[0] + 1300 >= asked_ms,
        "waits {waits:?}, asked {asked_ms} ms"
    );
    let gap = gap_after(&server, 0);
    assert!(gap >= asked - ms(1300) && gap < asked + ms(3000), "{gap:?}");
}

#[tokio::test]
async fn a_gemini_retry_info_delay_is_waited() {
    let server = start([Fault::gemini_429("0.4s"), Fault::gemini_ok("a red square")]).await;
    let attempts = Attempts::default();
    let text = generate(
        &client(),
        &server.url(GENERATE),
        "Describe",
        b"png",
        &attempts,
    )
    .await;
    assert_eq!(text.unwrap(), "a red square");
    assert_met(&server, &attempts, &[Respond(429), Respond(200)]);
    let gap = gap_after(&server, 0);
    assert!(gap >= ms(400) && gap < ms(5000), "{gap:?}");
}

#[tokio::test]
async fn the_retry_line_shows_the_error_and_the_hinted_wait() {
    let (logs, _guard) = common::capture();
    let server = start([Fault::gemini_429("0.4s"), Fault::gemini_ok("ok")]).await;
    let attempts = Attempts::default();
    fetch(&client(), &server.url(GENERATE), &attempts)
        .await
        .unwrap();
    assert_met(&server, &attempts, &[Respond(429), Respond(200)]);
    let retries: Vec<_> = logs
        .at_level(Level::WARN)
        .into_iter()
        .filter(|r| r.message.starts_with("Retry "))
        .collect();
    assert_eq!(retries.len(), 1);
    let line = &retries[0];
    assert!(
        line.message.starts_with("Retry 1/3 after HTTP 429: {"),
        "{}",
        line.message
    );
    assert!(line.message.contains("RESOURCE_EXHAUSTED"));
    // The backoff alone would be ~0.02 s: the wait is the server's.
    assert!(line.message.ends_with(": waiting 0.4s"), "{}", line.message);
    assert_eq!(line.field("delay_ms"), Some("400"));
    assert_eq!(line.field("attempt"), Some("1"));
    assert_eq!(line.field("function"), Some("fetch"));
}

#[tokio::test]
async fn a_hint_above_max_hint_fails_at_once_and_carries_the_hint() {
    let (logs, _guard) = common::capture();
    let server = start([Fault::gemini_429("2s"), Fault::gemini_ok("never")]).await;
    let attempts = Attempts::default();
    let err = fetch_capped(&client(), &server.url(GENERATE), &attempts)
        .await
        .unwrap_err();
    let answered = server.served()[0].answered.expect("an answer");
    assert!(answered.elapsed() < ms(2000), "the 2 s were not waited");
    assert!(logs.waits_ms().is_empty(), "no wait began");
    assert_met(&server, &attempts, &[Respond(429)]);
    let mpe = err.exhausted();
    assert_eq!(
        mpe.reason(),
        GiveUpReason::HintAboveCap {
            retry_after: ms(2000),
            max_hint: ms(500),
        }
    );
    assert_eq!(mpe.retry_after(), Some(ms(2000)));
    assert_eq!(mpe.attempts(), 1);
    assert!(
        mpe.to_string()
            .starts_with("Failed after 1 retries: HTTP 429: {")
    );
}

#[tokio::test]
async fn a_hint_that_would_end_past_the_timeout_fails_at_once() {
    let (logs, _guard) = common::capture();
    let server = start([
        Fault::status(429, "later").with_header("Retry-After", "5"),
        Fault::ok("never"),
    ])
    .await;
    let attempts = Attempts::default();
    let err = fetch_within_1s(&client(), &server.url("/a"), &attempts)
        .await
        .unwrap_err();
    let answered = server.served()[0].answered.expect("an answer");
    assert!(answered.elapsed() < ms(5000), "the 5 s were not waited");
    assert!(logs.waits_ms().is_empty(), "no wait began");
    assert_met(&server, &attempts, &[Respond(429)]);
    let mpe = err.exhausted();
    assert_eq!(
        mpe.reason(),
        GiveUpReason::WaitPastDeadline {
            wait: ms(5000),
            timeout: ms(1000)
        }
    );
    assert_eq!(mpe.retry_after(), Some(ms(5000)), "saved with the task");
    assert_eq!(mpe.to_string(), "Failed after 1 retries: HTTP 429: later");
}

// ---------------------------------------------------------------------------------------------
// Transport faults: each attempt must fail the way its fault fails, not just fail

#[tokio::test]
async fn a_stall_past_the_client_timeout_is_retried() {
    let server = start([Fault::Stall(STALL), Fault::Stall(STALL), Fault::ok("ok")]).await;
    let client = stall_client();
    // One call outside the attribute: the timeout is decided by the `reqwest::Error`'s type.
    let timed_out = client.get(server.url("/a")).send().await.unwrap_err();
    assert!(timed_out.is_timeout());
    let classified = explain(&ApiError::from(timed_out));
    assert_eq!(
        (classified.verdict, classified.rule),
        (Verdict::Retryable, Rule::KnownType)
    );

    let attempts = Attempts::default();
    let start = Instant::now();
    let text = fetch(&client, &server.url("/a"), &attempts).await;
    let elapsed = start.elapsed();
    assert_eq!(text.unwrap(), "ok");
    // The call outside the attribute met the first stall; the retried call the second, then
    // the answer.
    assert_eq!(
        server.faults(),
        [
            FaultKind::Stall(STALL),
            FaultKind::Stall(STALL),
            Respond(200)
        ]
    );
    assert_eq!(attempts.met(), [Met::Timeout, Met::Answer]);
    // The client's own second, not the server's minute.
    assert!(
        elapsed >= STALL_CLIENT_TIMEOUT && elapsed < STALL_CLIENT_TIMEOUT + ms(5000),
        "{elapsed:?}"
    );
    let served = server.served();
    let waited = served[2].received - served[1].received;
    assert!(waited >= STALL_CLIENT_TIMEOUT, "{waited:?}");
}

#[tokio::test]
async fn a_reset_mid_body_is_retried() {
    let server = start([Fault::ResetMidBody, Fault::ok("whole")]).await;
    let attempts = Attempts::default();
    let text = fetch(&client(), &server.url("/a"), &attempts).await;
    assert_eq!(text.unwrap(), "whole");
    assert_met(&server, &attempts, &[ResetMidBody, Respond(200)]);
}

#[tokio::test]
async fn a_reset_before_the_response_is_retried() {
    let server = start([Fault::ResetBeforeResponse, Fault::ok("ok")]).await;
    let attempts = Attempts::default();
    let text = fetch(&client(), &server.url("/a"), &attempts).await;
    assert_eq!(text.unwrap(), "ok");
    assert_met(&server, &attempts, &[ResetBeforeResponse, Respond(200)]);
}

#[tokio::test]
async fn resets_every_time_give_up_with_the_reset() {
    let server = start([Fault::ResetBeforeResponse]).await;
    let attempts = Attempts::default();
    let err = fetch(&client(), &server.url("/a"), &attempts)
        .await
        .unwrap_err();
    assert_met(&server, &attempts, &[ResetBeforeResponse; 3]);
    let last = err.exhausted().last_error::<ApiError>().expect("typed");
    assert_eq!(Met::of(last), Met::ResetBeforeAnswer, "{last:?}");
}

#[tokio::test]
async fn connection_refused_is_retried_then_gives_up_after_max_retries() {
    let (logs, _guard) = common::capture();
    let url = format!("{}/a", refused_url().await);
    let attempts = Attempts::default();
    let err = fetch(&client(), &url, &attempts).await.unwrap_err();
    assert_eq!(attempts.met(), [Met::Refused, Met::Refused, Met::Refused]);
    let mpe = err.exhausted();
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    let last = mpe.last_error::<ApiError>().expect("the typed last error");
    assert_eq!(Met::of(last), Met::Refused, "{last:?}");
    assert_eq!(logs.waits_ms().len(), 2);
    assert!(
        err.to_string()
            .starts_with("Failed after 3 retries: error sending request for url (")
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[tokio::test]
async fn a_key_in_the_url_never_reaches_the_logs_or_the_give_up_error() {
    let (logs, _guard) = common::capture();
    let url = format!("{}{GENERATE}?key={FAKE_KEY}", refused_url().await);
    let attempts = Attempts::default();
    let err = fetch(&client(), &url, &attempts).await.unwrap_err();
    assert_eq!(attempts.met(), [Met::Refused, Met::Refused, Met::Refused]);
    // The raw error does hold the key: the redaction is the runtime's work.
    let mpe = err.exhausted();
    let raw = mpe
        .find::<reqwest::Error>()
        .expect("the last error")
        .to_string();
    assert!(raw.contains(FAKE_KEY), "{raw}");

    let messages = logs.messages();
    assert_eq!(messages.len(), 3, "2 retries and a give-up: {messages:?}");
    for message in &messages {
        assert!(!message.contains(FAKE_KEY), "{message}");
        assert!(message.contains("key=[REDACTED]"), "{message}");
    }
    for shown in [err.to_string(), mpe.last_error_message().to_owned()] {
        assert!(!shown.contains(FAKE_KEY), "{shown}");
        assert!(shown.contains("key=[REDACTED]"), "{shown}");
    }
}

#[tokio::test]
async fn an_api_key_header_echoed_in_an_error_body_is_redacted() {
    const SECRET: &str = "sekrit-value-123";
    let (logs, _guard) = common::capture();
    let body = json!({ "error": {
        "code": 503,
        "message": "backend unavailable",
        "request": { "x-goog-api-key": SECRET, "accept": "*/*" },
    } });
    let server = start([Fault::status(503, body.to_string())]).await;
    let attempts = Attempts::default();
    let err = fetch(&client(), &server.url("/a"), &attempts)
        .await
        .unwrap_err();
    assert_met(&server, &attempts, &[Respond(503); 3]);
    let messages = logs.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    for shown in messages.iter().chain([&err.to_string()]) {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains(r#""x-goog-api-key":"[REDACTED]"#), "{shown}");
    }
}

/// Redacting twice must change nothing. Today the macro redacts the error text for the log
/// and `MediaProcessingError::new` redacts it again, and `[REDACTED]` itself is taken for a
/// value ending at `]`: `key=[REDACTED])` becomes `key=[REDACTED]])`.
#[tokio::test]
async fn the_give_up_error_redacts_a_key_exactly_once() {
    let url = format!("{}/a?key={FAKE_KEY}", refused_url().await);
    let attempts = Attempts::default();
    let err = fetch(&client(), &url, &attempts).await.unwrap_err();
    assert_eq!(attempts.met(), [Met::Refused, Met::Refused, Met::Refused]);
    let shown = err.to_string();
    assert!(shown.contains("?key=[REDACTED])"), "{shown}");
    assert!(!shown.contains("[REDACTED]]"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// The fake Gemini, end to end

#[tokio::test]
async fn the_fake_gemini_with_faults_is_survived_by_the_retries() {
    // With seed 1600 and rate 0.5 the three images meet one fault of each kind before their
    // answers. The fake's draw depends only on the seed and the request, through a hash and
    // a generator that `fault-server` defines itself, so this list is the same on every
    // machine and with every Rust version.
    let server = FaultServer::gemini(GeminiFaults {
        fault_rate: 0.5,
        seed: 1600,
        stall: STALL,
    })
    .await
    .expect("a fake Gemini");
    let client = stall_client();
    let url = server.url(GENERATE);
    let attempts = Attempts::default();
    for size in [16usize, 300, 2048] {
        let image = vec![0x89u8; size];
        let text = generate(&client, &url, "What is in this image?", &image, &attempts)
            .await
            .unwrap();
        assert_eq!(
            text,
            format!("gemini-2.0-flash saw a {size}-byte image/png image.")
        );
    }
    let stall = FaultKind::Stall(STALL);
    #[rustfmt::skip]
    let expected = [
        Respond(503), stall, Respond(500), Respond(200), // 16 bytes
        Respond(429), Respond(200),                      // 300 bytes
        ResetMidBody, Respond(200),                      // 2048 bytes
    ];
    assert_met(&server, &attempts, &expected);

    // Only a prompt that asks for it meets the per-day quota, and it is not retried.
    let per_day = Attempts::default();
    let err = generate(&client, &url, "simulate a per-day quota", b"x", &per_day)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(per_day.met(), [Met::Status(429)]);
    assert_eq!(server.requests(), expected.len() + 1);
}

// ---------------------------------------------------------------------------------------------
// The fault server itself

#[tokio::test]
async fn the_fault_server_delivers_an_answer_and_records_the_request_intact() {
    let server = start([Fault::status(418, "short and stout")
        .with_header("Retry-After", "3")
        .with_header("X-Trace", "a b;c=d")])
    .await;
    let response = client()
        .post(server.url("/v1/tea?key=k&alt=json"))
        .header("x-goog-api-key", "k2")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(response.headers()["x-trace"], "a b;c=d");
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(response.text().await.unwrap(), "short and stout");

    let seen = server.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/tea");
    assert_eq!(seen[0].query.as_deref(), Some("key=k&alt=json"));
    assert_eq!(seen[0].header("X-Goog-Api-Key"), Some("k2"));
    assert_eq!(seen[0].body, "payload");
    assert_eq!(server.faults(), [Respond(418)]);
}

#[tokio::test]
async fn the_fault_server_answers_garbage_with_400_and_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = start([Fault::ok("still here")]).await;
    let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    raw.write_all(b"\x00\xffNOT HTTP\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(ms(2000), raw.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");
    assert_eq!(server.requests(), 0, "a malformed request is not counted");
    let attempts = Attempts::default();
    let text = fetch(&client(), &server.url("/"), &attempts).await;
    assert_eq!(text.unwrap(), "still here");
    assert_met(&server, &attempts, &[Respond(200)]);
}
