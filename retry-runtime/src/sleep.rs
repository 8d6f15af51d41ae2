//! Waiting between attempts, and the clock that `timeout` is measured on.
//!
//! Sync calls sleep the thread; a test swaps in a [`VirtualClock`] for the current thread with
//! [`with_sleeper`], so backoff is checked without real waits. Async calls wait on an
//! [`AsyncTimer`](crate::timer::AsyncTimer): `resilience`'s is tokio's, which tests pause
//! with `#[tokio::test(start_paused = true)]`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Waits between sync attempts and tells the time the `timeout` is measured on.
pub trait Sleeper {
    /// Blocks the current thread for `delay`.
    fn sleep(&self, delay: Duration);
    /// The current time on this sleeper's clock.
    fn now(&self) -> Instant;
}

/// The real thing: `std::thread::sleep` and `Instant::now`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadSleeper;

impl Sleeper for ThreadSleeper {
    fn sleep(&self, delay: Duration) {
        std::thread::sleep(delay);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when something sleeps on it (or [`advance`](Self::advance) is
/// called), and remembers every wait: sync retries tested in microseconds.
///
/// ```
/// use std::{rc::Rc, time::Duration};
/// use resilience::sleep::{Sleeper, VirtualClock, with_sleeper, sleep_current};
///
/// let clock = Rc::new(VirtualClock::new());
/// with_sleeper(clock.clone(), || sleep_current(Duration::from_secs(30)));
/// assert_eq!(clock.sleeps(), vec![Duration::from_secs(30)]);
/// assert_eq!(clock.elapsed(), Duration::from_secs(30));
/// ```
#[derive(Debug)]
pub struct VirtualClock {
    start: Instant,
    elapsed: Cell<Duration>,
    sleeps: RefCell<Vec<Duration>>,
}

impl VirtualClock {
    /// A clock at the current real time, with no waits recorded.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            elapsed: Cell::new(Duration::ZERO),
            sleeps: RefCell::new(Vec::new()),
        }
    }

    /// Moves the clock on without recording a wait (as a slow attempt would).
    pub fn advance(&self, by: Duration) {
        self.elapsed.set(self.elapsed.get().saturating_add(by));
    }

    /// Every wait so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.borrow().clone()
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> Duration {
        self.elapsed.get()
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Sleeper for VirtualClock {
    fn sleep(&self, delay: Duration) {
        self.sleeps.borrow_mut().push(delay);
        self.advance(delay);
    }

    fn now(&self) -> Instant {
        // `checked_add` keeps an absurd virtual time from panicking; it then stops moving.
        self.start
            .checked_add(self.elapsed.get())
            .unwrap_or(self.start)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<dyn Sleeper>>> = const { RefCell::new(None) };
    /// Whether `CURRENT` holds a sleeper: one flag to read on the way to the real clock, the
    /// one read a call with a `timeout` makes before its first attempt.
    static OVERRIDDEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with `sleeper` as the current thread's sleeper and clock for sync retries, then
/// puts the previous one back (also when `f` panics).
pub fn with_sleeper<R>(sleeper: Rc<dyn Sleeper>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Rc<dyn Sleeper>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            OVERRIDDEN.with(|overridden| overridden.set(previous.is_some()));
            CURRENT.with(|current| *current.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|current| current.borrow_mut().replace(sleeper));
    OVERRIDDEN.with(|overridden| overridden.set(true));
    let _restore = Restore(previous);
    f()
}

/// Sleeps on the current thread's sleeper: the one set by [`with_sleeper`], else the thread.
pub fn sleep_current(delay: Duration) {
    match current() {
        Some(sleeper) => sleeper.sleep(delay),
        None => std::thread::sleep(delay),
    }
}

/// The time on the current thread's clock: the one set by [`with_sleeper`], else the real one.
/// A call with a `timeout` reads it before its first attempt, so it only looks at the
/// override, without taking a reference to it.
#[inline]
pub fn now_current() -> Instant {
    if OVERRIDDEN.with(Cell::get) {
        now_overridden()
    } else {
        Instant::now()
    }
}

/// The override's clock, out of line: only tests reach it.
#[cold]
#[inline(never)]
fn now_overridden() -> Instant {
    CURRENT.with(|current| match &*current.borrow() {
        Some(sleeper) => sleeper.now(),
        None => Instant::now(),
    })
}

fn current() -> Option<Rc<dyn Sleeper>> {
    CURRENT.with(|current| current.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_is_scoped_and_restored() {
        let outer = Rc::new(VirtualClock::new());
        let inner = Rc::new(VirtualClock::new());
        with_sleeper(outer.clone(), || {
            sleep_current(Duration::from_secs(1));
            with_sleeper(inner.clone(), || sleep_current(Duration::from_secs(2)));
            sleep_current(Duration::from_secs(3));
        });
        assert_eq!(
            outer.sleeps(),
            vec![Duration::from_secs(1), Duration::from_secs(3)]
        );
        assert_eq!(inner.sleeps(), vec![Duration::from_secs(2)]);
        assert!(current().is_none());
    }

    #[test]
    fn override_is_restored_after_a_panic() {
        let clock = Rc::new(VirtualClock::new());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_sleeper(clock.clone(), || panic!("inside"))
        }));
        assert!(result.is_err());
        assert!(current().is_none());
    }

    #[test]
    fn virtual_now_moves_with_sleeps_and_advances() {
        let clock = VirtualClock::new();
        let t0 = clock.now();
        clock.sleep(Duration::from_secs(2));
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.now() - t0, Duration::from_millis(2500));
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(2)]);
        clock.advance(Duration::MAX);
        let _ = clock.now();
    }
}
