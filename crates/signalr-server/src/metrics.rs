//! Connection metrics with ASP.NET Core's names, recorded through the [`metrics`] crate facade
//! (cargo feature `metrics`, on by default).
//!
//! # What is recorded
//! ASP.NET Core 8 and later publish two instruments for its connection layer
//! (`Microsoft.AspNetCore.Http.Connections`, the meter [`METER_NAME`]); this crate records the
//! same two, with the same names, kinds, units and attribute values, so dashboards and alerts
//! written for ASP.NET's apply unchanged:
//!
//! | name | ASP.NET instrument (unit) | `metrics` call | attributes | recorded |
//! |---|---|---|---|---|
//! | [`ACTIVE_CONNECTIONS`] `signalr.server.active_connections` | up-down counter (`{connection}`) | gauge `increment(1)` / `decrement(1)` | [`TRANSPORT`] | +1 when a connection's transport starts, −1 with the duration |
//! | [`CONNECTION_DURATION`] `signalr.server.connection.duration` | histogram (`s`) | histogram `record(seconds)` | [`CONNECTION_STATUS`], [`TRANSPORT`] | once, when the connection is removed (long polling: at the poll that delivers its end, where ASP.NET removes it): seconds since its transport started |
//!
//! Descriptions (as ASP.NET's): "Number of connections that are currently active on the server."
//! and "The duration of connections on the server.". They are given to the recorder with the
//! `describe_*` macros ([`describe`]), with [`Unit::Count`](metrics::Unit::Count) and
//! [`Unit::Seconds`](metrics::Unit::Seconds): the facade has no unit for UCUM's `{connection}`
//! annotation, which is a count.
//!
//! Sources: ASP.NET Core's `src/SignalR/common/Http.Connections/src/Internal/HttpConnectionsMetrics.cs`
//! (dotnet/aspnetcore), where `HttpConnectionManager` and `HttpConnectionContext.TrySetTransport`
//! record them, and the OpenTelemetry semantic conventions "Semantic conventions for SignalR
//! server metrics" (`docs/dotnet/dotnet-signalr-metrics.md`), which also advise the duration's
//! bucket boundaries ([`DURATION_BUCKETS`]).
//!
//! ## Attribute values
//! - [`TRANSPORT`] `signalr.transport`: `web_sockets`, `server_sent_events` or `long_polling`.
//! - [`CONNECTION_STATUS`] `signalr.connection.status`, with ASP.NET's meaning of each value:
//!   - `normal_closure`: the connection ended by itself: the client closed it (a WebSocket close,
//!     the SSE request gone, a long-polling DELETE), the hub or raw handler ended it (a Close
//!     message, a failed handshake, a slow consumer), or the hub's client timeout
//!     ([`HubOptions::client_timeout_interval`](crate::HubOptions)) ended the hub connection:
//!     in ASP.NET that timeout aborts the hub connection, whose end the HTTP layer records as a
//!     normal closure, and so does this crate.
//!   - `timeout`: the connection had no transport request for longer than
//!     [`ConnectionOptions::disconnect_timeout`](crate::ConnectionOptions) (a long-polling client
//!     that stopped polling, a stateful-reconnect WebSocket that did not come back) and was
//!     removed by the 1 s sweep (ASP.NET's heartbeat scan).
//!   - `app_shutdown`: the connection ended after [`HubContext::close_all`](crate::HubContext::close_all)
//!     (this crate's graceful-shutdown step, ASP.NET's `ApplicationStopping`) on one of its hub's
//!     endpoints, or was still open when its endpoint (the `Router` of
//!     [`Hub::router`](crate::Hub::router) or [`connection_router`](crate::raw::connection_router)) was
//!     dropped.
//!
//! ## Which connections count
//! Every connection of the ASP.NET Core protocol, of hubs and of raw
//! [`connection_router`](crate::raw::connection_router) endpoints, as ASP.NET counts every connection of
//! its connection layer: WebSockets (negotiated or with skipped negotiation), Server-Sent Events
//! and long polling. A connection counts from its first transport request (negotiate alone does
//! not count; a negotiated connection that never connects is never recorded) until it is
//! removed; a long-polling connection counts between polls too, and a stateful-reconnect
//! connection while its client reconnects.
//!
//! Classic SignalR 2.x connections ([`classic_router`](crate::classic_router)) are not counted:
//! ASP.NET Core's instruments describe ASP.NET Core's connection layer (classic ASP.NET SignalR
//! has performance counters of its own, and transports such as `foreverFrame` the attribute has
//! no value for). Their hub-level life is visible to hub filters
//! ([`HubFilter::on_connected`](crate::filter::HubFilter::on_connected)).
//!
//! ## No protocol attribute
//! ASP.NET's connection instruments have no hub-protocol attribute, and this crate adds none: a
//! connection counts from its transport's start, before the handshake names its protocol (a
//! connection may never send one), and an up-down counter's attributes must be the same at +1
//! and −1. Count by protocol in a hub filter (`HubCallerContext::protocol`), as the demo server
//! does.
//!
//! ## Cost
//! Nothing is recorded per message: two calls when a connection starts and ends. Without an
//! installed recorder a call is the facade's no-op. A connection stores the start in 8 bytes.
//! Without the `metrics` feature nothing is recorded and the `metrics` crate is not built; the
//! names below stay.
//!
//! # Installing a recorder
//! The application installs one recorder for the process before building its routers, e.g.
//! Prometheus text at `/metrics` with the `metrics-exporter-prometheus` crate (the demo server
//! does this; dots in names become `_`, and the gauge is exported as
//! `signalr_server_active_connections`):
//!
//! ```ignore
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let prometheus = PrometheusBuilder::new()
//!     .set_buckets_for_metric(
//!         Matcher::Full(signalr_server::metrics::CONNECTION_DURATION.into()),
//!         &signalr_server::metrics::DURATION_BUCKETS,
//!     )?
//!     .install_recorder()?;
//! signalr_server::metrics::describe();
//! let app = axum::Router::new()
//!     .nest("/chat", chat.router())
//!     .route("/metrics", axum::routing::get(move || async move { prometheus.render() }));
//! ```
//!
//! Any other recorder of the facade works the same (an OpenTelemetry bridge, `metrics-util`'s
//! registry or its `DebuggingRecorder` in tests).

/// The meter ASP.NET Core publishes these instruments on (for an exporter that groups metrics
/// by meter or scope).
pub const METER_NAME: &str = "Microsoft.AspNetCore.Http.Connections";

/// `signalr.server.active_connections`: connections active now (ASP.NET: an up-down counter,
/// unit `{connection}`; here a gauge moved by ±1), with [`TRANSPORT`].
pub const ACTIVE_CONNECTIONS: &str = "signalr.server.active_connections";

/// `signalr.server.connection.duration`: how long each connection lasted, in seconds (a
/// histogram, unit `s`), with [`CONNECTION_STATUS`] and [`TRANSPORT`].
pub const CONNECTION_DURATION: &str = "signalr.server.connection.duration";

/// `signalr.transport`: `web_sockets`, `server_sent_events` or `long_polling`.
pub const TRANSPORT: &str = "signalr.transport";

/// `signalr.connection.status`: `normal_closure`, `timeout` or `app_shutdown`.
pub const CONNECTION_STATUS: &str = "signalr.connection.status";

/// The bucket boundaries (seconds) ASP.NET advises for [`CONNECTION_DURATION`]
/// (`MetricsConstants.LongSecondsBucketBoundaries`); the facade cannot carry them, give them to
/// the recorder.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The description of [`ACTIVE_CONNECTIONS`], as ASP.NET's.
pub const ACTIVE_CONNECTIONS_DESCRIPTION: &str =
    "Number of connections that are currently active on the server.";

/// The description of [`CONNECTION_DURATION`], as ASP.NET's.
pub const CONNECTION_DURATION_DESCRIPTION: &str = "The duration of connections on the server.";

/// Gives the installed recorder the unit and description of both metrics. Every endpoint does
/// it when it is made ([`Hub::router`](crate::Hub::router), [`connection_router`](crate::raw::connection_router));
/// call it after installing a recorder later than that. A no-op without the `metrics` feature.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        ::metrics::describe_gauge!(
            ACTIVE_CONNECTIONS,
            ::metrics::Unit::Count,
            ACTIVE_CONNECTIONS_DESCRIPTION
        );
        ::metrics::describe_histogram!(
            CONNECTION_DURATION,
            ::metrics::Unit::Seconds,
            CONNECTION_DURATION_DESCRIPTION
        );
    }
}

/// How a connection ended, as [`CONNECTION_STATUS`] says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopStatus {
    NormalClosure,
    Timeout,
    AppShutdown,
}

impl StopStatus {
    /// The attribute value.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn value(self) -> &'static str {
        match self {
            StopStatus::NormalClosure => "normal_closure",
            StopStatus::Timeout => "timeout",
            StopStatus::AppShutdown => "app_shutdown",
        }
    }
}

/// The [`TRANSPORT`] value of `transport` (`web_sockets`, `server_sent_events`,
/// `long_polling`).
pub fn transport_value(transport: crate::TransportType) -> &'static str {
    use crate::TransportType;
    match transport {
        TransportType::WebSockets => "web_sockets",
        TransportType::ServerSentEvents => "server_sent_events",
        TransportType::LongPolling => "long_polling",
    }
}

/// A connection's transport started.
pub(crate) fn connection_started(transport: crate::TransportType) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(ACTIVE_CONNECTIONS, TRANSPORT => transport_value(transport)).increment(1.0);
    #[cfg(not(feature = "metrics"))]
    let _ = transport;
}

/// A connection whose transport started was removed, `duration` after that start.
pub(crate) fn connection_ended(
    transport: crate::TransportType,
    status: StopStatus,
    duration: std::time::Duration,
) {
    #[cfg(feature = "metrics")]
    {
        let transport = transport_value(transport);
        ::metrics::gauge!(ACTIVE_CONNECTIONS, TRANSPORT => transport).decrement(1.0);
        ::metrics::histogram!(
            CONNECTION_DURATION,
            CONNECTION_STATUS => status.value(),
            TRANSPORT => transport
        )
        .record(duration.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (transport, status, duration);
}

/// Nanoseconds since the first call in this process (never 0 after the first call returns:
/// at least 1): a connection's start in 8 bytes.
pub(crate) fn now_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The time from `start` (a [`now_nanos`] value) to now.
pub(crate) fn since(start: u64) -> std::time::Duration {
    std::time::Duration::from_nanos(now_nanos().saturating_sub(start))
}
