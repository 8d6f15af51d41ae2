//! The runtime without the attribute: `Retry::new(&policy).call(..)` / `.call_async(..)`, with
//! the same attempts, waits, logs and give-up error as `#[retry_with_backoff]`.

mod common;

use common::{media_error, on_virtual_clock};

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::sleep::{VirtualClock, with_sleeper};
use resilience::{
    DeadlineExceeded, GiveUpReason, InvalidPolicy, MediaProcessingError, Retry, RetryPolicy,
};
use tracing::Level;

const RESET_TEXT: &str = "connection reset by peer";

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, RESET_TEXT)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn no_jitter(max_retries: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(max_retries)
        .jitter(Duration::ZERO)
        .build()
        .expect("valid policy")
}

fn assert_send<T: Send>(_: &T) {}

// ---------------------------------------------------------------------------------------------
// Policy builder

#[test]
fn builder_defaults_are_the_attribute_defaults() {
    let policy = RetryPolicy::builder().build().unwrap();
    assert_eq!(policy, RetryPolicy::default());
    assert_eq!(policy.max_retries(), 5);
    assert_eq!(policy.base_delay(), secs(1.0));
    assert_eq!(policy.max_delay(), secs(30.0));
    assert_eq!(policy.jitter(), secs(1.0));
    assert_eq!(policy.timeout(), None);
}

#[test]
fn builder_rejects_zero_attempts() {
    let err = RetryPolicy::builder().max_retries(0).build().unwrap_err();
    assert_eq!(err, InvalidPolicy::NoAttempts);
    assert!(err.to_string().contains("max_retries"), "{err}");
}

#[test]
fn builder_rejects_a_base_delay_above_max_delay() {
    let err = RetryPolicy::builder()
        .base_delay(secs(5.0))
        .max_delay(secs(2.0))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        InvalidPolicy::BaseAboveMax {
            base_delay: secs(5.0),
            max_delay: secs(2.0)
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("base_delay") && text.contains("max_delay"),
        "{text}"
    );
    // The default cap is 30 s: a larger base alone is refused too.
    assert!(matches!(
        RetryPolicy::builder().base_delay(secs(31.0)).build(),
        Err(InvalidPolicy::BaseAboveMax { .. })
    ));
}

#[test]
fn builder_rejects_a_zero_timeout() {
    let err = RetryPolicy::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, InvalidPolicy::ZeroTimeout);
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn builder_accepts_the_edges_of_the_valid_ranges() {
    let policy = RetryPolicy::builder()
        .max_retries(1)
        .base_delay(secs(2.0))
        .max_delay(secs(2.0))
        .jitter(Duration::ZERO)
        .timeout(Duration::from_nanos(1))
        .build()
        .expect("base == max, zero jitter, one attempt and a tiny timeout are valid");
    assert_eq!(policy.max_retries(), 1);
    assert_eq!(policy.timeout(), Some(Duration::from_nanos(1)));
    let zero = RetryPolicy::builder()
        .base_delay(Duration::ZERO)
        .max_delay(Duration::ZERO)
        .build()
        .expect("zero delays are valid");
    assert_eq!(zero.max_delay(), Duration::ZERO);
}

// ---------------------------------------------------------------------------------------------
// `call`: attempts, waits

#[test]
fn call_retries_a_flaky_closure_until_it_succeeds_on_attempt_n() {
    let policy = no_jitter(5);
    for n in 1..=5u32 {
        let calls = Cell::new(0u32);
        let (result, clock) = on_virtual_clock(|| {
            Retry::new(&policy).call(|| {
                calls.set(calls.get() + 1);
                if calls.get() < n {
                    Err(reset())
                } else {
                    Ok(calls.get())
                }
            })
        });
        assert_eq!(result.unwrap(), n);
        assert_eq!(calls.get(), n);
        let expected: Vec<Duration> = (1..n).map(|i| secs(f64::from(1u32 << i))).collect();
        assert_eq!(clock.sleeps(), expected);
    }
}

#[test]
fn call_gives_up_after_max_retries_with_media_processing_error_in_io_error() {
    let policy = no_jitter(3);
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        Retry::new(&policy).call(|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(reset())
        })
    });
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps(), vec![secs(2.0), secs(4.0)]);
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    let mpe = media_error(&err);
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    assert_eq!(mpe.last_error_message(), RESET_TEXT);
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}

#[test]
fn call_with_one_attempt_gives_up_on_the_first_retryable_error() {
    let policy = RetryPolicy::builder().max_retries(1).build().unwrap();
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        Retry::new(&policy).call(|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(reset())
        })
    });
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
    assert_eq!(
        result.unwrap_err().to_string(),
        format!("Failed after 1 retries: {RESET_TEXT}")
    );
}

#[test]
fn call_returns_a_non_retryable_error_unchanged_after_one_attempt() {
    let policy = no_jitter(5);
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        Retry::new(&policy).call(|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "timeout field missing",
            ))
        })
    });
    let err = result.unwrap_err();
    assert_eq!(calls.get(), 1, "typed InvalidData wins over the text");
    assert!(clock.sleeps().is_empty());
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "timeout field missing");
    assert!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<MediaProcessingError>())
            .is_none()
    );
}

#[test]
fn call_with_default_policy_waits_in_the_jitter_windows_and_under_max_delay() {
    let policy = RetryPolicy::builder()
        .max_retries(6)
        .max_delay(secs(10.0))
        .build()
        .unwrap();
    for _ in 0..50 {
        let (logs, _guard) = common::capture();
        let (_, clock) =
            on_virtual_clock(|| Retry::new(&policy).call(|| -> io::Result<()> { Err(reset()) }));
        let sleeps = clock.sleeps();
        assert_eq!(sleeps.len(), 5);
        for (i, &wait) in sleeps[..3].iter().enumerate() {
            let low = secs(f64::from(1u32 << (i + 1)));
            assert!(
                wait >= low && wait < low + secs(1.0),
                "wait {}: {wait:?}",
                i + 1
            );
        }
        // 16.x s and 32.x s are capped at 10 s.
        assert_eq!(&sleeps[3..], &[secs(10.0), secs(10.0)]);
        let logged: Vec<u128> = logs.waits_ms().into_iter().map(u128::from).collect();
        let slept: Vec<u128> = sleeps.iter().map(Duration::as_millis).collect();
        assert_eq!(logged, slept);
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

#[test]
fn call_logs_the_same_lines_as_the_attribute_with_the_given_name() {
    let policy = no_jitter(3);
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        Retry::new(&policy).named("x").call(|| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(reset())
            } else {
                Ok(())
            }
        })
    });
    result.unwrap();
    let records = logs.records();
    logs.assert_lines(common::RESET_TWICE_THEN_SUCCESS);
    logs.assert_fields("x", 3);
    assert_eq!(records[0].field("delay_ms"), Some("2000"));
    assert_eq!(records[1].field("delay_ms"), Some("4000"));
}

#[test]
fn call_logs_nothing_on_first_success_one_event_on_give_up_and_on_non_retryable() {
    let policy = no_jitter(3);

    let (logs, _guard) = common::capture();
    let (result, _) = on_virtual_clock(|| Retry::new(&policy).call(|| io::Result::Ok(7)));
    assert_eq!(result.unwrap(), 7);
    assert!(logs.records().is_empty());

    let (logs, _guard) = common::capture();
    let _ = on_virtual_clock(|| {
        Retry::new(&policy)
            .named("gives_up")
            .call(|| -> io::Result<()> { Err(reset()) })
    });
    let errors = logs.at_level(Level::ERROR);
    assert_eq!(errors.len(), 1, "{:?}", logs.records());
    assert_eq!(logs.records().len(), 3);
    assert!(errors[0].message.contains(RESET_TEXT));
    assert_eq!(errors[0].field("function"), Some("gives_up"));
    assert_eq!(errors[0].field("attempt"), Some("3"));

    let (logs, _guard) = common::capture();
    let _ = on_virtual_clock(|| {
        Retry::new(&policy).call(|| -> io::Result<()> {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "401 Unauthorized",
            ))
        })
    });
    let records = logs.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].message.contains("401 Unauthorized"));
    assert_eq!(
        records[0].field("function"),
        Some("closure"),
        "the default name"
    );
    assert_eq!(records[0].field("attempt"), Some("1"));
}

// ---------------------------------------------------------------------------------------------
// `classify_with`

#[derive(Debug, PartialEq, Eq)]
enum MyErr {
    Busy,
    Broken(String),
    GaveUp { attempts: u32, text: String },
}

impl fmt::Display for MyErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MyErr::Busy => f.write_str("busy"),
            MyErr::Broken(m) => write!(f, "broken: {m}"),
            MyErr::GaveUp { text, .. } => f.write_str(text),
        }
    }
}

impl Error for MyErr {}

impl From<MediaProcessingError> for MyErr {
    fn from(e: MediaProcessingError) -> Self {
        MyErr::GaveUp {
            attempts: e.attempts(),
            text: e.to_string(),
        }
    }
}

#[test]
fn classify_with_a_bool_closure_decides_for_a_user_error() {
    let policy = no_jitter(4);
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        Retry::new(&policy)
            .classify_with(|e: &MyErr| matches!(e, MyErr::Busy))
            .call(|| -> Result<(), MyErr> {
                calls.set(calls.get() + 1);
                Err(MyErr::Busy)
            })
    });
    assert_eq!(
        calls.get(),
        4,
        "`busy` has no retryable text, the closure says retry"
    );
    assert_eq!(clock.sleeps().len(), 3);
    assert_eq!(
        result.unwrap_err(),
        MyErr::GaveUp {
            attempts: 4,
            text: "Failed after 4 retries: busy".into()
        }
    );

    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        Retry::new(&policy)
            .classify_with(|e: &MyErr| matches!(e, MyErr::Busy))
            .call(|| -> Result<(), MyErr> {
                calls.set(calls.get() + 1);
                Err(MyErr::Broken("503 Service Unavailable".into()))
            })
    });
    assert_eq!(calls.get(), 1, "the closure refuses despite the 503 text");
    assert_eq!(
        result.unwrap_err(),
        MyErr::Broken("503 Service Unavailable".into())
    );
}

#[test]
fn classify_with_can_refuse_an_io_kind_the_built_in_rules_retry() {
    let policy = no_jitter(4);
    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        Retry::new(&policy)
            .classify_with(|e: &io::Error| e.kind() != io::ErrorKind::ConnectionReset)
            .call(|| -> io::Result<()> {
                calls.set(calls.get() + 1);
                Err(reset())
            })
    });
    assert_eq!(calls.get(), 1);
    let err = result.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(err.to_string(), RESET_TEXT);
}

#[test]
fn classify_with_gives_up_into_anyhow_and_a_thiserror_enum() {
    #[derive(Debug, thiserror::Error)]
    enum AppError {
        #[error("upstream: {0}")]
        Upstream(String),
        #[error(transparent)]
        Exhausted(#[from] MediaProcessingError),
    }

    let policy = no_jitter(2);
    let (result, _) = on_virtual_clock(|| {
        Retry::new(&policy)
            .classify_with(|e: &anyhow::Error| e.to_string().contains("503"))
            .call(|| -> anyhow::Result<()> { Err(anyhow::anyhow!("HTTP 503")) })
    });
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "Failed after 2 retries: HTTP 503");
    let mpe = err
        .downcast_ref::<MediaProcessingError>()
        .expect("anyhow holds it");
    assert_eq!(mpe.attempts(), 2);
    assert_eq!(mpe.last_error_message(), "HTTP 503");
    assert_eq!(err.chain().count(), 2, "give-up, then the last error");

    let (result, _) = on_virtual_clock(|| {
        Retry::new(&policy)
            .classify_with(|_: &AppError| true)
            .call(|| -> Result<(), AppError> { Err(AppError::Upstream("slow".into())) })
    });
    let Err(AppError::Exhausted(mpe)) = result else {
        panic!("expected Exhausted");
    };
    assert_eq!(mpe.to_string(), "Failed after 2 retries: upstream: slow");
    assert!(matches!(mpe.last_error::<AppError>(), Some(AppError::Upstream(m)) if m == "slow"));
}

#[test]
fn call_gives_up_into_a_boxed_error_with_the_typed_last_error() {
    let policy = no_jitter(3);
    let (result, _) = on_virtual_clock(|| {
        Retry::new(&policy)
            .call(|| -> Result<(), Box<dyn Error + Send + Sync>> { Err(Box::new(reset())) })
    });
    let err = result.unwrap_err();
    let mpe = err
        .downcast_ref::<MediaProcessingError>()
        .expect("boxed give-up");
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
}

// ---------------------------------------------------------------------------------------------
// `timeout` in `call`

#[test]
fn call_with_timeout_gives_up_instead_of_starting_a_wait_past_the_deadline() {
    let policy = RetryPolicy::builder()
        .max_retries(10)
        .jitter(Duration::ZERO)
        .timeout(secs(10.0))
        .build()
        .unwrap();
    let clock = Rc::new(VirtualClock::new());
    let calls = Cell::new(0u32);
    let result = with_sleeper(clock.clone(), || {
        Retry::new(&policy).call(|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            clock.advance(secs(3.0));
            Err(reset())
        })
    });
    // 0-3 attempt, 3-5 wait, 5-8 attempt, a 4 s wait would end at 12 s > 10 s.
    assert_eq!(calls.get(), 2);
    assert_eq!(clock.sleeps(), vec![secs(2.0)]);
    assert_eq!(clock.elapsed(), secs(8.0));
    let err = result.unwrap_err();
    let mpe = media_error(&err);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::DeadlineExceeded {
            timeout: secs(10.0)
        }
    );
    assert_eq!(mpe.attempts(), 2);
}

// ---------------------------------------------------------------------------------------------
// `call_async`

#[tokio::test(start_paused = true)]
async fn call_async_retries_and_virtual_time_equals_the_sum_of_waits() {
    let (logs, _guard) = common::capture();
    let policy = no_jitter(4);
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let answer = Retry::new(&policy)
        .named("fetch")
        .call_async(|| async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::task::yield_now().await;
            if n < 4 { Err(reset()) } else { Ok(n) }
        })
        .await
        .unwrap();
    assert_eq!(answer, 4);
    assert_eq!(start.elapsed(), secs(2.0 + 4.0 + 8.0));
    assert_eq!(logs.waits_ms(), vec![2000, 4000, 8000]);
    assert_eq!(
        logs.messages().last().map(String::as_str),
        Some("Success on attempt 4")
    );
    assert!(
        logs.records()
            .iter()
            .all(|r| r.field("function") == Some("fetch"))
    );
}

#[tokio::test(start_paused = true)]
async fn call_async_gives_up_and_returns_non_retryable_errors_unchanged() {
    let policy = no_jitter(3);
    let calls = &AtomicU32::new(0);
    let err = Retry::new(&policy)
        .call_async(|| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            io::Result::<()>::Err(reset())
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    assert_eq!(media_error(&err).attempts(), 3);

    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let err = Retry::new(&policy)
        .classify_with(|e: &MyErr| *e == MyErr::Busy)
        .call_async(|| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Result::<(), MyErr>::Err(MyErr::Broken("bad image".into()))
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err, MyErr::Broken("bad image".into()));
}

#[tokio::test(start_paused = true)]
async fn call_async_timeout_cuts_a_slow_attempt_with_deadline_exceeded() {
    let policy = RetryPolicy::builder().timeout(secs(3.0)).build().unwrap();
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let err = Retry::new(&policy)
        .call_async(|| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(secs(10.0)).await;
            Result::<(), Box<dyn Error + Send + Sync>>::Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), secs(3.0));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mpe = err.downcast_ref::<MediaProcessingError>().expect("give-up");
    assert_eq!(mpe.attempts(), 1);
    assert_eq!(
        mpe.last_error::<DeadlineExceeded>(),
        Some(&DeadlineExceeded { timeout: secs(3.0) })
    );
    assert!(
        matches!(mpe.reason(), GiveUpReason::DeadlineExceeded { timeout } if timeout == secs(3.0))
    );
    assert!(
        err.to_string().starts_with("Failed after 1 retries: "),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn call_async_timeout_gives_up_instead_of_a_wait_past_the_deadline() {
    let policy = RetryPolicy::builder()
        .jitter(Duration::ZERO)
        .timeout(secs(5.0))
        .build()
        .unwrap();
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let err = Retry::new(&policy)
        .call_async(|| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            io::Result::<()>::Err(reset())
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), secs(2.0));
    assert!(matches!(
        media_error(&err).reason(),
        GiveUpReason::DeadlineExceeded { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn call_async_future_is_send_and_dropping_it_mid_wait_stops_attempts() {
    static POLICY: RetryPolicy = RetryPolicy::new();
    let calls = Arc::new(AtomicU32::new(0));
    let make = |calls: Arc<AtomicU32>| async move {
        Retry::new(&POLICY)
            .call_async(move || {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    io::Result::<()>::Err(reset())
                }
            })
            .await
    };
    let fut = make(calls.clone());
    assert_send(&fut);
    // The first wait is 2.x s; drop the call 1 s into it.
    assert!(tokio::time::timeout(secs(1.0), fut).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(secs(120.0)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Spawned on the runtime, then aborted mid-wait.
    let calls = Arc::new(AtomicU32::new(0));
    let handle = tokio::spawn(make(calls.clone()));
    tokio::time::sleep(secs(1.0)).await;
    handle.abort();
    assert!(handle.await.unwrap_err().is_cancelled());
    tokio::time::sleep(secs(120.0)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[derive(Debug, thiserror::Error)]
enum PlainError {
    #[error("fetch failed")]
    Fetch(#[source] io::Error),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

#[test]
fn chain_rules_classify_a_plain_error_enum_by_its_source() {
    let policy = RetryPolicy::builder()
        .max_retries(3)
        .jitter(Duration::ZERO)
        .build()
        .unwrap();
    let calls = Cell::new(0);
    let (result, clock): (Result<(), PlainError>, _) = on_virtual_clock(|| {
        Retry::new(&policy)
            .classify_with(resilience::ChainRules)
            .call(|| {
                calls.set(calls.get() + 1);
                Err(PlainError::Fetch(io::Error::from(
                    io::ErrorKind::ConnectionReset,
                )))
            })
    });
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps().len(), 2);
    assert!(matches!(result, Err(PlainError::Exhausted(e)) if e.attempts() == 3));
}
