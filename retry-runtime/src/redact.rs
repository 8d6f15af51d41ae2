//! Keeps credentials out of log events and give-up errors.
//!
//! The text of an HTTP client's error often holds what the request carried: the URL with its
//! `?key=` or `X-Amz-Signature=`, a dump of the headers with `Authorization`, a JSON body with
//! `"client_secret"`, a connection string with a password. Logs and error reports travel
//! further than the process that holds the credentials, so every error text a log event or a
//! [`MediaProcessingError`](crate::MediaProcessingError) shows goes through [`redact`] first.
//! It hides credentials by class rather than by a fixed list of names:
//!
//! - **named values**: query parameters, forms, headers, JSON fields and `Debug` fields whose
//!   name says key, token, secret, password, signature, credential, session, auth or cookie
//!   (`apiKey=…`, `X-Amz-Signature=…`, `"client_secret": "…"`, `api_key: Some("…")`,
//!   `Authorization: Bearer …`), but not counts, ids, names or URLs of them
//!   (`promptTokenCount`, `key_id`, `token_url`);
//! - **bearer tokens** anywhere (`Bearer …`);
//! - **passwords in URLs** (`postgres://app:hunter2@db` hides `app:hunter2`);
//! - **well-known key shapes** wherever they stand: Google (`AIza…`), OpenAI (`sk-…`), Stripe
//!   (`sk_live_…`), AWS access key ids (`AKIA…`), GitHub (`ghp_…`, `github_pat_…`), Slack
//!   (`xoxb-…`) and JWTs (`eyJ….eyJ….…`);
//! - **the application's own** secrets and rules: [`add_secret`], [`add_rule`].
//!
//! Each rule reads the text once. Redacting twice gives what redacting once does: the retry
//! loop redacts the text it logs, and the give-up error redacts it again.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::scan::{find_ignore_ascii_case, skip};

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// `text` with credentials replaced by `[REDACTED]`; borrowed when there was nothing to hide.
///
/// Secrets the application registered with [`add_secret`] and [`add_rule`] are hidden too.
///
/// ```
/// use resilience::redact::redact;
///
/// assert_eq!(
///     redact("error sending request for url (https://x.test/v1?key=AIzaSyA-secret&alt=json)"),
///     "error sending request for url (https://x.test/v1?key=[REDACTED]&alt=json)",
/// );
/// assert_eq!(redact("Authorization: Bearer ya29.token"), "Authorization: [REDACTED]");
/// assert_eq!(
///     redact(r#"{"client_secret": "s3cr3t", "promptTokenCount": 12}"#),
///     r#"{"client_secret": "[REDACTED]", "promptTokenCount": 12}"#,
/// );
/// assert_eq!(
///     redact("postgres://app:hunter2@db.internal:5432/app"),
///     "postgres://[REDACTED]@db.internal:5432/app",
/// );
/// assert_eq!(redact("429 Too Many Requests"), "429 Too Many Requests");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut found = Found {
        text,
        spans: Vec::new(),
    };
    named_values(&mut found);
    xml_elements(&mut found);
    bearer_tokens(&mut found);
    url_userinfo(&mut found);
    key_shapes(&mut found);
    own_rules(&mut found);
    if found.spans.is_empty() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(found.hide())
}

/// Hides every later occurrence of `secret`, exactly as written, in every text this process
/// redacts (log events and give-up errors of every retry, on every thread). An empty `secret`
/// is ignored.
///
/// Meant for credentials the built-in rules cannot recognise by their shape or their name, such
/// as an API key the application reads from its environment and a server may echo back.
///
/// ```
/// use resilience::redact::{add_secret, redact};
///
/// // At start-up, e.g. with the value of `std::env::var("PARTNER_API_KEY")`.
/// add_secret("pk9-partner-77f3c1d2");
/// assert_eq!(
///     redact("upstream rejected pk9-partner-77f3c1d2 (expired)"),
///     "upstream rejected [REDACTED] (expired)",
/// );
/// ```
pub fn add_secret(secret: impl Into<String>) {
    let secret = secret.into();
    if secret.is_empty() {
        return;
    }
    change_own(|own| {
        if !own.secrets.contains(&secret) {
            own.secrets.push(secret);
        }
    });
}

/// Adds a rule of the application's own: `find` returns the byte ranges of a text to hide, and
/// applies to every later text this process redacts (log events and give-up errors of every
/// retry, on every thread).
///
/// Whatever `find` returns is made safe: ends past the text are cut to its length, ranges are
/// widened to whole characters, and empty or reversed ranges are ignored. `find` must not
/// panic; it runs with no lock held, so it may call [`redact`] itself.
///
/// ```
/// use resilience::redact::{add_rule, redact};
///
/// // Our own session handles: `sid-` and 12 digits.
/// add_rule(|text| {
///     text.match_indices("sid-")
///         .map(|(at, _)| at..at + 16) // may end past the text: that is cut
///         .collect()
/// });
/// assert_eq!(
///     redact("handle sid-123456789012 expired"),
///     "handle [REDACTED] expired",
/// );
/// ```
pub fn add_rule(find: impl Fn(&str) -> Vec<Range<usize>> + Send + Sync + 'static) {
    let find: Arc<OwnRule> = Arc::new(find);
    change_own(|own| own.rules.push(find));
}

// ---------------------------------------------------------------------------------------------
// Spans found, and the text with them hidden

/// The text being redacted and the byte spans found to hide, all on `char` boundaries.
struct Found<'t> {
    text: &'t str,
    spans: Vec<(usize, usize)>,
}

impl Found<'_> {
    /// Hides `start..end`, cut to the text and widened to whole characters; nothing if empty.
    fn add(&mut self, start: usize, end: usize) {
        if let Some(span) = self.whole_chars(start, end) {
            self.spans.push(span);
        }
    }

    /// `start..end` cut to the text and widened to whole characters, `None` if empty.
    fn whole_chars(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        let len = self.text.len();
        let (mut start, mut end) = (start.min(len), end.min(len));
        if start >= end {
            return None;
        }
        // 0 and `len` are boundaries, so neither loop leaves the text.
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        Some((start, end))
    }

    /// The text with each run of overlapping or touching spans replaced by one `[REDACTED]`.
    fn hide(mut self) -> String {
        self.spans.sort_unstable();
        let mut out = String::with_capacity(self.text.len());
        let mut copied = 0;
        let mut spans = self.spans.into_iter().peekable();
        while let Some((start, mut end)) = spans.next() {
            while let Some(&(next_start, next_end)) = spans.peek() {
                if next_start > end {
                    break;
                }
                end = end.max(next_end);
                spans.next();
            }
            out.push_str(self.text.get(copied..start).unwrap_or_default());
            out.push_str(REDACTED);
            copied = end;
        }
        out.push_str(self.text.get(copied..).unwrap_or_default());
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Named values: `name=value`, `Name: value`, `"name": "value"`, `name: Some("value")`

/// Words that make a name secret.
const SECRET_WORDS: &[&str] = &[
    "key",
    "keys",
    "apikey",
    "token",
    "tokens",
    "secret",
    "secrets",
    "password",
    "passwords",
    "passwd",
    "pwd",
    "passphrase",
    "signature",
    "sig",
    "credential",
    "credentials",
    "session",
    "sessionid",
    "auth",
    "authorization",
    "authentication",
    "authtoken",
    "accesstoken",
    "cookie",
    "privatekey",
];

/// Last words that make a secret-sounding name about the secret, not the secret itself
/// (`promptTokenCount`, `key_id`, `token_url`).
const BENIGN_LAST_WORDS: &[&str] = &[
    "count", "counts", "type", "name", "names", "limit", "length", "len", "size", "kind", "format",
    "url", "uri", "endpoint", "used", "usage", "id", "index",
];

/// Values that say a secret is absent, not what it is (`api_key: None`).
const ABSENT: &[&[u8]] = &[b"None", b"null", b"true", b"false"];

/// What a secret name says about how its value is written.
struct Name {
    /// An auth header: the value may be a scheme and credentials (`Bearer abc`).
    auth: bool,
    /// A cookie header: the value may be several `name=value` pairs joined by `;`.
    cookie: bool,
}

/// Where a value starts after a name, and how it is separated.
struct Separator {
    value: usize,
    /// `name: value` (headers, JSON, `Debug`), not `name=value`.
    colon: bool,
    /// The name was quoted as `\"name\"`: JSON nested in a string.
    escaped: bool,
}

fn named_values(found: &mut Found<'_>) {
    let bytes = found.text.as_bytes();
    let mut scan = ValueScan {
        bytes,
        unquoted: None,
        nested_end: 0,
    };
    let mut at = 0;
    while let Some(offset) = bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| is_name_byte(b)))
    {
        // A name is a whole run of name bytes, so `monkey=` is not `key=`.
        let start = at + offset;
        let end = skip(bytes, start, is_name_byte);
        at = end;
        let Some(separator) = separator_after(bytes, end) else {
            continue;
        };
        let Some(name) = bytes.get(start..end).and_then(secret_name) else {
            continue;
        };
        // Scanning goes on after the name, not after the value: a value cut short by a stray
        // quote must not hide the next name from this scan.
        scan.value(found, &separator, &name);
    }
}

/// `=` or `:` after a name, past a closing quote and blanks (`"key": `, `\"key\":`, `key = `).
fn separator_after(bytes: &[u8], name_end: usize) -> Option<Separator> {
    let mut at = name_end;
    let mut escaped = false;
    match byte(bytes, at) {
        Some(b'"' | b'\'') => at += 1,
        Some(b'\\') if byte(bytes, at + 1) == Some(b'"') => {
            at += 2;
            escaped = true;
        }
        _ => {}
    }
    at = skip(bytes, at, is_blank);
    let next = byte(bytes, at + 1);
    // `token::Kind` is a path and `key == x` or `key => x` code, not a value.
    let colon = match byte(bytes, at)? {
        b':' if next != Some(b':') => true,
        b'=' if !matches!(next, Some(b'=' | b'>')) => false,
        _ => return None,
    };
    // Pretty-printed JSON may put the value on the line after the colon.
    let value = if colon {
        skip(bytes, at + 1, |b| is_blank(b) || b == b'\n' || b == b'\r')
    } else {
        skip(bytes, at + 1, is_blank)
    };
    Some(Separator {
        value,
        colon,
        escaped,
    })
}

/// How a name reads when it is secret, `None` when it is not.
///
/// The name is split into words at `-`, `_`, `.`, at case changes (`apiKey`, `APIKey`) and
/// between letters and digits (`key2`). It is secret when a word is secret and the last word
/// is not a benign qualifier (`key_id`); `session` then `id` stays secret.
fn secret_name(name: &[u8]) -> Option<Name> {
    let is =
        |word: &[u8], list: &[&str]| list.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()));
    let (mut secret, mut auth, mut cookie) = (false, false, false);
    let (mut last, mut before_last): (&[u8], &[u8]) = (&[], &[]);
    for word in (Words { name, at: 0 }) {
        secret |= is(word, SECRET_WORDS);
        auth |= is(word, &["auth", "authorization"]);
        cookie |= is(word, &["cookie"]);
        before_last = last;
        last = word;
    }
    let session_id =
        last.eq_ignore_ascii_case(b"id") && before_last.eq_ignore_ascii_case(b"session");
    (secret && (!is(last, BENIGN_LAST_WORDS) || session_id)).then_some(Name { auth, cookie })
}

/// The words of a name.
struct Words<'a> {
    name: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = skip(self.name, self.at, |b| matches!(b, b'-' | b'_' | b'.'));
        if start >= self.name.len() {
            return None;
        }
        let mut end = start + 1;
        while let Some(b) = byte(self.name, end) {
            if matches!(b, b'-' | b'_' | b'.') || self.word_starts(end) {
                break;
            }
            end += 1;
        }
        self.at = end;
        self.name.get(start..end)
    }
}

impl Words<'_> {
    /// A word starts at `at` (inside a run of letters and digits): `api|Key`, `API|Key`, `key|2`.
    fn word_starts(&self, at: usize) -> bool {
        let (Some(before), Some(b)) = (
            at.checked_sub(1).and_then(|p| byte(self.name, p)),
            byte(self.name, at),
        ) else {
            return false;
        };
        let after = byte(self.name, at + 1);
        (before.is_ascii_lowercase() && b.is_ascii_uppercase())
            || (before.is_ascii_digit() != b.is_ascii_digit())
            || (before.is_ascii_uppercase()
                && b.is_ascii_uppercase()
                && after.is_some_and(|a| a.is_ascii_lowercase()))
    }
}

/// Reads the values of secret names in one text.
struct ValueScan<'t> {
    bytes: &'t [u8],
    /// The last unquoted value's `(start, end)`: a value that starts inside it ends where it
    /// does, so names nested in a long value (`key=key=key=…`) do not each scan it again.
    unquoted: Option<(usize, usize)>,
    /// Where the last bracketed value ended: one nested in it is hidden with it, unscanned.
    nested_end: usize,
}

impl ValueScan<'_> {
    /// Hides the value after `separator`.
    fn value(&mut self, found: &mut Found<'_>, separator: &Separator, name: &Name) {
        let bytes = self.bytes;
        let mut at = separator.value;
        if separator.colon {
            // `Debug` output: `Some(..)` shows what it holds; another type's value
            // (`Secret("..")`, `Token { .. }`) is hidden whole, its type name with it.
            while starts_with(bytes, at, "Some(") {
                at = skip(bytes, at + "Some(".len(), |b| b.is_ascii_whitespace());
            }
            let type_end = type_name_end(bytes, at);
            if type_end > at {
                let open = match byte(bytes, type_end) {
                    Some(b'(') => Some(type_end),
                    _ => Some(skip(bytes, type_end, is_blank))
                        .filter(|&brace| byte(bytes, brace) == Some(b'{')),
                };
                if let Some(open) = open {
                    self.bracketed(found, at, open, separator.escaped);
                    return;
                }
            }
        }
        // Already hidden (the text went through here before): leave it, so redacting twice
        // gives what redacting once does.
        if starts_with(bytes, at, REDACTED) {
            return;
        }
        match byte(bytes, at) {
            Some(quote @ (b'"' | b'\'')) => {
                let content = at + 1;
                if !starts_with(bytes, content, REDACTED) {
                    found.add(content, quoted_end(bytes, content, quote));
                }
            }
            Some(b'\\') if byte(bytes, at + 1) == Some(b'"') => {
                let content = at + 2;
                if !starts_with(bytes, content, REDACTED) {
                    found.add(content, escaped_quoted_end(bytes, content));
                }
            }
            Some(b'{' | b'[' | b'(') => self.bracketed(found, at, at, separator.escaped),
            Some(_) => {
                let mut end = self.unquoted_end(at);
                if end == at
                    || ABSENT
                        .iter()
                        .any(|absent| bytes.get(at..end) == Some(absent))
                {
                    return;
                }
                // `Authorization: Bearer abc`: the scheme and the credentials both go.
                if name.auth
                    && byte(bytes, end) == Some(b' ')
                    && byte(bytes, end + 1).is_some_and(|b| !ends_value(b))
                {
                    end = auth_params_end(bytes, end + 1);
                }
                if name.cookie {
                    end = self.cookie_pairs_end(end);
                }
                found.add(at, end);
            }
            None => {}
        }
    }

    /// Hides from `start` to the bracket that closes the one at `open`.
    fn bracketed(&mut self, found: &mut Found<'_>, start: usize, open: usize, escaped: bool) {
        // Nested in the last bracketed value: already hidden with it. Skipping it keeps
        // `key:{key:{key:{…` from scanning to the end once per name.
        if start < self.nested_end {
            return;
        }
        let end = matching_close(self.bytes, open, escaped);
        self.nested_end = end;
        found.add(start, end);
    }

    /// The end of an unquoted value starting at `at`.
    fn unquoted_end(&mut self, at: usize) -> usize {
        if let Some((start, end)) = self.unquoted
            && start <= at
            && at <= end
        {
            return end;
        }
        let end = skip(self.bytes, at, |b| !ends_value(b));
        self.unquoted = Some((at, end));
        end
    }

    /// `Cookie: a=b; sid=c`: a cookie header's value goes on over `; name=value` pairs.
    fn cookie_pairs_end(&mut self, mut end: usize) -> usize {
        let bytes = self.bytes;
        while byte(bytes, end) == Some(b';') {
            let name = skip(bytes, end + 1, is_blank);
            let name_end = skip(bytes, name, is_name_byte);
            if name_end == name || byte(bytes, name_end) != Some(b'=') {
                break;
            }
            end = self.unquoted_end(name_end + 1);
        }
        end
    }
}

/// A Rust type name at `at` (`Some`, `Secret`): its end, or `at` when there is none.
fn type_name_end(bytes: &[u8], at: usize) -> usize {
    if byte(bytes, at).is_some_and(|b| b.is_ascii_uppercase()) {
        skip(bytes, at + 1, |b| b.is_ascii_alphanumeric() || b == b'_')
    } else {
        at
    }
}

/// The end of the credentials after an auth scheme, from `at`: a single token (`Basic dXNl`)
/// or a parameter list (`Digest username="u", response="…"`,
/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=a;b, Signature=…`).
fn auth_params_end(bytes: &[u8], mut at: usize) -> usize {
    loop {
        at = skip(bytes, at, |b| b == b';' || !ends_value(b));
        // `name="quoted value"`
        if byte(bytes, at) == Some(b'"')
            && at.checked_sub(1).and_then(|p| byte(bytes, p)) == Some(b'=')
        {
            let close = quoted_end(bytes, at + 1, b'"');
            if byte(bytes, close) != Some(b'"') {
                return close;
            }
            at = close + 1;
            continue;
        }
        // `, name=` goes on with the next parameter.
        if byte(bytes, at) != Some(b',') {
            return at;
        }
        let name = skip(bytes, at + 1, is_blank);
        let name_end = skip(bytes, name, is_name_byte);
        if name_end == name || byte(bytes, name_end) != Some(b'=') {
            return at;
        }
        at = name_end;
    }
}

/// Where a value quoted with `quote` ends, from just after the opening quote: the closing
/// quote, or the end of the line or text when it is cut off. `\` escapes the next byte.
fn quoted_end(bytes: &[u8], from: usize, quote: u8) -> usize {
    let mut at = from;
    while let Some(b) = byte(bytes, at) {
        if b == quote || b == b'\n' || b == b'\r' {
            return at;
        }
        at += if b == b'\\' { 2 } else { 1 };
    }
    bytes.len()
}

/// Where a value quoted with `\"` ends (JSON nested in a JSON string), from just after the
/// opening `\"`: the `\` of the closing `\"`, or a bare `"` or line end that cuts it off.
/// The nested string's own escapes are `\\` and `\\\"`.
fn escaped_quoted_end(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    let mut nested_escape = false;
    while let Some(b) = byte(bytes, at) {
        match b {
            b'"' | b'\n' | b'\r' => return at,
            b'\\' => {
                let Some(escaped) = byte(bytes, at + 1) else {
                    return bytes.len();
                };
                if nested_escape {
                    nested_escape = false;
                } else if escaped == b'"' {
                    return at;
                } else if escaped == b'\\' {
                    nested_escape = true;
                }
                at += 2;
            }
            _ => {
                nested_escape = false;
                at += 1;
            }
        }
    }
    bytes.len()
}

/// Just past the bracket that closes the one at `open` (`{`, `[` or `(`), skipping quoted
/// strings; the end of the text when it never closes.
fn matching_close(bytes: &[u8], open: usize, escaped: bool) -> usize {
    let mut depth = 0usize;
    let mut at = open;
    while let Some(b) = byte(bytes, at) {
        match b {
            // In JSON nested in a string, a bare quote ends the string around it all.
            b'"' if escaped => return at,
            b'"' | b'\'' => {
                at = quoted_end(bytes, at + 1, b) + 1;
                continue;
            }
            b'\\' if escaped && byte(bytes, at + 1) == Some(b'"') => {
                let close = escaped_quoted_end(bytes, at + 2);
                if byte(bytes, close) != Some(b'\\') {
                    return close;
                }
                at = close + 2;
                continue;
            }
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return at + 1;
                }
            }
            _ => {}
        }
        at += 1;
    }
    bytes.len()
}

// ---------------------------------------------------------------------------------------------
// XML elements: `<SecretAccessKey>…</SecretAccessKey>` in AWS-style error bodies

fn xml_elements(found: &mut Found<'_>) {
    let bytes = found.text.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == b'<'))
    {
        let open = from + offset;
        from = open + 1;
        // `<Name>` exactly: no attributes, so that only an element is read as one.
        let name_end = skip(bytes, from, |b| is_name_byte(b) || b == b':');
        let Some(name) = bytes.get(from..name_end).filter(|name| !name.is_empty()) else {
            continue;
        };
        if byte(bytes, name_end) != Some(b'>') || secret_name(name).is_none() {
            continue;
        }
        let value = name_end + 1;
        let value_end = skip(bytes, value, |b| b != b'<');
        // ... and its own closing tag right after the value.
        let closes = bytes.get(value_end..).is_some_and(|rest| {
            rest.starts_with(b"</")
                && rest.get(2..2 + name.len()) == Some(name)
                && rest.get(2 + name.len()) == Some(&b'>')
        });
        if closes && !starts_with(bytes, value, REDACTED) {
            found.add(value, value_end);
        }
        from = value_end;
    }
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens anywhere

fn bearer_tokens(found: &mut Found<'_>) {
    const BEARER: &[u8] = b"bearer";
    let bytes = found.text.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes
        .get(from..)
        .and_then(|rest| find_ignore_ascii_case(rest, BEARER))
    {
        let start = from + offset;
        from = start + BEARER.len();
        let starts_word = !start
            .checked_sub(1)
            .and_then(|p| byte(bytes, p))
            .is_some_and(is_name_byte);
        let token = skip(bytes, from, is_blank);
        if !starts_word || token == from || starts_with(bytes, token, REDACTED) {
            continue;
        }
        // The search goes on inside the token: in `Bearer (Bearer abc` the second word is
        // the one before the credentials. A token ends at whitespace, so it holds at most
        // one `bearer ` (at its end) and the search reads it only once more.
        found.add(token, skip(bytes, token, |b| !ends_value(b)));
    }
}

// ---------------------------------------------------------------------------------------------
// User and password in URLs

fn url_userinfo(found: &mut Found<'_>) {
    const SEPARATOR: &[u8] = b"://";
    let bytes = found.text.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes.get(from..).and_then(|rest| {
        rest.windows(SEPARATOR.len())
            .position(|window| window == SEPARATOR)
    }) {
        let start = from + offset + SEPARATOR.len();
        let end = skip(bytes, start, |b| !ends_authority(b));
        // The last `@`: a password written with a bare `@` is still hidden whole.
        let user_end = bytes
            .get(start..end)
            .and_then(|authority| authority.iter().rposition(|&b| b == b'@'))
            .map(|at| start + at)
            .or_else(|| password_with_delimiters(bytes, start, end));
        if let Some(user_end) = user_end
            && bytes
                .get(start..user_end)
                .is_some_and(|user| user.contains(&b':'))
        {
            found.add(start, user_end);
        }
        // The `/` that ended this authority may be the first of the next `://`
        // (`x://a(https://u:p@h`), whose `:` is the byte before it.
        from = end.saturating_sub(1).max(start);
    }
}

/// Where the userinfo ends when a connection string's password holds a raw `/` or `#`
/// (`postgres://app:pa/ss@db`, `redis://:s3cr#t@cache`), which end a proper authority: the
/// last `@` before the query or the end of the URL, when a `:` comes before the first `/`
/// and what follows it is not a port (`https://host:8080/@scope` has no password).
fn password_with_delimiters(bytes: &[u8], start: usize, end: usize) -> Option<usize> {
    if !matches!(byte(bytes, end), Some(b'/' | b'#')) {
        return None;
    }
    let url_end = skip(bytes, start, |b| {
        !(b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`' | b'?' | b'['))
    });
    let at = start
        + bytes
            .get(start..url_end)?
            .iter()
            .rposition(|&b| b == b'@')?;
    let colon = start + bytes.get(start..end)?.iter().position(|&b| b == b':')?;
    let after_colon = bytes.get(colon + 1..at)?;
    let up_to_slash = after_colon
        .iter()
        .position(|&b| b == b'/' || b == b'#')
        .map_or(after_colon, |cut| {
            after_colon.get(..cut).unwrap_or_default()
        });
    // Nothing before the `/` (`a(https://u:p@h`: another URL starts there) or only digits
    // (a port) is no password.
    let is_password = !up_to_slash.is_empty() && !up_to_slash.iter().all(u8::is_ascii_digit);
    is_password.then_some(at)
}

/// Ends the authority part of a URL. `[` is among them so that a `[REDACTED]` standing
/// there ends it too, and redacting twice finds nothing new.
fn ends_authority(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'/' | b'?'
                | b'#'
                | b'['
                | b']'
                | b'"'
                | b'<'
                | b'>'
                | b'\\'
                | b'`'
                | b'{'
                | b'}'
                | b'|'
                | b'^'
        )
}

// ---------------------------------------------------------------------------------------------
// Well-known key shapes

/// Keys recognisable by their shape: a prefix, then at least `min` bytes of `body`.
struct Shape {
    prefixes: &'static [&'static str],
    body: fn(u8) -> bool,
    min: usize,
}

const SHAPES: &[Shape] = &[
    // Google API keys.
    Shape {
        prefixes: &["AIza"],
        body: is_key_byte,
        min: 35,
    },
    // OpenAI (`sk-proj-…`) and Anthropic (`sk-ant-…`).
    Shape {
        prefixes: &["sk-"],
        body: is_key_byte,
        min: 20,
    },
    // Stripe secret and restricted keys.
    Shape {
        prefixes: &["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        body: is_alphanumeric,
        min: 16,
    },
    // AWS access key ids, long-term and temporary.
    Shape {
        prefixes: &["AKIA", "ASIA"],
        body: is_upper_or_digit,
        min: 16,
    },
    // GitHub tokens.
    Shape {
        prefixes: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        body: is_alphanumeric,
        min: 36,
    },
    Shape {
        prefixes: &["github_pat_"],
        body: is_alphanumeric_or_underscore,
        min: 22,
    },
    // Slack tokens.
    Shape {
        prefixes: &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"],
        body: is_alphanumeric_or_dash,
        min: 10,
    },
];

fn key_shapes(found: &mut Found<'_>) {
    let bytes = found.text.as_bytes();
    let mut at = 0;
    let mut after_key_byte = false;
    while let Some(b) = byte(bytes, at) {
        // A key starts a word: `xAIza…` is something else.
        if !after_key_byte && let Some(end) = key_at(bytes, at) {
            found.add(at, end);
            at = end;
            after_key_byte = true;
            continue;
        }
        after_key_byte = is_key_byte(b);
        at += 1;
    }
}

/// The end of a key starting at `at`. The whole word goes, so that what follows it is
/// never a key byte (and a second pass finds no new word start).
fn key_at(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = bytes.get(at..)?;
    if !matches!(rest.first(), Some(b'A' | b's' | b'r' | b'g' | b'x' | b'e')) {
        return None;
    }
    for shape in SHAPES {
        for prefix in shape.prefixes {
            if rest.starts_with(prefix.as_bytes()) {
                let body = at + prefix.len();
                if skip(bytes, body, shape.body) - body >= shape.min {
                    return Some(skip(bytes, at, is_key_byte));
                }
            }
        }
    }
    jwt_end(bytes, at)
}

/// A JWT: `eyJ…` (header) `.eyJ…` (payload) `.…` (signature, maybe empty), base64url.
/// Further `.…` parts go with it: a JWE has five, and a match one part early must not
/// leave the last one showing.
fn jwt_end(bytes: &[u8], at: usize) -> Option<usize> {
    let part = |at: usize| starts_with(bytes, at, "eyJ").then(|| skip(bytes, at + 3, is_key_byte));
    let header_end = part(at)?;
    let payload_end = part(header_end + 1).filter(|_| byte(bytes, header_end) == Some(b'.'))?;
    if byte(bytes, payload_end) != Some(b'.') {
        return None;
    }
    let mut end = skip(bytes, payload_end + 1, is_key_byte);
    while byte(bytes, end) == Some(b'.') && byte(bytes, end + 1).is_some_and(is_key_byte) {
        end = skip(bytes, end + 1, is_key_byte);
    }
    Some(end)
}

// ---------------------------------------------------------------------------------------------
// The application's own secrets and rules

type OwnRule = dyn Fn(&str) -> Vec<Range<usize>> + Send + Sync;

/// What [`add_secret`] and [`add_rule`] registered.
#[derive(Default, Clone)]
struct Own {
    secrets: Vec<String>,
    rules: Vec<Arc<OwnRule>>,
}

/// Set once anything was registered: until then, redacting takes no lock.
static HAS_OWN: AtomicBool = AtomicBool::new(false);
/// Replaced whole on each change, so a redaction holds the lock only to clone the `Arc`.
static OWN: RwLock<Option<Arc<Own>>> = RwLock::new(None);

fn change_own(change: impl FnOnce(&mut Own)) {
    // A panic elsewhere while the lock was held leaves a complete `Arc`: use it.
    let mut current = OWN.write().unwrap_or_else(PoisonError::into_inner);
    let mut own = current.as_deref().cloned().unwrap_or_default();
    change(&mut own);
    *current = Some(Arc::new(own));
    HAS_OWN.store(true, Ordering::Release);
}

fn own_rules(found: &mut Found<'_>) {
    if !HAS_OWN.load(Ordering::Acquire) {
        return;
    }
    let own = OWN.read().unwrap_or_else(PoisonError::into_inner).clone();
    let Some(own) = own else {
        return;
    };
    let text = found.text;
    // What is already `[REDACTED]` stays as it is, so that a rule matching inside it (a
    // secret `RED`, a rule hiding every `[`) leaves a second pass with nothing new.
    let kept: Vec<(usize, usize)> = text
        .match_indices(REDACTED)
        .map(|(at, hidden)| (at, at + hidden.len()))
        .collect();
    for secret in &own.secrets {
        for (at, _) in text.match_indices(secret.as_str()) {
            add_outside(found, at, at + secret.len(), &kept);
        }
    }
    for rule in &own.rules {
        for range in rule(text) {
            add_outside(found, range.start, range.end, &kept);
        }
    }
}

/// Hides `start..end` (cut to the text, widened to whole characters) except the `kept` spans.
fn add_outside(found: &mut Found<'_>, start: usize, end: usize, kept: &[(usize, usize)]) {
    let Some((mut start, end)) = found.whole_chars(start, end) else {
        return;
    };
    let first = kept.partition_point(|&(_, kept_end)| kept_end <= start);
    for &(kept_start, kept_end) in kept.get(first..).unwrap_or_default() {
        if kept_start >= end {
            break;
        }
        found.add(start, kept_start);
        start = start.max(kept_end);
    }
    found.add(start, end);
}

// ---------------------------------------------------------------------------------------------
// Bytes

fn byte(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

fn starts_with(bytes: &[u8], at: usize, prefix: &str) -> bool {
    bytes
        .get(at..)
        .is_some_and(|rest| rest.starts_with(prefix.as_bytes()))
}

/// A byte of a name: `X-Amz-Signature`, `api_key`, `client.secret`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// A byte of a key or token shape (and of base64url).
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

fn is_alphanumeric(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_alphanumeric_or_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_alphanumeric_or_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn is_upper_or_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Ends an unquoted value: in a query string (`&`, `#`), a header line, JSON or `Debug`
/// output (`,`, `}`, `]`, `)`), or the text around it.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'&' | b'"' | b'\'' | b',' | b';' | b')' | b'}' | b']' | b'>' | b'#'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_elements_named_as_secrets_are_hidden() {
        let body = "<Error><Code>InvalidAccessKeyId</Code><SecretAccessKey>wJalrXUtnFEMI</SecretAccessKey><SessionToken>FwoGZX</SessionToken><SignatureProvided>abc123</SignatureProvided><RequestId>4442587FB7D0A2F9</RequestId></Error>";
        let out = redact(body);
        for secret in ["wJalrXUtnFEMI", "FwoGZX", "abc123"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("<Code>InvalidAccessKeyId</Code>"), "{out}");
        assert!(
            out.contains("<RequestId>4442587FB7D0A2F9</RequestId>"),
            "{out}"
        );
        assert_eq!(redact(&out), out);
    }

    #[test]
    fn url_passwords_with_raw_delimiters_are_hidden() {
        assert_eq!(
            redact("postgres://app:hun/ter2@db.internal:5432/app"),
            "postgres://[REDACTED]@db.internal:5432/app"
        );
        assert_eq!(
            redact("redis://:s3cr#t@cache:6379"),
            "redis://[REDACTED]@cache:6379"
        );
        // A port before a path that holds an `@` is not a password.
        assert_eq!(
            redact("https://registry.test:8080/@scope/pkg"),
            "https://registry.test:8080/@scope/pkg"
        );
        assert_eq!(
            redact("https://h.test/users?email=bob@example.com"),
            "https://h.test/users?email=bob@example.com"
        );
    }

    #[test]
    fn a_json_value_on_the_next_line_is_hidden() {
        let body = "{\n  \"client_secret\":\n    \"GOCSPX-abcdef\"\n}";
        let out = redact(body);
        assert!(!out.contains("GOCSPX"), "{out}");
    }

    fn hidden(text: &str) -> String {
        redact(text).into_owned()
    }

    #[test]
    fn query_keys_are_redacted_and_the_rest_kept() {
        assert_eq!(
            hidden(
                "GET https://h.test/v1beta/models/gemini:generateContent?key=AIzaSy123&alt=sse failed"
            ),
            "GET https://h.test/v1beta/models/gemini:generateContent?key=[REDACTED]&alt=sse failed"
        );
        assert_eq!(
            hidden("url?api_key=abc#frag"),
            "url?api_key=[REDACTED]#frag"
        );
        assert_eq!(hidden("?KEY=abc"), "?KEY=[REDACTED]");
        assert_eq!(
            hidden("error sending request for url (https://api.test/v1?apiKey=abc&alt=json)"),
            "error sending request for url (https://api.test/v1?apiKey=[REDACTED]&alt=json)"
        );
    }

    #[test]
    fn names_are_read_by_their_words() {
        for secret in [
            "apiKey",
            "api_key",
            "APIKey",
            "access_token",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "X-Amz-Security-Token",
            "client_secret",
            "X-Api-Key",
            "x-goog-api-key",
            "Authorization",
            "Proxy-Authorization",
            "password",
            "passwd",
            "sessionId",
            "session_id",
            "cache_key",
            "refresh_token2",
            "sig",
            "--password",
        ] {
            assert_eq!(
                hidden(&format!("{secret}=v1")),
                format!("{secret}=[REDACTED]")
            );
        }
        for plain in [
            "monkey",
            "promptTokenCount",
            "key_id",
            "token_url",
            "quotaId",
            "retryDelay",
            "token_type",
            "keyboard",
            "authority",
        ] {
            assert_eq!(hidden(&format!("{plain}=v1")), format!("{plain}=v1"));
        }
    }

    #[test]
    fn text_without_secrets_is_kept_byte_for_byte() {
        for text in [
            "429 Too Many Requests",
            r#"HTTP 503: {"error": {"code": 503, "status": "UNAVAILABLE"}}"#,
            "quotaId: GenerateRequestsPerDay",
            "promptTokenCount: 12",
            "monkey=banana",
            "127.0.0.1:5003",
            "connect to https://user@h.test/a failed",
            "see std::token::Kind and key == 3",
            r#"{"api_key": null, "token": None}"#,
            "",
            "ключ: значение",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn headers_in_plain_and_debug_form() {
        assert_eq!(
            hidden("x-goog-api-key: secret123\nnext"),
            "x-goog-api-key: [REDACTED]\nnext"
        );
        assert_eq!(
            hidden(r#"{"x-goog-api-key": "secret123", "accept": "*/*"}"#),
            r#"{"x-goog-api-key": "[REDACTED]", "accept": "*/*"}"#
        );
        assert_eq!(
            hidden(r#"{"x-api-key": "abc", "accept": "*/*"}"#),
            r#"{"x-api-key": "[REDACTED]", "accept": "*/*"}"#
        );
        assert_eq!(
            hidden(r#"headers: {"authorization": "Bearer ya29.abc"}"#),
            r#"headers: {"authorization": "[REDACTED]"}"#
        );
        assert_eq!(
            hidden("Authorization: Basic dXNlcjpw"),
            "Authorization: [REDACTED]"
        );
        assert_eq!(
            hidden("Proxy-Authorization: Token abc\r\nAccept: */*"),
            "Proxy-Authorization: [REDACTED]\r\nAccept: */*"
        );
        assert_eq!(
            hidden("Cookie: theme=dark; sid=abc\nHost: h.test"),
            "Cookie: [REDACTED]\nHost: h.test"
        );
    }

    #[test]
    fn auth_parameter_lists_go_whole() {
        assert_eq!(
            hidden(
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3be\nHost: s3"
            ),
            "Authorization: [REDACTED]\nHost: s3"
        );
        assert_eq!(
            hidden(r#"Authorization: Digest username="u", nonce="n1", response="6629fae4" end"#),
            "Authorization: [REDACTED] end"
        );
    }

    #[test]
    fn json_fields_of_every_value_kind() {
        assert_eq!(
            hidden(r#"{"client_secret": "s3cr3t", "access_token": "ya29.x", "expires_in": 3599}"#),
            r#"{"client_secret": "[REDACTED]", "access_token": "[REDACTED]", "expires_in": 3599}"#
        );
        assert_eq!(
            hidden(r#"{"password":"p,w","pin_token":12345,"sessionId":abc}"#),
            r#"{"password":"[REDACTED]","pin_token":[REDACTED],"sessionId":[REDACTED]}"#
        );
        assert_eq!(
            hidden(r#"{"tokens": ["a", "b"], "credentials": {"type": "sa", "id": 1}, "n": 2}"#),
            r#"{"tokens": [REDACTED], "credentials": [REDACTED], "n": 2}"#
        );
        assert_eq!(
            hidden(r#"{"error": "{\"api_key\": \"k\\\"1\", \"code\": 401}"}"#),
            r#"{"error": "{\"api_key\": \"[REDACTED]\", \"code\": 401}"}"#
        );
    }

    #[test]
    fn debug_fields_and_their_wrappers() {
        assert_eq!(
            hidden(r#"Config { api_key: Some("abc"), retries: 3 }"#),
            r#"Config { api_key: Some("[REDACTED]"), retries: 3 }"#
        );
        assert_eq!(
            hidden(r#"Login { password: "hunter2", user: "bob" }"#),
            r#"Login { password: "[REDACTED]", user: "bob" }"#
        );
        assert_eq!(
            hidden(r#"C { token: Secret("abc"), auth: Some(Basic { user: "u", pass: "p" }) }"#),
            r#"C { token: [REDACTED], auth: Some([REDACTED]) }"#
        );
        assert_eq!(hidden("C { api_key: None }"), "C { api_key: None }");
        assert_eq!(
            hidden("C {\n    api_key: Some(\n        \"abc\",\n    ),\n}"),
            "C {\n    api_key: Some(\n        \"[REDACTED]\",\n    ),\n}"
        );
    }

    #[test]
    fn bearer_tokens_anywhere() {
        assert_eq!(
            hidden("sent bearer abc.def to server"),
            "sent bearer [REDACTED] to server"
        );
        assert_eq!(
            hidden("header was BEARER  x/y+z= then"),
            "header was BEARER  [REDACTED] then"
        );
        assert_eq!(hidden("unbearer abc"), "unbearer abc");
        assert_eq!(
            hidden("Bearer (Bearer abc&"),
            "Bearer [REDACTED] [REDACTED]&"
        );
    }

    #[test]
    fn passwords_in_urls() {
        assert_eq!(
            hidden("connect postgres://app:hunter2@db.internal:5432/app: refused"),
            "connect postgres://[REDACTED]@db.internal:5432/app: refused"
        );
        assert_eq!(
            hidden("redis://:p@ss@cache:6379"),
            "redis://[REDACTED]@cache:6379"
        );
        assert_eq!(
            hidden("https://user@h.test/a?x=u:p@q"),
            "https://user@h.test/a?x=u:p@q"
        );
        // The `/` ending one authority starts the next `://`.
        assert_eq!(
            hidden("x://a(https://u:p@h/"),
            "x://a(https://[REDACTED]@h/"
        );
    }

    #[test]
    fn google_keys_anywhere() {
        let key = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";
        assert_eq!(key.len(), 39);
        assert_eq!(hidden(&format!("bad key {key}.")), "bad key [REDACTED].");
        assert_eq!(hidden("AIza short"), "AIza short");
        assert_eq!(hidden(&format!("x{key}")), format!("x{key}"));
    }

    #[test]
    fn other_vendors_keys_anywhere() {
        assert_eq!(
            hidden(
                "Incorrect API key provided: sk-proj-abc123DEF456ghi789JKL012mno345. You can find your API key at https://platform.openai.com/account/api-keys."
            ),
            "Incorrect API key provided: [REDACTED]. You can find your API key at https://platform.openai.com/account/api-keys."
        );
        assert_eq!(
            hidden("stripe: sk_live_4eC39HqLyjWDarjtT1zdp7dc rejected"),
            "stripe: [REDACTED] rejected"
        );
        assert_eq!(
            hidden("id AKIAIOSFODNN7EXAMPLE is not valid"),
            "id [REDACTED] is not valid"
        );
        assert_eq!(
            hidden("push with ghp_16C7e42F292c6912E7710c838347Ae178B4a denied"),
            "push with [REDACTED] denied"
        );
        assert_eq!(
            hidden(
                "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS."
            ),
            "pat [REDACTED]."
        );
        assert_eq!(
            hidden(
                "slack said invalid_auth for xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
            ),
            "slack said invalid_auth for [REDACTED]"
        );
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            hidden(&format!("token {jwt} expired")),
            "token [REDACTED] expired"
        );
        assert_eq!(
            hidden("unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. ok"),
            "unsigned [REDACTED] ok"
        );
        // A JWE's five parts, and a match that starts one part early, go whole.
        assert_eq!(
            hidden("jwe eyJhbGci.eyJlbmMi.a1.b2.c3 ok"),
            "jwe [REDACTED] ok"
        );
        assert_eq!(hidden("eyJ.eyJa.eyJb.c ok"), "[REDACTED] ok");
    }

    #[test]
    fn an_aws_presigned_url() {
        let url = "GET https://b.s3.amazonaws.com/photo.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/s3/aws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=abcdef0123456789 failed";
        assert_eq!(
            hidden(url),
            "GET https://b.s3.amazonaws.com/photo.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=[REDACTED]&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=[REDACTED] failed"
        );
    }

    #[test]
    fn own_secrets_and_rules() {
        add_secret("");
        add_secret("tenant-own-secret-5c1e");
        add_secret("tenant-own-secret-5c1e");
        assert_eq!(
            hidden("a tenant-own-secret-5c1e b tenant-own-secret-5c1e"),
            "a [REDACTED] b [REDACTED]"
        );
        add_rule(|text| {
            text.match_indices("acct#")
                .map(|(at, _)| at..at + 9)
                .collect()
        });
        assert_eq!(
            hidden("owner acct#4711 said no"),
            "owner [REDACTED] said no"
        );
        // Whatever a rule returns is made safe.
        add_rule(|text| {
            if text.contains("wild-rule-7a9") {
                vec![
                    Range { start: 5, end: 3 }, // reversed
                    0..0,
                    40..usize::MAX,
                    1..2, // inside `ä`
                    usize::MAX..usize::MAX,
                ]
            } else {
                Vec::new()
            }
        });
        let out = hidden("äwild-rule-7a9 and more text here, long enough!");
        assert!(out.starts_with("[REDACTED]wild-rule-7a9"), "{out}");
        assert!(out.ends_with("here, long[REDACTED]"), "{out}");
        // A secret inside `[REDACTED]` leaves it as it is.
        add_secret("EDACT");
        assert_eq!(hidden("EDACT alone"), "[REDACTED] alone");
        assert_eq!(hidden("key=[REDACTED] x"), "key=[REDACTED] x");
    }

    #[test]
    fn redacting_twice_is_redacting_once() {
        for text in [
            "url?key=AIzaSy-secret&x=1",
            "x-goog-api-key: secret",
            "Authorization: Bearer abc",
            "sent bearer abc",
            r#"{"authorization": "Basic dXNl"}"#,
            "key=ab[REDACTED]c",
            "a://u:p,key=ab/c&@h",
            r#"a://u:p,key="x y"@h"#,
            "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI.key=v",
            r#"password="a key="b" c""#,
            "C { token: Secret([REDACTED]) }",
        ] {
            let once = hidden(text);
            assert_eq!(hidden(&once), once, "{text}");
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
        assert_eq!(hidden(text), "x-goog-api-key=[REDACTED]&key=[REDACTED]");
        for cut in 0..text.len() {
            let _ = redact(&text[..cut]);
        }
        let _ = redact("ключ key=значение");
        assert_eq!(
            hidden("ключ key=значение дальше"),
            "ключ key=[REDACTED] дальше"
        );
    }

    #[test]
    fn a_megabyte_is_read_in_linear_time() {
        let started = std::time::Instant::now();
        for unit in [
            "key=",
            "key:{",
            "key:[",
            "key: Secret(",
            "password=\"",
            "\\\"token\\\":\\\"",
            "Authorization: Basic a,b=",
            "Cookie: a=b;",
            "bearer ",
            "a://u:p@",
            "AIza",
            "eyJa.eyJb.",
            "sk-aaaaaaaaaaaaaaaaaaa ",
            "x",
            "Authorization: Basic a ",
            "auth=x y,",
            "key: Some(",
            "key:'",
            "\\\"k\\\": {",
            "key=\\\"",
            "a=\"b",
            "Cookie: a=b; c=d ",
            "x-api-key: (",
            "{\"token\": [",
            "key:{\"",
            "key:{'",
        ] {
            let text = unit.repeat((1 << 20) / unit.len());
            let _ = redact(&text);
        }
        // Quadratic work on a megabyte would take minutes.
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    }
}
