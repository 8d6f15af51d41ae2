//! Which errors are worth another attempt.
//!
//! The first rule that knows decides (SPEC section 3):
//! 1. the function's own predicate (`retry_if`), when it names one;
//! 2. the server's own words ([`hint`](crate::hint)): a per-day quota is not retried;
//! 3. the type: an [`io::Error`]'s kind, an HTTP status, or an error type's own [`Classify`]
//!    answer;
//! 4. the text: the message of the error, or of any error in its `source()` chain, holds
//!    `429`, `503`, `500` (as whole numbers), `timeout`, `timed out`, `connection`, `reset` or
//!    `refused`, case-insensitive.
//!
//! Whatever no rule calls retryable is returned at once, unchanged.

use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::error::MediaProcessingError;
use crate::hint::{ServerWords, read_text};
use crate::scan::find_ignore_ascii_case;

/// One rule's answer about one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Another attempt may succeed: wait and retry.
    Retryable,
    /// Another attempt will fail the same way: return the error at once.
    NotRetryable,
    /// This rule does not know; the next rule decides.
    Unknown,
}

impl Verdict {
    /// `self` unless it is [`Unknown`](Verdict::Unknown), in which case `next()`.
    #[inline]
    pub fn or_else(self, next: impl FnOnce() -> Verdict) -> Verdict {
        match self {
            Verdict::Unknown => next(),
            known => known,
        }
    }
}

/// A predicate's `true` means retry and `false` means do not; it never defers.
impl From<bool> for Verdict {
    fn from(retry: bool) -> Self {
        if retry {
            Verdict::Retryable
        } else {
            Verdict::NotRetryable
        }
    }
}

/// An error type's own answer to "is this worth another attempt?".
///
/// Implement it when the type knows better than its text. The answer of this trait comes
/// before the text rule; return [`Verdict::Unknown`] to fall through to
/// [`classify_error`]'s rules, or call it for the cases you do not decide.
///
/// ```
/// use retry_runtime::{Classify, Verdict, classify::classify_error};
///
/// #[derive(Debug)]
/// enum ApiError {
///     Quota { per_day: bool },
///     Io(std::io::Error),
/// }
/// # impl std::fmt::Display for ApiError {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("api error") }
/// # }
/// # impl std::error::Error for ApiError {}
///
/// impl Classify for ApiError {
///     fn classify(&self) -> Verdict {
///         match self {
///             ApiError::Quota { per_day: true } => Verdict::NotRetryable,
///             ApiError::Quota { per_day: false } => Verdict::Retryable,
///             ApiError::Io(e) => classify_error(e),
///         }
///     }
/// }
/// assert_eq!(ApiError::Quota { per_day: true }.classify(), Verdict::NotRetryable);
/// ```
pub trait Classify {
    /// Whether another attempt may succeed.
    fn classify(&self) -> Verdict;

    /// How long the server asked to wait before the next attempt, if the error knows
    /// (SPEC section 8). The wait is then at least this long.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The answer with the rule that gave it, for the log, or `None` for
    /// [`Verdict::Unknown`] (the text rules then decide). The built-in implementations name
    /// the rule of the chain that decided; others are credited to the error type.
    #[doc(hidden)]
    fn classified(&self) -> Option<Classified> {
        Classified::by(Rule::ErrorType, self.classify())
            .map(|c| c.with_retry_after(self.retry_after()))
    }
}

/// Which rule gave the final answer; logged with a give-up or a non-retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// The function's `retry_if` predicate.
    Predicate,
    /// What the server said: a per-day quota.
    ServerWords,
    /// A retried call inside already gave up (`MediaProcessingError` in the chain).
    GaveUp,
    /// The error type's own [`Classify`] implementation.
    ErrorType,
    /// A typed error in the chain, such as an [`io::Error`]'s kind.
    Typed,
    /// The text of an error in the chain.
    Text,
    /// No rule called it retryable.
    NoRule,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Predicate => "decided by `retry_if`",
            Rule::ServerWords => "the server names a per-day quota",
            Rule::GaveUp => "an inner retried call already gave up",
            Rule::ErrorType => "decided by the error type's `Classify`",
            Rule::Typed => "decided by the error's type",
            Rule::Text => "decided by the error's text",
            Rule::NoRule => "no rule calls it retryable",
        })
    }
}

/// A final answer: retryable or not, the rule that said so, and the server's delay hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classified {
    /// [`Verdict::Retryable`] or [`Verdict::NotRetryable`], never `Unknown`.
    pub verdict: Verdict,
    /// The rule that decided.
    pub rule: Rule,
    /// How long the server asked to wait, if it said.
    pub retry_after: Option<Duration>,
}

impl Classified {
    /// The answer of `rule`, or `None` when it does not know.
    #[inline]
    pub fn by(rule: Rule, verdict: Verdict) -> Option<Self> {
        match verdict {
            Verdict::Unknown => None,
            verdict => Some(Self {
                verdict,
                rule,
                retry_after: None,
            }),
        }
    }

    /// What is left when no rule called an error retryable.
    pub const NOT_RETRYABLE: Self = Self {
        verdict: Verdict::NotRetryable,
        rule: Rule::NoRule,
        retry_after: None,
    };

    /// The same answer, with the server's delay hint.
    #[inline]
    #[must_use]
    pub fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..self
        }
    }

    /// Whether the error is worth another attempt.
    #[inline]
    pub fn is_retryable(&self) -> bool {
        self.verdict == Verdict::Retryable
    }
}

/// The typed rule for [`io::Error`] kinds: transient network and OS conditions are
/// retryable, `Other` is left to the text rule, every other kind is not retryable.
pub fn classify_io_kind(kind: io::ErrorKind) -> Verdict {
    use io::ErrorKind as K;
    match kind {
        K::TimedOut
        | K::ConnectionReset
        | K::ConnectionRefused
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::Interrupted
        | K::WouldBlock => Verdict::Retryable,
        K::Other => Verdict::Unknown,
        _ => Verdict::NotRetryable,
    }
}

/// The design note's text rule on one message: [`Verdict::Retryable`] when it holds a
/// retryable pattern, else [`Verdict::Unknown`] (text alone never forbids a retry).
///
/// ```
/// use retry_runtime::{Verdict, classify::classify_text};
///
/// assert_eq!(classify_text("HTTP 503 Service Unavailable"), Verdict::Retryable);
/// assert_eq!(classify_text("Connection RESET by peer"), Verdict::Retryable);
/// assert_eq!(classify_text("prompt is 5000 tokens long"), Verdict::Unknown);
/// assert_eq!(classify_text("bad address 127.0.0.1:5003"), Verdict::Unknown);
/// ```
pub fn classify_text(text: &str) -> Verdict {
    const WORDS: [&str; 5] = ["timeout", "timed out", "connection", "reset", "refused"];
    const CODES: [&str; 3] = ["429", "503", "500"];
    let retryable = WORDS
        .iter()
        .any(|w| find_ignore_ascii_case(text.as_bytes(), w.as_bytes()).is_some())
        || CODES.iter().any(|c| contains_whole_number(text, c));
    if retryable {
        Verdict::Retryable
    } else {
        Verdict::Unknown
    }
}

/// `code` stands in `text` with no digit right before or after it.
fn contains_whole_number(text: &str, code: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(code).any(|(at, _)| {
        let before = at.checked_sub(1).and_then(|i| bytes.get(i));
        let after = bytes.get(at + code.len());
        !before.is_some_and(u8::is_ascii_digit) && !after.is_some_and(u8::is_ascii_digit)
    })
}

/// The typed rule for HTTP statuses: 408, 429, 500, 502, 503 and 504 are retryable, any
/// other 4xx or 5xx is not, anything else is not an error status this rule knows.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        408 | 429 | 500 | 502 | 503 | 504 => Verdict::Retryable,
        400..=599 => Verdict::NotRetryable,
        _ => Verdict::Unknown,
    }
}

/// The typed rule for one link of a chain: the kinds of error whose type alone says whether
/// a retry may help.
pub fn classify_typed(link: &(dyn Error + 'static)) -> Verdict {
    if let Some(io) = link.downcast_ref::<io::Error>() {
        return classify_io_kind(io.kind());
    }
    if let Some(http) = link.downcast_ref::<crate::http::HttpError>() {
        return classify_status(http.status());
    }
    #[cfg(feature = "reqwest")]
    if let Some(error) = link.downcast_ref::<reqwest::Error>() {
        return crate::http::classify_reqwest(error);
    }
    Verdict::Unknown
}

/// The server's words in one link: from the fields of a typed HTTP error, else its text.
fn server_words(link: &(dyn Error + 'static), text: &str) -> ServerWords {
    match link.downcast_ref::<crate::http::HttpError>() {
        Some(http) => http.server_words(),
        None => read_text(text),
    }
}

/// The built-in rules on a whole error chain: first any typed answer along the chain, then
/// the text of every link. Use it in a [`Classify`] implementation for the cases the type
/// does not decide.
pub fn classify_error(error: &(dyn Error + 'static)) -> Verdict {
    classify_chain(error).verdict
}

/// [`classify_error`] with the rule that decided and the server's delay hint.
pub fn classify_chain(error: &(dyn Error + 'static)) -> Classified {
    classify_chain_with(error, None, || None)
}

/// The rules for an error type with its own [`Classify`] answer that is also an
/// `std::error::Error`: the server's words along the whole chain, then the type's answer,
/// then (where it said `Unknown`) the typed and text rules along the chain.
pub fn classify_own_error<E: Classify + Error + 'static>(error: &E) -> Classified {
    classify_chain_with(error, error.retry_after(), || error.classified())
}

/// The rules in SPEC order over `error`'s chain, with `own` (a type's own answer) first
/// among the typed rules and `own_hint` before any hint found in the chain.
fn classify_chain_with(
    error: &(dyn Error + 'static),
    own_hint: Option<Duration>,
    own: impl FnOnce() -> Option<Classified>,
) -> Classified {
    // Each link's text is needed by two rules; format it once (this is the failure path).
    let links: Vec<(&(dyn Error + 'static), String)> =
        chain(error).map(|link| (link, link.to_string())).collect();
    // An inner retried call that already gave up is not retried again by an outer one: that
    // would multiply the attempts (3 outer x 3 inner = 9 calls).
    if links
        .iter()
        .any(|(link, _)| link.is::<MediaProcessingError>())
    {
        return Classified {
            verdict: Verdict::NotRetryable,
            rule: Rule::GaveUp,
            retry_after: None,
        };
    }
    let words = links
        .iter()
        .map(|(link, text)| server_words(*link, text))
        .fold(ServerWords::default(), ServerWords::or);
    let words = ServerWords {
        retry_after: own_hint.or(words.retry_after),
        ..words
    };
    decide(words, || {
        own()
            .or_else(|| {
                links
                    .iter()
                    .find_map(|(link, _)| Classified::by(Rule::Typed, classify_typed(*link)))
            })
            .or_else(|| links.iter().find_map(|(_, text)| text_rule(text)))
    })
}

/// The rules that need only an error's text: the server's words and the text rule.
pub fn classify_message(text: &str) -> Classified {
    decide(read_text(text), || text_rule(text))
}

/// The rules for an error type with its own [`Classify`] answer, in the order of SPEC
/// section 3: the server's words in `text` first (a per-day quota is never retried), then the
/// type's answer, then, where the type said `Unknown`, the text rule. The type's own
/// [`retry_after`](Classify::retry_after) wins over a hint found in the text.
pub fn classify_own<E: Classify + ?Sized>(error: &E, text: &str) -> Classified {
    let words = read_text(text);
    let words = ServerWords {
        retry_after: error.retry_after().or(words.retry_after),
        ..words
    };
    decide(words, || error.classified().or_else(|| text_rule(text)))
}

/// The server's words come first; then `rules`; then "not retryable".
fn decide(words: ServerWords, rules: impl FnOnce() -> Option<Classified>) -> Classified {
    if words.per_day_quota {
        return Classified {
            verdict: Verdict::NotRetryable,
            rule: Rule::ServerWords,
            retry_after: words.retry_after,
        };
    }
    let classified = rules().unwrap_or(Classified::NOT_RETRYABLE);
    // A hint the rules found themselves (a typed error's own) is kept.
    classified.with_retry_after(classified.retry_after.or(words.retry_after))
}

fn text_rule(text: &str) -> Option<Classified> {
    Classified::by(Rule::Text, classify_text(text))
}

/// The error and its causes. An [`io::Error`] built around another error hides that error
/// from `source()` (it forwards the inner error's own source), so step into it explicitly.
fn chain<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&link: &&'a (dyn Error + 'static)| match link
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
    {
        Some(inner) => Some(inner as &(dyn Error + 'static)),
        None => link.source(),
    })
}

/// `Classify` by the built-in rules over the chain that `$as_error` reaches from `$this`:
/// for error types that have no answer of their own.
macro_rules! classify_by_chain {
    ($($(#[$attr:meta])* $ty:ty => |$this:ident| $as_error:expr;)*) => {$(
        $(#[$attr])*
        impl Classify for $ty {
            fn classify(&self) -> Verdict {
                self.classified().map_or(Verdict::Unknown, |c| c.verdict)
            }

            fn classified(&self) -> Option<Classified> {
                let $this = self;
                Some(classify_chain($as_error))
            }
        }
    )*};
}
pub(crate) use classify_by_chain;

classify_by_chain! {
    io::Error => |e| e;
    Box<dyn Error + Send + Sync + 'static> => |e| &**e;
    Box<dyn Error + Send + 'static> => |e| &**e;
    Box<dyn Error + 'static> => |e| &**e;
    #[cfg(feature = "anyhow")]
    anyhow::Error => |e| {
        let error: &(dyn Error + Send + Sync + 'static) = e.as_ref();
        error
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped {
        message: &'static str,
        source: Option<Box<dyn Error + Send + Sync>>,
    }
    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.message)
        }
    }
    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn text(t: &str) -> Verdict {
        classify_text(t)
    }

    #[test]
    fn every_row_of_the_design_note_table() {
        // Retryable by text: 429, 503, 500, timeout, connection reset.
        for t in [
            "429 Resource Exhausted",
            "503 Service Unavailable",
            "500 Internal Server Error",
            "request timeout",
            "operation timed out",
            "connection reset by peer",
            "Connection refused",
            "connection error",
        ] {
            assert_eq!(text(t), Verdict::Retryable, "{t}");
        }
        // Not retryable: invalid key (401), bad request (400), value errors, key errors.
        for t in [
            "401 Unauthorized: API key not valid",
            "400 Bad Request",
            "ValueError: Invalid image format",
            "KeyError: 'candidates'",
            "invalid input",
        ] {
            assert_eq!(text(t), Verdict::Unknown, "{t}");
            let e = Wrapped {
                message: t,
                source: None,
            };
            assert_eq!(classify_chain(&e), Classified::NOT_RETRYABLE, "{t}");
        }
    }

    #[test]
    fn text_rule_ignores_case() {
        for t in ["TIMEOUT", "Timed Out", "CONNECTION", "ReSeT", "REFUSED"] {
            assert_eq!(text(t), Verdict::Retryable, "{t}");
        }
    }

    #[test]
    fn codes_match_only_as_whole_numbers() {
        for t in [
            "5000 tokens",
            "127.0.0.1:5003",
            "id 4290",
            "15030",
            "x1500",
            "status 4291",
        ] {
            assert_eq!(text(t), Verdict::Unknown, "{t}");
        }
        for t in [
            "429",
            "(429)",
            "code=503;",
            "HTTP/1.1 500",
            "status:500",
            "e500x",
        ] {
            assert_eq!(text(t), Verdict::Retryable, "{t}");
        }
    }

    #[test]
    fn io_kinds_follow_the_spec() {
        use io::ErrorKind as K;
        for k in [
            K::TimedOut,
            K::ConnectionReset,
            K::ConnectionRefused,
            K::ConnectionAborted,
            K::BrokenPipe,
            K::Interrupted,
            K::WouldBlock,
        ] {
            assert_eq!(classify_io_kind(k), Verdict::Retryable, "{k:?}");
        }
        assert_eq!(classify_io_kind(K::Other), Verdict::Unknown);
        for k in [
            K::NotFound,
            K::PermissionDenied,
            K::InvalidData,
            K::InvalidInput,
        ] {
            assert_eq!(classify_io_kind(k), Verdict::NotRetryable, "{k:?}");
        }
    }

    #[test]
    fn typed_answer_wins_over_text() {
        // The text says "timeout", but the kind says the data is wrong.
        let e = io::Error::new(io::ErrorKind::InvalidData, "timeout field missing");
        assert_eq!(
            classify_chain(&e),
            Classified {
                verdict: Verdict::NotRetryable,
                rule: Rule::Typed,
                retry_after: None,
            }
        );
        // The text says nothing, the kind says retry.
        let e = io::Error::new(io::ErrorKind::TimedOut, "slow");
        assert_eq!(classify_chain(&e).rule, Rule::Typed);
        assert!(classify_chain(&e).is_retryable());
    }

    #[test]
    fn io_other_falls_through_to_text() {
        let e = io::Error::other("upstream said 503");
        assert_eq!(
            classify_chain(&e),
            Classified {
                verdict: Verdict::Retryable,
                rule: Rule::Text,
                retry_after: None,
            }
        );
        assert_eq!(
            classify_chain(&io::Error::other("bad image")),
            Classified::NOT_RETRYABLE
        );
    }

    #[test]
    fn source_chain_is_walked_for_types_and_text() {
        let typed = Wrapped {
            message: "analysis failed",
            source: Some(Box::new(io::Error::from(io::ErrorKind::ConnectionReset))),
        };
        assert_eq!(classify_chain(&typed).rule, Rule::Typed);
        assert!(classify_chain(&typed).is_retryable());

        let deep_text = Wrapped {
            message: "analysis failed",
            source: Some(Box::new(Wrapped {
                message: "gemini call failed",
                source: Some("HTTP 429 Too Many Requests".into()),
            })),
        };
        assert_eq!(classify_chain(&deep_text).rule, Rule::Text);
        assert!(classify_chain(&deep_text).is_retryable());
    }

    #[test]
    fn io_error_wrapping_another_error_is_stepped_into() {
        let inner = Wrapped {
            message: "wrapper",
            source: Some(Box::new(io::Error::from(io::ErrorKind::TimedOut))),
        };
        let outer = io::Error::other(inner);
        assert!(classify_chain(&outer).is_retryable());
        assert_eq!(classify_chain(&outer).rule, Rule::Typed);
    }

    #[test]
    fn boxed_errors_classify_through_their_chain() {
        let e: Box<dyn Error + Send + Sync> = Box::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(e.classify(), Verdict::Retryable);
        let e: Box<dyn Error> = "401 unauthorized".into();
        assert_eq!(e.classify(), Verdict::NotRetryable);
    }

    #[test]
    fn a_predicate_bool_is_a_verdict() {
        assert_eq!(Verdict::from(true), Verdict::Retryable);
        assert_eq!(Verdict::from(false), Verdict::NotRetryable);
        assert_eq!(
            Verdict::Unknown.or_else(|| Verdict::Retryable),
            Verdict::Retryable
        );
        assert_eq!(
            Verdict::NotRetryable.or_else(|| Verdict::Retryable),
            Verdict::NotRetryable
        );
    }

    #[test]
    fn http_statuses_follow_the_spec() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(code), Verdict::Retryable, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 501, 505, 599] {
            assert_eq!(classify_status(code), Verdict::NotRetryable, "{code}");
        }
        for code in [200, 204, 301, 304, 600, 0] {
            assert_eq!(classify_status(code), Verdict::Unknown, "{code}");
        }
    }

    #[test]
    fn a_per_day_quota_is_not_retried_whatever_the_text_says() {
        let e = Wrapped {
            message: r#"429 RESOURCE_EXHAUSTED: Your quota will reset after 12h34m16s. {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}"#,
            source: None,
        };
        let c = classify_chain(&e);
        assert_eq!(c.verdict, Verdict::NotRetryable);
        assert_eq!(c.rule, Rule::ServerWords);
        assert_eq!(
            classify_message(e.message).rule,
            Rule::ServerWords,
            "the text-only path sees it too"
        );
    }

    #[test]
    fn a_retry_delay_in_the_chain_is_carried() {
        let e = Wrapped {
            message: "gemini call failed",
            source: Some(r#"429 {"retryDelay": "53s"}"#.into()),
        };
        let c = classify_chain(&e);
        assert!(c.is_retryable());
        assert_eq!(c.retry_after, Some(Duration::from_secs(53)));
    }

    #[test]
    fn a_400_mentioning_timeout_is_not_retried_when_typed() {
        let e = crate::http::HttpError::new(400, None, r#"{"error": "field timeout invalid"}"#);
        assert_eq!(classify_chain(&e).verdict, Verdict::NotRetryable);
        assert_eq!(classify_chain(&e).rule, Rule::Typed);
    }

    #[test]
    fn a_type_that_says_unknown_keeps_the_chain_rules() {
        #[derive(Debug)]
        struct Own(Wrapped);
        impl fmt::Display for Own {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("analysis failed")
            }
        }
        impl Error for Own {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        impl Classify for Own {
            fn classify(&self) -> Verdict {
                Verdict::Unknown
            }
        }
        let reset = Own(Wrapped {
            message: "inner",
            source: Some(Box::new(io::Error::from(io::ErrorKind::ConnectionReset))),
        });
        assert_eq!(classify_own_error(&reset).rule, Rule::Typed);
        assert!(classify_own_error(&reset).is_retryable());
    }

    #[test]
    fn an_inner_give_up_is_not_retried_again() {
        let inner = MediaProcessingError::exhausted(3, io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(classify_chain(&inner).rule, Rule::GaveUp);
        let wrapped = io::Error::new(io::ErrorKind::TimedOut, inner);
        assert_eq!(classify_chain(&wrapped).verdict, Verdict::NotRetryable);
    }

    #[test]
    fn non_ascii_text_does_not_panic() {
        assert_eq!(text("тайм-аут 429 ошибка"), Verdict::Retryable);
        assert_eq!(text("ошибка ввода"), Verdict::Unknown);
        assert_eq!(text(""), Verdict::Unknown);
    }
}
