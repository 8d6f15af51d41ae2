//! The closure API, without the attribute: `(|| op()).retry(&policy).call()` for a blocking
//! closure and `(|| async_op()).retry(&policy).await` on tokio, with `.named`, `.when` and
//! `.notify`.
//!
//! It pins that the closure API makes the attribute's attempts, waits (on the virtual clock,
//! or tokio's paused clock), log lines and give-up error; that the result says how the call
//! failed, `RetryError::NotRetryable(e)` with the closure's error unchanged after one attempt
//! or `RetryError::GaveUp(e)` with the typed last error inside; that `into_error` gives `?`
//! the function's own error type (`io::Error`, `anyhow::Error`, a `thiserror` enum); that
//! `.when` decides first and its `Verdict::Unknown` falls through to the built-in rules, as
//! `retry_if` does; that `.notify` sees each error and wait; the `timeout` on both forms; that
//! the async form is `Send` and stops when dropped. And the policy builder's checks.

mod common;

use common::{media_error, on_virtual_clock};

use std::cell::Cell;
use std::error::Error;
use std::fmt::Debug;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::backoff::with_jitter_seed;
use resilience::sleep::{VirtualClock, with_sleeper};
use resilience::{
    BlockingRetryable, BoxError, DeadlineExceeded, GiveUpReason, InvalidPolicy,
    MediaProcessingError, RetryError, RetryPolicy, Retryable, Verdict, retry_with_backoff,
};
use tracing::Level;

const RESET_TEXT: &str = "connection reset by peer";

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, RESET_TEXT)
}

/// A 400-like error: the kind says the data is wrong, whatever the text says.
fn invalid_data() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "timeout field missing")
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

/// The give-up error of a result that must be one.
#[track_caller]
fn gave_up<T: Debug, E: Debug>(result: Result<T, RetryError<E>>) -> MediaProcessingError {
    match result {
        Err(RetryError::GaveUp(give_up)) => give_up,
        other => panic!("expected RetryError::GaveUp, got {other:?}"),
    }
}

/// The closure's own error of a result that must be returned unchanged.
#[track_caller]
fn not_retryable<T: Debug, E: Debug>(result: Result<T, RetryError<E>>) -> E {
    match result {
        Err(RetryError::NotRetryable(error)) => error,
        other => panic!("expected RetryError::NotRetryable, got {other:?}"),
    }
}

/// The texts of an error and its `source()` chain.
fn chain_texts(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut texts = Vec::new();
    let mut link = Some(error);
    while let Some(error) = link {
        texts.push(error.to_string());
        link = error.source();
    }
    texts
}

// ---------------------------------------------------------------------------------------------
// Policy builder

#[test]
fn builder_starts_from_the_readme_defaults() {
    let policy = RetryPolicy::builder().build().unwrap();
    assert_eq!(policy, RetryPolicy::default());
    assert_eq!(policy.max_retries(), 5);
    assert_eq!(policy.base_delay(), secs(1.0));
    assert_eq!(policy.max_delay(), secs(30.0));
    assert_eq!(policy.jitter(), secs(1.0));
    assert_eq!(policy.timeout(), None);
    assert_eq!(policy.max_hint(), secs(120.0));
}

#[retry_with_backoff]
fn with_no_arguments(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

#[retry_with_backoff(max_retries = 7)]
fn with_seven_attempts(calls: &Cell<u32>) -> io::Result<()> {
    calls.set(calls.get() + 1);
    Err(reset())
}

/// The attempts and waits of a call that always fails with a reset, the jitter drawn from
/// `seed`.
fn attempts_and_waits(seed: u64, call: impl FnOnce(&Cell<u32>)) -> (u32, Vec<Duration>) {
    let calls = Cell::new(0);
    let ((), clock) = on_virtual_clock(|| with_jitter_seed(seed, || call(&calls)));
    (calls.get(), clock.sleeps())
}

/// The defaults are written once, in the runtime's `RetryPolicy`: the attribute, given no
/// value for a setting, must behave as `RetryPolicy::new()` does, jitter draw for jitter
/// draw. A default that the macro kept (or changed) on its own shows as other waits.
#[test]
fn the_attribute_takes_its_defaults_from_retry_policy_new() {
    let closure = |policy: RetryPolicy| {
        move |calls: &Cell<u32>| {
            let result = (|| -> io::Result<()> {
                calls.set(calls.get() + 1);
                Err(reset())
            })
            .retry(&policy)
            .call();
            gave_up(result);
        }
    };
    let seven = RetryPolicy::builder().max_retries(7).build().unwrap();
    for seed in 0..20 {
        let (attempts, waits) = attempts_and_waits(seed, |calls| {
            with_no_arguments(calls).unwrap_err();
        });
        assert_eq!(
            (attempts, waits.clone()),
            attempts_and_waits(seed, closure(RetryPolicy::new())),
            "seed {seed}"
        );
        // And they are the README's: 5 attempts, waits of 2^n s plus under 1 s of jitter.
        assert_eq!(attempts, 5);
        for (n, wait) in (1..).zip(&waits) {
            let low = secs(f64::from(1u32 << n));
            assert!(
                *wait >= low && *wait < low + secs(1.0),
                "wait {n}: {wait:?}"
            );
        }

        // Attempts 6 and 7 would wait 32 s and 64 s: the default cap makes both 30 s.
        let (attempts, waits) = attempts_and_waits(seed, |calls| {
            with_seven_attempts(calls).unwrap_err();
        });
        assert_eq!(
            (attempts, waits.clone()),
            attempts_and_waits(seed, closure(seven)),
            "seed {seed}"
        );
        assert_eq!(attempts, 7);
        assert_eq!(waits[4..], [secs(30.0), secs(30.0)], "seed {seed}");
    }
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
    assert_eq!(
        RetryPolicy::builder().base_delay(secs(31.0)).build(),
        Err(InvalidPolicy::BaseAboveMax {
            base_delay: secs(31.0),
            max_delay: secs(30.0)
        })
    );
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
// Blocking `call`: attempts, waits, the result

#[test]
fn blocking_call_retries_a_flaky_closure_until_it_succeeds_on_attempt_n() {
    let policy = no_jitter(5);
    for n in 1..=5u32 {
        let calls = Cell::new(0u32);
        let (result, clock) = on_virtual_clock(|| {
            (|| {
                calls.set(calls.get() + 1);
                if calls.get() < n {
                    Err(reset())
                } else {
                    Ok(calls.get())
                }
            })
            .retry(&policy)
            .call()
        });
        assert_eq!(result.unwrap(), n);
        assert_eq!(calls.get(), n);
        let expected: Vec<Duration> = (1..n).map(|i| secs(f64::from(1u32 << i))).collect();
        assert_eq!(clock.sleeps(), expected);
    }
}

#[test]
fn io_error_not_retryable_after_one_call_and_gave_up_after_max_retries_with_typed_last_error() {
    let policy = no_jitter(3);

    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(invalid_data())
        })
        .retry(&policy)
        .call()
    });
    let err = not_retryable(result);
    assert_eq!(
        calls.get(),
        1,
        "typed InvalidData wins over the `timeout` text"
    );
    assert!(clock.sleeps().is_empty());
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "timeout field missing");

    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(reset())
        })
        .retry(&policy)
        .call()
    });
    let mpe = gave_up(result);
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps(), vec![secs(2.0), secs(4.0)]);
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    assert_eq!(
        mpe.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    assert_eq!(mpe.last_error_message(), RESET_TEXT);
    let last = mpe.last_error::<io::Error>().expect("the typed last error");
    assert_eq!(last.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(last.to_string(), RESET_TEXT);
}

#[test]
fn anyhow_error_not_retryable_after_one_call_and_gave_up_after_max_retries_with_typed_last_error() {
    let policy = no_jitter(3);

    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        (|| -> anyhow::Result<()> {
            calls.set(calls.get() + 1);
            Err(anyhow::Error::new(invalid_data()))
        })
        .retry(&policy)
        .call()
    });
    let err = not_retryable(result);
    assert_eq!(calls.get(), 1);
    assert_eq!(
        err.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::InvalidData),
        "the closure's anyhow::Error, unchanged"
    );

    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> anyhow::Result<()> {
            calls.set(calls.get() + 1);
            Err(anyhow::Error::new(reset()))
        })
        .retry(&policy)
        .call()
    });
    let mpe = gave_up(result);
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps(), vec![secs(2.0), secs(4.0)]);
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(mpe.reason(), GiveUpReason::AttemptsExhausted);
    assert_eq!(
        mpe.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );

    // With a context, the io::Error is a cause: `find` reaches it.
    let (result, _) = on_virtual_clock(|| {
        (|| -> anyhow::Result<()> { Err(anyhow::Error::new(reset()).context("while fetching")) })
            .retry(&policy)
            .call()
    });
    let mpe = gave_up(result);
    assert_eq!(
        mpe.to_string(),
        format!("Failed after 3 retries: while fetching: {RESET_TEXT}")
    );
    assert_eq!(
        mpe.find::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}

/// `anyhow::Error` converts into a `BoxError` as anyhow's private `ErrorImpl<io::Error>`,
/// which neither downcasts to `io::Error` nor lists it in its `source()` chain (anyhow
/// documents this for `into_boxed_dyn_error`). So the typed last error is lost for the most
/// common `anyhow::Error`, one built from an `io::Error` with `?`.
#[test]

fn anyhow_give_up_keeps_the_io_error_it_was_built_from_typed() {
    let policy = no_jitter(3);
    let (result, _) = on_virtual_clock(|| {
        (|| -> anyhow::Result<()> { Err(anyhow::Error::new(reset())) })
            .retry(&policy)
            .call()
    });
    let mpe = gave_up(result);
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        mpe.find::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
}

#[test]
fn blocking_call_with_one_attempt_gives_up_on_the_first_retryable_error() {
    let policy = RetryPolicy::builder().max_retries(1).build().unwrap();
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(reset())
        })
        .retry(&policy)
        .call()
    });
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
    let mpe = gave_up(result);
    assert_eq!(mpe.attempts(), 1);
    assert_eq!(
        mpe.to_string(),
        format!("Failed after 1 retries: {RESET_TEXT}")
    );
    logs.assert_lines(&[(
        Level::ERROR,
        "Giving up after 1 attempt (all attempts failed): connection reset by peer",
    )]);
}

#[test]
fn blocking_call_returns_a_non_retryable_error_unchanged_after_one_attempt() {
    let policy = no_jitter(5);
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(invalid_data())
        })
        .retry(&policy)
        .call()
    });
    let err = not_retryable(result);
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "timeout field missing");
    assert!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<MediaProcessingError>())
            .is_none(),
        "not wrapped in a give-up"
    );
    logs.assert_lines(&[(
        Level::WARN,
        "Not retrying: timeout field missing (decided by the error's type)",
    )]);
}

#[test]
fn blocking_call_with_default_jitter_waits_in_the_jitter_windows_and_under_max_delay() {
    let policy = RetryPolicy::builder()
        .max_retries(6)
        .max_delay(secs(10.0))
        .build()
        .unwrap();
    for _ in 0..50 {
        let (logs, _guard) = common::capture();
        let (result, clock) = on_virtual_clock(|| {
            (|| -> io::Result<()> { Err(reset()) })
                .retry(&policy)
                .call()
        });
        assert_eq!(gave_up(result).attempts(), 6);
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

#[test]
fn retry_error_displays_as_what_it_holds_and_give_up_is_only_for_gave_up() {
    let policy = no_jitter(2);
    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> { Err(invalid_data()) })
            .retry(&policy)
            .call()
    });
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "timeout field missing");
    assert!(err.give_up().is_none());

    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> { Err(reset()) })
            .retry(&policy)
            .call()
    });
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Failed after 2 retries: {RESET_TEXT}")
    );
    assert_eq!(err.give_up().map(MediaProcessingError::attempts), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Logs and `named`

#[test]
fn blocking_call_logs_the_same_lines_as_the_attribute_with_the_given_name() {
    let policy = no_jitter(3);
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        (|| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(reset())
            } else {
                Ok(())
            }
        })
        .retry(&policy)
        .named("x")
        .call()
    });
    result.unwrap();
    let records = logs.records();
    logs.assert_lines(common::RESET_TWICE_THEN_SUCCESS);
    logs.assert_fields("x", 3);
    assert_eq!(records[0].field("delay_ms"), Some("2000"));
    assert_eq!(records[1].field("delay_ms"), Some("4000"));
}

#[test]
fn blocking_call_logs_nothing_on_first_success_one_error_on_give_up_one_warn_on_non_retryable() {
    let policy = no_jitter(3);

    let (logs, _guard) = common::capture();
    let (result, _) = on_virtual_clock(|| (|| io::Result::Ok(7)).retry(&policy).call());
    assert_eq!(result.unwrap(), 7);
    assert!(logs.records().is_empty());

    let (logs, _guard) = common::capture();
    let _ = on_virtual_clock(|| {
        (|| -> io::Result<()> { Err(reset()) })
            .retry(&policy)
            .named("gives_up")
            .call()
    });
    let errors = logs.at_level(Level::ERROR);
    assert_eq!(errors.len(), 1, "{:?}", logs.records());
    assert_eq!(logs.records().len(), 3);
    assert_eq!(
        errors[0].message,
        "Giving up after 3 attempts (all attempts failed): connection reset by peer"
    );
    assert_eq!(errors[0].field("function"), Some("gives_up"));
    assert_eq!(errors[0].field("attempt"), Some("3"));

    let (logs, _guard) = common::capture();
    let _ = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "401 Unauthorized",
            ))
        })
        .retry(&policy)
        .call()
    });
    logs.assert_lines(&[(
        Level::WARN,
        "Not retrying: 401 Unauthorized (decided by the error's type)",
    )]);
    let records = logs.records();
    assert_eq!(
        records[0].field("function"),
        Some("closure"),
        "the default name"
    );
    assert_eq!(records[0].field("attempt"), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn named_sets_the_function_field_of_every_event_sync_and_async() {
    let policy = no_jitter(3);

    let (logs, guard) = common::capture();
    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> { Err(reset()) })
            .retry(&policy)
            .named("upload_frame")
            .call()
    });
    assert_eq!(gave_up(result).attempts(), 3);
    let functions: Vec<Option<String>> = logs
        .records()
        .iter()
        .map(|r| r.field("function").map(str::to_owned))
        .collect();
    assert_eq!(functions, vec![Some("upload_frame".to_owned()); 3]);
    drop(guard);

    let (logs, _guard) = common::capture();
    let calls = &AtomicU32::new(0);
    let result = (|| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        io::Result::<()>::Err(if n < 2 { reset() } else { invalid_data() })
    })
    .retry(&policy)
    .named("fetch_thumbnail")
    .await;
    assert_eq!(not_retryable(result).kind(), io::ErrorKind::InvalidData);
    let records = logs.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0].level, Level::WARN);
    assert!(records[0].message.starts_with("Retry 1/3"), "{records:?}");
    assert!(
        records[1].message.starts_with("Not retrying"),
        "{records:?}"
    );
    for record in &records {
        assert_eq!(record.field("function"), Some("fetch_thumbnail"));
    }
}

// ---------------------------------------------------------------------------------------------
// `when`

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, resilience::Classify)]
enum MyErr {
    #[error("busy")]
    Busy,
    #[error("broken: {0}")]
    Broken(String),
}

fn my_err_calls(policy: &RetryPolicy, error: MyErr, when: Option<fn(&MyErr) -> bool>) -> u32 {
    let calls = Cell::new(0u32);
    let op = || -> Result<(), MyErr> {
        calls.set(calls.get() + 1);
        Err(error.clone())
    };
    let _ = on_virtual_clock(|| match when {
        Some(predicate) => op.retry(policy).when(predicate).call(),
        None => op.retry(policy).call(),
    });
    calls.get()
}

#[test]
fn when_answering_bool_decides_for_a_user_error_both_ways() {
    let policy = no_jitter(4);
    let is_busy: fn(&MyErr) -> bool = |e| matches!(e, MyErr::Busy);
    let broken_503 = || MyErr::Broken("503 Service Unavailable".into());

    // Without `.when`, the built-in rules: `busy` says nothing retryable, `503` does.
    assert_eq!(my_err_calls(&policy, MyErr::Busy, None), 1);
    assert_eq!(my_err_calls(&policy, broken_503(), None), 4);
    // With it, the predicate decides both ways.
    assert_eq!(my_err_calls(&policy, MyErr::Busy, Some(is_busy)), 4);
    assert_eq!(my_err_calls(&policy, broken_503(), Some(is_busy)), 1);

    let (result, clock) = on_virtual_clock(|| {
        (|| -> Result<(), MyErr> { Err(MyErr::Busy) })
            .retry(&policy)
            .when(|e: &MyErr| matches!(e, MyErr::Busy))
            .call()
    });
    assert_eq!(clock.sleeps().len(), 3);
    let mpe = gave_up(result);
    assert_eq!(mpe.to_string(), "Failed after 4 retries: busy");
    assert_eq!(mpe.last_error::<MyErr>(), Some(&MyErr::Busy));

    let (logs, _guard) = common::capture();
    let (result, _) = on_virtual_clock(|| {
        (|| -> Result<(), MyErr> { Err(broken_503()) })
            .retry(&policy)
            .when(|e: &MyErr| matches!(e, MyErr::Busy))
            .call()
    });
    assert_eq!(not_retryable(result), broken_503());
    logs.assert_lines(&[(
        Level::WARN,
        "Not retrying: broken: 503 Service Unavailable (decided by the predicate)",
    )]);
}

#[test]
fn when_can_refuse_an_io_kind_the_built_in_rules_retry() {
    let policy = no_jitter(4);
    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(reset())
        })
        .retry(&policy)
        .when(|e: &io::Error| e.kind() != io::ErrorKind::ConnectionReset)
        .call()
    });
    assert_eq!(calls.get(), 1);
    let err = not_retryable(result);
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(err.to_string(), RESET_TEXT);
}

/// A user error with typed causes, classified by `#[derive(Classify)]`.
#[derive(Debug, thiserror::Error, resilience::Classify)]
enum FetchError {
    #[error("fetch failed")]
    Io(#[source] io::Error),
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

fn fetch_io(kind: io::ErrorKind, text: &str) -> FetchError {
    FetchError::Io(io::Error::new(kind, text.to_owned()))
}

/// A named error maker and the calls it should take.
type Case = (&'static str, fn() -> FetchError, u32);

#[test]
fn when_answering_unknown_falls_through_to_the_built_in_typed_rules() {
    let policy = no_jitter(3);
    let cases: [Case; 4] = [
        // No retryable word: only the kind says retry.
        (
            "typed reset",
            || fetch_io(io::ErrorKind::ConnectionReset, "the peer went away"),
            3,
        ),
        // The text says `timeout`, the kind says the data is wrong.
        (
            "typed invalid data",
            || fetch_io(io::ErrorKind::InvalidData, "timeout field missing"),
            1,
        ),
        (
            "503 in the text",
            || FetchError::Message("503 Service Unavailable".into()),
            3,
        ),
        (
            "nothing retryable",
            || FetchError::Message("bad image".into()),
            1,
        ),
    ];
    for (name, make, expected) in cases {
        let calls = Cell::new(0u32);
        let _ = on_virtual_clock(|| {
            (|| -> Result<(), FetchError> {
                calls.set(calls.get() + 1);
                Err(make())
            })
            .retry(&policy)
            .when(|_: &FetchError| Verdict::Unknown)
            .call()
        });
        assert_eq!(
            calls.get(),
            expected,
            "{name}, with `.when` answering Unknown"
        );

        let calls = Cell::new(0u32);
        let _ = on_virtual_clock(|| {
            (|| -> Result<(), FetchError> {
                calls.set(calls.get() + 1);
                Err(make())
            })
            .retry(&policy)
            .call()
        });
        assert_eq!(calls.get(), expected, "{name}, without `.when`");
    }

    // The typed rule decided, not the predicate.
    let (logs, _guard) = common::capture();
    let _ = on_virtual_clock(|| {
        (|| -> Result<(), FetchError> {
            Err(fetch_io(
                io::ErrorKind::InvalidData,
                "timeout field missing",
            ))
        })
        .retry(&policy)
        .when(|_: &FetchError| Verdict::Unknown)
        .call()
    });
    logs.assert_lines(&[(
        Level::WARN,
        "Not retrying: fetch failed: timeout field missing (decided by the error's type)",
    )]);
}

fn not_found_else_unknown(e: &FetchError) -> Verdict {
    match e {
        FetchError::Io(io) if io.kind() == io::ErrorKind::NotFound => Verdict::Retryable,
        _ => Verdict::Unknown,
    }
}

/// The error of each call of a script (1-based), or `None` for success.
type Script = fn(u32) -> Option<FetchError>;

#[retry_with_backoff(max_retries = 4, jitter = 0, retry_if = not_found_else_unknown)]
fn scripted_fetch(calls: &Cell<u32>, script: Script) -> Result<u32, FetchError> {
    calls.set(calls.get() + 1);
    match script(calls.get()) {
        Some(error) => Err(error),
        None => Ok(calls.get()),
    }
}

#[test]
fn when_and_the_attributes_retry_if_give_equal_calls_results_and_log_lines() {
    let policy = no_jitter(4);
    let scripts: [(&str, Script); 4] = [
        ("retry_if, then typed reset, then typed invalid data", |n| {
            Some(match n {
                1 => fetch_io(io::ErrorKind::NotFound, "no such object yet"),
                2 => fetch_io(io::ErrorKind::ConnectionReset, "the peer went away"),
                _ => fetch_io(io::ErrorKind::InvalidData, "timeout field missing"),
            })
        }),
        ("retry_if, then 503 text, then success", |n| match n {
            1 => Some(fetch_io(io::ErrorKind::NotFound, "no such object yet")),
            2 => Some(FetchError::Message("503 Service Unavailable".into())),
            _ => None,
        }),
        ("typed resets until the give-up", |_| {
            Some(fetch_io(
                io::ErrorKind::ConnectionReset,
                "the peer went away",
            ))
        }),
        ("nothing retryable", |_| {
            Some(FetchError::Message("bad image".into()))
        }),
    ];
    let expected_calls = [3, 3, 4, 1];
    for ((name, script), expected) in scripts.into_iter().zip(expected_calls) {
        let (attribute_logs, guard) = common::capture();
        let attribute_calls = Cell::new(0u32);
        let (attribute, attribute_clock) =
            on_virtual_clock(|| scripted_fetch(&attribute_calls, script));
        drop(guard);

        let (closure_logs, _guard) = common::capture();
        let closure_calls = Cell::new(0u32);
        let (closure, closure_clock) = on_virtual_clock(|| {
            (|| {
                closure_calls.set(closure_calls.get() + 1);
                match script(closure_calls.get()) {
                    Some(error) => Err(error),
                    None => Ok(closure_calls.get()),
                }
            })
            .retry(&policy)
            .named("scripted_fetch")
            .when(not_found_else_unknown)
            .call()
            .map_err(RetryError::into_error)
        });

        assert_eq!(attribute_calls.get(), expected, "{name}: attribute calls");
        assert_eq!(closure_calls.get(), expected, "{name}: closure calls");
        assert_eq!(attribute_clock.sleeps(), closure_clock.sleeps(), "{name}");
        assert_eq!(
            attribute.as_ref().map_err(ToString::to_string),
            closure.as_ref().map_err(ToString::to_string),
            "{name}"
        );
        assert_eq!(attribute_logs.lines(), closure_logs.lines(), "{name}");
        assert_eq!(
            attribute_logs.lines().len(),
            expected as usize,
            "{name}: one event per call"
        );
        let functions = |logs: &common::Logs| -> Vec<Option<String>> {
            logs.records()
                .iter()
                .map(|r| r.field("function").map(str::to_owned))
                .collect()
        };
        assert_eq!(
            functions(&attribute_logs),
            functions(&closure_logs),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// `notify`

#[test]
fn notify_gets_each_error_and_its_exact_wait_after_the_warn_event_and_before_the_wait() {
    let policy = no_jitter(4);
    let (logs, _guard) = common::capture();
    let clock = Rc::new(VirtualClock::new());
    let calls = Cell::new(0u32);
    // (error text, wait, events logged so far, waits slept so far)
    let mut seen: Vec<(String, Duration, usize, usize)> = Vec::new();
    let result = with_sleeper(clock.clone(), || {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("reset {}", calls.get()),
            ))
        })
        .retry(&policy)
        .notify(|e: &io::Error, wait: Duration| {
            seen.push((
                e.to_string(),
                wait,
                logs.records().len(),
                clock.sleeps().len(),
            ));
        })
        .call()
    });
    assert_eq!(gave_up(result).attempts(), 4);
    assert_eq!(
        seen,
        vec![
            ("reset 1".to_owned(), secs(2.0), 1, 0),
            ("reset 2".to_owned(), secs(4.0), 2, 1),
            ("reset 3".to_owned(), secs(8.0), 3, 2),
        ],
        "not called for the last attempt"
    );
}

#[test]
fn notify_is_not_called_for_a_non_retryable_error() {
    let policy = no_jitter(4);
    let calls = Cell::new(0u32);
    let mut seen: Vec<(String, Duration)> = Vec::new();
    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                Err(reset())
            } else {
                Err(invalid_data())
            }
        })
        .retry(&policy)
        .notify(|e: &io::Error, wait: Duration| seen.push((e.to_string(), wait)))
        .call()
    });
    assert_eq!(not_retryable(result).kind(), io::ErrorKind::InvalidData);
    assert_eq!(calls.get(), 2);
    assert_eq!(seen, vec![(RESET_TEXT.to_owned(), secs(2.0))]);

    let mut seen: Vec<(String, Duration)> = Vec::new();
    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> { Err(invalid_data()) })
            .retry(&policy)
            .notify(|e: &io::Error, wait: Duration| seen.push((e.to_string(), wait)))
            .call()
    });
    assert_eq!(not_retryable(result).kind(), io::ErrorKind::InvalidData);
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn async_notify_gets_each_error_and_wait_before_the_wait() {
    let policy = no_jitter(3);
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    // (error text, wait, virtual time elapsed when notified)
    let mut seen: Vec<(String, Duration, Duration)> = Vec::new();
    let result = (|| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        io::Result::<()>::Err(io::Error::new(io::ErrorKind::TimedOut, format!("slow {n}")))
    })
    .retry(&policy)
    .notify(|e: &io::Error, wait: Duration| seen.push((e.to_string(), wait, start.elapsed())))
    .await;
    assert_eq!(gave_up(result).attempts(), 3);
    assert_eq!(
        seen,
        vec![
            ("slow 1".to_owned(), secs(2.0), Duration::ZERO),
            ("slow 2".to_owned(), secs(4.0), secs(2.0)),
        ]
    );
    assert_eq!(start.elapsed(), secs(6.0));
}

// ---------------------------------------------------------------------------------------------
// `#[derive(Classify)]` user errors

#[derive(Debug, thiserror::Error, resilience::Classify)]
enum QuotaError {
    #[error("503 Service Unavailable: the quota is spent")]
    #[classify(not_retryable)]
    QuotaSpent,
    #[error("{0}")]
    Message(String),
}

#[test]
fn a_variant_declared_not_retryable_is_returned_after_one_call_despite_its_503_text() {
    let policy = no_jitter(3);
    let (logs, _guard) = common::capture();
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> Result<(), QuotaError> {
            calls.set(calls.get() + 1);
            Err(QuotaError::QuotaSpent)
        })
        .retry(&policy)
        .call()
    });
    assert_eq!(calls.get(), 1);
    assert!(clock.sleeps().is_empty());
    let err = not_retryable(result);
    assert_eq!(
        err.to_string(),
        "503 Service Unavailable: the quota is spent"
    );
    logs.assert_lines(&[(
        Level::WARN,
        "Not retrying: 503 Service Unavailable: the quota is spent (declared by `#[classify]`)",
    )]);

    // The same text in an undeclared variant is retried.
    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        (|| -> Result<(), QuotaError> {
            calls.set(calls.get() + 1);
            Err(QuotaError::Message("503 Service Unavailable".into()))
        })
        .retry(&policy)
        .call()
    });
    assert_eq!(calls.get(), 3);
    assert_eq!(gave_up(result).attempts(), 3);
}

#[test]
fn a_thiserror_enum_with_derived_classify_is_classified_by_its_source() {
    let policy = no_jitter(3);
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> Result<(), FetchError> {
            calls.set(calls.get() + 1);
            Err(FetchError::Io(io::Error::from(
                io::ErrorKind::ConnectionReset,
            )))
        })
        .retry(&policy)
        .call()
    });
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps().len(), 2);
    let err = result.map_err(RetryError::into_error).unwrap_err();
    let FetchError::Exhausted(mpe) = err else {
        panic!("expected Exhausted, got {err:?}");
    };
    assert_eq!(mpe.attempts(), 3);
}

#[test]
fn a_plain_thiserror_enum_without_classify_is_retried_as_a_boxed_error() {
    #[derive(Debug, thiserror::Error)]
    enum PlainError {
        #[error("fetch failed")]
        Fetch(#[source] io::Error),
        #[error(transparent)]
        Exhausted(#[from] MediaProcessingError),
    }

    let policy = no_jitter(3);
    let calls = Cell::new(0);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> Result<(), BoxError> {
            calls.set(calls.get() + 1);
            Err(PlainError::Fetch(reset()).into())
        })
        .retry(&policy)
        .call()
    });
    assert_eq!(calls.get(), 3, "classified by its io::Error source");
    assert_eq!(clock.sleeps().len(), 2);
    let mpe = gave_up(result);
    assert!(matches!(
        mpe.last_error::<PlainError>(),
        Some(PlainError::Fetch(io)) if io.kind() == io::ErrorKind::ConnectionReset
    ));
    let PlainError::Exhausted(mpe) = PlainError::from(mpe) else {
        panic!("expected Exhausted");
    };
    assert_eq!(mpe.attempts(), 3);
}

// ---------------------------------------------------------------------------------------------
// The give-up error

#[test]
fn give_up_text_is_the_display_then_the_causes_it_does_not_contain() {
    #[derive(Debug, thiserror::Error, resilience::Classify)]
    enum RequestError {
        #[error("request failed: {0}")]
        Request(#[source] io::Error),
    }

    let policy = no_jitter(3);
    let (logs, _guard) = common::capture();
    let (result, _) = on_virtual_clock(|| {
        (|| -> Result<(), FetchError> { Err(FetchError::Io(reset())) })
            .retry(&policy)
            .call()
    });
    let mpe = gave_up(result);
    let text = format!("fetch failed: {RESET_TEXT}");
    assert_eq!(mpe.last_error_message(), text);
    assert_eq!(mpe.to_string(), format!("Failed after 3 retries: {text}"));
    logs.assert_lines(&[
        (
            Level::WARN,
            &format!("Retry 1/3 after {text}: waiting 2.0s"),
        ),
        (
            Level::WARN,
            &format!("Retry 2/3 after {text}: waiting 4.0s"),
        ),
        (
            Level::ERROR,
            &format!("Giving up after 3 attempts (all attempts failed): {text}"),
        ),
    ]);

    // A cause the Display already contains is not repeated.
    let (result, _) = on_virtual_clock(|| {
        (|| -> Result<(), RequestError> { Err(RequestError::Request(reset())) })
            .retry(&policy)
            .call()
    });
    assert_eq!(
        gave_up(result).to_string(),
        format!("Failed after 3 retries: request failed: {RESET_TEXT}")
    );
}

#[test]
fn give_up_source_is_a_text_view_and_the_typed_error_is_reached_with_last_error_or_find() {
    let policy = no_jitter(2);
    let (result, _) = on_virtual_clock(|| {
        (|| -> Result<(), FetchError> { Err(FetchError::Io(reset())) })
            .retry(&policy)
            .call()
    });
    let mpe = gave_up(result);
    assert_eq!(
        chain_texts(&mpe),
        vec![
            format!("Failed after 2 retries: fetch failed: {RESET_TEXT}"),
            "fetch failed".to_owned(),
            RESET_TEXT.to_owned(),
        ]
    );
    let source = mpe.source().expect("a view of the last error");
    assert!(
        source.downcast_ref::<FetchError>().is_none(),
        "source() is a view, not the error"
    );
    assert!(matches!(
        mpe.last_error::<FetchError>(),
        Some(FetchError::Io(io)) if io.kind() == io::ErrorKind::ConnectionReset
    ));
    assert_eq!(
        mpe.find::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert!(
        mpe.last_error::<io::Error>().is_none(),
        "the last error is a FetchError"
    );
}

#[test]
fn blocking_call_gives_up_with_a_boxed_error_holding_the_typed_last_error() {
    let policy = no_jitter(3);
    let (result, _) = on_virtual_clock(|| {
        (|| -> Result<(), BoxError> { Err(Box::new(reset())) })
            .retry(&policy)
            .call()
    });
    let err = result.map_err(RetryError::into_error).unwrap_err();
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
// `into_error`

#[test]
fn into_error_gives_an_io_error_that_keeps_the_last_kind_or_the_error_unchanged() {
    let policy = no_jitter(3);
    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> { Err(reset()) })
            .retry(&policy)
            .call()
    });
    let err: io::Error = result.map_err(RetryError::into_error).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        err.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    assert_eq!(media_error(&err).attempts(), 3);

    let (result, _) = on_virtual_clock(|| {
        (|| -> io::Result<()> { Err(invalid_data()) })
            .retry(&policy)
            .call()
    });
    let err: io::Error = result.map_err(RetryError::into_error).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "timeout field missing");
    assert!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<MediaProcessingError>())
            .is_none()
    );
}

#[test]
fn into_error_gives_an_anyhow_error_holding_the_give_up() {
    let policy = no_jitter(2);
    let (result, _) = on_virtual_clock(|| {
        (|| -> anyhow::Result<()> { Err(anyhow::anyhow!("HTTP 503")) })
            .retry(&policy)
            .when(|e: &anyhow::Error| e.to_string().contains("503"))
            .call()
    });
    let err: anyhow::Error = result.map_err(RetryError::into_error).unwrap_err();
    assert_eq!(err.to_string(), "Failed after 2 retries: HTTP 503");
    let mpe = err
        .downcast_ref::<MediaProcessingError>()
        .expect("anyhow holds it");
    assert_eq!(mpe.attempts(), 2);
    assert_eq!(mpe.last_error_message(), "HTTP 503");
    let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
    assert_eq!(
        chain,
        vec!["Failed after 2 retries: HTTP 503", "HTTP 503"],
        "give-up, then the view of the last error"
    );
}

#[derive(Debug, thiserror::Error, resilience::Classify)]
enum AppError {
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("bad request: {0}")]
    #[classify(not_retryable)]
    BadRequest(String),
    #[error(transparent)]
    Exhausted(#[from] MediaProcessingError),
}

fn app_fetch(policy: &RetryPolicy, error: fn() -> AppError) -> Result<u32, AppError> {
    let value = (|| -> Result<u32, AppError> { Err(error()) })
        .retry(policy)
        .when(|e: &AppError| {
            if matches!(e, AppError::Upstream(_)) {
                Verdict::Retryable
            } else {
                Verdict::Unknown
            }
        })
        .call()
        .map_err(RetryError::into_error)?;
    Ok(value + 1)
}

#[test]
fn into_error_lets_question_mark_return_a_thiserror_enum() {
    let policy = no_jitter(2);
    let (result, clock) =
        on_virtual_clock(|| app_fetch(&policy, || AppError::Upstream("slow".into())));
    assert_eq!(clock.sleeps().len(), 1);
    let err = result.unwrap_err();
    let AppError::Exhausted(mpe) = err else {
        panic!("expected Exhausted, got {err:?}");
    };
    assert_eq!(mpe.to_string(), "Failed after 2 retries: upstream: slow");
    assert!(matches!(mpe.last_error::<AppError>(), Some(AppError::Upstream(m)) if m == "slow"));

    let (result, clock) =
        on_virtual_clock(|| app_fetch(&policy, || AppError::BadRequest("no prompt".into())));
    assert!(clock.sleeps().is_empty());
    let err = result.unwrap_err();
    assert!(
        matches!(&err, AppError::BadRequest(m) if m == "no prompt"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// `timeout` in the blocking form

#[test]
fn blocking_call_with_timeout_gives_up_instead_of_starting_a_wait_past_the_deadline() {
    let policy = RetryPolicy::builder()
        .max_retries(10)
        .jitter(Duration::ZERO)
        .timeout(secs(10.0))
        .build()
        .unwrap();
    let (logs, _guard) = common::capture();
    let clock = Rc::new(VirtualClock::new());
    let calls = Cell::new(0u32);
    let result = with_sleeper(clock.clone(), || {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            clock.advance(secs(3.0));
            Err(reset())
        })
        .retry(&policy)
        .call()
    });
    // 0-3 attempt, 3-5 wait, 5-8 attempt, a 4 s wait would end at 12 s > 10 s.
    assert_eq!(calls.get(), 2);
    assert_eq!(clock.sleeps(), vec![secs(2.0)]);
    assert_eq!(clock.elapsed(), secs(8.0));
    let mpe = gave_up(result);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(4.0),
            timeout: secs(10.0)
        }
    );
    assert_eq!(mpe.attempts(), 2);
    assert_eq!(
        mpe.to_string(),
        format!("Failed after 2 retries: {RESET_TEXT}")
    );
    assert_eq!(
        logs.messages().last().map(String::as_str),
        Some(
            "Giving up after 2 attempts (the next wait of 4.0s would end past the timeout of 10.0s): connection reset by peer"
        )
    );
}

#[test]
fn blocking_call_runs_the_attempt_after_a_wait_that_ends_exactly_at_the_deadline() {
    let policy = no_jitter_with_timeout(10, secs(6.0));
    let calls = Cell::new(0u32);
    let (result, clock) = on_virtual_clock(|| {
        (|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(reset())
        })
        .retry(&policy)
        .call()
    });
    // Waits of 2 s and 4 s end at 6 s, the deadline itself: the third attempt runs.
    assert_eq!(calls.get(), 3);
    assert_eq!(clock.sleeps(), vec![secs(2.0), secs(4.0)]);
    assert_eq!(
        gave_up(result).reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(8.0),
            timeout: secs(6.0)
        }
    );
}

// ---------------------------------------------------------------------------------------------
// The async form

#[tokio::test(start_paused = true)]
async fn async_retries_and_virtual_time_equals_the_sum_of_waits() {
    let (logs, _guard) = common::capture();
    let policy = no_jitter(4);
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let answer = (|| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::task::yield_now().await;
        if n < 4 { Err(reset()) } else { Ok(n) }
    })
    .retry(&policy)
    .named("fetch")
    .await
    .unwrap();
    assert_eq!(answer, 4);
    assert_eq!(start.elapsed(), secs(2.0 + 4.0 + 8.0));
    assert_eq!(logs.waits_ms(), vec![2000, 4000, 8000]);
    assert_eq!(
        logs.messages().last().map(String::as_str),
        Some("Success on attempt 4")
    );
    logs.assert_fields("fetch", 4);
}

#[tokio::test(start_paused = true)]
async fn async_logs_the_same_lines_as_the_attribute() {
    let (logs, _guard) = common::capture();
    let policy = no_jitter(3);
    let calls = &AtomicU32::new(0);
    (|| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 3 { Err(reset()) } else { Ok(()) }
    })
    .retry(&policy)
    .named("x")
    .await
    .unwrap();
    logs.assert_lines(common::RESET_TWICE_THEN_SUCCESS);
    logs.assert_fields("x", 3);
}

#[tokio::test(start_paused = true)]
async fn async_gives_up_and_returns_non_retryable_errors_unchanged() {
    let policy = no_jitter(3);
    let calls = &AtomicU32::new(0);
    let result = (|| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        io::Result::<()>::Err(reset())
    })
    .retry(&policy)
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let mpe = gave_up(result);
    assert_eq!(
        mpe.to_string(),
        format!("Failed after 3 retries: {RESET_TEXT}")
    );
    assert_eq!(mpe.attempts(), 3);
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );

    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let result = (|| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        Result::<(), MyErr>::Err(MyErr::Broken("bad image".into()))
    })
    .retry(&policy)
    .when(|e: &MyErr| *e == MyErr::Busy)
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(not_retryable(result), MyErr::Broken("bad image".into()));
}

async fn async_app_fetch(policy: &RetryPolicy, calls: &AtomicU32) -> Result<u32, AppError> {
    let value = (|| async {
        calls.fetch_add(1, Ordering::SeqCst);
        Result::<u32, AppError>::Err(AppError::Upstream("503 Service Unavailable".into()))
    })
    .retry(policy)
    .await
    .map_err(RetryError::into_error)?;
    Ok(value)
}

#[tokio::test(start_paused = true)]
async fn async_into_error_lets_question_mark_return_a_thiserror_enum() {
    let policy = no_jitter(3);
    let calls = AtomicU32::new(0);
    let err = async_app_fetch(&policy, &calls).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let AppError::Exhausted(mpe) = err else {
        panic!("expected Exhausted, got {err:?}");
    };
    assert_eq!(
        mpe.to_string(),
        "Failed after 3 retries: upstream: 503 Service Unavailable"
    );
}

#[tokio::test(start_paused = true)]
async fn async_timeout_cuts_a_slow_attempt_with_deadline_exceeded() {
    let (logs, _guard) = common::capture();
    let policy = RetryPolicy::builder().timeout(secs(3.0)).build().unwrap();
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let result = (|| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(secs(10.0)).await;
        Result::<(), BoxError>::Ok(())
    })
    .retry(&policy)
    .await;
    assert_eq!(start.elapsed(), secs(3.0));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mpe = gave_up(result);
    assert_eq!(mpe.attempts(), 1);
    assert_eq!(
        mpe.last_error::<DeadlineExceeded>(),
        Some(&DeadlineExceeded { timeout: secs(3.0) })
    );
    assert_eq!(
        mpe.reason(),
        GiveUpReason::DeadlineExceeded { timeout: secs(3.0) }
    );
    assert_eq!(
        mpe.to_string(),
        "Failed after 1 retries: no answer within the timeout of 3.0s"
    );
    logs.assert_lines(&[(
        Level::ERROR,
        "Giving up after 1 attempt (the timeout of 3.0s ran out): no answer within the timeout of 3.0s",
    )]);
}

#[tokio::test(start_paused = true)]
async fn async_timeout_cuts_a_later_slow_attempt_after_a_retry() {
    let policy = no_jitter_with_timeout(5, secs(5.0));
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let result = (|| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            return Err(reset());
        }
        tokio::time::sleep(secs(10.0)).await;
        Ok(())
    })
    .retry(&policy)
    .await;
    // 0 s reset, 0-2 s wait, the second attempt is cut at 5 s.
    assert_eq!(start.elapsed(), secs(5.0));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let mpe = gave_up(result);
    assert_eq!(mpe.attempts(), 2);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::DeadlineExceeded { timeout: secs(5.0) }
    );
    assert!(
        mpe.last_error::<io::Error>().is_none(),
        "the cut-off attempt had no error"
    );
}

fn no_jitter_with_timeout(max_retries: u32, timeout: Duration) -> RetryPolicy {
    RetryPolicy::builder()
        .max_retries(max_retries)
        .jitter(Duration::ZERO)
        .timeout(timeout)
        .build()
        .expect("valid policy")
}

#[tokio::test(start_paused = true)]
async fn async_timeout_gives_up_instead_of_a_wait_past_the_deadline() {
    let (logs, _guard) = common::capture();
    let policy = no_jitter_with_timeout(5, secs(5.0));
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let result = (|| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        io::Result::<()>::Err(reset())
    })
    .retry(&policy)
    .await;
    // 0 s reset, 0-2 s wait, 2 s reset: a 4 s wait would end at 6 s > 5 s.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), secs(2.0));
    let mpe = gave_up(result);
    assert_eq!(
        mpe.reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(4.0),
            timeout: secs(5.0)
        }
    );
    assert_eq!(
        mpe.last_error::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        logs.messages().last().map(String::as_str),
        Some(
            "Giving up after 2 attempts (the next wait of 4.0s would end past the timeout of 5.0s): connection reset by peer"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn async_runs_the_attempt_after_a_wait_that_ends_exactly_at_the_deadline() {
    let policy = no_jitter_with_timeout(10, secs(6.0));
    let calls = &AtomicU32::new(0);
    let start = tokio::time::Instant::now();
    let result = (|| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        io::Result::<()>::Err(reset())
    })
    .retry(&policy)
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), secs(6.0));
    assert_eq!(
        gave_up(result).reason(),
        GiveUpReason::WaitPastDeadline {
            wait: secs(8.0),
            timeout: secs(6.0)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn async_future_is_send_and_dropping_it_mid_wait_stops_attempts() {
    static POLICY: RetryPolicy = RetryPolicy::new();
    let make = |calls: Arc<AtomicU32>| {
        (move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                io::Result::<()>::Err(reset())
            }
        })
        .retry(&POLICY)
    };
    let calls = Arc::new(AtomicU32::new(0));
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

// ---------------------------------------------------------------------------------------------
// A hand-written `Classify` that gives its chain, and `RetryError` as a cause

#[derive(Debug, thiserror::Error)]
enum HandWritten {
    #[error("i/o")]
    Io(#[source] io::Error),
}

impl resilience::Classify for HandWritten {
    fn classify(&self) -> resilience::Verdict {
        resilience::Verdict::Unknown
    }

    fn error_chain(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

impl From<MediaProcessingError> for HandWritten {
    fn from(give_up: MediaProcessingError) -> Self {
        HandWritten::Io(io::Error::other(give_up))
    }
}

#[test]
fn a_hand_written_classify_with_its_chain_gets_the_chain_rules() {
    let policy = no_jitter(3);
    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| {
        (|| -> Result<(), HandWritten> {
            calls.set(calls.get() + 1);
            Err(HandWritten::Io(reset()))
        })
        .retry(&policy)
        .call()
    });
    assert_eq!(
        calls.get(),
        3,
        "the io::Error's kind decides, as under the attribute"
    );
    assert!(matches!(result, Err(RetryError::GaveUp(_))));
}

#[resilience::retry_with_backoff(max_retries = 3, jitter = 0)]
fn outer_of_a_closure(calls: &Cell<u32>) -> anyhow::Result<()> {
    let policy = no_jitter(2);
    (|| -> io::Result<()> {
        calls.set(calls.get() + 1);
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "timeout field missing",
        ))
    })
    .retry(&policy)
    .call()?;
    Ok(())
}

#[test]
fn an_outer_retry_sees_the_closures_error_through_retry_error() {
    let calls = Cell::new(0u32);
    let (result, _) = on_virtual_clock(|| outer_of_a_closure(&calls));
    let error = result.unwrap_err();
    assert_eq!(
        calls.get(),
        1,
        "its kind says the data is wrong, whatever the text says"
    );
    assert_eq!(
        error
            .downcast_ref::<RetryError<io::Error>>()
            .map(|e| e.give_up().is_none()),
        Some(true)
    );
    assert_eq!(
        error
            .chain()
            .nth(1)
            .and_then(|e| e.downcast_ref::<io::Error>())
            .map(io::Error::kind),
        Some(io::ErrorKind::InvalidData)
    );
}
