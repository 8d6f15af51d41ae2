//! Parses and validates the attribute's arguments; every mistake is reported on its own token,
//! all at once. The macro holds no defaults: an argument left out keeps the runtime's, and a
//! constant is checked when the crate compiles, by const evaluation.
//!
//! Input:  `max_retries = 3, base_delay = BASE, retry_if = is_transient, crate = my::resilience`
//! Output: `Settings { policy: Built([MaxRetries(Literal(3)), BaseDelay(Constant(BASE))]),
//!          retry_if: Some(is_transient), krate: my::resilience, .. }`

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, Token, UnOp};

use crate::errors::Errors;

/// The arguments, checked.
pub struct Settings {
    /// The path the expansion names the runtime by: `::resilience` unless `crate = ..`.
    pub krate: TokenStream,
    pub policy: Policy,
    pub retry_if: Option<Expr>,
    /// `on_retry = hook`: called with `(&E, attempt, wait)` before each wait.
    pub on_retry: Option<Expr>,
    /// `on_give_up = hook`: called with `&MediaProcessingError` when the call gives up.
    pub on_give_up: Option<Expr>,
    /// `not_ready = is_processing`: a predicate over `&T`; a value it calls not ready is
    /// retried like a failure.
    pub not_ready: Option<Expr>,
    /// Where `attempt_timeout` was written: refused on a sync function.
    pub attempt_timeout_span: Option<Span>,
    /// `breaker = GEMINI`, `limiter = PER_MODEL.key(&model)`, `budget = RETRIES`: the guards
    /// every attempt runs under, evaluated at the start of each call.
    pub guards: Guards,
}

/// The guards named by the attribute, as written.
#[derive(Default)]
pub struct Guards {
    pub breaker: Option<Expr>,
    pub limiter: Option<Expr>,
    pub budget: Option<Expr>,
}

impl Guards {
    pub fn any(&self) -> bool {
        self.breaker.is_some() || self.limiter.is_some() || self.budget.is_some()
    }
}

/// Where the call's policy comes from.
pub enum Policy {
    /// Built at compile time from the runtime's defaults and these arguments.
    Built(Vec<Given>),
    /// `policy = EXPR`: a `&RetryPolicy` evaluated at the start of each call.
    Expr(Box<Expr>),
}

impl Policy {
    /// Whether the policy may have a `timeout`: only then does a call read the clock before
    /// its first attempt, and does an async first attempt run under a deadline.
    pub fn may_have_timeout(&self) -> bool {
        self.may_have(Key::Timeout)
    }

    /// Whether an attempt may be cut off: by the `timeout`, or by its `attempt_timeout`.
    pub fn may_cut_attempts(&self) -> bool {
        self.may_have(Key::Timeout) || self.may_have(Key::AttemptTimeout)
    }

    fn may_have(&self, key: Key) -> bool {
        match self {
            Policy::Built(values) => values.iter().any(|given| given.key == key),
            Policy::Expr(_) => true,
        }
    }
}

/// A policy argument.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Key {
    MaxRetries,
    BaseDelay,
    MaxDelay,
    Jitter,
    Timeout,
    AttemptTimeout,
    MaxHint,
    /// `strategy = full`: the jitter strategy.
    Strategy,
    /// `growth = linear`.
    Growth,
}

impl Key {
    /// The builder method that sets it.
    pub fn setter(self) -> &'static str {
        match self {
            Key::Strategy => "jitter_strategy",
            other => other.name(),
        }
    }

    /// Whether its value is a number of seconds.
    pub fn is_seconds(self) -> bool {
        !matches!(self, Key::MaxRetries | Key::Strategy | Key::Growth)
    }

    /// The runtime's `Key` variant for its seconds, `None` for `max_retries`.
    pub fn seconds_key(self) -> Option<&'static str> {
        Some(match self {
            Key::MaxRetries | Key::Strategy | Key::Growth => return None,
            Key::BaseDelay => "BaseDelay",
            Key::MaxDelay => "MaxDelay",
            Key::Jitter => "Jitter",
            Key::Timeout => "Timeout",
            Key::AttemptTimeout => "AttemptTimeout",
            Key::MaxHint => "MaxHint",
        })
    }

    fn name(self) -> &'static str {
        match self {
            Key::MaxRetries => "max_retries",
            Key::BaseDelay => "base_delay",
            Key::MaxDelay => "max_delay",
            Key::Jitter => "jitter",
            Key::Timeout => "timeout",
            Key::AttemptTimeout => "attempt_timeout",
            Key::MaxHint => "max_hint",
            Key::Strategy => "strategy",
            Key::Growth => "growth",
        }
    }
}

/// The jitter strategies `strategy = ..` names, as `resilience::strategy::Jitter`'s variants.
const STRATEGIES: &[(&str, &str)] = &[
    ("additive", "Additive"),
    ("full", "Full"),
    ("equal", "Equal"),
    ("decorrelated", "Decorrelated"),
    ("none", "None"),
];

/// The growths `growth = ..` names, as `resilience::strategy::Growth`'s variants.
const GROWTHS: &[(&str, &str)] = &[
    ("exponential", "Exponential"),
    ("linear", "Linear"),
    ("constant", "Constant"),
];

/// A policy argument as given.
pub struct Given {
    pub key: Key,
    pub value: Value,
    /// The value's token, where an error about it is reported.
    pub span: Span,
}

/// A policy argument's value.
pub enum Value {
    /// `max_retries = 3`: checked here.
    Attempts(u32),
    /// `base_delay = 0.5`: checked here, in nanoseconds.
    Nanos(u64),
    /// `max_retries = MAX`, `base_delay = config::BASE`: checked by const evaluation.
    Constant(Box<Expr>),
    /// `strategy = full`: the variant `Full` of the enum the key names.
    Variant(&'static str),
}

/// Every argument, with the example its "needs a value" error shows.
const ARGUMENTS: &[(&str, &str)] = &[
    ("max_retries", "max_retries = 3"),
    ("base_delay", "base_delay = 0.5"),
    ("max_delay", "max_delay = 10.0"),
    ("jitter", "jitter = 0.5"),
    ("timeout", "timeout = 60.0"),
    ("attempt_timeout", "attempt_timeout = 10.0"),
    ("max_hint", "max_hint = 60.0"),
    ("strategy", "strategy = full"),
    ("growth", "growth = linear"),
    ("retry_if", "retry_if = is_transient"),
    ("on_retry", "on_retry = count_retry"),
    ("on_give_up", "on_give_up = alert"),
    ("not_ready", "not_ready = is_processing"),
    ("breaker", "breaker = GEMINI_BREAKER"),
    ("limiter", "limiter = GEMINI_RPM"),
    ("budget", "budget = RETRY_BUDGET"),
    ("policy", "policy = &POLICY"),
    ("crate", "crate = my_facade::resilience"),
];

/// Names users reach for that mean one of ours.
const ALIASES: &[(&str, &str)] = &[
    ("retries", "max_retries"),
    ("attempts", "max_retries"),
    ("max_attempts", "max_retries"),
    ("tries", "max_retries"),
    ("delay", "base_delay"),
    ("initial_delay", "base_delay"),
    ("min_delay", "base_delay"),
    ("backoff", "base_delay"),
    ("max_wait", "max_delay"),
    ("max_backoff", "max_delay"),
    ("cap", "max_delay"),
    ("deadline", "timeout"),
    ("total_timeout", "timeout"),
    ("circuit_breaker", "breaker"),
    ("circuit", "breaker"),
    ("rate_limit", "limiter"),
    ("rate_limiter", "limiter"),
    ("retry_budget", "budget"),
    ("when", "retry_if"),
    ("retry_on", "retry_if"),
    ("predicate", "retry_if"),
    ("condition", "retry_if"),
];

/// `` `max_retries`, `base_delay`, ... or `crate` ``, for error messages.
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

/// The argument an unknown key most likely meant: a known alias, or a key within a few edits
/// (two, or a third of its length).
fn did_you_mean(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, meant)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Some(meant);
    }
    ARGUMENTS
        .iter()
        .map(|(known, _)| (*known, edit_distance(&lower, known)))
        .filter(|(known, distance)| *distance <= (known.len() / 3).max(2))
        .min_by_key(|(_, distance)| *distance)
        .map(|(known, _)| known)
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
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
        // `parse_any` so a keyword used as a key (`crate = x`, `type = 1`) is read as a key.
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

fn validate(entries: Vec<Entry>, errors: &mut Errors) -> Settings {
    let mut values: Vec<Given> = Vec::new();
    let mut literal_delays: Vec<(Key, f64, Span)> = Vec::new();
    let mut policy: Option<Expr> = None;
    let mut retry_if = None;
    let mut on_retry = None;
    let mut on_give_up = None;
    let mut not_ready = None;
    let mut attempt_timeout_span = None;
    let mut guards = Guards::default();
    let mut max_retries_one: Option<Span> = None;
    let mut krate = None;
    let mut seen: Vec<String> = Vec::new();
    let mut first_policy_key: Option<Span> = None;
    for Entry { key, value } in entries {
        let name = key.unraw().to_string();
        let Some(&(_, example)) = ARGUMENTS.iter().find(|(known, _)| *known == name) else {
            let hint = match did_you_mean(&name) {
                Some(meant) => format!("; did you mean `{meant}`?"),
                None => format!("; expected {}", keys()),
            };
            errors.at(key.span(), format!("unknown argument `{name}`{hint}"));
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
        let policy_key = match name.as_str() {
            "max_retries" => Some(Key::MaxRetries),
            "base_delay" => Some(Key::BaseDelay),
            "max_delay" => Some(Key::MaxDelay),
            "jitter" => Some(Key::Jitter),
            "timeout" => Some(Key::Timeout),
            "attempt_timeout" => Some(Key::AttemptTimeout),
            "max_hint" => Some(Key::MaxHint),
            "strategy" => Some(Key::Strategy),
            "growth" => Some(Key::Growth),
            _ => None,
        };
        if let Some(policy_key) = policy_key {
            first_policy_key.get_or_insert(key.span());
            if policy_key == Key::AttemptTimeout {
                attempt_timeout_span = Some(key.span());
            }
            let span = value.span();
            if policy_key == Key::MaxRetries && is_int(&value, 1) {
                max_retries_one = Some(span);
            }
            let checked = match policy_key {
                Key::MaxRetries => attempts(&value, errors),
                Key::Strategy => variant(&value, "strategy", STRATEGIES, errors),
                Key::Growth => variant(&value, "growth", GROWTHS, errors),
                seconds_key => seconds(seconds_key, &value, errors).map(|(checked, secs)| {
                    if let Some(secs) = secs {
                        literal_delays.push((seconds_key, secs, span));
                    }
                    checked
                }),
            };
            if let Some(value) = checked {
                values.push(Given {
                    key: policy_key,
                    value,
                    span,
                });
            }
            continue;
        }
        match name.as_str() {
            "retry_if" => retry_if = predicate(value, errors),
            "on_retry" => {
                on_retry = hook(
                    value,
                    "on_retry",
                    "|cause: resilience::RetryCause<'_, MyError, T>, attempt: u32, wait: std::time::Duration| ..",
                    errors,
                )
            }
            "on_give_up" => {
                on_give_up = hook(
                    value,
                    "on_give_up",
                    "|give_up: &resilience::MediaProcessingError| ..",
                    errors,
                )
            }
            "not_ready" => {
                not_ready = hook(
                    value,
                    "not_ready",
                    "|operation: &Operation| !operation.done",
                    errors,
                )
            }
            "breaker" => guards.breaker = guard(value, "breaker", "CircuitBreaker", errors),
            "limiter" => guards.limiter = guard(value, "limiter", "RateLimiter", errors),
            "budget" => guards.budget = guard(value, "budget", "RetryBudget", errors),
            "policy" => policy = Some(value),
            _ => krate = crate_path(&value, errors),
        }
    }
    if let (Some(span), Some(_)) = (max_retries_one, &guards.budget) {
        errors.at(
            span,
            "`budget` pays for retries, and `max_retries = 1` makes none: drop `budget`, or allow a retry",
        );
    }
    check_delays(&literal_delays, errors);
    check_strategy(&values, errors);
    let policy = match policy {
        Some(expr) => {
            if let Some(other) = first_policy_key {
                errors.at(
                    other,
                    "`policy` already sets every value of the policy: set this one where the `RetryPolicy` is built, or drop `policy`",
                );
            }
            Policy::Expr(Box::new(expr))
        }
        None => Policy::Built(values),
    };
    Settings {
        krate: krate.unwrap_or_else(|| quote!(::resilience)),
        policy,
        retry_if,
        on_retry,
        on_give_up,
        not_ready,
        attempt_timeout_span,
        guards,
    }
}

/// Whether `value` is the integer literal `n`.
fn is_int(value: &Expr, n: u64) -> bool {
    matches!(value, Expr::Lit(ExprLit { lit: Lit::Int(int), .. }) if int.base10_parse::<u64>().ok() == Some(n))
}

/// `breaker = GEMINI`, `limiter = PER_MODEL.key(&model)`: a place or a call that gives the
/// guard; a leading `&` is dropped (the expansion borrows it). A literal or a closure cannot
/// be a guard shared by calls.
fn guard(value: Expr, key: &str, ty: &str, errors: &mut Errors) -> Option<Expr> {
    let value = match value {
        Expr::Reference(reference) if reference.mutability.is_none() => *reference.expr,
        value => value,
    };
    match value {
        Expr::Path(_)
        | Expr::MethodCall(_)
        | Expr::Call(_)
        | Expr::Field(_)
        | Expr::Index(_)
        | Expr::Paren(_)
        | Expr::Block(_) => Some(value),
        other => {
            errors.spanned(
                &other,
                format!(
                    "`{key}` names a `{ty}` the calls share: a `static`, like `{key} = GEMINI`, or one key's of a `Keyed<{ty}>`, like `{key} = PER_MODEL.key(&model)`"
                ),
            );
            None
        }
    }
}

/// `base_delay` above `max_delay`, both given as literals. With a default or a constant on
/// either side, the build checks it (the defaults live in the runtime).
fn check_delays(delays: &[(Key, f64, Span)], errors: &mut Errors) {
    let find = |key| delays.iter().find(|(k, _, _)| *k == key);
    if let (Some((_, base, _)), Some((_, max, span))) = (find(Key::BaseDelay), find(Key::MaxDelay))
        && base > max
    {
        errors.at(
            *span,
            format!("`max_delay` ({max}) must not be below `base_delay` ({base})"),
        );
    }
}

/// `strategy = full`, `growth = linear`: one of `names`, written as a bare name.
fn variant(
    value: &Expr,
    key: &str,
    names: &[(&'static str, &'static str)],
    errors: &mut Errors,
) -> Option<Value> {
    let written = match value {
        Expr::Path(path) if path.qself.is_none() => path.path.get_ident().map(Ident::to_string),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => Some(text.value()),
        _ => None,
    };
    let found = written
        .as_deref()
        .and_then(|name| names.iter().find(|(known, _)| *known == name));
    match found {
        Some((_, variant)) => Some(Value::Variant(variant)),
        None => {
            let list: Vec<String> = names.iter().map(|(n, _)| format!("`{n}`")).collect();
            errors.spanned(
                value,
                format!(
                    "`{key}` is one of {}, like `{key} = {}`",
                    list.join(", "),
                    names.get(1).map_or("", |(n, _)| n)
                ),
            );
            None
        }
    }
}

/// `jitter` sets the spread of the additive strategy alone, and decorrelated jitter grows from
/// the last wait rather than by a growth: a combination that would change nothing is refused.
fn check_strategy(values: &[Given], errors: &mut Errors) {
    let find = |key| values.iter().find(|g| g.key == key);
    let Some(Given {
        value: Value::Variant(strategy),
        ..
    }) = find(Key::Strategy)
    else {
        return;
    };
    let name = STRATEGIES
        .iter()
        .find(|(_, variant)| variant == strategy)
        .map_or("", |(name, _)| name);
    if *strategy != "Additive"
        && let Some(jitter) = find(Key::Jitter)
    {
        errors.at(
            jitter.span,
            format!("`jitter` is the spread of `strategy = additive` only; `strategy = {name}` draws its own: remove `jitter`"),
        );
    }
    if *strategy == "Decorrelated"
        && let Some(growth) = find(Key::Growth)
    {
        errors.at(
            growth.span,
            "`strategy = decorrelated` grows each wait from the last one, not by a growth: remove `growth`",
        );
    }
}

fn attempts(value: &Expr, errors: &mut Errors) -> Option<Value> {
    const AT_LEAST_ONE: &str =
        "`max_retries` must be at least 1: it counts all attempts, the first included";
    let message = match literal(value) {
        Literal::Int(int) => match int.base10_parse::<u32>() {
            Ok(0) => AT_LEAST_ONE.to_owned(),
            Ok(n) => return Some(Value::Attempts(n)),
            Err(_) => format!("`max_retries` must fit in a `u32` (at most {})", u32::MAX),
        },
        Literal::Negative => AT_LEAST_ONE.to_owned(),
        Literal::Constant => return Some(Value::Constant(Box::new(value.clone()))),
        other => format!(
            "`max_retries` expects a whole number of attempts, like `max_retries = 5` or a `u32` constant, found {}",
            other.describe()
        ),
    };
    errors.spanned(value, message);
    None
}

/// A number of seconds: an integer or float literal (checked here, and returned in seconds
/// too for the cross-check), or a constant (checked by const evaluation).
fn seconds(key: Key, value: &Expr, errors: &mut Errors) -> Option<(Value, Option<f64>)> {
    let name = key.name();
    let above_zero = matches!(key, Key::Timeout | Key::AttemptTimeout);
    let parsed = match literal(value) {
        Literal::Int(int) => int.base10_parse::<f64>().ok(),
        Literal::Float(float) => float.base10_parse::<f64>().ok(),
        Literal::Constant => return Some((Value::Constant(Box::new(value.clone())), None)),
        Literal::Negative => {
            let rule = if above_zero {
                "above zero"
            } else {
                "zero or more"
            };
            errors.spanned(value, format!("`{name}` must be {rule} seconds"));
            return None;
        }
        other => {
            errors.spanned(
                value,
                format!(
                    "`{name}` expects seconds as a number literal or an `f64` constant, like `{name} = 1.5` or `{name} = 2`, found {}",
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
    // Truncated to whole nanoseconds, as the runtime converts a constant's seconds: one
    // value means one duration whichever way it is written.
    let nanos = (secs * NANOS_PER_SEC) as u64;
    if above_zero && nanos == 0 {
        errors.spanned(value, format!("`{name}` must be above zero seconds"));
        return None;
    }
    Some((Value::Nanos(nanos), Some(secs)))
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

/// `on_retry = count_retry`, `on_give_up = |e| ..`: a function path or a closure.
fn hook(value: Expr, key: &str, closure: &str, errors: &mut Errors) -> Option<Expr> {
    match value {
        Expr::Path(_) | Expr::Closure(_) => Some(value),
        other => {
            errors.spanned(
                &other,
                format!("`{key}` expects a function path or a closure, like `{key} = {closure}`"),
            );
            None
        }
    }
}

/// `crate = my::resilience` or, as serde and tokio write it, `crate = "my::resilience"`.
fn crate_path(value: &Expr, errors: &mut Errors) -> Option<TokenStream> {
    let path = match value {
        Expr::Path(path) if path.qself.is_none() => Some(path.path.clone()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => text.parse::<syn::Path>().ok(),
        _ => None,
    };
    match path {
        Some(path) => Some(quote!(#path)),
        None => {
            errors.spanned(
                value,
                "`crate` expects the path the `resilience` crate is reached by, like `crate = my_facade::resilience`",
            );
            None
        }
    }
}

enum Literal<'a> {
    Int(&'a syn::LitInt),
    Float(&'a syn::LitFloat),
    Negative,
    /// A path (`MAX`, `config::BASE`, `Self::ATTEMPTS`) or a constant block.
    Constant,
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
            Literal::Constant => "a constant",
            Literal::Str => "a string",
            Literal::Bool => "a boolean",
            Literal::Other => {
                "an expression (a literal or a constant is checked when the crate compiles; for a value read at run time, use `policy = ..`)"
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
        Expr::Path(path) if path.qself.is_none() => Literal::Constant,
        Expr::Const(_) => Literal::Constant,
        Expr::Group(group) => literal(&group.expr),
        _ => Literal::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_suggestion() {
        assert_eq!(did_you_mean("retries"), Some("max_retries"));
        assert_eq!(did_you_mean("max_retry"), Some("max_retries"));
        assert_eq!(did_you_mean("jiter"), Some("jitter"));
        assert_eq!(did_you_mean("Timeout"), Some("timeout"));
        assert_eq!(did_you_mean("colour"), None);
    }
}
