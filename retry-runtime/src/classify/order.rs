//! The order of the rules (the list in [`classify`](super)), applied in one place for every
//! path: the attribute, the closure API, `#[derive(Classify)]` and [`explain`](super::explain).

use super::chain::{links, with_text};
use super::inner_give_up::{is_give_up, is_give_up_text};
use super::known_types::by_known_type;
use super::text::{has_retryable_word, stated_status};
use super::{Classified, Classify, Rule, Verdict, by_status};
use crate::hint::{ServerWords, read_text};
use crate::http::HttpError;
use std::error::Error;

/// What is known of one error before the rules run: the type's own answer, and the chain the
/// built-in rules walk, when the error has one (else only its text is read).
#[derive(Clone, Copy)]
pub struct Seen<'a> {
    /// The type's own answer.
    pub own: Option<Classified>,
    /// The error as an `std::error::Error`, when it is one or holds one.
    pub chain: Option<&'a (dyn Error + 'static)>,
}

impl<'a> Seen<'a> {
    /// An `std::error::Error` with no answer of its own.
    pub fn chain(error: &'a (dyn Error + 'static)) -> Self {
        Self {
            own: None,
            chain: Some(error),
        }
    }

    /// A [`Classify`] type: its own answer, and the chain it exposes, or `fallback` (the
    /// error itself, where the caller can see it is an `std::error::Error`).
    pub fn classify<E: Classify + ?Sized>(
        error: &'a E,
        fallback: Option<&'a (dyn Error + 'static)>,
    ) -> Self {
        Self {
            own: error.__resilience_own_answer(),
            chain: error.error_chain().or(fallback),
        }
    }

    /// A type that is neither: only its text is read.
    pub const TEXT_ONLY: Seen<'static> = Seen {
        own: None,
        chain: None,
    };
}

/// The final answer for `seen`. `text` is the error's text, read only when it has no chain
/// (with a chain, each link's own text is read).
pub(crate) fn decide(seen: Seen<'_>, text: &str) -> Classified {
    decide_lazily(seen, || text.to_owned())
}

/// [`decide`], asking for the text only when the error has no chain: deciding on an error
/// with a chain allocates nothing unless a link's text is longer than [`with_text`] holds.
pub(crate) fn decide_lazily(seen: Seen<'_>, text: impl FnOnce() -> String) -> Classified {
    match seen.chain {
        Some(error) => decide_over_chain(error, seen.own),
        None => decide_over_text(&text(), seen.own),
    }
}

/// Each rule walks the chain again and formats the texts it reads anew: the chain is a few
/// links, and this way nothing is collected.
fn decide_over_chain(error: &(dyn Error + 'static), own: Option<Classified>) -> Classified {
    let gave_up = links(error).any(|link| is_give_up(link) || with_text(link, is_give_up_text));
    if gave_up {
        return inner_give_up();
    }
    let words = links(error)
        .map(server_words)
        .fold(ServerWords::default(), ServerWords::or);
    settle(words, own, || {
        links(error)
            .find_map(|link| Classified::by(Rule::KnownType, by_known_type(link)))
            .or_else(|| links(error).find_map(|link| with_text(link, status_in)))
            .or_else(|| links(error).find_map(|link| with_text(link, keyword_in)))
    })
}

fn decide_over_text(text: &str, own: Option<Classified>) -> Classified {
    if is_give_up_text(text) {
        return inner_give_up();
    }
    settle(read_text(text), own, || {
        status_in(text).or_else(|| keyword_in(text))
    })
}

/// The server's words first (a per-day quota is never retried), then the type's own answer,
/// then `rest`, then "not retryable". The type's own hint wins over one found in the texts.
fn settle(
    words: ServerWords,
    own: Option<Classified>,
    rest: impl FnOnce() -> Option<Classified>,
) -> Classified {
    let hint = own.and_then(|c| c.retry_after).or(words.retry_after);
    let refused = if words.per_day_quota {
        Some(Rule::PerDayQuota)
    } else if words.no_retry {
        Some(Rule::ServerPushback)
    } else {
        None
    };
    if let Some(rule) = refused {
        return Classified {
            verdict: Verdict::NotRetryable,
            rule,
            retry_after: hint,
        };
    }
    let decided = own.or_else(rest).unwrap_or(Classified::NOT_RETRYABLE);
    decided.with_retry_after(decided.retry_after.or(hint))
}

fn inner_give_up() -> Classified {
    Classified {
        verdict: Verdict::NotRetryable,
        rule: Rule::InnerGiveUp,
        retry_after: None,
    }
}

/// The server's words in one link: from the fields of a typed HTTP error or gRPC status, else
/// its text.
fn server_words(link: &(dyn Error + 'static)) -> ServerWords {
    if let Some(http) = link.downcast_ref::<HttpError>() {
        return http.server_words();
    }
    #[cfg(feature = "tonic")]
    if let Some(status) = link.downcast_ref::<tonic::Status>() {
        return crate::grpc::server_words(status);
    }
    #[cfg(feature = "ureq2")]
    if let Some(words) = super::ureq::as_ureq2(link).and_then(super::ureq::server_words_ureq2) {
        return words;
    }
    with_text(link, read_text)
}

fn status_in(text: &str) -> Option<Classified> {
    Classified::by(Rule::StatusInText, by_status(stated_status(text)?))
}

fn keyword_in(text: &str) -> Option<Classified> {
    has_retryable_word(text).then_some(Classified {
        verdict: Verdict::Retryable,
        rule: Rule::Keyword,
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::io;
    use std::time::Duration;

    use super::*;
    use crate::classify::explain;
    use crate::error::MediaProcessingError;

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

    fn text_only(text: &str) -> Classified {
        decide(Seen::TEXT_ONLY, text)
    }

    #[test]
    fn every_row_of_the_design_note_tables() {
        for text in [
            "429 Resource Exhausted",
            "503 Service Unavailable",
            "500 Internal Server Error",
            "request timeout",
            "operation timed out",
            "connection reset by peer",
            "Connection refused",
            "connection error",
        ] {
            assert!(text_only(text).is_retryable(), "{text}");
        }
        for text in [
            "401 Unauthorized: API key not valid",
            "400 Bad Request",
            "ValueError: Invalid image format",
            "KeyError: 'candidates'",
            "invalid input",
        ] {
            assert_eq!(text_only(text).verdict, Verdict::NotRetryable, "{text}");
            let e = Wrapped {
                message: text,
                source: None,
            };
            assert_eq!(explain(&e).verdict, Verdict::NotRetryable, "{text}");
        }
    }

    #[test]
    fn a_known_type_wins_over_the_text() {
        // The text says "timeout", but the kind says the data is wrong.
        let e = io::Error::new(io::ErrorKind::InvalidData, "timeout field missing");
        assert_eq!(
            explain(&e),
            Classified {
                verdict: Verdict::NotRetryable,
                rule: Rule::KnownType,
                retry_after: None,
            }
        );
        let e = io::Error::new(io::ErrorKind::TimedOut, "slow");
        assert_eq!(explain(&e).rule, Rule::KnownType);
        assert!(explain(&e).is_retryable());
    }

    #[test]
    fn io_other_falls_through_to_the_text() {
        let e = io::Error::other("upstream said 503");
        assert_eq!(explain(&e).rule, Rule::Keyword);
        assert!(explain(&e).is_retryable());
        assert_eq!(
            explain(&io::Error::other("bad image")),
            Classified::NOT_RETRYABLE
        );
    }

    #[test]
    fn a_stated_status_comes_before_the_words_along_the_chain() {
        let e = Wrapped {
            message: "resetting the password failed",
            source: Some("HTTP status client error (400 Bad Request) for url (https://h.test/v1/password-reset)".into()),
        };
        assert_eq!(explain(&e).rule, Rule::StatusInText);
        assert_eq!(explain(&e).verdict, Verdict::NotRetryable);
    }

    #[test]
    fn the_chain_is_walked_for_types_and_text() {
        let typed = Wrapped {
            message: "analysis failed",
            source: Some(Box::new(io::Error::from(io::ErrorKind::ConnectionReset))),
        };
        assert_eq!(explain(&typed).rule, Rule::KnownType);
        assert!(explain(&typed).is_retryable());

        let deep_text = Wrapped {
            message: "analysis failed",
            source: Some(Box::new(Wrapped {
                message: "gemini call failed",
                source: Some("HTTP 429 Too Many Requests".into()),
            })),
        };
        assert_eq!(explain(&deep_text).rule, Rule::StatusInText);
        assert!(explain(&deep_text).is_retryable());
    }

    #[test]
    fn a_per_day_quota_is_not_retried_whatever_the_text_says() {
        let message = r#"429 RESOURCE_EXHAUSTED: Your quota will reset after 12h34m16s. {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}"#;
        let e = Wrapped {
            message,
            source: None,
        };
        assert_eq!(explain(&e).rule, Rule::PerDayQuota);
        assert_eq!(explain(&e).verdict, Verdict::NotRetryable);
        assert_eq!(text_only(message).rule, Rule::PerDayQuota, "text alone too");
    }

    #[test]
    fn a_retry_delay_in_the_chain_is_carried() {
        let e = Wrapped {
            message: "gemini call failed",
            source: Some(r#"429 {"retryDelay": "53s"}"#.into()),
        };
        let c = explain(&e);
        assert!(c.is_retryable());
        assert_eq!(c.retry_after, Some(Duration::from_secs(53)));
    }

    #[test]
    fn an_own_answer_comes_after_the_server_words_and_before_the_rest() {
        let own = Classified::by(Rule::OwnAnswer, Verdict::Retryable)
            .map(|c| c.with_retry_after(Some(Duration::from_secs(7))));
        let e = io::Error::new(io::ErrorKind::InvalidData, "bad");
        let c = decide(
            Seen {
                own,
                chain: Some(&e),
            },
            "",
        );
        assert_eq!(c.rule, Rule::OwnAnswer);
        assert_eq!(c.retry_after, Some(Duration::from_secs(7)));
        let quota = Wrapped {
            message: r#"{"quotaId": "PerDay"}"#,
            source: None,
        };
        let c = decide(
            Seen {
                own,
                chain: Some(&quota),
            },
            "",
        );
        assert_eq!(c.rule, Rule::PerDayQuota);
    }

    #[test]
    fn an_inner_give_up_is_not_retried_again_in_any_wrapping() {
        let inner = || MediaProcessingError::exhausted(3, io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(explain(&inner()).rule, Rule::InnerGiveUp);
        let in_io = io::Error::new(io::ErrorKind::TimedOut, inner());
        assert_eq!(explain(&in_io).rule, Rule::InnerGiveUp);
        // A transparent wrapper forwards `source()` past the give-up to its view.
        let give_up = inner();
        let view = give_up.source().map(|v| v as &(dyn Error + 'static));
        let transparent = Wrapped {
            message: "Failed after 3 retries: timed out",
            source: None,
        };
        assert_eq!(explain(&transparent).rule, Rule::InnerGiveUp, "by its text");
        assert!(view.is_some_and(crate::classify::inner_give_up::is_give_up));
        assert_eq!(
            text_only("Failed after 2 retries: 503").rule,
            Rule::InnerGiveUp
        );
    }
}
