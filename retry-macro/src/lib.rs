//! The `#[retry_with_backoff]` attribute and `#[derive(Classify)]` of
//! [`resilience`](https://docs.rs/resilience). Use them through the `resilience` crate, whose
//! documentation shows them at work; the expansions name only `resilience` items.
//!
//! `args` validates the arguments, `item` reads the function, `checks` refuses what cannot
//! be retried, `bindings` and `receiver` say how each parameter reaches every attempt,
//! `expand` writes the retried function; `derive` writes `#[derive(Classify)]`; `errors`
//! collects what is wrong, all at once.

mod args;
mod bindings;
mod checks;
mod derive;
mod errors;
mod expand;
mod item;
mod receiver;

use proc_macro::TokenStream;
use quote::quote;

/// Retries the function with exponential backoff and jitter when it fails with a retryable
/// error, and returns a `MediaProcessingError` (through `From`) once the attempts are spent.
///
/// ```
/// use std::io;
/// use resilience::{Classify, MediaProcessingError, retry_with_backoff};
///
/// #[derive(Debug, thiserror::Error, Classify)]
/// enum ApiError {
///     #[error("{0}")]
///     Io(#[from] io::Error),
///     #[error(transparent)]
///     GaveUp(#[from] MediaProcessingError),
/// }
///
/// /// 429s, 503s, timeouts and resets are retried; a bad request comes back at once.
/// #[retry_with_backoff(max_retries = 3, base_delay = 0.001, max_delay = 0.01, jitter = 0)]
/// fn describe(image: &str, calls: &mut u32) -> Result<String, ApiError> {
///     *calls += 1;
///     if *calls < 3 {
///         return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer").into());
///     }
///     Ok(format!("a photo of {image}"))
/// }
///
/// let mut calls = 0;
/// assert_eq!(describe("beach.jpg", &mut calls)?, "a photo of beach.jpg");
/// assert_eq!(calls, 3);
/// # Ok::<(), ApiError>(())
/// ```
///
/// Arguments, all optional: `max_retries` (total attempts), `base_delay`, `max_delay`,
/// `jitter`, `timeout` (the whole call) and `max_hint` (the longest server-requested wait
/// honoured), as literals or constants; or `policy = <&RetryPolicy>` built at run time;
/// `retry_if = <path or closure>` (a predicate over `&E` that answers first); and
/// `crate = <path>` when `resilience` is reached by another path.
///
/// Parameters: by-value arguments are cloned for every attempt but the last; `&mut` ones are
/// reborrowed. Mark a file or reader `#[rewind]` (by value or `&mut`) and every attempt reads
/// it from where the call started; mark a by-value parameter `#[no_clone]` to share one value
/// between all attempts, its state and position included. An `async fn` needs the `tokio`
/// feature of `resilience` (on by default).
///
/// The `resilience` crate's front page is the whole manual.
#[proc_macro_attribute]
pub fn retry_with_backoff(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = errors::Errors::default();
    let settings = args::parse(args.into(), &mut errors);
    let item_tokens = proc_macro2::TokenStream::from(item.clone());
    let function = match syn::parse::<item::RetryFn>(item) {
        Ok(function) => function,
        Err(error) => {
            errors.push(error);
            return with_errors(errors, item_tokens);
        }
    };
    checks::check(&function, &mut errors);
    if let Some(settings) = &settings
        && let Some(span) = settings.attempt_timeout_span
        && function.sig.asyncness.is_none()
    {
        errors.at(
            span,
            "`attempt_timeout` cuts off a running attempt, which only an `async fn` can be: a sync attempt cannot be interrupted; use `timeout` (which stops before a wait that would pass it), or make the function `async`",
        );
    }
    match (errors.finish(()), settings) {
        (Ok(()), Some(settings)) => expand::expand(function, settings).into(),
        // `args::parse` returns `None` only after recording an error, so this arm reports it.
        (result, _) => {
            let error = result.err().map(|e| e.to_compile_error());
            // The item as written still compiles on its own, so the user sees only our errors.
            quote!(#error #function).into()
        }
    }
}

fn with_errors(errors: errors::Errors, item: proc_macro2::TokenStream) -> TokenStream {
    let error = errors.finish(()).err().map(|e| e.to_compile_error());
    quote!(#error #item).into()
}

/// Derives `resilience::Classify` for an error enum or struct: each variant is classified as
/// the error it wraps (its only field, or its `#[from]` / `#[source]` field, through
/// `#[error(transparent)]` too), or as `#[classify(retryable)]` / `#[classify(not_retryable)]`
/// on it says; the built-in rules decide the rest from the text and the `source()` chain.
///
/// See the `resilience` crate for examples.
#[proc_macro_derive(Classify, attributes(classify))]
pub fn derive_classify(input: TokenStream) -> TokenStream {
    match syn::parse::<syn::DeriveInput>(input) {
        Ok(input) => derive::expand(input).into(),
        Err(error) => error.to_compile_error().into(),
    }
}
