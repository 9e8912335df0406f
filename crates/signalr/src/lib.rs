//! ASP.NET Core SignalR for Rust in one dependency: the server (hubs for axum, which the official
//! JavaScript, .NET, Java and Swift clients and classic SignalR 2.x clients call), the Rust
//! client, and the Redis scale-out backplane.
//!
//! This crate only re-exports the project's crates, one module each, picked with features:
//!
//! | module | crate | feature |
//! |---|---|---|
//! | `signalr::server` | `signalr-server`: hubs, transports, auth, filters, the classic front door | `server` (default) |
//! | `signalr::client` | `signalr-hub-client`: the client for ASP.NET Core and classic hubs | `client` |
//! | `signalr::redis` | `signalr-redis`: the Redis backplane, wire-compatible with ASP.NET Core's | `redis` (turns on `server`) |
//! | [`protocol`] | `signalr-protocol`: the hub protocol's messages, JSON and MessagePack | always |
//!
//! With `server`, the server's everyday names are also at the root: `signalr::Hub`,
//! `signalr::HubCallerContext`, `signalr::serve`, the `#[signalr::hub]` and
//! `#[signalr::hub_client]` macros, and so on (the root of `signalr::server`). Everything else
//! is in the server's modules, e.g. `signalr::server::auth::JwtAuthenticator`.
//!
//! The `#[hub]` and `#[hub_client]` macros find the server crate under either name: through this
//! crate (`signalr::server`) when the package depends on `signalr` and not on `signalr-server`.
#![cfg_attr(
    all(feature = "server", feature = "client"),
    doc = r##"
# A hub and a client, in one program

With `features = ["server", "client"]`: a hub on a local port, and the Rust client calling it.

```
use signalr::client::HubConnectionBuilder;
use signalr::{Hub, HubCallerContext, HubError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let chat = Hub::builder()
        .method("SendMessage", |hub: HubCallerContext, user: String, text: String| async move {
            hub.clients().all().send("ReceiveMessage", (user, text)).await?;
            Ok::<_, HubError>(())
        })
        .method("Add", |_: HubCallerContext, a: i64, b: i64| async move { a + b })
        .build();
    let app = axum::Router::new().nest("/chat", chat.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/chat", listener.local_addr()?);
    tokio::spawn(async move { signalr::serve(listener, app).await });

    let connection = HubConnectionBuilder::new().with_url(url).build()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _subscription = connection.on("ReceiveMessage", move |(user, text): (String, String)| {
        let _ = tx.send(format!("{user}: {text}"));
    });
    connection.start().await?;

    let sum: i64 = connection.invoke("Add", (2, 3)).await?;
    assert_eq!(sum, 5);
    connection.send("SendMessage", ("ann", "hello")).await?;
    assert_eq!(rx.recv().await.as_deref(), Some("ann: hello"));

    connection.stop().await;
    Ok(())
}
```
"##
)]
//!
//! # Features
//! - `server` (default): `signalr::server`, and its everyday names at the root.
//! - `client`: `signalr::client`.
//! - `redis`: `signalr::redis` (and `server`).
//!
//! The server's own features (`cors`, `jwt`) are on, as in `signalr-server` by default.

#![warn(missing_debug_implementations, unreachable_pub)]

/// The hub protocol (`signalr-protocol`): messages, the JSON and MessagePack protocols,
/// handshake and negotiate types.
#[doc(inline)]
pub use signalr_protocol as protocol;

/// The server (`signalr-server`): hubs for axum. Its everyday names are also at the root of this
/// crate.
#[cfg(feature = "server")]
#[doc(inline)]
pub use signalr_server as server;

/// The client (`signalr-hub-client`): connects to ASP.NET Core hubs (and, in `classic`, to
/// SignalR 2.x servers).
#[cfg(feature = "client")]
#[doc(inline)]
pub use signalr_hub_client as client;

/// The Redis scale-out backplane (`signalr-redis`).
#[cfg(feature = "redis")]
#[doc(inline)]
pub use signalr_redis as redis;

#[cfg(feature = "server")]
#[doc(no_inline)]
pub use signalr_server::{
    ConnectionOptions, Hub, HubBuilder, HubCallerContext, HubContext, HubError, HubOptions,
    HubProtocol, TransportType, classic_router, hub, hub_client, serve,
};
