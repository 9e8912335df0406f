//! The demo's metrics recorder: every metric goes to a Prometheus recorder, rendered at
//! `/metrics`, and the gauge `signalr.server.active_connections` (one per `signalr.transport`)
//! is also kept where the status page reads it ([`ActiveConnections`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use metrics_util::registry::{AtomicStorage, Registry};
use signalr_server::TransportType;
use signalr_server::metrics::{
    ACTIVE_CONNECTIONS, CONNECTION_DURATION, DURATION_BUCKETS, TRANSPORT, transport_value,
};

/// The gauges of `signalr.server.active_connections`, as the server moves them.
#[derive(Clone)]
pub struct ActiveConnections(Arc<Registry<Key, AtomicStorage>>);

impl Default for ActiveConnections {
    fn default() -> Self {
        ActiveConnections(Arc::new(Registry::atomic()))
    }
}

impl std::fmt::Debug for ActiveConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ActiveConnections")
            .field(&self.by_transport())
            .finish()
    }
}

impl ActiveConnections {
    /// Connections active now by transport, under the transports' ASP.NET names
    /// (`WebSockets`, ...); transports without connections are left out.
    pub fn by_transport(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        self.0.visit_gauges(|key, gauge| {
            if key.name() != ACTIVE_CONNECTIONS {
                return;
            }
            let Some(value) = key.labels().find(|l| l.key() == TRANSPORT) else {
                return;
            };
            let Some(transport) = [
                TransportType::WebSockets,
                TransportType::ServerSentEvents,
                TransportType::LongPolling,
            ]
            .into_iter()
            .find(|&t| transport_value(t) == value.value()) else {
                return;
            };
            let count = f64::from_bits(gauge.load(Ordering::Relaxed)).round();
            if count >= 1.0 {
                // A count of connections: whole and far below usize::MAX.
                *out.entry(transport.name()).or_default() += count as usize;
            }
        });
        out
    }

    /// A recorder that keeps only these gauges (the Rust tests' recorder).
    #[cfg(test)]
    pub fn recorder(&self) -> impl Recorder + use<> {
        Fanout {
            prometheus: PrometheusBuilder::new().build_recorder(),
            active: self.clone(),
        }
    }
}

/// Installs the demo's recorder for the process: Prometheus (with ASP.NET's bucket boundaries
/// for `signalr.server.connection.duration`) plus [`ActiveConnections`]. Call before the hubs'
/// routers are made.
///
/// # Errors
/// When a recorder is installed already.
pub fn install() -> std::io::Result<(PrometheusHandle, ActiveConnections)> {
    let prometheus = prometheus_recorder().map_err(std::io::Error::other)?;
    let handle = prometheus.handle();
    let active = ActiveConnections::default();
    metrics::set_global_recorder(Fanout {
        prometheus,
        active: active.clone(),
    })
    .map_err(std::io::Error::other)?;
    Ok((handle, active))
}

/// The Prometheus recorder, with ASP.NET's bucket boundaries for
/// `signalr.server.connection.duration`.
fn prometheus_recorder() -> Result<PrometheusRecorder, BuildError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(CONNECTION_DURATION.to_owned()),
            &DURATION_BUCKETS,
        )?
        .build_recorder())
}

/// Sends everything to Prometheus, and the active-connection gauges to [`ActiveConnections`]
/// too.
struct Fanout {
    prometheus: PrometheusRecorder,
    active: ActiveConnections,
}

/// One gauge moved in both places.
struct BothGauges(Gauge, Arc<AtomicU64>);

impl GaugeFn for BothGauges {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        self.1.decrement(value);
    }

    fn set(&self, value: f64) {
        self.0.set(value);
        self.1.set(value);
    }
}

impl Recorder for Fanout {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.prometheus.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let gauge = self.prometheus.register_gauge(key, metadata);
        if key.name() != ACTIVE_CONNECTIONS {
            return gauge;
        }
        let local = self.active.0.get_or_create_gauge(key, Arc::clone);
        Gauge::from_arc(Arc::new(BothGauges(gauge, local)))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.prometheus.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_renders_the_metrics_with_underscores() {
        let prometheus = prometheus_recorder().expect("buckets");
        let handle = prometheus.handle();
        let recorder = Fanout {
            prometheus,
            active: ActiveConnections::default(),
        };
        metrics::with_local_recorder(&recorder, || {
            signalr_server::metrics::describe();
            metrics::gauge!(ACTIVE_CONNECTIONS, TRANSPORT => "web_sockets").increment(2.0);
            metrics::histogram!(CONNECTION_DURATION, "signalr.connection.status" => "timeout", TRANSPORT => "long_polling").record(7.0);
        });
        let text = handle.render();
        assert!(
            text.contains(
                "signalr_server_active_connections{signalr_transport=\"web_sockets\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("signalr_server_connection_duration_bucket{signalr_connection_status=\"timeout\",signalr_transport=\"long_polling\",le=\"10\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn keeps_the_active_connection_gauges_by_transport() {
        let active = ActiveConnections::default();
        let recorder = active.recorder();
        metrics::with_local_recorder(&recorder, || {
            let ws = || metrics::gauge!(ACTIVE_CONNECTIONS, TRANSPORT => "web_sockets");
            ws().increment(1.0);
            ws().increment(1.0);
            ws().decrement(1.0);
            metrics::gauge!(ACTIVE_CONNECTIONS, TRANSPORT => "long_polling").increment(1.0);
            metrics::gauge!(ACTIVE_CONNECTIONS, TRANSPORT => "server_sent_events").increment(1.0);
            metrics::gauge!(ACTIVE_CONNECTIONS, TRANSPORT => "server_sent_events").decrement(1.0);
            metrics::gauge!("other", TRANSPORT => "web_sockets").increment(5.0);
        });
        assert_eq!(
            active.by_transport(),
            BTreeMap::from([("LongPolling", 1), ("WebSockets", 1)])
        );
    }
}
