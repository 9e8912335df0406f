//! Stateful reconnect (ASP.NET Core's `AllowStatefulReconnects`, docs/protocol.md, "Stateful
//! reconnect") driven by hand over raw WebSockets: negotiate grants it only when allowed and
//! asked for; a WebSocket lost without a Close frame is resumed with the same token (Sequence
//! first, then every unacknowledged message, duplicates from the client dropped, the hub sees no
//! disconnect); the replay buffer is bounded in bytes; and the bad paths (handshake version 1, a
//! resume after the disconnect timeout, another user's resume, a Sequence that jumps forward or
//! goes back) get ASP.NET's answers without a panic.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use signalr_server::{
    ConnectionOptions, Hub, HubCallerContext, HubError, HubOptions,
    auth::{AuthRequest, User},
};

/// The hooks that ran, in order.
type Log = Arc<Mutex<Vec<String>>>;

/// A server at `/hub` with stateful reconnect allowed, and the hook log. Methods: `Echo(v)`;
/// `Flood(n, size)` sends `Item(i, text)` with `size` bytes of text to the caller `n` times,
/// then returns `n`.
async fn start(
    hub_options: HubOptions,
    connection_options: ConnectionOptions,
) -> (TestServer, Log) {
    start_hub(Hub::builder(), hub_options, connection_options).await
}

async fn start_hub(
    builder: signalr_server::HubBuilder,
    hub_options: HubOptions,
    connection_options: ConnectionOptions,
) -> (TestServer, Log) {
    install_panic_hook();
    let log: Log = Arc::default();
    let (connected, disconnected) = (log.clone(), log.clone());
    let hub = builder
        .options(HubOptions {
            enable_detailed_errors: true,
            ..hub_options
        })
        .connection_options(ConnectionOptions {
            allow_stateful_reconnects: true,
            ..connection_options
        })
        .method("Echo", |_: HubCallerContext, v: Value| async move { v })
        .method(
            "Flood",
            |hub: HubCallerContext, n: usize, size: usize| async move {
                let text = "x".repeat(size);
                for i in 0..n {
                    hub.clients()
                        .caller()
                        .send("Item", (i, text.clone()))
                        .await?;
                }
                Ok::<_, HubError>(n)
            },
        )
        .on_connected(move |hub: HubCallerContext| {
            let log = connected.clone();
            async move {
                log.lock()
                    .expect("log")
                    .push(format!("connected {}", hub.connection_id()));
            }
        })
        .on_disconnected(move |hub: HubCallerContext, _error: Option<String>| {
            let log = disconnected.clone();
            async move {
                log.lock()
                    .expect("log")
                    .push(format!("disconnected {}", hub.connection_id()));
            }
        })
        .build();
    let app = axum::Router::new().nest("/hub", hub.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(std::future::IntoFuture::into_future(signalr_server::serve(
        listener, app,
    )));
    let server = TestServer {
        addr,
        hub,
        http: reqwest::Client::new(),
    };
    (server, log)
}

/// Negotiates with `useStatefulReconnect=true`; returns (id, token, the response's flag).
async fn negotiate_stateful(server: &TestServer) -> (String, String, Value) {
    let response = negotiate_raw(server, "?negotiateVersion=1&useStatefulReconnect=true").await;
    let body = response.json();
    (
        body["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_owned(),
        body["connectionToken"]
            .as_str()
            .expect("connectionToken")
            .to_owned(),
        body["useStatefulReconnect"].clone(),
    )
}

/// A stateful connection: negotiate, WebSocket, JSON handshake with version 2.
async fn connect(server: &TestServer) -> (String, String, Ws) {
    let (id, token, granted) = negotiate_stateful(server).await;
    assert_eq!(granted, json!(true), "negotiate grants stateful reconnect");
    let mut ws = ws_connect(server, &token).await;
    handshake(&mut ws, 2).await;
    (id, token, ws)
}

async fn handshake(ws: &mut Ws, version: u32) {
    ws.send_text(&format!(r#"{{"protocol":"json","version":{version}}}{RS}"#))
        .await;
    assert_eq!(ws.next_text_message().await, "{}", "handshake response");
}

fn invocation(id: &str, target: &str, arguments: Value) -> String {
    format!(
        "{}{RS}",
        json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments})
    )
}

fn echo_result(id: &str, value: &str) -> Value {
    json!({"type": 3, "invocationId": id, "result": value})
}

/// The next message that is neither a Ping nor an Ack.
async fn next_hub_message(ws: &mut Ws) -> Value {
    loop {
        let message = ws.next_json().await;
        if message["type"] != 6 && message["type"] != 8 {
            return message;
        }
    }
}

/// Messages until `limit` passes without one (Pings left out).
async fn drain(ws: &mut Ws, limit: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(text)) = ws.next_text_message_within(limit).await {
        let message: Value = serde_json::from_str(&text).expect("JSON");
        if message["type"] != 6 {
            out.push(message);
        }
    }
    out
}

#[tokio::test]
async fn negotiate_grants_it_only_when_allowed_and_asked() {
    let (server, _) = start(HubOptions::default(), ConnectionOptions::default()).await;
    let (_, _, granted) = negotiate_stateful(&server).await;
    assert_eq!(granted, json!(true));
    let body = negotiate_raw(&server, "?negotiateVersion=1").await.json();
    assert!(
        body.get("useStatefulReconnect").is_none() || body["useStatefulReconnect"] == false,
        "not asked: not granted ({body})"
    );

    let plain = common::start().await;
    let body = negotiate_raw(&plain, "?negotiateVersion=1&useStatefulReconnect=true")
        .await
        .json();
    assert!(
        body.get("useStatefulReconnect").is_none() || body["useStatefulReconnect"] == false,
        "not allowed: not granted ({body})"
    );
    finish(&server).await;
}

#[tokio::test]
async fn a_lost_socket_is_resumed_with_everything_unacknowledged_and_no_duplicates() {
    let (server, log) = start(HubOptions::default(), ConnectionOptions::default()).await;
    let (id, token, mut ws) = connect(&server).await;
    for i in 0..3 {
        ws.send_text(&invocation(
            &i.to_string(),
            "Echo",
            json!([format!("x{i}")]),
        ))
        .await;
    }
    for i in 0..3 {
        assert_eq!(
            next_hub_message(&mut ws).await,
            echo_result(&i.to_string(), &format!("x{i}"))
        );
    }
    // The server acknowledges the client's three messages on its 1 s heartbeat.
    let ack = within_for(Duration::from_secs(3), "the server's Ack", async {
        loop {
            let message = ws.next_json().await;
            if message["type"] == 8 {
                return message;
            }
        }
    })
    .await;
    assert_eq!(ack, json!({"type": 8, "sequenceId": 3}));
    // The client acknowledges the first result only, then its network goes.
    ws.send_text(&format!("{}{RS}", json!({"type": 8, "sequenceId": 1})))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.cut();

    // Sent while the client is away: delivered after the resume.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server
        .hub
        .context()
        .clients()
        .client(id.clone())
        .send("Missed", ("meanwhile",))
        .await
        .expect("queued for the away connection");

    let mut ws = ws_connect(&server, &token).await;
    // No handshake: the server writes the Sequence message (the oldest unacknowledged id),
    // then what was not acknowledged, in order.
    assert_eq!(ws.next_json().await, json!({"type": 9, "sequenceId": 2}));
    assert_eq!(ws.next_json().await, echo_result("1", "x1"));
    assert_eq!(ws.next_json().await, echo_result("2", "x2"));
    assert_eq!(
        next_hub_message(&mut ws).await,
        json!({"type": 1, "target": "Missed", "arguments": ["meanwhile"]})
    );
    // The client resends from its own oldest unacknowledged message (the server acknowledged
    // all three): Sequence 3 repeats message 3, which the server drops, and message 4 is new.
    ws.send_text(&format!("{}{RS}", json!({"type": 9, "sequenceId": 3})))
        .await;
    ws.send_text(&invocation("2", "Echo", json!(["duplicate"])))
        .await;
    ws.send_text(&invocation("3", "Echo", json!(["new"]))).await;
    assert_eq!(next_hub_message(&mut ws).await, echo_result("3", "new"));
    let rest = drain(&mut ws, Duration::from_millis(1500)).await;
    assert_eq!(
        rest,
        vec![json!({"type": 8, "sequenceId": 4})],
        "the duplicate was not processed; the new message is acknowledged"
    );
    assert_eq!(
        log.lock().expect("log").clone(),
        vec![format!("connected {id}")],
        "the hub saw one connection and no disconnect"
    );
    ws.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn a_second_socket_replaces_one_the_server_has_not_seen_fail() {
    let (server, log) = start(HubOptions::default(), ConnectionOptions::default()).await;
    let (id, token, mut first) = connect(&server).await;
    first
        .send_text(&invocation("0", "Echo", json!(["a"])))
        .await;
    assert_eq!(next_hub_message(&mut first).await, echo_result("0", "a"));
    let mut second = ws_connect(&server, &token).await;
    assert_eq!(
        second.next_json().await,
        json!({"type": 9, "sequenceId": 1})
    );
    assert_eq!(second.next_json().await, echo_result("0", "a"));
    second
        .send_text(&format!("{}{RS}", json!({"type": 9, "sequenceId": 2})))
        .await;
    second
        .send_text(&invocation("1", "Echo", json!(["b"])))
        .await;
    assert_eq!(next_hub_message(&mut second).await, echo_result("1", "b"));
    assert!(
        matches!(first.next_frame().await, Frame::Ended | Frame::Close(_)),
        "the replaced socket is dropped"
    );
    assert_eq!(
        log.lock().expect("log").clone(),
        vec![format!("connected {id}")]
    );
    second.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn handshake_version_1_turns_it_off() {
    let (server, _) = start(HubOptions::default(), ConnectionOptions::default()).await;
    let (_, token, granted) = negotiate_stateful(&server).await;
    assert_eq!(granted, json!(true));
    let mut ws = ws_connect(&server, &token).await;
    handshake(&mut ws, 1).await;
    ws.assert_echo("0", json!("v1")).await;
    // As for any connection: a second WebSocket is a conflict, not a resume.
    assert_eq!(
        ws_connect_query(&server, &format!("?id={token}"))
            .await
            .err()
            .map(|e| e.0),
        Some(409)
    );
    ws.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ws_connect_query(&server, &format!("?id={token}"))
            .await
            .err()
            .map(|e| e.0),
        Some(404),
        "without stateful reconnect a lost socket ends the connection"
    );
    finish(&server).await;
}

#[tokio::test]
async fn the_token_is_gone_after_the_disconnect_timeout() {
    let (server, log) = start(
        HubOptions::default(),
        ConnectionOptions {
            disconnect_timeout: Duration::from_secs(1),
            ..ConnectionOptions::default()
        },
    )
    .await;
    let (id, token, mut ws) = connect(&server).await;
    ws.assert_echo("0", json!("before")).await;
    ws.cut();
    within_for(Duration::from_secs(5), "the disconnect timeout", async {
        while !log
            .lock()
            .expect("log")
            .contains(&format!("disconnected {id}"))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let refused = ws_connect_query(&server, &format!("?id={token}")).await;
    let Err((status, body)) = refused else {
        panic!("a resume after the disconnect timeout was accepted");
    };
    assert_eq!((status, body.as_str()), (404, "No Connection with that ID"));
    finish(&server).await;
}

#[tokio::test]
async fn another_users_resume_is_refused() {
    // The user is the `user` query parameter (a stand-in for a real scheme).
    let authenticator = |request: AuthRequest<'_>| {
        let user = request.token.map(|name| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), json!(name));
            User::authenticated(claims)
        });
        Ok(user)
    };
    let (server, log) = start_hub(
        Hub::builder().authenticator(authenticator),
        HubOptions::default(),
        ConnectionOptions::default(),
    )
    .await;
    let (id, token, granted) = negotiate_stateful(&server).await;
    assert_eq!(granted, json!(true));
    let mut ws = ws_connect_query(&server, &format!("?id={token}&access_token=ann"))
        .await
        .expect("ann's WebSocket");
    handshake(&mut ws, 2).await;
    ws.assert_echo("0", json!("ann")).await;
    ws.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = ws_connect_query(&server, &format!("?id={token}&access_token=bob")).await;
    assert_eq!(
        refused.err().map(|e| e.0),
        Some(403),
        "bob may not resume ann's connection"
    );
    let mut resumed = ws_connect_query(&server, &format!("?id={token}&access_token=ann"))
        .await
        .expect("ann resumes");
    assert_eq!(resumed.next_json().await["type"], 9, "Sequence first");
    assert_eq!(
        log.lock().expect("log").clone(),
        vec![format!("connected {id}")]
    );
    resumed.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn a_sequence_past_what_was_sent_closes_with_an_error() {
    let (server, _) = start(HubOptions::default(), ConnectionOptions::default()).await;
    let (_, _, mut ws) = connect(&server).await;
    ws.send_text(&format!("{}{RS}", json!({"type": 9, "sequenceId": 5})))
        .await;
    assert_eq!(
        next_hub_message(&mut ws).await,
        json!({
            "type": 7,
            "error": "Connection closed with an error. InvalidOperationException: Sequence ID greater than amount of messages we've received.",
            "allowReconnect": true
        })
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

#[tokio::test]
async fn a_sequence_that_goes_back_drops_what_was_already_processed() {
    let (server, _) = start(HubOptions::default(), ConnectionOptions::default()).await;
    let (_, _, mut ws) = connect(&server).await;
    for i in 0..3 {
        ws.send_text(&invocation(&i.to_string(), "Echo", json!([i.to_string()])))
            .await;
        assert_eq!(
            next_hub_message(&mut ws).await,
            echo_result(&i.to_string(), &i.to_string())
        );
    }
    // Back to 2: the next two messages are 2 and 3 again (dropped), the third is 4.
    ws.send_text(&format!("{}{RS}", json!({"type": 9, "sequenceId": 2})))
        .await;
    for (id, value) in [("a", "again"), ("b", "again"), ("c", "new")] {
        ws.send_text(&invocation(id, "Echo", json!([value]))).await;
    }
    assert_eq!(next_hub_message(&mut ws).await, echo_result("c", "new"));
    ws.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn the_replay_buffer_is_bounded_in_bytes_until_acknowledged() {
    let (server, _) = start(
        HubOptions {
            stateful_reconnect_buffer_size: 1_000,
            ..HubOptions::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let (_, _, mut ws) = connect(&server).await;
    // Ten messages of about 340 bytes: the third takes the kept bytes past 1,000 (a message
    // goes out while they are at or below the limit, as in ASP.NET), then nothing until an Ack.
    ws.send_text(&invocation("0", "Flood", json!([10, 300])))
        .await;
    let before = drain(&mut ws, Duration::from_millis(500)).await;
    let items = |messages: &[Value]| messages.iter().filter(|m| m["target"] == "Item").count();
    assert_eq!(
        items(&before),
        3,
        "sent before the buffer filled: {before:?}"
    );
    // Each Ack makes room for more; the Completion comes last.
    let mut seen = before;
    for _ in 0..10 {
        if seen.iter().any(|m| m["type"] == 3) {
            break;
        }
        let sent = seen
            .iter()
            .filter(|m| m["type"] == 1 || m["type"] == 3)
            .count();
        ws.send_text(&format!("{}{RS}", json!({"type": 8, "sequenceId": sent})))
            .await;
        seen.extend(drain(&mut ws, Duration::from_millis(300)).await);
    }
    assert_eq!(items(&seen), 10, "every item, once: {seen:?}");
    let order: Vec<Value> = seen
        .iter()
        .filter(|m| m["target"] == "Item")
        .map(|m| m["arguments"][0].clone())
        .collect();
    assert_eq!(order, (0..10).map(|i| json!(i)).collect::<Vec<_>>());
    assert!(
        seen.iter()
            .any(|m| *m == json!({"type": 3, "invocationId": "0", "result": 10})),
        "the Completion came once there was room"
    );
    ws.close().await;
    finish(&server).await;
}
