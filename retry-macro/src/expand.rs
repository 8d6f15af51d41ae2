//! Emits the retry loop. Every decision in it is a runtime call; the loop only moves values.
//!
//! Input:
//! ```ignore
//! #[retry_with_backoff(max_retries = 3)]
//! fn fetch(&self, url: String) -> io::Result<Page> { get(self, url) }
//! ```
//! Output (sync; simplified: the real locals are `__resilience_*` at mixed-site hygiene):
//! ```ignore
//! fn fetch(&self, url: String) -> io::Result<Page> {
//!     const POLICY: RetryPolicy = RetryPolicy::__from_validated(3, ..);
//!     let mut attempts = Attempts::start(&POLICY, "fetch", now_current);
//!     let mut attempt = attempt_fn::<io::Result<Page>, _>(|| {
//!         let self_ = self;             // the body's `self` is renamed to this alias
//!         let url = fresh(&url);        // by-value arguments: a clone per attempt
//!         { get(self_, url) }
//!     });
//!     loop {
//!         let outcome = attempt();
//!         let delay = match split(outcome) {
//!             Ok(done) => { attempts.succeeded(); return done; }
//!             Err(error) => {
//!                 let text = error_text(&error);            // redacted, for log and error
//!                 let classified = (&&&&Probe(&error, &text)).__resilience_classify();
//!                 match attempts.after_failure(classified, &text, now_current) {
//!                     Next::Retry(delay) => delay,
//!                     Next::Return => return fail(error),
//!                     Next::GiveUp(reason) => return fail(give_up_as(
//!                         (&&Keep::new(error)).__resilience_give_up(&attempts, reason, text),
//!                     )),
//!                 }
//!             }
//!         };
//!         sleep_current(delay);
//!     }
//! }
//! ```
//! An `async fn` makes the clones and reborrows in the loop, then awaits an `async move`
//! block (cut off by `until_deadline` when `timeout` is set) and `sleep_async(delay)`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{ReturnType, Stmt};

use crate::args::Settings;
use crate::signature::{Params, RenameSelf, RetryFn};

pub fn expand(item: RetryFn, settings: Settings) -> TokenStream {
    let RetryFn {
        attrs,
        vis,
        sig,
        inner_attrs,
        body,
    } = item;
    let Params {
        sig: outer_sig,
        rebinds,
        borrows,
        has_receiver,
    } = crate::signature::params(&sig);
    let mut body: Vec<Stmt> = body.unwrap_or_default();
    if has_receiver {
        body.iter_mut()
            .for_each(|stmt| RenameSelf.visit_stmt_mut(stmt));
    }

    // Misuse of the return type is reported on the return type, through the runtime's
    // `RetryResult` trait, so that aliases like `io::Result<T>` pass; misuse of the error
    // type (no `Display`, no `From<MediaProcessingError>`) on the `E` of `Result<T, E>`.
    let ret_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.ident.span(),
    };
    let err_span = match &sig.output {
        ReturnType::Type(_, ty) => error_type_span(ty).unwrap_or(ret_span),
        ReturnType::Default => ret_span,
    };
    // Locals of the expansion resolve at `mixed_site`, so a parameter or a body local with
    // the same name can neither see nor shadow them. They sit at the return type because the
    // type errors they can meet are about it.
    let local =
        |name: &str| format_ident!("{}", name, span = Span::mixed_site().located_at(ret_span));
    let attempts = local("__resilience_attempts");
    let attempt = local("__resilience_attempt");
    let outcome = local("__resilience_outcome");
    let error = local("__resilience_error");
    let text = local("__resilience_text");
    let done = local("__resilience_done");
    let delay = local("__resilience_delay");
    let reason = local("__resilience_reason");
    let passed = local("__resilience_passed");
    let classified = local("__resilience_classified");
    let exhausted = local("__resilience_exhausted");

    let rt = quote!(::resilience::__private);
    // The same path with the return or error type's span: calls built from it report their
    // trait errors there.
    let rt_ret = quote_spanned!(ret_span=> ::resilience::__private);
    let rt_err = quote_spanned!(err_span=> ::resilience::__private);
    let error_at_err = format_ident!(
        "__resilience_error",
        span = Span::mixed_site().located_at(err_span)
    );

    let name = sig.ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let Settings {
        max_retries,
        base_delay_nanos,
        max_delay_nanos,
        jitter_nanos,
        timeout_nanos,
        max_hint_nanos,
        retry_if,
    } = settings;

    let seen = local("__resilience_seen");
    let see = quote_spanned!(ret_span=> {
        #[allow(unused_imports)]
        use #rt_ret::{SeeChain as _, SeeOwn as _, SeeOwnAndChain as _, SeeText as _};
        (&&&&#rt_ret::Probe(&#error)).__resilience_see()
    });
    let builtin = quote_spanned!(ret_span=> #rt_ret::classify(#seen, &#text));
    let classify = match retry_if {
        None => builtin,
        Some(predicate) => {
            // Errors about the predicate's signature belong on the predicate.
            let span = predicate.span();
            let error = format_ident!(
                "__resilience_error",
                span = Span::mixed_site().located_at(span)
            );
            quote_spanned!(span=> ::resilience::__private::ask(#predicate, &#error, || #builtin))
        }
    };
    let fail = |value: TokenStream| quote_spanned!(ret_span=> return #rt_ret::fail(#value));
    let give_up = {
        let fail = fail(quote_spanned!(err_span=> #rt_err::give_up_as(#exhausted)));
        quote_spanned!(ret_span=> {
            #[allow(unused_imports)]
            use #rt_ret::{
                GiveUpKeepingError as _, GiveUpKeepingText as _, GiveUpKeepingTypedError as _,
            };
            let #exhausted =
                (&&&#rt_ret::Keep::new(#error)).__resilience_give_up(&#attempts, #reason, #text);
            #fail;
        })
    };
    let return_error = fail(quote!(#error));
    let error_text = quote_spanned!(err_span=> #rt_err::error_text(&#error_at_err, &#seen));
    let return_done = quote_spanned!(ret_span=> return #done);
    let deadline_passed = fail(quote_spanned!(err_span=>
        #rt_err::give_up_as(#attempts.deadline_passed(#passed))
    ));
    let attempt_body = quote!({
        #(#rebinds)*
        { #(#body)* }
    });
    // Naming the return type lets `Ok(Box::new(x))`, `Err(Box::new(e))` and `return`s in the
    // body coerce to it, as they would without the attribute. An `impl Trait` cannot be
    // named inside the body; there the attempt's type is inferred.
    let ret_ty = match &sig.output {
        ReturnType::Type(_, ty) if !mentions_impl_trait(ty) => Some(ty),
        _ => None,
    };
    let attempt_closure = match ret_ty {
        Some(ty) => quote!(#rt::attempt_fn::<#ty, _>(|| #attempt_body)),
        None => quote!(|| #attempt_body),
    };
    // An async attempt takes its fresh copies and reborrows by move, made just before it:
    // holding `&T` of a by-value `T` across an `.await` would make the future `Send` only
    // when `T: Sync`. An async block's output type cannot be given from outside; a `return`
    // of that type, never taken, fixes it before the body is checked (as async-trait does).
    let typed = local("__resilience_typed");
    let attempt_future = match ret_ty {
        Some(ty) => quote!(async move {
            if let ::core::option::Option::Some(#typed) = ::core::option::Option::None::<#ty> {
                #[allow(unreachable_code)]
                return #typed;
            }
            { #(#body)* }
        }),
        None => quote!(async move { #(#body)* }),
    };
    let attempt_future = quote!({
        #(#rebinds)*
        #(#borrows)*
        #attempt_future
    });

    let (now, run_attempt, sleep) = if sig.asyncness.is_some() {
        let run = if timeout_nanos == 0 {
            quote!(#attempt_future.await)
        } else {
            quote!(match #rt::until_deadline(#attempts.deadline(), #attempt_future).await {
                ::core::result::Result::Ok(#outcome) => #outcome,
                ::core::result::Result::Err(#passed) => {
                    #deadline_passed;
                }
            })
        };
        (
            quote!(#rt::now_async),
            quote!(let #outcome = #run;),
            quote!(#rt::sleep_async(#delay).await;),
        )
    } else {
        (
            quote!(#rt::now_current),
            quote!(let #outcome = #attempt();),
            quote!(#rt::sleep_current(#delay);),
        )
    };
    let require_runtime = match &sig.asyncness {
        Some(asyncness) => {
            quote_spanned!(asyncness.span=> ::resilience::__private::require_async_runtime(::resilience::__private::Runtime);)
        }
        None => quote!(),
    };
    let define_attempt = if sig.asyncness.is_some() {
        quote!()
    } else {
        // A closure, so `return` and `?` in the body end the attempt, not the retry. It may
        // be `Fn` or `FnMut` depending on the body, hence the `allow`.
        quote!(
            #[allow(unused_mut, clippy::redundant_closure_call)]
            let mut #attempt = #attempt_closure;
        )
    };

    quote! {
        #(#attrs)*
        #vis #outer_sig {
            #(#inner_attrs)*
            const __RESILIENCE_POLICY: #rt::RetryPolicy = #rt::RetryPolicy::__from_validated(
                #max_retries, #base_delay_nanos, #max_delay_nanos, #jitter_nanos, #timeout_nanos,
                #max_hint_nanos,
            );
            #require_runtime
            let mut #attempts = #rt::Attempts::start(&__RESILIENCE_POLICY, #name, #now);
            #define_attempt
            loop {
                #run_attempt
                // The error lives only inside this statement: it is dropped before the wait,
                // so an error type that is not `Send` never makes the future non-`Send`.
                let #delay = match #rt_ret::split(#outcome) {
                    ::core::result::Result::Ok(#done) => {
                        #attempts.succeeded();
                        #return_done;
                    }
                    ::core::result::Result::Err(#error) => {
                        let #seen = #see;
                        let #text = #error_text;
                        let #classified = #classify;
                        let #text = #rt::redacted(#text);
                        match #attempts.after_failure(#classified, &#text, #now) {
                            #rt::Next::Retry(#delay) => #delay,
                            #rt::Next::Return => #return_error,
                            #rt::Next::GiveUp(#reason) => #give_up,
                        }
                    }
                };
                #sleep
            }
        }
    }
}

/// The span of `E` in a return type written `Result<T, E>` (or any `Path<.., E>` alias).
fn error_type_span(ty: &syn::Type) -> Option<Span> {
    let syn::Type::Path(path) = ty else {
        return None;
    };
    let syn::PathArguments::AngleBracketed(args) = &path.path.segments.last()?.arguments else {
        return None;
    };
    match args
        .args
        .iter()
        .filter(|a| matches!(a, syn::GenericArgument::Type(_)))
        .nth(1)?
    {
        syn::GenericArgument::Type(e) => Some(e.span()),
        _ => None,
    }
}

/// Whether `impl Trait` appears anywhere in `ty` (it cannot be named in a function body).
fn mentions_impl_trait(ty: &syn::Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(quote!(#ty))
}
