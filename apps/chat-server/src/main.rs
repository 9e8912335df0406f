//! A small chat server over every SignalR transport and protocol: the README's first command,
//! and the server the interop tests drive.
//!
//! Hubs: `/chat` (WebSockets, Server-Sent Events, long polling) and `/chat-nowebsockets` (the same
//! hub without WebSockets, to exercise the clients' transport fallback).

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use clap::Parser;
use serde::{Deserialize, Serialize};
use signalr_server::{
    ConnectionOptions, Hub, HubCallerContext, HubError, HubOptions, TransportType,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(about = "SignalR chat server (Rust): a chat hub on every transport and protocol")]
struct Args {
    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Send exception details to clients (ASP.NET EnableDetailedErrors).
    #[arg(long)]
    detailed_errors: bool,
    /// Largest hub message accepted from a client, in bytes (ASP.NET MaximumReceiveMessageSize).
    #[arg(long, default_value_t = 32 * 1024)]
    max_message_size: usize,
}

/// The typed object of `EchoObject`.
#[derive(Debug, Serialize, Deserialize)]
struct ChatObject {
    name: String,
    count: i64,
    tags: Vec<String>,
    nested: Nested,
}

#[derive(Debug, Serialize, Deserialize)]
struct Nested {
    flag: bool,
    ratio: f64,
}

fn chat_hub(options: HubOptions, connection_options: ConnectionOptions) -> Hub {
    Hub::builder()
        .options(options)
        .connection_options(connection_options)
        .method(
            "SendMessage",
            |hub: HubCallerContext, user: String, message: String| async move {
                hub.clients()
                    .all()
                    .send("ReceiveMessage", (user, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "Echo",
            |_: HubCallerContext, value: serde_json::Value| async move { value },
        )
        .method(
            "EchoObject",
            |_: HubCallerContext, value: ChatObject| async move { value },
        )
        .method("GetConnectionId", |hub: HubCallerContext| async move {
            hub.connection_id().to_owned()
        })
        .method(
            "GetActiveTransportName",
            |hub: HubCallerContext| async move { hub.transport().map(TransportType::name) },
        )
        .method("Throw", |_: HubCallerContext, message: String| async move {
            Err::<(), _>(HubError::new(message))
        })
        .method(
            "CloseWithError",
            |hub: HubCallerContext, message: String, allow_reconnect: bool| async move {
                hub.close(Some(message), allow_reconnect);
            },
        )
        .build()
}

const INDEX: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>SignalR for Rust: chat server</title>
<h1>SignalR for Rust: chat server</h1>
<p>This server speaks the ASP.NET Core SignalR protocol. Hubs:</p>
<ul>
<li><code>/chat</code>: WebSockets, Server-Sent Events, long polling; JSON and MessagePack.</li>
<li><code>/chat-nowebsockets</code>: the same hub without WebSockets.</li>
</ul>
<p>Hub methods: <code>SendMessage(user, message)</code> (calls <code>ReceiveMessage</code> on every
client), <code>Echo(value)</code>, <code>EchoObject(obj)</code>, <code>GetConnectionId()</code>,
<code>GetActiveTransportName()</code>, <code>Throw(message)</code>,
<code>CloseWithError(message, allowReconnect)</code>.</p>
<p>Chat from a terminal with the official JavaScript client: <code>node interop/chat.mjs http://HOST</code>.</p>
"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let options = HubOptions {
        enable_detailed_errors: args.detailed_errors,
        maximum_receive_message_size: Some(args.max_message_size),
        ..HubOptions::default()
    };
    let no_websockets = ConnectionOptions {
        transports: vec![TransportType::ServerSentEvents, TransportType::LongPolling],
        ..ConnectionOptions::default()
    };
    let app = Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .nest(
            "/chat",
            chat_hub(options.clone(), ConnectionOptions::default()).router(),
        )
        .nest(
            "/chat-nowebsockets",
            chat_hub(options, no_websockets).router(),
        );

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let address = listener.local_addr()?;
    println!("Listening on http://{address}");
    println!("Chat hub: http://{address}/chat  (try: node interop/chat.mjs http://{address})");
    tracing::info!(%address, "chat server started");
    // Kestrel's request limits (header timeout and size, minimum body rate, a cap on half-sent
    // requests), TCP_NODELAY and the client address on every request.
    signalr_server::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
