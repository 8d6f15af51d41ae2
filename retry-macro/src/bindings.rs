//! How each parameter reaches every attempt.
//!
//! - By value: carried into the attempt as a parameter of its closure, cloned for every attempt
//!   but the last, which gets the caller's value itself (`mut` bindings are the attempt's own).
//! - `&mut T`: reborrowed by each attempt, so what it changes stays changed.
//! - `&T` and `#[no_clone]`: borrowed by every attempt.
//! - `#[rewind]` (by value or `&mut`): borrowed or reborrowed by every attempt, and sought back
//!   to where the call started before each retry (`Rewound`).
//!
//! Input:  `fn upload(&self, (name, body): (String, Vec<u8>), mut n: u32, log: &mut Log)`
//! Output: outer signature `fn upload(&self, __resilience_arg1: (String, Vec<u8>), n: u32, log: &mut Log)`;
//!         carried `[(__resilience_arg1, (name, body)), (n, mut n)]`;
//!         rebinds `[let __resilience_self = self; let log = &mut *log;]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, Pat, PatIdent, Signature, Type};

use crate::item::{is_no_clone, is_rewind};
use crate::receiver::{ReceiverBinding, bind_receiver};

/// One by-value argument carried into each attempt.
pub struct Carried {
    /// The name the function binds it to.
    pub outer: TokenStream,
    /// The attempt closure's pattern for it.
    pub pattern: TokenStream,
    /// Where a missing `Clone` is reported.
    pub span: Span,
}

/// A `#[rewind]` parameter: the name the attempts reach it by.
pub struct Rewound {
    pub ident: Ident,
    /// Its `#[cfg]`s: where it does not exist, neither does its rewinding.
    pub cfgs: TokenStream,
    /// Taken by value: the function rebinds it `mut` so that attempts can seek it.
    pub by_value: bool,
    /// The parameter's type: where a type that is not `Seek` is reported.
    pub span: Span,
}

/// The parameters, as the expansion uses them.
pub struct Bindings {
    /// The function's signature as emitted: `#[no_clone]` removed, `mut` moved to the
    /// attempt's binding, a destructuring pattern replaced by one name.
    pub sig: Signature,
    pub carried: Vec<Carried>,
    /// Statements at the top of every attempt: reborrows, `mut` rebinds, the receiver.
    pub rebinds: Vec<TokenStream>,
    /// Whether the body's `self` becomes the attempt's own receiver.
    pub rename_self: bool,
    /// The `#[rewind]` parameters.
    pub rewound: Vec<Rewound>,
}

pub fn bindings(sig: &Signature, krate: &TokenStream) -> Bindings {
    let mut sig = sig.clone();
    let mut carried = Vec::new();
    let mut rebinds = Vec::new();
    let mut rename_self = false;
    let mut rewound = Vec::new();
    for (index, arg) in sig.inputs.iter_mut().enumerate() {
        match arg {
            FnArg::Receiver(receiver) => {
                let (binding, rename) = bind_receiver(receiver);
                rename_self = rename;
                match binding {
                    ReceiverBinding::Rebind(rebind) => rebinds.extend(rebind),
                    ReceiverBinding::Carried(pattern) => carried.push(Carried {
                        // At the attribute: spanned at `self`, rustc would suggest `&self`
                        // instead of saying the receiver must be `Clone`.
                        outer: quote!(self),
                        pattern,
                        span: receiver.self_token.span,
                    }),
                }
            }
            FnArg::Typed(typed) => {
                let rewind = typed.attrs.iter().any(is_rewind);
                let no_clone = rewind || typed.attrs.iter().any(is_no_clone);
                typed.attrs.retain(|a| !is_no_clone(a) && !is_rewind(a));
                let cfgs = cfg_attrs(&typed.attrs);
                // `checks.rs` refuses `#[rewind]` on anything but a name bound to a value or
                // a `&mut`.
                let by_value = !matches!(&*typed.ty, Type::Reference(_));
                if rewind
                    && let Pat::Ident(PatIdent {
                        ident, mutability, ..
                    }) = &mut *typed.pat
                {
                    // Taken by value, it is rebound `mut` for the attempts: the function's own
                    // binding needs no `mut` (and a written one would be unused).
                    if by_value {
                        mutability.take();
                    }
                    rewound.push(Rewound {
                        ident: ident.clone(),
                        cfgs: cfgs.clone(),
                        by_value,
                        span: typed.ty.span(),
                    });
                }
                match (&*typed.ty, no_clone) {
                    // Reborrowed by each attempt, and rewound by it.
                    _ if rewind && !by_value => reborrow(typed, &cfgs, &mut rebinds),
                    // Borrowed through the closure's capture.
                    (_, true) => {}
                    (Type::Reference(_), _) => reborrow(typed, &cfgs, &mut rebinds),
                    // A parameter under `#[cfg]` may not exist: it cannot be a fixed element
                    // of the attempt's arguments, so each attempt clones it where it stands.
                    (ty, false) if !cfgs.is_empty() => {
                        let span = ty.span();
                        if let Pat::Ident(PatIdent {
                            ident, mutability, ..
                        }) = &mut *typed.pat
                        {
                            let mutability = mutability.take();
                            rebinds.push(quote_spanned!(span=>
                                #cfgs let #mutability #ident =
                                    #krate::requirements::ClonedPerAttempt::fresh(&#ident);
                            ));
                        }
                    }
                    (ty, false) => {
                        let span = ty.span();
                        let (outer, pattern) = carried_pattern(&mut typed.pat, index);
                        carried.push(Carried {
                            outer: quote!(#outer),
                            pattern,
                            span,
                        });
                    }
                }
            }
        }
    }
    Bindings {
        sig,
        carried,
        rebinds,
        rename_self,
        rewound,
    }
}

/// A `&mut` parameter reborrowed by each attempt; a `mut` binding of a reference is the
/// attempt's own, so each attempt starts from the caller's reference.
fn reborrow(typed: &mut syn::PatType, cfgs: &TokenStream, rebinds: &mut Vec<TokenStream>) {
    let Type::Reference(reference) = &*typed.ty else {
        return;
    };
    let span = typed.ty.span();
    let is_mut = reference.mutability.is_some();
    if let Pat::Ident(PatIdent {
        ident, mutability, ..
    }) = &mut *typed.pat
    {
        let mutability = mutability.take();
        if is_mut {
            rebinds.push(quote_spanned!(span=> #cfgs let #mutability #ident = &mut *#ident;));
        } else if mutability.is_some() {
            rebinds.push(quote_spanned!(span=> #cfgs let #mutability #ident = #ident;));
        }
    }
}

/// The outer name and the attempt's pattern of a by-value parameter: `mut x` becomes `x`
/// outside and `mut x` in the attempt; a destructuring pattern moves into the attempt whole,
/// and the function binds the argument to a generated name.
fn carried_pattern(pat: &mut Pat, index: usize) -> (Ident, TokenStream) {
    if let Pat::Ident(PatIdent {
        by_ref: None,
        subpat: None,
        ident,
        mutability,
        ..
    }) = pat
    {
        let mutability = mutability.take();
        return (ident.clone(), quote!(#mutability #ident));
    }
    let outer = format_ident!(
        "__resilience_arg{}",
        index,
        span = Span::mixed_site().located_at(pat.span())
    );
    let pattern = quote!(#pat);
    *pat = Pat::Ident(PatIdent {
        attrs: Vec::new(),
        by_ref: None,
        mutability: None,
        ident: outer.clone(),
        subpat: None,
    });
    (outer, pattern)
}

fn cfg_attrs(attrs: &[Attribute]) -> TokenStream {
    let cfgs = attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg") || a.path().is_ident("cfg_attr"));
    quote!(#(#cfgs)*)
}
