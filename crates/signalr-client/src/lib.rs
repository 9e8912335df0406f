//! A client for ASP.NET Core SignalR hubs: connect to a hub on an ASP.NET Core server, Azure
//! SignalR Service or a Rust `signalr-server`, call its methods, stream in both directions, answer
//! its calls, and reconnect automatically.
//!
//! ```
//! use futures_util::StreamExt;
//! use signalr_hub_client::{HubConnectionBuilder, HubConnectionState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = demo_server().await;
//! // `url` is a hub, e.g. "http://127.0.0.1:5000/chat" (`cargo run -p chat-server` serves one).
//! let connection = HubConnectionBuilder::new()
//!     .with_url(url)
//!     .with_automatic_reconnect()
//!     .build()?;
//!
//! // A client method the server calls: arguments bound with serde, matched case-insensitively.
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let _subscription = connection.on("ReceiveMessage", move |(user, text): (String, String)| {
//!     let _ = tx.send(format!("{user}: {text}"));
//! });
//!
//! connection.start().await?;
//! assert_eq!(connection.state(), HubConnectionState::Connected);
//!
//! // Fire and forget; the hub broadcasts ReceiveMessage back to every client.
//! connection.send("SendMessage", ("ann", "hello")).await?;
//! assert_eq!(rx.recv().await.as_deref(), Some("ann: hello"));
//!
//! // Call and await the result.
//! let echoed: serde_json::Value = connection.invoke("Echo", (serde_json::json!({"n": 1}),)).await?;
//! assert_eq!(echoed["n"], 1);
//!
//! // A server-to-client stream.
//! let items: Vec<u32> = connection
//!     .stream::<u32>("Count", (3,))
//!     .await?
//!     .map(|item| item.expect("item"))
//!     .collect()
//!     .await;
//! assert_eq!(items, [1, 2, 3]);
//!
//! connection.stop().await;
//! # Ok(())
//! # }
//! # async fn demo_server() -> String {
//! #     use signalr_server::{Hub, HubCallerContext, HubError};
//! #     let hub = Hub::builder()
//! #         .method("SendMessage", |hub: HubCallerContext, user: String, text: String| async move {
//! #             hub.clients().all().send("ReceiveMessage", (user, text)).await?;
//! #             Ok::<_, HubError>(())
//! #         })
//! #         .method("Echo", |_: HubCallerContext, v: serde_json::Value| async move { v })
//! #         .method("Count", |_: HubCallerContext, n: u32| async move { futures_util::stream::iter(1..=n) })
//! #         .build();
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let url = format!("http://{}/chat", listener.local_addr().unwrap());
//! #     let app = axum::Router::new().nest("/chat", hub.router());
//! #     tokio::spawn(async move { axum::serve(listener, app).await });
//! #     url
//! # }
//! ```
//!
//! The wire protocol is described in docs/protocol.md of the repository; comments cite its
//! sections by name, e.g. (docs/protocol.md, "Client results").
//!
//! # What it does
//!
//! | Feature | API |
//! |---|---|
//! | Negotiate v1 (v0 servers too), redirects with `url` + `accessToken` (max 100), the checks of docs/protocol.md, "Negotiate checks" | automatic |
//! | WebSockets, Server-Sent Events (+ POST), long polling (+ POST, DELETE); fallback in the server's order, re-negotiating after a failed transport | [`HubConnectionBuilder::with_transports`] |
//! | Skip negotiation (WebSockets only) | [`HubConnectionBuilder::skip_negotiation`] |
//! | JSON and MessagePack hub protocols | [`HubConnectionBuilder::with_protocol`] |
//! | Invoke, send, server-to-client streams (cancel on drop), upload streams | [`HubConnection::invoke`], [`HubConnection::send`], [`HubConnection::stream`], [`ClientStream`] |
//! | Client methods, typed or dynamic, answering client results | [`HubConnection::on`] |
//! | Keep-alive ping, server timeout, handshake timeout | [`HubConnectionBuilder::keep_alive_interval`], [`HubConnectionBuilder::server_timeout`], [`HubConnectionBuilder::handshake_timeout`] |
//! | Automatic reconnect, custom retry policies | [`HubConnectionBuilder::with_automatic_reconnect`], [`RetryPolicy`] |
//! | Stateful reconnect (ASP.NET Core 8+, WebSockets): resume on the same connection after a network loss, replaying what the other side did not acknowledge; replay buffer bounded in bytes | [`HubConnectionBuilder::with_stateful_reconnect`], [`HubConnectionBuilder::stateful_reconnect_buffer_size`] |
//! | Lifetime events | [`HubConnection::on_closed`], [`HubConnection::on_reconnecting`], [`HubConnection::on_reconnected`] |
//! | Bearer tokens, headers, query parameters, client certificates (mTLS), private roots | [`HubConnectionBuilder::with_access_token_provider`], [`HubConnectionBuilder::with_header`], [`HubConnectionBuilder::with_query`], [`HubConnectionBuilder::with_client_certificate`], [`HubConnectionBuilder::with_root_certificate`] |
//! | Classic ASP.NET SignalR 2.x servers: hub proxies, WebSockets / SSE / long polling / auto, progress, caller state, reconnect with replay | [`classic::ClassicHubConnection`], [`classic::HubProxy`] |
//!
//! The crate needs a Tokio runtime.
//!
//! # TLS
//!
//! `https` and `wss` hubs use one TLS configuration for the HTTP requests (reqwest) and the
//! WebSocket (tokio-tungstenite) alike, from one of two backends chosen by cargo feature:
//!
//! | Feature | Backend | Roots trusted | Needs |
//! |---|---|---|---|
//! | `rustls` (default) | rustls with the ring provider, `TlsBackend::Rustls` | Mozilla's, compiled in (`webpki-roots`) | nothing from the system |
//! | `native-tls` | the platform's library through `native-tls`: OpenSSL on Linux, Secure Transport on macOS, SChannel on Windows; `TlsBackend::NativeTls` | the operating system's | OpenSSL headers on Linux (`libssl-dev`, `pkg-config`) |
//!
//! - Both features on: rustls is used unless the builder asks for native-tls with
//!   [`HubConnectionBuilder::tls_backend`]`(TlsBackend::NativeTls)` (the classic builder has the
//!   same method). With one feature that backend is used; `tls_backend` can only name a backend
//!   whose feature is on, since each [`TlsBackend`] variant exists with its feature.
//! - Neither (`default-features = false`): `http`/`ws` hubs work as usual; an `https`/`wss` URL,
//!   given to the builder or reached by a negotiate redirect, fails `start()` with a negotiate
//!   error (a transport error when negotiation is skipped) saying the crate was built without
//!   TLS. The certificate options are still checked for syntax at `build()`.
//!
//! What the TLS options do under each backend:
//!
//! | Option | rustls | native-tls |
//! |---|---|---|
//! | [`HubConnectionBuilder::with_root_certificate`]: PEM (one or more certificates) or one DER certificate | added to Mozilla's roots | added to the system's roots |
//! | [`HubConnectionBuilder::with_client_certificate`] (mutual TLS): PEM chain + PEM key | PKCS#8, PKCS#1 and SEC1 keys | PKCS#8 keys (`BEGIN PRIVATE KEY`) only: another format fails `build()` with a text saying how to convert it (`openssl pkcs8 -topk8 -nocrypt`) |
//! | Protocol versions | TLS 1.2 and 1.3 | TLS 1.2 and above, as the platform offers |
//! | Errors of a refused handshake | rustls' names, e.g. `UnknownIssuer`, `CertificateRequired` | the platform's texts, e.g. OpenSSL's `certificate verify failed` |
//!
//! There is no option to accept invalid certificates or to skip host name checks with either
//! backend; trust a private CA or a self-signed certificate with `with_root_certificate`
//! instead. A certificate or key that does not parse fails [`HubConnectionBuilder::build`].
//!
//! # Connection lifetime
//!
//! `start()` goes `Disconnected -> Connecting -> Connected`; it fails (back to `Disconnected`)
//! when negotiate, every transport, or the handshake fails. A failed start is never retried
//! automatically; see [`HubConnection::start`] for the loop to write instead.
//!
//! An established connection that is lost (transport error, server timeout, the server closing,
//! a Close message with `allowReconnect: true`) fails every pending call at once with
//! `Invocation canceled due to the underlying connection being closed.` Then, with a retry policy,
//! it goes `Reconnecting` ([`HubConnection::on_reconnecting`] with the error), waits the policy's
//! delay, and tries a full connect (new negotiate, new connection id) until one succeeds
//! (`Connected`, [`HubConnection::on_reconnected`] with the new id) or the policy returns `None`
//! (`Disconnected`, [`HubConnection::on_closed`] with the last error). Without a policy, or after a
//! Close message without `allowReconnect`, it goes straight to `Disconnected` and `on_closed`.
//! The default policy waits 0, 2, 10 and 30 seconds ([`DefaultRetryPolicy`]).
//!
//! With stateful reconnect ([`HubConnectionBuilder::with_stateful_reconnect`]) a WebSocket lost
//! without a close frame or Close message is first resumed: one new WebSocket to the same
//! connection within the handshake timeout, the same connection id. As in the official clients
//! this happens below the hub connection: the state stays `Connected` and neither
//! [`HubConnection::on_reconnecting`] nor [`HubConnection::on_reconnected`] runs. Pending calls are
//! not failed, calls made meanwhile are buffered, and both sides send again what the other did not
//! acknowledge. Only when that resume fails do pending calls fail and the reconnect above (with
//! `on_reconnecting`), or `Disconnected`, follows.
//!
//! Long polling is different, as with the official clients and ASP.NET Core: its logical
//! connection lives on the server between polls, so a poll whose TCP connection is cut before the
//! response (a network drop, a proxy) is simply sent again on a new socket. The connection stays
//! `Connected` with the same id and no reconnect event fires; it is lost only when that new
//! socket fails too, no socket can be opened, or the server no longer knows the connection.
//!
//! # Examples
//!
//! With the chat server running (`cargo run -p chat-server` in the repository, http://127.0.0.1:5000):
//!
//! ```sh
//! cargo run -p signalr-hub-client --example chat -- http://127.0.0.1:5000/chat ann
//! cargo run -p signalr-hub-client --example typed_handlers
//! ```
//!
//! `chat` is a console chat: every line typed is sent with `SendMessage(user, text)`, every
//! `ReceiveMessage` is printed. `typed_handlers` starts its own in-process hub and shows typed,
//! dynamic and async handlers, client results, streams in both directions and reconnect events.
//!
//! # Differences from the official clients
//!
//! - Stateful reconnect (docs/protocol.md, "Stateful reconnect") follows the .NET client (ids,
//!   Acks once a second, Sequence and replay, duplicates dropped, no resume after a graceful close
//!   or a server timeout), with these differences: an Ack of a message never sent and a Sequence
//!   of 0 are protocol errors that end the connection (the .NET client drops the whole buffer, or
//!   counts from 0); after a resume the server's Sequence must come within the handshake timeout;
//!   a send that waits for room in the replay buffer fails after the server timeout instead of
//!   waiting forever; `send` resolves once the message is in the replay buffer. As with the
//!   official clients, a server that turns it on unasked is refused (`Client didn't negotiate
//!   Stateful Reconnect but the server did.`).
//! - Handlers are sync or async Rust closures of one argument (a tuple of the method's
//!   arguments); their results are `Option`/`Result` values rather than "any return value".
//! - After reconnect attempts run out, `on_closed` receives an error saying so (with the last
//!   attempt's error as its source); the TS client passes no error there.
//! - There is no `withCredentials`/cookie jar, no custom `HttpClient`, no logger option: logging is
//!   `tracing` (target `signalr_hub_client`), and a subscriber is never installed by the crate.

#![warn(missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod args;
mod builder;
pub mod classic;
mod connection;
mod error;
mod handlers;
mod negotiate;
mod retry;
mod session;
mod stateful;
mod stream;
mod tls;
mod transport;

pub use args::{Argument, ClientStream, IntoArgument, IntoArguments};
pub use builder::{AccessTokenProvider, HubConnectionBuilder, IntoAccessToken};
pub use connection::{HubConnection, HubConnectionState};
pub use error::{BoxError, Error};
pub use handlers::{Handler, HandlerOutcome, HandlerOutput, Subscription, markers};
pub use retry::{DefaultRetryPolicy, RetryContext, RetryPolicy};
pub use signalr_protocol::{HubProtocol, Payload};
pub use stream::HubStream;
pub use tls::TlsBackend;

/// A transport of the connection layer (docs/protocol.md, "Transports"): `WebSockets`, `ServerSentEvents` or
/// `LongPolling`. The same type as the server's `TransportType` (ASP.NET Core's `HttpTransportType`).
pub use signalr_protocol::TransportType;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn handles_and_futures_are_send() {
        let connection = HubConnectionBuilder::new()
            .with_url("http://127.0.0.1:1/hub")
            .build()
            .expect("build");
        assert_send_sync(&connection);
        assert_send_sync(&Error::new(error::Kind::Closed, "x"));
        assert_send(&connection.start());
        assert_send(&connection.stop());
        assert_send(&connection.invoke::<u32>("M", (1, "two")));
        assert_send(&connection.send("M", (ClientStream::new(futures_util::stream::iter([1])),)));
        assert_send(&connection.stream::<u32>("M", ()));
        let subscription = connection.on("M", |(): ()| {});
        assert_send_sync(&subscription);
    }
}
