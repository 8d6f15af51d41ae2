//! An inner retried call that gave up is not retried again by an outer one: that would
//! multiply the attempts (3 outer x 3 inner = 9 calls). The README's "Nested retries".
//!
//! A `MediaProcessingError` is recognised by its type anywhere in the chain, and also by the
//! redacting view that its `source()` returns: a wrapper marked `#[error(transparent)]`
//! forwards `source()` to it and so hides the `MediaProcessingError` itself, but not the view.
//! An error that only kept the give-up's text (a `String`) is recognised by its first words.

use std::error::Error;

use crate::error::{MediaProcessingError, is_give_up_view};

/// Whether this link of a chain is a give-up, or the view of one.
pub(crate) fn is_give_up(link: &(dyn Error + 'static)) -> bool {
    link.is::<MediaProcessingError>() || is_give_up_view(link)
}

/// Whether a text starts as a give-up's does: `Failed after {n} retries: `.
pub(crate) fn is_give_up_text(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("Failed after ") else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(" retries: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_give_up_line_is_recognised_and_nothing_else() {
        assert!(is_give_up_text("Failed after 3 retries: 503"));
        assert!(is_give_up_text("Failed after 12 retries: "));
        for text in [
            "Failed after retries: 503",
            "failed after 3 retries: 503",
            "Failed after 3 attempts: 503",
            "upstream: Failed after 3 retries: 503",
            "Failed after 3x retries: 503",
            "",
        ] {
            assert!(!is_give_up_text(text), "{text}");
        }
    }
}
