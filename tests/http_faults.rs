//! `#[retry_with_backoff]` against a real HTTP server that misbehaves (`fault-server`): a
//! reqwest client, real sockets and real time (tokio's paused clock does not drive sockets).
//! Waits are tiny (`base_delay = 0.01`, `max_delay = 0.05`) except the server hints whose
//! waits are under test; the client times out after 200 ms.
//!
//! Each test asserts what the server counted, and, where a wait is the point, a lower time
//! bound (the wait happened) and a loose upper one (it did not run away).

mod common;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use fault_server::{Fault, FaultServer, GeminiFaults, http_date, refused_url};
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

/// A Google-shaped API key, 39 characters, fake.
const FAKE_KEY: &str = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
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
#[retry_with_backoff(max_retries = 3, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn fetch(client: &reqwest::Client, url: &str) -> Result<String, ApiError> {
    let response = client.get(url).send().await?;
    let response = error_for_status(response).await?;
    Ok(response.text().await?)
}

/// `fetch`, honouring server hints of at most half a second.
#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.01,
    max_delay = 0.05,
    jitter = 0.01,
    max_hint = 0.5
)]
async fn fetch_capped(client: &reqwest::Client, url: &str) -> Result<String, ApiError> {
    let response = client.get(url).send().await?;
    Ok(error_for_status(response).await?.text().await?)
}

/// `fetch`, all attempts and waits within one second.
#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.01,
    max_delay = 0.05,
    jitter = 0.01,
    timeout = 1.0
)]
async fn fetch_within_1s(client: &reqwest::Client, url: &str) -> Result<String, ApiError> {
    let response = client.get(url).send().await?;
    Ok(error_for_status(response).await?.text().await?)
}

/// A Gemini `generateContent` call: the prompt and an inline image in, the text out.
#[retry_with_backoff(max_retries = 6, base_delay = 0.01, max_delay = 0.05, jitter = 0.01)]
async fn generate(
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

#[tokio::test]
async fn a_429_then_200_is_retried_once() {
    let server = start([Fault::status(429, "Too Many Requests"), Fault::ok("done")]).await;
    assert_eq!(fetch(&client(), &server.url("/a")).await.unwrap(), "done");
    assert_eq!(server.requests(), 2);
}

async fn retried_then_ok(status: u16) {
    let (logs, _guard) = common::capture();
    let server = start([Fault::status(status, "upstream trouble"), Fault::ok("ok")]).await;
    assert_eq!(fetch(&client(), &server.url("/a")).await.unwrap(), "ok");
    assert_eq!(server.requests(), 2, "HTTP {status}");
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
    let err = fetch(&client(), &server.url("/a")).await.unwrap_err();
    assert_eq!(server.requests(), 3);
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
    let err = fetch(&client(), &server.url("/a")).await.unwrap_err();
    assert_eq!(server.requests(), 1);
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
    let err = fetch(&client(), &server.url("/a")).await.unwrap_err();
    assert_eq!(server.requests(), 1);
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn a_per_day_quota_429_is_not_retried_although_it_says_reset() {
    let (logs, _guard) = common::capture();
    let server = start([Fault::gemini_429_per_day(), Fault::gemini_ok("never")]).await;
    let err = fetch(&client(), &server.url(GENERATE)).await.unwrap_err();
    assert_eq!(server.requests(), 1);
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
// Server delay hints

#[tokio::test]
async fn retry_after_seconds_is_waited() {
    let server = start([
        Fault::status(429, "slow down").with_header("Retry-After", "1"),
        Fault::ok("ok"),
    ])
    .await;
    let start = Instant::now();
    assert_eq!(fetch(&client(), &server.url("/a")).await.unwrap(), "ok");
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(1000) && elapsed < ms(5000), "{elapsed:?}");
    let seen = server.recorded();
    let gap = seen[1].received - seen[0].received;
    assert!(gap >= ms(1000), "the server saw the retry after {gap:?}");
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_waited_until_that_date() {
    let (logs, _guard) = common::capture();
    // The next whole second at least 1 s ahead: HTTP dates have no fractions.
    let since_epoch = (SystemTime::now() + ms(1000))
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    let target = SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs() + 1);
    let server = start([
        Fault::status(503, "maintenance").with_header("Retry-After", http_date(target)),
        Fault::ok("ok"),
    ])
    .await;
    let start = Instant::now();
    assert_eq!(fetch(&client(), &server.url("/a")).await.unwrap(), "ok");
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(900) && elapsed < ms(5000), "{elapsed:?}");
    // Timers end at or after their deadline; the wall clock may be a little coarser.
    assert!(
        SystemTime::now() + ms(50) >= target,
        "retried before the date in Retry-After"
    );
    let waits = logs.waits_ms();
    assert!(
        waits.len() == 1 && (900..=2100).contains(&waits[0]),
        "{waits:?}"
    );
}

#[tokio::test]
async fn a_gemini_retry_info_delay_is_waited() {
    let server = start([Fault::gemini_429("0.4s"), Fault::gemini_ok("a red square")]).await;
    let start = Instant::now();
    let text = generate(&client(), &server.url(GENERATE), "Describe", b"png")
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(text, "a red square");
    assert_eq!(server.requests(), 2);
    assert!(elapsed >= ms(400) && elapsed < ms(5000), "{elapsed:?}");
    let seen = server.recorded();
    assert!(seen[1].received - seen[0].received >= ms(400));
}

#[tokio::test]
async fn the_retry_line_shows_the_error_and_the_hinted_wait() {
    let (logs, _guard) = common::capture();
    let server = start([Fault::gemini_429("0.4s"), Fault::gemini_ok("ok")]).await;
    fetch(&client(), &server.url(GENERATE)).await.unwrap();
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
    let server = start([Fault::gemini_429("2s"), Fault::gemini_ok("never")]).await;
    let start = Instant::now();
    let err = fetch_capped(&client(), &server.url(GENERATE))
        .await
        .unwrap_err();
    assert!(start.elapsed() < ms(1000), "no wait: {:?}", start.elapsed());
    assert_eq!(server.requests(), 1);
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
    let server = start([
        Fault::status(429, "later").with_header("Retry-After", "5"),
        Fault::ok("never"),
    ])
    .await;
    let start = Instant::now();
    let err = fetch_within_1s(&client(), &server.url("/a"))
        .await
        .unwrap_err();
    assert!(start.elapsed() < ms(900), "no wait: {:?}", start.elapsed());
    assert_eq!(server.requests(), 1);
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
// Transport faults

#[tokio::test]
async fn a_stall_past_the_client_timeout_is_retried() {
    let server = start([
        Fault::Stall(ms(2000)),
        Fault::Stall(ms(2000)),
        Fault::ok("ok"),
    ])
    .await;
    let client = client();
    // One call outside the attribute: the timeout is decided by the `reqwest::Error`'s type.
    let timed_out = client.get(server.url("/a")).send().await.unwrap_err();
    assert!(timed_out.is_timeout());
    let classified = explain(&ApiError::from(timed_out));
    assert_eq!(
        (classified.verdict, classified.rule),
        (Verdict::Retryable, Rule::KnownType)
    );

    let start = Instant::now();
    assert_eq!(fetch(&client, &server.url("/a")).await.unwrap(), "ok");
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(200) && elapsed < ms(1500), "{elapsed:?}");
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_reset_mid_body_is_retried() {
    let server = start([Fault::ResetMidBody, Fault::ok("whole")]).await;
    assert_eq!(fetch(&client(), &server.url("/a")).await.unwrap(), "whole");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_reset_before_the_response_is_retried() {
    let server = start([Fault::ResetBeforeResponse, Fault::ok("ok")]).await;
    assert_eq!(fetch(&client(), &server.url("/a")).await.unwrap(), "ok");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn connection_refused_is_retried_then_gives_up_after_max_retries() {
    let (logs, _guard) = common::capture();
    let url = format!("{}/a", refused_url().await);
    let err = fetch(&client(), &url).await.unwrap_err();
    let mpe = err.exhausted();
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    let last = mpe.last_error::<ApiError>().expect("the typed last error");
    assert!(
        matches!(last, ApiError::Transport(e) if e.is_connect()),
        "{last:?}"
    );
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
    let err = fetch(&client(), &url).await.unwrap_err();
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
    let err = fetch(&client(), &server.url("/a")).await.unwrap_err();
    assert_eq!(server.requests(), 3);
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
    let err = fetch(&client(), &url).await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("?key=[REDACTED])"), "{shown}");
    assert!(!shown.contains("[REDACTED]]"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// The fake Gemini, end to end

#[tokio::test]
async fn the_fake_gemini_with_faults_is_survived_by_the_retries() {
    // With seed 39 and rate 0.5 the three images meet four faults before their answers; the
    // fake's choice depends only on the seed and the request, so this count is fixed.
    let server = FaultServer::gemini(GeminiFaults {
        fault_rate: 0.5,
        seed: 39,
        stall: ms(400),
    })
    .await
    .expect("a fake Gemini");
    let client = client();
    let url = server.url(GENERATE);
    for size in [16usize, 300, 2048] {
        let image = vec![0x89u8; size];
        let text = generate(&client, &url, "What is in this image?", &image)
            .await
            .unwrap();
        assert_eq!(
            text,
            format!("gemini-2.0-flash saw a {size}-byte image/png image.")
        );
    }
    assert_eq!(server.requests(), 7);

    // Only a prompt that asks for it meets the per-day quota, and it is not retried.
    let err = generate(&client, &url, "simulate a per-day quota", b"x")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(server.requests(), 8);
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
    assert_eq!(
        fetch(&client(), &server.url("/")).await.unwrap(),
        "still here"
    );
}
