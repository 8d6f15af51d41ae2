//! The readers of error texts never panic and stay linear, whatever the text: the hint parser
//! (`Retry-After`, `RetryInfo`, per-day quotas), the text rule and the whole classification of
//! an error chain. They run after every failed attempt, on texts the server wrote.

use std::io;
use std::time::SystemTime;

use proptest::prelude::*;
use retry_runtime::classify::{by_text, explain};
use retry_runtime::hint::{google_duration, read_text, retry_after_header};

/// Pieces of the texts these readers look for, so that generated texts come near them.
const FRAGMENTS: &[&str] = &[
    "retryDelay",
    "retry-after",
    "Retry-After",
    "quotaId",
    "PerDay",
    ":",
    "\"",
    "\\\"",
    " ",
    ",",
    ";",
    "\n",
    "s",
    "0.5s",
    "53s",
    "1e9",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "Wed,",
    "999999999999999999999",
    "429",
    "503",
    "400 Bad Request",
    "status: ",
    "HTTP/1.1 ",
    "timeout",
    "timed out",
    "Connection",
    "https://h.test/reset",
    "Failed after 3 retries: ",
    "é",
    "ж",
    "`",
    "'",
];

fn fragmented() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn the_hint_parser_never_panics(text in any::<String>(), near in fragmented()) {
        for text in [text, near] {
            let _ = read_text(&text);
            let _ = google_duration(&text);
            let _ = retry_after_header(&text, SystemTime::UNIX_EPOCH);
            let _ = retry_after_header(&text, SystemTime::now());
        }
    }

    #[test]
    fn the_classifier_never_panics(text in any::<String>(), near in fragmented()) {
        for text in [text, near] {
            let _ = by_text(&text);
            let error = io::Error::other(text.clone());
            let classified = explain(&error);
            prop_assert_ne!(classified.verdict, retry_runtime::Verdict::Unknown);
        }
    }

    #[test]
    fn any_cut_of_a_text_is_read_without_panic(near in fragmented(), cut in 0usize..400) {
        let mut cut = cut.min(near.len());
        while !near.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = read_text(&near[..cut]);
        let _ = explain(&io::Error::other(near[..cut].to_owned()));
    }
}

/// Texts of a megabyte made of the pieces that once made a reader quadratic: each is read in
/// one pass, so this test takes milliseconds; a quadratic reader would take minutes.
#[test]
fn a_megabyte_of_repeated_names_is_read_in_one_pass() {
    for piece in [
        "quotaId: Wed,",
        "retryDelay: ",
        "\"retry-after\": \"",
        "status: 4",
        "https://h.test/",
        "Failed after 1 retries: ",
        "timed ",
    ] {
        let text = piece.repeat(1_000_000 / piece.len());
        let _ = read_text(&text);
        let _ = by_text(&text);
        let _ = explain(&io::Error::other(text));
    }
}
