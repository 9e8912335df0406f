//! The hub server under test: signalr-server with the benchmark hub `BenchHub`, served to
//! ASP.NET Core SignalR clients on `/hub` and to classic SignalR 2.x clients on `/signalr` (one
//! hub: a broadcast reaches the clients of both).
//!
//! Hub methods (names match case-insensitively):
//! - `Echo(payload)` returns `payload`;
//! - `Broadcast(payload)` calls `Receive(payload)` on every other connection;
//! - `GroupBroadcast(group, payload)` calls `Receive(payload)` on the other members of `group`;
//! - `JoinGroup(name)` adds the caller to group `name`.
//!
//! Stateful reconnect is allowed (`ConnectionOptions::allow_stateful_reconnects`): negotiate
//! grants it only to a client that asks (`useStatefulReconnect=true`), and only a WebSocket whose
//! handshake then says version 2 uses it, so every other client is served exactly as before
//! (the `stateful echo` case is the one that asks).
//!
//! With `--redis HOST:PORT` the hub is on the Redis backplane under the name `Bench.BenchHub`, so
//! that a broadcast reaches the clients of every bench-server on that Redis.
//!
//! Prints `Listening on http://ADDR` on stdout once it accepts connections (the runner reads the
//! port from that line). `RUST_LOG` turns on logging to stderr; without it no subscriber is
//! installed, so tracing costs nothing.

#[path = "../server_runtime.rs"]
mod runtime;

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use clap::Parser;
use signalr_redis::{RedisBackplane, RedisOptions};
use signalr_server::{Hub, HubCallerContext, HubError};

#[derive(Parser, Debug)]
#[command(
    about = "Benchmark hub server (signalr-server): Echo, Broadcast, GroupBroadcast, JoinGroup on /hub (Core) and /signalr (classic)"
)]
struct Args {
    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Leave Nagle's algorithm on. By default the server sets TCP_NODELAY
    /// on every connection, as Kestrel and aiohttp do: with Nagle on, a small write that follows
    /// an unacknowledged one waits for the peer's delayed ACK (~40 ms on Linux).
    #[arg(long)]
    nagle: bool,
    /// Put the hub on the Redis backplane at HOST:PORT (backplane name `Bench.BenchHub`).
    #[arg(long, value_name = "HOST:PORT")]
    redis: Option<String>,
    /// The Tokio scheduler (see `server_runtime.rs`): `auto` is `current-thread` on one CPU.
    #[arg(long, value_enum, default_value_t = runtime::Flavor::Auto)]
    runtime: runtime::Flavor,
}

/// The hub's classic name (classic clients address hubs by name, ignoring case).
const HUB_NAME: &str = "BenchHub";

/// The hub's name on the Redis backplane.
const BACKPLANE_NAME: &str = "Bench.BenchHub";

fn bench_hub(backplane: Option<&RedisBackplane>) -> Hub {
    let builder = match backplane {
        Some(backplane) => Hub::builder().lifetime_manager(backplane.hub(BACKPLANE_NAME)),
        None => Hub::builder(),
    };
    builder
        .name(HUB_NAME)
        .connection_options(signalr_server::ConnectionOptions {
            allow_stateful_reconnects: true,
            ..Default::default()
        })
        .method("Echo", |_: HubCallerContext, payload: String| async move {
            payload
        })
        .method(
            "Broadcast",
            |hub: HubCallerContext, payload: String| async move {
                hub.clients().others().send("Receive", (payload,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "GroupBroadcast",
            |hub: HubCallerContext, group: String, payload: String| async move {
                hub.clients()
                    .others_in_group(group)
                    .send("Receive", (payload,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "JoinGroup",
            |hub: HubCallerContext, name: String| async move {
                hub.groups()
                    .add_to_group(hub.connection_id(), &name)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .build()
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    runtime::build(args.runtime)?.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let backplane = match &args.redis {
        Some(address) => Some(
            RedisBackplane::connect(RedisOptions::new(format!("redis://{address}")))
                .await
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    let hub = bench_hub(backplane.as_ref());
    let app = Router::new()
        .nest("/hub", hub.router())
        .nest("/signalr", signalr_server::classic_router([&hub]));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let address = listener.local_addr()?;
    println!("Listening on http://{address}");
    // The serving recipe the apps use (Kestrel's request limits, write stall timeout).
    signalr_server::serve(listener, app)
        .options(signalr_server::serve::ServeOptions::new().tcp_nodelay(!args.nagle))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
