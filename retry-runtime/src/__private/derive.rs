//! What `#[derive(Classify)]` expands to calls: the variants' answers and the probes that see
//! the derived type itself.

use std::fmt::Display;

use crate::classify::order::{Seen, decide};
use crate::classify::{Classified, Classify, Rule, Verdict};

/// `#[classify(retryable)]` / `#[classify(not_retryable)]`, for `#[derive(Classify)]`.
#[inline]
pub fn declared(verdict: Verdict) -> Option<Classified> {
    Classified::by(Rule::Declared, verdict)
}

/// What a wrapped field says of itself, for `#[derive(Classify)]`: the answer of its type
/// (its own `Classify`, or the known types and the server's words along its chain). What
/// only its text says is left out: the variant's own text and chain are read after it.
#[cold]
pub fn field_answer(seen: Seen<'_>) -> Option<Classified> {
    if seen.own.is_none() && seen.chain.is_none() {
        return None;
    }
    let answer = decide(seen, "");
    match answer.rule {
        Rule::StatusInText | Rule::Keyword | Rule::NoRule => None,
        _ => Some(answer),
    }
}

/// The whole answer of a type with `#[derive(Classify)]`: the variants' answers, with the
/// built-in rules around them. `text` is asked for only when the type has no chain.
#[cold]
pub fn derived<E: Classify + ?Sized>(error: &E, text: impl FnOnce() -> String) -> Classified {
    let seen = Seen::classify(error, None);
    let text = match seen.chain {
        Some(_) => String::new(),
        None => text(),
    };
    decide(seen, &text)
}

/// The type under `#[derive(Classify)]`, for the probes below.
pub struct SelfProbe<'a, T: ?Sized>(pub &'a T);

/// The type is an `std::error::Error`: its own chain.
pub trait ChainOfError<'a> {
    /// The type as a `dyn Error`.
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)>;
}

impl<'a, T: std::error::Error + 'static> ChainOfError<'a> for &SelfProbe<'a, T> {
    #[inline]
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)> {
        Some(self.0)
    }
}

/// Any other type: no chain.
pub trait ChainOfOther<'a> {
    /// No chain.
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)>;
}

impl<'a, T: ?Sized> ChainOfOther<'a> for SelfProbe<'a, T> {
    #[inline]
    fn __resilience_chain_of(&self) -> Option<&'a (dyn std::error::Error + 'static)> {
        None
    }
}

/// The type has a `Display`: its text.
pub trait TextOfDisplay {
    /// The text.
    fn __resilience_text_of(&self) -> String;
}

impl<T: Display + ?Sized> TextOfDisplay for &SelfProbe<'_, T> {
    fn __resilience_text_of(&self) -> String {
        self.0.to_string()
    }
}

/// Any other type: no text.
pub trait TextOfOther {
    /// No text.
    fn __resilience_text_of(&self) -> String;
}

impl<T: ?Sized> TextOfOther for SelfProbe<'_, T> {
    fn __resilience_text_of(&self) -> String {
        String::new()
    }
}
