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

use crate::errors::Errors;

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
            match arg {
                FnArg::Typed(typed) => typed.attrs.retain(|a| !is_no_clone(a)),
                FnArg::Receiver(receiver) => receiver.attrs.retain(|a| !is_no_clone(a)),
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
    if let ReturnType::Type(_, ty) = &sig.output
        && borrows_from_unique_input(sig)
        && has_elided_reference(ty)
    {
        errors.spanned(
            ty,
            "`#[retry_with_backoff]` cannot return a borrow of a `&mut` input: every attempt reborrows it, so no attempt's borrow can outlive the retry loop; return an owned value, or take `&self` / a shared reference",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(
            variadic.span(),
            "`#[retry_with_backoff]` cannot retry a variadic function",
        );
    }
}

/// Whether lifetime elision ties the output to a `&mut` input: a `&mut self` receiver, or
/// a single reference argument that is `&mut`.
fn borrows_from_unique_input(sig: &Signature) -> bool {
    let unique = |ty: &Type| matches!(ty, Type::Reference(r) if r.mutability.is_some());
    if let Some(receiver) = sig.receiver() {
        return unique(&receiver.ty);
    }
    let mut references = sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(t) if matches!(*t.ty, Type::Reference(_)) => Some(&*t.ty),
        _ => None,
    });
    matches!((references.next(), references.next()), (Some(only), None) if unique(only))
}

/// A `&T` without a lifetime, or with `'_`, anywhere in `ty`.
fn has_elided_reference(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            if r.lifetime.as_ref().is_none_or(|l| l.ident == "_") {
                self.0 = true;
            }
            syn::visit::visit_type_reference(self, r);
        }
        fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
            if l.ident == "_" {
                self.0 = true;
            }
        }
    }
    let mut finder = Finder(false);
    syn::visit::Visit::visit_type(&mut finder, ty);
    finder.0
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
    /// `let x = &x;` for each `#[no_clone]` parameter: an `async move` attempt must borrow
    /// what it may not clone (a sync closure borrows it by itself).
    pub borrows: Vec<TokenStream>,
    pub has_receiver: bool,
}

/// The identifier the body's `self` becomes, so each attempt can bind its own receiver.
/// It resolves at `mixed_site`, so the body's own `__self`, if any, stays its own.
pub fn self_alias(span: Span) -> Ident {
    Ident::new("__resilience_self", Span::mixed_site().located_at(span))
}

pub fn params(sig: &Signature) -> Params {
    let mut sig = sig.clone();
    let mut rebinds = Vec::new();
    let mut borrows = Vec::new();
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
                    (_, true) => {
                        let mut pat = (*typed.pat).clone();
                        for Binding { ident, .. } in by_value_bindings(&mut pat) {
                            borrows.push(quote!(#cfgs let #ident = &#ident;));
                        }
                    }
                    (Type::Reference(r), _) => {
                        if let Pat::Ident(PatIdent {
                            ident, mutability, ..
                        }) = &mut *typed.pat
                        {
                            // A `mut` binding is the attempt's own: each attempt starts from
                            // the caller's reference, whatever the last one reassigned.
                            let mutability = mutability.take();
                            if r.mutability.is_some() {
                                // A reborrow per attempt: what an attempt changes through
                                // it stays changed, and the next attempt borrows it again.
                                rebinds.push(quote_spanned!(typed.ty.span()=>
                                    #cfgs let #mutability #ident = &mut *#ident;
                                ));
                            } else if mutability.is_some() {
                                rebinds.push(quote_spanned!(typed.ty.span()=>
                                    #cfgs let #mutability #ident = #ident;
                                ));
                            }
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
        borrows,
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
        // `self: Pin<&mut Self>` is reborrowed, as `&mut self` is.
        ty if is_pin_mut(ty) => {
            receiver.mutability = Some(Default::default());
            quote!(let #alias = ::core::pin::Pin::as_mut(&mut #this);)
        }
        _ => {
            let mutability = receiver.mutability.take();
            quote_spanned!(this.span=>
                let #mutability #alias = ::resilience::__private::fresh(&#this);
            )
        }
    }
}

fn is_pin_mut(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    path.path.segments.last().is_some_and(|s| {
        s.ident == "Pin"
            && generic_types(&s.arguments)
                .any(|t| matches!(t, Type::Reference(r) if r.mutability.is_some()))
    })
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
        let name = mac.path.segments.last().map(|s| s.ident.to_string());
        let name = name.as_deref().unwrap_or_default();
        // Macros that read their tokens as text (`stringify!(self)`, `concat!("{self}")`) must
        // see what the user wrote; a macro whose input defines functions or impls has its own
        // `self`s there.
        if LITERAL_MACROS.contains(&name) || defines_items(&mac.tokens) {
            return;
        }
        let format_strings = FORMAT_MACROS.contains(&name);
        mac.tokens = rename_self_tokens(std::mem::take(&mut mac.tokens), format_strings);
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

/// Macros whose input is text, not code.
const LITERAL_MACROS: &[&str] = &[
    "stringify",
    "concat",
    "include",
    "include_str",
    "include_bytes",
    "env",
    "option_env",
    "cfg",
    "compile_error",
    "line",
    "column",
    "file",
    "module_path",
];

/// Macros whose string literal is a format string that may capture `{self}` by name.
const FORMAT_MACROS: &[&str] = &[
    "format",
    "format_args",
    "print",
    "println",
    "eprint",
    "eprintln",
    "write",
    "writeln",
    "panic",
    "assert",
    "assert_eq",
    "assert_ne",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "unreachable",
    "todo",
    "unimplemented",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "event",
    "anyhow",
    "bail",
    "ensure",
    "format_err",
];

fn defines_items(tokens: &TokenStream) -> bool {
    tokens.clone().into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "fn" || ident == "impl" || ident == "trait",
        TokenTree::Group(group) => defines_items(&group.stream()),
        _ => false,
    })
}

/// `"{self}"` and `"{self:?}"` capture `self` by name; they must capture the attempt's own
/// receiver too. Returns the literal with those captures renamed, or `None` if it has none.
fn rename_self_in_format_string(literal: &proc_macro2::Literal) -> Option<proc_macro2::Literal> {
    let source = literal.to_string();
    if !source.starts_with('"') || !source.contains("{self") {
        return None;
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source.as_str();
    let mut changed = false;
    while let Some(at) = rest.find("{self") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let braces = before.bytes().rev().take_while(|b| *b == b'{').count() + 1;
        let capture = braces % 2 == 1 && matches!(after.as_bytes().get(5), Some(b'}' | b':'));
        if capture {
            out.push_str("{__resilience_self");
            changed = true;
        } else {
            out.push_str("{self");
        }
        rest = &after[5..];
    }
    out.push_str(rest);
    if !changed {
        return None;
    }
    let mut renamed: proc_macro2::Literal = out.parse().ok()?;
    // `format_args!` resolves a captured name with the string's own hygiene.
    renamed.set_span(Span::mixed_site().located_at(literal.span()));
    Some(renamed)
}

fn rename_self_tokens(tokens: TokenStream, format_strings: bool) -> TokenStream {
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
                let inner = rename_self_tokens(group.stream(), format_strings);
                let mut renamed = proc_macro2::Group::new(group.delimiter(), inner);
                renamed.set_span(group.span());
                TokenTree::Group(renamed)
            }
            TokenTree::Literal(literal) if format_strings => {
                match rename_self_in_format_string(&literal) {
                    Some(renamed) => TokenTree::Literal(renamed),
                    None => TokenTree::Literal(literal),
                }
            }
            other => other,
        });
    }
    out.into_iter().collect()
}
