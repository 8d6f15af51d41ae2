//! `#[rewind]`: a reader or file argument that every attempt reads from where the call
//! started (the README's "Parameters").

use std::io::{self, SeekFrom};

use crate::error::{GiveUpReason, MediaProcessingError};
use crate::requirements::Seeker;

/// The position a `#[rewind]` argument had when the call started, and the attempts so far.
pub struct Rewind<S: ?Sized> {
    /// Where the call started, or why that could not be read (a pipe cannot tell).
    start: io::Result<u64>,
    attempts: u32,
    argument: &'static str,
    /// `S`'s seek, from [`rewindable`](crate::requirements::rewindable), where `S: Seek` is
    /// checked: these calls carry no bound of their own, so a type that is not `Seek` gets
    /// one error, at the parameter.
    seek: Seeker<S>,
}

impl<S: ?Sized> Rewind<S> {
    /// Notes where `stream` stands as the call starts.
    pub fn start((stream, seek): (&mut S, Seeker<S>), argument: &'static str) -> Self {
        Self {
            start: seek(stream, SeekFrom::Current(0)),
            attempts: 0,
            argument,
            seek,
        }
    }
    /// Before each attempt: the first reads from where the call started, every later one
    /// seeks back there first. When that cannot be done, the call gives up rather than let an
    /// attempt read the rest of a stream that an earlier attempt consumed.
    pub fn before_attempt(&mut self, stream: &mut S) -> Result<(), MediaProcessingError> {
        self.attempts += 1;
        if self.attempts == 1 {
            return Ok(());
        }
        let sought = match &self.start {
            Ok(start) => (self.seek)(stream, SeekFrom::Start(*start)).map(drop),
            Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
        };
        sought.map_err(|error| {
            let argument = self.argument;
            let message =
                format!("could not rewind `{argument}` to where the call started: {error}");
            MediaProcessingError::new(
                self.attempts - 1,
                GiveUpReason::RewindFailed { argument },
                message,
                Some(Box::new(error)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read, Seek};

    use super::*;

    #[test]
    fn every_attempt_after_the_first_reads_from_the_start() {
        let mut reader = Cursor::new(b"header|payload".to_vec());
        reader.set_position(7);
        let mut rewind = Rewind::start(crate::requirements::rewindable(&mut reader), "reader");
        for _ in 0..3 {
            rewind.before_attempt(&mut reader).expect("seekable");
            let mut read = String::new();
            reader.read_to_string(&mut read).expect("read");
            assert_eq!(read, "payload");
        }
    }

    /// A stream that reads but cannot seek.
    struct Unseekable;

    impl Seek for Unseekable {
        fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
            Err(io::Error::new(io::ErrorKind::Unsupported, "illegal seek"))
        }
    }

    #[test]
    fn a_stream_that_cannot_seek_gives_up_before_the_second_attempt() {
        let mut stream = Unseekable;
        let mut rewind = Rewind::start(crate::requirements::rewindable(&mut stream), "body");
        assert!(
            rewind.before_attempt(&mut stream).is_ok(),
            "the first reads as it is"
        );
        let give_up = rewind
            .before_attempt(&mut stream)
            .expect_err("cannot rewind");
        assert_eq!(give_up.attempts(), 1);
        assert_eq!(
            give_up.reason(),
            GiveUpReason::RewindFailed { argument: "body" }
        );
        assert_eq!(
            give_up.to_string(),
            "Failed after 1 retries: could not rewind `body` to where the call started: illegal seek"
        );
    }
}
