//! No credential reaches a log event or any standard printing of the give-up error (the
//! README's "Secrets"), while code that asks for the typed last error still gets it whole.

mod common;

use common::on_virtual_clock;

use std::cell::Cell;
use std::error::Error;
use std::fmt;

use resilience::{MediaProcessingError, retry_with_backoff};

/// One secret of each class the README lists, as client errors print them.
const SECRETS: &[&str] = &[
    "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
    "sk-proj-Zq8vR2mT5wX1yB4nC7kD0fG3hJ6",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    "hunter2-db-password",
    "s3cr3t-client-secret",
    "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl",
];

/// An upstream failure whose text, `Debug` and cause all hold credentials.
#[derive(Debug)]
struct UpstreamError {
    url: String,
    body: String,
    cause: TransportError,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "503 Service Unavailable for url ({})", self.url)
    }
}

impl Error for UpstreamError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.cause)
    }
}

#[derive(Debug)]
struct TransportError {
    header: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request headers: {}", self.header)
    }
}

impl Error for TransportError {}

fn upstream() -> UpstreamError {
    UpstreamError {
        url: format!(
            "https://api.test/v1/models?apiKey={}&alt=json&X-Amz-Credential={}%2F20250101&X-Amz-Signature={}",
            SECRETS[0], SECRETS[2], SECRETS[3],
        ),
        body: format!(
            r#"{{"error": "bad gateway", "client_secret": "{}", "db": "postgres://app:{}@db.internal/app"}}"#,
            SECRETS[5], SECRETS[4],
        ),
        cause: TransportError {
            header: format!(
                r#"{{"authorization": "Bearer {}", "x-api-key": "{}", "x-token": "{}"}}"#,
                SECRETS[7], SECRETS[1], SECRETS[6],
            ),
        },
    }
}

#[retry_with_backoff(max_retries = 2, jitter = 0)]
fn call(calls: &Cell<u32>) -> anyhow::Result<()> {
    calls.set(calls.get() + 1);
    Err(upstream().into())
}

#[track_caller]
fn assert_no_secret(what: &str, shown: &str) {
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{what} shows {secret}: {shown}");
    }
}

#[test]
fn no_way_of_printing_the_give_up_shows_a_secret() {
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| call(&calls));
    let error = result.unwrap_err();
    assert_eq!(calls.get(), 2);

    let messages = logs.messages();
    assert_eq!(messages.len(), 2, "a retry and a give-up: {messages:?}");
    for message in &messages {
        assert_no_secret("a log line", message);
        assert!(
            message.contains("request headers"),
            "the cause is shown: {message}"
        );
    }
    assert_no_secret("anyhow {}", &format!("{error}"));
    assert_no_secret("anyhow {:#}", &format!("{error:#}"));
    assert_no_secret("anyhow {:?}", &format!("{error:?}"));
    assert_no_secret("anyhow {:#?}", &format!("{error:#?}"));
    let give_up = error
        .downcast_ref::<MediaProcessingError>()
        .expect("the give-up error");
    assert_no_secret("{}", &give_up.to_string());
    assert_no_secret("{:?}", &format!("{give_up:?}"));
    assert_no_secret("{:#?}", &format!("{give_up:#?}"));
    assert_no_secret("last_error_message()", give_up.last_error_message());
    let mut link: Option<&(dyn Error + 'static)> = Some(give_up);
    let mut links = 0;
    while let Some(error) = link {
        assert_no_secret("a source() link's Display", &error.to_string());
        assert_no_secret("a source() link's Debug", &format!("{error:?}"));
        link = error.source();
        links += 1;
    }
    assert_eq!(links, 3, "give-up, upstream, transport");
    assert!(format!("{error:#}").contains("[REDACTED]"));

    // The typed value is still there, whole, for code that asks for it.
    let last = give_up.last_error::<UpstreamError>().expect("typed");
    assert!(last.url.contains(SECRETS[0]));
    assert!(last.body.contains(SECRETS[5]));
    assert!(give_up.find::<TransportError>().is_some());
}

#[test]
fn an_application_secret_is_hidden_wherever_it_stands() {
    // Only this test registers it, and it is distinctive: other tests cannot see it.
    const KEY: &str = "tenant-7f3a9c-shared-credential";
    resilience::redact::add_secret(KEY);
    let give_up = MediaProcessingError::exhausted(1, format!("tenant {KEY} refused: 503"));
    assert_no_secret("{}", &give_up.to_string());
    assert!(!give_up.to_string().contains(KEY), "{give_up}");
    assert!(!format!("{give_up:?}").contains(KEY));
}
