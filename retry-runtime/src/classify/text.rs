//! The text rule, read as words: whether an error's text says another attempt may help.
//!
//! The Python original's rule is "the text contains 429, 503, 500, timeout, timed out, connection,
//! reset or refused". Read as substrings it retries ``missing field `timeout_seconds` `` and a
//! 400 on `/v1/password-reset`, so here the text is read as words:
//! - a word is a maximal run of ASCII letters, digits and `_`, also split where a lower-case
//!   letter meets an upper-case one (`ConnectionResetError` is three words, `timeout_seconds`
//!   and `HTTPError` are one); anything else, non-ASCII included, separates words;
//! - [`has_retryable_word`]: a word is `timeout`, `connection`, `reset`, `refused` or one of
//!   [`RETRYABLE_CODES`], or two neighbouring words are `timed` `out`; ASCII case-insensitive;
//! - [`stated_status`]: a 3-digit number 100..=599 right after a status label (`status:`,
//!   `HTTP/1.1`, `"code":` …) or right before its reason phrase (`404 Not Found`);
//! - text inside a URL (from `scheme://` to the first whitespace, quote, `<`, `>`, `)`, `]`
//!   or `}`) decides nothing: a path says what was asked for, not what went wrong.
//!
//! [`by_text`] asks [`stated_status`] first and decides by the status table; a text that
//! states no error status falls back to [`has_retryable_word`].
//!
//! Both are one pass over the text with bounded look-around and no allocation: they run after
//! a failed attempt, on texts that can be whole response bodies.

use std::ops::Range;

use super::{Verdict, by_status};

/// The text rule on one message: a stated error status decides by [`by_status`]; otherwise a
/// retryable word or code makes it [`Verdict::Retryable`]; otherwise [`Verdict::Unknown`]
/// (text alone never forbids a retry, it only fails to call for one).
///
/// ```
/// use resilience::{Verdict, classify::by_text};
///
/// assert_eq!(by_text("HTTP 503 Service Unavailable"), Verdict::Retryable);
/// assert_eq!(by_text("ConnectionResetError: [Errno 104] Connection reset by peer"), Verdict::Retryable);
/// assert_eq!(by_text("400 Bad Request: timeout must be positive"), Verdict::NotRetryable);
/// assert_eq!(by_text("missing field `timeout_seconds`"), Verdict::Unknown);
/// assert_eq!(by_text("prompt is 5000 tokens long"), Verdict::Unknown);
/// ```
pub fn by_text(text: &str) -> Verdict {
    match stated_status(text).map(by_status) {
        Some(Verdict::Retryable) => Verdict::Retryable,
        Some(Verdict::NotRetryable) => Verdict::NotRetryable,
        Some(Verdict::Unknown) | None if has_retryable_word(text) => Verdict::Retryable,
        Some(Verdict::Unknown) | None => Verdict::Unknown,
    }
}

/// The codes that are retryable by text: the typed status rule's.
pub const RETRYABLE_CODES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Whole words that say a retry may help. Other forms (`connections`, `timeouts`, `resets`)
/// are other words and do not: `/connections` or `max_resets` name things, they do not report
/// a failure, and each extra form would be one more way for a field name to match. The errno
/// names are single words that clients (Node's, curl's) print for the same failures.
const KEYWORDS: [&str; 8] = [
    "timeout",
    "connection",
    "reset",
    "refused",
    "econnreset",
    "econnrefused",
    "econnaborted",
    "etimedout",
];

/// Words that, right before a number, make it a status: `status: 404`, `"code": 429`,
/// `HTTP 503`. `status code` and `statusCode` end in the word `code`, `http status` in
/// `status`; `HTTP/1.1` is matched apart, in [`follows_label`].
const STATUS_LABELS: [&str; 5] = ["status", "code", "status_code", "statuscode", "http"];

/// What may stand between a number and its reason phrase: `404 Not Found`, `(404)Not Found`,
/// `404 (Not Found)`. Only these, so `took 400 ms, not found` keeps its number a number.
const PHRASE_GAPS: [&[u8]; 5] = [b" ", b"(", b" (", b")", b") "];

/// The reason phrases that make a number before them a status. Every 4xx and 5xx of RFC 9110
/// and of the `http` crate's canonical reasons (what reqwest prints), older names still in
/// the wild, gRPC's `Resource Exhausted` for 429, nginx's `Time-out`; and the common 2xx/3xx
/// ones, so that a stated `200 OK` is a status too (the caller takes it as "no answer").
const REASON_PHRASES: [(u16, &str); 59] = [
    (200, "OK"),
    (201, "Created"),
    (202, "Accepted"),
    (204, "No Content"),
    (206, "Partial Content"),
    (301, "Moved Permanently"),
    (302, "Found"),
    (303, "See Other"),
    (304, "Not Modified"),
    (307, "Temporary Redirect"),
    (308, "Permanent Redirect"),
    (400, "Bad Request"),
    (401, "Unauthorized"),
    (402, "Payment Required"),
    (403, "Forbidden"),
    (404, "Not Found"),
    (405, "Method Not Allowed"),
    (406, "Not Acceptable"),
    (407, "Proxy Authentication Required"),
    (408, "Request Timeout"),
    (408, "Request Time-out"),
    (409, "Conflict"),
    (410, "Gone"),
    (411, "Length Required"),
    (412, "Precondition Failed"),
    (413, "Content Too Large"),
    (413, "Payload Too Large"),
    (413, "Request Entity Too Large"),
    (414, "URI Too Long"),
    (414, "Request-URI Too Long"),
    (415, "Unsupported Media Type"),
    (416, "Range Not Satisfiable"),
    (416, "Requested Range Not Satisfiable"),
    (417, "Expectation Failed"),
    (418, "I'm a teapot"),
    (421, "Misdirected Request"),
    (422, "Unprocessable Content"),
    (422, "Unprocessable Entity"),
    (423, "Locked"),
    (424, "Failed Dependency"),
    (425, "Too Early"),
    (426, "Upgrade Required"),
    (428, "Precondition Required"),
    (429, "Too Many Requests"),
    (429, "Resource Exhausted"),
    (431, "Request Header Fields Too Large"),
    (451, "Unavailable For Legal Reasons"),
    (500, "Internal Server Error"),
    (501, "Not Implemented"),
    (502, "Bad Gateway"),
    (503, "Service Unavailable"),
    (504, "Gateway Timeout"),
    (504, "Gateway Time-out"),
    (505, "HTTP Version Not Supported"),
    (506, "Variant Also Negotiates"),
    (507, "Insufficient Storage"),
    (508, "Loop Detected"),
    (510, "Not Extended"),
    (511, "Network Authentication Required"),
];

/// Whether the text holds one of the retryable keywords or codes as whole words (outside URLs).
///
/// The keywords are `timeout`, `connection`, `reset`, `refused` and the two neighbouring
/// words `timed` `out` (`timed out`, `timed-out`, `TimedOut`); the codes are
/// [`RETRYABLE_CODES`]. Matching ignores ASCII case; `timeout_seconds`, `5000x500` and
/// `connections` are other words.
pub fn has_retryable_word(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut after_timed = false;
    Words::new(text).any(|word| {
        // `gap` is `None` when a URL stood between: then `timed` was not this word's neighbour.
        let timed_out = after_timed && word.gap.is_some() && word.text.eq_ignore_ascii_case(b"out");
        after_timed = word.text.eq_ignore_ascii_case(b"timed");
        // A word alone in backticks or single quotes names something (serde's
        // ``missing field `timeout` ``, Python's `KeyError: 'timeout'`): it reports no failure.
        let quoted = matches!(
            (word.gap.and_then(<[u8]>::last), bytes.get(word.end)),
            (Some(b'`'), Some(b'`')) | (Some(b'\''), Some(b'\''))
        );
        timed_out
            || (!quoted
                && KEYWORDS
                    .iter()
                    .any(|keyword| word.text.eq_ignore_ascii_case(keyword.as_bytes())))
            || three_digits(word.text).is_some_and(|code| RETRYABLE_CODES.contains(&code))
    })
}

/// The HTTP status an error text states, if it states one (outside URLs): the first found.
///
/// A status is a whole-word number 100..=599 that either follows a status label (`status`,
/// `status code`, `statusCode`, `status_code`, `code`, `HTTP`, `http status`, or `HTTP/`
/// with a one-digit or `digit.digit` version: `HTTP/2`, `HTTP/1.1`) with only spaces, `:`,
/// `=`, `"` or `'` between, or is followed, after one space or a `(`/`)`, by its reason
/// phrase (`404 Not Found`, `(429 Too Many Requests)`), ASCII case-insensitive.
/// `took 400 ms`, `500 items` and `port 503` state nothing.
pub fn stated_status(text: &str) -> Option<u16> {
    let bytes = text.as_bytes();
    let mut words = Words::new(text);
    // The last three words, the latest last: enough for `HTTP` `1` `1` before a number.
    let mut recent: [Option<Word<'_>>; 3] = [None; 3];
    while let Some(word) = words.next() {
        if let Some(code) = three_digits(word.text).filter(|code| (100..=599).contains(code)) {
            // The phrase must end before the next URL starts: a URL decides nothing.
            if follows_label(&word, &recent)
                || reason_follows(bytes, word.end, code, words.next_url_start())
            {
                return Some(code);
            }
        }
        let [_, older, latest] = recent;
        recent = [older, latest, Some(word)];
    }
    None
}

/// Whether `number` stands right after a status label, `recent` being the words before it.
fn follows_label(number: &Word<'_>, recent: &[Option<Word<'_>>; 3]) -> bool {
    let label_gap = |gap: Option<&[u8]>| {
        gap.is_some_and(|gap| {
            gap.iter()
                .all(|byte| matches!(byte, b' ' | b':' | b'=' | b'"' | b'\''))
        })
    };
    if !label_gap(number.gap) {
        return false;
    }
    let is = |word: &Option<Word<'_>>, name: &str| {
        word.is_some_and(|word| word.text.eq_ignore_ascii_case(name.as_bytes()))
    };
    let digit = |word: &Option<Word<'_>>| {
        word.is_some_and(|word| matches!(word.text, [digit] if digit.is_ascii_digit()))
    };
    // A link's `gap` is `None` after a URL, so no label is read across one.
    let gap_is =
        |word: &Option<Word<'_>>, gap: &[u8]| word.is_some_and(|word| word.gap == Some(gap));
    let [third, second, last] = recent;
    STATUS_LABELS.iter().any(|label| is(last, label))
        // `HTTP/2 503`
        || (digit(last) && gap_is(last, b"/") && is(second, "http"))
        // `HTTP/1.1 503`
        || (digit(last)
            && gap_is(last, b".")
            && digit(second)
            && gap_is(second, b"/")
            && is(third, "http"))
}

/// Whether a reason phrase of `code` follows the number ending at `end`, before `limit`.
fn reason_follows(bytes: &[u8], end: usize, code: u16, limit: usize) -> bool {
    let Some(rest) = bytes.get(end..) else {
        return false;
    };
    PHRASE_GAPS.iter().any(|gap| {
        rest.starts_with(gap)
            && REASON_PHRASES
                .iter()
                .any(|&(of, phrase)| of == code && phrase_at(bytes, end + gap.len(), phrase, limit))
    })
}

/// Whether the words of `phrase` stand from `at`, as whole words, before `limit`.
///
/// Between two of them: one space, `-` or `'` (whichever the table writes: `Time-out` and
/// `Time out` are the same phrase), or nothing where the case splits (`NotFound`, as
/// enum-like texts write it).
fn phrase_at(bytes: &[u8], mut at: usize, phrase: &str, limit: usize) -> bool {
    let mut first = true;
    for name in phrase
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|name| !name.is_empty())
    {
        if !first {
            match bytes.get(at) {
                Some(b' ' | b'-' | b'\'') => at += 1,
                // `word_at` ended the last word here, so a word byte means a case split.
                Some(&byte) if is_word_byte(byte) => {}
                _ => return false,
            }
        }
        first = false;
        if !word_at(bytes, at, name.as_bytes(), limit) {
            return false;
        }
        at += name.len();
    }
    !first
}

/// Whether the word starting at `at` is `name` (ASCII case-insensitive), ending by `limit`.
/// `at` must be where a word starts; the end is checked here.
fn word_at(bytes: &[u8], at: usize, name: &[u8], limit: usize) -> bool {
    let Some(end) = at.checked_add(name.len()).filter(|&end| end <= limit) else {
        return false;
    };
    let Some(found) = bytes.get(at..end) else {
        return false;
    };
    let split_inside = found
        .windows(2)
        .any(|pair| matches!(pair, &[before, after] if case_split(before, after)));
    let before_end = end.checked_sub(1).and_then(|last| bytes.get(last));
    let ends_here = match (before_end, bytes.get(end)) {
        (Some(&before), Some(&after)) => !is_word_byte(after) || case_split(before, after),
        _ => true,
    };
    found.eq_ignore_ascii_case(name) && !split_inside && ends_here
}

/// The value of a word of exactly three ASCII digits.
fn three_digits(word: &[u8]) -> Option<u16> {
    match *word {
        [a, b, c] if word.iter().all(u8::is_ascii_digit) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// A lower-case letter followed by an upper-case one starts a new word: `ReadTimeout`.
fn case_split(before: u8, after: u8) -> bool {
    before.is_ascii_lowercase() && after.is_ascii_uppercase()
}

fn is_scheme_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'.' | b'-')
}

/// One word of a text, outside URLs.
#[derive(Clone, Copy)]
struct Word<'a> {
    text: &'a [u8],
    /// Where it ends in the text.
    end: usize,
    /// What stands between the previous word and this one; `None` when a URL does, so that
    /// the two are not neighbours.
    gap: Option<&'a [u8]>,
}

/// The words of a text, skipping URLs and paths. Word boundaries are at ASCII bytes only, so
/// every range handed out lies on `char` boundaries.
struct Words<'a> {
    text: &'a str,
    at: usize,
    last_end: usize,
    crossed_url: bool,
    /// The next URL and the next path at or after `at`; each found lazily, one ahead, so the
    /// text is read a bounded number of times in all.
    url: Option<Range<usize>>,
    path: Option<Range<usize>>,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Words {
            text,
            at: 0,
            last_end: 0,
            crossed_url: false,
            url: find_url(text, 0),
            path: find_path(text, 0),
        }
    }

    /// The next text to skip: the nearer of the next URL and the next path.
    fn next_skip(&self) -> Option<&Range<usize>> {
        match (&self.url, &self.path) {
            (Some(url), Some(path)) => Some(if path.start < url.start { path } else { url }),
            (url, path) => url.as_ref().or(path.as_ref()),
        }
    }

    /// Where the next URL or path starts (the end of the text if none): nothing is read past
    /// it.
    fn next_url_start(&self) -> usize {
        self.next_skip().map_or(self.text.len(), |skip| skip.start)
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = Word<'a>;

    fn next(&mut self) -> Option<Word<'a>> {
        let bytes = self.text.as_bytes();
        loop {
            let limit = self.next_url_start();
            while self.at < limit && !bytes.get(self.at).copied().is_some_and(is_word_byte) {
                self.at += 1;
            }
            if self.at < limit {
                break;
            }
            // At a URL or a path (or the end of the text): step over it, and look again for
            // what now lies behind.
            let skip = self.next_skip()?.clone();
            self.at = skip.end.max(self.at);
            self.crossed_url = true;
            if self.url.as_ref().is_some_and(|url| url.start < self.at) {
                self.url = find_url(self.text, self.at);
            }
            if self.path.as_ref().is_some_and(|path| path.start < self.at) {
                self.path = find_path(self.text, self.at);
            }
        }
        let start = self.at;
        let limit = self.next_url_start();
        self.at += 1;
        while self.at < limit
            && matches!(
                (bytes.get(self.at - 1), bytes.get(self.at)),
                (Some(&before), Some(&byte)) if is_word_byte(byte) && !case_split(before, byte)
            )
        {
            self.at += 1;
        }
        let gap = if std::mem::take(&mut self.crossed_url) {
            None
        } else {
            Some(bytes.get(self.last_end..start).unwrap_or_default())
        };
        self.last_end = self.at;
        Some(Word {
            text: bytes.get(start..self.at).unwrap_or_default(),
            end: self.at,
            gap,
        })
    }
}

/// The first URL starting at or after `from`: a scheme (`[A-Za-z][A-Za-z0-9+.-]*`) and
/// `://`, up to the first whitespace, quote, backtick, `<`, `>`, `)`, `]` or `}` (so a URL
/// in `for url (…)` ends at the parenthesis).
///
/// Linear over calls that go forward: every `://` tried is searched once, and the scheme
/// walked back over contains no `:`, so it was not walked over for an earlier `://`.
fn find_url(text: &str, from: usize) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let mut search = from;
    loop {
        let colon = search
            + bytes
                .get(search..)?
                .windows(3)
                .position(|window| window == b"://")?;
        let mut scheme = colon;
        while scheme > from && bytes.get(scheme - 1).copied().is_some_and(is_scheme_byte) {
            scheme -= 1;
        }
        // A scheme starts with a letter: in `5http://` the URL is `http://`.
        if let Some(letter) = bytes
            .get(scheme..colon)?
            .iter()
            .position(u8::is_ascii_alphabetic)
        {
            return Some(scheme + letter..url_end(text, colon + 3));
        }
        search = colon + 1;
    }
}

/// The first path starting at or after `from`, written without a scheme: a `/` that starts
/// a word (at the start, or after whitespace, `(`, `[` or a quote) followed by a path
/// character, as in `POST /v1/password-reset failed`. `I/O timeout` and `read / write` are
/// not paths.
fn find_path(text: &str, from: usize) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let mut search = from;
    loop {
        let slash = search + bytes.get(search..)?.iter().position(|&b| b == b'/')?;
        let starts_word = slash == 0
            || bytes.get(slash - 1).is_some_and(|&b| {
                b.is_ascii_whitespace() || matches!(b, b'(' | b'[' | b'"' | b'\'' | b'`')
            });
        let then_path = bytes
            .get(slash + 1)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-'));
        if starts_word && then_path {
            return Some(slash..url_end(text, slash + 1));
        }
        search = slash + 1;
    }
}

/// Where a URL whose text goes on at `from` ends.
fn url_end(text: &str, from: usize) -> usize {
    text.get(from..)
        .and_then(|rest| {
            rest.char_indices().find(|&(_, c)| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | ']' | '}')
            })
        })
        .map_or(text.len(), |(offset, _)| from + offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `by_text` makes of a text, in the tests' words.
    #[derive(Debug, PartialEq, Eq)]
    enum Reading {
        Retry,
        /// A stated 4xx/5xx that is not retryable.
        DoNotRetry,
        /// No rule knows: no error status and no retryable word.
        NoAnswer,
    }
    use Reading::*;

    fn classify(text: &str) -> Reading {
        match by_text(text) {
            super::Verdict::Retryable => Retry,
            super::Verdict::NotRetryable => DoNotRetry,
            super::Verdict::Unknown => NoAnswer,
        }
    }

    #[track_caller]
    fn check(cases: &[(&str, Reading)]) {
        for (text, expected) in cases {
            assert_eq!(&classify(text), expected, "{text:?}");
        }
    }

    #[test]
    fn design_note_rows_classify_as_the_note_says() {
        check(&[
            ("429 Resource Exhausted", Retry),
            ("503 Service Unavailable", Retry),
            ("500 Internal Server Error", Retry),
            ("request timeout", Retry),
            ("operation timed out", Retry),
            ("connection reset by peer", Retry),
            ("Connection refused", Retry),
            ("connection error", Retry),
            ("401 Unauthorized: API key not valid", DoNotRetry),
            ("400 Bad Request", DoNotRetry),
            ("ValueError: Invalid image format", NoAnswer),
            ("KeyError: 'candidates'", NoAnswer),
            ("invalid input", NoAnswer),
        ]);
    }

    #[test]
    fn production_misfires_of_the_substring_rule_are_gone() {
        check(&[
            ("missing field `timeout_seconds`", NoAnswer),
            ("scan.png is 5000x500 pixels", NoAnswer),
            (
                "HTTP status client error (400 Bad Request) for url (https://h.test/v1/password-reset)",
                DoNotRetry,
            ),
            (
                "HTTP status client error (404 Not Found) for url (http://h.test/connections)",
                DoNotRetry,
            ),
            ("502 Bad Gateway", Retry),
            ("reset_token expired", NoAnswer),
        ]);
        assert_eq!(
            stated_status(
                "HTTP status client error (404 Not Found) for url (http://h.test/connections)"
            ),
            Some(404)
        );
    }

    #[test]
    fn exception_names_split_at_case_changes() {
        check(&[
            (
                "ConnectionResetError: [Errno 104] Connection reset by peer",
                Retry,
            ),
            ("ConnectionResetError", Retry),
            ("ReadTimeout", Retry),
            ("TimeoutError", Retry),
            ("io error: TimedOut", Retry),
            ("ConnectionRefused", Retry),
            ("TIMEOUT", Retry),
            ("requests.exceptions.ConnectTimeout", Retry),
        ]);
        // No lower-to-upper change inside: one word each.
        assert!(!has_retryable_word("HTTPError"));
        assert!(!has_retryable_word("CONNECTIONRESET"));
        assert!(!has_retryable_word("TIMEDOUT"));
        assert!(!has_retryable_word("timedout"));
    }

    #[test]
    fn underscores_and_digits_join_words() {
        for text in [
            "missing field `timeout_seconds`",
            "reset_token expired",
            "read_timeout exceeded",
            "TIMEOUT_MS unset",
            "5000x500",
            "e500x",
            "x1500",
            "_503",
            "503_",
            "timeout2",
            "2timeout",
        ] {
            assert!(!has_retryable_word(text), "{text:?}");
        }
    }

    #[test]
    fn other_forms_of_a_keyword_are_other_words() {
        for text in [
            "too many connections",
            "timeouts: 3",
            "resets left",
            "refusedly",
            "timing out",
            "timed",
            "out of memory",
        ] {
            assert!(!has_retryable_word(text), "{text:?}");
        }
    }

    #[test]
    fn timed_out_is_two_neighbouring_words_whatever_separates_them() {
        for text in [
            "operation timed out",
            "timed-out",
            "Timed  Out",
            "timed\n\tout",
            "TimedOut",
            "timed…out",
        ] {
            assert!(has_retryable_word(text), "{text:?}");
        }
        for text in ["timedout", "timed outside", "untimed out", "out timed"] {
            assert!(!has_retryable_word(text), "{text:?}");
        }
    }

    #[test]
    fn retryable_codes_count_only_as_whole_words() {
        for text in [
            "HTTP/1.1 500",
            "failed (429)",
            "status:500",
            "code=503;",
            "got 408",
            "502",
            "upstream 504, giving up",
            "port 503",
            "500 items",
        ] {
            assert!(has_retryable_word(text), "{text:?}");
        }
        for text in [
            "5000 tokens",
            "127.0.0.1:5003",
            "id 4290",
            "x1500",
            "e500x",
            "scan.png is 5000x500 pixels",
            "400 ms",
            "0500",
            "50 0",
        ] {
            assert!(!has_retryable_word(text), "{text:?}");
        }
    }

    #[test]
    fn paths_without_a_scheme_decide_nothing() {
        check(&[
            ("request to /v1/password-reset failed", NoAnswer),
            ("GET /api/connection/42 returned 404", NoAnswer),
            ("POST /jobs/reset: connection refused", Retry),
            ("I/O timeout", Retry),
            ("read / write timeout", Retry),
        ]);
    }

    #[test]
    fn a_quoted_word_names_something_and_reports_nothing() {
        check(&[
            ("missing field `timeout` at line 1 column 14", NoAnswer),
            (
                "unknown field `connection`, expected one of `host`, `port`",
                NoAnswer,
            ),
            ("KeyError: 'timeout'", NoAnswer),
            ("'timeout' is a required property", NoAnswer),
            ("the `timeout` of 5s ran out: timed out", Retry),
            ("`connection reset`", Retry),
        ]);
    }

    #[test]
    fn urls_never_decide_but_the_words_around_them_do() {
        for text in [
            "error sending request for url (http://127.0.0.1:9/connections)",
            "https://h.test/status/503",
            "see https://h.test/v1/password-reset?timeout=500 for details",
            "<http://h.test/timed/out>",
            "\"https://h.test/ConnectionReset\"",
            "[https://h.test/reset]",
            "{https://h.test/reset}",
            "'ws://h.test/refused'",
            "`git+ssh://h.test/timeout`",
            "jdbc:postgresql://h.test/timeout",
            "5http://h.test/timeout",
            "timeout://h.test",
            "file:///tmp/connection",
        ] {
            assert!(!has_retryable_word(text), "{text:?}");
            assert_eq!(stated_status(text), None, "{text:?}");
        }
        // The URL ends at the first delimiter; what follows is text again.
        for text in [
            "error sending request for url (http://127.0.0.1:9/connections): connection refused",
            "(https://h.test/x)timeout",
            "https://h.test/x timeout",
            "https://h.test/x\u{3000}timeout",
            "https://h.test/x\"timeout",
            "https://h.test/x'timeout",
            "https://h.test/x`timeout",
            "https://h.test/x<timeout",
            "https://h.test/x>timeout",
            "https://h.test/x]timeout",
            "https://h.test/x}timeout",
            "timeout https://h.test/x",
            "jdbc:postgresql://h.test/x (jdbc: timeout)",
            "://timeout",
            "1://timeout",
        ] {
            assert!(has_retryable_word(text), "{text:?}");
        }
    }

    #[test]
    fn a_url_between_two_words_keeps_them_apart() {
        assert!(!has_retryable_word("timed http://h.test out"));
        assert_eq!(stated_status("status http://h.test 503"), None);
        assert_eq!(stated_status("https://h.test/status 503"), None);
        assert_eq!(stated_status("HTTP/1.1 http://h.test/x 503"), None);
        // A reason phrase may not run into a URL.
        assert_eq!(stated_status("404 https://h.test/Not Found"), None);
        assert_eq!(stated_status("404 Not Found://h.test"), None);
    }

    #[test]
    fn a_number_followed_by_its_reason_phrase_is_stated() {
        for (text, code) in [
            (
                "HTTP status client error (400 Bad Request) for url (https://h.test/v1/x)",
                400,
            ),
            ("HTTP status server error (503 Service Unavailable)", 503),
            ("429 Too Many Requests", 429),
            ("429 resource exhausted", 429),
            ("404 NOT FOUND", 404),
            ("404 not found", 404),
            ("404 NotFound", 404),
            ("404 (Not Found)", 404),
            ("404(Not Found)", 404),
            ("(404)Not Found", 404),
            ("(404) Not Found", 404),
            ("<title>504 Gateway Time-out</title>", 504),
            ("414 Request-URI Too Long", 414),
            ("418 I'm a teapot", 418),
            ("413 Payload Too Large", 413),
            ("422 Unprocessable Content", 422),
            ("511 Network Authentication Required", 511),
            ("HTTP/1.1 200 OK", 200),
            ("got 302 Found", 302),
            ("404 Not FoundError", 404),
            ("résumé: 503 Service Unavailable", 503),
        ] {
            assert_eq!(stated_status(text), Some(code), "{text:?}");
        }
        for text in [
            "404  Not Found",
            "404 - Not Found",
            "404: Not Found",
            "404 Not Founded",
            "404 Not",
            "404 Bad Request",
            "404 nOt Found",
            "4040 Not Found",
            "x404 Not Found",
            "404_Not Found",
            "600 Bad Request",
            "099 OK",
        ] {
            assert_eq!(stated_status(text), None, "{text:?}");
        }
    }

    #[test]
    fn every_table_entry_is_stated_with_its_code() {
        for (code, phrase) in REASON_PHRASES {
            assert_eq!(
                stated_status(&format!("{code} {phrase}")),
                Some(code),
                "{phrase}"
            );
        }
    }

    #[test]
    fn a_number_after_a_status_label_is_stated() {
        for (text, code) in [
            ("status: 404", 404),
            ("status=404", 404),
            ("status 404", 404),
            ("status:500", 500),
            ("Status Code: 401", 401),
            ("status_code=403", 403),
            ("{\"statusCode\":500}", 500),
            ("StatusCode 502", 502),
            ("statuscode 502", 502),
            ("http status 404", 404),
            ("HTTP 503", 503),
            ("HTTP 429: Resource Exhausted", 429),
            ("HTTP/1.0 404", 404),
            ("HTTP/1.1 503", 503),
            ("HTTP/2 503", 503),
            ("HTTP/2.0 503", 503),
            ("HTTP/3 429", 429),
            ("{\"error\": {\"code\": 429, \"message\": \"quota\"}}", 429),
            ("{'code': '400'}", 400),
            ("code=503;", 503),
            (
                "\"code\": 400, \"message\": \"timeout must be positive\"",
                400,
            ),
            ("status: 200", 200),
        ] {
            assert_eq!(stated_status(text), Some(code), "{text:?}");
        }
        for text in [
            "the server took 400 ms",
            "500 items",
            "port 503",
            "status-404",
            "status/404",
            "status; 404",
            "HTTP/1.1.1 503",
            "HTTP 1.1 503",
            "HTTP/11 503",
            "status 4040",
            "status 99",
            "status 600",
            "status: http://h.test/404",
        ] {
            assert_eq!(stated_status(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_stated_status_outweighs_the_words() {
        check(&[
            (
                "\"code\": 400, \"message\": \"timeout must be positive\"",
                DoNotRetry,
            ),
            ("404 Not Found: connection", DoNotRetry),
            ("HTTP/1.1 200 OK but the body says timeout", Retry),
            ("the server took 400 ms, then timed out", Retry),
            ("port 503 refused", Retry),
            ("HTTP 408", Retry),
        ]);
    }

    #[test]
    fn the_first_stated_status_wins() {
        assert_eq!(
            stated_status("HTTP/1.1 200 OK {\"error\": {\"code\": 500}}"),
            Some(200)
        );
        assert_eq!(
            stated_status("took 400 ms; status: 503; 404 Not Found"),
            Some(503)
        );
    }

    #[test]
    fn non_ascii_separates_words_and_never_matches() {
        assert!(has_retryable_word("délai: timeout—réessayer"));
        assert!(has_retryable_word("连接超时 timeout"));
        assert!(has_retryable_word("timeout\u{1F4A5}"));
        assert!(has_retryable_word("é503é"));
        // Full-width letters are not ASCII: no keyword.
        assert!(!has_retryable_word("ＴＩＭＥＯＵＴ"));
        assert!(!has_retryable_word("tïmeout"));
        assert_eq!(stated_status("ошибка 404 Not Found"), Some(404));
        assert_eq!(stated_status("https://h.test/é/503 ü"), None);
        assert_eq!(stated_status(""), None);
        assert!(!has_retryable_word(""));
    }

    #[test]
    fn megabyte_texts_are_read_in_one_pass() {
        // A quadratic scan would not finish these in a test's time.
        const MB: usize = 1 << 20;
        let texts = [
            "a".repeat(MB),
            " ".repeat(MB) + "timeout",
            "404 ".repeat(MB / 4),
            "404 Not ".repeat(MB / 8),
            "HTTP/1.1 ".repeat(MB / 9),
            "://".repeat(MB / 3),
            ":// ".repeat(MB / 4),
            "a:// ".repeat(MB / 5),
            "a:".repeat(MB / 2) + "//",
            "timed ".repeat(MB / 6),
            "404 https://h.test/x ".repeat(MB / 21),
            "é".repeat(MB / 2),
        ];
        for text in &texts {
            let _ = stated_status(text);
            let _ = has_retryable_word(text);
        }
        assert!(has_retryable_word(&texts[1]));
        assert!(!has_retryable_word(&texts[2]));
        assert_eq!(stated_status(&texts[2]), None);
    }

    /// Texts rich in what the rules look for, so properties do not only see noise.
    fn interesting_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("timeout"),
            Just("timed"),
            Just("out"),
            Just("connection"),
            Just("Reset"),
            Just("refused"),
            Just("429"),
            Just("503"),
            Just("404"),
            Just("Not Found"),
            Just("Too Many Requests"),
            Just("status"),
            Just("code"),
            Just("HTTP/1.1"),
            Just("http://"),
            Just("://"),
            Just(" "),
            Just(": "),
            Just("\""),
            Just("("),
            Just(")"),
            Just("_"),
            Just("é"),
            Just("x"),
            Just("A"),
            Just("1"),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), interesting_text()]
    }

    const FOUND_WORDS: [&str; 11] = [
        "timeout",
        "connection",
        "reset",
        "refused",
        "timed out",
        "408",
        "429",
        "500",
        "502",
        "503",
        "504",
    ];

    /// Text of no words around a keyword; without `/` (a path starts there) and the quotes
    /// that make a lone word a name.
    fn non_word_text() -> impl Strategy<Value = String> {
        any::<String>().prop_map(|text| {
            text.chars()
                .filter(|&c| !c.is_ascii_alphanumeric() && !matches!(c, '_' | '/' | '`' | '\''))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn neither_function_panics(text in any_text()) {
            let _ = stated_status(&text);
            let _ = has_retryable_word(&text);
        }

        #[test]
        fn the_answer_does_not_depend_on_ascii_case_where_no_case_split_is(text in any_text()) {
            // All lower-case and all upper-case ASCII both have no lower-to-upper change, so
            // their words are the same words.
            prop_assert_eq!(
                has_retryable_word(&text.to_ascii_lowercase()),
                has_retryable_word(&text.to_ascii_uppercase())
            );
        }

        #[test]
        fn a_keyword_between_spaces_is_found_in_any_context(
            left in any_text(),
            word in prop::sample::select(&FOUND_WORDS[..]),
            right in any_text(),
        ) {
            let text = format!("{left} {word} {right}");
            prop_assert!(has_retryable_word(&text), "{:?}", text);
        }

        #[test]
        fn a_keyword_in_non_word_context_is_found(
            left in non_word_text(),
            word in prop::sample::select(&FOUND_WORDS[..]),
            right in non_word_text(),
        ) {
            // `timeout://…` would make the keyword a URL's scheme.
            prop_assume!(!right.trim_start_matches(['+', '.', '-']).starts_with("://"));
            let text = format!("{left}{word}{right}");
            prop_assert!(has_retryable_word(&text), "{:?}", text);
        }

        #[test]
        fn a_keyword_glued_to_a_word_character_is_not_found(
            word in prop::sample::select(&FOUND_WORDS[..]),
            before in "[a-z0-9_]{0,3}",
            after in "[a-z0-9_]{0,3}",
        ) {
            prop_assume!(!before.is_empty() || !after.is_empty());
            let text = format!(" {before}{word}{after} ");
            prop_assert!(!has_retryable_word(&text), "{:?}", text);
        }

        #[test]
        fn a_code_and_its_reason_phrase_state_the_code(
            entry in prop::sample::select(&REASON_PHRASES[..]),
            case in 0..3u8,
            prefix in any::<String>().prop_map(|text| text.replace(|c: char| c.is_ascii_digit(), "")),
            suffix in any::<String>(),
        ) {
            let (code, phrase) = entry;
            let phrase = match case {
                0 => phrase.to_owned(),
                1 => phrase.to_ascii_lowercase(),
                _ => phrase.to_ascii_uppercase(),
            };
            prop_assert_eq!(stated_status(&format!("{prefix} {code} {phrase} {suffix}")), Some(code));
        }

        #[test]
        fn text_inside_a_url_decides_nothing(
            scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,6}",
            inside in any_text().prop_map(|text| text.replace(
                |c: char| c.is_whitespace() || "\"'`<>)]}".contains(c),
                "/",
            )),
            form in 0..4u8,
        ) {
            let url = format!("{scheme}://{inside}");
            let text = match form {
                0 => format!("error sending request for url ({url})"),
                1 => format!("see {url} for details"),
                2 => format!("\"{url}\""),
                _ => url,
            };
            prop_assert!(!has_retryable_word(&text), "{:?}", text);
            prop_assert_eq!(stated_status(&text), None, "{:?}", text);
        }
    }
}
