//! An ASP.NET Core SignalR compatible server for [axum]: negotiate, WebSockets, Server-Sent Events
//! and long polling, the JSON and MessagePack hub protocols, and hubs whose methods the official
//! clients (`@microsoft/signalr`, .NET, Java, Swift, ...) call.
//!
//! ```no_run
//! use axum::Router;
//! use signalr_server::{Hub, HubCallerContext, HubError};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let chat = Hub::builder()
//!         // JS: connection.invoke("SendMessage", "ann", "hi")
//!         .method("SendMessage", |hub: HubCallerContext, user: String, text: String| async move {
//!             // JS: connection.on("ReceiveMessage", (user, text) => ...)
//!             // Fails only when a backplane cannot take the message: `?` makes that an
//!             // error of the invocation.
//!             hub.clients().all().send("ReceiveMessage", (user, text)).await?;
//!             Ok::<_, HubError>(())
//!         })
//!         // JS: await connection.invoke("Echo", anything) resolves to `anything`
//!         .method("Echo", |_: HubCallerContext, value: serde_json::Value| async move { value })
//!         .build();
//!
//!     let app = Router::new().nest("/chat", chat.router());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//!     // axum::serve with Kestrel's limits: header timeout, header size, minimum body rate,
//!     // a cap on half-sent requests, TCP_NODELAY (see the `serve` module).
//!     signalr_server::serve(listener, app).await
//! }
//! ```
//!
//! # Modules
//! The names used in most programs are at the root: [`Hub`], [`HubBuilder`],
//! [`HubCallerContext`], [`HubContext`], [`HubError`], [`HubOptions`], [`ConnectionOptions`],
//! [`HubProtocol`], [`TransportType`], [`serve()`], [`classic_router`], and the
//! [`macro@hub`] and [`hub_client`] macros. Everything else is in a module named after what it
//! is in SignalR:
//!
//! | module | what is in it |
//! |---|---|
//! | [`mod@hub`] | the hub and its builder; what hub methods take ([`State`](hub::State), [`UploadStream`](hub::UploadStream), [`Progress`](hub::Progress)) and return |
//! | [`clients`] | calling clients: proxies, groups, [`HubContext`], client results |
//! | [`context`] | the caller: [`HubCallerContext`], the connection's HTTP request, classic caller state |
//! | [`auth`] | users, authenticators (JWT with the `jwt` feature), authorization policies |
//! | [`filter`] | hub filters: code around every invocation, connect and disconnect |
//! | [`options`] | [`HubOptions`] and [`ConnectionOptions`] |
//! | [`error`] | [`HubError`] and the errors of calls to clients |
//! | [`lifetime`] | the lifetime manager: connections, groups, users, scale-out backplanes |
//! | [`classic`] | the classic SignalR 2.x front door |
//! | [`raw`] | raw connections without the hub protocol |
//! | [`mod@serve`] | the hardened HTTP/1.1 server ([`serve()`]) and its options |
//! | `cors` | a CORS layer for browser pages on other origins (`cors` feature) |
//! | [`protocol`] | the hub protocol crate: messages, JSON and MessagePack, [`Payload`](protocol::Payload) |
//!
//! # What a mounted hub serves
//! Mounted at `/chat` with [`Hub::router`] (and [`Router::nest`](axum::Router::nest)):
//!
//! | request | meaning (section of docs/protocol.md) |
//! |---|---|
//! | `POST /chat/negotiate?negotiateVersion=1` | creates a connection: public id + secret token (docs/protocol.md, "Negotiate") |
//! | `GET /chat?id=<token>` + WebSocket upgrade | WebSockets; without `id` = skip negotiation (docs/protocol.md, "WebSockets") |
//! | `GET /chat?id=<token>`, `Accept: text/event-stream` | Server-Sent Events (docs/protocol.md, "Server-Sent Events") |
//! | `GET /chat?id=<token>` | long polling (docs/protocol.md, "Long polling") |
//! | `POST /chat?id=<token>` | client-to-server data for SSE and long polling (docs/protocol.md, "Sending with POST") |
//! | `DELETE /chat?id=<token>` | ends a long-polling connection, answers 202 (docs/protocol.md, "Long polling") |
//!
//! Status codes and bodies of bad requests are ASP.NET's (docs/protocol.md, "Status codes"). Defaults of every timeout and
//! limit are in [`HubOptions`] and [`ConnectionOptions`].
//!
//! # Classic SignalR 2.x clients
//! The same hubs serve classic ASP.NET SignalR clients (jQuery `signalr` 2.x,
//! `Microsoft.AspNet.SignalR.Client` 2.x) through [`classic_router`], usually nested at
//! `/signalr`; name each hub ([`HubBuilder::name`]). Core and classic clients of a hub share its
//! connections, groups and users. Classic callers also get caller state
//! ([`HubCallerContext::caller_state`]), progress ([`Progress`](hub::Progress)), errors with data
//! ([`HubError::with_data`]) and reconnects that replay what they missed; see [`ClassicOptions`](classic::ClassicOptions)
//! and `docs/classic.md` in the repository.
//!
//! # Outgoing messages
//! Every connection has one bounded outgoing queue and one writer that sends everything queued in
//! one transport write (one WebSocket frame, one SSE event, one poll response). A message sent to
//! many connections is serialized once per protocol. A connection whose queue is full when a
//! fan-out reaches it is closed as a slow consumer; see
//! [`ConnectionOptions::outgoing_queue_capacity`].
//!
//! # Limits: what one client can hold
//! Every buffer a client can fill is bounded in bytes and every wait it can stretch has a
//! timeout, so one client cannot take the server's memory or sockets:
//!
//! | what | bound (default) | option | ASP.NET |
//! |---|---|---|---|
//! | one hub message | 32 KiB | [`HubOptions::maximum_receive_message_size`] | same |
//! | one WebSocket message or frame | 2 × the hub message limit; raw connections: 64 KiB | (derived) | none (frames are streamed) |
//! | received bytes not yet taken by the hub | 64 KiB + one read | [`ConnectionOptions::incoming_buffer_size`] | `TransportMaxBufferSize` 64 KiB |
//! | parsed invocations waiting for a slot | 32, and 64 KiB of arguments | — | none queued |
//! | a POST body | streamed into the 64 KiB above, one POST per connection at a time | — | same (second POST waits) |
//! | queued outgoing bytes | 128 KiB + one message (and 1,024 messages) | [`ConnectionOptions::outgoing_buffer_size`] | two 64 KiB pipes |
//! | one transport write | 10 s | [`ConnectionOptions::transport_send_timeout`] | `TransportSendTimeout` 10 s |
//! | open streams per connection | 1,024 | [`HubOptions::maximum_streams_per_client`] | none |
//! | WebSocket close handshake | 5 s | [`ConnectionOptions::websocket_close_timeout`] | `CloseTimeout` 5 s |
//! | request headers, slow requests, half-sent connections | 32 KiB / 100 headers (431), 30 s head, 240 B/s bodies, 1,024 pending | [`serve::ServeOptions`] | Kestrel's limits |
//!
//! The HTTP-level limits and the release of a stalled client's socket need the serving recipe
//! [`serve()`](serve::serve) (a drop-in replacement for `axum::serve`); the rest holds with any
//! server.

#![warn(missing_debug_implementations, unreachable_pub)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

// Lets the crate's own unit tests use `#[hub]`, whose expansion names `::signalr_server`.
#[cfg(test)]
extern crate self as signalr_server;

// Public modules, named with SignalR's terms. The everyday names are also at the root (below).
pub mod auth;
pub mod classic;
pub mod clients;
pub mod context;
#[cfg(feature = "cors")]
pub mod cors;
pub mod error;
pub mod filter;
pub mod hub;
pub mod lifetime;
pub mod metrics;
pub mod options;
pub mod raw;
pub mod serve;

// Internal modules: their public names are re-exported from the modules above.
mod caller_state;
mod connection;
mod dispatcher;
mod engine;
mod handler;
mod hub_connection;
#[cfg(feature = "jwt")]
mod jwt;
mod lenient;
mod message;
mod websocket;

use std::sync::Arc;

/// The hub protocol crate (`signalr-protocol`): messages, the JSON and MessagePack protocols,
/// [`Payload`](protocol::Payload) (an argument or result not yet serialized), transfer formats.
pub use signalr_protocol as protocol;

#[doc(inline)]
pub use classic::classic_router;
#[doc(inline)]
pub use clients::HubContext;
#[doc(inline)]
pub use context::HubCallerContext;
#[doc(inline)]
pub use error::HubError;
#[doc(inline)]
pub use hub::{Hub, HubBuilder};
#[doc(inline)]
pub use options::{ConnectionOptions, HubOptions};
#[doc(inline)]
pub use serve::serve;
pub use signalr_macros::{hub, hub_client};
pub use signalr_protocol::{HubProtocol, TransportType};

#[doc(hidden)]
pub use handler::{ArgumentKind, ArgumentSource, markers};

impl Hub {
    /// The axum [`Router`](axum::Router) serving this hub: `/negotiate` and `/`. Mount it at
    /// the hub's path with `Router::new().nest("/chat", hub.router())`.
    ///
    /// Each call makes a separate set of connections (a separate endpoint) over the same hub;
    /// clients of all endpoints reach each other through the hub's clients.
    pub fn router(&self) -> axum::Router {
        dispatcher::router(Arc::new(dispatcher::Endpoint::for_hub(self.inner.clone())))
    }
}
