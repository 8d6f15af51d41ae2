//! Reads the annotated function: what it is, which of its forms are refused, and how each
//! parameter reaches every attempt (a fresh clone, a reborrow, or as it is).

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, Block, FnArg, GenericArgument, Ident, Pat, PatIdent, PathArguments, ReturnType,
    Signature, Stmt, Token, Type, TypeParamBound, Visibility, braced,
};

use crate::args::Errors;

/// The annotated item, split where the expansion needs it.
pub struct RetryFn {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    pub inner_attrs: Vec<Attribute>,
    /// `None` for a trait method without a default body.
    pub body: Option<Vec<Stmt>>,
}

impl Parse for RetryFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse().map_err(|_| {
            syn::Error::new(
                input.span(),
                "`#[retry_with_backoff]` goes on a function or method: it retries calls",
            )
        })?;
        let body = if input.peek(Token![;]) {
            input.parse::<Token![;]>()?;
            None
        } else {
            let content;
            braced!(content in input);
            Some((
                content.call(Attribute::parse_inner)?,
                content.call(Block::parse_within)?,
            ))
        };
        let (inner_attrs, body) = match body {
            Some((inner, stmts)) => (inner, Some(stmts)),
            None => (Vec::new(), None),
        };
        Ok(Self {
            attrs,
            vis,
            sig,
            inner_attrs,
            body,
        })
    }
}

impl ToTokens for RetryFn {
    /// The item as it was written (minus `#[no_clone]`): the fallback output on errors.
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let Self {
            attrs,
            vis,
            sig,
            inner_attrs,
            body,
        } = self;
        let mut sig = sig.clone();
        for arg in &mut sig.inputs {
            if let FnArg::Typed(typed) = arg {
                typed.attrs.retain(|a| !is_no_clone(a));
            }
        }
        tokens.extend(match body {
            Some(stmts) => quote!(#(#attrs)* #vis #sig { #(#inner_attrs)* #(#stmts)* }),
            None => quote!(#(#attrs)* #vis #sig;),
        });
    }
}

/// Reports the forms the retry loop cannot serve, each on its own token.
pub fn check(item: &RetryFn, errors: &mut Errors) {
    let sig = &item.sig;
    if let Some(constness) = &sig.constness {
        errors.at(
            constness.span,
            "`#[retry_with_backoff]` cannot be used on a `const fn`: waiting and logging happen at run time; remove `const`",
        );
    }
    for attr in &item.attrs {
        if attr.path().is_ident("track_caller") {
            errors.spanned(
                attr,
                "`#[retry_with_backoff]` cannot be combined with `#[track_caller]`: each attempt runs in its own closure, where the caller's location is lost; remove one of the two",
            );
        }
    }
    if item.body.is_none() {
        errors.spanned(
            sig,
            "`#[retry_with_backoff]` needs a function body to retry; put it on the implementations, or give this trait method a default body",
        );
    }
    match &sig.output {
        ReturnType::Default => errors.at(
            sig.paren_token.span.close(),
            "`#[retry_with_backoff]` needs a function that returns a `Result`: add `-> Result<T, E>`",
        ),
        ReturnType::Type(_, ty) if sig.asyncness.is_none() && is_future(ty) => errors.spanned(
            ty,
            "`#[retry_with_backoff]` would retry only the creation of this future, not its result; write the function as `async fn` (for a trait, native `async fn` in traits works; a method already rewritten by `#[async_trait]` cannot be retried from inside: put `#[retry_with_backoff]` on an `async fn` it calls)",
        ),
        ReturnType::Type(_, ty) => {
            if let Some(found) = never_a_result(ty) {
                errors.spanned(
                    ty,
                    format!("`#[retry_with_backoff]` needs a function that returns a `Result`, not {found}: a retry decides from the error whether to try again, so return `Result<T, E>`"),
                );
            }
        }
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(
            variadic.span(),
            "`#[retry_with_backoff]` cannot retry a variadic function",
        );
    }
}

/// Describes a return type that can never be a `Result` (aliases cannot be told apart here;
/// the runtime's `RetryResult` trait catches those).
fn never_a_result(ty: &Type) -> Option<String> {
    const NOT_RESULTS: &[&str] = &[
        "bool", "char", "str", "String", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16",
        "u32", "u64", "u128", "usize", "f32", "f64", "Option", "Vec", "Box", "HashMap",
    ];
    let found = match ty {
        Type::Tuple(t) if t.elems.is_empty() => "`()`".to_owned(),
        Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            let name = p.path.segments[0].ident.to_string();
            if !NOT_RESULTS.contains(&name.as_str()) {
                return None;
            }
            format!("`{}`", ty.to_token_stream())
                .replace(" < ", "<")
                .replace(" >", ">")
        }
        Type::Tuple(_) => "a tuple".to_owned(),
        Type::Reference(_) => "a reference".to_owned(),
        Type::Array(_) | Type::Slice(_) => "an array".to_owned(),
        Type::Never(_) => "`!`".to_owned(),
        Type::BareFn(_) | Type::Ptr(_) => "a pointer".to_owned(),
        Type::ImplTrait(_) | Type::TraitObject(_) => "a trait object or `impl Trait`".to_owned(),
        _ => return None,
    };
    Some(found)
}

/// `impl Future<..>`, `Pin<Box<dyn Future<..>>>` and the like: a future built now, run later.
fn is_future(ty: &Type) -> bool {
    let names_future = |bounds: &syn::punctuated::Punctuated<TypeParamBound, Token![+]>| {
        bounds.iter().any(|bound| match bound {
            TypeParamBound::Trait(t) => t
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Future" || s.ident == "IntoFuture"),
            _ => false,
        })
    };
    match ty {
        Type::ImplTrait(t) => names_future(&t.bounds),
        Type::TraitObject(t) => names_future(&t.bounds),
        Type::Paren(t) => is_future(&t.elem),
        Type::Group(t) => is_future(&t.elem),
        Type::Path(p) => p.path.segments.last().is_some_and(|s| {
            (s.ident == "Pin" || s.ident == "Box" || s.ident == "BoxFuture")
                && (s.ident == "BoxFuture" || generic_types(&s.arguments).any(is_future))
        }),
        _ => false,
    }
}

fn generic_types(args: &PathArguments) -> impl Iterator<Item = &Type> {
    let args = match args {
        PathArguments::AngleBracketed(a) => Some(a.args.iter()),
        _ => None,
    };
    args.into_iter().flatten().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

pub fn is_no_clone(attr: &Attribute) -> bool {
    attr.path().is_ident("no_clone")
}

/// How the parameters reach each attempt: statements to run at the top of every attempt, and
/// the signature with `#[no_clone]` removed and `mut` moved from the outer binding to the
/// per-attempt one (the outer binding is only ever cloned or reborrowed).
pub struct Params {
    pub sig: Signature,
    pub rebinds: Vec<TokenStream>,
    pub has_receiver: bool,
}

/// The identifier the body's `self` becomes, so each attempt can bind its own receiver.
pub fn self_alias(span: Span) -> Ident {
    Ident::new("__self", span)
}

pub fn params(sig: &Signature) -> Params {
    let mut sig = sig.clone();
    let mut rebinds = Vec::new();
    let mut has_receiver = false;
    for arg in &mut sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => {
                has_receiver = true;
                rebinds.push(receiver_rebind(receiver));
            }
            FnArg::Typed(typed) => {
                let no_clone = typed.attrs.iter().any(is_no_clone);
                typed.attrs.retain(|a| !is_no_clone(a));
                let cfgs: Vec<&Attribute> = typed
                    .attrs
                    .iter()
                    .filter(|a| a.path().is_ident("cfg") || a.path().is_ident("cfg_attr"))
                    .collect();
                let cfgs = quote!(#(#cfgs)*);
                match (&*typed.ty, no_clone) {
                    (_, true) => {}
                    (Type::Reference(r), _) => {
                        if r.mutability.is_some()
                            && let Pat::Ident(PatIdent { ident, .. }) = &*typed.pat
                        {
                            // A reborrow per attempt: what an attempt changes stays
                            // changed, and the next attempt borrows it again.
                            rebinds.push(quote_spanned!(typed.ty.span()=>
                                #cfgs let #ident = &mut *#ident;
                            ));
                        }
                    }
                    (ty, false) => {
                        let span = ty.span();
                        for binding in by_value_bindings(&mut typed.pat) {
                            let Binding { ident, mutability } = binding;
                            rebinds.push(quote_spanned!(span=>
                                #cfgs let #mutability #ident = ::resilience::__private::fresh(&#ident);
                            ));
                        }
                    }
                }
            }
        }
    }
    Params {
        sig,
        rebinds,
        has_receiver,
    }
}

fn receiver_rebind(receiver: &mut syn::Receiver) -> TokenStream {
    let alias = self_alias(Span::call_site());
    let this = &receiver.self_token;
    let no_clone = receiver.attrs.iter().any(is_no_clone);
    receiver.attrs.retain(|a| !is_no_clone(a));
    match &*receiver.ty {
        Type::Reference(r) if r.mutability.is_some() => quote!(let #alias = &mut *#this;),
        Type::Reference(_) => quote!(let #alias = #this;),
        // The body only borrows the receiver: each attempt borrows it again.
        _ if no_clone => quote!(let #alias = &#this;),
        _ => {
            let mutability = receiver.mutability.take();
            quote_spanned!(this.span=>
                let #mutability #alias = ::resilience::__private::fresh(&#this);
            )
        }
    }
}

struct Binding {
    ident: Ident,
    mutability: Option<Token![mut]>,
}

/// The names a by-value parameter's pattern binds by value, with their `mut` taken off the
/// outer pattern.
fn by_value_bindings(pat: &mut Pat) -> Vec<Binding> {
    let mut found = Vec::new();
    collect_bindings(pat, &mut found);
    found
}

fn collect_bindings(pat: &mut Pat, found: &mut Vec<Binding>) {
    match pat {
        Pat::Ident(p) => {
            if p.by_ref.is_none() {
                found.push(Binding {
                    ident: p.ident.clone(),
                    mutability: p.mutability.take(),
                });
            }
            if let Some((_, sub)) = &mut p.subpat {
                collect_bindings(sub, found);
            }
        }
        Pat::Tuple(t) => t.elems.iter_mut().for_each(|p| collect_bindings(p, found)),
        Pat::TupleStruct(t) => t.elems.iter_mut().for_each(|p| collect_bindings(p, found)),
        Pat::Struct(s) => s
            .fields
            .iter_mut()
            .for_each(|f| collect_bindings(&mut f.pat, found)),
        Pat::Slice(s) => s.elems.iter_mut().for_each(|p| collect_bindings(p, found)),
        Pat::Paren(p) => collect_bindings(&mut p.pat, found),
        Pat::Type(t) => collect_bindings(&mut t.pat, found),
        // A `&pat` binds copies out of a reference; wildcards, literals and ranges bind nothing.
        _ => {}
    }
}

/// Renames the body's `self` to [`self_alias`], so that each attempt can bind its own copy
/// or reborrow of the receiver (a closure or async block cannot rebind `self` itself).
/// Nested items keep their own `self`; `self::path` is a module path and stays.
pub struct RenameSelf;

impl VisitMut for RenameSelf {
    fn visit_expr_path_mut(&mut self, expr: &mut syn::ExprPath) {
        if expr.qself.is_none() && expr.path.segments.len() == 1 {
            let segment = &mut expr.path.segments[0];
            if segment.ident == "self" {
                segment.ident = self_alias(segment.ident.span());
            }
        }
        visit_mut::visit_expr_path_mut(self, expr);
    }

    fn visit_macro_mut(&mut self, mac: &mut syn::Macro) {
        mac.tokens = rename_self_tokens(std::mem::take(&mut mac.tokens));
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

fn rename_self_tokens(tokens: TokenStream) -> TokenStream {
    let mut out: Vec<TokenTree> = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        out.push(match token {
            TokenTree::Ident(ident) if ident == "self" => {
                let module_path =
                    matches!(tokens.peek(), Some(TokenTree::Punct(p)) if p.as_char() == ':');
                if module_path {
                    TokenTree::Ident(ident)
                } else {
                    TokenTree::Ident(self_alias(ident.span()))
                }
            }
            TokenTree::Group(group) => {
                let mut renamed =
                    proc_macro2::Group::new(group.delimiter(), rename_self_tokens(group.stream()));
                renamed.set_span(group.span());
                TokenTree::Group(renamed)
            }
            other => other,
        });
    }
    out.into_iter().collect()
}
