//! The annotated item, split where the expansion needs it, and written back as it was (the
//! fallback output when an argument is wrong, so the user sees only our error).

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, FnArg, Signature, Token, Visibility, braced, token};

/// The annotated function.
pub struct RetryFn {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    /// The body's braces, kept so that rustc's suggestions at the body read right.
    pub brace: token::Brace,
    pub inner_attrs: Vec<Attribute>,
    /// `None` for a trait method without a default body. Kept as tokens: rustc parses it,
    /// and reports its mistakes better than a macro could.
    pub body: Option<TokenStream>,
}

impl Parse for RetryFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse().map_err(|_| {
            syn::Error::new(
                input.span(),
                "`#[retry_with_backoff]` goes on a function or method: it retries calls; to retry a closure, use `(|| ..).retry(&policy)` from `resilience::BlockingRetryable` or `Retryable`",
            )
        })?;
        if input.peek(Token![;]) {
            input.parse::<Token![;]>()?;
            return Ok(Self {
                attrs,
                vis,
                sig,
                brace: token::Brace::default(),
                inner_attrs: Vec::new(),
                body: None,
            });
        }
        let content;
        let brace = braced!(content in input);
        Ok(Self {
            attrs,
            vis,
            sig,
            brace,
            inner_attrs: content.call(Attribute::parse_inner)?,
            body: Some(content.parse()?),
        })
    }
}

impl ToTokens for RetryFn {
    /// The item as it was written (minus `#[no_clone]` and `#[rewind]`): the fallback output
    /// on errors.
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let Self {
            attrs,
            vis,
            sig,
            brace,
            inner_attrs,
            body,
        } = self;
        let mut sig = sig.clone();
        for arg in &mut sig.inputs {
            match arg {
                FnArg::Typed(typed) => typed.attrs.retain(|a| !is_no_clone(a) && !is_rewind(a)),
                FnArg::Receiver(receiver) => {
                    receiver.attrs.retain(|a| !is_no_clone(a) && !is_rewind(a))
                }
            }
        }
        match body {
            Some(body) => {
                quote!(#(#attrs)* #vis #sig).to_tokens(tokens);
                brace.surround(tokens, |tokens| {
                    quote!(#(#inner_attrs)* #body).to_tokens(tokens);
                });
            }
            None => quote!(#(#attrs)* #vis #sig;).to_tokens(tokens),
        }
    }
}

/// `#[no_clone]`: the parameter is borrowed by every attempt, not cloned.
pub fn is_no_clone(attr: &Attribute) -> bool {
    attr.path().is_ident("no_clone")
}

/// `#[rewind]`: a file or reader, borrowed by every attempt and put back where the call
/// started before each retry.
pub fn is_rewind(attr: &Attribute) -> bool {
    attr.path().is_ident("rewind")
}
