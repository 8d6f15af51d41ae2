//! Walking an error's `source()` chain, and the text that shows its causes.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::io;

use crate::redact::redact;

/// The error and its causes. An [`io::Error`] built around another error hides that error
/// from `source()` (it forwards the inner error's own source), so step into it explicitly;
/// so does ureq 3's `Error`, whose `Io` and `Other` have no `source()` at all.
pub(crate) fn links<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    // A chain that loops back on itself (a buggy `source()`) must still end.
    const MAX_LINKS: usize = 64;
    std::iter::successors(Some(error), |&link: &&'a (dyn Error + 'static)| {
        if let Some(inner) = link
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            return Some(inner as &(dyn Error + 'static));
        }
        #[cfg(feature = "ureq")]
        if let Some(inner) = link
            .downcast_ref::<ureq::Error>()
            .and_then(super::ureq::inner)
        {
            return Some(inner);
        }
        link.source()
    })
    .take(MAX_LINKS)
}

/// The error's `Display`, followed by each cause whose text it does not already contain,
/// joined by `: ` as anyhow's `{:#}` does: `while resetting the pool: 503 Service Unavailable`.
/// A cause whose text the line already holds (thiserror's `"request failed: {0}"`) is not
/// repeated.
pub fn text_with_causes(error: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    for link in links(error) {
        let part = link_text(link);
        if text.is_empty() {
            text = part;
        } else if !part.is_empty() && !text.contains(part.as_str()) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// One link's text: its `Display`, but a gRPC status as its code and message
/// ([`grpc::text`](crate::grpc::text)), without the `Debug` of its source that tonic's own
/// `Display` appends (the source follows as the next link).
fn link_text(link: &(dyn Error + 'static)) -> String {
    #[cfg(feature = "tonic")]
    if let Some(status) = link.downcast_ref::<tonic::Status>() {
        return crate::grpc::text(status);
    }
    display(link)
}

/// A `Display`'s text. Unlike `to_string`, a `Display` that returns an error does not panic:
/// what it wrote before is kept.
pub(crate) fn display(value: &(impl fmt::Display + ?Sized)) -> String {
    use fmt::Write as _;
    let mut text = String::new();
    let _ = write!(text, "{value}");
    text
}

/// Calls `read` with the text of `value`, formatted on the stack when it is short (most error
/// messages are), so that reading it allocates nothing.
pub(crate) fn with_text<R>(
    value: &(impl fmt::Display + ?Sized),
    read: impl FnOnce(&str) -> R,
) -> R {
    let mut short = ShortText {
        bytes: [0; SHORT_TEXT],
        len: 0,
        overflowed: false,
    };
    let written = fmt::write(&mut short, format_args!("{value}")).is_ok();
    match std::str::from_utf8(short.bytes.get(..short.len).unwrap_or_default()) {
        Ok(text) if written && !short.overflowed => read(text),
        _ => read(&display(value)),
    }
}

/// How long a text [`with_text`] formats on the stack.
const SHORT_TEXT: usize = 512;

/// A text written whole `str`s at a time, so that what it holds is always valid UTF-8.
struct ShortText {
    bytes: [u8; SHORT_TEXT],
    len: usize,
    overflowed: bool,
}

impl fmt::Write for ShortText {
    fn write_str(&mut self, part: &str) -> fmt::Result {
        let end = self.len + part.len();
        match self.bytes.get_mut(self.len..end) {
            Some(room) if !self.overflowed => {
                room.copy_from_slice(part.as_bytes());
                self.len = end;
            }
            _ => self.overflowed = true,
        }
        Ok(())
    }
}

/// An error's whole text: with its causes when it has a chain, else its `Display`. The rules
/// read it as it is; logs and give-up errors show it [redacted](crate::redact::redact).
pub(crate) fn text_of(
    error: &(impl fmt::Display + ?Sized),
    chain: Option<&(dyn Error + 'static)>,
) -> String {
    match chain {
        Some(chain) => text_with_causes(chain),
        None => display(error),
    }
}

/// `text` with credentials redacted, reusing its buffer when there are none.
pub(crate) fn redacted(text: String) -> String {
    match redact(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(redacted) => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Link(&'static str, Option<Box<Link>>);

    impl fmt::Display for Link {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Link {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn causes_are_appended_once_each() {
        let e = Link(
            "while resetting the pool",
            Some(Box::new(Link("503 Service Unavailable", None))),
        );
        assert_eq!(
            text_with_causes(&e),
            "while resetting the pool: 503 Service Unavailable"
        );
        let contained = Link("request failed: boom", Some(Box::new(Link("boom", None))));
        assert_eq!(text_with_causes(&contained), "request failed: boom");
        let empty = Link("outer", Some(Box::new(Link("", None))));
        assert_eq!(text_with_causes(&empty), "outer");
    }

    #[test]
    fn a_text_is_read_the_same_from_the_stack_or_the_heap() {
        for text in [
            "",
            "short",
            &"é".repeat(300),
            &"x".repeat(SHORT_TEXT),
            &"y".repeat(SHORT_TEXT + 1),
        ] {
            assert_eq!(with_text(&text, str::to_owned), text);
        }
    }

    #[test]
    fn an_io_error_around_another_error_is_stepped_into() {
        let inner = Link("inner", Some(Box::new(Link("root cause", None))));
        let outer = io::Error::other(inner);
        assert_eq!(text_with_causes(&outer), "inner: root cause");
        assert_eq!(links(&outer).count(), 3);
    }
}
