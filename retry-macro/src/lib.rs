//! The `#[retry_with_backoff]` attribute of [`resilience`](https://docs.rs/resilience).
//! Use it through the `resilience` crate, whose documentation shows it at work; the expansion
//! names only `::resilience::__private` items.
//!
//! `args` validates the arguments, `signature` reads the function, `expand` writes the loop;
//! `derive` writes `#[derive(Classify)]`; `errors` collects what is wrong, all at once.

mod args;
mod derive;
mod errors;
mod expand;
mod signature;

use proc_macro::TokenStream;
use quote::quote;

/// Retries the function with exponential backoff and jitter when it fails with a retryable
/// error, and returns a `MediaProcessingError` (through `From`) once the attempts are spent.
///
/// Arguments, all optional: `max_retries = 5` (total attempts), `base_delay = 1.0`,
/// `max_delay = 30.0`, `jitter = 1.0`, `timeout = <seconds>` (the whole call),
/// `max_hint = 120.0` (the longest server-requested wait honoured), and
/// `retry_if = <path or closure>` (a predicate over `&E` that answers first). Mark a by-value
/// parameter `#[no_clone]` when the body only borrows it and its type is not `Clone`.
/// An `async fn` needs the `tokio` feature of `resilience` (on by default).
///
/// See the `resilience` crate for examples.
#[proc_macro_attribute]
pub fn retry_with_backoff(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = errors::Errors::default();
    let settings = args::parse(args.into(), &mut errors);
    let item_tokens = proc_macro2::TokenStream::from(item.clone());
    let function = match syn::parse::<signature::RetryFn>(item) {
        Ok(function) => function,
        Err(error) => {
            errors.push(error);
            return with_errors(errors, item_tokens);
        }
    };
    signature::check(&function, &mut errors);
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
