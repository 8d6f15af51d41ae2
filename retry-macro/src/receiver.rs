//! The receiver: how `self` reaches each attempt, and the renaming of the body's `self` to
//! the attempt's own receiver where an attempt binds one (a closure or an async block cannot
//! rebind `self` itself).

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::{Ident, Receiver, ReceiverKind, Type};

use crate::checks::generic_types;
use crate::item::is_no_clone;

/// How the receiver reaches each attempt.
pub enum ReceiverBinding {
    /// Borrowed by every attempt (`&self`, `&mut self`, `#[no_clone] self`): a statement that
    /// binds the attempt's alias, or none when the body keeps `self` as it is.
    Rebind(Option<TokenStream>),
    /// Passed to each attempt by value: a clone for every attempt but the last, which gets the
    /// caller's value; the attempt's parameter pattern.
    Carried(TokenStream),
}

/// Reads the receiver and fixes its outer form (the `mut` belongs to the attempt's binding).
/// Returns how it reaches the attempts and whether the body's `self` must be renamed.
pub fn bind_receiver(receiver: &mut Receiver) -> (ReceiverBinding, bool) {
    let alias = self_alias(Span::call_site());
    let this = receiver.self_token;
    let no_clone = receiver.attrs.iter().any(is_no_clone);
    receiver.attrs.retain(|a| !is_no_clone(a));
    match &receiver.kind {
        // `&self` and `&mut self` (also written `self: &Self`): the attempt closure captures
        // the reference, and the body keeps its `self` as written.
        ReceiverKind::Reference(..) => (ReceiverBinding::Rebind(None), false),
        ReceiverKind::Typed(_, ty) if matches!(**ty, Type::Reference(_)) => {
            (ReceiverBinding::Rebind(None), false)
        }
        // The body only borrows it: each attempt uses the caller's `self` through the capture.
        _ if no_clone => (ReceiverBinding::Rebind(None), false),
        // `self: Pin<&mut Self>` is reborrowed for each attempt, which may consume its pin.
        ReceiverKind::Typed(_, ty) if is_pin_mut(ty) => {
            receiver.mutability = Some(Default::default());
            (
                ReceiverBinding::Rebind(Some(
                    quote!(let #alias = ::core::pin::Pin::as_mut(&mut #this);),
                )),
                true,
            )
        }
        _ => {
            let mutability = receiver.mutability.take();
            (
                ReceiverBinding::Carried(quote_spanned!(this.span=> #mutability #alias)),
                true,
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

/// The identifier the body's `self` becomes where an attempt binds a receiver of its own (one
/// passed by value, or a reborrowed `Pin<&mut Self>`). It has the hygiene of the user's
/// tokens, as the renamed body does: a format string's `{__resilience_self}` capture finds
/// it, and rustc's suggestions at the body read as the user wrote it.
pub fn self_alias(span: Span) -> Ident {
    Ident::new("__resilience_self", span)
}

/// Renames the body's `self` to [`self_alias`], so that each attempt can bind its own copy
/// or reborrow of the receiver (a closure or async block cannot rebind `self` itself).
/// Nested items (`impl`, `trait`, `fn`, `use`, `macro_rules!`) keep their own `self`s;
/// `self::path` is a module path and stays; a macro's input is renamed unless the macro
/// reads it as text (`stringify!`).
///
/// Read as tokens rather than as a syntax tree: the body needs no parsing for this, and
/// syn's tree walkers would cost every user's build their compile time.
pub fn rename_self(body: TokenStream) -> TokenStream {
    rename(body, None)
}

/// [`rename_self`] on `tokens`; `format` is, inside a format macro's input, how many
/// top-level commas come before its format string, whose `{self}` captures are renamed too.
fn rename(tokens: TokenStream, format: Option<usize>) -> TokenStream {
    let mut out: Vec<TokenTree> = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    let mut commas = 0;
    let mut format_string_done = format.is_none();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Ident(ident) if ident == "self" => {
                out.push(TokenTree::Ident(renamed_unless_path(ident, tokens.peek())));
            }
            // `impl .. { }`, `trait .. { }`, `fn name .. { }`: up to and including the body.
            TokenTree::Ident(ident)
                if ident == "impl"
                    || ident == "trait"
                    || (ident == "fn" && matches!(tokens.peek(), Some(TokenTree::Ident(_)))) =>
            {
                out.push(TokenTree::Ident(ident));
                for token in tokens.by_ref() {
                    let body =
                        matches!(&token, TokenTree::Group(g) if g.delimiter() == Delimiter::Brace);
                    out.push(token);
                    if body {
                        break;
                    }
                }
            }
            // `use a::{self, b};`: up to and including the `;`.
            TokenTree::Ident(ident) if ident == "use" => {
                out.push(TokenTree::Ident(ident));
                for token in tokens.by_ref() {
                    let end = matches!(&token, TokenTree::Punct(p) if p.as_char() == ';');
                    out.push(token);
                    if end {
                        break;
                    }
                }
            }
            // A macro call, `name!(..)`, or a definition, `macro_rules! name { }`, whose
            // `self`s are its callers'.
            TokenTree::Ident(ident) if is_bang(tokens.peek()) => {
                let name = ident.to_string();
                out.push(TokenTree::Ident(ident));
                out.extend(tokens.next());
                if name == "macro_rules" {
                    out.extend(tokens.next());
                    out.extend(tokens.next());
                } else if let Some(TokenTree::Group(_)) = tokens.peek()
                    && let Some(TokenTree::Group(group)) = tokens.next()
                {
                    out.push(TokenTree::Group(macro_input(&name, group)));
                }
            }
            TokenTree::Group(group) => {
                let mut renamed =
                    proc_macro2::Group::new(group.delimiter(), rename(group.stream(), None));
                renamed.set_span(group.span());
                out.push(TokenTree::Group(renamed));
            }
            TokenTree::Punct(punct) => {
                if punct.as_char() == ',' {
                    commas += 1;
                }
                out.push(TokenTree::Punct(punct));
            }
            // The format string: the first string literal after its commas that is not a
            // value (`target: "x"`, `field = "x"` in tracing's macros).
            TokenTree::Literal(literal)
                if !format_string_done
                    && Some(commas) >= format
                    && literal.to_string().starts_with(['"', 'r'])
                    && !matches!(out.last(), Some(TokenTree::Punct(p)) if matches!(p.as_char(), '=' | ':')) =>
            {
                format_string_done = true;
                out.push(TokenTree::Literal(
                    rename_self_in_format_string(&literal).unwrap_or(literal),
                ));
            }
            other => out.push(other),
        }
    }
    out.into_iter().collect()
}

/// `self`, renamed unless `::` follows it (`self::module::item`).
fn renamed_unless_path(ident: Ident, next: Option<&TokenTree>) -> Ident {
    if matches!(next, Some(TokenTree::Punct(p)) if p.as_char() == ':') {
        ident
    } else {
        self_alias(ident.span())
    }
}

/// A lone `!` after a name: a macro (`a != b` has a `!` joined to its `=`).
fn is_bang(next: Option<&TokenTree>) -> bool {
    matches!(next, Some(TokenTree::Punct(p)) if p.as_char() == '!' && p.spacing() == Spacing::Alone)
}

/// A macro's input with its `self`s renamed, unless the macro reads it as text.
fn macro_input(name: &str, group: proc_macro2::Group) -> proc_macro2::Group {
    // Macros that read their tokens as text (`stringify!(self)`, `concat!("{self}")`) must
    // see what the user wrote.
    if LITERAL_MACROS.contains(&name) {
        return group;
    }
    let format = FORMAT_MACROS
        .iter()
        .find(|(macro_name, _)| *macro_name == name)
        .map(|&(_, commas)| commas);
    let mut renamed = proc_macro2::Group::new(group.delimiter(), rename(group.stream(), format));
    renamed.set_span(group.span());
    renamed
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

/// Macros with a format string that may capture `{self}` by name, and how many top-level
/// commas come before it (`write!(f, "..")`: one; `assert_eq!(a, b, "..")`: two).
const FORMAT_MACROS: &[(&str, usize)] = &[
    ("format", 0),
    ("format_args", 0),
    ("print", 0),
    ("println", 0),
    ("eprint", 0),
    ("eprintln", 0),
    ("write", 1),
    ("writeln", 1),
    ("panic", 0),
    ("assert", 1),
    ("assert_eq", 2),
    ("assert_ne", 2),
    ("debug_assert", 1),
    ("debug_assert_eq", 2),
    ("debug_assert_ne", 2),
    ("unreachable", 0),
    ("todo", 0),
    ("unimplemented", 0),
    ("trace", 0),
    ("debug", 0),
    ("info", 0),
    ("warn", 0),
    ("error", 0),
    ("event", 0),
    ("anyhow", 0),
    ("bail", 0),
    ("ensure", 1),
    ("format_err", 0),
];

/// `"{self}"` and `"{self:?}"` capture `self` by name; they must capture the attempt's own
/// receiver too. Returns the literal with those captures renamed, or `None` if it has none.
/// The literal keeps its span: its other captures (`{url}`) resolve as the user wrote them,
/// and the alias has the user's hygiene too.
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
    renamed.set_span(literal.span());
    Some(renamed)
}
