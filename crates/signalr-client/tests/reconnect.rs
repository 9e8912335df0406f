//! Automatic reconnect with connections that really break: the in-process server stops
//! listening and every TCP connection it accepted is shut down, then (maybe) a new server comes
//! up on the same port. The exact sequence of states and events is asserted.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use common::{
    COMBINATIONS, Event, TestServer, assert_quiet, hub_builder, next, probe, record_events, within,
};
use signalr_hub_client::{
    Error, HubConnectionBuilder, HubConnectionState, HubProtocol, RetryContext, TransportType,
};

/// Brings a fresh hub up on `server`'s port *before* killing the old connections, so that the
/// first reconnect attempt (at 0 s with the default policy) finds it.
async fn replace(mut server: TestServer) -> TestServer {
    let addr = server.addr;
    server.stop_listening().await;
    let (fresh_probe, _fresh_reports) = common::probe();
    let fresh = TestServer::serve(hub_builder(fresh_probe).build(), Router::new(), addr).await;
    server.kill_connections();
    fresh
}

#[tokio::test]
async fn default_policy_reconnects_at_once_on_every_transport_and_protocol() {
    for (transport, protocol) in COMBINATIONS {
        let (probe, mut reports) = probe();
        let server = TestServer::start(probe).await;
        let connection = HubConnectionBuilder::new()
            .with_url(server.url())
            .with_transport(transport)
            .with_protocol(protocol)
            .with_automatic_reconnect()
            .build()
            .expect("build");
        let mut events = record_events(&connection);
        within("start", connection.start()).await.expect("start");
        let first_id = connection.connection_id().expect("id");

        // A call in flight when the connection dies fails at once.
        let caller = connection.clone();
        let pending = tokio::spawn(async move { caller.invoke::<()>("Hang", ()).await });
        assert_eq!(next("hang", &mut reports).await, "hang");

        let fresh = replace(server).await;
        let lost_at = Instant::now();
        let err = within("pending invoke", pending)
            .await
            .expect("task")
            .expect_err("the connection dropped");
        assert!(err.is_closed(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Invocation canceled due to the underlying connection being closed."
        );
        assert!(lost_at.elapsed() < Duration::from_secs(1), "{transport:?}");

        match next("reconnecting", &mut events).await {
            Event::Reconnecting(err, HubConnectionState::Reconnecting) => {
                assert!(err.is_transport(), "{transport:?}: {err:?}");
            }
            other => panic!("{transport:?}: unexpected {other:?}"),
        }
        let second_id = match next("reconnected", &mut events).await {
            Event::Reconnected(Some(id), HubConnectionState::Connected) => id,
            other => panic!("{transport:?}: unexpected {other:?}"),
        };
        // The first attempt (after 0 s) succeeded.
        assert!(lost_at.elapsed() < Duration::from_secs(1), "{transport:?}");
        assert_ne!(second_id, first_id);
        assert_eq!(
            connection.connection_id().as_deref(),
            Some(second_id.as_str())
        );
        assert_eq!(connection.state(), HubConnectionState::Connected);

        // The new server serves the reconnected connection.
        let on_server: String = connection.invoke("ConnectionId", ()).await.expect("id");
        assert_eq!(on_server, second_id);
        assert_eq!(fresh.hub.context().connection_count(), 1);

        within("stop", connection.stop()).await;
        match next("closed", &mut events).await {
            Event::Closed(None, HubConnectionState::Disconnected) => {}
            other => panic!("{transport:?}: unexpected {other:?}"),
        }
        assert_quiet(&mut events, Duration::from_millis(50)).await;
        fresh.kill().await;
    }
}

#[tokio::test]
async fn long_polling_rides_over_cut_sockets() {
    // The server stays up and keeps the connection; only the TCP connections die (a network
    // drop). The next poll goes out on a new socket: no disconnect, no reconnect, same id, as
    // the official clients with ASP.NET Core.
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        let (probe, _reports) = probe();
        let server = TestServer::start(probe).await;
        let connection = HubConnectionBuilder::new()
            .with_url(server.url())
            .with_transport(TransportType::LongPolling)
            .with_protocol(protocol)
            .with_automatic_reconnect()
            .build()
            .expect("build");
        let mut events = record_events(&connection);
        within("start", connection.start()).await.expect("start");
        let id = connection.connection_id().expect("id");
        for round in 0..3 {
            server.kill_connections();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sum: i64 = within("Add", connection.invoke("Add", (round, 1)))
                .await
                .expect("Add after the sockets were cut");
            assert_eq!(sum, round + 1);
            let on_server: String = connection.invoke("ConnectionId", ()).await.expect("id");
            assert_eq!(on_server, id, "{protocol:?}");
        }
        assert_eq!(connection.connection_id().as_deref(), Some(id.as_str()));
        assert_eq!(connection.state(), HubConnectionState::Connected);
        assert_quiet(&mut events, Duration::from_millis(100)).await;
        within("stop", connection.stop()).await;
        assert!(matches!(
            next("closed", &mut events).await,
            Event::Closed(None, HubConnectionState::Disconnected)
        ));
        server.kill().await;
    }
}

#[tokio::test]
async fn default_policy_waits_two_seconds_before_the_second_attempt() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    let addr = server.addr;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_automatic_reconnect()
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");

    // The server is gone for a second: the attempt at 0 s fails, the one at 2 s succeeds.
    server.kill().await;
    let lost_at = Instant::now();
    assert!(matches!(
        next("reconnecting", &mut events).await,
        Event::Reconnecting(_, HubConnectionState::Reconnecting)
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(connection.state(), HubConnectionState::Reconnecting);
    let err = connection
        .invoke::<i64>("Add", (1, 2))
        .await
        .expect_err("no calls while reconnecting");
    assert!(err.is_closed());
    let (fresh_probe, _fresh_reports) = common::probe();
    let fresh = TestServer::serve(hub_builder(fresh_probe).build(), Router::new(), addr).await;
    assert!(matches!(
        next("reconnected", &mut events).await,
        Event::Reconnected(Some(_), HubConnectionState::Connected)
    ));
    let waited = lost_at.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(3500),
        "{waited:?}"
    );
    let sum: i64 = connection.invoke("Add", (1, 2)).await.expect("Add");
    assert_eq!(sum, 3);
    connection.stop().await;
    fresh.kill().await;
}

type Seen = Arc<Mutex<Vec<(u32, Duration, Error)>>>;

/// A policy that records what it is asked and retries every 100 ms, `attempts` times.
fn recording_policy(
    attempts: u32,
) -> (
    impl Fn(&RetryContext) -> Option<Duration> + Send + Sync,
    Seen,
) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let policy = move |context: &RetryContext| {
        log.lock().expect("log").push((
            context.previous_retry_count,
            context.elapsed,
            context.retry_reason.clone(),
        ));
        (context.previous_retry_count < attempts).then_some(Duration::from_millis(100))
    };
    (policy, seen)
}

#[tokio::test]
async fn custom_policy_with_short_delays_reconnects() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    let addr = server.addr;
    let (policy, seen) = recording_policy(50);
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_retry_policy(policy)
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");

    server.kill().await;
    assert!(matches!(
        next("reconnecting", &mut events).await,
        Event::Reconnecting(_, HubConnectionState::Reconnecting)
    ));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (fresh_probe, _fresh_reports) = common::probe();
    let fresh = TestServer::serve(hub_builder(fresh_probe).build(), Router::new(), addr).await;
    assert!(matches!(
        next("reconnected", &mut events).await,
        Event::Reconnected(Some(_), HubConnectionState::Connected)
    ));
    let seen = seen.lock().expect("seen").clone();
    // Asked once before the first attempt, then after each failed one; attempts every 100 ms.
    assert!(seen.len() >= 3, "{seen:?}");
    for (index, (count, elapsed, reason)) in seen.iter().enumerate() {
        assert_eq!(*count as usize, index);
        if index == 0 {
            assert_eq!(*elapsed, Duration::ZERO);
            assert!(reason.is_transport(), "{reason:?}");
        } else {
            assert!(
                *elapsed >= Duration::from_millis(100) * (index as u32),
                "{seen:?}"
            );
            // Nothing listens on the port: negotiate fails.
            assert!(reason.is_negotiate(), "{reason:?}");
        }
    }
    let sum: i64 = connection.invoke("Add", (2, 2)).await.expect("Add");
    assert_eq!(sum, 4);
    connection.stop().await;
    assert!(matches!(
        next("closed", &mut events).await,
        Event::Closed(None, HubConnectionState::Disconnected)
    ));
    fresh.kill().await;
}

#[tokio::test]
async fn giving_up_fires_closed_with_the_reason() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    let (policy, seen) = recording_policy(3);
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_retry_policy(policy)
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");

    server.kill().await;
    assert!(matches!(
        next("reconnecting", &mut events).await,
        Event::Reconnecting(_, HubConnectionState::Reconnecting)
    ));
    match next("closed", &mut events).await {
        Event::Closed(Some(err), HubConnectionState::Disconnected) => {
            assert!(err.is_closed());
            assert!(
                err.to_string().starts_with(
                    "Reconnect retries have been exhausted after 3 failed attempts and "
                ),
                "{err}"
            );
            let cause = std::error::Error::source(&err).expect("last attempt's error");
            assert!(
                cause
                    .to_string()
                    .starts_with("Failed to complete negotiation")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    let counts: Vec<u32> = seen.lock().expect("seen").iter().map(|s| s.0).collect();
    assert_eq!(counts, [0, 1, 2, 3]);
    assert_quiet(&mut events, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_policy_that_declines_at_once_closes_without_reconnecting() {
    let (probe, mut reports) = probe();
    let server = TestServer::start(probe).await;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_retry_policy(|_: &RetryContext| None)
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");
    let caller = connection.clone();
    let pending = tokio::spawn(async move { caller.invoke::<()>("Hang", ()).await });
    assert_eq!(next("hang", &mut reports).await, "hang");

    server.kill().await;
    match next("closed", &mut events).await {
        Event::Closed(Some(err), HubConnectionState::Disconnected) => {
            assert!(err.is_transport(), "{err:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = within("pending", pending)
        .await
        .expect("task")
        .expect_err("dropped");
    assert!(err.is_closed());
    assert_quiet(&mut events, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn without_a_policy_the_connection_closes_with_the_error() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_transport(TransportType::ServerSentEvents)
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");
    server.kill().await;
    assert!(matches!(
        next("closed", &mut events).await,
        Event::Closed(Some(_), HubConnectionState::Disconnected)
    ));
    assert_quiet(&mut events, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn stop_during_reconnect_ends_it() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_automatic_reconnect_delays(vec![Duration::from_secs(30)])
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");
    server.kill().await;
    assert!(matches!(
        next("reconnecting", &mut events).await,
        Event::Reconnecting(_, HubConnectionState::Reconnecting)
    ));
    let stopping = Instant::now();
    within("stop", connection.stop()).await;
    assert!(stopping.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        next("closed", &mut events).await,
        Event::Closed(None, HubConnectionState::Disconnected)
    ));
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
}

#[tokio::test]
async fn a_failed_start_is_not_retried() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{closed_port}/hub"))
        .with_automatic_reconnect()
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    let err = within("start", connection.start())
        .await
        .expect_err("nothing listens");
    assert!(err.is_negotiate());
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    assert_quiet(&mut events, Duration::from_millis(300)).await;
}
