//! Handlers and subscriptions, negotiate (redirects, errors, v0, fallback), skip negotiation,
//! access tokens, timeouts and keep-alive, and the server's Close message.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use common::{
    COMBINATIONS, Event, TestServer, assert_quiet, hub_builder, next, probe, record_events, within,
};
use serde_json::{Value, json};
use signalr_hub_client::{
    HubConnection, HubConnectionBuilder, HubConnectionState, HubProtocol, Payload, TransportType,
};
use signalr_server::{
    HubOptions,
    auth::{AuthorizationPolicy, JwtAuthenticator},
    error::ClientResultError,
};
use tokio::sync::mpsc;

fn any_addr() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

async fn connected(url: String) -> HubConnection {
    let connection = HubConnectionBuilder::new()
        .with_url(url)
        .build()
        .expect("build");
    within("start", connection.start()).await.expect("start");
    connection
}

#[tokio::test]
async fn handlers_typed_dynamic_async_and_removal() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    let connection = connected(server.url()).await;
    let id = connection.connection_id().expect("id");
    let clients = server.hub.context().clients();

    let (tx, mut seen) = mpsc::unbounded_channel();
    let t1 = tx.clone();
    let typed = connection.on("Notify", move |(text, n): (String, i64)| {
        let _ = t1.send(format!("typed {text} {n}"));
    });
    let t2 = tx.clone();
    let dynamic = connection.on("NOTIFY", move |args: Value| {
        let _ = t2.send(format!("dynamic {args}"));
    });
    let t3 = tx.clone();
    let raw = connection.on("notify", move |args: Vec<Payload>| {
        let n: i64 = args[1].deserialize().expect("i64");
        let _ = t3.send(format!("raw {} args, n={n}", args.len()));
    });
    let t4 = tx;
    let asynchronous = connection.on("Notify", move |(text,): (String,)| {
        let t4 = t4.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = t4.send(format!("async {text}"));
        }
    });

    clients
        .client(id.clone())
        .send("Notify", ("hi", 7))
        .await
        .expect("send");
    // All handlers run, in registration order.
    assert_eq!(next("typed", &mut seen).await, "typed hi 7");
    assert_eq!(next("dynamic", &mut seen).await, r#"dynamic ["hi",7]"#);
    assert_eq!(next("raw", &mut seen).await, "raw 2 args, n=7");
    assert_eq!(next("async", &mut seen).await, "async hi");

    // Dropping a subscription removes exactly that handler.
    drop(dynamic);
    raw.remove();
    clients
        .client(id.clone())
        .send("Notify", ("again", 8))
        .await
        .expect("send");
    assert_eq!(next("typed", &mut seen).await, "typed again 8");
    assert_eq!(next("async", &mut seen).await, "async again");
    drop(typed);
    drop(asynchronous);
    clients
        .client(id.clone())
        .send("Notify", ("gone", 9))
        .await
        .expect("send");
    assert_quiet(&mut seen, Duration::from_millis(200)).await;

    // A handler that is gone no longer answers client results.
    let answer = connection.on("Question", |(q,): (String,)| Some(format!("answer to {q}")));
    let result = within(
        "client result",
        clients
            .client(id.clone())
            .invoke::<String>("Question", ("life",)),
    )
    .await;
    assert_eq!(result.as_deref(), Ok("answer to life"));
    drop(answer);
    let result = within(
        "client result after removal",
        clients
            .client(id.clone())
            .invoke::<String>("Question", ("life",)),
    )
    .await;
    assert_eq!(
        result,
        Err(ClientResultError::Client(
            "Client didn't provide a result.".to_owned()
        ))
    );

    // Results of several handlers, handler errors, async results, detach and remove(method).
    connection.on("Multi", |(): ()| Some(1)).detach();
    connection.on("Multi", |(): ()| Some(2)).detach();
    let result = within(
        "multi",
        clients.client(id.clone()).invoke::<i64>("Multi", ()),
    )
    .await;
    assert_eq!(
        result,
        Err(ClientResultError::Client(
            "Client provided multiple results.".to_owned()
        ))
    );
    connection.remove("multi");
    let result = within(
        "removed",
        clients.client(id.clone()).invoke::<i64>("Multi", ()),
    )
    .await;
    assert_eq!(
        result,
        Err(ClientResultError::Client(
            "Client didn't provide a result.".to_owned()
        ))
    );
    let _failing = connection.on("Failing", |(): ()| Err::<i64, _>("no can do"));
    let result = within(
        "error",
        clients.client(id.clone()).invoke::<i64>("Failing", ()),
    )
    .await;
    assert_eq!(
        result,
        Err(ClientResultError::Client("no can do".to_owned()))
    );
    let _nothing = connection.on("Nothing", |(): ()| {});
    let result = within(
        "nothing",
        clients.client(id.clone()).invoke::<i64>("Nothing", ()),
    )
    .await;
    assert_eq!(
        result,
        Err(ClientResultError::Client(
            "Client didn't provide a result.".to_owned()
        ))
    );

    // An async handler may call the server on the same connection while it runs.
    let inner = connection.clone();
    let _nested = connection.on("AddRemotely", move |(a, b): (i64, i64)| {
        let inner = inner.clone();
        async move {
            inner
                .invoke::<i64>("Add", (a, b))
                .await
                .map_err(|e| e.to_string())
        }
    });
    let result = within(
        "nested invoke",
        clients
            .client(id.clone())
            .invoke::<i64>("AddRemotely", (40, 2)),
    )
    .await;
    assert_eq!(result, Ok(42));
    within("stop", connection.stop()).await;
}

#[tokio::test]
async fn negotiate_failures() {
    let error_route = Router::new().route(
        "/error/negotiate",
        post(|| async { axum::Json(json!({"error": "Negotiate refused by test."})) }),
    );
    let (probe, _reports) = probe();
    let server = TestServer::serve(hub_builder(probe).build(), error_route, any_addr()).await;

    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{}/nothing-here", server.addr))
        .build()
        .expect("build");
    let err = within("start", connection.start()).await.expect_err("404");
    assert!(err.is_negotiate());
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        err.to_string(),
        "Failed to complete negotiation with the server: Unexpected status code returned from \
         negotiate '404' Either this is not a SignalR endpoint or there is a proxy blocking the \
         connection."
    );
    assert_eq!(connection.state(), HubConnectionState::Disconnected);

    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{}/error", server.addr))
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("error");
    assert!(err.is_negotiate());
    assert_eq!(err.to_string(), "Negotiate refused by test.");

    // Nothing listens there.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{closed_port}/hub"))
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("refused");
    assert!(err.is_negotiate(), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("Failed to complete negotiation with the server: ")
    );

    // A second start while connected is refused.
    let connection = connected(server.url()).await;
    let err = connection.start().await.expect_err("already started");
    assert!(err.is_invalid_state());
    assert_eq!(
        err.to_string(),
        "Cannot start a HubConnection that is not in the 'Disconnected' state."
    );
    connection.stop().await;
}

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

fn jwt(name: &str) -> String {
    JwtAuthenticator::encode_hs256(
        SECRET,
        &json!({"sub": name, "name": name, "exp": 4_000_000_000u64}),
    )
    .expect("token")
}

async fn authorized_server(extra: Router) -> TestServer {
    let (probe, _reports) = probe();
    let hub = hub_builder(probe)
        .authenticator(JwtAuthenticator::hs256(SECRET))
        .require_authorization(AuthorizationPolicy::authenticated())
        .build();
    TestServer::serve(hub, extra, any_addr()).await
}

#[tokio::test]
async fn redirects_follow_url_and_access_token() {
    let target: Arc<std::sync::Mutex<String>> = Arc::default();
    let hops = Arc::new(AtomicUsize::new(0));
    let (t, h) = (target.clone(), hops.clone());
    let routes = Router::new()
        .route(
            "/redirect/negotiate",
            post(move || {
                let url = t.lock().expect("target").clone();
                async move { axum::Json(json!({"url": url, "accessToken": jwt("redirected")})) }
            }),
        )
        .route(
            "/loop/negotiate",
            post(move |request: Request| {
                h.fetch_add(1, Ordering::SeqCst);
                let host = request
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                async move { axum::Json(json!({"url": format!("http://{host}/loop")})) }
            }),
        );
    let server = authorized_server(routes).await;
    *target.lock().expect("target") = server.url();

    // The redirect's URL is negotiated next, with the redirect's token (the hub requires one).
    for (transport, protocol) in COMBINATIONS {
        let connection = HubConnectionBuilder::new()
            .with_url(format!("http://{}/redirect", server.addr))
            .with_transport(transport)
            .with_protocol(protocol)
            .build()
            .expect("build");
        within("start", connection.start()).await.expect("start");
        let auth: Value = connection.invoke("Auth", ()).await.expect("Auth");
        assert_eq!(auth["user"], "redirected", "{transport:?}");
        assert_eq!(
            auth["authorization"],
            format!("Bearer {}", jwt("redirected")),
            "{transport:?}"
        );
        connection.stop().await;
    }

    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{}/loop", server.addr))
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("endless redirects");
    assert!(err.is_negotiate());
    assert_eq!(err.to_string(), "Negotiate redirection limit exceeded.");
    assert_eq!(hops.load(Ordering::SeqCst), 100);
}

#[tokio::test]
async fn access_token_provider_runs_on_every_connect() {
    let server = authorized_server(Router::new()).await;

    // Without a token the hub answers 401 to negotiate.
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .build()
        .expect("build");
    let err = within("start", connection.start()).await.expect_err("401");
    assert!(err.is_negotiate());
    assert_eq!(err.status(), Some(401));

    // A failing provider fails the start.
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_access_token_provider(|| async {
            Err::<String, _>(std::io::Error::other("token service down"))
        })
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("provider error");
    assert!(err.is_access_token());
    assert_eq!(
        err.to_string(),
        "The access token provider failed: token service down"
    );

    for (transport, protocol) in COMBINATIONS {
        // The TS client also puts the token in the query for WebSockets and SSE (docs/protocol.md, "Authentication").
        let query_token = transport != TransportType::LongPolling;
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let connection = HubConnectionBuilder::new()
            .with_url(server.url())
            .with_transport(transport)
            .with_protocol(protocol)
            .with_header("X-Custom", "custom-value")
            .with_query("tenant", "blue")
            .with_access_token_provider(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { jwt(&format!("user-{n}")) }
            })
            .with_automatic_reconnect_delays(vec![Duration::ZERO])
            .build()
            .expect("build");
        let mut events = record_events(&connection);
        within("start", connection.start()).await.expect("start");
        let auth: Value = connection.invoke("Auth", ()).await.expect("Auth");
        assert_eq!(
            auth,
            json!({
                "user": "user-1",
                "authorization": format!("Bearer {}", jwt("user-1")),
                "access_token": if query_token { Value::from(jwt("user-1")) } else { Value::Null },
                "custom": "custom-value",
                "query": "blue",
            }),
            "{transport:?}"
        );

        // The server drops us (allowing reconnect): the reconnect fetches a new token.
        connection
            .send("CloseMe", (Value::Null, true))
            .await
            .expect("CloseMe");
        assert!(matches!(
            next("reconnecting", &mut events).await,
            Event::Reconnecting(..)
        ));
        assert!(matches!(
            next("reconnected", &mut events).await,
            Event::Reconnected(..)
        ));
        let auth: Value = connection.invoke("Auth", ()).await.expect("Auth");
        assert_eq!(auth["user"], "user-2", "{transport:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        connection.stop().await;
    }
}

#[tokio::test]
async fn server_timeout_closes_the_connection() {
    let (probe, _reports) = probe();
    let options = HubOptions {
        keep_alive_interval: Duration::from_secs(60),
        ..HubOptions::default()
    };
    let server = TestServer::start_with(probe, options, Default::default()).await;
    // Long polling has no server timeout: its poll cycle proves liveness (docs/protocol.md, "Long polling").
    for (transport, protocol) in COMBINATIONS
        .into_iter()
        .filter(|(t, _)| *t != TransportType::LongPolling)
    {
        let connection = HubConnectionBuilder::new()
            .with_url(server.url())
            .with_transport(transport)
            .with_protocol(protocol)
            .server_timeout(Duration::from_millis(300))
            .build()
            .expect("build");
        let mut events = record_events(&connection);
        let started = Instant::now();
        within("start", connection.start()).await.expect("start");
        let pending = connection.invoke::<()>("Hang", ());
        let pending_error = within("pending invoke", pending)
            .await
            .expect_err("fails when the connection times out");
        match next("closed", &mut events).await {
            Event::Closed(Some(err), HubConnectionState::Disconnected) => {
                assert!(err.is_timeout());
                assert_eq!(
                    err.to_string(),
                    "Server timeout elapsed without receiving a message from the server."
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
        assert!(pending_error.is_closed());
        assert_eq!(
            pending_error.to_string(),
            "Invocation canceled due to the underlying connection being closed."
        );
        let cause = std::error::Error::source(&pending_error).expect("cause");
        assert_eq!(
            cause.to_string(),
            "Server timeout elapsed without receiving a message from the server."
        );
    }
}

#[tokio::test]
async fn keep_alive_pings_keep_both_sides_alive() {
    let (probe, _reports) = probe();
    // The server pings on its 1 s heartbeat (docs/protocol.md, "Keep-alive and timeouts"), and closes a client silent for
    // 600 ms; the client pings every 100 ms and gives the server 1.5 s.
    let options = HubOptions {
        keep_alive_interval: Duration::from_millis(100),
        client_timeout_interval: Duration::from_millis(600),
        ..HubOptions::default()
    };
    let server = TestServer::start_with(probe, options, Default::default()).await;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_transport(TransportType::WebSockets)
        .keep_alive_interval(Duration::from_millis(100))
        .server_timeout(Duration::from_millis(1500))
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");
    // Idle for longer than either side's timeout: only pings flow, nobody times out.
    assert_quiet(&mut events, Duration::from_millis(2500)).await;
    assert_eq!(connection.state(), HubConnectionState::Connected);
    let sum: i64 = connection.invoke("Add", (1, 2)).await.expect("Add");
    assert_eq!(sum, 3);
    connection.stop().await;
    assert!(matches!(
        next("closed", &mut events).await,
        Event::Closed(None, HubConnectionState::Disconnected)
    ));
}

#[tokio::test]
async fn server_close_message_decides_about_reconnect() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    for (transport, protocol) in COMBINATIONS {
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

        // allowReconnect: true -> reconnecting with the server's error, then reconnected.
        connection
            .send("CloseMe", ("going away", true))
            .await
            .expect("send");
        match next("reconnecting", &mut events).await {
            Event::Reconnecting(err, HubConnectionState::Reconnecting) => {
                assert!(err.is_server_close() && err.is_closed());
                assert_eq!(
                    err.to_string(),
                    "Server returned an error on close: going away"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let second_id = match next("reconnected", &mut events).await {
            Event::Reconnected(Some(id), HubConnectionState::Connected) => id,
            other => panic!("unexpected {other:?}"),
        };
        assert_ne!(second_id, first_id);
        assert_eq!(
            connection.connection_id().as_deref(),
            Some(second_id.as_str())
        );
        let on_server: String = connection.invoke("ConnectionId", ()).await.expect("id");
        assert_eq!(on_server, second_id);

        // allowReconnect: false -> closed with the error, no reconnect despite the policy.
        connection
            .send("CloseMe", ("bye", false))
            .await
            .expect("send");
        match next("closed", &mut events).await {
            Event::Closed(Some(err), HubConnectionState::Disconnected) => {
                assert!(err.is_server_close());
                assert_eq!(err.to_string(), "Server returned an error on close: bye");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_quiet(&mut events, Duration::from_millis(100)).await;
        assert_eq!(connection.state(), HubConnectionState::Disconnected);

        // A Close without error or reconnect: closed(None).
        within("restart", connection.start())
            .await
            .expect("restart");
        connection
            .send("CloseMe", (Value::Null, false))
            .await
            .expect("send");
        assert!(matches!(
            next("closed", &mut events).await,
            Event::Closed(None, HubConnectionState::Disconnected)
        ));
    }
}

#[tokio::test]
async fn skip_negotiation_connects_the_websocket_directly() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        let connection = HubConnectionBuilder::new()
            .with_url(format!("ws://{}/hub", server.addr))
            .with_transport(TransportType::WebSockets)
            .with_protocol(protocol)
            .skip_negotiation(true)
            .build()
            .expect("build");
        within("start", connection.start()).await.expect("start");
        assert_eq!(connection.connection_id(), None);
        let sum: i64 = connection.invoke("Add", (2, 2)).await.expect("Add");
        assert_eq!(sum, 4);
        let transport: String = connection.invoke("Transport", ()).await.expect("transport");
        assert_eq!(transport, "WebSockets");
        connection.stop().await;
    }
}

#[tokio::test]
async fn a_transport_that_fails_to_start_falls_back_after_a_new_negotiate() {
    let negotiations = Arc::new(AtomicUsize::new(0));
    let counter = negotiations.clone();
    // In front of the hub: count negotiates and refuse every WebSocket upgrade.
    let guard = move |request: Request, next: Next| {
        let counter = counter.clone();
        async move {
            if request.uri().path().ends_with("/negotiate") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            if request.headers().contains_key("upgrade") {
                return (axum::http::StatusCode::FORBIDDEN, "no websockets here").into_response();
            }
            next.run(request).await
        }
    };
    let (probe, _reports) = probe();
    let hub = hub_builder(probe).build();
    let routes = Router::new()
        .nest("/guarded", hub.router())
        .layer(axum::middleware::from_fn(guard));
    let server = TestServer::serve(hub, routes, any_addr()).await;

    for (protocol, expected) in [
        (HubProtocol::Json, "ServerSentEvents"),
        (HubProtocol::MessagePack, "LongPolling"),
    ] {
        negotiations.store(0, Ordering::SeqCst);
        let connection = HubConnectionBuilder::new()
            .with_url(format!("http://{}/guarded", server.addr))
            .with_protocol(protocol)
            .build()
            .expect("build");
        within("start", connection.start()).await.expect("start");
        let transport: String = connection.invoke("Transport", ()).await.expect("transport");
        assert_eq!(transport, expected);
        assert_eq!(negotiations.load(Ordering::SeqCst), 2);
        connection.stop().await;
    }

    // Only WebSockets allowed: the start fails with every reason.
    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{}/guarded", server.addr))
        .with_transport(TransportType::WebSockets)
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("no transport");
    assert!(err.is_transport());
    assert_eq!(
        err.to_string(),
        "Unable to connect to the server with any of the available transports. \
         WebSockets failed: WebSocket failed to connect: the server answered status code 403. \
         ServerSentEvents failed: 'ServerSentEvents' is disabled by the client. \
         LongPolling failed: 'LongPolling' is disabled by the client."
    );
}

/// A hand-written server for what ours never does: a v0 negotiate response, the handshake
/// response and two invocations in one binary frame carrying JSON, a Completion and a Close in
/// one frame.
#[tokio::test]
async fn raw_server_framing_v0_negotiate_and_pings() {
    let (reports, mut seen_by_server) = mpsc::unbounded_channel::<String>();
    let routes = Router::new()
        .route(
            "/raw/negotiate",
            post(|| async {
                axum::Json(json!({
                    "connectionId": "v0-id",
                    "availableTransports": [
                        {"transport": "Telepathy", "transferFormats": ["Text"]},
                        {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
                    ]
                }))
            }),
        )
        .route(
            "/raw",
            any(
                move |Query(query): Query<std::collections::HashMap<String, String>>,
                      upgrade: WebSocketUpgrade| {
                    let reports = reports.clone();
                    async move {
                        let _ = reports.send(format!(
                            "id={}",
                            query.get("id").cloned().unwrap_or_default()
                        ));
                        upgrade.on_upgrade(move |socket| raw_session(socket, reports))
                    }
                },
            ),
        );
    let (probe, _reports) = probe();
    let server = TestServer::serve(hub_builder(probe).build(), routes, any_addr()).await;

    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{}/raw", server.addr))
        .with_automatic_reconnect()
        .build()
        .expect("build");
    let mut events = record_events(&connection);
    let (tx, mut hellos) = mpsc::unbounded_channel();
    let _hello = connection.on("Hello", move |(text,): (String,)| {
        let _ = tx.send(text);
    });
    within("start", connection.start()).await.expect("start");
    // v0: the connection id is the token (`id=v0-id`); the unknown transport was skipped.
    assert_eq!(connection.connection_id().as_deref(), Some("v0-id"));
    assert_eq!(next("id", &mut seen_by_server).await, "id=v0-id");
    assert_eq!(
        next("handshake", &mut seen_by_server).await,
        r#"{"protocol":"json","version":1}"#
    );
    // The first message after the handshake is a Ping (docs/protocol.md, "Handshake").
    assert_eq!(next("ping", &mut seen_by_server).await, r#"{"type":6}"#);
    assert_eq!(next("hello one", &mut hellos).await, "one");
    assert_eq!(next("hello two", &mut hellos).await, "two");

    let answer: i64 = connection.invoke("Answer", ()).await.expect("Answer");
    assert_eq!(answer, 42);
    // The Close (no allowReconnect) came in the same frame as the Completion.
    match next("closed", &mut events).await {
        Event::Closed(Some(err), HubConnectionState::Disconnected) => {
            assert_eq!(err.to_string(), "Server returned an error on close: done");
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn raw_session(mut socket: WebSocket, reports: mpsc::UnboundedSender<String>) {
    let mut buffer = String::new();
    let mut messages = Vec::new();
    // Reads until `count` RS-terminated messages were received.
    async fn read(
        socket: &mut WebSocket,
        buffer: &mut String,
        messages: &mut Vec<String>,
    ) -> Option<String> {
        loop {
            if let Some(pos) = buffer.find('\u{1e}') {
                let message = buffer[..pos].to_owned();
                buffer.drain(..=pos);
                messages.push(message.clone());
                return Some(message);
            }
            match socket.recv().await? {
                Ok(Message::Text(text)) => buffer.push_str(text.as_str()),
                Ok(Message::Binary(bytes)) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
    let Some(handshake) = read(&mut socket, &mut buffer, &mut messages).await else {
        return;
    };
    let _ = reports.send(handshake);
    let frame = "{}\u{1e}{\"type\":1,\"target\":\"hello\",\"arguments\":[\"one\"]}\u{1e}\
                 {\"type\":1,\"target\":\"HELLO\",\"arguments\":[\"two\"],\"extra\":1}\u{1e}\
                 {\"type\":99,\"future\":true}\u{1e}";
    // JSON in a binary frame: the client must not care about the frame type.
    let _ = socket
        .send(Message::Binary(frame.as_bytes().to_vec().into()))
        .await;
    while let Some(message) = read(&mut socket, &mut buffer, &mut messages).await {
        let value: Value = serde_json::from_str(&message).unwrap_or_default();
        let _ = reports.send(message.clone());
        if value["type"] == 1 && value["target"] == "Answer" {
            let id = value["invocationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let reply = format!(
                "{{\"type\":3,\"invocationId\":\"{id}\",\"result\":42}}\u{1e}{{\"type\":7,\"error\":\"done\"}}\u{1e}"
            );
            let _ = socket.send(Message::Text(reply.into())).await;
        }
    }
    let _ = Response::new(());
}

#[tokio::test]
async fn handshake_errors_and_timeouts() {
    // A hub that only speaks JSON refuses MessagePack in the handshake.
    let (probe, _reports) = probe();
    let options = HubOptions {
        supported_protocols: vec![HubProtocol::Json],
        ..HubOptions::default()
    };
    let server = TestServer::start_with(probe, options, Default::default()).await;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_protocol(HubProtocol::MessagePack)
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("protocol refused");
    assert!(err.is_handshake(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Server returned handshake error: The protocol 'messagepack' is not supported."
    );
    assert_eq!(connection.state(), HubConnectionState::Disconnected);

    // A WebSocket endpoint that never answers the handshake.
    let silent = Router::new().route(
        "/silent",
        any(|upgrade: WebSocketUpgrade| async move {
            upgrade.on_upgrade(|mut socket| async move { while socket.recv().await.is_some() {} })
        }),
    );
    let (probe, _reports) = common::probe();
    let server = TestServer::serve(hub_builder(probe).build(), silent, any_addr()).await;
    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{}/silent", server.addr))
        .with_transport(TransportType::WebSockets)
        .skip_negotiation(true)
        .handshake_timeout(Duration::from_millis(200))
        .build()
        .expect("build");
    let started = Instant::now();
    let err = within("start", connection.start())
        .await
        .expect_err("no handshake response");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.to_string(), "The handshake timed out after 200 ms.");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
}

#[tokio::test]
async fn stop_or_drop_during_start_and_drop_of_the_last_handle() {
    // A negotiate that never answers keeps the connection Connecting.
    let slow = Router::new().route(
        "/slow/negotiate",
        post(std::future::pending::<axum::Json<Value>>),
    );
    let (probe, _reports) = probe();
    let server = TestServer::serve(hub_builder(probe).build(), slow, any_addr()).await;
    let connection = HubConnectionBuilder::new()
        .with_url(format!("http://{}/slow", server.addr))
        .build()
        .expect("build");

    let starter = connection.clone();
    let start = tokio::spawn(async move { starter.start().await });
    within("connecting", async {
        while connection.state() != HubConnectionState::Connecting {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    within("stop", connection.stop()).await;
    let err = within("start", start)
        .await
        .expect("task")
        .expect_err("stopped");
    assert!(err.is_closed());
    assert_eq!(
        err.to_string(),
        "The connection was stopped before the hub handshake could complete."
    );
    assert_eq!(connection.state(), HubConnectionState::Disconnected);

    // Giving up on a start (dropping its future) puts the state back too.
    let timed_out = tokio::time::timeout(Duration::from_millis(100), connection.start()).await;
    assert!(timed_out.is_err());
    assert_eq!(connection.state(), HubConnectionState::Disconnected);

    // Dropping the last handle of a connected connection closes it.
    let connection = connected(server.url()).await;
    within("server sees the connection", async {
        while server.hub.context().connection_count() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    drop(connection);
    within("server sees the close", async {
        while server.hub.context().connection_count() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A WebSocket endpoint that answers the handshake with `reply` and then waits.
fn scripted(reply: &'static str) -> axum::routing::MethodRouter {
    any(move |upgrade: WebSocketUpgrade| async move {
        upgrade.on_upgrade(move |mut socket| async move {
            // The handshake request.
            let _ = socket.recv().await;
            let _ = socket.send(Message::Text(reply.into())).await;
            while socket.recv().await.is_some() {}
        })
    })
}

#[tokio::test]
async fn malformed_server_data_fails_with_handshake_or_protocol_errors() {
    let routes = Router::new()
        .route("/not-a-handshake", scripted("{\"type\":6}\u{1e}"))
        .route("/bad-json", scripted("{oops\u{1e}"))
        .route("/bad-message", scripted("{}\u{1e}{\"type\":3}\u{1e}"));
    let (probe, _reports) = probe();
    let server = TestServer::serve(hub_builder(probe).build(), routes, any_addr()).await;
    let skip = |path: &str| {
        HubConnectionBuilder::new()
            .with_url(format!("ws://{}{path}", server.addr))
            .with_transport(TransportType::WebSockets)
            .skip_negotiation(true)
            .with_automatic_reconnect()
            .build()
            .expect("build")
    };

    let err = within("start", skip("/not-a-handshake").start())
        .await
        .expect_err("a Ping is no handshake response");
    assert!(err.is_handshake());
    assert_eq!(
        err.to_string(),
        "Error parsing handshake response: Expected a handshake response from the server."
    );

    let err = within("start", skip("/bad-json").start())
        .await
        .expect_err("not JSON");
    assert!(err.is_handshake());
    assert!(
        err.to_string()
            .starts_with("Error parsing handshake response: ")
    );

    // A Completion without invocationId: the connection is lost with a protocol error (and,
    // as any lost connection, reconnects).
    let connection = skip("/bad-message");
    let mut events = record_events(&connection);
    within("start", connection.start()).await.expect("start");
    match next("reconnecting", &mut events).await {
        Event::Reconnecting(err, HubConnectionState::Reconnecting) => {
            assert!(err.is_protocol(), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with("Invalid message from the server: "),
                "{err}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    connection.stop().await;
}
