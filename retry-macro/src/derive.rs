//! `#[derive(Classify)]`: each variant is classified as the error it wraps, or as its
//! `#[classify(..)]` says; the built-in rules decide the rest (the README's "Classification").
//!
//! Input:
//! ```ignore
//! #[derive(Debug, thiserror::Error, Classify)]
//! enum ApiError {
//!     #[error(transparent)]
//!     Request(#[from] reqwest::Error),
//!     #[error("the key was refused")]
//!     #[classify(not_retryable)]
//!     Auth { status: u16 },
//!     #[error("{0}")]
//!     Other(String),
//! }
//! ```
//! Output (simplified: the probes are the attribute's, see `__private`):
//! ```ignore
//! impl Classify for ApiError {
//!     fn classify(&self) -> Verdict { derived(self, chain_of(self), || text_of(self)).verdict }
//!     fn retry_after(&self) -> Option<Duration> { derived(..).retry_after }
//!     fn __resilience_own_answer(&self) -> Option<Classified> {
//!         match self {
//!             Self::Request(field) => field_answer(see(field)),   // as `reqwest::Error` is
//!             Self::Auth { .. } => declared(Verdict::NotRetryable),
//!             _ => None,                                           // the text decides
//!         }
//!     }
//!     fn __resilience_chain(&self) -> Option<&(dyn Error + 'static)> { chain_of(self) }
//! }
//! ```

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, Member};

use crate::errors::Errors;

pub fn expand(input: DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let answers = answers(&input, &mut errors);
    match errors.finish(()) {
        Ok(()) => implementation(&input, answers),
        // A stand-in impl, so the user sees our error and not "`Classify` is not implemented"
        // at every place that uses the type.
        Err(error) => {
            let error = error.to_compile_error();
            let stub = stub(&input);
            quote!(#error #stub)
        }
    }
}

/// What one variant (or the struct) answers before the built-in rules run.
enum Answer {
    /// `#[classify(retryable)]` / `#[classify(not_retryable)]`.
    Declared(bool),
    /// Classified as this field's type is.
    Field(Box<Wrapped>),
    /// Left to the built-in rules over the text and the chain.
    Rules,
}

/// The field a variant wraps.
struct Wrapped {
    member: Member,
    ty: syn::Type,
    /// Marked `#[from]` or `#[source]`, or named `source`: thiserror requires it to be an
    /// `std::error::Error`, so the derive may too.
    is_source: bool,
}

/// One arm of the answer: the pattern's path (`Self::Variant` or `Self`) and its answer.
struct Arm {
    path: TokenStream,
    fields: Fields,
    answer: Answer,
}

fn answers(input: &DeriveInput, errors: &mut Errors) -> Vec<Arm> {
    match &input.data {
        Data::Struct(data) => {
            let answer = answer(&input.attrs, &data.fields, errors);
            vec![Arm {
                path: quote!(Self),
                fields: data.fields.clone(),
                answer,
            }]
        }
        Data::Enum(data) => {
            for attr in input.attrs.iter().filter(|a| is_classify(a)) {
                errors.spanned(
                    attr,
                    "`#[classify(..)]` goes on a variant of the enum, not on the enum itself",
                );
            }
            data.variants
                .iter()
                .map(|variant| {
                    let ident = &variant.ident;
                    Arm {
                        path: quote!(Self::#ident),
                        fields: variant.fields.clone(),
                        answer: answer(&variant.attrs, &variant.fields, errors),
                    }
                })
                .collect()
        }
        Data::Union(data) => {
            errors.at(
                data.union_token.span,
                "`Classify` cannot be derived for a union: derive it for an enum or a struct, or implement `resilience::Classify` by hand",
            );
            Vec::new()
        }
    }
}

fn answer(attrs: &[Attribute], fields: &Fields, errors: &mut Errors) -> Answer {
    for field in fields {
        for attr in field.attrs.iter().filter(|a| is_classify(a)) {
            errors.spanned(
                attr,
                "`#[classify(..)]` goes on the variant, not on one of its fields",
            );
        }
    }
    match declared(attrs, errors) {
        Some(retryable) => Answer::Declared(retryable),
        None => match wrapped_field(fields) {
            Some(wrapped) => Answer::Field(Box::new(wrapped)),
            None => Answer::Rules,
        },
    }
}

/// The `retryable` / `not_retryable` of the `#[classify(..)]` attributes, checked.
fn declared(attrs: &[Attribute], errors: &mut Errors) -> Option<bool> {
    let mut found: Option<(bool, Ident)> = None;
    for attr in attrs.iter().filter(|a| is_classify(a)) {
        let parsed = attr.parse_nested_meta(|meta| {
            let Some(ident) = meta.path.get_ident().cloned() else {
                return Err(meta.error(EXPECTED));
            };
            let retryable = match ident.to_string().as_str() {
                "retryable" => true,
                "not_retryable" => false,
                other => {
                    return Err(meta.error(format!("unknown `classify` option `{other}`; {EXPECTED}")));
                }
            };
            if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                return Err(meta.error(format!("`{ident}` takes no value: write `#[classify({ident})]`")));
            }
            match &found {
                Some((before, _)) if *before == retryable => errors.at(
                    ident.span(),
                    format!("`{ident}` is given more than once"),
                ),
                Some((_, before)) => errors.at(
                    ident.span(),
                    format!("a variant is either `retryable` or `not_retryable`, not both: remove `{before}` or `{ident}`"),
                ),
                None => found = Some((retryable, ident)),
            }
            Ok(())
        });
        let empty = matches!(&attr.meta, syn::Meta::List(list) if list.tokens.is_empty());
        match parsed {
            Ok(()) if empty => {
                errors.spanned(attr, format!("`#[classify()]` needs an option; {EXPECTED}"));
            }
            Ok(()) => {}
            // `#[classify]` alone, or `#[classify = ..]`.
            Err(_) if !matches!(attr.meta, syn::Meta::List(_)) => {
                errors.spanned(attr, format!("`#[classify]` needs an option; {EXPECTED}"));
            }
            Err(error) => errors.push(error),
        }
    }
    found.map(|(retryable, _)| retryable)
}

const EXPECTED: &str = "expected `#[classify(retryable)]` or `#[classify(not_retryable)]`";

/// The field a variant wraps: its only field, or the one thiserror calls its source
/// (`#[from]`, `#[source]`, or a field named `source`).
fn wrapped_field(fields: &Fields) -> Option<Wrapped> {
    let marked = |field: &syn::Field| {
        field
            .attrs
            .iter()
            .any(|a| a.path().is_ident("from") || a.path().is_ident("source"))
    };
    let named_source = |field: &syn::Field| field.ident.as_ref().is_some_and(|i| i == "source");
    let fields: Vec<&syn::Field> = fields.iter().collect();
    let index = fields
        .iter()
        .position(|f| marked(f))
        .or_else(|| fields.iter().position(|f| named_source(f)))
        .or_else(|| (fields.len() == 1).then_some(0))?;
    let field = fields.get(index)?;
    let member = match &field.ident {
        Some(ident) => Member::Named(ident.clone()),
        None => Member::Unnamed(syn::Index {
            index: u32::try_from(index).ok()?,
            span: field.ty.span(),
        }),
    };
    Some(Wrapped {
        member,
        ty: field.ty.clone(),
        is_source: marked(field) || named_source(field),
    })
}

/// Whether `tokens` name one of the type's generic parameters: then what the probes can see
/// depends on bounds, which the impl must state.
fn mentions(tokens: &TokenStream, generics: &syn::Generics) -> Mentions {
    let types: Vec<String> = generics
        .type_params()
        .map(|p| p.ident.to_string())
        .collect();
    let lifetimes: Vec<String> = generics
        .lifetimes()
        .map(|l| l.lifetime.ident.to_string())
        .collect();
    let mut found = Mentions::default();
    let mut tokens = tokens.clone().into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            proc_macro2::TokenTree::Ident(ident) => {
                found.type_param |= types.iter().any(|t| ident == t);
            }
            // A lifetime is a `'` punct followed by its name.
            proc_macro2::TokenTree::Punct(p) if p.as_char() == '\'' => {
                if let Some(proc_macro2::TokenTree::Ident(name)) = tokens.peek() {
                    found.lifetime |= lifetimes.iter().any(|l| name == l);
                }
            }
            proc_macro2::TokenTree::Group(group) => {
                let inner = mentions(&group.stream(), generics);
                found.type_param |= inner.type_param;
                found.lifetime |= inner.lifetime;
            }
            _ => {}
        }
    }
    found
}

#[derive(Default, Clone, Copy)]
struct Mentions {
    type_param: bool,
    lifetime: bool,
}

fn is_classify(attr: &Attribute) -> bool {
    attr.path().is_ident("classify")
}

fn implementation(input: &DeriveInput, arms: Vec<Arm>) -> TokenStream {
    let rt = quote!(::resilience::__private);
    let ident = &input.ident;
    let generics = &input.generics;
    let (impl_generics, ty_generics, _) = generics.split_for_impl();
    let mut bounds: Vec<TokenStream> = Vec::new();
    let self_ty = quote!(#ident #ty_generics);
    // A type that borrows cannot be seen as a `dyn Error + 'static`: its text alone is read.
    let self_borrows = generics.lifetimes().next().is_some();
    // With generic parameters, the probes see only what the bounds in scope say; thiserror's
    // own bounds are on its impl, not here, so the impl restates what it needs.
    if generics.type_params().next().is_some() && !self_borrows && uses_thiserror(input) {
        bounds.push(quote!(#self_ty: ::std::error::Error + 'static));
    }
    let field = format_ident!("__resilience_field", span = Span::mixed_site());
    let arms: Vec<TokenStream> = arms
        .into_iter()
        .map(
            |Arm {
                 path,
                 fields,
                 answer,
             }| {
                let any_fields = match fields {
                    Fields::Named(_) => quote!({ .. }),
                    Fields::Unnamed(_) => quote!((..)),
                    Fields::Unit => quote!(),
                };
                match answer {
                    Answer::Declared(retryable) => {
                        let verdict = if retryable {
                            quote!(Retryable)
                        } else {
                            quote!(NotRetryable)
                        };
                        quote!(#path #any_fields => #rt::declared(#rt::Verdict::#verdict),)
                    }
                    Answer::Field(wrapped) => {
                        let ty = &wrapped.ty;
                        let mentioned = mentions(&quote!(#ty), generics);
                        if mentioned.lifetime {
                            // Not `'static`: nothing typed to see; the variant's text decides.
                            return quote!(#path #any_fields => ::core::option::Option::None,);
                        }
                        if mentioned.type_param && wrapped.is_source {
                            bounds.push(quote!(#ty: ::std::error::Error + 'static));
                        }
                        let member = &wrapped.member;
                        let span = member.span();
                        let bind = quote_spanned!(span=> #member: #field);
                        quote_spanned!(span=> #path { #bind, .. } => #rt::field_answer(
                        (&&&&#rt::Probe(#field)).__resilience_see()
                    ),)
                    }
                    Answer::Rules => quote!(#path #any_fields => ::core::option::Option::None,),
                }
            },
        )
        .collect();
    let mut where_clause = generics
        .where_clause
        .clone()
        .unwrap_or_else(|| syn::WhereClause {
            where_token: Default::default(),
            predicates: Default::default(),
        });
    for bound in bounds {
        if let Ok(predicate) = syn::parse2::<syn::WherePredicate>(bound) {
            where_clause.predicates.push(predicate);
        }
    }
    // An enum without variants has no value to match on.
    let match_arms = if arms.is_empty() {
        quote!(match *self {})
    } else {
        quote!(
            #[allow(unreachable_patterns)]
            match self {
                #(#arms)*
            }
        )
    };
    let chain = if self_borrows {
        quote!(::core::option::Option::None)
    } else {
        quote!({
            #[allow(unused_imports)]
            use #rt::{ChainOfError as _, ChainOfOther as _};
            (&&#rt::SelfProbe(self)).__resilience_chain_of()
        })
    };
    let text = quote!(|| {
        #[allow(unused_imports)]
        use #rt::{TextOfDisplay as _, TextOfOther as _};
        (&&#rt::SelfProbe(self)).__resilience_text_of()
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics ::resilience::Classify for #self_ty #where_clause {
            fn classify(&self) -> ::resilience::Verdict {
                #rt::derived(self, #text).verdict
            }

            fn retry_after(&self) -> ::core::option::Option<::core::time::Duration> {
                #rt::derived(self, #text).retry_after
            }

            #[doc(hidden)]
            fn __resilience_own_answer(&self) -> ::core::option::Option<#rt::Classified> {
                #[allow(unused_imports)]
                use #rt::{SeeChain as _, SeeOwn as _, SeeOwnAndChain as _, SeeText as _};
                #match_arms
            }

            fn error_chain(
                &self,
            ) -> ::core::option::Option<&(dyn ::std::error::Error + 'static)> {
                #chain
            }
        }
    }
}

/// Whether thiserror derives the type's `Error` (an `#[error(..)]` on it or a variant): then it
/// is an `std::error::Error` wherever its own bounds hold.
fn uses_thiserror(input: &DeriveInput) -> bool {
    let has_error = |attrs: &[Attribute]| attrs.iter().any(|a| a.path().is_ident("error"));
    has_error(&input.attrs)
        || match &input.data {
            Data::Enum(data) => data.variants.iter().any(|v| has_error(&v.attrs)),
            _ => false,
        }
}

/// The impl emitted after an error: it compiles, decides nothing, and hides nothing of the
/// first error.
fn stub(input: &DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    if matches!(input.data, Data::Union(_)) {
        return TokenStream::new();
    }
    quote! {
        impl #impl_generics ::resilience::Classify for #ident #ty_generics #where_clause {
            fn classify(&self) -> ::resilience::Verdict {
                ::resilience::Verdict::Unknown
            }
        }
    }
}
