//! `#[hub]`: an inherent impl block whose `async fn`s become hub methods.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Type};

use crate::util::{
    Errors, camel_case, check_plain_signature, check_ref_self, is_type_named, parse_name,
    pascal_case, typed_inputs,
};

/// The most parameters after the caller context that `HubBuilder::method` accepts.
const MAX_PARAMETERS: usize = 12;

/// The helper attributes one method carried.
#[derive(Default)]
struct MethodAttributes {
    /// `#[hub_method(name = "...")]`.
    name: Option<LitStr>,
    /// `#[hub_method(skip)]`.
    skip: Option<Span>,
    /// `#[authorize]` (`None` inside) or `#[authorize(policy = ...)]`.
    authorize: Option<(Span, Option<Expr>)>,
    on_connected: Option<Span>,
    on_reconnected: Option<Span>,
    on_disconnected: Option<Span>,
    /// The first `#[hub_method]` attribute, for messages.
    hub_method: Option<Span>,
}

const HELPERS: [&str; 5] = [
    "hub_method",
    "authorize",
    "on_connected",
    "on_reconnected",
    "on_disconnected",
];

/// The connection hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookKind {
    Connected,
    Reconnected,
    Disconnected,
}

impl HookKind {
    /// The attribute's (and the builder method's) name.
    fn name(self) -> &'static str {
        match self {
            HookKind::Connected => "on_connected",
            HookKind::Reconnected => "on_reconnected",
            HookKind::Disconnected => "on_disconnected",
        }
    }
}

/// Removes the helper attributes from `attrs` and parses them.
fn take_attributes(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> MethodAttributes {
    let mut found = MethodAttributes::default();
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        let Some(helper) = HELPERS.iter().find(|h| attr.path().is_ident(h)) else {
            kept.push(attr);
            continue;
        };
        if let Err(error) = parse_attribute(helper, &attr, &mut found) {
            errors.push(error);
        }
    }
    *attrs = kept;
    found
}

fn parse_attribute(
    helper: &str,
    attr: &Attribute,
    found: &mut MethodAttributes,
) -> syn::Result<()> {
    let span = attr.span();
    let duplicate = || syn::Error::new(span, format!("duplicate `#[{helper}]` attribute"));
    match helper {
        "hub_method" => {
            if found.hub_method.is_some() {
                return Err(duplicate());
            }
            found.hub_method = Some(span);
            if matches!(attr.meta, syn::Meta::Path(_)) {
                return Err(syn::Error::new(
                    span,
                    "expected `#[hub_method(name = \"...\")]` or `#[hub_method(skip)]`",
                ));
            }
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    found.name = Some(parse_name(&meta)?);
                    Ok(())
                } else if meta.path.is_ident("skip") {
                    found.skip = Some(meta.path.span());
                    Ok(())
                } else {
                    Err(meta.error(
                        "unsupported `hub_method` argument; expected `name = \"...\"` or `skip`",
                    ))
                }
            })?;
            if found.name.is_none() && found.skip.is_none() {
                return Err(syn::Error::new(
                    span,
                    "expected `#[hub_method(name = \"...\")]` or `#[hub_method(skip)]`",
                ));
            }
            if let (Some(name), Some(_)) = (&found.name, found.skip) {
                return Err(syn::Error::new(
                    name.span(),
                    "`name` and `skip` cannot be combined",
                ));
            }
            Ok(())
        }
        "authorize" => {
            if found.authorize.is_some() {
                return Err(duplicate());
            }
            let mut policy = None;
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("policy") {
                        policy = Some(meta.value()?.parse::<Expr>()?);
                        Ok(())
                    } else {
                        Err(meta.error(
                            "unsupported `authorize` argument; expected `policy = path::to_fn`",
                        ))
                    }
                })?;
            }
            found.authorize = Some((span, policy));
            Ok(())
        }
        "on_connected" | "on_reconnected" | "on_disconnected" => {
            attr.meta.require_path_only()?;
            let slot = match helper {
                "on_connected" => &mut found.on_connected,
                "on_reconnected" => &mut found.on_reconnected,
                _ => &mut found.on_disconnected,
            };
            if slot.is_some() {
                return Err(duplicate());
            }
            *slot = Some(span);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A hub method to register.
struct HubMethod {
    ident: Ident,
    name: String,
    /// Where errors about the registration point.
    span: Span,
    parameters: Vec<Type>,
    /// The parameters' names as a C# hub would declare them (`groupName`).
    parameter_names: Vec<String>,
    authorize: Option<Option<Expr>>,
    /// The method's `#[cfg(...)]` attributes, repeated on its registration.
    cfgs: Vec<Attribute>,
}

/// An `on_connected` / `on_reconnected` / `on_disconnected` hook.
struct Hook {
    ident: Ident,
    span: Span,
    /// The error parameter's type (`on_disconnected` only).
    parameter: Option<Type>,
    cfgs: Vec<Attribute>,
}

/// What the arguments of `#[hub(...)]` say.
fn parse_hub_arguments(attr: TokenStream) -> syn::Result<Option<LitStr>> {
    let mut name = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            if name.is_some() {
                return Err(meta.error("duplicate `name`"));
            }
            name = Some(parse_name(&meta)?);
            Ok(())
        } else {
            Err(meta.error("unsupported `hub` argument; expected `name = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(name)
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let hub_name = parse_hub_arguments(attr)?;
    let mut item: ItemImpl = syn::parse2(item).map_err(|error| {
        syn::Error::new(
            error.span(),
            format!("`#[hub]` goes on an inherent impl block (`impl MyHub {{ ... }}`): {error}"),
        )
    })?;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "`#[hub]` goes on an inherent impl block (`impl MyHub { ... }`), not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            item.generics.span(),
            "`#[hub]` does not support generic impl blocks",
        ));
    }
    let type_ident = match &*item.self_ty {
        Type::Path(path) if path.qself.is_none() => match path.path.segments.last() {
            Some(segment) if segment.arguments.is_none() => segment.ident.clone(),
            _ => {
                return Err(syn::Error::new(
                    item.self_ty.span(),
                    "`#[hub]` needs a plain, non-generic type: `impl MyHub { ... }`",
                ));
            }
        },
        other => {
            return Err(syn::Error::new(
                other.span(),
                "`#[hub]` needs a plain, non-generic type: `impl MyHub { ... }`",
            ));
        }
    };
    if item.unsafety.is_some() {
        return Err(syn::Error::new(
            item.impl_token.span,
            "`#[hub]` impl blocks cannot be `unsafe`",
        ));
    }

    let mut errors = Errors::default();
    let mut methods: Vec<HubMethod> = Vec::new();
    let mut on_connected: Option<Hook> = None;
    let mut on_reconnected: Option<Hook> = None;
    let mut on_disconnected: Option<Hook> = None;
    // Lower-cased name and parameter count → the method registered so.
    let mut names: HashMap<(String, usize), (String, Ident)> = HashMap::new();

    for impl_item in &mut item.items {
        let ImplItem::Fn(function) = impl_item else {
            continue;
        };
        let attributes = take_attributes(&mut function.attrs, &mut errors);
        if let Some(skip) = attributes.skip {
            let other = attributes
                .authorize
                .as_ref()
                .map(|(span, _)| *span)
                .or(attributes.on_connected)
                .or(attributes.on_reconnected)
                .or(attributes.on_disconnected);
            if other.is_some() {
                errors.add(
                    skip,
                    "`#[hub_method(skip)]` cannot be combined with other hub attributes",
                );
            }
            continue;
        }
        let hooks: Vec<(HookKind, Span)> = [
            (HookKind::Connected, attributes.on_connected),
            (HookKind::Reconnected, attributes.on_reconnected),
            (HookKind::Disconnected, attributes.on_disconnected),
        ]
        .into_iter()
        .filter_map(|(kind, span)| span.map(|span| (kind, span)))
        .collect();
        if let Some(&(kind, hook_span)) = hooks.first() {
            if let Some((other, _)) = hooks.get(1) {
                errors.add(
                    hook_span,
                    format!(
                        "a method cannot be both `#[{}]` and `#[{}]`",
                        kind.name(),
                        other.name()
                    ),
                );
                continue;
            }
            if let Some(span) = attributes
                .hub_method
                .or(attributes.authorize.as_ref().map(|(span, _)| *span))
            {
                errors.add(
                    span,
                    "connection hooks are not hub methods: `#[hub_method]` and `#[authorize]` do not apply",
                );
            }
            let what = kind.name();
            let slot = match kind {
                HookKind::Connected => &mut on_connected,
                HookKind::Reconnected => &mut on_reconnected,
                HookKind::Disconnected => &mut on_disconnected,
            };
            if let Some(hook) = check_hook(function, kind, &mut errors) {
                if let Some(previous) = slot {
                    errors.add(
                        hook_span,
                        format!(
                            "`#[{what}]` is already on `{}`; a hub has at most one",
                            previous.ident
                        ),
                    );
                } else {
                    *slot = Some(hook);
                }
            }
            continue;
        }

        let (name, name_span) = match &attributes.name {
            Some(name) => (name.value(), name.span()),
            None => (pascal_case(&function.sig.ident), function.sig.ident.span()),
        };
        let Some((parameters, parameter_names)) = check_method(function, &mut errors) else {
            continue;
        };
        let key = (name.to_lowercase(), client_arguments(&parameters));
        if let Some((previous_name, previous_ident)) = names.get(&key) {
            errors.add(
                name_span,
                format!(
                    "hub method name `{name}` with {} client argument(s) is already used by `{previous_ident}` \
                     (as `{previous_name}`): hub method names are matched ignoring case, and \
                     overloads must differ in their number of arguments; rename one with \
                     `#[hub_method(name = \"...\")]`",
                    key.1
                ),
            );
            continue;
        }
        names.insert(key, (name.clone(), function.sig.ident.clone()));
        methods.push(HubMethod {
            ident: function.sig.ident.clone(),
            name,
            span: function.sig.ident.span(),
            parameters,
            parameter_names,
            authorize: attributes.authorize.map(|(_, policy)| policy),
            cfgs: cfg_attributes(function),
        });
    }

    let generated = generate(
        &item.self_ty,
        &type_ident,
        hub_name,
        &methods,
        on_connected.as_ref(),
        on_reconnected.as_ref(),
        on_disconnected.as_ref(),
    );
    let errors = errors.into_compile_errors();
    Ok(quote! {
        #item
        #generated
        #errors
    })
}

const WHY_REF_SELF: &str =
    " (every call gets a fresh `Self::default()`; keep shared state in `State<T>` or a static)";

/// Checks a hub method's signature; returns the parameter types after the context and their
/// names in camelCase (`argN` for a pattern that is not a plain name).
fn check_method(function: &ImplItemFn, errors: &mut Errors) -> Option<(Vec<Type>, Vec<String>)> {
    let sig = &function.sig;
    let mut ok = check_plain_signature(sig, "hub method", errors);
    if sig.asyncness.is_none() {
        errors.add(
            sig.fn_token.span,
            format!(
                "hub method `{}` must be an `async fn`; mark helpers with `#[hub_method(skip)]`",
                sig.ident
            ),
        );
        ok = false;
    }
    ok &= check_ref_self(sig, "hub method", errors, WHY_REF_SELF);
    let inputs = typed_inputs(sig);
    match inputs.first() {
        Some((_, ty)) if is_type_named(ty, "HubCallerContext") => {}
        Some((_, ty)) => {
            errors.add(
                ty.span(),
                format!(
                    "the first parameter of hub method `{}` after `&self` must be the caller context: `ctx: HubCallerContext`",
                    sig.ident
                ),
            );
            ok = false;
        }
        None => {
            errors.add(
                sig.paren_token.span.join(),
                format!(
                    "hub method `{}` is missing the caller context: `async fn {}(&self, ctx: HubCallerContext, ...)`",
                    sig.ident, sig.ident
                ),
            );
            ok = false;
        }
    }
    for (_, ty) in inputs.iter().skip(1) {
        if let Type::Reference(reference) = ty {
            errors.add(
                reference.and_token.span,
                format!(
                    "parameters of hub method `{}` are bound from client data and must be owned \
                     types (`String`, not `&str`)",
                    sig.ident
                ),
            );
            ok = false;
        }
    }
    if inputs.len() > MAX_PARAMETERS + 1 {
        errors.add(
            sig.paren_token.span.join(),
            format!(
                "hub method `{}` has more than {MAX_PARAMETERS} parameters after the caller context",
                sig.ident
            ),
        );
        ok = false;
    }
    ok.then(|| {
        let types = inputs.iter().skip(1).map(|(_, ty)| (*ty).clone()).collect();
        let names = inputs
            .iter()
            .skip(1)
            .map(|(pattern, _)| match pattern {
                syn::Pat::Ident(ident) if ident.subpat.is_none() => camel_case(&ident.ident),
                _ => String::new(),
            })
            .enumerate()
            .map(|(index, name)| {
                if name.is_empty() {
                    format!("arg{index}")
                } else {
                    name
                }
            })
            .collect();
        (types, names)
    })
}

/// How many of `parameters` look like client arguments: all but the server's injected and
/// stream parameters (`State<T>`, `UploadStream<T>`, `Progress<T>`, `CallerState`), judged by the
/// type's name. Only for the compile-time overload check; `HubBuilder::method` checks the real
/// kinds at start-up.
fn client_arguments(parameters: &[Type]) -> usize {
    let not_an_argument = |ty: &Type| match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().is_some_and(|segment| {
                let generic = matches!(segment.arguments, syn::PathArguments::AngleBracketed(_));
                (generic
                    && ["State", "UploadStream", "Progress"]
                        .iter()
                        .any(|n| segment.ident == n))
                    || (!generic && segment.ident == "CallerState")
            })
        }
        _ => false,
    };
    parameters.iter().filter(|ty| !not_an_argument(ty)).count()
}

/// Checks an `on_connected` / `on_reconnected` / `on_disconnected` signature.
fn check_hook(function: &ImplItemFn, kind: HookKind, errors: &mut Errors) -> Option<Hook> {
    let sig = &function.sig;
    let connected = kind != HookKind::Disconnected;
    let what = format!("`#[{}]` method", kind.name());
    let what = what.as_str();
    let expected = if connected {
        "(&self, ctx: HubCallerContext)"
    } else {
        "(&self, ctx: HubCallerContext, error: Option<String>)"
    };
    let mut ok = check_plain_signature(sig, what, errors);
    if sig.asyncness.is_none() {
        errors.add(
            sig.fn_token.span,
            format!("{what} `{}` must be an `async fn`", sig.ident),
        );
        ok = false;
    }
    ok &= check_ref_self(sig, what, errors, WHY_REF_SELF);
    let inputs = typed_inputs(sig);
    let arity_ok = inputs.len() == if connected { 1 } else { 2 }
        && inputs
            .first()
            .is_some_and(|(_, ty)| is_type_named(ty, "HubCallerContext"));
    if !arity_ok {
        errors.add(
            sig.paren_token.span.join(),
            format!("{what} `{}` must have the parameters {expected}", sig.ident),
        );
        ok = false;
    }
    ok.then(|| Hook {
        ident: sig.ident.clone(),
        span: sig.ident.span(),
        parameter: inputs.get(1).map(|(_, ty)| (*ty).clone()),
        cfgs: cfg_attributes(function),
    })
}

/// The registration of an `on_connected` / `on_reconnected` hook (`instance` makes the hub).
fn connect_hook_registration<'h>(
    hook: &'h Hook,
    kind: HookKind,
    instance: &TokenStream,
) -> (&'h Vec<Attribute>, TokenStream) {
    let krate = crate::util::server_crate();
    let Hook {
        ident, span, cfgs, ..
    } = hook;
    let builder_method = Ident::new(kind.name(), *span);
    let registration = quote_spanned! {*span=>
        .#builder_method(move |__signalr_ctx: #krate::HubCallerContext| async move {
            #instance
            Self::#ident(&__signalr_hub, __signalr_ctx).await
        })
    };
    (cfgs, registration)
}

/// The `#[cfg(...)]` attributes of a method: a method that is compiled out is not registered.
fn cfg_attributes(function: &ImplItemFn) -> Vec<Attribute> {
    function
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .cloned()
        .collect()
}

fn generate(
    self_ty: &Type,
    type_ident: &Ident,
    hub_name: Option<LitStr>,
    methods: &[HubMethod],
    on_connected: Option<&Hook>,
    on_reconnected: Option<&Hook>,
    on_disconnected: Option<&Hook>,
) -> TokenStream {
    let krate = crate::util::server_crate();
    let hub_name =
        hub_name.unwrap_or_else(|| LitStr::new(&type_ident.to_string(), type_ident.span()));
    // `Self::default()`, spanned at the type so a missing `Default` points there.
    let instance = quote_spanned! {self_ty.span()=>
        let __signalr_hub: Self = ::core::default::Default::default();
    };
    let registrations = methods.iter().map(|method| {
        let HubMethod {
            ident,
            name,
            span,
            parameters,
            parameter_names,
            authorize,
            cfgs,
        } = method;
        let arguments: Vec<Ident> = (0..parameters.len())
            .map(|i| format_ident!("__signalr_arg{}", i))
            .collect();
        let policy = match authorize {
            None => quote! { ::core::option::Option::None },
            Some(None) => quote! {
                ::core::option::Option::Some(#krate::auth::AuthorizationPolicy::authenticated())
            },
            Some(Some(predicate)) => quote_spanned! {predicate.span()=>
                ::core::option::Option::Some(#krate::auth::AuthorizationPolicy::require(#predicate))
            },
        };
        let registration = quote_spanned! {*span=>
            .__hub_method(
                #name,
                move |__signalr_ctx: #krate::HubCallerContext #(, #arguments: #parameters)*| async move {
                    #instance
                    Self::#ident(&__signalr_hub, __signalr_ctx #(, #arguments)*).await
                },
                &[#(#parameter_names),*],
                #policy,
            )
        };
        (cfgs, registration)
    });
    let connect_hook = |hook, kind| connect_hook_registration(hook, kind, &instance);
    let connected = on_connected.map(|hook| connect_hook(hook, HookKind::Connected));
    let reconnected = on_reconnected.map(|hook| connect_hook(hook, HookKind::Reconnected));
    let disconnected = on_disconnected.map(|hook| {
        let Hook {
            ident,
            span,
            parameter,
            cfgs,
        } = hook;
        let parameter = parameter
            .as_ref()
            .map_or_else(|| quote!(::core::option::Option<::std::string::String>), |ty| quote!(#ty));
        let registration = quote_spanned! {*span=>
            .on_disconnected(
                move |__signalr_ctx: #krate::HubCallerContext, __signalr_error: #parameter| async move {
                    #instance
                    Self::#ident(&__signalr_hub, __signalr_ctx, __signalr_error).await
                },
            )
        };
        (cfgs, registration)
    });
    // One statement per registration, so that `#[cfg]` on a method applies to its registration.
    let statements: Vec<TokenStream> = registrations
        .chain(connected)
        .chain(reconnected)
        .chain(disconnected)
        .map(|(cfgs, registration)| {
            quote! {
                #(#cfgs)*
                {
                    __signalr_builder = __signalr_builder #registration;
                }
            }
        })
        .collect();
    let body = if statements.is_empty() {
        quote! { #krate::Hub::builder().name(#hub_name) }
    } else {
        quote! {
            let mut __signalr_builder = #krate::Hub::builder().name(#hub_name);
            #(#statements)*
            __signalr_builder
        }
    };

    let name_doc = format!(
        " The hub's name (ASP.NET `HubName`): `{}`.",
        hub_name.value()
    );
    let mut builder_doc = vec![
        format!(" A `HubBuilder` with the hub methods of `{type_ident}`"),
        " registered, each called on a fresh `Self::default()` (generated by `#[hub]`).".to_owned(),
        " Add state, options and authentication, then `.build()`.".to_owned(),
    ];
    if !methods.is_empty() {
        builder_doc.push(String::new());
        builder_doc.push(" Hub methods:".to_owned());
        for method in methods {
            let authorize = if method.authorize.is_some() {
                " (authorized users only)"
            } else {
                ""
            };
            builder_doc.push(format!(" - `{}`{authorize}", method.name));
        }
    }

    quote! {
        impl #self_ty {
            #[doc = #name_doc]
            pub const HUB_NAME: &'static str = #hub_name;

            #(#[doc = #builder_doc])*
            pub fn hub_builder() -> #krate::HubBuilder {
                #body
            }
        }
    }
}
