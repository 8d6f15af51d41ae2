//! `#[derive(Classify)]` on every shape it accepts: enums with unit, tuple and struct
//! variants, structs, generics, an empty enum, and a type with no `Display`.
use std::io;

use resilience::{Classify, MediaProcessingError, Verdict};

#[derive(Debug, thiserror::Error, Classify)]
enum ApiError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("busy")]
    #[classify(retryable)]
    Busy,
    #[error("bad input {field}")]
    #[classify(not_retryable)]
    BadInput { field: String },
    #[error("upstream")]
    Upstream {
        #[source]
        cause: io::Error,
        attempt: u32,
    },
    #[error("{0}")]
    Exhausted(#[from] MediaProcessingError),
}

#[derive(Debug, thiserror::Error, Classify)]
#[error("wrapped")]
#[classify(retryable)]
struct Wrapped;

#[derive(Debug, thiserror::Error, Classify)]
#[error("generic: {0}")]
struct Generic<E: std::error::Error + 'static>(#[source] E);

#[derive(Debug, thiserror::Error, Classify)]
enum Never {}

#[derive(Debug, Classify)]
struct NoDisplay(u32);

fn main() {
    assert_eq!(ApiError::Busy.classify(), Verdict::Retryable);
    assert_eq!(
        ApiError::Io(io::Error::from(io::ErrorKind::NotFound)).classify(),
        Verdict::NotRetryable
    );
    assert_eq!(Wrapped.classify(), Verdict::Retryable);
    assert_eq!(
        Generic(io::Error::from(io::ErrorKind::ConnectionReset)).classify(),
        Verdict::Retryable
    );
    assert_eq!(NoDisplay(1).classify(), Verdict::NotRetryable);
    let _ = |never: Never| never.classify();
}
