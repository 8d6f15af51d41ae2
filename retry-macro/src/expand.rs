//! Emits the retried function. Every decision in it is a runtime call; the expansion only
//! moves values. The first attempt runs inline and, when it succeeds, returns with nothing
//! else done; everything after a failure is out of line (`#[cold]` runtime calls, and for an
//! `async fn` a boxed future made only then).
//!
//! Input:
//! ```ignore
//! #[retry_with_backoff(max_retries = 3)]
//! fn fetch(&self, url: String) -> io::Result<Page> { get(self, url) }
//! ```
//! Output (sync; simplified: the locals are `__resilience_*` at mixed-site hygiene, the paths
//! `::resilience::__private::*` and `::resilience::requirements::*`):
//! ```ignore
//! fn fetch(&self, url: String) -> io::Result<Page> {
//!     fn emit(function: &'static str, event: &Event<'_>) { emit_event!(function, event, module_path!()) }
//!     let fresh = |(url, ()): (&_, ())| (ClonedPerAttempt::fresh(url), ());
//!     let mut attempt = each_attempt(shape_from((&url, ()), &fresh), |(url, ())| -> io::Result<Page> {
//!         let self_ = self;                       // the body's `self` is renamed to this
//!         { get(self_, url) }
//!     });
//!     // `POLICY` is `(const { &/* builder, checked at compile time */ })`, written at each
//!     // use: a `&'static RetryPolicy` that nothing stores.
//!     if POLICY.max_retries() > 1 {
//!         match into_result(attempt(fresh((&url, ())))) {
//!             Ok(value) => from_result(Ok(value)),    // the success path ends here
//!             Err(error) => match retry_blocking(      // cold: the loop below, out of line
//!                 POLICY, site, None, error, (url, ()), attempt, fresh, read, text, keep,
//!             ) {
//!                 Ok(value) => from_result(Ok(value)),
//!                 Err(ending) => end(ending),         // not retryable, or gave up
//!             },
//!         }
//!     } else {
//!         /* the only attempt (`max_retries = 1`) takes the caller's `url` */
//!     }
//! }
//! ```
//! `retry_blocking` decides on each error, sleeps, and runs the next attempt with fresh
//! copies; its last attempt takes the moved `(url, ())`. With a `timeout` possible, the call
//! first reads the clock (`started(POLICY, now)`) and passes that instead of `None`.
//! An `async fn` makes its attempt an `async` closure, awaits the first attempt inline (under
//! `until_deadline` when there may be a `timeout`), and awaits the rest in `boxed(async { .. })`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ReturnType, Type};

use crate::args::{Given, Guards, Key, Policy, Settings, Value};
use crate::bindings::{Bindings, Carried, Rewound, bindings};
use crate::item::RetryFn;
use crate::receiver::rename_self as rename_self_in;

pub fn expand(item: RetryFn, settings: Settings) -> TokenStream {
    let RetryFn {
        attrs,
        vis,
        sig,
        brace,
        inner_attrs,
        body,
    } = item;
    let krate = &settings.krate;
    let Bindings {
        sig: outer_sig,
        carried,
        rebinds,
        rename_self,
        rewound,
    } = bindings(&sig, krate);
    let body = body.unwrap_or_default();
    let body = if rename_self {
        rename_self_in(body)
    } else {
        body
    };
    let names = Names::new(&sig);
    let types = Types::new(&sig, krate, &names);
    let emitter = emitter(krate, &names);
    let policy = policy(&settings, &names);
    let policy_prelude = &policy.prelude;
    let attempt = attempt_closure(
        &sig, &carried, &rebinds, &rewound, &body, &types, krate, &names,
    );
    let run = if settings.guards.any() {
        guarded_run(&settings, &policy, &carried, &types, &names, &sig)
    } else if sig.asyncness.is_some() {
        async_run(&settings, &policy, &carried, &types, &names, &sig)
    } else {
        sync_run(&settings, &policy, &carried, &types, &names)
    };
    let fn_body = quote!(
        #(#inner_attrs)*
        #emitter
        #policy_prelude
        #attempt
        #run
    );
    // The body keeps its own braces (and their span), so that rustc's suggestions about the
    // function read right.
    let mut block = TokenStream::new();
    brace.surround(&mut block, |tokens| tokens.extend(fn_body));
    quote!(#(#attrs)* #vis #outer_sig #block)
}

/// The expansion's locals, resolved at `mixed_site`, so that a parameter or a body local with
/// the same name can neither see nor shadow them. They sit at the return type because the
/// type errors they can meet are about it.
struct Names {
    ret_span: Span,
    err_span: Span,
    function: String,
}

impl Names {
    fn new(sig: &syn::Signature) -> Self {
        let ret_span = match &sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => sig.ident.span(),
        };
        let err_span = match &sig.output {
            ReturnType::Type(_, ty) => written_error_type(ty).map_or(ret_span, |e| e.span()),
            ReturnType::Default => ret_span,
        };
        let function = sig.ident.to_string();
        let function = function.strip_prefix("r#").unwrap_or(&function).to_owned();
        Self {
            ret_span,
            err_span,
            function,
        }
    }

    fn local(&self, name: &str) -> syn::Ident {
        format_ident!(
            "__resilience_{}",
            name,
            span = Span::mixed_site().located_at(self.ret_span)
        )
    }
}

/// How the expansion names the return type and the error type: written out where they can
/// be (so that a compile error lands on the user's own token), through inference where the
/// type holds an `impl Trait`.
struct Types {
    /// The return type, when nameable.
    ret: Option<Type>,
    /// `-> Ret` for the attempt closure, when nameable.
    ret_arrow: TokenStream,
    /// `<Ret as ReturnsResult>` or, unnameable, the trait itself (method-call form).
    returns_result: TokenStream,
    /// `<E as HoldsGiveUp>` or the trait.
    holds_give_up: TokenStream,
    /// `<E as LoggableError>` or the trait.
    loggable: TokenStream,
}

impl Types {
    fn new(sig: &syn::Signature, krate: &TokenStream, names: &Names) -> Self {
        let ret_span = names.ret_span;
        let err_span = names.err_span;
        let req = quote_spanned!(ret_span=> #krate::requirements);
        let req_err = quote_spanned!(err_span=> #krate::requirements);
        let nameable = match &sig.output {
            ReturnType::Type(_, ty) if !mentions_impl_trait(ty) => Some(&**ty),
            _ => None,
        };
        match nameable {
            Some(ret) => {
                let err = match written_error_type(ret) {
                    Some(err) => quote!(#err),
                    None => quote_spanned!(ret_span=> <#ret as #req::ReturnsResult>::Error),
                };
                Self {
                    ret: Some(ret.clone()),
                    ret_arrow: quote!(-> #ret),
                    returns_result: quote_spanned!(ret_span=> <#ret as #req::ReturnsResult>),
                    holds_give_up: quote_spanned!(err_span=> <#err as #req_err::HoldsGiveUp>),
                    loggable: quote_spanned!(err_span=> <#err as #req_err::LoggableError>),
                }
            }
            None => Self {
                ret: None,
                ret_arrow: TokenStream::new(),
                returns_result: quote_spanned!(ret_span=> #req::ReturnsResult),
                holds_give_up: quote_spanned!(err_span=> #req_err::HoldsGiveUp),
                loggable: quote_spanned!(err_span=> #req_err::LoggableError),
            },
        }
    }

    /// After an attempt's error is taken out, a `return` of it that never runs: with an
    /// `impl Trait` in the return type, nothing else fixes the error type before the rules'
    /// probes look at it.
    fn fix_error_type(&self, error: &syn::Ident, span: Span) -> TokenStream {
        if self.ret.is_some() {
            return TokenStream::new();
        }
        let err = self.returned(quote!(::core::result::Result::Err(#error)), span);
        quote!(
            #[allow(unreachable_code)]
            if false {
                return #err;
            }
        )
    }

    fn result_of(&self, value: TokenStream, span: Span) -> TokenStream {
        let returns_result = &self.returns_result;
        quote_spanned!(span=> #returns_result::into_result(#value))
    }

    fn returned(&self, value: TokenStream, span: Span) -> TokenStream {
        let returns_result = &self.returns_result;
        quote_spanned!(span=> #returns_result::from_result(#value))
    }
}

// Input:  the function's name.
// Output: `fn __resilience_emit(..) { emit_event!(.., module_path!()) }`: the events get the
//         annotated function's module path as their target, as `#[tracing::instrument]`
//         gives its spans, so an application's filter shows them.
fn emitter(krate: &TokenStream, names: &Names) -> TokenStream {
    let emit = names.local("emit");
    quote!(
        #[cold]
        #[inline(never)]
        fn #emit(function: &'static str, event: &#krate::__private::Event<'_>) {
            #krate::__private::emit_event!(function, event, ::core::module_path!())
        }
    )
}

/// `Site { function: "fetch", emit: __resilience_emit }`.
fn site(krate: &TokenStream, names: &Names) -> TokenStream {
    let function = &names.function;
    let emit = names.local("emit");
    quote!(#krate::__private::Site { function: #function, emit: #emit })
}

// Input:  `max_retries = 3, base_delay = BASE` (or `policy = &SETTINGS.retry`).
// Output: how the expansion reaches the policy: `const { &builder().max_retries(3)
//         .base_delay(checked seconds of BASE).build() }` written where it is used (a constant:
//         nothing is stored), or a local copy of `*EXPR`, evaluated once per call.
struct PolicyRef {
    /// `let policy: RetryPolicy = *EXPR;` for `policy = ..`; nothing for a built policy.
    prelude: TokenStream,
    /// What names the `&RetryPolicy` at its first use, where an invalid value fails the build
    /// with our message.
    checked: TokenStream,
    /// What names it everywhere else: the same constant, built without the checks, so that
    /// one invalid value gives one error.
    value: TokenStream,
}

fn policy(settings: &Settings, names: &Names) -> PolicyRef {
    let krate = &settings.krate;
    match &settings.policy {
        // A copy, so that the expression's borrow (`&self.policy`, `&config.retry`) ends
        // here and the attempts may take `&mut self` or move the argument.
        Policy::Expr(expr) => {
            let policy = names.local("policy");
            let given = names.local("given");
            let expr = quote_spanned!(expr.span()=> #expr);
            PolicyRef {
                prelude: quote!(
                    let #policy: #krate::RetryPolicy = {
                        let #given: &#krate::RetryPolicy = #expr;
                        *#given
                    };
                ),
                checked: quote!((&#policy)),
                value: quote!((&#policy)),
            }
        }
        // Literals only: checked by an unnamed `const` item too, which `cargo check` (and so
        // an editor) evaluates. A constant argument may be `Self::..` or a generic parameter,
        // which an item cannot see: its checks are in the `const` block, which a build
        // evaluates.
        Policy::Built(given) if !given.iter().any(|g| matches!(g.value, Value::Constant(_))) => {
            let built = built_policy(krate, given, true);
            PolicyRef {
                prelude: quote!(const _: () = {
                    let _ = #built;
                };),
                checked: built_policy(krate, given, false),
                value: built_policy(krate, given, false),
            }
        }
        Policy::Built(given) => PolicyRef {
            prelude: TokenStream::new(),
            checked: built_policy(krate, given, true),
            value: built_policy(krate, given, false),
        },
    }
}

/// When the call started: read before the first attempt only when the policy may have a
/// `timeout`; a constant `None` (nothing stored) otherwise.
fn started(
    settings: &Settings,
    policy: &TokenStream,
    now: TokenStream,
    names: &Names,
) -> (TokenStream, TokenStream) {
    if settings.policy.may_have_timeout() {
        let started = names.local("started");
        let krate = &settings.krate;
        (
            quote!(
                let #started: ::core::option::Option<::std::time::Instant> =
                    #krate::__private::started(#policy, #now);
            ),
            quote!(#started),
        )
    } else {
        (
            TokenStream::new(),
            quote!(::core::option::Option::<::std::time::Instant>::None),
        )
    }
}

fn built_policy(krate: &TokenStream, given: &[Given], checked: bool) -> TokenStream {
    let builder = format_ident!("__resilience_builder", span = Span::mixed_site());
    let steps = given.iter().map(|Given { key, value, span }| {
        let setter = format_ident!("{}", key.setter());
        let argument = match value {
            Value::Attempts(n) => quote!(#n),
            Value::Variant(variant) => {
                let variant = format_ident!("{}", variant);
                let kind = format_ident!(
                    "{}",
                    if *key == Key::Growth {
                        "Growth"
                    } else {
                        "Jitter"
                    }
                );
                quote_spanned!(*span=> #krate::strategy::#kind::#variant)
            }
            Value::Nanos(nanos) => quote!(::core::time::Duration::from_nanos(#nanos)),
            // A constant of attempts: checked alone, so the error lands on it. Its type is
            // stated first, so a constant of another type is told so on its own token.
            Value::Constant(expr) if !key.is_seconds() && checked => quote_spanned!(*span=> {
                let attempts: u32 = #expr;
                if let ::core::result::Result::Err(error) =
                    #krate::RetryPolicy::builder().max_retries(attempts).build()
                {
                    ::core::panic!("{}", error.message())
                }
                attempts
            }),
            Value::Constant(expr) if !key.is_seconds() => quote_spanned!(*span=> {
                let attempts: u32 = #expr;
                attempts
            }),
            Value::Constant(expr) => {
                let which = format_ident!("{}", key.seconds_key().unwrap_or("BaseDelay"));
                let invalid = if checked {
                    quote_spanned!(*span=> ::core::panic!("{}", message))
                } else {
                    quote_spanned!(*span=> {
                        let _ = message;
                        ::core::time::Duration::ZERO
                    })
                };
                quote_spanned!(*span=> {
                    let seconds: f64 = #expr;
                    match #krate::__private::seconds(#krate::__private::Key::#which, seconds) {
                        ::core::result::Result::Ok(duration) => duration,
                        ::core::result::Result::Err(message) => #invalid,
                    }
                })
            }
        };
        quote!(let #builder = #builder.#setter(#argument);)
    });
    // A conflict between the values (a `base_delay` above the default `max_delay`) shows on
    // the delay that was given.
    let conflict = given
        .iter()
        .find(|g| matches!(g.key, Key::BaseDelay | Key::MaxDelay))
        .map_or_else(Span::call_site, |g| g.span);
    let invalid = if checked {
        quote_spanned!(conflict=> ::core::panic!("{}", error.message()))
    } else {
        quote_spanned!(conflict=> {
            let _ = error;
            #krate::RetryPolicy::new()
        })
    };
    let build = quote_spanned!(conflict=>
        match #builder.build() {
            ::core::result::Result::Ok(policy) => policy,
            ::core::result::Result::Err(error) => #invalid,
        }
    );
    // The constant block yields a `&'static RetryPolicy`: a reference made in a constant
    // points at a static allocation, so the function (and its future) holds one pointer, not
    // the policy.
    quote!((const {
        &{
            let #builder = #krate::RetryPolicy::builder();
            #(#steps)*
            #build
        }
    }))
}

// Input:  the parameters and the body.
// Output: `let fresh = |(url, ()): (&_, ())| (ClonedPerAttempt::fresh(url), ());
//         let mut attempt = each_attempt(shape_from((&url, ()), &fresh), |(url, ())| -> Ret {
//             rebinds; body });`
//         (`each_async_attempt` and an `async` closure for an `async fn`). By-value arguments
//         arrive as the closure's parameters, copies made by `fresh` (in this one place, so a
//         missing `Clone` is reported once) or, for the last attempt, the caller's values;
//         everything else is captured.
#[allow(clippy::too_many_arguments)]
fn attempt_closure(
    sig: &syn::Signature,
    carried: &[Carried],
    rebinds: &[TokenStream],
    rewound: &[Rewound],
    body: &TokenStream,
    types: &Types,
    krate: &TokenStream,
    names: &Names,
) -> TokenStream {
    let attempt = names.local("attempt");
    let fresh = names.local("fresh");
    let refs = borrowed_arguments(carried);
    let shape = quote!(#krate::__private::shape_from(#refs, &#fresh));
    let pattern = nested(carried.iter().map(|c| c.pattern.clone()));
    let ret_arrow = &types.ret_arrow;
    let (rewind_start, rewind_each) = rewinding(rewound, types, krate, names);
    let inner = quote!({
        #(#rebinds)*
        #rewind_each
        { #body }
    });
    let closure = if sig.asyncness.is_some() {
        // An async body's `return`s and tail coerce to its output type only once that type is
        // fixed; a `return` of it, never taken, fixes it first (as async-trait does), so that
        // `Ok(Box::new(x))` still becomes a `Box<dyn Trait>`.
        let typed = names.local("typed");
        let inner = match &types.ret {
            Some(ret) => quote!({
                if let ::core::option::Option::Some(#typed) = ::core::option::Option::None::<#ret> {
                    #[allow(unreachable_code)]
                    return #typed;
                }
                #inner
            }),
            None => inner,
        };
        quote!(#krate::requirements::each_async_attempt(#shape, async |#pattern| #ret_arrow #inner))
    } else {
        quote!(#krate::requirements::each_attempt(#shape, |#pattern| #ret_arrow #inner))
    };
    let fresh_copies = fresh_closure(carried, krate);
    quote!(
        #rewind_start
        // Its parameter's references are written `&_`, so the closure takes references of any
        // lifetime: it copies the caller's values here and a moved tuple's in the retries.
        #[allow(unused_variables)]
        let #fresh = #fresh_copies;
        #[allow(unused_mut)]
        let mut #attempt = #closure;
    )
}

/// For each `#[rewind]` parameter: where it stands as the call starts (noted before the first
/// attempt), and, at the top of every attempt, a seek back there; when that fails, the
/// attempt returns the give-up error at once (an inner give-up is never retried).
fn rewinding(
    rewound: &[Rewound],
    types: &Types,
    krate: &TokenStream,
    names: &Names,
) -> (TokenStream, TokenStream) {
    let mut start = TokenStream::new();
    let mut each = TokenStream::new();
    let holds = &types.holds_give_up;
    for (
        n,
        Rewound {
            ident,
            cfgs,
            by_value,
            span,
        },
    ) in rewound.iter().enumerate()
    {
        let state = names.local(&format!("rewind{n}"));
        let name = ident.to_string();
        // Spanned at the parameter's type, the crate path included: a type that is not
        // `Seek` is reported there.
        let target = if *by_value {
            quote_spanned!(*span=> &mut #ident)
        } else {
            quote_spanned!(*span=> &mut *#ident)
        };
        if *by_value {
            start.extend(quote!(#cfgs #[allow(unused_mut)] let mut #ident = #ident;));
        }
        let here = respanned(krate, *span);
        start.extend(quote_spanned!(*span=>
            #cfgs let mut #state = #here::__private::Rewind::start(
                #here::requirements::rewindable(#target),
                #name,
            );
        ));
        let give_up = names.local("give_up");
        let gave_up = types.returned(
            quote!(::core::result::Result::Err(#holds::from_give_up(#give_up))),
            names.ret_span,
        );
        each.extend(quote!(
            #cfgs
            if let ::core::result::Result::Err(#give_up) = #state.before_attempt(#target) {
                return #gave_up;
            }
        ));
    }
    (start, each)
}

/// `(&url, (&body, ()))`: the by-value arguments, borrowed, for `fresh` to copy.
fn borrowed_arguments(carried: &[Carried]) -> TokenStream {
    nested(carried.iter().map(|c| {
        let outer = &c.outer;
        quote!(&#outer)
    }))
}

/// `(url, (body, ()))`: the by-value arguments themselves, for the last attempt.
fn moved_arguments(carried: &[Carried]) -> TokenStream {
    nested(carried.iter().map(|c| c.outer.clone()))
}

/// A name for each by-value argument that a pattern can bind (`self` cannot be).
fn argument_names(carried: &[Carried]) -> Vec<TokenStream> {
    carried
        .iter()
        .enumerate()
        .map(|(index, c)| {
            if c.outer.to_string() == "self" {
                let name = format_ident!("__resilience_arg_{}", index, span = Span::mixed_site());
                quote!(#name)
            } else {
                c.outer.clone()
            }
        })
        .collect()
}

/// `|(url, (body, ())): (&_, (&_, ()))| (fresh(url), (fresh(body), ()))`: copies of the
/// arguments.
fn fresh_closure(carried: &[Carried], krate: &TokenStream) -> TokenStream {
    let names = argument_names(carried);
    let pattern = nested(names.iter().cloned());
    let refs = nested(carried.iter().map(|_| quote!(&_)));
    let copies = nested(carried.iter().zip(&names).map(|(c, name)| {
        let span = c.span;
        quote_spanned!(span=> #krate::requirements::ClonedPerAttempt::fresh(&*#name))
    }));
    quote!(|#pattern: #refs| #copies)
}

/// `|(url, (body, ()))| fresh((url, (body, ())))`: `fresh` for a borrowed tuple of the
/// arguments, as the blocking retry loop holds them.
fn fresh_of_tuple(carried: &[Carried], names: &Names) -> TokenStream {
    let fresh = names.local("fresh");
    let pattern = nested(argument_names(carried).into_iter());
    quote!(|#pattern| #fresh(#pattern))
}

/// `(a, (b, ()))`: the nested tuple the attempt's by-value arguments travel in.
fn nested(items: impl DoubleEndedIterator<Item = TokenStream>) -> TokenStream {
    items
        .rev()
        .fold(quote!(()), |rest, item| quote!((#item, #rest)))
}

/// What the failure path needs to know about an error, as closures for the runtime: `read`
/// (the rules' answer, with a `retry_if` asked first), `text` (the error's text with its
/// causes, as the rules read it: formatted only when shown) and `keep` (the error boxed for
/// the give-up error, when its type allows).
struct Rules {
    read: TokenStream,
    text: TokenStream,
    keep: TokenStream,
    /// The `on_retry` hook, as `|&E, attempt, wait|`, or one that does nothing.
    on_retry: TokenStream,
}

fn rules(settings: &Settings, types: &Types, names: &Names) -> Rules {
    let krate = &settings.krate;
    let error = names.local("error");
    let seen = names.local("seen");
    let asked = match &settings.retry_if {
        // Errors about the predicate's signature belong on the predicate.
        Some(predicate) => {
            let span = predicate.span();
            let error = format_ident!(
                "__resilience_error",
                span = Span::mixed_site().located_at(span)
            );
            quote_spanned!(span=> ::core::option::Option::Some(
                #krate::requirements::PredicateAnswer::into_verdict((#predicate)(#error))
            ))
        }
        None => quote!(::core::option::Option::None),
    };
    let loggable = &types.loggable;
    let err_span = names.err_span;
    let see = quote!({
        #[allow(unused_imports)]
        use #krate::__private::{SeeChain as _, SeeOwn as _, SeeOwnAndChain as _, SeeText as _};
        (&&&&#krate::__private::Probe(#error)).__resilience_see()
    });
    let text_of = quote_spanned!(err_span=> #loggable::text(#error, #seen.chain));
    let asked_name = names.local("asked");
    let read = quote!(|#error| {
        let #seen = #see;
        // A `retry_if` closure is called where it is written.
        #[allow(clippy::redundant_closure_call)]
        let #asked_name = #asked;
        #krate::__private::classify(#seen, || #text_of, #asked_name)
    });
    let text = quote!(|#error| {
        let #seen = #see;
        #text_of
    });
    let keep = quote!(|#error| {
        #[allow(unused_imports)]
        use #krate::__private::{KeepBoxed as _, KeepText as _, KeepTyped as _};
        (&&&#krate::__private::Keep::new(#error)).__resilience_keep()
    });
    let on_retry = match &settings.on_retry {
        Some(hook) => {
            let [cause, attempt, wait] = ["cause", "attempt", "wait"].map(|name| {
                format_ident!(
                    "__resilience_{}",
                    name,
                    span = Span::mixed_site().located_at(hook.span())
                )
            });
            quote_spanned!(hook.span()=>
                |#cause, #attempt: u32, #wait: ::core::time::Duration| {
                    // A closure is called where it is written.
                    #[allow(clippy::redundant_closure_call)]
                    (#hook)(#cause, #attempt, #wait)
                }
            )
        }
        None => quote!(|_, _: u32, _: ::core::time::Duration| {}),
    };
    Rules {
        read,
        text,
        keep,
        on_retry,
    }
}

/// `return`s the function's value for an ending: the error itself, or the give-up error
/// converted into the function's error type.
fn end(ending: TokenStream, types: &Types, settings: &Settings, names: &Names) -> TokenStream {
    let krate = &settings.krate;
    let error = names.local("error");
    let give_up = names.local("give_up");
    let hook = on_give_up(settings, &give_up);
    let holds = &types.holds_give_up;
    let from_give_up = quote_spanned!(names.err_span=> #holds::from_give_up(#give_up));
    let not_retryable = types.returned(quote!(::core::result::Result::Err(#error)), names.ret_span);
    let gave_up = types.returned(
        quote!(::core::result::Result::Err(#from_give_up)),
        names.ret_span,
    );
    quote!(match #ending {
        #krate::__private::Ending::NotRetryable(#error) => #not_retryable,
        #krate::__private::Ending::GaveUp(#give_up) => {
            #hook
            #gave_up
        }
    })
}

/// The `not_ready` predicate as `|&T| -> bool`, or one that calls every value ready.
fn not_ready_predicate(settings: &Settings) -> TokenStream {
    match &settings.not_ready {
        Some(predicate) => {
            let value = format_ident!(
                "__resilience_value",
                span = Span::mixed_site().located_at(predicate.span())
            );
            quote_spanned!(predicate.span()=>
                |#value: &_| -> bool {
                    // A closure is called where it is written.
                    #[allow(clippy::redundant_closure_call)]
                    (#predicate)(#value)
                }
            )
        }
        None => quote!(|_: &_| false),
    }
}

/// The `on_give_up` hook's call on `give_up` (a `&MediaProcessingError`), inline, or nothing.
fn on_give_up(settings: &Settings, give_up: &syn::Ident) -> TokenStream {
    match &settings.on_give_up {
        Some(hook) => quote_spanned!(hook.span()=>
            // A closure is called where it is written.
            #[allow(clippy::redundant_closure_call)]
            (#hook)(&#give_up);
        ),
        None => TokenStream::new(),
    }
}

/// The function's value for what the retry loop returned: the success, the error itself, or
/// the give-up error converted into the function's error type.
fn ending_of(
    result: TokenStream,
    types: &Types,
    settings: &Settings,
    names: &Names,
) -> TokenStream {
    let value = names.local("value");
    let ending = names.local("ending");
    let ok = types.returned(quote!(::core::result::Result::Ok(#value)), names.ret_span);
    let end = end(quote!(#ending), types, settings, names);
    quote!(match #result {
        ::core::result::Result::Ok(#value) => #ok,
        ::core::result::Result::Err(#ending) => #end,
    })
}

// Input:  the policy, the attempt closure, the by-value arguments.
// Output: the first attempt inline, returning at once when it succeeds; after a failure, one
//         cold call into the runtime's retry loop, which takes the arguments and gives the
//         last attempt the caller's values.
fn sync_run(
    settings: &Settings,
    policy: &PolicyRef,
    carried: &[Carried],
    types: &Types,
    names: &Names,
) -> TokenStream {
    let krate = &settings.krate;
    let rt = quote!(#krate::__private);
    let PolicyRef {
        checked,
        value: policy,
        ..
    } = policy;
    let [attempt, error, args, outcome, fresh] =
        ["attempt", "error", "args", "outcome", "fresh"].map(|name| names.local(name));
    let Rules {
        read,
        text,
        keep,
        on_retry,
    } = rules(settings, types, names);
    let site = site(krate, names);
    let (started_prelude, started) = started(settings, policy, quote!(#rt::now_current), names);
    let borrowed = borrowed_arguments(carried);
    let moved = moved_arguments(carried);
    let fresh_of_tuple = fresh_of_tuple(carried, names);
    let into_result = |value: TokenStream| types.result_of(value, names.ret_span);
    let attempt_result = into_result(quote!(#attempt(#args)));
    let not_ready = not_ready_predicate(settings);
    let marker = names.local("ok_type");
    let retried = |failure: TokenStream| {
        ending_of(
            quote!(#rt::retry_blocking(
                #policy,
                #site,
                #started,
                #failure,
                #moved,
                |#args| #attempt_result,
                #fresh_of_tuple,
                #read,
                #text,
                #keep,
                #on_retry,
                #not_ready,
            )),
            types,
            settings,
            names,
        )
    };
    let only = |failure: TokenStream| {
        end(
            quote!(#rt::only_attempt_failed(
                #policy, #site, #started, #failure, #read, #text, #keep,
            )),
            types,
            settings,
            names,
        )
    };
    let retried_error = retried(quote!(#rt::Failure::Error(#error)));
    let only_error = only(quote!(#rt::failed(#error, #marker)));
    // Only with `not_ready`: a value it calls not ready fails the attempt.
    let (unready_first, unready_only) = match &settings.not_ready {
        Some(_) => {
            // The value goes to the decision, where `on_retry` sees it, and is dropped there,
            // before the wait.
            let retried = retried(quote!(#rt::Failure::NotReady(#outcome)));
            let only = only(quote!(#rt::Failure::NotReady(#outcome)));
            (
                quote!(::core::result::Result::Ok(#outcome) if (#not_ready)(&#outcome) => #retried,),
                quote!(::core::result::Result::Ok(#outcome) if (#not_ready)(&#outcome) => #only,),
            )
        }
        None => (TokenStream::new(), TokenStream::new()),
    };
    let first = into_result(quote!(#attempt(#fresh(#borrowed))));
    let only_attempt = into_result(quote!(#attempt(#moved)));
    let only_result = names.local("only_result");
    let fix_error = types.fix_error_type(&error, names.ret_span);
    let ok = types.returned(quote!(::core::result::Result::Ok(#outcome)), names.ret_span);
    quote!(
        #started_prelude
        if #checked.max_retries() > 1 {
            match #first {
                #unready_first
                ::core::result::Result::Ok(#outcome) => #ok,
                ::core::result::Result::Err(#error) => {
                    #fix_error
                    #retried_error
                }
            }
        } else {
            // The only attempt takes the caller's values.
            let #only_result = #only_attempt;
            let #marker = #rt::ok_type(&#only_result);
            match #only_result {
                #unready_only
                ::core::result::Result::Ok(#outcome) => #ok,
                ::core::result::Result::Err(#error) => {
                    #fix_error
                    #only_error
                }
            }
        }
    )
}

// Input:  as `sync_run`, for an `async fn`.
// Output: the first attempt awaited inline; after a failure, the rest in a boxed future, so
//         the function's own future stays the plain one's size.
fn async_run(
    settings: &Settings,
    policy: &PolicyRef,
    carried: &[Carried],
    types: &Types,
    names: &Names,
    sig: &syn::Signature,
) -> TokenStream {
    let krate = &settings.krate;
    let rt = quote!(#krate::__private);
    let PolicyRef {
        checked,
        value: policy,
        ..
    } = policy;
    let [
        attempt,
        error,
        attempts,
        wait,
        ending,
        passed,
        outcome,
        retries,
        fresh_fn,
    ] = [
        "attempt", "error", "attempts", "wait", "ending", "passed", "outcome", "retries", "fresh",
    ]
    .map(|name| names.local(name));
    let Rules {
        read,
        text,
        keep,
        on_retry,
    } = rules(settings, types, names);
    let site = site(krate, names);
    let borrowed = borrowed_arguments(carried);
    let fresh = quote!(#fresh_fn(#borrowed));
    let last = moved_arguments(carried);
    let (started_prelude, started) = started(settings, policy, quote!(#rt::now_async), names);
    let holds = &types.holds_give_up;
    let cut_off = |attempts: TokenStream| {
        let cut = names.local("give_up");
        let hook = on_give_up(settings, &cut);
        let give_up = quote_spanned!(names.err_span=> {
            let #cut = #attempts.deadline_passed(#passed);
            #hook
            #holds::from_give_up(#cut)
        });
        types.returned(
            quote!(::core::result::Result::Err(#give_up)),
            names.ret_span,
        )
    };
    let cuts = settings.policy.may_cut_attempts();
    let label = syn::Lifetime::new("'__resilience_attempt", Span::mixed_site());
    let failure = names.local("failure");
    let not_ready = not_ready_predicate(settings);
    // One attempt, as a block that evaluates to its `Failure`, or runs `on_ok` with the
    // function's value (which returns). The attempt runs to its end, or, with a timeout,
    // until its deadline: the call's (`timeout`), then the call gives up at once with
    // `DeadlineExceeded`; or its own (`attempt_timeout`), then it failed as `TimedOut`.
    let attempt_block = |future: TokenStream,
                         call_deadline: TokenStream,
                         attempts: TokenStream,
                         on_ok: &dyn Fn(TokenStream) -> TokenStream,
                         fix: &TokenStream| {
        let run = if cuts {
            let cut_off = cut_off(attempts);
            // Nothing of the deadline is held across the `.await` but the timer itself: which
            // deadline ran out is asked afterwards, only when one did.
            quote!(match #rt::until_deadline(
                #rt::attempt_deadline(#policy, #call_deadline, #rt::now_async),
                #future,
            )
            .await
            {
                ::core::result::Result::Ok(#outcome) => #outcome,
                ::core::result::Result::Err(#passed)
                    if #rt::ends_the_call(#policy, #call_deadline, #rt::now_async) =>
                {
                    return #cut_off
                }
                ::core::result::Result::Err(_) => break #label #rt::Failure::TimedOut,
            })
        } else {
            quote!(#future.await)
        };
        let unready = settings.not_ready.as_ref().map(|_| {
            quote!(if (#not_ready)(&#outcome) {
                break #label #rt::Failure::NotReady(#outcome);
            })
        });
        let value = names.local("value");
        let ok = types.returned(quote!(::core::result::Result::Ok(#value)), names.ret_span);
        let on_ok = on_ok(ok);
        let result = types.result_of(quote!(#outcome), names.ret_span);
        let marker = names.local("ok_type");
        quote!(#label: {
            let #outcome = #run;
            let #outcome = #result;
            let #marker = #rt::ok_type(&#outcome);
            match #outcome {
                ::core::result::Result::Ok(#outcome) => {
                    #unready
                    let #value = #outcome;
                    #on_ok
                }
                ::core::result::Result::Err(#error) => {
                    #fix
                    #rt::failed(#error, #marker)
                }
            }
        })
    };
    let fix_error = types.fix_error_type(&error, names.ret_span);
    let nothing = TokenStream::new();
    let before_any = quote!(#rt::Attempts::after_first(#policy, #site, #started));
    let first = attempt_block(
        quote!(#attempt(#fresh)),
        quote!(#rt::deadline(#policy, #started)),
        before_any.clone(),
        &|ok| quote!(return #ok),
        &fix_error,
    );
    let next = attempt_block(
        quote!(#attempt(#fresh)),
        quote!(#attempts.deadline()),
        quote!(#attempts),
        &|ok| quote!({ #attempts.succeeded(); return #ok; }),
        &nothing,
    );
    let end_first = end(quote!(#ending), types, settings, names);
    let end_loop = end(quote!(#ending), types, settings, names);
    let end_last = end(quote!(#ending), types, settings, names);
    let decide = |end: &TokenStream| {
        quote!(match #attempts.after(#failure, #read, #text, #keep, #on_retry, #rt::now_async) {
            ::core::result::Result::Ok(#wait) => #wait,
            ::core::result::Result::Err(#ending) => return #end,
        })
    };
    let first_decision = decide(&end_first);
    let next_decision = decide(&end_loop);
    let last_attempt = attempt_block(
        quote!(#attempt(#last)),
        quote!(#attempts.deadline()),
        quote!(#attempts),
        &|ok| quote!({ #attempts.succeeded(); return #ok; }),
        &nothing,
    );
    let last_after_retries = quote!({
        let #failure = #last_attempt;
        let #ending = #attempts.after_last(#failure, #read, #text, #keep);
        #end_last
    });
    let end_only = end(quote!(#ending), types, settings, names);
    let only_attempt = attempt_block(
        quote!(#attempt(#last)),
        quote!(#rt::deadline(#policy, #started)),
        before_any.clone(),
        &|ok| quote!(return #ok),
        &fix_error,
    );
    let only = quote!({
        let #failure = #only_attempt;
        let mut #attempts = #before_any;
        let #ending = #attempts.after_last(#failure, #read, #text, #keep);
        #end_only
    });
    let require_runtime = match &sig.asyncness {
        Some(asyncness) => {
            // The crate path too, or its call-site span would carry the error to the
            // attribute instead of the `async` it is about.
            let krate = respanned(krate, asyncness.span);
            quote_spanned!(asyncness.span=>
                <#krate::requirements::Tokio as #krate::requirements::AsyncRuntime>::available();
            )
        }
        None => TokenStream::new(),
    };
    // No error is held across a wait: each is decided on before the next `.await`, so an
    // error type that is not `Send` never makes the future non-`Send`.
    quote!(
        #require_runtime
        #started_prelude
        if #checked.max_retries() > 1 {
            let #failure = #first;
            // The retry state is made in this block, whose locals end before the `.await`:
            // only the box is kept across it, so the function's future stays small.
            let #retries = {
                let mut #attempts = #before_any;
                let #wait = #first_decision;
                #rt::boxed(async move {
                    let mut #wait = #wait;
                    loop {
                        #rt::sleep_async(#wait).await;
                        if #attempts.is_last() {
                            break;
                        }
                        let #failure = #next;
                        #wait = #next_decision;
                    }
                    // The last attempt takes the caller's values.
                    #last_after_retries
                })
            };
            return #retries.await;
        }
        // The only attempt (`max_retries = 1`) takes the caller's values.
        #only
    )
}

// Input:  `breaker = GEMINI, limiter = PER_MODEL.key(&model)` and what `sync_run` takes.
// Output: the guards, taken at the start of the call, then every attempt, the first too,
//         inside one runtime loop (`guarded_blocking`, or `guarded_async` on tokio's timer):
//         ```ignore
//         let guards = Guards::new().breaker(&(GEMINI)).limiter(&(PER_MODEL.key(&model)));
//         match guarded_blocking(POLICY, site, started, guards, (url, ()), |args| attempt(args),
//                                fresh, read, text, keep, on_retry, not_ready) {
//             Ok(value) => Ok(value),
//             Err(ending) => end(ending),
//         }
//         ```
fn guarded_run(
    settings: &Settings,
    policy: &PolicyRef,
    carried: &[Carried],
    types: &Types,
    names: &Names,
    sig: &syn::Signature,
) -> TokenStream {
    let krate = &settings.krate;
    let rt = quote!(#krate::__private);
    let PolicyRef {
        checked: policy, ..
    } = policy;
    let [attempt, args, outcome, guards] =
        ["attempt", "args", "outcome", "guards"].map(|name| names.local(name));
    let Rules {
        read,
        text,
        keep,
        on_retry,
    } = rules(settings, types, names);
    let site = site(krate, names);
    let moved = moved_arguments(carried);
    let fresh_of_tuple = fresh_of_tuple(carried, names);
    let not_ready = not_ready_predicate(settings);
    let taken = guards_taken(&settings.guards);
    let result = types.result_of(quote!(#outcome), names.ret_span);
    let Some(asyncness) = &sig.asyncness else {
        let (prelude, started) = started(settings, policy, quote!(#rt::now_current), names);
        let attempt_result = types.result_of(quote!(#attempt(#args)), names.ret_span);
        let ending = ending_of(
            quote!(#rt::guarded_blocking(
                #policy,
                #site,
                #started,
                #guards,
                #moved,
                |#args| #attempt_result,
                #fresh_of_tuple,
                #read,
                #text,
                #keep,
                #on_retry,
                #not_ready,
            )),
            types,
            settings,
            names,
        );
        return quote!(
            #prelude
            // Taken once per call, before its first attempt: a keyed guard's key is looked up
            // once, and every attempt of the call shares what it found.
            let #guards = #rt::Guards::new() #taken;
            #ending
        );
    };
    // An `async fn` drives the steps itself, in its own body: an attempt closure handed to a
    // generic async loop would make the function's future `Send` for no caller whose
    // arguments are references (rustc cannot prove it for every lifetime).
    let (prelude, started) = started(settings, policy, quote!(#rt::now_async), names);
    let krate_at_async = respanned(krate, asyncness.span);
    let [
        call,
        wait,
        last,
        given,
        deadline,
        passed,
        failure,
        ending,
        value,
        give_up,
    ] = [
        "call", "wait", "last", "given", "deadline", "passed", "failure", "ending", "value",
        "give_up",
    ]
    .map(|name| names.local(name));
    let end_with = |ending_expr: TokenStream| {
        let end = end(quote!(#ending), types, settings, names);
        quote!({
            let #ending = #ending_expr;
            return #end;
        })
    };
    let refused = end_with(quote!(#rt::Ending::GaveUp(#give_up)));
    let unpaid = end_with(quote!(#rt::Ending::GaveUp(#give_up)));
    let ran_out = end_with(quote!(#rt::Ending::GaveUp(#call.ran_out())));
    let cut_off = end_with(quote!(#rt::Ending::GaveUp(
        #call.deadline_passed(#passed, #rt::now_async)
    )));
    let after_last =
        end_with(quote!(#call.after_last(#failure, #read, #text, #keep, #rt::now_async)));
    let after = end(quote!(#ending), types, settings, names);
    let ok = types.returned(quote!(::core::result::Result::Ok(#value)), names.ret_span);
    quote!(
        <#krate_at_async::requirements::Tokio as #krate_at_async::requirements::AsyncRuntime>::available();
        #prelude
        // Taken once per call, before its first attempt: a keyed guard's key is looked up
        // once, and every attempt of the call shares what it found.
        let mut #call = #rt::GuardedCall::start(
            #policy,
            #site,
            #started,
            #rt::Guards::new() #taken,
            #rt::now_async,
        );
        let mut #args = ::core::option::Option::Some(#moved);
        loop {
            match #call.admit_async(#rt::now_async).await {
                ::core::result::Result::Ok(#wait) if #wait.is_zero() => {}
                ::core::result::Result::Ok(#wait) => #rt::sleep_async(#wait).await,
                ::core::result::Result::Err(#give_up) => #refused,
            }
            let #last = #call.is_last();
            let #given = match #rt::arguments(&mut #args, #last, #fresh_of_tuple) {
                ::core::option::Option::Some(#given) => #given,
                ::core::option::Option::None => #ran_out,
            };
            let #deadline = #call.deadline();
            let #failure = match #rt::until_deadline(
                #rt::attempt_deadline(#policy, #deadline, #rt::now_async),
                #attempt(#given),
            )
            .await
            {
                ::core::result::Result::Ok(#outcome) => {
                    match #rt::failure_of(#result, #not_ready) {
                        ::core::result::Result::Ok(#value) => {
                            #call.succeeded(#rt::now_async);
                            return #ok;
                        }
                        ::core::result::Result::Err(#failure) => #failure,
                    }
                }
                ::core::result::Result::Err(#passed)
                    if #rt::ends_the_call(#policy, #deadline, #rt::now_async) =>
                {
                    #cut_off
                }
                ::core::result::Result::Err(_) => #rt::Failure::TimedOut,
            };
            if #last {
                #after_last
            }
            let #wait = match #call.after(#failure, #read, #text, #keep, #on_retry, #rt::now_async) {
                ::core::result::Result::Ok(#wait) => #wait,
                ::core::result::Result::Err(#ending) => return #after,
            };
            // A fleet's budget pays for the retry here, where its answer can be awaited.
            if let ::core::result::Result::Err(#give_up) = #call.pay_async(#rt::now_async).await {
                #unpaid
            }
            #rt::sleep_async(#wait).await;
        }
    )
}

/// `.breaker(&(EXPR))..` for each guard named, each spanned at its expression, where an
/// error about its type belongs.
fn guards_taken(guards: &Guards) -> TokenStream {
    let mut taken = TokenStream::new();
    for (setter, expr) in [
        ("breaker", &guards.breaker),
        ("limiter", &guards.limiter),
        ("budget", &guards.budget),
    ] {
        if let Some(expr) = expr {
            let setter = syn::Ident::new(setter, expr.span());
            taken.extend(quote_spanned!(expr.span()=> .#setter(&(#expr))));
        }
    }
    taken
}

/// `E` in a return type written `Result<T, E>` (`std::result::Result<T, E>`, or an alias
/// named `Result` with both parameters). Any other form names its error type through
/// `ReturnsResult`.
fn written_error_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .filter_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .nth(1)
}

/// Whether `impl Trait` appears anywhere in `ty` (it cannot be named in a function body).
fn mentions_impl_trait(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    walk(quote!(#ty))
}

/// `tokens` with every token's span set to `span`: where an error about them is reported.
fn respanned(tokens: &TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}
