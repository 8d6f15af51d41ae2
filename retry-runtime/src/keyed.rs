//! Guards held per key (one limit per model, per tenant), and [`Shared`], how a retried call
//! holds a guard: a `static`'s, or one key's of a [`Keyed`] (the README's "Per key").

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::origin::{duration_nanos, nanos};

/// A guard that a [`Keyed`] can hold per key: `fresh` makes one with the same settings and a
/// state of its own, as if nothing had happened yet.
pub trait KeyedGuard: Send + Sync + 'static {
    /// The same settings, a new state.
    fn fresh(&self) -> Self;

    /// The name of `key`'s state, for a guard whose state a fleet keeps (a shared
    /// limiter's `name:key`); `None` for a guard whose state is this process's alone.
    fn key_name(&self, key: &dyn fmt::Display) -> Option<Arc<str>> {
        let _ = key;
        None
    }
}

/// A guard as a retried call holds it: a `static` one, or one key's of a [`Keyed`] (which
/// the `Keyed` may drop once it is idle; the call's copy lives on until the call ends).
pub struct Shared<G: 'static>(Holder<G>);

enum Holder<G: 'static> {
    Static(&'static G),
    /// One key's guard: one pointer, so that a call moves little.
    Keyed(Arc<KeyState<G>>),
}

/// One key's guard, and the name a fleet knows its state by.
struct KeyState<G> {
    guard: G,
    name: Option<Arc<str>>,
}

impl<G> Shared<G> {
    /// A `static` guard.
    pub const fn of(guard: &'static G) -> Self {
        Shared(Holder::Static(guard))
    }

    /// The name of this key's state in a fleet's backend, for one key of a keyed guard whose
    /// state a fleet keeps.
    pub fn key_name(&self) -> Option<&str> {
        match &self.0 {
            Holder::Static(_) => None,
            Holder::Keyed(state) => state.name.as_deref(),
        }
    }
}

impl<G> Deref for Shared<G> {
    type Target = G;

    #[inline]
    fn deref(&self) -> &G {
        match &self.0 {
            Holder::Static(guard) => guard,
            Holder::Keyed(state) => &state.guard,
        }
    }
}

impl<G> Clone for Shared<G> {
    fn clone(&self) -> Self {
        Shared(match &self.0 {
            Holder::Static(guard) => Holder::Static(guard),
            Holder::Keyed(state) => Holder::Keyed(Arc::clone(state)),
        })
    }
}

impl<G: fmt::Debug> fmt::Debug for Shared<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<G> From<&'static G> for Shared<G> {
    fn from(guard: &'static G) -> Self {
        Shared::of(guard)
    }
}

/// What `breaker = ..`, `limiter = ..` and `budget = ..` may name: a `static` guard, or a
/// keyed guard's `.key(..)`.
#[diagnostic::on_unimplemented(
    message = "this is not a `{G}` a retried call can share",
    label = "expected a `static` `{G}`, or `.key(..)` of a `Keyed<{G}>`",
    note = "define the guard once, as `static NAME: {G} = ..;`, and name it: the calls share its state"
)]
pub trait GuardSource<G> {
    /// The guard, as the call holds it.
    fn shared(self) -> Shared<G>;
}

impl<G> GuardSource<G> for &'static G {
    #[inline]
    fn shared(self) -> Shared<G> {
        Shared::of(self)
    }
}

impl<G> GuardSource<G> for &Shared<G> {
    #[inline]
    fn shared(self) -> Shared<G> {
        self.clone()
    }
}

impl<G> GuardSource<G> for Shared<G> {
    #[inline]
    fn shared(self) -> Shared<G> {
        self
    }
}

/// At most this many keys by default: enough for every model or tenant of an application,
/// bounded so that keys taken from requests cannot grow the map without end.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// A key unused this long is dropped by default (its state starts fresh if it comes back).
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(600);

/// One guard per key, each with the settings of `template` and a state of its own: a limit
/// per model, a breaker per host, a budget per tenant. Bounded in memory: at most
/// [`max_keys`](Self::max_keys) keys, idle keys dropped after
/// [`idle_after`](Self::idle_after), and, when it is full, the least recently used sixteenth
/// of its keys dropped at once (so that a stream of new keys scans the map once per many).
///
/// ```
/// use std::time::Duration;
/// use resilience::keyed::Keyed;
/// use resilience::limiter::RateLimiter;
///
/// // 60 requests a minute for each model.
/// static PER_MODEL: Keyed<RateLimiter> = Keyed::new(RateLimiter::per_minute("gemini", 60));
///
/// let flash = PER_MODEL.key("gemini-2.5-flash");
/// let pro = PER_MODEL.key("gemini-2.5-pro");
/// assert_eq!(PER_MODEL.len(), 2);
/// # let _ = (flash, pro);
/// ```
pub struct Keyed<G: 'static, K = String> {
    template: G,
    max_keys: usize,
    idle_after: u64,
    entries: Mutex<Option<Entries<G, K>>>,
}

struct Entries<G: 'static, K> {
    map: HashMap<K, Entry<G>>,
    /// When idle keys were last looked for (nanoseconds since the origin).
    swept: u64,
}

struct Entry<G> {
    state: Arc<KeyState<G>>,
    last_used: u64,
}

impl<G: KeyedGuard, K> Keyed<G, K> {
    /// One guard per key, made from `template` when the key is first seen;
    /// [`DEFAULT_MAX_KEYS`] keys at most, idle ones dropped after [`DEFAULT_IDLE_AFTER`].
    pub const fn new(template: G) -> Self {
        Self {
            template,
            max_keys: DEFAULT_MAX_KEYS,
            idle_after: duration_nanos(DEFAULT_IDLE_AFTER),
            entries: Mutex::new(None),
        }
    }

    /// At most `keys` keys (at least 1): a new key beyond them drops the least recently used.
    #[must_use]
    pub const fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = if keys == 0 { 1 } else { keys };
        self
    }

    /// A key unused for `idle` is dropped.
    #[must_use]
    pub const fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = duration_nanos(idle);
        self
    }

    /// The settings every key's guard starts from.
    pub const fn template(&self) -> &G {
        &self.template
    }
}

impl<G: KeyedGuard, K: Hash + Eq> Keyed<G, K> {
    /// The guard of `key`, made when the key is new. It takes the `Keyed` as `&'static`: a
    /// `const` one would be a new map at each use, sharing nothing, so only a `static`
    /// compiles (`temporary value dropped while borrowed`).
    pub fn key<Q>(&'static self, key: &Q) -> Shared<G>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + fmt::Display + ?Sized,
    {
        self.key_at(key, Instant::now())
    }

    /// [`key`](Self::key) at the time `now` (which idleness is measured on).
    pub fn key_at<Q>(&self, key: &Q, now: Instant) -> Shared<G>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + fmt::Display + ?Sized,
    {
        let now = nanos(now);
        // A panic elsewhere while the map was held leaves it whole: every change below is one
        // map operation.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = entries.get_or_insert_with(|| Entries {
            map: HashMap::new(),
            swept: now,
        });
        if let Some(entry) = entries.map.get_mut(key) {
            entry.last_used = now;
            return Shared(Holder::Keyed(Arc::clone(&entry.state)));
        }
        // A new key: the map may grow, so drop what is idle first (at most once per idle
        // period, so that a stream of new keys does not rescan every time), then the least
        // recently used while full.
        if now.saturating_sub(entries.swept) >= self.idle_after
            || entries.map.len() >= self.max_keys
        {
            let idle_after = self.idle_after;
            entries
                .map
                .retain(|_, entry| now.saturating_sub(entry.last_used) < idle_after);
            entries.swept = now;
        }
        if entries.map.len() >= self.max_keys {
            // Full: drop the least recently used, a sixteenth of the map at once, so that a
            // stream of new keys pays one scan of the map per many keys rather than per key.
            let over = entries.map.len() + 1 - self.max_keys;
            drop_least_recent(&mut entries.map, over.max(self.max_keys / 16));
        }
        let state = Arc::new(KeyState {
            guard: self.template.fresh(),
            name: self.template.key_name(&key),
        });
        entries.map.insert(
            key.to_owned(),
            Entry {
                state: Arc::clone(&state),
                last_used: now,
            },
        );
        Shared(Holder::Keyed(state))
    }

    /// How many keys are held now.
    pub fn len(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.as_ref().map_or(0, |entries| entries.map.len())
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<G: fmt::Debug, K> fmt::Debug for Keyed<G, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("template", &self.template)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

/// Drops the `count` entries of `map` used least recently, in two passes over it.
fn drop_least_recent<K, G>(map: &mut HashMap<K, Entry<G>>, count: usize) {
    let mut ages: Vec<u64> = map.values().map(|entry| entry.last_used).collect();
    let count = count.min(ages.len());
    let Some(nth) = count.checked_sub(1) else {
        return;
    };
    let (older, &mut cut, _) = ages.select_nth_unstable(nth);
    // Every entry older than `cut` goes; of those last used at `cut` itself, only as many
    // as make up `count`.
    let mut ties = count - older.iter().filter(|&&age| age < cut).count();
    map.retain(|_, entry| match entry.last_used.cmp(&cut) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal if ties > 0 => {
            ties -= 1;
            false
        }
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A guard whose state is a counter.
    #[derive(Debug, Default)]
    struct Counter(AtomicU32);

    impl Counter {
        fn bump(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }

        fn count(&self) -> u32 {
            self.0.load(Ordering::Relaxed)
        }
    }

    impl KeyedGuard for Counter {
        fn fresh(&self) -> Self {
            Counter::default()
        }
    }

    fn keyed(max: usize, idle: Duration) -> Keyed<Counter> {
        Keyed::new(Counter::default())
            .max_keys(max)
            .idle_after(idle)
    }

    #[test]
    fn each_key_has_its_own_state_and_keeps_it() {
        let keyed = keyed(10, Duration::from_secs(60));
        let t0 = Instant::now();
        keyed.key_at("a", t0).bump();
        keyed.key_at("a", t0).bump();
        keyed.key_at("b", t0).bump();
        assert_eq!(keyed.key_at("a", t0).count(), 2);
        assert_eq!(keyed.key_at("b", t0).count(), 1);
        assert_eq!(keyed.len(), 2);
    }

    #[test]
    fn idle_keys_are_dropped_and_come_back_fresh() {
        let keyed = keyed(10, Duration::from_secs(60));
        let t0 = Instant::now();
        keyed.key_at("a", t0).bump();
        keyed.key_at("b", t0 + Duration::from_secs(50));
        // At 70 s `a` has been idle 70 s, `b` 20 s: a new key sweeps `a` out.
        keyed.key_at("c", t0 + Duration::from_secs(70));
        assert_eq!(keyed.len(), 2);
        assert_eq!(keyed.key_at("a", t0 + Duration::from_secs(71)).count(), 0);
    }

    #[test]
    fn a_full_map_drops_the_least_recently_used() {
        let keyed = keyed(2, Duration::from_secs(3600));
        let t0 = Instant::now();
        keyed.key_at("a", t0);
        keyed.key_at("b", t0 + Duration::from_secs(1));
        keyed.key_at("a", t0 + Duration::from_secs(2)); // `a` used again: `b` is the oldest
        keyed.key_at("c", t0 + Duration::from_secs(3));
        assert_eq!(keyed.len(), 2);
        let entries = keyed.entries.lock().unwrap();
        let map = &entries.as_ref().unwrap().map;
        assert!(map.contains_key("a") && map.contains_key("c"));
    }

    #[test]
    fn a_full_map_drops_its_oldest_sixteenth_at_once() {
        let full = keyed(64, Duration::from_secs(3600));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for key in 0..64 {
            full.key_at(&format!("k{key}"), at(key));
        }
        // Full: the 65th key drops the four oldest (k0..k3), and the next three fit.
        full.key_at("new0", at(100));
        assert_eq!(full.len(), 61);
        for key in 1..4 {
            full.key_at(&format!("new{key}"), at(100 + key));
        }
        assert_eq!(full.len(), 64);
        {
            let entries = full.entries.lock().unwrap();
            let map = &entries.as_ref().unwrap().map;
            assert!((0..4).all(|key| !map.contains_key(&format!("k{key}"))));
            assert!((4..64).all(|key| map.contains_key(&format!("k{key}"))));
        }
        // Used at the same instant, the oldest are told apart by count alone: four go.
        let same = keyed(64, Duration::from_secs(3600));
        for key in 0..65 {
            same.key_at(&format!("k{key}"), t0);
        }
        assert_eq!(same.len(), 61);
    }

    proptest::proptest! {
        /// Whatever the ages (ties included) and the count, exactly `count` entries go (all
        /// of them when fewer), and none that stays is older than one that went.
        #[test]
        fn dropping_the_least_recent_drops_exactly_the_oldest(
            ages in proptest::collection::vec(0u64..20, 0..80),
            count in 0usize..100,
        ) {
            let mut map: HashMap<usize, Entry<Counter>> = ages
                .iter()
                .enumerate()
                .map(|(key, &last_used)| {
                    let state = Arc::new(KeyState { guard: Counter::default(), name: None });
                    (key, Entry { state, last_used })
                })
                .collect();
            drop_least_recent(&mut map, count);
            proptest::prop_assert_eq!(map.len(), ages.len() - count.min(ages.len()));
            let gone = (0..ages.len()).filter(|key| !map.contains_key(key)).map(|key| ages[key]);
            let kept = map.values().map(|entry| entry.last_used);
            if let (Some(newest_gone), Some(oldest_kept)) = (gone.max(), kept.min()) {
                proptest::prop_assert!(newest_gone <= oldest_kept);
            }
        }
    }

    #[test]
    fn a_dropped_key_lives_on_for_the_call_that_holds_it() {
        let keyed = keyed(1, Duration::from_secs(3600));
        let t0 = Instant::now();
        let held = keyed.key_at("a", t0);
        held.bump();
        keyed.key_at("b", t0);
        assert_eq!(held.count(), 1);
        assert_eq!(keyed.len(), 1);
    }

    #[test]
    fn a_static_keyed_guard_needs_no_runtime_construction() {
        static KEYED: Keyed<Counter, u64> = Keyed::new(Counter(AtomicU32::new(7))).max_keys(0);
        assert_eq!(KEYED.template().count(), 7);
        assert_eq!(KEYED.key(&1).count(), 0);
        KEYED.key(&2);
        assert_eq!(KEYED.len(), 1, "max_keys(0) means one");
    }
}
