//! Parses and validates the attribute's arguments; every mistake is reported on its own token,
//! all at once.
//!
//! Input:  `max_retries = 3, base_delay = 0.5, retry_if = is_transient`
//! Output: `Settings { max_retries: 3, base_delay_nanos: 500_000_000, .., retry_if: Some(..) }`

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, Token, UnOp};

use crate::errors::Errors;

/// Validated arguments, with the runtime's defaults filled in.
pub struct Settings {
    pub max_retries: u32,
    pub base_delay_nanos: u64,
    pub max_delay_nanos: u64,
    pub jitter_nanos: u64,
    /// 0 when there is no timeout.
    pub timeout_nanos: u64,
    pub max_hint_nanos: u64,
    pub retry_if: Option<Expr>,
}

/// Every argument, with the example its "needs a value" error shows. The defaults match the
/// runtime's `RetryPolicy` constants (a test pins the waits they give).
const ARGUMENTS: &[(&str, &str)] = &[
    ("max_retries", "max_retries = 5"),
    ("base_delay", "base_delay = 1.0"),
    ("max_delay", "max_delay = 30.0"),
    ("jitter", "jitter = 1.0"),
    ("timeout", "timeout = 60.0"),
    ("max_hint", "max_hint = 120.0"),
    ("retry_if", "retry_if = is_transient"),
];

/// `` `max_retries`, `base_delay`, ... or `retry_if` ``, for error messages.
fn keys() -> String {
    let names: Vec<String> = ARGUMENTS
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}
const NANOS_PER_SEC: f64 = 1e9;

/// One `key = value` as written, before validation.
struct Entry {
    key: Ident,
    value: Option<Expr>,
}

pub fn parse(args: TokenStream, errors: &mut Errors) -> Option<Settings> {
    let entries = match parse_entries.parse2(args) {
        Ok(entries) => entries,
        Err(error) => {
            errors.push(error);
            return None;
        }
    };
    Some(validate(entries, errors))
}

fn parse_entries(input: ParseStream) -> syn::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    while !input.is_empty() {
        if !input.peek(Ident::peek_any) {
            return Err(input.error(format!(
                "expected `key = value`, like `max_retries = 3`; the keys are {}",
                keys()
            )));
        }
        // `parse_any` so a keyword used as a key (`type = 1`) gets the unknown-key message.
        let key = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse::<Expr>()?)
        } else {
            None
        };
        entries.push(Entry { key, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(entries)
}

/// Each setting as given: its value and the token to blame.
#[derive(Default)]
struct Given {
    max_retries: Option<u32>,
    base_delay: Option<(f64, Span)>,
    max_delay: Option<(f64, Span)>,
    jitter: Option<f64>,
    timeout: Option<f64>,
    max_hint: Option<f64>,
    retry_if: Option<Expr>,
}

fn validate(entries: Vec<Entry>, errors: &mut Errors) -> Settings {
    let mut given = Given::default();
    let mut seen: Vec<String> = Vec::new();
    for Entry { key, value } in entries {
        let name = key.unraw().to_string();
        let Some(&(_, example)) = ARGUMENTS.iter().find(|(known, _)| *known == name) else {
            errors.at(
                key.span(),
                format!("unknown argument `{name}`; expected {}", keys()),
            );
            continue;
        };
        if seen.contains(&name) {
            errors.at(key.span(), format!("`{name}` is given more than once"));
            continue;
        }
        seen.push(name.clone());
        let Some(value) = value else {
            errors.at(key.span(), format!("`{name}` needs a value: `{example}`"));
            continue;
        };
        match name.as_str() {
            "max_retries" => given.max_retries = attempts(&value, errors),
            "base_delay" => {
                given.base_delay =
                    seconds(&name, &value, Bound::AtLeastZero, errors).map(|s| (s, value.span()));
            }
            "max_delay" => {
                given.max_delay =
                    seconds(&name, &value, Bound::AtLeastZero, errors).map(|s| (s, value.span()));
            }
            "jitter" => given.jitter = seconds(&name, &value, Bound::AtLeastZero, errors),
            "timeout" => given.timeout = seconds(&name, &value, Bound::AboveZero, errors),
            "max_hint" => given.max_hint = seconds(&name, &value, Bound::AtLeastZero, errors),
            _ => given.retry_if = predicate(value, errors),
        }
    }
    settle(given, errors)
}

/// Fills in defaults and checks the arguments against each other.
fn settle(given: Given, errors: &mut Errors) -> Settings {
    let base = given.base_delay.map_or(1.0, |(s, _)| s);
    let max = given.max_delay.map_or(30.0, |(s, _)| s);
    if base > max {
        let (span, message) = match (given.base_delay, given.max_delay) {
            (_, Some((_, span))) if given.base_delay.is_some() => (
                span,
                format!("`max_delay` ({max}) must not be below `base_delay` ({base})"),
            ),
            (_, Some((_, span))) => (
                span,
                format!(
                    "`max_delay` ({max}) must not be below `base_delay`, whose default is {base}; set `base_delay` too"
                ),
            ),
            (Some((_, span)), None) => (
                span,
                format!(
                    "`base_delay` ({base}) must not be above `max_delay`, whose default is {max}; set `max_delay` too"
                ),
            ),
            (None, None) => (Span::call_site(), String::new()),
        };
        errors.at(span, message);
    }
    Settings {
        max_retries: given.max_retries.unwrap_or(5),
        base_delay_nanos: nanos(base),
        max_delay_nanos: nanos(max),
        jitter_nanos: nanos(given.jitter.unwrap_or(1.0)),
        timeout_nanos: given.timeout.map_or(0, nanos),
        max_hint_nanos: nanos(given.max_hint.unwrap_or(120.0)),
        retry_if: given.retry_if,
    }
}

fn attempts(value: &Expr, errors: &mut Errors) -> Option<u32> {
    const AT_LEAST_ONE: &str =
        "`max_retries` must be at least 1: it counts all attempts, the first included";
    let message = match literal(value) {
        Literal::Int(int) => match int.base10_parse::<u32>() {
            Ok(0) => AT_LEAST_ONE.to_owned(),
            Ok(n) => return Some(n),
            Err(_) => format!("`max_retries` must fit in a `u32` (at most {})", u32::MAX),
        },
        Literal::Negative => AT_LEAST_ONE.to_owned(),
        other => format!(
            "`max_retries` expects a whole number of attempts, like `max_retries = 5`, found {}",
            other.describe()
        ),
    };
    errors.spanned(value, message);
    None
}

enum Bound {
    AtLeastZero,
    AboveZero,
}

/// A number of seconds, as an integer or float literal.
fn seconds(name: &str, value: &Expr, bound: Bound, errors: &mut Errors) -> Option<f64> {
    let parsed = match literal(value) {
        Literal::Int(int) => int.base10_parse::<f64>().ok(),
        Literal::Float(float) => float.base10_parse::<f64>().ok(),
        Literal::Negative => {
            let rule = match bound {
                Bound::AtLeastZero => "zero or more",
                Bound::AboveZero => "above zero",
            };
            errors.spanned(value, format!("`{name}` must be {rule} seconds"));
            return None;
        }
        other => {
            errors.spanned(
                value,
                format!(
                    "`{name}` expects seconds as a number literal, like `{name} = 1.5` or `{name} = 2`, found {}",
                    other.describe()
                ),
            );
            return None;
        }
    };
    let Some(secs) = parsed.filter(|s| s.is_finite()) else {
        errors.at(
            value.span(),
            format!("`{name}` must be a finite number of seconds"),
        );
        return None;
    };
    if secs * NANOS_PER_SEC >= u64::MAX as f64 {
        errors.at(
            value.span(),
            format!("`{name}` is too large: at most about 584 years"),
        );
        return None;
    }
    if matches!(bound, Bound::AboveZero) && nanos(secs) == 0 {
        errors.spanned(value, format!("`{name}` must be above zero seconds"));
        return None;
    }
    Some(secs)
}

fn nanos(secs: f64) -> u64 {
    // Range-checked in `seconds`; `as` saturates anyway, so nothing here can panic.
    (secs * NANOS_PER_SEC).round() as u64
}

fn predicate(value: Expr, errors: &mut Errors) -> Option<Expr> {
    match value {
        Expr::Path(_) | Expr::Closure(_) => Some(value),
        other => {
            errors.spanned(
                &other,
                "`retry_if` expects a function path or a closure taking `&E`, like `retry_if = is_transient` or `retry_if = |e: &MyError| e.is_transient()`",
            );
            None
        }
    }
}

enum Literal<'a> {
    Int(&'a syn::LitInt),
    Float(&'a syn::LitFloat),
    Negative,
    Str,
    Bool,
    Other,
}

impl Literal<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Literal::Int(_) => "an integer",
            Literal::Float(_) => "a float",
            Literal::Negative => "a negative number",
            Literal::Str => "a string",
            Literal::Bool => "a boolean",
            Literal::Other => {
                "an expression (only literals are accepted, so the policy is checked at compile time)"
            }
        }
    }
}

fn literal(value: &Expr) -> Literal<'_> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Int(int) => Literal::Int(int),
            Lit::Float(float) => Literal::Float(float),
            Lit::Str(_) => Literal::Str,
            Lit::Bool(_) => Literal::Bool,
            _ => Literal::Other,
        },
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) if matches!(
            &**expr,
            Expr::Lit(ExprLit {
                lit: Lit::Int(_) | Lit::Float(_),
                ..
            })
        ) =>
        {
            Literal::Negative
        }
        Expr::Group(group) => literal(&group.expr),
        _ => Literal::Other,
    }
}
