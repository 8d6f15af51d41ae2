//! An inner retried call that gave up is not retried again by an outer one: that would
//! multiply the attempts (3 outer x 3 inner = 9 calls). The README's "Nested retries".
//!
//! A `MediaProcessingError` is recognised by its type anywhere in the chain, and also by the
//! redacting view that its `source()` returns: a wrapper marked `#[error(transparent)]`
//! forwards `source()` to it and so hides the `MediaProcessingError` itself, but not the view.
//! An error that only kept the give-up's text (a `String`, `format!("upload failed: {e}")`) is
//! recognised by the give-up's own words, `Failed after {n} retries: `, at the start of the
//! text or after a `: `.

use std::error::Error;

use crate::error::{MediaProcessingError, is_give_up_view};

/// Whether this link of a chain is a give-up, or the view of one.
pub(crate) fn is_give_up(link: &(dyn Error + 'static)) -> bool {
    link.is::<MediaProcessingError>() || is_give_up_view(link)
}

/// Whether a text holds a give-up's own line, `Failed after {n} retries: `, at its start or
/// after a `: ` (where a wrapper's message puts its cause).
pub(crate) fn is_give_up_text(text: &str) -> bool {
    const MARK: &str = "Failed after ";
    text.match_indices(MARK).any(|(at, _)| {
        let starts_a_part = at == 0 || text.get(..at).is_some_and(|before| before.ends_with(": "));
        let rest = text.get(at + MARK.len()..).unwrap_or_default();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        starts_a_part
            && digits > 0
            && rest
                .get(digits..)
                .is_some_and(|tail| tail.starts_with(" retries: "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_give_up_line_is_recognised_and_nothing_else() {
        for text in [
            "Failed after 3 retries: 503",
            "Failed after 12 retries: ",
            "upload failed: Failed after 3 retries: 503",
            "a: b: Failed after 1 retries: x",
        ] {
            assert!(is_give_up_text(text), "{text}");
        }
        for text in [
            "Failed after retries: 503",
            "failed after 3 retries: 503",
            "Failed after 3 attempts: 503",
            "Failed after 3x retries: 503",
            "we Failed after 3 retries: 503",
            "Failed after ",
            "",
        ] {
            assert!(!is_give_up_text(text), "{text}");
        }
    }
}
