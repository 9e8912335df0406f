//! Helpers shared by both macros.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, LitStr, Pat, Signature, Type};

/// Collects errors so that one expansion reports all of them at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn add(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn into_compile_errors(self) -> proc_macro2::TokenStream {
        self.0
            .map(syn::Error::into_compile_error)
            .unwrap_or_default()
    }
}

/// `send_message` -> `SendMessage` (the C# method name a client calls). Raw identifiers lose
/// their `r#`.
pub(crate) fn pascal_case(ident: &Ident) -> String {
    ident
        .unraw()
        .to_string()
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect()
}

/// `group_name` -> `groupName` (a parameter name as a C# method declares it). Raw identifiers
/// lose their `r#`; leading underscores (`_unused`) go. Empty for `_`.
pub(crate) fn camel_case(ident: &Ident) -> String {
    let pascal = pascal_case(ident);
    let mut chars = pascal.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

/// Parses `name = "..."` into a non-empty string literal.
pub(crate) fn parse_name(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let name: LitStr = meta.value()?.parse()?;
    if name.value().trim().is_empty() {
        return Err(syn::Error::new(name.span(), "the name must not be empty"));
    }
    Ok(name)
}

/// Whether `ty` is a path whose last segment is `name` (e.g. `HubCallerContext` or
/// `signalr_server::HubCallerContext`).
pub(crate) fn is_type_named(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == name && segment.arguments.is_none()),
        Type::Group(group) => is_type_named(&group.elem, name),
        Type::Paren(paren) => is_type_named(&paren.elem, name),
        _ => false,
    }
}

/// Whether `ty` contains an `impl Trait` anywhere.
pub(crate) fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl Finder {
        fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
            for token in tokens {
                match token {
                    proc_macro2::TokenTree::Ident(ident) if ident == "impl" => self.0 = true,
                    proc_macro2::TokenTree::Group(group) => self.tokens(group.stream()),
                    _ => {}
                }
            }
        }
    }
    let mut finder = Finder(false);
    finder.tokens(quote::ToTokens::to_token_stream(ty));
    finder.0
}

/// The typed parameters of a signature after the receiver: `(pattern, type)`.
pub(crate) fn typed_inputs(sig: &Signature) -> Vec<(&Pat, &Type)> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => Some((&*typed.pat, &*typed.ty)),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// Checks that the signature has a `&self` receiver. `what` names the item in the message.
pub(crate) fn check_ref_self(sig: &Signature, what: &str, errors: &mut Errors, why: &str) -> bool {
    match sig.receiver() {
        None => {
            errors.add(
                sig.paren_token.span.join(),
                format!("{what} `{}` must take `&self`{why}", sig.ident),
            );
            false
        }
        Some(receiver) if receiver.mutability.is_some() && receiver.reference.is_some() => {
            errors.add(
                receiver
                    .mutability
                    .map_or_else(|| receiver.span(), |token| token.span),
                format!(
                    "{what} `{}` must take `&self`, not `&mut self`{why}",
                    sig.ident
                ),
            );
            false
        }
        Some(receiver) if receiver.reference.is_none() || receiver.colon_token.is_some() => {
            errors.add(
                receiver.span(),
                format!("{what} `{}` must take `&self`{why}", sig.ident),
            );
            false
        }
        Some(_) => true,
    }
}

/// Checks the parts of a signature neither macro supports: generics, `unsafe`, `const`,
/// `extern`, variadics and `impl Trait` parameters.
pub(crate) fn check_plain_signature(sig: &Signature, what: &str, errors: &mut Errors) -> bool {
    let mut ok = true;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.add(
            sig.generics.span(),
            format!("{what} `{}` cannot be generic", sig.ident),
        );
        ok = false;
    }
    if let Some(token) = &sig.unsafety {
        errors.add(
            token.span,
            format!("{what} `{}` cannot be `unsafe`", sig.ident),
        );
        ok = false;
    }
    if let Some(token) = &sig.constness {
        errors.add(
            token.span,
            format!("{what} `{}` cannot be `const`", sig.ident),
        );
        ok = false;
    }
    if let Some(abi) = &sig.abi {
        errors.add(
            abi.span(),
            format!("{what} `{}` cannot have an ABI", sig.ident),
        );
        ok = false;
    }
    if let Some(variadic) = &sig.variadic {
        errors.add(
            variadic.span(),
            format!("{what} `{}` cannot be variadic", sig.ident),
        );
        ok = false;
    }
    for (_, ty) in typed_inputs(sig) {
        if contains_impl_trait(ty) {
            errors.add(
                ty.span(),
                format!(
                    "{what} `{}` cannot take `impl Trait` parameters; name the type",
                    sig.ident
                ),
            );
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::{camel_case, pascal_case};
    use proc_macro2::Span;
    use syn::Ident;

    fn pascal(name: &str) -> String {
        pascal_case(&Ident::new(name, Span::call_site()))
    }

    #[test]
    fn pascal_case_of_snake_case() {
        assert_eq!(pascal("send_message"), "SendMessage");
        assert_eq!(pascal("echo"), "Echo");
        assert_eq!(pascal("get_x2_value"), "GetX2Value");
        assert_eq!(pascal("_private__thing_"), "PrivateThing");
        assert_eq!(pascal("AlreadyPascal"), "AlreadyPascal");
        assert_eq!(
            pascal_case(&Ident::new_raw("type", Span::call_site())),
            "Type"
        );
    }

    #[test]
    fn camel_case_of_snake_case() {
        let camel = |name: &str| camel_case(&Ident::new(name, Span::call_site()));
        assert_eq!(camel("group_name"), "groupName");
        assert_eq!(camel("text"), "text");
        assert_eq!(camel("_unused_value"), "unusedValue");
        assert_eq!(camel("_"), "");
        assert_eq!(camel("x2_y"), "x2Y");
        assert_eq!(
            camel_case(&Ident::new_raw("type", Span::call_site())),
            "type"
        );
    }
}

/// The path of the server crate as the calling package names it: `::signalr_server`, or
/// `::signalr::server` (or `::<name>::server` for a renamed dependency) when the package's
/// manifest depends on the `signalr` facade crate and never mentions `signalr-server`.
pub(crate) fn server_crate() -> TokenStream {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").and_then(|dir| {
        std::fs::read_to_string(std::path::Path::new(&dir).join("Cargo.toml")).ok()
    });
    match manifest.as_deref().and_then(facade_name) {
        Some(name) => {
            let name = Ident::new(&name, Span::call_site());
            quote!(::#name::server)
        }
        None => quote!(::signalr_server),
    }
}

/// The crate name under which a manifest depends on the `signalr` facade, when it does and does
/// not name `signalr-server` itself.
fn facade_name(manifest: &str) -> Option<String> {
    if manifest.contains("signalr-server") || manifest.contains("signalr_server") {
        return None;
    }
    manifest.lines().find_map(|line| {
        let line = line.trim();
        // `[dependencies.signalr]`, `[target.'cfg(..)'.dev-dependencies.signalr]`
        if line.starts_with('[') && line.ends_with("dependencies.signalr]") {
            return Some("signalr".to_owned());
        }
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        // `name = { package = "signalr", ... }`
        let value = value.replace(' ', "");
        if value.contains("package=\"signalr\"") {
            return Some(key.trim_matches('"').replace('-', "_"));
        }
        // `signalr = "0.1"`, `signalr = { ... }`, `signalr.workspace = true`
        (key == "signalr" || key == "signalr.workspace" || key == "signalr.version")
            .then(|| "signalr".to_owned())
    })
}

#[cfg(test)]
mod facade_tests {
    use super::facade_name;

    #[test]
    fn the_facade_is_found_only_without_the_server_crate() {
        assert_eq!(
            facade_name("[dependencies]\nsignalr = \"0.1\"\n"),
            Some("signalr".into())
        );
        assert_eq!(
            facade_name("[dependencies]\nsignalr.workspace = true\n"),
            Some("signalr".into())
        );
        assert_eq!(
            facade_name("[dependencies.signalr]\nversion = \"0.1\"\n"),
            Some("signalr".into())
        );
        assert_eq!(
            facade_name("[dependencies]\nsr = { package = \"signalr\", version = \"0.1\" }\n"),
            Some("sr".into())
        );
        assert_eq!(
            facade_name("[dependencies]\nsignalr-server = \"0.1\"\nsignalr = \"0.1\"\n"),
            None
        );
        assert_eq!(
            facade_name("[dependencies]\nsignalr-protocol = \"0.1\"\n"),
            None
        );
        assert_eq!(facade_name("[package]\nname = \"signalr-demo\"\n"), None);
    }
}
