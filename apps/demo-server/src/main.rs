//! The browser demo of SignalR for Rust. Every page can connect with the official
//! `@microsoft/signalr` browser client (JSON or MessagePack) or with the classic jQuery SignalR
//! 2.x client; `npm ci` installs both into `web/node_modules`, and the server serves them from
//! there.
//!
//! | page | hub (Core / classic name) | what it shows |
//! |---|---|---|
//! | `/chat` | `/hubs/chat` / `ChatHub` | rooms (groups), join/leave notices, private messages by name, a chosen client, transport and protocol, automatic reconnect that rejoins the room |
//! | `/stocks` | `/hubs/stocks` / `StockTickerHub` | ASP.NET's stock ticker: a background task broadcasts prices through the hub's `HubContext`; open/close/reset the market |
//! | `/shape` | `/hubs/shape` / `MoveShapeHub` | ASP.NET's MoveShape: drag in one window, it moves in every other; the server broadcasts the latest position at most every 40 ms |
//! | `/status` | `/hubs/status` / `StatusHub` | live connections by transport and protocol, groups, messages in/out per second |
//!
//! `/metrics` serves the server's metrics in Prometheus' text format: among them ASP.NET Core's
//! connection metrics, which `signalr-server` records (`signalr_server::metrics`):
//! `signalr_server_active_connections{signalr_transport="web_sockets"}` and the histogram
//! `signalr_server_connection_duration` (Prometheus' spelling of
//! `signalr.server.active_connections` and `signalr.server.connection.duration`). The status
//! page's connection totals come from the same recorder (see the `stats` module).
//!
//! ASP.NET Core clients connect at `/hubs/<name>`; classic SignalR 2.x clients (jQuery, or the
//! .NET `Microsoft.AspNet.SignalR.Client`) at `/signalr`, where `/signalr/hubs` is the generated
//! JavaScript proxy. Both kinds of client of one hub are one set of connections: a Core page and
//! a jQuery page in the same chat room talk to each other.
//!
//! # On several servers
//!
//! With `--redis HOST:PORT` (and `--redis-prefix P`) every hub is on a Redis backplane under a
//! backplane name of its own (`Demo.ChatHub`, `Demo.StockTickerHub`, `Demo.MoveShapeHub`,
//! `Demo.StatusHub`), so that demo servers on one Redis share their clients:
//! `./scripts/demo.sh --redis` starts a Redis and two servers. What crosses servers and what each
//! server keeps to itself:
//!
//! | hub | across servers | per server |
//! |---|---|---|
//! | chat | room messages, join and leave notices, private messages by name (each name is a group too) | the member list `Join` answers (names on this server; the page adds the others as they join), the "Nobody called … is online" check (a private message to an unknown name is dropped silently) |
//! | stocks | the prices and market events of the one server that runs the market | the market itself: start every other server with `--no-market`; their stock methods answer that the market is elsewhere |
//! | shape | every move: each server broadcasts what its own clients send | the position `GetShape` answers to a page that opens (the last move made on this server) |
//! | status | every server pushes its figures to every status page, which shows all servers | the figures: connections, groups, rooms, messages in and out are this server's own |
//!
//! `./scripts/demo.sh` installs the npm files when missing and runs this server. Ctrl-C (or
//! SIGTERM) refuses new hub requests (503), closes every connection (Core clients get a Close
//! message that allows reconnecting; classic connections are asked to reconnect, then ended), then
//! stops the HTTP server gracefully.

mod assets;
mod chat;
mod metrics;
mod shape;
mod stats;
mod stocks;

use std::future::IntoFuture;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use serde::Serialize;
use signalr_redis::{RedisBackplane, RedisOptions};
use signalr_server::{
    Hub, HubBuilder, HubCallerContext, HubContext, TransportType, classic_router,
};
use tracing_subscriber::EnvFilter;

use crate::chat::ChatState;
use crate::shape::Shape;
use crate::stats::{BackplaneSource, ServerInfo, Stats, StatsFilter, StatusSource};
use crate::stocks::{StockContext, StockMarket};

/// How long shutdown waits for the clients to get their Close message and go.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long the HTTP server may take to finish its requests after that.
const HTTP_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "SignalR for Rust demo: chat, stock ticker, move shape and a live status page")]
struct Args {
    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Address to bind (e.g. 0.0.0.0 to be reachable from other machines).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The `web/` folder whose `node_modules` holds the browser clients (after `npm ci`).
    #[arg(long, default_value_os_t = assets::default_web_dir())]
    web_dir: PathBuf,
    /// Put every hub on the Redis backplane at HOST:PORT: demo servers on the same Redis share
    /// their clients (start one of them without `--no-market`, the others with it).
    #[arg(long, value_name = "HOST:PORT")]
    redis: Option<String>,
    /// Channel prefix on the Redis backplane (every server on the Redis must use the same).
    #[arg(long, value_name = "PREFIX", requires = "redis")]
    redis_prefix: Option<String>,
    /// Run no stock market here: with `--redis`, this server's stock clients get the prices of
    /// the server on the same Redis that runs the market.
    #[arg(long, requires = "redis")]
    no_market: bool,
}

/// The backplane name of a demo hub: `Demo.` and its classic name (`Demo.ChatHub`).
pub fn backplane_name(classic_name: &str) -> String {
    format!("Demo.{classic_name}")
}

/// What `Whoami()` answers on every hub: the connection as the server sees it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Whoami {
    connection_id: String,
    transport: Option<&'static str>,
    protocol: &'static str,
}

/// The protocol a connection speaks, as the pages and the status page name it: the Core hub
/// protocol (`json`, `messagepack`) or `classic` ([`stats::CLASSIC`]) for a SignalR 2.x client.
pub fn protocol_name(hub: &HubCallerContext) -> &'static str {
    hub.protocol().map_or(stats::CLASSIC, |p| p.name())
}

/// A hub builder with what every demo hub has: its name for classic clients, the
/// [`StatsFilter`] that counts its connections and invocations for the status page (under the
/// short `name`), `Whoami()`, and with a backplane its lifetime manager on it (under
/// [`backplane_name`]).
pub fn demo_hub(
    name: &'static str,
    classic_name: &'static str,
    stats: &Arc<Stats>,
    backplane: Option<&RedisBackplane>,
) -> HubBuilder {
    let builder = match backplane {
        Some(backplane) => {
            Hub::builder().lifetime_manager(backplane.hub(&backplane_name(classic_name)))
        }
        None => Hub::builder(),
    };
    builder
        .name(classic_name)
        .filter(StatsFilter::new(name, stats.clone()))
        .method("Whoami", |hub: HubCallerContext| async move {
            Whoami {
                connection_id: hub.connection_id().to_owned(),
                transport: hub.transport().map(TransportType::name),
                protocol: protocol_name(&hub),
            }
        })
}

/// Whether a hub request opens a connection (or, classic, reopens one): a Core or classic
/// `negotiate`, a classic `connect` or `reconnect`. Classic endpoints match the last segment
/// ignoring case.
fn opens_connection(path: &str) -> bool {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    ["negotiate", "connect", "reconnect"]
        .iter()
        .any(|action| last.eq_ignore_ascii_case(action))
}

/// Once the server is shutting down, answers 503 to the hub requests that open a connection, so
/// that clients told to reconnect do not come back to this process. Requests of open connections
/// go on (a long-polling Core client still fetches its Close message).
async fn refuse_while_stopping(
    State(stopping): State<Arc<AtomicBool>>,
    request: Request,
    next: Next,
) -> Response {
    if stopping.load(Ordering::Acquire) && opens_connection(request.uri().path()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
            .into_response();
    }
    next.run(request).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn open_connections(hubs: &[HubContext]) -> usize {
    hubs.iter().map(HubContext::connection_count).sum()
}

/// Waits until `done()` holds, at most until `deadline`.
async fn wait_until(deadline: tokio::time::Instant, done: impl Fn() -> bool) {
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Closes every connection of every hub and waits, at most [`CLOSE_GRACE`], until they are gone.
/// Every client is first asked to reconnect: ASP.NET Core clients get a Close message that allows
/// reconnecting, and go; classic clients get the classic reconnect request and keep their
/// connection, as a classic reconnect does. The hub routes already answer 503 (see
/// [`refuse_while_stopping`]) to requests that open a connection, so nobody reconnects to this
/// process; the classic connections left are then ended, which closes their transports (their
/// clients reconnect to the next server run).
async fn close_all(hubs: &[HubContext], stats: &Stats) {
    tracing::info!(
        connections = open_connections(hubs),
        "shutting down: closing every connection"
    );
    for hub in hubs {
        hub.close_all(None, true);
    }
    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
    wait_until(deadline, || {
        open_connections(hubs) <= stats.connections_with_protocol(crate::stats::CLASSIC)
    })
    .await;
    if open_connections(hubs) > 0 {
        for hub in hubs {
            hub.close_all(None, false);
        }
        wait_until(deadline, || open_connections(hubs) == 0).await;
    }
    // The hubs let go of their connections before the transports have delivered the Close
    // messages (a long poll may still have to take it): wait for the transports too.
    wait_until(deadline, || {
        hubs.iter()
            .map(HubContext::open_transport_count)
            .sum::<usize>()
            == 0
    })
    .await;
    let left = open_connections(hubs);
    if left > 0 {
        tracing::warn!(
            connections = left,
            "connections still open after the grace period"
        );
    }
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

    let missing = assets::missing_libraries(&args.web_dir);
    if !missing.is_empty() {
        tracing::warn!(
            web_dir = %args.web_dir.display(),
            "the browser clients' files are missing ({}): run `npm ci` in that folder \
             (./scripts/demo.sh does); the pages cannot connect until then",
            missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }

    let backplane = match &args.redis {
        Some(address) => {
            let mut options = RedisOptions::new(format!("redis://{address}"));
            if let Some(prefix) = &args.redis_prefix {
                options = options.channel_prefix(prefix.clone());
            }
            let backplane = RedisBackplane::connect(options)
                .await
                .map_err(std::io::Error::other)?;
            tracing::info!(redis = %address, prefix = ?args.redis_prefix, "every hub is on the Redis backplane");
            Some(backplane)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let address = listener.local_addr()?;

    // Before the hubs' routers: each endpoint describes the metrics to the recorder it finds.
    let (prometheus, active_connections) = metrics::install()?;
    let stats = Arc::new(Stats::with_metrics(active_connections));
    // Prometheus keeps histogram samples until a scrape or an upkeep folds them in.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let chat_state = Arc::new(ChatState::new(backplane.is_some()));
    let market = StockMarket::new(stats.clone(), !args.no_market);
    let stock_context = StockContext::default();
    let shape_state = Shape::new(stats.clone());

    let chat = chat::chat_hub(chat_state.clone(), stats.clone(), backplane.as_ref());
    let stocks = stocks::stock_hub(
        market.clone(),
        stock_context.clone(),
        stats.clone(),
        backplane.as_ref(),
    );
    stock_context.set(stocks.context());
    let shape = shape::shape_hub(shape_state.clone(), stats.clone(), backplane.as_ref());
    let mut hubs = vec![chat.context(), stocks.context(), shape.context()];
    let source = StatusSource {
        stats: stats.clone(),
        chat: chat_state,
        hubs: hubs.clone(),
        server: ServerInfo::new(format!("http://{address}"), !args.no_market),
        backplane: BackplaneSource {
            redis: args.redis.clone(),
            prefix: args.redis_prefix.clone(),
            backplane: backplane.clone(),
        },
    };
    let status = stats::status_hub(stats.clone(), source.clone(), backplane.as_ref());
    hubs.push(status.context());

    if args.no_market {
        tracing::info!(
            "no stock market here: the prices come from another server on the backplane"
        );
    } else {
        tokio::spawn(market.run_ticker(stocks.context()));
    }
    tokio::spawn(shape_state.run_broadcaster(shape.context()));
    tokio::spawn(stats::run_sampler(source, status.context()));

    let stopping = Arc::new(AtomicBool::new(false));
    let hub_routes = Router::new()
        .nest("/hubs/chat", chat.router())
        .nest("/hubs/stocks", stocks.router())
        .nest("/hubs/shape", shape.router())
        .nest("/hubs/status", status.router())
        // The same hubs for classic SignalR 2.x clients, with the generated proxy at /signalr/hubs.
        .nest(
            "/signalr",
            classic_router([&chat, &stocks, &shape, &status]),
        )
        .layer(middleware::from_fn_with_state(
            stopping.clone(),
            refuse_while_stopping,
        ));
    let app = hub_routes
        .route(
            "/metrics",
            axum::routing::get(move || async move { prometheus.render() }),
        )
        .merge(assets::router(args.web_dir.clone()));

    println!("Listening on http://{address}");
    println!("Open http://{address}/ in a browser: /chat, /stocks, /shape, /status (Ctrl-C stops)");
    tracing::info!(%address, web_dir = %args.web_dir.display(), "demo server started");

    let (shutting_down, shutdown_started) = tokio::sync::oneshot::channel::<()>();
    // Kestrel's request limits (header timeout and size, minimum body rate, a cap on half-sent
    // requests), TCP_NODELAY and the client address on every request.
    let server = signalr_server::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping.store(true, Ordering::Release);
            close_all(&hubs, &stats).await;
            tracing::info!("stopping the HTTP server");
            let _ = shutting_down.send(());
        })
        .into_future();
    tokio::select! {
        result = server => result?,
        () = async {
            if shutdown_started.await.is_ok() {
                tokio::time::sleep(HTTP_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!("HTTP requests still open after the grace period; exiting"),
    }
    tracing::info!("demo server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::opens_connection;

    #[test]
    fn requests_that_open_connections() {
        for path in [
            "/hubs/chat/negotiate",
            "/signalr/negotiate",
            "/signalr/connect",
            "/signalr/Reconnect/",
        ] {
            assert!(opens_connection(path), "{path}");
        }
        for path in [
            "/hubs/chat",
            "/signalr/poll",
            "/signalr/send",
            "/signalr/abort",
            "/signalr/hubs",
        ] {
            assert!(!opens_connection(path), "{path}");
        }
    }
}
