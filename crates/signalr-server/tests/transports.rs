//! Transport behaviour: long polling and Server-Sent Events framing (docs/protocol.md, "Server-Sent Events", "Long polling"),
//! keep-alive, client timeout and disconnect timeout (docs/protocol.md, "Connection lifetime", "Keep-alive and timeouts"), skip negotiation (docs/protocol.md, "WebSockets") and
//! the server's Close message (docs/protocol.md, "Close message").

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use signalr_server::{ConnectionOptions, HubOptions};

const JSON_HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";

#[track_caller]
fn assert_poll(response: &HttpResponse, status: u16, body: &str) {
    assert_eq!(
        (response.status, response.body.as_str()),
        (status, body),
        "unexpected poll response {response:?}"
    );
    if status == 200 {
        assert_eq!(
            response.content_type.as_deref(),
            Some("application/octet-stream"),
            "{response:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Long polling (docs/protocol.md, "Long polling")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_lifecycle() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;

    // The first poll starts the connection and returns at once, empty.
    let started = Instant::now();
    let first = poll(&server, &token).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "first poll waited"
    );
    assert_poll(&first, 200, "");
    assert_eq!(
        first
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some("0")
    );
    for (name, value) in [
        ("cache-control", "no-cache, no-store"),
        ("pragma", "no-cache"),
        ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ] {
        assert_eq!(
            first.headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "header {name}"
        );
    }

    // Handshake through POST; its response arrives on the next poll.
    let handshake = post(&server, &token, JSON_HANDSHAKE).await;
    assert_eq!((handshake.status, handshake.body.as_str()), (200, ""));
    assert_poll(&poll(&server, &token).await, 200, "{}\u{1e}");

    // An invocation through POST; its completion on the next poll.
    let response = post(&server, &token, echo_invocation("1", &json!("lp"))).await;
    assert_eq!(response.status, 200);
    assert_poll(
        &poll(&server, &token).await,
        200,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":\"lp\"}\u{1e}",
    );

    // DELETE while a poll waits: 202, and the poll ends with 204.
    let pending = {
        let url = server.url(&format!("/hub?id={token}"));
        let http = server.http.clone();
        tokio::spawn(async move { http.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deleted = delete(&server, &token).await;
    assert_eq!(deleted.status, 202, "{deleted:?}");
    let pending = within("pending poll after DELETE", pending)
        .await
        .expect("poll task")
        .expect("poll request");
    assert_eq!(pending.status().as_u16(), 204);

    // The connection is gone.
    poll(&server, &token)
        .await
        .assert_text(404, "No Connection with that ID");
    delete(&server, &token)
        .await
        .assert_text(404, "No Connection with that ID");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_idle_poll_times_out_with_empty_200() {
    let server = start_with(
        HubOptions::default(),
        ConnectionOptions {
            long_polling_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    let (_, token) = negotiate(&server).await;
    assert_poll(&poll(&server, &token).await, 200, "");
    post(&server, &token, JSON_HANDSHAKE).await;
    assert_poll(&poll(&server, &token).await, 200, "{}\u{1e}");

    let started = Instant::now();
    let idle = poll_for(&server, &token, Duration::from_secs(3)).await;
    let waited = started.elapsed();
    assert_poll(&idle, 200, "");
    assert!(
        waited >= Duration::from_millis(400),
        "idle poll returned after {waited:?}, before the poll timeout"
    );
    // No Ping is ever sent on long polling (docs/protocol.md, "Long polling"): still nothing but empty polls.
    assert_poll(
        &poll_for(&server, &token, Duration::from_secs(3)).await,
        200,
        "",
    );
    // And the connection still works.
    post(&server, &token, echo_invocation("1", &json!(1))).await;
    assert_poll(
        &poll(&server, &token).await,
        200,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":1}\u{1e}",
    );
    assert_eq!(delete(&server, &token).await.status, 202);
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_newer_poll_ends_older_with_204() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    assert_poll(&poll(&server, &token).await, 200, "");
    post(&server, &token, JSON_HANDSHAKE).await;
    assert_poll(&poll(&server, &token).await, 200, "{}\u{1e}");

    let url = server.url(&format!("/hub?id={token}"));
    let older = {
        let http = server.http.clone();
        let url = url.clone();
        tokio::spawn(async move { http.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let newer = {
        let http = server.http.clone();
        tokio::spawn(async move { http.get(url).send().await })
    };
    let older = within("older poll", older)
        .await
        .expect("poll task")
        .expect("poll request");
    assert_eq!(
        older.status().as_u16(),
        204,
        "the older poll must end with 204"
    );

    // The newer poll is the one that receives data.
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(&server, &token, echo_invocation("1", &json!("newer"))).await;
    let newer = within("newer poll", newer)
        .await
        .expect("poll task")
        .expect("poll request");
    assert_eq!(newer.status().as_u16(), 200);
    let body = within("newer poll body", newer.text()).await.expect("body");
    assert_eq!(
        body,
        "{\"type\":3,\"invocationId\":\"1\",\"result\":\"newer\"}\u{1e}"
    );
    assert_eq!(delete(&server, &token).await.status, 202);
    finish(&server).await;
}

/// The handshake and an invocation in one POST body while a poll waits: the handshake response
/// and the Completion may come back in one poll response (docs/protocol.md, "Layers"), but neither may be lost.
/// Current-thread runtime: the hub task queues the Completion right behind the handshake
/// response before the transport's writer runs (deterministic ordering).
#[tokio::test]
async fn long_polling_handshake_and_invocation_in_one_post() {
    let server = start_with(
        HubOptions::default(),
        ConnectionOptions {
            long_polling_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    let (_, token) = negotiate(&server).await;
    assert_poll(&poll(&server, &token).await, 200, "");
    let pending = {
        let url = server.url(&format!("/hub?id={token}"));
        let http = server.http.clone();
        tokio::spawn(async move { http.get(url).send().await?.text().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = format!(
        "{JSON_HANDSHAKE}{}",
        echo_invocation("1", &json!("same body"))
    );
    assert_eq!(post(&server, &token, body).await.status, 200);
    let mut received = within("pending poll", pending)
        .await
        .expect("poll task")
        .expect("poll request");
    let expected = "{}\u{1e}{\"type\":3,\"invocationId\":\"1\",\"result\":\"same body\"}\u{1e}";
    // Poll on (empty 200s every 500 ms) until everything arrived or 3 s passed.
    let deadline = Instant::now() + Duration::from_secs(3);
    while received.len() < expected.len() && Instant::now() < deadline {
        let response = poll_for(&server, &token, Duration::from_secs(3)).await;
        assert_eq!(response.status, 200, "{response:?}");
        received.push_str(&response.body);
    }
    assert_eq!(received, expected, "the Completion was lost");
    assert_eq!(delete(&server, &token).await.status, 202);
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events (docs/protocol.md, "Server-Sent Events")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_format() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut stream = sse(&server, &token).await;
    assert_eq!(stream.status, 200);
    let header = |name: &str| {
        stream
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(
        header("cache-control").as_deref(),
        Some("no-cache,no-store")
    );
    assert_eq!(header("pragma").as_deref(), Some("no-cache"));
    assert_eq!(header("content-encoding").as_deref(), Some("identity"));
    assert_eq!(stream.take(3).await, ":\r\n");

    let handshake = post(&server, &token, JSON_HANDSHAKE).await;
    assert_eq!(handshake.status, 200);
    assert_eq!(stream.next_event().await, "data: {}\u{1e}\r\n\r\n");

    post(&server, &token, echo_invocation("1", &json!("sse"))).await;
    assert_eq!(
        stream.next_event().await,
        "data: {\"type\":3,\"invocationId\":\"1\",\"result\":\"sse\"}\u{1e}\r\n\r\n"
    );
    // A value with a newline inside a JSON string is escaped by JSON, so still one data line.
    post(&server, &token, echo_invocation("2", &json!("a\nb"))).await;
    assert_eq!(
        stream.next_event().await,
        "data: {\"type\":3,\"invocationId\":\"2\",\"result\":\"a\\nb\"}\u{1e}\r\n\r\n"
    );
    drop(stream);
    finish(&server).await;
}

/// The handshake and an invocation in one POST body on SSE: neither reply may be lost.
/// Current-thread runtime: the hub task queues the Completion right behind the handshake
/// response before the transport's writer runs (deterministic ordering).
#[tokio::test]
async fn sse_handshake_and_invocation_in_one_post() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut stream = sse(&server, &token).await;
    assert_eq!(stream.take(3).await, ":\r\n");
    let body = format!(
        "{JSON_HANDSHAKE}{}",
        echo_invocation("1", &json!("same body"))
    );
    assert_eq!(post(&server, &token, body).await.status, 200);
    let expected = "{}\u{1e}{\"type\":3,\"invocationId\":\"1\",\"result\":\"same body\"}\u{1e}";
    let mut received = String::new();
    let collected = tokio::time::timeout(Duration::from_secs(3), async {
        while received.len() < expected.len() {
            let event = stream.next_event().await;
            let data = event
                .strip_prefix("data: ")
                .and_then(|e| e.strip_suffix("\r\n\r\n"))
                .unwrap_or_else(|| panic!("unexpected event {event:?}"));
            received.push_str(data);
        }
    })
    .await;
    assert!(
        collected.is_ok() && received == expected,
        "the Completion was lost: received {received:?}"
    );
    drop(stream);
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Keep-alive and timeouts (docs/protocol.md, "Keep-alive and timeouts", "Connection lifetime")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_ping_on_idle_websocket() {
    let server = start_with(
        HubOptions {
            keep_alive_interval: Duration::from_secs(1),
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let mut ws = ws_json(&server).await;
    let started = Instant::now();
    let ping = ws
        .next_text_message_within(Duration::from_secs(3))
        .await
        .expect("socket open");
    assert_eq!(
        ping.as_deref(),
        Some("{\"type\":6}"),
        "no keep-alive Ping within 3 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "Ping came too early: {:?}",
        started.elapsed()
    );
    ws.assert_echo("1", json!("after ping")).await;
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timeout_after_first_ping() {
    let server = start_with(
        HubOptions {
            client_timeout_interval: Duration::from_secs(1),
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let mut ws = ws_json(&server).await;
    ws.send_text("{\"type\":6}\u{1e}").await;
    let started = Instant::now();
    let close = ws
        .next_text_message_within(Duration::from_secs(4))
        .await
        .expect("socket open");
    assert_eq!(
        close.as_deref(),
        Some("{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}"),
        "no client-timeout Close within 4 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "client timeout fired too early: {:?}",
        started.elapsed()
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_timeout_without_ping() {
    let server = start_with(
        HubOptions {
            client_timeout_interval: Duration::from_secs(1),
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let mut ws = ws_json(&server).await;
    // Not armed until the client's first Ping (docs/protocol.md, "Keep-alive and timeouts"): 3 s of silence do not close it.
    let next = ws.next_text_message_within(Duration::from_secs(3)).await;
    assert_eq!(next, Ok(None), "the server sent something unexpected");
    ws.assert_echo("1", json!("alive")).await;
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_timeout_disposes_never_connected_connection() {
    let server = start_with(
        HubOptions::default(),
        ConnectionOptions {
            disconnect_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let (_, token) = negotiate(&server).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    poll(&server, &token)
        .await
        .assert_text(404, "No Connection with that ID");
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// WebSockets (docs/protocol.md, "WebSockets", "Close message")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_skip_negotiation() {
    let server = start().await;
    let mut ws = match ws_connect_query(&server, "").await {
        Ok(ws) => ws,
        Err(refused) => panic!("WebSocket without id refused: {refused:?}"),
    };
    ws.handshake_json().await;
    ws.assert_echo("1", json!({"skip": "negotiation"})).await;
    assert!(server.hub.context().connection_count() >= 1);
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_reaches_client() {
    let server = start().await;
    let mut ws = ws_json(&server).await;
    // A non-blocking invocation: no Completion is expected in any case.
    ws.send_text("{\"type\":1,\"target\":\"CloseWithBye\",\"arguments\":[]}\u{1e}")
        .await;
    assert_eq!(
        ws.next_text_message().await,
        "{\"type\":7,\"error\":\"bye\"}"
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

/// `HubCallerContext::close` documents: "The invocation in progress is abandoned and gets no
/// Completion." With an invocation id, the Close must therefore be the only message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_abandons_invocation_in_progress() {
    let server = start().await;
    let mut ws = ws_json(&server).await;
    ws.send_text(
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"CloseWithBye\",\"arguments\":[]}\u{1e}",
    )
    .await;
    assert_eq!(
        ws.next_text_message().await,
        "{\"type\":7,\"error\":\"bye\"}",
        "expected only the Close (the invocation is abandoned, no Completion)"
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}
