//! A testing mode for applications' own test suites (the README's "Testing retried code"):
//! every retried call waits zero, and may be held to fewer attempts, without touching the
//! annotated functions or their policies.
//!
//! Read only after a failed attempt, so it costs the success path nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// How retried calls behave under the testing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Testing {
    max_attempts: Option<u32>,
}

impl Testing {
    /// Waits of zero; the policies' attempt counts are kept.
    pub const fn new() -> Self {
        Self { max_attempts: None }
    }

    /// Also at most `attempts` attempts per call (at least 1): a test of the give-up path
    /// then needs no `max_retries` of its own.
    #[must_use]
    pub const fn max_attempts(self, attempts: u32) -> Self {
        Self {
            max_attempts: Some(if attempts == 0 { 1 } else { attempts }),
        }
    }

    /// The attempt cap, if one is set.
    pub const fn attempt_cap(&self) -> Option<u32> {
        self.max_attempts
    }

    fn encode(mode: Option<Testing>) -> u64 {
        match mode {
            None => 0,
            Some(Testing { max_attempts: None }) => 1,
            Some(Testing {
                max_attempts: Some(n),
            }) => 2 + u64::from(n),
        }
    }

    fn decode(bits: u64) -> Option<Testing> {
        match bits {
            0 => None,
            1 => Some(Testing::new()),
            n => Some(Testing {
                max_attempts: Some(u32::try_from(n - 2).unwrap_or(u32::MAX)),
            }),
        }
    }
}

/// The process-wide mode, encoded (see [`Testing::encode`]).
static PROCESS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// A mode for this thread's scope, which wins over the process-wide one.
    static SCOPE: Cell<Option<Option<Testing>>> = const { Cell::new(None) };
}

/// Turns the testing mode on (`Some`) or off (`None`) for the whole process, as stamina's
/// `set_testing` does: call it once at the start of a test binary, or in a test that needs it.
///
/// ```
/// use std::io;
/// use resilience::retry_with_backoff;
/// use resilience::testing::{Testing, set_testing};
///
/// #[retry_with_backoff] // the defaults: 5 attempts, waits of 2, 4, 8 and 16 s
/// fn fetch() -> io::Result<()> {
///     Err(io::Error::from(io::ErrorKind::TimedOut))
/// }
///
/// set_testing(Some(Testing::new().max_attempts(2)));
/// let started = std::time::Instant::now();
/// let error = fetch().unwrap_err();
/// assert!(started.elapsed().as_secs() < 1, "no real wait");
/// assert!(error.to_string().starts_with("Failed after 2 retries"));
/// set_testing(None);
/// ```
pub fn set_testing(mode: Option<Testing>) {
    PROCESS.store(Testing::encode(mode), Ordering::Relaxed);
}

/// Runs `f` with `mode` on this thread only (`None` turns a process-wide mode off inside),
/// whatever other threads do; the mode around it comes back afterwards, a panic included.
pub fn with_testing<R>(mode: Option<Testing>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Option<Testing>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.with(|scope| scope.set(self.0));
        }
    }
    let _restore = Restore(SCOPE.with(|scope| scope.replace(Some(mode))));
    f()
}

/// The mode in force on this thread: its scope's, else the process's.
pub fn current() -> Option<Testing> {
    SCOPE
        .with(Cell::get)
        .unwrap_or_else(|| Testing::decode(PROCESS.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_wins_over_the_process_and_ends_with_its_closure() {
        assert_eq!(current(), None);
        let capped = Testing::new().max_attempts(2);
        with_testing(Some(capped), || {
            assert_eq!(current(), Some(capped));
            with_testing(None, || assert_eq!(current(), None));
            assert_eq!(current(), Some(capped));
        });
        assert_eq!(current(), None);
    }

    #[test]
    fn modes_survive_their_encoding() {
        for mode in [
            None,
            Some(Testing::new()),
            Some(Testing::new().max_attempts(0)),
            Some(Testing::new().max_attempts(7)),
            Some(Testing::new().max_attempts(u32::MAX)),
        ] {
            assert_eq!(Testing::decode(Testing::encode(mode)), mode);
        }
        assert_eq!(Testing::new().max_attempts(0).attempt_cap(), Some(1));
    }
}
