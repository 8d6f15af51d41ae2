//! `#[retry_with_backoff]` on every function shape the README's "Parameters" promises: each
//! test retries a flaky body a known number of times and checks what the attempts saw, what
//! was cloned or mutated, and what the caller got back.
//!
//! No test sleeps real time: sync calls run under a `VirtualClock`, async ones under
//! `#[tokio::test(start_paused = true)]`.

mod common;

use common::media_error as give_up_of;

use std::cell::{Cell, RefCell};
use std::fmt::{self, Debug, Display};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience::sleep::{VirtualClock, with_sleeper};
use resilience::{MediaProcessingError, retry_with_backoff};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A retryable error (`ConnectionReset` is retryable by its kind).
fn reset() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionReset)
}

/// Counts one more call and tells whether this call is still one that should fail.
fn fails_before(calls: &Cell<u32>, succeed_on: u32) -> bool {
    calls.set(calls.get() + 1);
    calls.get() < succeed_on
}

/// Runs `f` on a virtual clock and returns its result with the waits it took.
fn on_virtual_clock<R>(f: impl FnOnce() -> R) -> (R, Vec<Duration>) {
    let clock = Rc::new(VirtualClock::new());
    let result = with_sleeper(clock.clone(), f);
    (result, clock.sleeps())
}

fn assert_send<T: Send>(_: &T) {}

// ---------------------------------------------------------------------------------------------
// Free functions
// ---------------------------------------------------------------------------------------------

#[retry_with_backoff(max_retries = 4)]
fn free_fn(calls: &Cell<u32>, succeed_on: u32) -> io::Result<u32> {
    if fails_before(calls, succeed_on) {
        return Err(reset());
    }
    Ok(calls.get() * 10)
}

#[test]
fn free_fn_retries_until_success() {
    let calls = Cell::new(0);
    let (result, sleeps) = on_virtual_clock(|| free_fn(&calls, 3));
    assert_eq!(result.unwrap(), 30);
    assert_eq!(calls.get(), 3);
    assert_eq!(sleeps.len(), 2);
}

#[test]
fn free_fn_gives_up_after_max_retries_attempts() {
    let calls = Cell::new(0);
    let (result, sleeps) = on_virtual_clock(|| free_fn(&calls, 100));
    let error = result.unwrap_err();
    assert_eq!(calls.get(), 4);
    assert_eq!(sleeps.len(), 3);
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(give_up_of(&error).attempts(), 4);
    assert!(
        error.to_string().starts_with("Failed after 4 retries: "),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Methods: `&self`, `&mut self`, `self`, `mut self`, associated, `Box<Self>`, `Arc<Self>`
// ---------------------------------------------------------------------------------------------

struct Service {
    calls: Cell<u32>,
    prefix: String,
}

impl Service {
    #[retry_with_backoff(max_retries = 5)]
    fn fetch(&self, id: u32) -> io::Result<String> {
        if fails_before(&self.calls, 3) {
            return Err(reset());
        }
        Ok(format!("{}-{id}", self.prefix))
    }
}

#[test]
fn method_by_shared_ref_retries_and_reads_self() {
    let service = Service {
        calls: Cell::new(0),
        prefix: "svc".to_owned(),
    };
    let (result, _) = on_virtual_clock(|| service.fetch(7));
    assert_eq!(result.unwrap(), "svc-7");
    assert_eq!(service.calls.get(), 3);
}

struct Counter {
    attempts: u32,
    seen: Vec<u32>,
}

impl Counter {
    #[retry_with_backoff(max_retries = 5)]
    fn bump(&mut self, succeed_on: u32) -> io::Result<u32> {
        self.attempts += 1;
        self.seen.push(self.attempts);
        if self.attempts < succeed_on {
            return Err(reset());
        }
        Ok(self.attempts)
    }
}

#[test]
fn method_by_mut_ref_keeps_changes_of_failed_attempts() {
    let mut counter = Counter {
        attempts: 0,
        seen: Vec::new(),
    };
    let (result, _) = on_virtual_clock(|| counter.bump(4));
    assert_eq!(result.unwrap(), 4);
    assert_eq!(counter.attempts, 4);
    assert_eq!(counter.seen, vec![1, 2, 3, 4]);
}

/// Counts its clones, so tests can see that each attempt got a fresh one.
struct Job {
    payload: Vec<u8>,
    calls: Rc<Cell<u32>>,
    clones: Rc<Cell<u32>>,
    seen_lens: Rc<RefCell<Vec<usize>>>,
}

impl Clone for Job {
    fn clone(&self) -> Self {
        self.clones.set(self.clones.get() + 1);
        Self {
            payload: self.payload.clone(),
            calls: Rc::clone(&self.calls),
            clones: Rc::clone(&self.clones),
            seen_lens: Rc::clone(&self.seen_lens),
        }
    }
}

impl Job {
    fn new(payload: &[u8]) -> Self {
        Self {
            payload: payload.to_vec(),
            calls: Rc::default(),
            clones: Rc::default(),
            seen_lens: Rc::default(),
        }
    }

    /// Consumes `self`: the payload is moved out and dropped.
    #[retry_with_backoff(max_retries = 5)]
    fn consume(self) -> io::Result<usize> {
        let Job {
            payload,
            calls,
            seen_lens,
            ..
        } = self;
        seen_lens.borrow_mut().push(payload.len());
        let len = payload.len();
        drop(payload);
        if fails_before(&calls, 3) {
            return Err(reset());
        }
        Ok(len)
    }

    /// Mutates its own copy: every attempt must start from the caller's payload.
    #[retry_with_backoff(max_retries = 5)]
    fn consume_mut(mut self) -> io::Result<Vec<u8>> {
        self.seen_lens.borrow_mut().push(self.payload.len());
        self.payload.push(0xFF);
        if fails_before(&self.calls, 3) {
            return Err(reset());
        }
        Ok(self.payload)
    }
}

#[test]
fn method_by_value_gives_each_attempt_a_fresh_clone() {
    let job = Job::new(b"abcd");
    let (calls, clones, seen) = (job.calls.clone(), job.clones.clone(), job.seen_lens.clone());
    let (result, _) = on_virtual_clock(|| job.consume());
    assert_eq!(result.unwrap(), 4);
    assert_eq!(calls.get(), 3);
    assert_eq!(clones.get(), 3, "one clone per attempt");
    assert_eq!(*seen.borrow(), vec![4, 4, 4]);
}

#[test]
fn method_by_mut_value_starts_every_attempt_from_the_callers_value() {
    let job = Job::new(b"xyz");
    let (calls, seen) = (job.calls.clone(), job.seen_lens.clone());
    let (result, _) = on_virtual_clock(|| job.consume_mut());
    assert_eq!(result.unwrap(), b"xyz\xFF".to_vec());
    assert_eq!(calls.get(), 3);
    assert_eq!(
        *seen.borrow(),
        vec![3, 3, 3],
        "no attempt sees another's push"
    );
}

struct Registry {
    opened_on: u32,
}

impl Registry {
    #[retry_with_backoff(max_retries = 3)]
    fn open(calls: &Cell<u32>) -> io::Result<Self> {
        if fails_before(calls, 2) {
            return Err(reset());
        }
        Ok(Self {
            opened_on: calls.get(),
        })
    }
}

#[test]
fn associated_fn_without_receiver_is_retried() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| Registry::open(&calls));
    assert_eq!(result.unwrap().opened_on, 2);
    assert_eq!(calls.get(), 2);
}

/// Counts its clones and records where each attempt's box points, so a test can tell a
/// fresh box from the caller's.
struct Shared {
    calls: Rc<Cell<u32>>,
    clones: Rc<Cell<u32>>,
    seen: Rc<RefCell<Vec<*const Shared>>>,
    succeed_on: u32,
    name: &'static str,
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        self.clones.set(self.clones.get() + 1);
        Self {
            calls: Rc::clone(&self.calls),
            clones: Rc::clone(&self.clones),
            seen: Rc::clone(&self.seen),
            succeed_on: self.succeed_on,
            name: self.name,
        }
    }
}

impl Shared {
    fn boxed_new(succeed_on: u32) -> Box<Self> {
        Box::new(Shared {
            calls: Rc::default(),
            clones: Rc::default(),
            seen: Rc::default(),
            succeed_on,
            name: "b",
        })
    }

    #[retry_with_backoff(max_retries = 4, jitter = 0)]
    fn boxed(self: Box<Self>) -> io::Result<String> {
        self.seen.borrow_mut().push(&*self as *const Shared);
        if fails_before(&self.calls, self.succeed_on) {
            return Err(reset());
        }
        // Moves the value out of the box: only a box of its own allows that.
        let this: Shared = *self;
        Ok(format!("box:{}", this.name))
    }
}

struct ArcShared {
    calls: AtomicU32,
    name: &'static str,
}

impl ArcShared {
    #[retry_with_backoff(max_retries = 4)]
    fn arced(self: Arc<Self>) -> io::Result<String> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 < 3 {
            return Err(reset());
        }
        Ok(format!("arc:{}", self.name))
    }
}

/// Which of the attempts' boxes were the caller's own. The caller's box lives until the last
/// attempt takes it, so no clone can share its address (a freed clone's may be reused, so
/// the clones are told apart only from the caller's box, not from each other).
fn callers_box(seen: &RefCell<Vec<*const Shared>>, caller: *const Shared) -> Vec<bool> {
    seen.borrow().iter().map(|&p| p == caller).collect()
}

#[test]
fn box_self_receiver_is_retried_with_fresh_boxes() {
    // Success on attempt 3 of 4: each of the three attempts works on a clone.
    let shared = Shared::boxed_new(3);
    let caller: *const Shared = &*shared;
    let (calls, clones, seen) = (
        shared.calls.clone(),
        shared.clones.clone(),
        shared.seen.clone(),
    );
    let (result, _) = on_virtual_clock(|| shared.boxed());
    assert_eq!(result.unwrap(), "box:b");
    assert_eq!(calls.get(), 3);
    assert_eq!(clones.get(), 3, "one fresh box per attempt");
    assert_eq!(callers_box(&seen, caller), [false, false, false]);

    // Every attempt fails: three clones, and the last attempt takes the caller's box.
    let shared = Shared::boxed_new(u32::MAX);
    let caller: *const Shared = &*shared;
    let (calls, clones, seen) = (
        shared.calls.clone(),
        shared.clones.clone(),
        shared.seen.clone(),
    );
    let (result, _) = on_virtual_clock(|| shared.boxed());
    assert_eq!(give_up_of(&result.unwrap_err()).attempts(), 4);
    assert_eq!(calls.get(), 4);
    assert_eq!(clones.get(), 3, "attempts 1 to 3 clone, attempt 4 moves");
    assert_eq!(callers_box(&seen, caller), [false, false, false, true]);
}

#[test]
fn arc_self_receiver_is_retried_and_every_clone_is_released() {
    let shared = Arc::new(ArcShared {
        calls: AtomicU32::new(0),
        name: "a",
    });
    let keep = Arc::clone(&shared);
    let (result, _) = on_virtual_clock(|| shared.arced());
    assert_eq!(result.unwrap(), "arc:a");
    assert_eq!(keep.calls.load(Ordering::SeqCst), 3);
    assert_eq!(Arc::strong_count(&keep), 1, "no attempt's clone leaks");
}

// ---------------------------------------------------------------------------------------------
// Generics, lifetimes, `impl Trait`
// ---------------------------------------------------------------------------------------------

#[retry_with_backoff(max_retries = 4)]
fn find_first<'items, 'key, T, K>(
    items: &'items [T],
    key: &'key K,
    calls: &Cell<u32>,
) -> Result<&'items T, io::Error>
where
    T: PartialEq<K> + Debug,
    K: ?Sized + Debug,
    'items: 'key,
{
    if fails_before(calls, 3) {
        return Err(reset());
    }
    items
        .iter()
        .find(|item| *item == key)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{key:?}")))
}

#[test]
fn generic_fn_with_where_clause_and_lifetimes_returns_a_borrow_of_its_argument() {
    let items = vec![String::from("a"), String::from("b"), String::from("c")];
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| find_first(&items, "b", &calls));
    let found = result.unwrap();
    assert!(
        std::ptr::eq(found, &items[1]),
        "a borrow of the caller's item"
    );
    assert_eq!(calls.get(), 3);
}

#[test]
fn generic_fn_returns_a_non_retryable_error_after_one_attempt() {
    let items = [1_u8, 2, 3];
    let calls = Cell::new(2); // the next call is past the flaky phase
    let (result, sleeps) = on_virtual_clock(|| find_first(&items, &9_u8, &calls));
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(calls.get(), 3, "exactly one attempt");
    assert!(sleeps.is_empty());
}

#[retry_with_backoff(max_retries = 4)]
fn greet(name: impl AsRef<str> + Clone, calls: &Cell<u32>) -> Result<impl Display, io::Error> {
    if fails_before(calls, 3) {
        return Err(reset());
    }
    Ok(format!("hello {}", name.as_ref()))
}

#[test]
fn impl_trait_argument_and_impl_trait_return_work() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| greet(Rc::<str>::from("ada"), &calls));
    assert_eq!(result.unwrap().to_string(), "hello ada");
    assert_eq!(calls.get(), 3);
}

// ---------------------------------------------------------------------------------------------
// `unsafe fn`, `extern "C" fn`
// ---------------------------------------------------------------------------------------------

/// # Safety
/// `ptr` must be valid for reads.
#[retry_with_backoff(max_retries = 3)]
unsafe fn read_raw(ptr: *const u32, calls: &Cell<u32>) -> io::Result<u32> {
    if fails_before(calls, 2) {
        return Err(reset());
    }
    // SAFETY: the caller promises `ptr` is valid for reads.
    Ok(unsafe { ptr.read() })
}

#[test]
fn unsafe_fn_is_retried() {
    let value = 42_u32;
    let calls = Cell::new(0);
    // SAFETY: `&value` is valid for reads.
    let (result, _) = on_virtual_clock(|| unsafe { read_raw(&value, &calls) });
    assert_eq!(result.unwrap(), 42);
    assert_eq!(calls.get(), 2);
}

#[allow(improper_ctypes_definitions)]
#[retry_with_backoff(max_retries = 3)]
extern "C" fn c_abi(calls: &Cell<u32>) -> io::Result<u32> {
    if fails_before(calls, 3) {
        return Err(reset());
    }
    Ok(calls.get())
}

#[test]
fn extern_c_fn_is_retried() {
    let calls = Cell::new(0);
    let as_pointer: extern "C" fn(&Cell<u32>) -> io::Result<u32> = c_abi;
    let (result, _) = on_virtual_clock(|| as_pointer(&calls));
    assert_eq!(result.unwrap(), 3);
    assert_eq!(calls.get(), 3);
}

// ---------------------------------------------------------------------------------------------
// Parameter patterns, `#[cfg]` on parameters, inner attributes
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Point {
    x: i32,
    y: Vec<i32>,
}

#[retry_with_backoff(max_retries = 4)]
fn destructured(
    (label, mut times): (String, u32),
    Point { x, y: mut ys }: Point,
    seen: &RefCell<Vec<(usize, u32, usize)>>,
    calls: &Cell<u32>,
) -> io::Result<String> {
    seen.borrow_mut().push((label.len(), times, ys.len()));
    times += 100;
    ys.push(x);
    let owned: String = label; // moves the attempt's copy
    if fails_before(calls, 3) {
        return Err(reset());
    }
    Ok(format!("{owned}:{times}:{x}:{ys:?}"))
}

#[test]
fn tuple_and_struct_patterns_in_parameters_get_fresh_copies_per_attempt() {
    let seen = RefCell::new(Vec::new());
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| {
        destructured(
            ("lbl".to_owned(), 1),
            Point {
                x: 5,
                y: vec![1, 2],
            },
            &seen,
            &calls,
        )
    });
    assert_eq!(result.unwrap(), "lbl:101:5:[1, 2, 5]");
    assert_eq!(calls.get(), 3);
    assert_eq!(*seen.borrow(), vec![(3, 1, 2); 3]);
}

// `all()` is always on and `any()` always off: the point is the `#[cfg]` itself.
#[allow(clippy::non_minimal_cfg)]
#[retry_with_backoff(max_retries = 4)]
fn with_cfg_params(
    #[cfg(all())] kept: String,
    #[cfg(any())] removed: String,
    #[cfg(any())] removed_mut: &mut Vec<u8>,
    calls: &Cell<u32>,
) -> io::Result<String> {
    if fails_before(calls, 2) {
        return Err(reset());
    }
    Ok(kept)
}

#[test]
fn cfg_on_parameters_keeps_enabled_and_drops_disabled_ones() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| with_cfg_params("kept".to_owned(), &calls));
    assert_eq!(result.unwrap(), "kept");
    assert_eq!(calls.get(), 2);
}

#[retry_with_backoff(max_retries = 3)]
fn with_inner_attribute(calls: &Cell<u32>) -> io::Result<u32> {
    #![allow(unused_variables)]
    let never_read = 5;
    if fails_before(calls, 3) {
        return Err(reset());
    }
    Ok(calls.get())
}

#[test]
fn inner_attribute_in_body_is_kept() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| with_inner_attribute(&calls));
    assert_eq!(result.unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// Traits: default bodies, impls, native `async fn`
// ---------------------------------------------------------------------------------------------

trait Fetcher {
    fn calls(&self) -> &Cell<u32>;

    #[retry_with_backoff(max_retries = 4)]
    fn fetch_default(&self) -> io::Result<u32> {
        if fails_before(self.calls(), 3) {
            return Err(reset());
        }
        Ok(self.calls().get())
    }

    fn fetch_impl(&self) -> io::Result<u32>;
}

struct Impl {
    calls: Cell<u32>,
}

impl Fetcher for Impl {
    fn calls(&self) -> &Cell<u32> {
        &self.calls
    }

    #[retry_with_backoff(max_retries = 4)]
    fn fetch_impl(&self) -> io::Result<u32> {
        if fails_before(&self.calls, 2) {
            return Err(reset());
        }
        Ok(self.calls.get() + 1000)
    }
}

#[test]
fn trait_default_method_body_is_retried() {
    let fetcher = Impl {
        calls: Cell::new(0),
    };
    let (result, _) = on_virtual_clock(|| fetcher.fetch_default());
    assert_eq!(result.unwrap(), 3);
    assert_eq!(fetcher.calls.get(), 3);
}

#[test]
fn trait_impl_method_is_retried() {
    let fetcher = Impl {
        calls: Cell::new(0),
    };
    let (result, _) = on_virtual_clock(|| fetcher.fetch_impl());
    assert_eq!(result.unwrap(), 1002);
    assert_eq!(fetcher.calls.get(), 2);
}

trait AsyncFetcher {
    fn counter(&self) -> &AtomicU32;

    #[retry_with_backoff(max_retries = 4)]
    async fn fetch_default(&self) -> io::Result<u32> {
        tokio::task::yield_now().await;
        if self.counter().fetch_add(1, Ordering::SeqCst) + 1 < 3 {
            return Err(reset());
        }
        Ok(self.counter().load(Ordering::SeqCst))
    }

    async fn fetch_impl(&self, add: u32) -> io::Result<u32>;
}

struct AsyncImpl {
    counter: AtomicU32,
}

impl AsyncFetcher for AsyncImpl {
    fn counter(&self) -> &AtomicU32 {
        &self.counter
    }

    #[retry_with_backoff(max_retries = 4)]
    async fn fetch_impl(&self, add: u32) -> io::Result<u32> {
        tokio::task::yield_now().await;
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 4 {
            return Err(reset());
        }
        Ok(n + add)
    }
}

#[tokio::test(start_paused = true)]
async fn async_fn_in_trait_default_body_is_retried() {
    let fetcher = AsyncImpl {
        counter: AtomicU32::new(0),
    };
    assert_eq!(fetcher.fetch_default().await.unwrap(), 3);
    assert_eq!(fetcher.counter.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn async_fn_in_trait_impl_is_retried() {
    let fetcher = AsyncImpl {
        counter: AtomicU32::new(0),
    };
    let start = tokio::time::Instant::now();
    assert_eq!(fetcher.fetch_impl(10).await.unwrap(), 14);
    assert_eq!(fetcher.counter.load(Ordering::SeqCst), 4);
    // Three waits of at least 2 s, 4 s and 8 s, on tokio's paused clock.
    assert!(
        start.elapsed() >= Duration::from_secs(14),
        "{:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Stacking with `#[tracing::instrument]`, both orders, sync and async
// ---------------------------------------------------------------------------------------------

fn current_span_name() -> &'static str {
    tracing::Span::current()
        .metadata()
        .map_or("<none>", |meta| meta.name())
}

#[retry_with_backoff(max_retries = 4)]
#[tracing::instrument(skip_all)]
fn retry_outside_instrument(spans: &RefCell<Vec<&'static str>>) -> io::Result<usize> {
    spans.borrow_mut().push(current_span_name());
    if spans.borrow().len() < 3 {
        return Err(reset());
    }
    Ok(spans.borrow().len())
}

/// Written above `#[tracing::instrument]` (the other order is refused, see
/// `tests/ui/fail/instrument_above.rs`), the span holds every attempt.
#[test]
fn stacked_under_instrument_every_attempt_runs_in_the_span() {
    let (logs, _guard) = common::capture();
    let spans = RefCell::new(Vec::new());
    let (result, _) = on_virtual_clock(|| retry_outside_instrument(&spans));
    assert_eq!(result.unwrap(), 3);
    assert_eq!(*spans.borrow(), vec!["retry_outside_instrument"; 3]);
    assert_eq!(logs.waits_ms().len(), 2, "{:?}", logs.messages());
}

#[retry_with_backoff(max_retries = 4)]
#[tracing::instrument(skip_all)]
async fn async_retry_outside_instrument(spans: &RefCell<Vec<&'static str>>) -> io::Result<usize> {
    tokio::task::yield_now().await;
    spans.borrow_mut().push(current_span_name());
    if spans.borrow().len() < 3 {
        return Err(reset());
    }
    Ok(spans.borrow().len())
}

#[tokio::test(start_paused = true)]
async fn async_stacked_under_instrument_every_attempt_runs_in_the_span() {
    let (logs, _guard) = common::capture();
    let spans = RefCell::new(Vec::new());
    assert_eq!(async_retry_outside_instrument(&spans).await.unwrap(), 3);
    assert_eq!(*spans.borrow(), vec!["async_retry_outside_instrument"; 3]);
    assert_eq!(logs.waits_ms().len(), 2, "{:?}", logs.messages());
}

// ---------------------------------------------------------------------------------------------
// Hygiene: parameters named like the expansion's locals
// ---------------------------------------------------------------------------------------------

#[retry_with_backoff(max_retries = 4)]
fn hygiene(
    __resilience_attempts: &Cell<u32>,
    __resilience_error: u32,
    __resilience_attempt: &mut Vec<u32>,
) -> io::Result<u32> {
    __resilience_attempt.push(__resilience_error);
    if fails_before(__resilience_attempts, 3) {
        return Err(reset());
    }
    Ok(__resilience_attempts.get() + __resilience_error)
}

#[test]
fn parameters_named_like_expansion_locals_do_not_clash() {
    let calls = Cell::new(0);
    let mut pushed = Vec::new();
    let (result, _) = on_virtual_clock(|| hygiene(&calls, 7, &mut pushed));
    assert_eq!(result.unwrap(), 10);
    assert_eq!(calls.get(), 3);
    assert_eq!(pushed, vec![7, 7, 7]);
}

// ---------------------------------------------------------------------------------------------
// Return types: `io::Result<T>`, `anyhow::Result<T>`, a user alias
// ---------------------------------------------------------------------------------------------

#[retry_with_backoff(max_retries = 3)]
fn std_io_result(calls: &Cell<u32>, succeed_on: u32) -> std::io::Result<Vec<u8>> {
    if fails_before(calls, succeed_on) {
        return Err(reset());
    }
    Ok(vec![1, 2, 3])
}

#[test]
fn std_io_result_alias_is_a_result() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| std_io_result(&calls, 3));
    assert_eq!(result.unwrap(), vec![1, 2, 3]);
    assert_eq!(calls.get(), 3);

    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| std_io_result(&calls, 99));
    assert_eq!(give_up_of(&result.unwrap_err()).attempts(), 3);
}

#[retry_with_backoff(max_retries = 3)]
fn anyhow_result(calls: &Cell<u32>, succeed_on: u32) -> anyhow::Result<String> {
    if fails_before(calls, succeed_on) {
        anyhow::bail!("connection reset by peer");
    }
    Ok("done".to_owned())
}

#[test]
fn anyhow_result_alias_is_a_result() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| anyhow_result(&calls, 2));
    assert_eq!(result.unwrap(), "done");
    assert_eq!(calls.get(), 2);

    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| anyhow_result(&calls, 99));
    let error = result.unwrap_err();
    let give_up = error
        .downcast_ref::<MediaProcessingError>()
        .expect("anyhow holds the give-up error");
    assert_eq!(give_up.attempts(), 3);
    assert_eq!(calls.get(), 3);
    assert_eq!(
        error.to_string(),
        "Failed after 3 retries: connection reset by peer"
    );
}

#[derive(Debug)]
enum ApiError {
    Http(u16),
    Io(io::Error),
    Exhausted(MediaProcessingError),
}

impl Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Http(code) => write!(f, "HTTP {code}"),
            ApiError::Io(error) => write!(f, "I/O: {error}"),
            ApiError::Exhausted(error) => Display::fmt(error, f),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<MediaProcessingError> for ApiError {
    fn from(error: MediaProcessingError) -> Self {
        ApiError::Exhausted(error)
    }
}

impl From<io::Error> for ApiError {
    fn from(error: io::Error) -> Self {
        ApiError::Io(error)
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[retry_with_backoff(max_retries = 4)]
fn user_alias(calls: &Cell<u32>, succeed_on: u32) -> ApiResult<u16> {
    if fails_before(calls, succeed_on) {
        return Err(ApiError::Http(503));
    }
    Ok(200)
}

#[test]
fn user_result_alias_is_a_result() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| user_alias(&calls, 4));
    assert_eq!(result.unwrap(), 200);
    assert_eq!(calls.get(), 4);

    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| user_alias(&calls, 99));
    match result {
        Err(ApiError::Exhausted(error)) => {
            assert_eq!(error.attempts(), 4);
            assert_eq!(error.to_string(), "Failed after 4 retries: HTTP 503");
        }
        other => panic!("expected a give-up error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments: owned, `#[no_clone]`, `&mut`
// ---------------------------------------------------------------------------------------------

#[retry_with_backoff(max_retries = 4)]
fn moves_owned_args(
    name: String,
    mut items: Vec<u32>,
    seen: &RefCell<Vec<(String, usize)>>,
    calls: &Cell<u32>,
) -> io::Result<usize> {
    seen.borrow_mut().push((name.clone(), items.len()));
    items.push(99);
    drop(name);
    if fails_before(calls, 3) {
        return Err(reset());
    }
    Ok(items.len())
}

#[test]
fn owned_args_moved_by_the_body_reach_every_attempt_intact() {
    let seen = RefCell::new(Vec::new());
    let calls = Cell::new(0);
    let (result, _) =
        on_virtual_clock(|| moves_owned_args("orig".to_owned(), vec![1, 2, 3], &seen, &calls));
    assert_eq!(result.unwrap(), 4);
    assert_eq!(calls.get(), 3);
    assert_eq!(*seen.borrow(), vec![("orig".to_owned(), 3); 3]);
}

/// Not `Clone`: only borrowed by the body.
struct Connection {
    dsn: String,
    queries: Cell<u32>,
}

#[retry_with_backoff(max_retries = 4)]
fn query(#[no_clone] conn: Connection, sql: &str) -> io::Result<String> {
    if fails_before(&conn.queries, 3) {
        return Err(reset());
    }
    Ok(format!(
        "{}: {sql} (query #{})",
        conn.dsn,
        conn.queries.get()
    ))
}

#[test]
fn no_clone_argument_is_borrowed_by_every_attempt() {
    let conn = Connection {
        dsn: "db".to_owned(),
        queries: Cell::new(0),
    };
    let (result, _) = on_virtual_clock(|| query(conn, "select 1"));
    assert_eq!(result.unwrap(), "db: select 1 (query #3)");
}

#[retry_with_backoff(max_retries = 4)]
async fn query_async(#[no_clone] conn: Connection) -> io::Result<u32> {
    tokio::task::yield_now().await;
    if fails_before(&conn.queries, 2) {
        return Err(reset());
    }
    Ok(conn.queries.get())
}

#[tokio::test(start_paused = true)]
async fn no_clone_argument_of_async_fn_is_borrowed_by_every_attempt() {
    let conn = Connection {
        dsn: String::new(),
        queries: Cell::new(0),
    };
    assert_eq!(query_async(conn).await.unwrap(), 2);
}

#[retry_with_backoff(max_retries = 5)]
fn pushes_through_mut_ref(out: &mut Vec<u32>, succeed_on: usize) -> io::Result<usize> {
    out.push(out.len() as u32);
    if out.len() < succeed_on {
        return Err(reset());
    }
    Ok(out.len())
}

#[test]
fn mut_ref_argument_keeps_what_each_attempt_pushed() {
    let mut out = Vec::new();
    let (result, _) = on_virtual_clock(|| pushes_through_mut_ref(&mut out, 4));
    assert_eq!(result.unwrap(), 4);
    assert_eq!(out, vec![0, 1, 2, 3]);
}

#[retry_with_backoff(max_retries = 5)]
async fn pushes_through_mut_ref_async(out: &mut Vec<u32>) -> io::Result<usize> {
    tokio::task::yield_now().await;
    out.push(out.len() as u32);
    if out.len() < 3 {
        return Err(reset());
    }
    Ok(out.len())
}

#[tokio::test(start_paused = true)]
async fn async_mut_ref_argument_keeps_what_each_attempt_pushed() {
    let mut out = Vec::new();
    assert_eq!(pushes_through_mut_ref_async(&mut out).await.unwrap(), 3);
    assert_eq!(out, vec![0, 1, 2]);
}

// ---------------------------------------------------------------------------------------------
// `return` and `?` end only the attempt
// ---------------------------------------------------------------------------------------------

fn flaky_io(calls: &Cell<u32>) -> io::Result<u32> {
    match calls.get() {
        1 => Err(reset()),
        n => Ok(n),
    }
}

#[retry_with_backoff(max_retries = 5)]
fn early_exits(calls: &Cell<u32>, trace: &RefCell<Vec<&'static str>>) -> ApiResult<u32> {
    calls.set(calls.get() + 1);
    if calls.get() == 2 {
        trace.borrow_mut().push("return");
        return Err(ApiError::Http(503));
    }
    // `?` converts `io::Error` into `ApiError` and ends only this attempt.
    let n = flaky_io(calls)?;
    trace.borrow_mut().push("past ?");
    Ok(n)
}

#[test]
fn return_and_question_mark_end_only_the_attempt() {
    let calls = Cell::new(0);
    let trace = RefCell::new(Vec::new());
    let (result, sleeps) = on_virtual_clock(|| early_exits(&calls, &trace));
    assert_eq!(result.unwrap(), 3);
    assert_eq!(calls.get(), 3);
    assert_eq!(*trace.borrow(), vec!["return", "past ?"]);
    assert_eq!(sleeps.len(), 2);
}

#[retry_with_backoff(max_retries = 5)]
async fn early_exits_async(calls: &Cell<u32>) -> ApiResult<u32> {
    tokio::task::yield_now().await;
    calls.set(calls.get() + 1);
    if calls.get() == 2 {
        return Err(ApiError::Http(503));
    }
    let n = flaky_io(calls)?;
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn async_return_and_question_mark_end_only_the_attempt() {
    let calls = Cell::new(0);
    assert_eq!(early_exits_async(&calls).await.unwrap(), 3);
    assert_eq!(calls.get(), 3);
}

// ---------------------------------------------------------------------------------------------
// Borrowed `Ok` values with elided lifetimes
// ---------------------------------------------------------------------------------------------

thread_local! {
    static FIRST_WORD_CALLS: Cell<u32> = const { Cell::new(0) };
}

#[retry_with_backoff(max_retries = 3)]
fn first_word(text: &str) -> Result<&str, io::Error> {
    let calls = FIRST_WORD_CALLS.with(|calls| {
        calls.set(calls.get() + 1);
        calls.get()
    });
    if calls < 3 {
        return Err(reset());
    }
    Ok(text.split_whitespace().next().unwrap_or(""))
}

#[test]
fn ok_value_borrowing_from_an_argument_with_elided_lifetime() {
    FIRST_WORD_CALLS.with(|calls| calls.set(0));
    let text = String::from("hello world");
    let (result, _) = on_virtual_clock(|| first_word(&text));
    let word = result.unwrap();
    assert_eq!(word, "hello");
    assert!(
        std::ptr::eq(word.as_ptr(), text.as_ptr()),
        "borrows the argument"
    );
    assert_eq!(FIRST_WORD_CALLS.with(Cell::get), 3);
}

// ---------------------------------------------------------------------------------------------
// `Send` futures with a non-`Send` error type
// ---------------------------------------------------------------------------------------------

/// Holds an `Rc`: neither `Send` nor `Sync`.
#[derive(Debug)]
struct LocalError(Rc<str>);

impl Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<MediaProcessingError> for LocalError {
    fn from(error: MediaProcessingError) -> Self {
        LocalError(Rc::from(error.to_string()))
    }
}

#[retry_with_backoff(max_retries = 4)]
async fn non_send_error(calls: Arc<AtomicU32>, succeed_on: u32) -> Result<u32, LocalError> {
    tokio::task::yield_now().await;
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    if n < succeed_on {
        return Err(LocalError(Rc::from("connection reset")));
    }
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn async_fn_with_non_send_error_still_returns_a_send_future() {
    let calls = Arc::new(AtomicU32::new(0));
    let future = non_send_error(Arc::clone(&calls), 3);
    assert_send(&future);
    assert_eq!(future.await.unwrap(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let calls = Arc::new(AtomicU32::new(0));
    let error = non_send_error(Arc::clone(&calls), 99).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(&*error.0, "Failed after 4 retries: connection reset");
}

// ---------------------------------------------------------------------------------------------
// Visibility, docs, other attributes and the name are kept
// ---------------------------------------------------------------------------------------------

#[deny(missing_docs)]
pub mod documented {
    //! A module that denies missing docs.

    use std::cell::Cell;
    use std::io;

    use resilience::retry_with_backoff;

    /// Documented, crate-visible, `#[must_use]`: all of it survives the attribute.
    #[must_use = "the fetched value is the point of the call"]
    #[retry_with_backoff(max_retries = 3)]
    pub(crate) fn visible_fn(calls: &Cell<u32>) -> io::Result<u32> {
        calls.set(calls.get() + 1);
        if calls.get() < 2 {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        Ok(calls.get())
    }

    /// Public and documented, with the attribute first.
    #[retry_with_backoff(max_retries = 2)]
    #[must_use = "the fetched value is the point of the call"]
    pub fn public_fn() -> io::Result<&'static str> {
        Ok("ok")
    }
}

#[test]
fn visibility_docs_attributes_and_name_are_kept() {
    let calls = Cell::new(0);
    let as_pointer: fn(&Cell<u32>) -> io::Result<u32> = documented::visible_fn;
    assert!(std::any::type_name_of_val(&documented::visible_fn).ends_with("::visible_fn"));
    let (result, _) = on_virtual_clock(|| as_pointer(&calls));
    assert_eq!(result.unwrap(), 2);
    assert_eq!(calls.get(), 2);
    assert_eq!(documented::public_fn().unwrap(), "ok");
}

// ---------------------------------------------------------------------------------------------
// More receivers and shapes: async receivers, nested items, generic impls, raw identifiers
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct AsyncJob {
    n: u32,
    calls: Rc<Cell<u32>>,
    seen: Rc<RefCell<Vec<u32>>>,
}

impl AsyncJob {
    fn new(n: u32) -> Self {
        Self {
            n,
            calls: Rc::default(),
            seen: Rc::default(),
        }
    }

    #[retry_with_backoff(max_retries = 4)]
    async fn by_value(self) -> io::Result<u32> {
        tokio::task::yield_now().await;
        let AsyncJob { n, calls, seen } = self;
        seen.borrow_mut().push(n);
        if fails_before(&calls, 3) {
            return Err(reset());
        }
        Ok(n)
    }

    #[retry_with_backoff(max_retries = 4)]
    async fn by_mut_value(mut self) -> io::Result<u32> {
        self.seen.borrow_mut().push(self.n);
        self.n += 100;
        tokio::task::yield_now().await;
        if fails_before(&self.calls, 3) {
            return Err(reset());
        }
        Ok(self.n)
    }

    #[retry_with_backoff(max_retries = 4)]
    async fn boxed(self: Box<Self>) -> io::Result<u32> {
        tokio::task::yield_now().await;
        if fails_before(&self.calls, 2) {
            return Err(reset());
        }
        Ok(self.n)
    }

    #[retry_with_backoff(max_retries = 4)]
    async fn by_mut_ref(&mut self) -> io::Result<u32> {
        self.n += 1;
        tokio::task::yield_now().await;
        if fails_before(&self.calls, 3) {
            return Err(reset());
        }
        Ok(self.n)
    }
}

#[tokio::test(start_paused = true)]
async fn async_method_by_value_gives_each_attempt_a_fresh_clone() {
    let job = AsyncJob::new(7);
    let (calls, seen) = (job.calls.clone(), job.seen.clone());
    assert_eq!(job.by_value().await.unwrap(), 7);
    assert_eq!(calls.get(), 3);
    assert_eq!(*seen.borrow(), vec![7, 7, 7]);
}

#[tokio::test(start_paused = true)]
async fn async_method_by_mut_value_starts_every_attempt_from_the_callers_value() {
    let job = AsyncJob::new(1);
    let (calls, seen) = (job.calls.clone(), job.seen.clone());
    assert_eq!(job.by_mut_value().await.unwrap(), 101);
    assert_eq!(calls.get(), 3);
    assert_eq!(*seen.borrow(), vec![1, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn async_box_self_receiver_is_retried() {
    let job = Box::new(AsyncJob::new(5));
    let calls = job.calls.clone();
    assert_eq!(job.boxed().await.unwrap(), 5);
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn async_method_by_mut_ref_keeps_changes_of_failed_attempts() {
    let mut job = AsyncJob::new(0);
    assert_eq!(job.by_mut_ref().await.unwrap(), 3);
    assert_eq!(job.n, 3);
}

struct Nested(u32);

impl Nested {
    #[retry_with_backoff(max_retries = 3)]
    fn with_nested_items(&self, calls: &Cell<u32>) -> io::Result<u32> {
        struct Local(u32);
        impl Local {
            fn get(&self) -> u32 {
                self.0
            }
        }
        let plus_one = || self.0 + 1;
        if fails_before(calls, 2) {
            return Err(reset());
        }
        Ok(Local(self.0).get() * 100 + plus_one())
    }

    /// Every place a body's `self` is not the receiver: a `use` tree, a macro definition, a
    /// nested trait and fn, a module path, `stringify!`.
    #[retry_with_backoff(max_retries = 3)]
    fn with_uses_and_macros(&self, calls: &Cell<u32>) -> io::Result<String> {
        use std::fmt::{self, Write as _};
        macro_rules! doubled {
            ($value:expr) => {
                $value * 2
            };
        }
        trait Describe {
            fn describe(&self) -> String {
                String::from("described")
            }
        }
        impl Describe for u8 {}
        fn helper() -> u32 {
            self::module_level_value()
        }
        if fails_before(calls, 2) {
            return Err(reset());
        }
        let mut out = String::new();
        let written: fmt::Result = write!(out, "{}", doubled!(self.0));
        assert!(written.is_ok());
        Ok(format!(
            "{out} {} {} {} {}",
            7u8.describe(),
            helper(),
            self::module_level_value() + self.0,
            stringify!(self)
        ))
    }

    #[retry_with_backoff(max_retries = 3)]
    fn with_inline_format_self(&self, calls: &Cell<u32>) -> io::Result<String> {
        if fails_before(calls, 2) {
            return Err(reset());
        }
        Ok(format!("{self}"))
    }
}

impl Display for Nested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nested({})", self.0)
    }
}

#[test]
fn nested_items_and_closures_in_a_method_body_keep_their_own_self() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| Nested(4).with_nested_items(&calls));
    assert_eq!(result.unwrap(), 405);
    assert_eq!(calls.get(), 2);
}

fn module_level_value() -> u32 {
    1
}

#[test]
fn uses_macro_definitions_and_module_paths_keep_their_self() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| Nested(4).with_uses_and_macros(&calls));
    assert_eq!(result.unwrap(), "8 described 1 5 self");
    assert_eq!(calls.get(), 2);
}

#[test]
fn inline_format_arg_self_in_a_shared_ref_method() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| Nested(9).with_inline_format_self(&calls));
    assert_eq!(result.unwrap(), "Nested(9)");
    assert_eq!(calls.get(), 2);
}

trait Consume: Sized {
    fn calls(&self) -> &Cell<u32>;
    fn value(self) -> u32;

    #[retry_with_backoff(max_retries = 4)]
    fn consume_default(self) -> io::Result<u32>
    where
        Self: Clone,
    {
        if fails_before(self.calls(), 3) {
            return Err(reset());
        }
        Ok(self.value())
    }
}

#[derive(Clone)]
struct Token<'a> {
    calls: &'a Cell<u32>,
    value: u32,
}

impl Consume for Token<'_> {
    fn calls(&self) -> &Cell<u32> {
        self.calls
    }

    fn value(self) -> u32 {
        self.value
    }
}

#[test]
fn trait_default_method_by_value_with_where_self_clone() {
    let calls = Cell::new(0);
    let token = Token {
        calls: &calls,
        value: 17,
    };
    let (result, _) = on_virtual_clock(|| token.consume_default());
    assert_eq!(result.unwrap(), 17);
    assert_eq!(calls.get(), 3);
}

struct Wrapper<T>(T);

impl<T: Clone + Display> Wrapper<T> {
    #[retry_with_backoff(max_retries = 3)]
    fn join(&self, extra: T, calls: &Cell<u32>) -> io::Result<String> {
        if fails_before(calls, 3) {
            return Err(reset());
        }
        Ok(format!("{}{extra}", self.0))
    }
}

#[test]
fn method_of_a_generic_impl_block() {
    let calls = Cell::new(0);
    let wrapper = Wrapper("a".to_owned());
    let (result, _) = on_virtual_clock(|| wrapper.join("b".to_owned(), &calls));
    assert_eq!(result.unwrap(), "ab");
    assert_eq!(calls.get(), 3);
}

#[retry_with_backoff(max_retries = 3)]
fn r#try(r#type: String, calls: &Cell<u32>) -> io::Result<String> {
    if fails_before(calls, 2) {
        return Err(reset());
    }
    Ok(r#type)
}

#[test]
fn raw_identifiers_as_fn_and_parameter_names() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| r#try("t".to_owned(), &calls));
    assert_eq!(result.unwrap(), "t");
    assert_eq!(calls.get(), 2);
}

#[retry_with_backoff(max_retries = 3)]
fn const_generic<const N: usize>(
    mut bytes: [u8; N],
    seen: &RefCell<Vec<u8>>,
) -> io::Result<[u8; N]> {
    seen.borrow_mut().push(bytes[0]);
    bytes[0] += 1;
    if seen.borrow().len() < 3 {
        return Err(reset());
    }
    Ok(bytes)
}

#[test]
fn const_generic_array_by_value_is_fresh_per_attempt() {
    let seen = RefCell::new(Vec::new());
    let (result, _) = on_virtual_clock(|| const_generic([1, 2], &seen));
    assert_eq!(result.unwrap(), [2, 2]);
    assert_eq!(*seen.borrow(), vec![1, 1, 1]);
}

#[retry_with_backoff(max_retries = 3)]
fn other_patterns(
    _: u32,
    &(a, b): &(u32, u32),
    (left, right): &mut (u32, u32),
    calls: &Cell<u32>,
) -> io::Result<u32> {
    *left += a;
    *right += b;
    if fails_before(calls, 3) {
        return Err(reset());
    }
    Ok(*left + *right)
}

#[test]
fn wildcard_reference_and_mut_reference_patterns() {
    let calls = Cell::new(0);
    let mut totals = (0, 0);
    let (result, _) = on_virtual_clock(|| other_patterns(0, &(1, 10), &mut totals, &calls));
    assert_eq!(result.unwrap(), 33);
    assert_eq!(
        totals,
        (3, 30),
        "what each attempt added through `&mut` stays"
    );
}

#[retry_with_backoff(max_retries = 3)]
fn generic_error<E: Display + From<MediaProcessingError>>(
    make_error: &dyn Fn() -> Option<E>,
) -> Result<u32, E> {
    match make_error() {
        Some(error) => Err(error),
        None => Ok(1),
    }
}

/// The same body, with the error type written out: the rules see an `io::Error` and its kind.
#[retry_with_backoff(max_retries = 3)]
fn concrete_error(make_error: &dyn Fn() -> Option<io::Error>) -> Result<u32, io::Error> {
    match make_error() {
        Some(error) => Err(error),
        None => Ok(1),
    }
}

/// The attempts each function makes when every attempt fails with `make()`.
fn attempts_generic_and_concrete(make: fn() -> io::Error) -> (u32, u32) {
    let calls = Cell::new(0);
    let make_error = || {
        calls.set(calls.get() + 1);
        Some(make())
    };
    let _ = on_virtual_clock(|| generic_error::<io::Error>(&make_error));
    let generic = calls.replace(0);
    let _ = on_virtual_clock(|| concrete_error(&make_error));
    (generic, calls.get())
}

#[test]
fn generic_error_type_bounded_by_display_only_gets_the_text_rule() {
    // README: "with only `E: Display`, only the text rule applies". Each error's kind and text
    // disagree, so the answer shows which one was read.
    assert_eq!(
        attempts_generic_and_concrete(|| io::Error::new(io::ErrorKind::TimedOut, "slow upstream")),
        (1, 3),
        "a timed-out kind with no retryable word: only the concrete function retries it"
    );
    assert_eq!(
        attempts_generic_and_concrete(|| io::Error::new(
            io::ErrorKind::InvalidData,
            "503 Service Unavailable"
        )),
        (3, 1),
        "a 503 text on invalid data: only the generic function retries it"
    );
}

#[test]
fn generic_error_type_receives_the_give_up_error() {
    let calls = Cell::new(0);
    let make_error = || {
        calls.set(calls.get() + 1);
        Some(io::Error::other("503 Service Unavailable"))
    };
    let (result, sleeps) = on_virtual_clock(|| generic_error(&make_error));
    let error: io::Error = result.unwrap_err();
    assert_eq!(calls.get(), 3);
    assert_eq!(sleeps.len(), 2);
    assert_eq!(give_up_of(&error).attempts(), 3);
    assert_eq!(
        error.to_string(),
        "Failed after 3 retries: 503 Service Unavailable"
    );
}

#[retry_with_backoff(max_retries = 3)]
fn boxed_error(calls: &Cell<u32>) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    if fails_before(calls, 3) {
        return Err("connection reset".into());
    }
    Ok(calls.get())
}

#[test]
fn boxed_dyn_error_return_type() {
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| boxed_error(&calls));
    assert_eq!(result.unwrap(), 3);
}

#[retry_with_backoff(max_retries = 3)]
fn write_dyn(out: &mut dyn io::Write, calls: &Cell<u32>) -> io::Result<()> {
    out.write_all(b"x")?;
    if fails_before(calls, 3) {
        return Err(reset());
    }
    out.flush()
}

#[test]
fn mut_dyn_trait_argument_is_reborrowed_per_attempt() {
    let calls = Cell::new(0);
    let mut out = Vec::new();
    let (result, _) = on_virtual_clock(|| write_dyn(&mut out, &calls));
    result.unwrap();
    assert_eq!(out, b"xxx");
}

#[retry_with_backoff(max_retries = 3, timeout = 60)]
async fn with_timeout_and_mut_ref(out: &mut Vec<u32>) -> io::Result<usize> {
    out.push(1);
    tokio::task::yield_now().await;
    if out.len() < 2 {
        return Err(reset());
    }
    Ok(out.len())
}

#[tokio::test(start_paused = true)]
async fn async_fn_with_timeout_and_mut_ref_is_send_and_retried() {
    let mut out = Vec::new();
    let future = with_timeout_and_mut_ref(&mut out);
    assert_send(&future);
    assert_eq!(future.await.unwrap(), 2);
    assert_eq!(out, vec![1, 1]);
}

/// The first attempt at each `n` fails, so every level of the recursion retries on its own:
/// a level whose retry state leaked into the next (or was shared with it) would give up.
#[retry_with_backoff(max_retries = 2, jitter = 0)]
fn factorial(n: u64, failed_at: &RefCell<Vec<u64>>, attempts: &Cell<u32>) -> io::Result<u64> {
    attempts.set(attempts.get() + 1);
    if !failed_at.borrow().contains(&n) {
        failed_at.borrow_mut().push(n);
        return Err(reset());
    }
    if n == 0 {
        return Ok(1);
    }
    Ok(n * factorial(n - 1, failed_at, attempts)?)
}

#[test]
fn recursive_retried_function() {
    let failed_at = RefCell::new(Vec::new());
    let attempts = Cell::new(0);
    let (result, sleeps) = on_virtual_clock(|| factorial(10, &failed_at, &attempts));
    assert_eq!(result.unwrap(), 3_628_800);
    assert_eq!(*failed_at.borrow(), (0..=10).rev().collect::<Vec<u64>>());
    assert_eq!(attempts.get(), 22, "two attempts at each of the 11 levels");
    assert_eq!(
        sleeps,
        vec![Duration::from_secs(2); 11],
        "one wait per level"
    );
}

// ---------------------------------------------------------------------------------------------
// Known macro bugs that compile but misbehave (see the report at the bottom)
// ---------------------------------------------------------------------------------------------

#[retry_with_backoff(max_retries = 3)]
fn reassigns_shared_ref(mut input: &str, seen: &RefCell<Vec<String>>) -> io::Result<usize> {
    seen.borrow_mut().push(input.to_owned());
    input = &input[1..];
    if seen.borrow().len() < 3 {
        return Err(reset());
    }
    Ok(input.len())
}

#[test]
fn mut_shared_ref_param_reassigned_by_an_attempt_is_reset_for_the_next() {
    let seen = RefCell::new(Vec::new());
    let (result, _) = on_virtual_clock(|| reassigns_shared_ref("abc", &seen));
    assert_eq!(result.unwrap(), 2);
    assert_eq!(*seen.borrow(), vec!["abc"; 3]);
}

#[retry_with_backoff(max_retries = 3)]
async fn reassigns_shared_ref_async(
    mut input: &str,
    seen: &RefCell<Vec<String>>,
) -> io::Result<usize> {
    tokio::task::yield_now().await;
    seen.borrow_mut().push(input.to_owned());
    input = &input[1..];
    if seen.borrow().len() < 3 {
        return Err(reset());
    }
    Ok(input.len())
}

#[tokio::test(start_paused = true)]
async fn async_mut_shared_ref_param_reassigned_by_an_attempt_is_reset_for_the_next() {
    let seen = RefCell::new(Vec::new());
    assert_eq!(reassigns_shared_ref_async("abc", &seen).await.unwrap(), 2);
    assert_eq!(*seen.borrow(), vec!["abc"; 3]);
}

#[derive(Debug, Clone)]
struct Described {
    n: u32,
}

impl Described {
    #[retry_with_backoff(max_retries = 3)]
    fn describe(mut self) -> io::Result<String> {
        self.n += 1;
        Ok(format!("{self:?}"))
    }
}

#[test]
fn inline_format_self_in_a_by_value_method_sees_the_attempts_copy() {
    assert_eq!(Described { n: 1 }.describe().unwrap(), "Described { n: 2 }");
}

// Shapes that once failed to compile under the attribute although they compile without it.

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn advance_buffer(mut buf: &mut [u8]) -> io::Result<usize> {
    buf = &mut buf[1..];
    buf[0] += 1;
    Ok(buf.len())
}

#[test]
fn mut_parameter_of_mut_reference_type_can_be_reassigned() {
    let mut data = [1, 2, 3];
    assert_eq!(advance_buffer(&mut data).unwrap(), 2);
    assert_eq!(data, [1, 3, 3]);
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn boxed_display() -> io::Result<Box<dyn std::fmt::Display>> {
    Ok(Box::new(5))
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn static_slice() -> io::Result<&'static [u8]> {
    Ok(&[1, 2, 3])
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
fn boxed_error_by_coercion() -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Err(Box::new(io::Error::from(io::ErrorKind::InvalidData)))
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
async fn boxed_display_async(early: bool) -> io::Result<Box<dyn std::fmt::Display + Send>> {
    if early {
        return Ok(Box::new("early"));
    }
    Ok(Box::new(5))
}

#[tokio::test(start_paused = true)]
async fn unsized_coercions_in_the_body_work_as_without_the_attribute() {
    assert_eq!(boxed_display().unwrap().to_string(), "5");
    assert_eq!(static_slice().unwrap(), &[1, 2, 3]);
    let error = boxed_error_by_coercion().unwrap_err();
    assert_eq!(
        error.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::InvalidData)
    );
    assert_eq!(
        boxed_display_async(true).await.unwrap().to_string(),
        "early"
    );
    assert_eq!(boxed_display_async(false).await.unwrap().to_string(), "5");
}

#[derive(Debug)]
struct Shown {
    n: u32,
}

impl Shown {
    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn show(&mut self) -> io::Result<String> {
        self.n += 1;
        let shown = format!("{self:?} {{self}}");
        self.n += 1;
        Ok(shown)
    }
}

#[test]
fn format_string_self_in_a_mut_ref_method_reads_the_reborrow() {
    let mut shown = Shown { n: 0 };
    assert_eq!(shown.show().unwrap(), "Shown { n: 1 } {self}");
    assert_eq!(shown.n, 2);
}

struct Pinned {
    n: u32,
}

impl Pinned {
    #[retry_with_backoff(max_retries = 3, base_delay = 0, jitter = 0)]
    fn bump(self: std::pin::Pin<&mut Self>) -> io::Result<u32> {
        let this = self.get_mut();
        this.n += 1;
        if this.n < 3 {
            return Err(io::Error::from(io::ErrorKind::ConnectionReset));
        }
        Ok(this.n)
    }
}

#[test]
fn pin_mut_self_is_reborrowed_per_attempt() {
    let mut pinned = Pinned { n: 0 };
    let value = with_sleeper(Rc::new(VirtualClock::new()), || {
        std::pin::Pin::new(&mut pinned).bump()
    });
    assert_eq!(value.unwrap(), 3);
}

struct Hygienic(u32);

impl Hygienic {
    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn local(&self) -> io::Result<u32> {
        let __self = 5_u32;
        Ok(self.0 + __self)
    }

    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn param(&self, __self: u32) -> io::Result<u32> {
        Ok(self.0 + __self)
    }
}

#[test]
fn a_local_or_parameter_named_like_the_receiver_alias_is_its_own() {
    assert_eq!(Hygienic(1).local().unwrap(), 6);
    assert_eq!(Hygienic(1).param(10).unwrap(), 11);
}

macro_rules! define_local_type {
    ($($item:item)*) => { $($item)* };
}

struct Outer(u32);

impl Outer {
    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn with_local_type(&self) -> io::Result<u32> {
        define_local_type! {
            struct Inner(u32);
            impl Inner {
                fn get(&self) -> u32 {
                    self.0
                }
            }
        }
        Ok(Inner(self.0).get() + 1)
    }
}

#[test]
fn items_defined_by_a_macro_in_the_body_keep_their_own_self() {
    assert_eq!(Outer(41).with_local_type().unwrap(), 42);
}

#[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
async fn takes_a_cell(counter: std::cell::Cell<u32>, #[no_clone] label: String) -> io::Result<u32> {
    counter.set(counter.get() + 1);
    tokio::task::yield_now().await;
    Ok(counter.get() + label.len() as u32)
}

#[tokio::test(start_paused = true)]
async fn a_send_but_not_sync_by_value_argument_keeps_the_future_send() {
    fn assert_send<T: Send>(_: &T) {}
    let future = takes_a_cell(std::cell::Cell::new(1), "ab".to_owned());
    assert_send(&future);
    assert_eq!(future.await.unwrap(), 4);
}

struct Spelled;

impl Spelled {
    #[retry_with_backoff(max_retries = 2, base_delay = 0, jitter = 0)]
    fn spell(&self) -> io::Result<(&'static str, &'static str)> {
        let _ = self;
        Ok((stringify!(self), concat!("{self}", "!")))
    }
}

#[test]
fn macros_that_read_text_see_self_as_written() {
    assert_eq!(Spelled.spell().unwrap(), ("self", "{self}!"));
}

// ---------------------------------------------------------------------------------------------
// `self` in the body, where the receiver is by value: what is renamed and what is not

#[derive(Clone, Debug)]
struct Owned {
    n: u32,
    calls: Rc<Cell<u32>>,
}

impl Owned {
    fn new(n: u32) -> Self {
        Self {
            n,
            calls: Rc::default(),
        }
    }

    /// A format string that captures `self` and another local; a string that only looks
    /// like a format string; a `use` tree and a macro whose input holds both.
    #[retry_with_backoff(max_retries = 3)]
    fn describe(self, url: &str) -> io::Result<(String, String, Vec<u32>)> {
        if fails_before(&self.calls, 2) {
            return Err(reset());
        }
        let line = format!("{self:?} at {url}");
        #[allow(clippy::useless_format)]
        let template = format!("{}", "{self}");
        assert_eq!(template, "{self}", "{self:?} {url}");
        let numbers = vec![self.n, {
            use std::fmt::{self as format};
            let _: Option<format::Error> = None;
            1
        }];
        Ok((line, template, numbers))
    }
}

#[test]
fn a_by_value_receiver_keeps_format_captures_and_plain_strings_as_written() {
    let owned = Owned::new(7);
    let calls = Rc::clone(&owned.calls);
    let (result, _) = on_virtual_clock(|| owned.describe("http://h.test/x"));
    let (line, template, numbers) = result.unwrap();
    assert_eq!(
        line,
        "Owned { n: 7, calls: Cell { value: 2 } } at http://h.test/x"
    );
    assert_eq!(template, "{self}");
    assert_eq!(numbers, [7, 1]);
    assert_eq!(calls.get(), 2);
}

struct Counted {
    n: u32,
}

impl Counted {
    /// `self: &mut Self` is `&mut self` written out: reborrowed, not cloned.
    #[allow(clippy::needless_arbitrary_self_type)]
    #[retry_with_backoff(max_retries = 3)]
    fn bump(self: &mut Self, calls: &Cell<u32>) -> io::Result<u32> {
        self.n += 1;
        if fails_before(calls, 2) {
            return Err(reset());
        }
        Ok(self.n)
    }

    /// `&self` is captured as it is: `assert!` reports the body's text as written.
    #[retry_with_backoff(max_retries = 1)]
    fn check(&self) -> io::Result<u32> {
        assert!(self.n < 100);
        Ok(self.n)
    }
}

#[test]
fn a_typed_mut_receiver_is_reborrowed() {
    let mut counted = Counted { n: 0 };
    let calls = Cell::new(0);
    let (result, _) = on_virtual_clock(|| counted.bump(&calls));
    assert_eq!(result.unwrap(), 2);
    assert_eq!(counted.n, 2, "each attempt changed the caller's value");
}

#[test]
fn a_shared_receiver_reads_as_written_in_a_panic_message() {
    let panic = std::panic::catch_unwind(|| Counted { n: 100 }.check()).unwrap_err();
    assert_eq!(
        panic.downcast_ref::<&str>().copied(),
        Some("assertion failed: self.n < 100")
    );
}
