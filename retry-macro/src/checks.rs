//! The forms of function the retry loop cannot serve, each refused with one error on the
//! token at fault.

use proc_macro2::TokenTree;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, PathArguments, ReceiverKind, ReturnType, Signature, Token, Type,
    TypeParamBound,
};

use crate::errors::Errors;
use crate::item::{RetryFn, is_no_clone, is_rewind};

/// Reports the forms the retry loop cannot serve, each on its own token.
pub fn check(item: &RetryFn, errors: &mut Errors) {
    let sig = &item.sig;
    if item.body.as_ref().is_some_and(instrumented_already) {
        errors.at(
            proc_macro2::Span::call_site(),
            "`#[retry_with_backoff]` is written below `#[tracing::instrument]`, which has already run: its span would open once per attempt and the retry events would fall outside it; write `#[retry_with_backoff]` above `#[tracing::instrument]`",
        );
    }
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
    check_rewind(sig, errors);
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
        return match &receiver.kind {
            ReceiverKind::Reference(_, _, mutability) => mutability.is_some(),
            ReceiverKind::Typed(_, ty) => unique(ty),
            _ => false,
        };
    }
    let mut references = sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(t) if matches!(*t.ty, Type::Reference(_)) => Some(&*t.ty),
        _ => None,
    });
    matches!((references.next(), references.next()), (Some(only), None) if unique(only))
}

/// A `&T` without a lifetime, or with `'_`, anywhere in `ty`. Read as tokens: a lifetime
/// is a `'` joined to its name.
fn has_elided_reference(ty: &Type) -> bool {
    fn walk(tokens: proc_macro2::TokenStream) -> bool {
        let mut tokens = tokens.into_iter().peekable();
        while let Some(token) = tokens.next() {
            let elided = match token {
                TokenTree::Punct(p) if p.as_char() == '&' => {
                    !matches!(tokens.peek(), Some(TokenTree::Punct(q)) if q.as_char() == '\'')
                }
                TokenTree::Punct(p) if p.as_char() == '\'' => {
                    matches!(tokens.peek(), Some(TokenTree::Ident(name)) if name == "_")
                }
                // `fn(&str)`, `Fn(&str) -> bool`: a reference there is the function's own,
                // higher-ranked, not a borrow of the inputs.
                TokenTree::Ident(name)
                    if matches!(name.to_string().as_str(), "fn" | "Fn" | "FnMut" | "FnOnce")
                        && matches!(tokens.peek(), Some(TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Parenthesis) =>
                {
                    tokens.next();
                    // `-> &T` after the parameters is the function's too.
                    if matches!(tokens.peek(), Some(TokenTree::Punct(p)) if p.as_char() == '-') {
                        tokens.next();
                        tokens.next();
                        skip_type(&mut tokens);
                    }
                    false
                }
                TokenTree::Group(group) => walk(group.stream()),
                _ => false,
            };
            if elided {
                return true;
            }
        }
        false
    }
    walk(ty.to_token_stream())
}

/// Skips one type in a token stream: up to a `,`, `+` or closing `>` outside its own `<..>`.
fn skip_type(tokens: &mut std::iter::Peekable<proc_macro2::token_stream::IntoIter>) {
    let mut depth = 0usize;
    while let Some(token) = tokens.peek() {
        if let TokenTree::Punct(p) = token {
            match p.as_char() {
                '<' => depth += 1,
                '>' if depth == 0 => return,
                '>' => depth -= 1,
                ',' | '+' if depth == 0 => return,
                _ => {}
            }
        }
        tokens.next();
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
        Type::FnPtr(_) | Type::Ptr(_) => "a pointer".to_owned(),
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

pub(crate) fn generic_types(args: &PathArguments) -> impl Iterator<Item = &Type> {
    let args = match args {
        PathArguments::AngleBracketed(a) => Some(a.args.iter()),
        _ => None,
    };
    args.into_iter().flatten().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// Whether `#[tracing::instrument]` has expanded this body already: its output opens (within
/// its first few statements, sync and async alike) with `let __tracing_attr_span`, a name
/// tracing-attributes reserves.
fn instrumented_already(body: &proc_macro2::TokenStream) -> bool {
    fn names_its_span(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => ident == "__tracing_attr_span",
            TokenTree::Group(group) => names_its_span(group.stream()),
            _ => false,
        })
    }
    // The first three statements: the tokens before the third `;` at the body's top level.
    let mut statements = 0;
    body.clone()
        .into_iter()
        .take_while(|token| {
            if matches!(token, TokenTree::Punct(p) if p.as_char() == ';') {
                statements += 1;
            }
            statements < 3
        })
        .any(|token| names_its_span(token.into()))
}

/// `#[rewind]` needs a name bound to the reader itself or to `&mut` it: each attempt seeks it.
fn check_rewind(sig: &Signature, errors: &mut Errors) {
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => {
                if let Some(attr) = receiver.attrs.iter().find(|a| is_rewind(a)) {
                    errors.spanned(
                        attr,
                        "`#[rewind]` goes on a parameter, not on `self`: pass the reader as an argument, or seek it back at the top of the body",
                    );
                }
            }
            FnArg::Typed(typed) => {
                let Some(attr) = typed.attrs.iter().find(|a| is_rewind(a)) else {
                    continue;
                };
                if typed.attrs.iter().any(is_no_clone) {
                    errors.spanned(
                        attr,
                        "`#[rewind]` and `#[no_clone]` cannot go together: `#[rewind]` already borrows the argument in every attempt, and puts it back where the call started; keep `#[rewind]`",
                    );
                } else if let Type::Reference(reference) = &*typed.ty
                    && reference.mutability.is_none()
                {
                    errors.spanned(
                        &typed.ty,
                        "`#[rewind]` needs to seek the reader, which a shared reference cannot: take it by value or as `&mut`",
                    );
                } else if !matches!(&*typed.pat, syn::Pat::Ident(_)) {
                    errors.spanned(
                        &typed.pat,
                        "`#[rewind]` needs the argument bound to a name, not a pattern: bind it to a name and destructure it in the body",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elided(ty: &str) -> bool {
        has_elided_reference(&syn::parse_str(ty).expect("a type"))
    }

    #[test]
    fn elided_references_are_told_from_named_and_higher_ranked_ones() {
        for ty in [
            "&str",
            "Result<&str, E>",
            "Result<Ref<'_, T>, E>",
            "&&'a T",
            "Vec<&u8>",
        ] {
            assert!(elided(ty), "{ty}");
        }
        for ty in [
            "&'a str",
            "Result<&'static str, E>",
            "Result<fn(&str) -> bool, E>",
            "Result<Box<dyn Fn(&str) -> &str + Send>, E>",
            "Result<Box<dyn FnMut(&[u8]) -> Vec<&u8>>, E>",
            "u32",
        ] {
            assert!(!elided(ty), "{ty}");
        }
        assert!(
            elided("Result<(fn(&str), &u8), E>"),
            "a reference after the fn type"
        );
    }
}
