//! Keeps credentials out of log events and give-up errors (SPEC section 9).
//!
//! Error texts of HTTP clients often hold the request URL (`...?key=AIza...`) or headers.
//! Before such a text is logged or stored in a `MediaProcessingError`, the values of `key=`
//! and `api_key=` query parameters, `x-goog-api-key` and `Authorization` headers, bearer
//! tokens, and anything shaped like a Google API key become `[REDACTED]`.

use std::borrow::Cow;

use crate::scan::{find_ignore_ascii_case, skip};

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// `text` with credentials replaced by `[REDACTED]`; borrowed when there was nothing to hide.
///
/// ```
/// use retry_runtime::redact::redact;
///
/// assert_eq!(
///     redact("error sending request for url (https://x.test/v1?key=AIzaSyA-secret&alt=json)"),
///     "error sending request for url (https://x.test/v1?key=[REDACTED]&alt=json)",
/// );
/// assert_eq!(redact("Authorization: Bearer ya29.token"), "Authorization: [REDACTED]");
/// assert_eq!(redact("429 Too Many Requests"), "429 Too Many Requests");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut spans = Vec::new();
    for rule in RULES {
        find_values(text, rule, &mut spans);
    }
    find_google_keys(text, &mut spans);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        let start = start.max(at);
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// An error's text as logs and give-up errors show it: `Display`, credentials redacted.
pub fn error_text(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    match redact(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(redacted) => redacted,
    }
}

/// A name whose value is secret, and how the value is written after it.
struct Rule {
    name: &'static str,
    kind: Kind,
}

enum Kind {
    /// `name=value` in a query string or form.
    Query,
    /// `name: value`, `"name": "value"` or `name=value` in a header dump.
    Header,
    /// Like `Header`, but the value may start with a scheme word (`Bearer abc`).
    Authorization,
    /// `Bearer value` anywhere.
    Bearer,
}

const RULES: &[Rule] = &[
    Rule {
        name: "api_key=",
        kind: Kind::Query,
    },
    Rule {
        name: "key=",
        kind: Kind::Query,
    },
    Rule {
        name: "x-goog-api-key",
        kind: Kind::Header,
    },
    Rule {
        name: "authorization",
        kind: Kind::Authorization,
    },
    Rule {
        name: "bearer ",
        kind: Kind::Bearer,
    },
];

fn find_values(text: &str, rule: &Rule, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let name = rule.name.as_bytes();
    let mut from = 0;
    while let Some(found) = find_ignore_ascii_case(&bytes[from..], name) {
        let start = from + found;
        from = start + name.len();
        // `monkey=` or `x-api_key=` are other names; a name starts a word.
        let starts_word = start == 0 || !is_name_byte(bytes[start - 1]);
        if !starts_word {
            continue;
        }
        let value_start = match rule.kind {
            Kind::Query | Kind::Bearer => from,
            Kind::Header | Kind::Authorization => {
                let after = skip(bytes, from, |b| matches!(b, b'"' | b'\'' | b' ' | b'\t'));
                if !matches!(bytes.get(after), Some(b':' | b'=')) {
                    continue;
                }
                skip(bytes, after + 1, |b| {
                    matches!(b, b'"' | b'\'' | b' ' | b'\t')
                })
            }
        };
        // Already hidden (the text went through here before): leave it, so redacting twice
        // gives what redacting once does.
        if text[value_start..].starts_with(REDACTED) {
            continue;
        }
        let mut value_end = skip(bytes, value_start, |b| !ends_value(b));
        if matches!(rule.kind, Kind::Authorization)
            && value_end < bytes.len()
            && bytes[value_end] == b' '
        {
            // `Authorization: Bearer abc`: the scheme and the credentials both go.
            value_end = skip(bytes, value_end + 1, |b| !ends_value(b));
        }
        if value_end > value_start {
            spans.push((value_start, value_end));
        }
    }
}

/// Google API keys: `AIza` and 35 more key characters, wherever they stand.
fn find_google_keys(text: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find("AIza") {
        let start = from + found;
        let end = skip(bytes, start, is_name_byte);
        if end - start >= 39 {
            spans.push((start, end));
        }
        from = end.max(start + 4);
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn ends_value(b: u8) -> bool {
    matches!(
        b,
        b'&' | b'"'
            | b'\''
            | b' '
            | b'\t'
            | b'\r'
            | b'\n'
            | b','
            | b';'
            | b')'
            | b'}'
            | b']'
            | b'>'
            | b'#'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact(
                "GET https://h.test/v1beta/models/gemini:generateContent?key=AIzaSy123&alt=sse failed"
            ),
            "GET https://h.test/v1beta/models/gemini:generateContent?key=[REDACTED]&alt=sse failed"
        );
        assert_eq!(
            redact("url?api_key=abc#frag"),
            "url?api_key=[REDACTED]#frag"
        );
        assert_eq!(redact("?KEY=abc"), "?KEY=[REDACTED]");
    }

    #[test]
    fn other_names_ending_in_key_are_left_alone() {
        assert_eq!(redact("monkey=banana"), "monkey=banana");
        assert_eq!(redact("cache_key=abc"), "cache_key=abc");
    }

    #[test]
    fn headers_in_plain_and_debug_form() {
        assert_eq!(
            redact("x-goog-api-key: secret123\nnext"),
            "x-goog-api-key: [REDACTED]\nnext"
        );
        assert_eq!(
            redact(r#"{"x-goog-api-key": "secret123", "accept": "*/*"}"#),
            r#"{"x-goog-api-key": "[REDACTED]", "accept": "*/*"}"#
        );
        assert_eq!(
            redact(r#"headers: {"authorization": "Bearer ya29.abc"}"#),
            r#"headers: {"authorization": "[REDACTED]"}"#
        );
        assert_eq!(
            redact("Authorization: Basic dXNlcjpw"),
            "Authorization: [REDACTED]"
        );
    }

    #[test]
    fn bearer_tokens_anywhere() {
        assert_eq!(
            redact("sent bearer abc.def to server"),
            "sent bearer [REDACTED] to server"
        );
    }

    #[test]
    fn google_keys_anywhere() {
        let key = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";
        assert_eq!(key.len(), 39);
        assert_eq!(redact(&format!("bad key {key}.")), "bad key [REDACTED].");
        assert_eq!(redact("AIza short"), "AIza short");
    }

    #[test]
    fn redacting_twice_is_redacting_once() {
        for text in [
            "url?key=AIzaSy-secret&x=1",
            "x-goog-api-key: secret",
            "Authorization: Bearer abc",
            "sent bearer abc",
            r#"{"authorization": "Basic dXNl"}"#,
        ] {
            let once = redact(text).into_owned();
            assert_eq!(redact(&once), once, "{text}");
        }
    }

    #[test]
    fn nothing_to_hide_borrows() {
        assert!(matches!(
            redact("503 Service Unavailable"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(redact(""), Cow::Borrowed(_)));
    }

    #[test]
    fn overlapping_rules_do_not_panic_or_duplicate() {
        let text = "x-goog-api-key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI&key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";
        assert_eq!(redact(text), "x-goog-api-key=[REDACTED]&key=[REDACTED]");
        for cut in 0..text.len() {
            let _ = redact(&text[..cut]);
        }
        let _ = redact("ключ key=значение");
    }
}
