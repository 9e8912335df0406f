//! A Redis scale-out backplane for `signalr-server`, wire-compatible with ASP.NET Core's
//! (`Microsoft.AspNetCore.SignalR.StackExchangeRedis`): Rust servers and ASP.NET Core servers
//! sharing one Redis deliver each other's hub messages, group changes and client results.
//!
//! ```no_run
//! use signalr_redis::{RedisBackplane, RedisOptions};
//! use signalr_server::{Hub, HubCallerContext, HubError};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // One backplane per process, shared by every hub.
//!     let backplane = RedisBackplane::connect(RedisOptions::new("redis://127.0.0.1:6379")).await?;
//!     let chat = Hub::builder()
//!         .method("SendMessage", |hub: HubCallerContext, user: String, text: String| async move {
//!             // Reaches the clients of every server on this Redis.
//!             hub.clients().all().send("ReceiveMessage", (user, text)).await?;
//!             Ok::<_, HubError>(())
//!         })
//!         // The backplane name: the same as the .NET hub's full type name, to share its channels.
//!         .lifetime_manager(backplane.hub("Peer.ChatHub"))
//!         .build();
//!     let app = axum::Router::new().nest("/chat", chat.router());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//!     signalr_server::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//! The servers talk through Redis pub/sub only: `SUBSCRIBE`, `UNSUBSCRIBE` and `PUBLISH` on
//! literal channel names, nothing stored. Each hub has a backplane name (`{H}`, the .NET hub's
//! full type name when it shares channels with an ASP.NET Core hub) and, per server, a server
//! name made at start (`{host}_{32 hex}`). The channels, all prefixed with
//! [`RedisOptions::channel_prefix`] when set:
//!
//! | channel | carries | subscribed by |
//! |---|---|---|
//! | `{H}:all` | sends to all, all-except, others | every server |
//! | `{H}:group:{g}` | sends to a group (except some) | servers with a member of `g` |
//! | `{H}:user:{u}` | sends to a user | servers with a connection of `u` |
//! | `{H}:connection:{id}` | sends and client-result calls to one connection | its server |
//! | `{H}:internal:groups` | group changes for connections of other servers | every server |
//! | `{H}:internal:ack:{server}` | acknowledgements of those changes | `{server}` |
//! | `{H}:internal:return:{server}` | answers to client-result calls | `{server}` |
//!
//! Messages are serialized once per hub protocol (JSON and MessagePack, framed) and published as
//! one MessagePack envelope; the receiving server writes the frame of each connection's protocol
//! to it unchanged (classic SignalR 2.x clients get theirs made from the JSON frame). The byte
//! layouts are in [`protocol`].
//!
//! A send to all, a group or a user is delivered to this server's connections by the same round
//! trip through Redis as to the others' (as ASP.NET does), so each connection gets it once. A
//! send to one connection of this server is written to it directly.
//!
//! # When Redis is away
//! Both Redis connections reconnect by themselves (every second at most) and every
//! subscription is restored; the loss and the recovery are logged once each. Meanwhile:
//! - a publish on a broken connection is tried again every 100 ms while the connection
//!   reconnects; after [`RedisOptions::command_timeout`] in all, sends, group changes for
//!   connections of other servers and client results to them fail with
//!   [`SendError::Backplane`], [`GroupError::Backplane`] and [`ClientResultError::Backplane`]
//!   (never a hang);
//! - messages published by others while this server's subscription is down are **lost** for
//!   this server's connections, as with ASP.NET (Redis pub/sub keeps nothing);
//! - new connections are accepted and reach this server's clients at once; other servers reach
//!   them once the subscription is back (ASP.NET closes them once their subscription times out).
//!
//! [`SendError::Backplane`]: signalr_server::error::SendError::Backplane
//! [`GroupError::Backplane`]: signalr_server::error::GroupError::Backplane
//! [`ClientResultError::Backplane`]: signalr_server::error::ClientResultError::Backplane

#![warn(missing_debug_implementations, unreachable_pub)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

mod manager;
pub mod protocol;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use signalr_server::lifetime::{DefaultHubLifetimeManager, HubLifetimeManager};

pub use manager::RedisHubLifetimeManager;

/// How to reach Redis, and the backplane's timeouts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// The Redis URL: `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS is not
    /// enabled in this build).
    pub url: String,
    /// Prepended, with no separator, to every channel name on the wire (StackExchange.Redis
    /// `ChannelPrefix`); every server on the Redis must use the same. `None` by default.
    pub channel_prefix: Option<String>,
    /// How long a Redis command (a `PUBLISH`, a `SUBSCRIBE`) may take before it fails, and the
    /// connect timeout. 5 s by default.
    pub command_timeout: Duration,
    /// How long a group change for a connection of another server waits for its
    /// acknowledgement before failing with [`GroupError::AckTimeout`](signalr_server::error::GroupError::AckTimeout).
    /// 30 s by default, as ASP.NET.
    pub ack_timeout: Duration,
}

impl RedisOptions {
    /// Options for the Redis at `url` (e.g. `redis://127.0.0.1:6379`), with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            channel_prefix: None,
            command_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
        }
    }

    /// Sets [`RedisOptions::channel_prefix`].
    pub fn channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = Some(prefix.into());
        self
    }

    /// Sets [`RedisOptions::command_timeout`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Sets [`RedisOptions::ack_timeout`].
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }
}

/// The errors of [`RedisBackplane::connect`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a valid Redis URL.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// Redis could not be reached or refused the connection.
    #[error("cannot connect to Redis: {0}")]
    Unreachable(String),
}

/// A connection to Redis for the hubs of this process (one publishing connection, shared; one
/// subscribing connection per hub, as ASP.NET). Cheap to clone.
#[derive(Clone)]
pub struct RedisBackplane {
    client: redis::Client,
    publisher: redis::aio::ConnectionManager,
    options: Arc<RedisOptions>,
    /// Where the hubs' subscriber tasks run (the runtime `connect` was called on).
    runtime: tokio::runtime::Handle,
    hubs: Arc<Mutex<Vec<Weak<dyn manager::HubStatusSource>>>>,
}

/// One hub on the backplane, as [`RedisBackplane::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStatus {
    /// The hub's backplane name (the `{H}` of its channels).
    pub hub_name: String,
    /// This server's name for the hub, made at start (`{host}_{32 hex}`), unique per start.
    pub server_name: String,
    /// Whether the hub's subscribing connection is up now (false while Redis is away).
    pub subscribed: bool,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// Connects to Redis. Later losses of the connection are repaired in the background (see
    /// the crate docs); only the first connection must succeed.
    ///
    /// # Errors
    /// [`ConnectError::InvalidUrl`], or [`ConnectError::Unreachable`] when Redis does not
    /// answer within [`RedisOptions::command_timeout`].
    pub async fn connect(options: RedisOptions) -> Result<Self, ConnectError> {
        // TCP_NODELAY, as StackExchange.Redis sets it: a publish is one small write that should
        // leave at once, not wait for the previous one's acknowledgement.
        let info = redis::IntoConnectionInfo::into_connection_info(options.url.as_str())
            .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client =
            redis::Client::open(info).map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.command_timeout))
            .set_response_timeout(Some(options.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let publisher = tokio::time::timeout(
            options.command_timeout,
            redis::aio::ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| ConnectError::Unreachable("timed out".into()))?
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        Ok(RedisBackplane {
            client,
            publisher,
            options: Arc::new(options),
            runtime: tokio::runtime::Handle::current(),
            hubs: Arc::default(),
        })
    }

    /// The hubs on this backplane (those whose lifetime manager is alive), in the order they
    /// were built.
    pub fn status(&self) -> Vec<HubStatus> {
        self.hubs.lock().map_or_else(
            |_| Vec::new(),
            |hubs| {
                hubs.iter()
                    .filter_map(Weak::upgrade)
                    .map(|hub| hub.status())
                    .collect()
            },
        )
    }

    fn register(&self, hub: &Weak<dyn manager::HubStatusSource>) {
        if let Ok(mut hubs) = self.hubs.lock() {
            hubs.retain(|h| h.strong_count() > 0);
            hubs.push(hub.clone());
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// A lifetime manager maker for
    /// [`HubBuilder::lifetime_manager`](signalr_server::HubBuilder::lifetime_manager): the hub
    /// joins the backplane under `hub_name`, its backplane name. Servers whose hubs have the same
    /// backplane name (and the same channel prefix) share their clients; to share with an
    /// ASP.NET Core hub, use the full name of its .NET type (e.g. `MyApp.Hubs.ChatHub`).
    ///
    /// The manager subscribes its start channels at once in the background; a connection that
    /// joins the hub before they are ready waits for them (at most
    /// [`RedisOptions::command_timeout`]).
    pub fn hub(
        &self,
        hub_name: &str,
    ) -> impl FnOnce(Arc<DefaultHubLifetimeManager>) -> Arc<dyn HubLifetimeManager> + Send + 'static
    {
        let backplane = self.clone();
        let hub_name = hub_name.to_owned();
        move |local| RedisHubLifetimeManager::start(&backplane, &hub_name, local)
    }
}
