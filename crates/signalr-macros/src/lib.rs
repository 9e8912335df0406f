//! Attribute macros for [`signalr-server`](https://docs.rs/signalr-server): hubs written as an
//! `impl` block of `async fn`s ([`macro@hub`], ASP.NET's `Hub` classes) and strongly typed
//! clients ([`macro@hub_client`], ASP.NET's `Hub<IChatClient>`).
//!
//! They are sugar over the server's builder API, re-exported by the server crate: write
//! `use signalr_server::{hub, hub_client};` rather than depending on this crate.
//!
//! ```
//! use signalr_server::{HubCallerContext, HubError, hub, hub_client};
//!
//! /// What the hub calls on its clients (JS: `connection.on("ReceiveMessage", (user, text) => ...)`).
//! #[hub_client]
//! pub trait ChatClient {
//!     async fn receive_message(&self, user: String, text: String);
//! }
//!
//! /// A new `ChatHub::default()` serves every invocation, like ASP.NET's transient hubs.
//! #[derive(Default)]
//! pub struct ChatHub;
//!
//! #[hub(name = "chat")]
//! impl ChatHub {
//!     /// JS: `connection.invoke("SendMessage", "ann", "hi")`.
//!     async fn send_message(
//!         &self,
//!         ctx: HubCallerContext,
//!         user: String,
//!         text: String,
//!     ) -> Result<(), HubError> {
//!         // Checked at compile time: `receive_message` takes two `String`s. `?`: a backplane
//!         // that cannot take the message fails the invocation.
//!         ctx.clients().all().receive_message(user, text).await?;
//!         Ok(())
//!     }
//!
//!     /// JS: `await connection.invoke("Add", 1, 2)` resolves to `3`.
//!     async fn add(&self, _ctx: HubCallerContext, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//!
//!     /// Only authenticated users may call `WhoAmI`.
//!     #[authorize]
//!     #[hub_method(name = "WhoAmI")]
//!     async fn who_am_i(&self, ctx: HubCallerContext) -> Result<String, HubError> {
//!         ctx.user().name().ok_or_else(|| HubError::new("the user has no name"))
//!     }
//!
//!     /// Not a hub method.
//!     #[hub_method(skip)]
//!     fn helper(&self) {}
//! }
//!
//! let hub = ChatHub::hub_builder().build();
//! let mut names: Vec<&str> = hub.method_names().collect();
//! names.sort_unstable();
//! assert_eq!(names, ["Add", "SendMessage", "WhoAmI"]);
//! assert_eq!(ChatHub::HUB_NAME, "chat");
//! ```
//!
//! Serving it is the same as for a hub made with the builder:
//!
//! ```no_run
//! # use signalr_server::{HubCallerContext, hub};
//! # #[derive(Default)]
//! # struct ChatHub;
//! # #[hub]
//! # impl ChatHub {
//! #     async fn echo(&self, _ctx: HubCallerContext, value: String) -> String { value }
//! # }
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let hub = ChatHub::hub_builder().build();
//!     let app = axum::Router::new().nest("/chat", hub.router());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//!     axum::serve(listener, app).await
//! }
//! ```

mod client;
mod hub;
mod util;

use proc_macro::TokenStream;

/// Turns an inherent `impl` block into a hub: its `async fn`s become hub methods.
///
/// # What it accepts
/// `#[hub]` or `#[hub(name = "chat")]` on `impl MyHub { ... }`, where `MyHub` is a plain
/// (non-generic) type that implements `Default + Send + Sync`. A hub instance lives for one
/// operation, like ASP.NET's transient hubs: every invocation, connect and disconnect runs on a
/// fresh `MyHub::default()`. Keep shared state in `State<T>` parameters (registered with
/// `HubBuilder::state`), in the connection's items (`HubCallerContext::insert_item`) or in
/// statics.
///
/// Every `fn` of the block is one of:
///
/// - **A hub method** (the default):
///   `async fn send_message(&self, ctx: HubCallerContext, user: String, text: String) -> R`.
///   Clients call it as `SendMessage` (snake_case becomes PascalCase; names are matched
///   ignoring case). The first parameter after `&self` is the caller context (any name; its type
///   must be `HubCallerContext`); the others (at most 12) are what `HubBuilder::method`
///   accepts: any serde type (a client argument), `UploadStream<T>` or `State<T>`. `R` is `()`, a
///   `Serialize` value, `Result<T, HubError>`, or a `Stream` for a streaming method. A stream
///   must not borrow the hub instance: write `-> impl Stream<Item = T> + use<>` (Rust 2024
///   captures `&self` otherwise) or return a `BoxStream<'static, T>`.
///   Its parameter names, in camelCase (`group_name` becomes `groupName`), are recorded for
///   what lists hub methods (classic SignalR's JavaScript proxy).
/// - `#[hub_method(name = "Other")]`: a hub method called `Other` (ASP.NET `HubMethodName`).
///   Two methods may share a name when they take different numbers of client arguments
///   (overloads, as in classic SignalR hubs).
/// - `#[hub_method(skip)]`: a helper that is not a hub method; it may have any signature.
/// - `#[authorize]`: only authenticated users may call the method
///   (`AuthorizationPolicy::authenticated()`); others get
///   `Failed to invoke '<method>' because user is unauthorized`.
///   `#[authorize(policy = path::to_fn)]` with `fn(&User) -> bool` requires an authenticated user
///   for whom the function holds (`AuthorizationPolicy::require(path::to_fn)`).
/// - `#[on_connected] async fn f(&self, ctx: HubCallerContext)`: runs when a connection has
///   completed the handshake (ASP.NET `OnConnectedAsync`).
/// - `#[on_reconnected] async fn f(&self, ctx: HubCallerContext)`: runs when a classic SignalR
///   client comes back on its connection (classic `OnReconnected`; never for ASP.NET Core
///   clients).
/// - `#[on_disconnected] async fn f(&self, ctx: HubCallerContext, error: Option<String>)`: runs
///   when a connection has ended (ASP.NET `OnDisconnectedAsync`; `ctx.stop_called()` says
///   whether the client ended it on purpose).
///
///   The hooks return `()` or `Result<(), HubError>`; a hub has at most one of each.
///
/// Other items of the block (constants, types) are left alone. A method's `#[cfg(...)]`
/// attributes also apply to its registration.
///
/// # What it generates
/// The impl block as written, without the helper attributes, and:
///
/// ```ignore
/// impl MyHub {
///     /// `#[hub(name = "...")]`, or the type's name.
///     pub const HUB_NAME: &'static str = "chat";
///
///     pub fn hub_builder() -> ::signalr_server::HubBuilder {
///         ::signalr_server::Hub::builder()
///             // `HubBuilder::method`, plus the parameter names (`user`, `text`) and the
///             // `#[authorize]` policy (`None` without one).
///             .__hub_method(
///                 "SendMessage",
///                 move |ctx: HubCallerContext, a0: String, a1: String| async move {
///                     let hub: Self = Default::default();
///                     Self::send_message(&hub, ctx, a0, a1).await
///                 },
///                 &["user", "text"],
///                 Some(AuthorizationPolicy::authenticated()), // #[authorize]
///             )
///             .on_connected(/* ... */)
///             .on_disconnected(/* ... */)
///     }
/// }
/// ```
///
/// so a hub is served with `MyHub::hub_builder().state(app).build().router()`. The generated
/// code names the server crate as `::signalr_server`, so depend on it under that name.
///
/// # Errors
/// Compile errors, pointing at the offending item, for:
/// - two hub methods whose names are equal ignoring case and that take the same number of
///   client arguments (parameters other than `State<T>`, `UploadStream<T>`, `Progress<T>` and
///   `CallerState`, judged by the type's name); the error points at the second. Methods of one name with different numbers of
///   client arguments are overloads (classic SignalR picks one by the call's argument count);
///   `HubBuilder::method` panics at start-up when two overloads end up with the same number of
///   client arguments (e.g. because one has an extra `State<T>`);
/// - a method that is not `async`, takes no `&self` or takes `&mut self`, lacks the
///   `HubCallerContext` parameter, is generic, `unsafe` or `const`, takes `impl Trait`
///   parameters or more than 12 parameters after the context;
/// - hooks with other parameters, two hooks of one kind, `#[authorize]` or `#[hub_method]` on a
///   hook, unknown or malformed helper attributes, empty names;
/// - the macro on something other than a non-generic inherent impl block.
///
/// Parameter and return types are checked by the compiler against what
/// `HubBuilder::method` accepts; `Self` must implement `Default`.
///
/// ```
/// use signalr_server::{HubCallerContext, HubError, hub, hub::UploadStream};
/// use futures_util::{Stream, StreamExt};
///
/// #[derive(Default)]
/// struct Numbers;
///
/// fn is_admin(user: &signalr_server::auth::User) -> bool {
///     user.claim("role").as_deref() == Some("admin")
/// }
///
/// #[hub]
/// impl Numbers {
///     /// A streaming method: JS `connection.stream("Count", 3)`.
///     async fn count(&self, _ctx: HubCallerContext, to: u32) -> impl Stream<Item = u32> + use<> {
///         futures_util::stream::iter(1..=to)
///     }
///
///     /// A client-to-server stream: JS `connection.invoke("Sum", subject)`.
///     async fn sum(&self, _ctx: HubCallerContext, mut items: UploadStream<i64>) -> Result<i64, HubError> {
///         let mut total = 0;
///         while let Some(item) = items.next().await {
///             total += item.map_err(HubError::new)?;
///         }
///         Ok(total)
///     }
///
///     #[authorize(policy = is_admin)]
///     async fn reset(&self, _ctx: HubCallerContext) {}
///
///     #[on_connected]
///     async fn connected(&self, ctx: HubCallerContext) {
///         let _ = ctx.connection_id();
///     }
///
///     #[on_disconnected]
///     async fn disconnected(&self, _ctx: HubCallerContext, _error: Option<String>) -> Result<(), HubError> {
///         Ok(())
///     }
/// }
///
/// assert_eq!(Numbers::HUB_NAME, "Numbers");
/// assert_eq!(Numbers::hub_builder().build().method_names().count(), 3);
/// ```
#[proc_macro_attribute]
pub fn hub(attr: TokenStream, item: TokenStream) -> TokenStream {
    hub::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares the methods a hub calls on its clients (ASP.NET strongly typed hubs,
/// `Hub<IChatClient>`), so that calls are checked at compile time.
///
/// # What it accepts
/// A trait (any visibility, no generics, no supertraits) of client methods without bodies:
///
/// ```
/// # use signalr_server::hub_client;
/// #[hub_client]
/// pub trait ChatClient {
///     async fn receive_message(&self, user: String, text: String);
///     #[client_method(name = "Notify")]
///     async fn notify_all(&self, n: u32);
/// }
/// ```
///
/// Each method is `async`, takes `&self` and is declared returning nothing (clients are called
/// without waiting for an answer; the generated method returns the send's `Result`). The client method's name is the Rust name in PascalCase
/// (`ReceiveMessage`), or the one given with `#[client_method(name = "...")]`. Argument types
/// must be `Serialize + Send + Sync + 'static` (owned values: `String`, not `&str`).
///
/// # What it generates
/// The trait, with the same visibility and attributes, whose methods are
/// `fn receive_message(&self, user: String, text: String) -> impl Future<Output = Result<(), SendError>> + Send`,
/// and a blanket implementation for every `signalr_server::clients::ClientSender` (`ClientProxy` and
/// `SingleClientProxy`):
///
/// ```ignore
/// impl<T: ::signalr_server::clients::ClientSender + ?Sized> ChatClient for T {
///     fn receive_message(&self, user: String, text: String) -> impl Future<Output = Result<(), SendError>> + Send {
///         self.send_payloads("ReceiveMessage", vec![Payload::from_value(user), Payload::from_value(text)])
///     }
///     // ...
/// }
/// ```
///
/// With the trait in scope, `ctx.clients().all().receive_message(user, text).await` sends
/// `{"type":1,"target":"ReceiveMessage","arguments":[user,text]}` to every client; it works on
/// every proxy (`caller()`, `others()`, `group(..)`, `user(..)`, and a `HubContext`'s clients).
/// Wrong argument types or counts are compile errors. Like `ClientProxy::send`, the future
/// completes when the message is queued, with `Err(SendError)` when the hub's backplane could
/// not take it.
///
/// Inherent methods of the proxies win over trait methods of the same name: avoid client
/// methods named `send`, `invoke`, `connection_id` or `send_payloads`.
///
/// # Errors
/// Compile errors for: arguments to `#[hub_client]`, a generic, `unsafe` or `auto` trait, a trait
/// with supertraits, items other than methods, a method that is not `async`, has a body, returns
/// something, does not take `&self`, is generic or takes `impl Trait` parameters, and malformed
/// `#[client_method]` attributes.
///
/// ```
/// use signalr_server::{HubCallerContext, HubError, hub, hub_client};
///
/// #[hub_client]
/// trait ScoreClient {
///     /// A new score.
///     async fn score_changed(&self, team: String, score: u32);
///     #[client_method(name = "gameOver")]
///     async fn game_over(&self);
/// }
///
/// #[derive(Default)]
/// struct Scores;
///
/// #[hub]
/// impl Scores {
///     async fn goal(&self, ctx: HubCallerContext, team: String, score: u32) -> Result<(), HubError> {
///         ctx.clients().others().score_changed(team, score).await?;
///         if score >= 10 {
///             ctx.clients().all().game_over().await?;
///         }
///         Ok(())
///     }
/// }
/// # drop(Scores::hub_builder().build());
/// ```
#[proc_macro_attribute]
pub fn hub_client(attr: TokenStream, item: TokenStream) -> TokenStream {
    client::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
