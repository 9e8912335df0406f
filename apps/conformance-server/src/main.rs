//! A conformance server: the endpoints and hub methods that ASP.NET Core SignalR's own TypeScript
//! client functional tests (`src/SignalR/clients/ts/FunctionalTests`) run against, so any SignalR
//! client can be checked against this server the way it would be against ASP.NET Core.
//!
//! | endpoint | what |
//! |---|---|
//! | `/testhub` | `TestHub`, every transport |
//! | `/testhub-nowebsockets` | `TestHub`, Server-Sent Events and long polling |
//! | `/testhub-stateful` | `TestHub` with stateful reconnect allowed (ASP.NET's `AllowStatefulReconnects`) |
//! | `/authorizedhub` | a hub that requires a JWT from `/generateJwtToken` |
//! | `/chat` | `ChatHub` for scale-out checks (see `chat_hub.rs`), on the Redis backplane with `--redis`, backplane name `Peer.ChatHub` |
//! | `/redirect` | negotiate answers a redirect to `/testhub?numRedirects=N` with an access token |
//! | `/bad-negotiate` | every request answers 400 `Some response from server` |
//! | `/echo` | a raw connection (no hub protocol) echoing what it receives |
//! | `/echoredirect` | 307 to the same request on `/echo` |
//! | `GET /generateJwtToken[?user=NAME]` | a token for `/authorizedhub` (user `testuser` by default) |
//! | `GET /clientresult/{connectionId}` | invokes `Result` on that `TestHub` connection, answers its result or the error text |
//! | `/signalr` | classic SignalR 2.x clients: hubs `TestHub`, `renamed` and `SecretHub` (see `classic_hub.rs`), proxy at `/signalr/hubs` |
//! | `GET /broadcast?msg=M` | `broadcast(M)` to every classic `TestHub` client through the hub context |
//!
//! As in the ASP.NET test server, negotiate responses set the cookies `testCookie`,
//! `testCookie2` and an already expired `expiredCookie`, detailed errors are on, and requests with
//! an `Origin` get permissive CORS headers (`OPTIONS` answers 204).

mod authorized_hub;
mod chat_hub;
mod classic_hub;
mod complex;
mod endpoints;
mod test_hub;

use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    about = "SignalR conformance server (Rust): the endpoints and hubs of ASP.NET Core SignalR's client functional tests"
)]
struct Args {
    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 5001)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Put `/chat` on the Redis backplane at HOST:PORT (ASP.NET Core's format, backplane name
    /// `Peer.ChatHub`).
    #[arg(long, value_name = "HOST:PORT")]
    redis: Option<String>,
    /// Channel prefix on the Redis backplane (StackExchange.Redis `ChannelPrefix`).
    #[arg(long, value_name = "PREFIX", requires = "redis")]
    redis_prefix: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let backplane = match &args.redis {
        Some(address) => {
            let mut options = signalr_redis::RedisOptions::new(format!("redis://{address}"));
            if let Some(prefix) = &args.redis_prefix {
                options = options.channel_prefix(prefix.clone());
            }
            let backplane = signalr_redis::RedisBackplane::connect(options)
                .await
                .map_err(std::io::Error::other)?;
            tracing::info!(redis = %address, prefix = ?args.redis_prefix, "/chat is on the Redis backplane");
            Some(backplane)
        }
        None => None,
    };
    let app = endpoints::app(chat_hub::chat_hub(backplane.as_ref()));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let address = listener.local_addr()?;
    println!("Listening on http://{address}");
    tracing::info!(%address, "conformance server started");
    // Kestrel's request limits (header timeout and size, minimum body rate, a cap on half-sent
    // requests), TCP_NODELAY and the client address on every request.
    signalr_server::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
