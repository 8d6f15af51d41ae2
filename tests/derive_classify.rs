//! `#[derive(Classify)]`: each variant is classified as the error it wraps, through
//! `#[error(transparent)]` too, or as `#[classify(..)]` says; other variants by the built-in
//! rules. Against a real local HTTP server where a `reqwest::Error` is needed.

mod common;

use common::on_virtual_clock;

use std::cell::Cell;
use std::io;
use std::time::Duration;

use fault_server::{Fault, FaultServer};
use resilience::http::{HttpError, error_for_status};
use resilience::{
    Classify, GiveUpReason, MediaProcessingError, Rule, Verdict, classify::explain,
    classify::explain_own, retry_with_backoff,
};

/// thiserror's default idiom for a client error: transparent, so `source()` never shows the
/// `reqwest::Error`; the derive still sees its type.
#[derive(Debug, thiserror::Error, Classify)]
enum ClientError {
    #[error(transparent)]
    Request(#[from] reqwest::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
    #[error("the quota is spent: 503 Service Unavailable")]
    #[classify(not_retryable)]
    QuotaSpent,
    #[error("invalid image")]
    #[classify(retryable)]
    StillUploading,
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

/// The same enum without the derive, for the cases where the text rule alone must hold.
#[derive(Debug, thiserror::Error)]
enum PlainClientError {
    #[error(transparent)]
    Request(#[from] reqwest::Error),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a reqwest client")
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.001, max_delay = 0.005, jitter = 0)]
async fn get(client: &reqwest::Client, url: &str) -> Result<String, ClientError> {
    let response = client.get(url).send().await?.error_for_status()?;
    Ok(response.text().await?)
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.001, max_delay = 0.005, jitter = 0)]
async fn get_plain(client: &reqwest::Client, url: &str) -> Result<String, PlainClientError> {
    let response = client.get(url).send().await?.error_for_status()?;
    Ok(response.text().await?)
}

/// `max_hint` below the one second a `Retry-After` can state: a hint that reaches the
/// decision makes the call give up at once, so the test waits for nothing.
#[retry_with_backoff(
    max_retries = 3,
    base_delay = 0.001,
    max_delay = 0.005,
    jitter = 0,
    max_hint = 0.5
)]
async fn get_typed(client: &reqwest::Client, url: &str) -> Result<String, ClientError> {
    let response = error_for_status(client.get(url).send().await?).await?;
    Ok(response.text().await?)
}

async fn server(script: impl IntoIterator<Item = Fault>) -> FaultServer {
    FaultServer::start(script).await.expect("a fault server")
}

#[tokio::test]
async fn a_transparent_reqwest_error_is_classified_by_its_status_not_its_url() {
    for (path, status) in [("/v1/password-reset", 400), ("/connections", 404)] {
        let server = server([Fault::status(status, "no"), Fault::ok("never")]).await;
        let err = get(&client(), &server.url(path)).await.unwrap_err();
        assert_eq!(server.requests(), 1, "{path}: a {status} is not retried");
        assert!(
            matches!(&err, ClientError::Request(e) if e.status().map(|s| s.as_u16()) == Some(status))
        );
        assert_eq!(explain_own(&err).rule, Rule::KnownType, "{path}");
    }
    let server = server([Fault::status(503, "busy"), Fault::ok("fine")]).await;
    assert_eq!(
        get(&client(), &server.url("/connections")).await.unwrap(),
        "fine"
    );
    assert_eq!(server.requests(), 2, "a 503 is");
}

#[tokio::test]
async fn without_the_derive_the_status_in_the_text_decides_and_the_url_does_not() {
    for (path, status) in [("/v1/password-reset", 400), ("/connections", 404)] {
        let server = server([Fault::status(status, "no"), Fault::ok("never")]).await;
        let err = get_plain(&client(), &server.url(path)).await.unwrap_err();
        assert_eq!(server.requests(), 1, "{path}");
        assert!(matches!(err, PlainClientError::Request(_)));
        assert_eq!(explain(&err).rule, Rule::StatusInText, "{path}: {err}");
    }
}

#[tokio::test]
async fn a_transparent_http_error_keeps_its_retry_after_header() {
    let server = server([
        Fault::status(429, "slow down").with_header("Retry-After", "1"),
        Fault::ok("fine"),
    ])
    .await;
    let error = get_typed(&client(), &server.url("/a")).await.unwrap_err();
    // The header's second reached the decision through the transparent variant: above
    // `max_hint`, so no wait and no second request (the wait itself is pinned on a virtual
    // clock in `tests/readme_promises.rs`).
    let ClientError::Exhausted(give_up) = error else {
        panic!("expected the give-up, got {error:?}");
    };
    assert_eq!(
        give_up.reason(),
        GiveUpReason::HintAboveCap {
            retry_after: Duration::from_secs(1),
            max_hint: Duration::from_millis(500),
        }
    );
    assert_eq!(give_up.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(give_up.attempts(), 1);
    assert_eq!(server.requests(), 1);
}

#[test]
fn fields_are_classified_as_their_types_are() {
    let io = |kind| ClientError::Io(io::Error::new(kind, "timeout in the text"));
    assert_eq!(
        io(io::ErrorKind::ConnectionReset).classify(),
        Verdict::Retryable
    );
    assert_eq!(
        io(io::ErrorKind::InvalidData).classify(),
        Verdict::NotRetryable,
        "the kind wins over the text"
    );
    let http = ClientError::Http(HttpError::new(400, None, "timeout must be positive"));
    assert_eq!(http.classify(), Verdict::NotRetryable);
    assert_eq!(explain_own(&http).rule, Rule::KnownType);
    let hinted = ClientError::Http(HttpError::new(503, Some(Duration::from_secs(7)), ""));
    assert_eq!(hinted.retry_after(), Some(Duration::from_secs(7)));
    let chained = ClientError::Other(
        anyhow::Error::new(io::Error::from(io::ErrorKind::ConnectionRefused))
            .context("while resetting the pool"),
    );
    assert_eq!(chained.classify(), Verdict::Retryable);
    let give_up = ClientError::Exhausted(MediaProcessingError::exhausted(
        3,
        io::Error::from(io::ErrorKind::TimedOut),
    ));
    assert_eq!(give_up.classify(), Verdict::NotRetryable);
    assert_eq!(explain_own(&give_up).rule, Rule::InnerGiveUp);
}

#[test]
fn declared_variants_win_over_their_text() {
    assert_eq!(ClientError::QuotaSpent.classify(), Verdict::NotRetryable);
    assert_eq!(explain_own(&ClientError::QuotaSpent).rule, Rule::Declared);
    assert_eq!(ClientError::StillUploading.classify(), Verdict::Retryable);
}

#[test]
fn other_variants_fall_to_the_text_rule() {
    let message = |m: &str| ClientError::Message(m.to_owned());
    assert_eq!(message("502 Bad Gateway").classify(), Verdict::Retryable);
    assert_eq!(
        message("missing field `timeout_seconds`").classify(),
        Verdict::NotRetryable
    );
    assert_eq!(
        explain_own(&message("connection reset")).rule,
        Rule::Keyword
    );
}

#[retry_with_backoff(max_retries = 4, jitter = 0)]
fn upload(calls: &Cell<u32>, answer: fn() -> ClientError) -> Result<(), ClientError> {
    calls.set(calls.get() + 1);
    Err(answer())
}

#[test]
fn the_attribute_follows_the_derive() {
    for (answer, expected) in [
        ((|| ClientError::StillUploading) as fn() -> ClientError, 4),
        (|| ClientError::QuotaSpent, 1),
        (
            || ClientError::Message("scan.png is 5000x500 pixels".into()),
            1,
        ),
    ] {
        let calls = Cell::new(0);
        let (result, _) = on_virtual_clock(|| upload(&calls, answer));
        assert!(result.is_err());
        assert_eq!(calls.get(), expected, "{:?}", answer());
    }
}

// ---------------------------------------------------------------------------------------------
// Generic and borrowing types

#[derive(Debug, thiserror::Error, Classify)]
enum Generic<E> {
    #[error(transparent)]
    Inner(#[from] E),
    #[error("upstream said 503 Service Unavailable")]
    Busy,
}

#[derive(Debug, thiserror::Error, Classify)]
#[error("{message}")]
struct Borrowed<'a> {
    message: &'a str,
}

#[test]
fn a_generic_type_is_classified_through_its_parameter() {
    let reset = Generic::Inner(io::Error::from(io::ErrorKind::ConnectionReset));
    assert_eq!(reset.classify(), Verdict::Retryable);
    assert_eq!(explain_own(&reset).rule, Rule::KnownType);
    let bad = Generic::Inner(io::Error::from(io::ErrorKind::InvalidData));
    assert_eq!(bad.classify(), Verdict::NotRetryable);
    assert_eq!(Generic::<io::Error>::Busy.classify(), Verdict::Retryable);
    assert_eq!(
        explain_own(&Generic::<io::Error>::Busy).rule,
        Rule::StatusInText
    );
}

#[test]
fn a_borrowing_type_is_classified_by_its_text() {
    assert_eq!(
        Borrowed {
            message: "connection reset"
        }
        .classify(),
        Verdict::Retryable
    );
    assert_eq!(
        Borrowed {
            message: "400 Bad Request"
        }
        .classify(),
        Verdict::NotRetryable
    );
}

// ---------------------------------------------------------------------------------------------
// A body that does not decode

#[derive(Debug, serde::Deserialize)]
struct Config {
    #[allow(dead_code)] // read only to make the decoding fail
    timeout: u64,
}

#[retry_with_backoff(max_retries = 3, base_delay = 0.001, max_delay = 0.005, jitter = 0)]
async fn get_config(client: &reqwest::Client, url: &str) -> Result<Config, ClientError> {
    Ok(client.get(url).send().await?.json::<Config>().await?)
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_not_retried_whatever_its_field_names() {
    let server = server([Fault::ok(r#"{"retries": 3}"#), Fault::ok("{}")]).await;
    let err = get_config(&client(), &server.url("/config"))
        .await
        .unwrap_err();
    assert_eq!(server.requests(), 1, "{err}");
    assert!(
        matches!(&err, ClientError::Request(e) if e.is_decode()),
        "{err:?}"
    );
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("missing field `timeout`")),
        "{cause:?}"
    );
    assert_eq!(explain_own(&err).rule, Rule::KnownType);
}
