//! The connection metrics (`signalr_server::metrics`): `signalr.server.active_connections` goes
//! +1 and −1 with the transport's `signalr.transport` value for WebSockets (negotiated and with
//! skipped negotiation), Server-Sent Events and long polling, and
//! `signalr.server.connection.duration` records one value per connection with ASP.NET's
//! `signalr.connection.status`: `normal_closure` for a client's close, a DELETE and the hub's
//! client timeout, `timeout` for the disconnect timeout, `app_shutdown` after
//! `HubContext::close_all`.
//!
//! Each test runs on a current-thread runtime (every server task on the test's thread) with its
//! own `DebuggingRecorder` set as the thread's default recorder, so tests do not see each
//! other's connections.

#![cfg(feature = "metrics")]

mod common;

use std::time::Duration;

use common::*;
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use signalr_server::metrics::{
    ACTIVE_CONNECTIONS, CONNECTION_DURATION, CONNECTION_STATUS, TRANSPORT,
};
use signalr_server::{ConnectionOptions, HubOptions};

/// One recorded duration: status, transport, seconds.
type Recorded = (String, String, f64);

/// Reads the test's recorder.
struct Metrics {
    snapshotter: Snapshotter,
    /// Every duration recorded so far (a snapshot drains histograms).
    durations: Vec<Recorded>,
    /// The gauge values, by transport: the sum of every snapshot's (a snapshot takes what
    /// the gauge moved since the last one and sets it back to 0).
    gauges: Vec<(String, f64)>,
    /// Units and descriptions seen, by metric name.
    described: Vec<(String, Option<Unit>, Option<String>)>,
}

fn label(key: &CompositeKey, name: &str) -> String {
    key.key()
        .labels()
        .find(|l| l.key() == name)
        .map(|l| l.value().to_owned())
        .unwrap_or_default()
}

impl Metrics {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Metrics {
            snapshotter: recorder.snapshotter(),
            durations: Vec::new(),
            gauges: Vec::new(),
            described: Vec::new(),
        }
    }

    fn refresh(&mut self) {
        for (key, unit, description, value) in self.snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            if !self.described.iter().any(|(n, _, _)| *n == name) {
                self.described
                    .push((name.clone(), unit, description.map(|d| d.to_string())));
            }
            match (key.kind(), value) {
                (MetricKind::Gauge, DebugValue::Gauge(v)) if name == ACTIVE_CONNECTIONS => {
                    assert_eq!(key.key().labels().count(), 1, "only {TRANSPORT}: {key:?}");
                    let transport = label(&key, TRANSPORT);
                    match self.gauges.iter_mut().find(|(t, _)| *t == transport) {
                        Some((_, sum)) => *sum += v.into_inner(),
                        None => self.gauges.push((transport, v.into_inner())),
                    }
                }
                (MetricKind::Histogram, DebugValue::Histogram(values))
                    if name == CONNECTION_DURATION =>
                {
                    assert_eq!(key.key().labels().count(), 2, "{key:?}");
                    for v in values {
                        self.durations.push((
                            label(&key, CONNECTION_STATUS),
                            label(&key, TRANSPORT),
                            v.into_inner(),
                        ));
                    }
                }
                (kind, value) => panic!("unexpected metric {name} {kind:?} {value:?}"),
            }
        }
    }

    /// `signalr.server.active_connections{signalr.transport=transport}` now (0 when never
    /// recorded).
    fn active(&mut self, transport: &str) -> f64 {
        self.refresh();
        self.gauges
            .iter()
            .find(|(t, _)| t == transport)
            .map_or(0.0, |(_, v)| *v)
    }

    /// Waits until the gauge of `transport` is `value`.
    async fn wait_active(&mut self, transport: &str, value: f64) {
        let limit = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.active(transport);
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < limit,
                "{ACTIVE_CONNECTIONS}{{{TRANSPORT}={transport}}} stayed {now}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The durations recorded so far.
    fn durations(&mut self) -> Vec<Recorded> {
        self.refresh();
        self.durations.clone()
    }
}

/// One duration recorded, with `status` and `transport`, between `min` and `max` seconds.
fn assert_one_duration(durations: &[Recorded], status: &str, transport: &str, min: f64, max: f64) {
    assert_eq!(durations.len(), 1, "{durations:?}");
    let (s, t, seconds) = &durations[0];
    assert_eq!(
        (s.as_str(), t.as_str()),
        (status, transport),
        "{durations:?}"
    );
    assert!(
        (min..=max).contains(seconds),
        "duration {seconds} s not in {min}..={max}"
    );
}

#[tokio::test]
async fn websocket_connections_count_and_a_client_close_is_a_normal_closure() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let server = start().await;

    // Negotiate alone does not count.
    let (_, token) = negotiate(&server).await;
    assert_eq!(metrics.active("web_sockets"), 0.0);
    let mut first = ws_connect(&server, &token).await;
    first.handshake_json().await;
    assert_eq!(metrics.active("web_sockets"), 1.0);
    // Skipped negotiation counts too.
    let mut second = ws_connect_query(&server, "").await.expect("upgrade");
    second.handshake_json().await;
    assert_eq!(metrics.active("web_sockets"), 2.0);
    assert!(metrics.durations().is_empty());

    tokio::time::sleep(Duration::from_millis(100)).await;
    first.close().await;
    metrics.wait_active("web_sockets", 1.0).await;
    assert_one_duration(
        &metrics.durations(),
        "normal_closure",
        "web_sockets",
        0.1,
        5.0,
    );
    second.close().await;
    metrics.wait_active("web_sockets", 0.0).await;
    assert_eq!(metrics.durations().len(), 2);
    assert_eq!(metrics.active("server_sent_events"), 0.0);
    assert_eq!(metrics.active("long_polling"), 0.0);

    // ASP.NET's units and descriptions.
    let described = |name: &str| {
        metrics
            .described
            .iter()
            .find(|(n, _, _)| n == name)
            .cloned()
            .expect("described")
    };
    assert_eq!(
        described(ACTIVE_CONNECTIONS),
        (
            ACTIVE_CONNECTIONS.to_owned(),
            Some(Unit::Count),
            Some("Number of connections that are currently active on the server.".to_owned())
        )
    );
    assert_eq!(
        described(CONNECTION_DURATION),
        (
            CONNECTION_DURATION.to_owned(),
            Some(Unit::Seconds),
            Some("The duration of connections on the server.".to_owned())
        )
    );
}

#[tokio::test]
async fn server_sent_events_count_until_the_client_goes() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let server = start().await;

    let (_, token) = negotiate(&server).await;
    let mut events = sse(&server, &token).await;
    assert_eq!(events.status, 200);
    assert_eq!(events.take(3).await, ":\r\n");
    assert_eq!(metrics.active("server_sent_events"), 1.0);
    assert_eq!(metrics.active("web_sockets"), 0.0);
    drop(events);
    metrics.wait_active("server_sent_events", 0.0).await;
    assert_one_duration(
        &metrics.durations(),
        "normal_closure",
        "server_sent_events",
        0.0,
        5.0,
    );
}

#[tokio::test]
async fn long_polling_counts_between_polls_and_a_delete_is_a_normal_closure() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let server = start().await;

    let (_, token) = negotiate(&server).await;
    assert_eq!(poll(&server, &token).await.status, 200);
    // No poll is waiting now: the connection still counts.
    assert_eq!(metrics.active("long_polling"), 1.0);
    assert_eq!(delete(&server, &token).await.status, 202);
    metrics.wait_active("long_polling", 0.0).await;
    assert_one_duration(
        &metrics.durations(),
        "normal_closure",
        "long_polling",
        0.0,
        5.0,
    );
}

#[tokio::test]
async fn a_long_polling_client_that_stops_polling_ends_as_a_timeout() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let server = start_with(
        HubOptions::default(),
        ConnectionOptions {
            disconnect_timeout: Duration::from_secs(1),
            ..ConnectionOptions::default()
        },
    )
    .await;

    let (_, token) = negotiate(&server).await;
    assert_eq!(poll(&server, &token).await.status, 200);
    assert_eq!(metrics.active("long_polling"), 1.0);
    // No more polls: removed by the sweep 1-3 s later.
    metrics.wait_active("long_polling", 0.0).await;
    assert_one_duration(&metrics.durations(), "timeout", "long_polling", 1.0, 4.0);
}

/// As in ASP.NET, the hub's client timeout ends the hub connection, whose end the connection
/// layer records as a normal closure (only the disconnect timeout is `timeout`).
#[tokio::test]
async fn the_hub_client_timeout_is_a_normal_closure() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let server = start_with(
        HubOptions {
            client_timeout_interval: Duration::from_secs(1),
            ..HubOptions::default()
        },
        ConnectionOptions::default(),
    )
    .await;

    let mut ws = ws_json(&server).await;
    // A Ping arms the client timeout; then the client sends nothing more (it reads, and
    // answers the server's WebSocket close).
    ws.send_text("{\"type\":6}\u{1e}").await;
    assert_eq!(metrics.active("web_sockets"), 1.0);
    let close = ws.next_json_skip_pings().await;
    assert_eq!(close["type"], 7, "{close}");
    ws.expect_close().await;
    drop(ws);
    metrics.wait_active("web_sockets", 0.0).await;
    assert_one_duration(
        &metrics.durations(),
        "normal_closure",
        "web_sockets",
        0.9,
        5.0,
    );
}

#[tokio::test]
async fn connections_closed_by_close_all_end_as_app_shutdown() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut metrics = Metrics::new(&recorder);
    let server = start().await;

    let mut ws = ws_json(&server).await;
    let token = long_polling_json(&server).await;
    assert_eq!(metrics.active("web_sockets"), 1.0);
    assert_eq!(metrics.active("long_polling"), 1.0);

    server.hub.context().close_all(None, false);
    assert_eq!(
        ws.next_json_skip_pings().await,
        serde_json::json!({"type": 7})
    );
    ws.expect_close().await;
    drop(ws);
    // The long-polling client takes its Close with a poll; the next one is told the end (204).
    assert_eq!(poll(&server, &token).await.body, "{\"type\":7}\u{1e}");
    metrics.wait_active("web_sockets", 0.0).await;
    assert_eq!(poll(&server, &token).await.status, 204);
    metrics.wait_active("long_polling", 0.0).await;
    let mut durations = metrics.durations();
    durations.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(durations.len(), 2, "{durations:?}");
    assert_eq!(
        (durations[0].0.as_str(), durations[0].1.as_str()),
        ("app_shutdown", "long_polling")
    );
    assert_eq!(
        (durations[1].0.as_str(), durations[1].1.as_str()),
        ("app_shutdown", "web_sockets")
    );
}
