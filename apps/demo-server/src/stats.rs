//! The status page's numbers, sampled once a second and pushed to the `/hubs/status` clients:
//!
//! - connections (the total and by transport) of ASP.NET Core clients: the server's
//!   `signalr.server.active_connections` metric (ASP.NET's name, by `signalr.transport`), read
//!   from the demo's recorder ([`crate::metrics`]); classic SignalR 2.x connections, which that
//!   metric leaves out, are added from the filter's counts;
//! - connections by hub and by protocol (and the hub × transport × protocol table): counted by a
//!   [`HubFilter`] around connect and disconnect, since no ASP.NET metric has a hub or protocol
//!   attribute;
//! - messages in (hub invocations, counted by the same filter) and out (counted where the demo
//!   sends): no ASP.NET metric counts them either.
//!
//! The metric counts a connection from its transport's start to its removal, the filter from
//! the hub's connected hook to its disconnected hook: for a moment around a connect or a
//! disconnect the two may differ by one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::Serialize;
use signalr_redis::RedisBackplane;
use signalr_server::{
    Hub, HubCallerContext, HubContext, HubError,
    filter::{HubFilter, HubInvocation, Next, NextConnected, NextDisconnected},
    hub::{InvokeError, MethodOutput},
};

use crate::chat::ChatState;
use crate::metrics::ActiveConnections;

/// The protocol name of classic SignalR 2.x connections ([`crate::protocol_name`]).
pub const CLASSIC: &str = "classic";

/// Seconds of history kept for the status chart.
pub const HISTORY_SECONDS: usize = 120;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Locks a mutex, ignoring poisoning (the data are counters and stay usable).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which kind of connection: hub, transport and hub protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionKind {
    /// The hub's short name (`chat`, `stocks`, `shape`, `status`).
    pub hub: &'static str,
    /// `WebSockets`, `ServerSentEvents` or `LongPolling`.
    pub transport: &'static str,
    /// `json` or `messagepack` (ASP.NET Core clients), `classic` (SignalR 2.x clients).
    pub protocol: &'static str,
}

/// One second of the status chart.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When the second ended, in ms since the Unix epoch.
    pub at: u64,
    /// Open connections of all hubs.
    pub connections: usize,
    /// Hub invocations received during the second.
    pub messages_in: u64,
    /// Client method calls sent during the second (one per recipient connection).
    pub messages_out: u64,
}

/// A row of the connections table.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRow {
    /// The hub's short name.
    pub hub: &'static str,
    /// The transport.
    pub transport: &'static str,
    /// The hub protocol.
    pub protocol: &'static str,
    /// Open connections of this kind.
    pub count: usize,
}

/// A chat room and how many connections are in it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRow {
    /// The room (a SignalR group of the chat hub).
    pub room: String,
    /// Connections in the room.
    pub members: usize,
    /// The distinct names in the room.
    pub names: Vec<String>,
}

/// The demo's hubs: the short name of the status page and the classic name (whose backplane
/// name is [`crate::backplane_name`]).
pub const DEMO_HUBS: [(&str, &str); 4] = [
    ("chat", "ChatHub"),
    ("stocks", "StockTickerHub"),
    ("shape", "MoveShapeHub"),
    ("status", "StatusHub"),
];

/// Which server a snapshot comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// Random, made at start: tells the servers on one backplane apart.
    pub id: String,
    /// Where it listens (`http://127.0.0.1:5000`).
    pub url: String,
    /// Whether it runs the stock market.
    pub market: bool,
}

impl ServerInfo {
    /// This server, listening at `url`.
    pub fn new(url: String, market: bool) -> Self {
        ServerInfo {
            id: format!("{:016x}", rand::random::<u64>()),
            url,
            market,
        }
    }
}

/// One hub on the backplane, as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackplaneHub {
    /// The hub's short name (`chat`).
    pub hub: &'static str,
    /// Its backplane name (`Demo.ChatHub`); `None` in memory.
    pub backplane_name: Option<String>,
    /// This server's name for the hub on the backplane (`{host}_{32 hex}`); `None` in memory.
    pub server_name: Option<String>,
    /// Whether its Redis subscription is up now (always false in memory).
    pub subscribed: bool,
}

/// The backplane, as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackplaneInfo {
    /// The Redis address (`HOST:PORT`); `None` when the hubs are in memory (one server).
    pub redis: Option<String>,
    /// The channel prefix.
    pub prefix: Option<String>,
    /// Every hub of the demo.
    pub hubs: Vec<BackplaneHub>,
}

/// Where [`BackplaneInfo`] comes from.
#[derive(Debug, Clone, Default)]
pub struct BackplaneSource {
    /// The Redis address given with `--redis`.
    pub redis: Option<String>,
    /// The prefix given with `--redis-prefix`.
    pub prefix: Option<String>,
    /// The backplane, when there is one.
    pub backplane: Option<RedisBackplane>,
}

impl BackplaneSource {
    /// The backplane now.
    pub fn info(&self) -> BackplaneInfo {
        let status = self
            .backplane
            .as_ref()
            .map(RedisBackplane::status)
            .unwrap_or_default();
        let hubs = DEMO_HUBS
            .iter()
            .map(|&(hub, classic)| {
                if self.backplane.is_none() {
                    return BackplaneHub {
                        hub,
                        backplane_name: None,
                        server_name: None,
                        subscribed: false,
                    };
                }
                let name = crate::backplane_name(classic);
                let found = status.iter().find(|s| s.hub_name == name);
                BackplaneHub {
                    hub,
                    server_name: found.map(|s| s.server_name.clone()),
                    subscribed: found.is_some_and(|s| s.subscribed),
                    backplane_name: Some(name),
                }
            })
            .collect();
        BackplaneInfo {
            redis: self.redis.clone(),
            prefix: self.prefix.clone(),
            hubs,
        }
    }
}

/// Everything the status page shows, pushed every second as `Stats`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The server these figures are of.
    pub server: ServerInfo,
    /// The backplane (or none).
    pub backplane: BackplaneInfo,
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// Open connections of all hubs (`signalr.server.active_connections`, plus classic
    /// connections).
    pub connections: usize,
    /// Open connections by hub, transport and protocol (the hub filter's counts).
    pub by_kind: Vec<ConnectionRow>,
    /// Open connections by transport (`signalr.server.active_connections` by
    /// `signalr.transport`, plus classic connections).
    pub by_transport: BTreeMap<&'static str, usize>,
    /// Open connections by hub protocol.
    pub by_protocol: BTreeMap<&'static str, usize>,
    /// Open connections by hub.
    pub by_hub: BTreeMap<&'static str, usize>,
    /// SignalR groups with members, over all hubs.
    pub groups: usize,
    /// The chat rooms.
    pub rooms: Vec<RoomRow>,
    /// Hub invocations received since start, by hub.
    pub messages_in_total: BTreeMap<&'static str, u64>,
    /// Client method calls sent since start, by hub.
    pub messages_out_total: BTreeMap<&'static str, u64>,
    /// The last [`HISTORY_SECONDS`] seconds, oldest first.
    pub history: Vec<Sample>,
}

#[derive(Default)]
struct Counters {
    connections: BTreeMap<ConnectionKind, usize>,
    messages_in: BTreeMap<&'static str, u64>,
    messages_out: BTreeMap<&'static str, u64>,
    history: VecDeque<Sample>,
    sampled_in: u64,
    sampled_out: u64,
}

/// The demo's counters, shared by every hub's [`StatsFilter`] and the sampling task.
pub struct Stats {
    started: Instant,
    counters: Mutex<Counters>,
    /// The server's active-connection gauges; without them (the unit tests) the filter's counts
    /// stand in.
    active: Option<ActiveConnections>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            counters: Mutex::default(),
            active: None,
        }
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

impl Stats {
    /// Counters whose connection figures come from the server's metrics.
    pub fn with_metrics(active: ActiveConnections) -> Self {
        Stats {
            active: Some(active),
            ..Stats::default()
        }
    }

    /// Open connections by transport: the metric's (ASP.NET Core clients) and the classic
    /// connections the filter counted; all from the filter without the metric.
    fn by_transport(&self, counters: &Counters) -> BTreeMap<&'static str, usize> {
        let mut by_transport = self
            .active
            .as_ref()
            .map(ActiveConnections::by_transport)
            .unwrap_or_default();
        for (kind, count) in &counters.connections {
            if self.active.is_none() || kind.protocol == CLASSIC {
                *by_transport.entry(kind.transport).or_default() += count;
            }
        }
        by_transport
    }

    /// Counts an opened connection.
    pub fn connected(&self, kind: ConnectionKind) {
        *lock(&self.counters).connections.entry(kind).or_default() += 1;
    }

    /// Counts a closed connection.
    pub fn disconnected(&self, kind: ConnectionKind) {
        let mut counters = lock(&self.counters);
        if let Some(count) = counters.connections.get_mut(&kind) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counters.connections.remove(&kind);
            }
        }
    }

    /// Open connections (of all hubs) that speak `protocol`.
    pub fn connections_with_protocol(&self, protocol: &str) -> usize {
        lock(&self.counters)
            .connections
            .iter()
            .filter(|(kind, _)| kind.protocol == protocol)
            .map(|(_, count)| count)
            .sum()
    }

    /// Counts one hub invocation received by `hub`.
    pub fn received(&self, hub: &'static str) {
        *lock(&self.counters).messages_in.entry(hub).or_default() += 1;
    }

    /// Counts `recipients` client method calls sent by `hub`.
    pub fn sent(&self, hub: &'static str, recipients: usize) {
        if recipients > 0 {
            *lock(&self.counters).messages_out.entry(hub).or_default() +=
                u64::try_from(recipients).unwrap_or(u64::MAX);
        }
    }

    /// Closes the current second: appends a [`Sample`] to the history.
    pub fn sample(&self) {
        let mut counters = lock(&self.counters);
        let total_in: u64 = counters.messages_in.values().sum();
        let total_out: u64 = counters.messages_out.values().sum();
        let sample = Sample {
            at: now_ms(),
            connections: self.by_transport(&counters).values().sum(),
            messages_in: total_in - counters.sampled_in,
            messages_out: total_out - counters.sampled_out,
        };
        counters.sampled_in = total_in;
        counters.sampled_out = total_out;
        counters.history.push_back(sample);
        while counters.history.len() > HISTORY_SECONDS {
            counters.history.pop_front();
        }
    }

    /// What the status page shows; `groups` and `rooms` come from the hubs.
    pub fn snapshot(
        &self,
        server: ServerInfo,
        backplane: BackplaneInfo,
        groups: usize,
        rooms: Vec<RoomRow>,
    ) -> Snapshot {
        let counters = lock(&self.counters);
        let by_transport = self.by_transport(&counters);
        let mut by_protocol = BTreeMap::new();
        let mut by_hub = BTreeMap::new();
        for (kind, count) in &counters.connections {
            *by_protocol.entry(kind.protocol).or_default() += count;
            *by_hub.entry(kind.hub).or_default() += count;
        }
        Snapshot {
            server,
            backplane,
            uptime_seconds: self.started.elapsed().as_secs(),
            connections: by_transport.values().sum(),
            by_kind: counters
                .connections
                .iter()
                .map(|(kind, count)| ConnectionRow {
                    hub: kind.hub,
                    transport: kind.transport,
                    protocol: kind.protocol,
                    count: *count,
                })
                .collect(),
            by_transport,
            by_protocol,
            by_hub,
            groups,
            rooms,
            messages_in_total: counters.messages_in.clone(),
            messages_out_total: counters.messages_out.clone(),
            history: counters.history.iter().copied().collect(),
        }
    }
}

/// The connection kind remembered in the connection's items, so that the disconnect is counted
/// under the same key as the connect.
#[derive(Debug, Clone, Copy)]
struct CountedAs(ConnectionKind);

/// A hub filter that counts connections (by transport and protocol) and invocations of one hub.
#[derive(Debug, Clone)]
pub struct StatsFilter {
    hub: &'static str,
    stats: Arc<Stats>,
}

impl StatsFilter {
    /// A filter for the hub called `hub` on the status page.
    pub fn new(hub: &'static str, stats: Arc<Stats>) -> Self {
        StatsFilter { hub, stats }
    }
}

impl HubFilter for StatsFilter {
    fn invoke(
        self: Arc<Self>,
        invocation: HubInvocation,
        next: Next,
    ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>> {
        self.stats.received(self.hub);
        next.run(invocation)
    }

    fn on_connected(
        self: Arc<Self>,
        caller: HubCallerContext,
        next: NextConnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        let kind = ConnectionKind {
            hub: self.hub,
            transport: caller.transport().map_or("unknown", |t| t.name()),
            protocol: crate::protocol_name(&caller),
        };
        self.stats.connected(kind);
        caller.insert_item(CountedAs(kind));
        next.run(caller)
    }

    fn on_disconnected(
        self: Arc<Self>,
        caller: HubCallerContext,
        error: Option<String>,
        next: NextDisconnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        if let Some(CountedAs(kind)) = caller.item::<CountedAs>() {
            self.stats.disconnected(kind);
        }
        next.run(caller, error)
    }
}

/// The `/hubs/status` hub, on `backplane` when given: `GetStats()` answers the current
/// [`Snapshot`]; every second the sampling task pushes `Stats(snapshot)` to every status client
/// (of every server, on a backplane).
pub fn status_hub(
    stats: Arc<Stats>,
    source: StatusSource,
    backplane: Option<&RedisBackplane>,
) -> Hub {
    crate::demo_hub("status", "StatusHub", &stats, backplane)
        .state(source)
        .method("GetStats", |hub: HubCallerContext| async move {
            hub.state::<StatusSource>().map(|source| source.snapshot())
        })
        .build()
}

/// What a snapshot is made of: the counters, the chat rooms, the hubs (for group counts), this
/// server and the backplane.
#[derive(Clone)]
pub struct StatusSource {
    /// The counters.
    pub stats: Arc<Stats>,
    /// The chat rooms.
    pub chat: Arc<ChatState>,
    /// Every hub of the demo, for their group counts.
    pub hubs: Vec<HubContext>,
    /// This server.
    pub server: ServerInfo,
    /// The backplane.
    pub backplane: BackplaneSource,
}

impl StatusSource {
    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let groups = self.hubs.iter().map(HubContext::group_count).sum();
        self.stats.snapshot(
            self.server.clone(),
            self.backplane.info(),
            groups,
            self.chat.rooms(),
        )
    }
}

/// Once a second: closes the second's counters and pushes `Stats(snapshot)` to the status page:
/// to this server's status clients, or on a backplane always, for the other servers' pages (their
/// status clients are not known here).
pub async fn run_sampler(source: StatusSource, status: HubContext) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let across_servers = source.backplane.backplane.is_some();
    loop {
        tick.tick().await;
        source.stats.sample();
        let recipients = status.connection_count();
        if recipients > 0 || across_servers {
            let snapshot = source.snapshot();
            match status.clients().all().send("Stats", (snapshot,)).await {
                Ok(()) => source.stats.sent("status", recipients),
                Err(err) => tracing::warn!(%err, "status snapshot not sent"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS_JSON: ConnectionKind = ConnectionKind {
        hub: "chat",
        transport: "WebSockets",
        protocol: "json",
    };
    const LP_MSGPACK: ConnectionKind = ConnectionKind {
        hub: "stocks",
        transport: "LongPolling",
        protocol: "messagepack",
    };

    fn server() -> ServerInfo {
        ServerInfo::new("http://127.0.0.1:5000".to_owned(), true)
    }

    #[test]
    fn in_memory_hubs_have_no_backplane_names() {
        let info = BackplaneSource::default().info();
        assert_eq!(info.redis, None);
        assert_eq!(
            info.hubs.iter().map(|h| h.hub).collect::<Vec<_>>(),
            ["chat", "stocks", "shape", "status"]
        );
        assert!(
            info.hubs
                .iter()
                .all(|h| h.backplane_name.is_none() && h.server_name.is_none() && !h.subscribed)
        );
        assert_ne!(server().id, server().id, "every start has its own id");
    }

    #[test]
    fn counts_connections_by_transport_protocol_and_hub() {
        let stats = Stats::default();
        stats.connected(WS_JSON);
        stats.connected(WS_JSON);
        stats.connected(LP_MSGPACK);
        stats.disconnected(WS_JSON);
        let snapshot = stats.snapshot(server(), BackplaneSource::default().info(), 0, Vec::new());
        assert_eq!(snapshot.connections, 2);
        assert_eq!(snapshot.by_transport.get("WebSockets"), Some(&1));
        assert_eq!(snapshot.by_transport.get("LongPolling"), Some(&1));
        assert_eq!(snapshot.by_protocol.get("messagepack"), Some(&1));
        assert_eq!(snapshot.by_hub.get("stocks"), Some(&1));
        assert_eq!(stats.connections_with_protocol("messagepack"), 1);
        assert_eq!(stats.connections_with_protocol("classic"), 0);
        stats.disconnected(WS_JSON);
        stats.disconnected(WS_JSON);
        assert_eq!(
            stats
                .snapshot(server(), BackplaneSource::default().info(), 0, Vec::new())
                .by_kind
                .len(),
            1
        );
    }

    #[test]
    fn connection_totals_come_from_the_metric_plus_classic_connections() {
        let active = ActiveConnections::default();
        let recorder = active.recorder();
        let stats = Stats::with_metrics(active);
        const LP_CLASSIC: ConnectionKind = ConnectionKind {
            hub: "chat",
            transport: "LongPolling",
            protocol: "classic",
        };
        // The filter saw one Core and one classic connection; the metric has two Core
        // WebSockets (one not through its handshake yet) and one long polling.
        stats.connected(WS_JSON);
        stats.connected(LP_CLASSIC);
        metrics::with_local_recorder(&recorder, || {
            let gauge = |transport: &'static str| {
                metrics::gauge!(signalr_server::metrics::ACTIVE_CONNECTIONS,
                    signalr_server::metrics::TRANSPORT => transport)
            };
            gauge("web_sockets").increment(2.0);
            gauge("long_polling").increment(1.0);
        });
        let snapshot = stats.snapshot(server(), BackplaneSource::default().info(), 0, Vec::new());
        assert_eq!(snapshot.connections, 4);
        assert_eq!(snapshot.by_transport.get("WebSockets"), Some(&2));
        assert_eq!(snapshot.by_transport.get("LongPolling"), Some(&2));
        assert_eq!(snapshot.by_protocol.get("json"), Some(&1));
        assert_eq!(snapshot.by_protocol.get("classic"), Some(&1));
        assert_eq!(snapshot.by_kind.len(), 2);
        stats.sample();
        assert_eq!(
            stats
                .snapshot(server(), BackplaneSource::default().info(), 0, Vec::new())
                .history[0]
                .connections,
            4
        );
    }

    #[test]
    fn samples_are_per_second_deltas() {
        let stats = Stats::default();
        stats.received("chat");
        stats.received("chat");
        stats.sent("chat", 10);
        stats.sample();
        stats.sent("chat", 3);
        stats.sample();
        let history = stats
            .snapshot(server(), BackplaneSource::default().info(), 0, Vec::new())
            .history;
        assert_eq!(history.len(), 2);
        assert_eq!((history[0].messages_in, history[0].messages_out), (2, 10));
        assert_eq!((history[1].messages_in, history[1].messages_out), (0, 3));
        for _ in 0..HISTORY_SECONDS + 5 {
            stats.sample();
        }
        assert_eq!(
            stats
                .snapshot(server(), BackplaneSource::default().info(), 0, Vec::new())
                .history
                .len(),
            HISTORY_SECONDS
        );
    }
}
