//! Guards held per key (one limit per model, per tenant), and [`Shared`], how a retried call
//! holds a guard: a `static`'s, or one key's of a [`Keyed`].

/// A guard that a [`Keyed`] can hold per key: `fresh` makes one with the same settings and a
/// state of its own, as if nothing had happened yet.
pub trait KeyedGuard: Send + Sync + 'static {
    /// The same settings, a new state.
    fn fresh(&self) -> Self;
}
