//! Byte-level scanning shared by the rules that read error texts (`classify`, `hint`,
//! `redact`). They look for ASCII names and stop at ASCII delimiters, so every index they
//! return is on a `char` boundary of the text.

/// Where `needle` first stands in `haystack`, ignoring ASCII case.
pub(crate) fn find_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

/// The first index from `at` whose byte does not satisfy `while_` (or the end).
pub(crate) fn skip(bytes: &[u8], mut at: usize, while_: impl Fn(u8) -> bool) -> usize {
    while at < bytes.len() && while_(bytes[at]) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ignoring_case_and_skips_to_the_first_other_byte() {
        assert_eq!(find_ignore_ascii_case(b"a TimeOut", b"timeout"), Some(2));
        assert_eq!(find_ignore_ascii_case(b"time", b"timeout"), None);
        assert_eq!(skip(b"  x", 0, |b| b == b' '), 2);
        assert_eq!(skip(b"  ", 0, |b| b == b' '), 2);
        assert_eq!(skip(b"x", 5, |_| true), 5);
    }
}
