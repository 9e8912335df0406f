//! Bad input from clients: every request or message a misbehaving client can send must get ASP.NET's
//! status code and text (docs/protocol.md, "Negotiate versions", "Status codes", "Handshake", "Hub messages"), and must leave the server healthy.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use signalr_server::{ConnectionOptions, HubOptions, TransportType};

const HANDSHAKE_ERROR: &str = "An unexpected error occurred during connection handshake.";
const CLOSED_WITH_ERROR: &str = "Connection closed with an error.";

fn is_base64url_22(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[track_caller]
fn assert_negotiate_error(response: &HttpResponse, error: &str) {
    assert_eq!(
        response.status, 200,
        "negotiate errors are HTTP 200: {response:?}"
    );
    assert!(
        response
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "negotiate errors are JSON: {response:?}"
    );
    assert_eq!(response.json(), json!({ "error": error }), "{response:?}");
}

// ---------------------------------------------------------------------------------------------
// Negotiate (docs/protocol.md, "Negotiate")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_non_integer_version() {
    let server = start().await;
    let response = negotiate_raw(&server, "?negotiateVersion=abc").await;
    assert_negotiate_error(
        &response,
        "The client requested a non-integer protocol version.",
    );
    finish(&server).await;
}

/// ASP.NET parses `negotiateVersion` with `int.TryParse` (Int32): a value outside the Int32 range
/// is "non-integer", not a huge version clamped to 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_version_outside_int32_is_non_integer() {
    let server = start().await;
    for value in ["2147483648", "-2147483649", "99999999999"] {
        let response = negotiate_raw(&server, &format!("?negotiateVersion={value}")).await;
        assert_negotiate_error(
            &response,
            "The client requested a non-integer protocol version.",
        );
    }
    // The Int32 extremes themselves are integers.
    let response = negotiate_raw(&server, "?negotiateVersion=2147483647").await;
    assert_eq!(response.json()["negotiateVersion"], json!(1));
    let response = negotiate_raw(&server, "?negotiateVersion=-2147483648").await;
    assert_negotiate_error(
        &response,
        "The client requested version '-2147483648', but the server does not support this version.",
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_negative_version_is_below_minimum() {
    let server = start().await;
    let response = negotiate_raw(&server, "?negotiateVersion=-1").await;
    assert_negotiate_error(
        &response,
        "The client requested version '-1', but the server does not support this version.",
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_version_below_minimum() {
    let server = start_with(
        HubOptions::default(),
        ConnectionOptions {
            minimum_negotiate_version: 1,
            ..Default::default()
        },
    )
    .await;
    let response = negotiate_raw(&server, "?negotiateVersion=0").await;
    assert_negotiate_error(
        &response,
        "The client requested version '0', but the server does not support this version.",
    );
    // An absent negotiateVersion is version 0 (docs/protocol.md, "Negotiate versions").
    let response = negotiate_raw(&server, "").await;
    assert_negotiate_error(
        &response,
        "The client requested version '0', but the server does not support this version.",
    );
    // Version 1 is still fine.
    let response = negotiate_raw(&server, "?negotiateVersion=1").await;
    assert_eq!(response.json()["negotiateVersion"], json!(1));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_version_above_maximum_answers_1() {
    let server = start().await;
    let response = negotiate_raw(&server, "?negotiateVersion=7").await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["negotiateVersion"], json!(1), "{body}");
    assert!(body["connectionToken"].is_string(), "{body}");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_v0_and_v1_ids() {
    let server = start().await;

    let v0 = negotiate_raw(&server, "?negotiateVersion=0").await;
    assert_eq!(v0.status, 200);
    let v0 = v0.json();
    assert_eq!(v0["negotiateVersion"], json!(0), "{v0}");
    assert!(
        v0.get("connectionToken").is_none(),
        "v0 has no connectionToken: {v0}"
    );
    let id0 = v0["connectionId"].as_str().expect("v0 connectionId");
    assert!(is_base64url_22(id0), "v0 connectionId {id0:?}");

    let v1 = negotiate_raw(&server, "?negotiateVersion=1").await;
    assert_eq!(v1.status, 200);
    assert!(
        v1.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{v1:?}"
    );
    let v1 = v1.json();
    assert_eq!(v1["negotiateVersion"], json!(1), "{v1}");
    let id1 = v1["connectionId"].as_str().expect("v1 connectionId");
    let token1 = v1["connectionToken"].as_str().expect("v1 connectionToken");
    assert!(is_base64url_22(id1), "v1 connectionId {id1:?}");
    assert!(is_base64url_22(token1), "v1 connectionToken {token1:?}");
    assert_ne!(id1, token1, "the token must not be the public id");
    assert_ne!(id0, id1);
    assert_eq!(
        v1["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ]),
    );

    // v0: the id is used as `id`; v1: the token is, and the public id is not accepted (docs/protocol.md, "Negotiate response").
    let mut ws = ws_connect(&server, id0).await;
    ws.handshake_json().await;
    ws.assert_echo("v0", json!("zero")).await;
    ws.close().await;
    let refused = ws_connect_query(&server, &format!("?id={id1}")).await;
    assert_eq!(
        refused.err(),
        Some((404, "No Connection with that ID".to_owned())),
        "the v1 connectionId must not work as id"
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_with_get_is_405() {
    let server = start().await;
    let response = send(
        "GET negotiate",
        server
            .http
            .get(server.url("/hub/negotiate?negotiateVersion=1")),
    )
    .await;
    assert_eq!(response.status, 405, "{response:?}");
    // Other verbs on the endpoint itself are 405 too (docs/protocol.md, "Endpoints").
    let response = send(
        "PUT on the endpoint",
        server.http.put(server.url("/hub?id=x")),
    )
    .await;
    assert_eq!(response.status, 405, "{response:?}");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_query_keys_are_case_insensitive() {
    let server = start().await;
    let response = negotiate_raw(&server, "?NegotiateVersion=1").await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["negotiateVersion"], json!(1), "{body}");
    let token = body["connectionToken"].as_str().expect("connectionToken");
    // `ID` works like `id` too.
    let first = poll_query(&server, &format!("?ID={token}")).await;
    assert_eq!(first.status, 200, "{first:?}");
    finish(&server).await;
}

/// ASP.NET hands a repeated query key over as all its values joined with `,` (empty values left
/// out) and parses versions with `int.TryParse`; checked against the real ASP.NET Core 10 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_query_keys_are_joined_like_asp_net() {
    let server = start().await;
    // "1,1" is not an integer; "" + "1" is "1"; white space around the number is fine.
    let response = negotiate_raw(&server, "?negotiateVersion=1&NegotiateVersion=1").await;
    assert_negotiate_error(
        &response,
        "The client requested a non-integer protocol version.",
    );
    for query in [
        "?negotiateVersion=&negotiateVersion=1",
        "?negotiateVersion=%201%0A",
    ] {
        let response = negotiate_raw(&server, query).await;
        assert_eq!(response.json()["negotiateVersion"], json!(1), "{query}");
    }
    let (_, token) = negotiate(&server).await;
    // Two copies of the token are the text "T,T": no such connection.
    poll_query(&server, &format!("?id={token}&id={token}"))
        .await
        .assert_text(404, "No Connection with that ID");
    // Two empty ids are an empty (unknown) id, not a missing one.
    poll_query(&server, "?id=&id=")
        .await
        .assert_text(404, "No Connection with that ID");
    // An empty id next to the token is left out: this is the connection's first poll.
    let first = poll_query(&server, &format!("?id=&Id={token}")).await;
    assert_eq!(first.status, 200, "{first:?}");
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Transport requests (docs/protocol.md, "Status codes")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_id_is_400() {
    let server = start().await;
    send(
        "SSE without id",
        server
            .http
            .get(server.url("/hub"))
            .header("Accept", "text/event-stream"),
    )
    .await
    .assert_text(400, "Connection ID required");
    poll_query(&server, "")
        .await
        .assert_text(400, "Connection ID required");
    post_query(&server, "", "{}\u{1e}")
        .await
        .assert_text(400, "Connection ID required");
    delete_query(&server, "")
        .await
        .assert_text(400, "Connection ID required");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_id_is_404() {
    let server = start().await;
    let unknown = "?id=AAAAAAAAAAAAAAAAAAAAAA";
    let response = send(
        "SSE unknown id",
        server
            .http
            .get(server.url(&format!("/hub{unknown}")))
            .header("Accept", "text/event-stream"),
    )
    .await;
    response.assert_text(404, "No Connection with that ID");
    poll_query(&server, unknown)
        .await
        .assert_text(404, "No Connection with that ID");
    post_query(&server, unknown, "{}\u{1e}")
        .await
        .assert_text(404, "No Connection with that ID");
    delete_query(&server, unknown)
        .await
        .assert_text(404, "No Connection with that ID");
    let ws = ws_connect_query(&server, unknown).await;
    assert_eq!(
        ws.err(),
        Some((404, "No Connection with that ID".to_owned()))
    );
    finish(&server).await;
}

/// ASP.NET tests the `id` with `StringValues.IsNullOrEmpty`: an empty `id=` is a missing id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_id_is_missing_id() {
    let server = start().await;
    send(
        "SSE with empty id",
        server
            .http
            .get(server.url("/hub?id="))
            .header("Accept", "text/event-stream"),
    )
    .await
    .assert_text(400, "Connection ID required");
    poll_query(&server, "?id=")
        .await
        .assert_text(400, "Connection ID required");
    post_query(&server, "?id=", "{}\u{1e}")
        .await
        .assert_text(400, "Connection ID required");
    delete_query(&server, "?id=")
        .await
        .assert_text(400, "Connection ID required");
    finish(&server).await;
}

/// A WebSocket with an empty `id=` is a WebSocket without id: skip negotiation (ASP.NET
/// `GetOrCreateConnectionAsync`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_with_empty_id_skips_negotiation() {
    let server = start().await;
    let mut ws = match ws_connect_query(&server, "?id=").await {
        Ok(ws) => ws,
        Err(refused) => panic!("WebSocket with empty id refused: {refused:?}"),
    };
    ws.handshake_json().await;
    ws.assert_echo("1", json!("empty id")).await;
    ws.close().await;
    finish(&server).await;
}

/// ASP.NET looks the connection up (400 / 404) before it checks that the transport is enabled
/// (`EnsureConnectionStateAsync`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lookup_comes_before_transport_check() {
    let server = start_with(
        HubOptions::default(),
        ConnectionOptions {
            transports: vec![TransportType::WebSockets],
            ..Default::default()
        },
    )
    .await;
    poll_query(&server, "")
        .await
        .assert_text(400, "Connection ID required");
    poll_query(&server, "?id=AAAAAAAAAAAAAAAAAAAAAA")
        .await
        .assert_text(404, "No Connection with that ID");
    send(
        "SSE with unknown id",
        server
            .http
            .get(server.url("/hub?id=AAAAAAAAAAAAAAAAAAAAAA"))
            .header("Accept", "text/event-stream"),
    )
    .await
    .assert_text(404, "No Connection with that ID");
    // With a real connection the transport check answers.
    let (_, token) = negotiate(&server).await;
    send(
        "SSE on a WebSockets-only endpoint",
        server
            .http
            .get(server.url(&format!("/hub?id={token}")))
            .header("Accept", "text/event-stream"),
    )
    .await
    .assert_text(
        404,
        "ServerSentEvents transport not supported by this end point type",
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_then_sse_is_400() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let first = poll(&server, &token).await;
    assert_eq!(first.status, 200, "{first:?}");
    let response = send(
        "SSE after long polling",
        server
            .http
            .get(server.url(&format!("/hub?id={token}")))
            .header("Accept", "text/event-stream"),
    )
    .await;
    response.assert_text(400, "Cannot change transports mid-connection");
    let refused = ws_connect_query(&server, &format!("?id={token}")).await;
    assert_eq!(
        refused.err(),
        Some((400, "Cannot change transports mid-connection".to_owned()))
    );
    // The long-polling connection itself still works.
    let handshake = post(
        &server,
        &token,
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
    )
    .await;
    assert_eq!(handshake.status, 200, "{handshake:?}");
    let response = poll(&server, &token).await;
    assert_eq!((response.status, response.body.as_str()), (200, "{}\u{1e}"));
    assert_eq!(delete(&server, &token).await.status, 202);
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_then_long_polling_is_400() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut ws = ws_connect(&server, &token).await;
    ws.handshake_json().await;
    poll(&server, &token)
        .await
        .assert_text(400, "Cannot change transports mid-connection");
    // The WebSocket is unaffected.
    ws.assert_echo("1", json!("still here")).await;
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sse_is_409() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut first = sse(&server, &token).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.take(3).await, ":\r\n");
    let second = send(
        "second SSE",
        server
            .http
            .get(server.url(&format!("/hub?id={token}")))
            .header("Accept", "text/event-stream"),
    )
    .await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (409, ""),
        "{second:?}"
    );
    // The first stream still works.
    let handshake = post(
        &server,
        &token,
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
    )
    .await;
    assert_eq!(handshake.status, 200);
    assert_eq!(first.next_event().await, "data: {}\u{1e}\r\n\r\n");
    drop(first);
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_websocket_is_409() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut first = ws_connect(&server, &token).await;
    first.handshake_json().await;
    let second = ws_connect_query(&server, &format!("?id={token}")).await;
    assert_eq!(second.err(), Some((409, String::new())), "409 without body");
    first.assert_echo("1", json!([1, 2, 3])).await;
    first.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_to_websocket_connection_is_405() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut ws = ws_connect(&server, &token).await;
    ws.handshake_json().await;
    post(&server, &token, echo_invocation("x", &json!(1)))
        .await
        .assert_text(
            405,
            "POST requests are not allowed for WebSocket connections.",
        );
    ws.assert_echo("1", json!(2)).await;
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_sse_connection_is_400() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut stream = sse(&server, &token).await;
    assert_eq!(stream.take(3).await, ":\r\n");
    delete(&server, &token).await.assert_text(
        400,
        "Cannot terminate this connection using the DELETE endpoint.",
    );
    // The SSE connection is unaffected.
    post(
        &server,
        &token,
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
    )
    .await;
    assert_eq!(stream.next_event().await, "data: {}\u{1e}\r\n\r\n");
    drop(stream);
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_not_enabled_is_404() {
    let server = start_with(
        HubOptions::default(),
        ConnectionOptions {
            transports: vec![TransportType::WebSockets, TransportType::ServerSentEvents],
            ..Default::default()
        },
    )
    .await;
    let (_, token) = negotiate(&server).await;
    poll(&server, &token).await.assert_text(
        404,
        "LongPolling transport not supported by this end point type",
    );
    // Negotiate does not offer it either.
    let body = negotiate_raw(&server, "?negotiateVersion=1").await.json();
    let offered: Vec<&str> = body["availableTransports"]
        .as_array()
        .expect("availableTransports")
        .iter()
        .filter_map(|t| t["transport"].as_str())
        .collect();
    assert_eq!(offered, ["WebSockets", "ServerSentEvents"]);
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Handshake (docs/protocol.md, "Handshake")
// ---------------------------------------------------------------------------------------------

/// Sends `request` as the handshake and expects `{"error": error}` followed by the close.
async fn expect_handshake_error(server: &TestServer, request: &str, error: &str) {
    let (_, token) = negotiate(server).await;
    let mut ws = ws_connect(server, &token).await;
    ws.send_text(request).await;
    let response = ws.next_text_message().await;
    assert_eq!(
        serde_json::from_str::<Value>(&response).expect("handshake response is JSON"),
        json!({ "error": error }),
        "handshake response {response:?}"
    );
    let code = ws.expect_close().await;
    assert_eq!(code, Some(1000), "close code after a failed handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshake() {
    let server = start().await;
    expect_handshake_error(&server, "{\"protocol\":\u{1e}", HANDSHAKE_ERROR).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_and_version() {
    let server = start().await;
    expect_handshake_error(
        &server,
        "{\"protocol\":\"foo\",\"version\":1}\u{1e}",
        "The protocol 'foo' is not supported.",
    )
    .await;
    expect_handshake_error(
        &server,
        "{\"protocol\":\"json\",\"version\":3}\u{1e}",
        "The server does not support version 3 of the 'json' protocol.",
    )
    .await;
    finish(&server).await;
}

/// ASP.NET's `DefaultHubProtocolResolver` matches protocol names with `OrdinalIgnoreCase`, and
/// its error texts use the protocol's own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_protocol_name_is_case_insensitive() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut ws = ws_connect(&server, &token).await;
    ws.send_text("{\"protocol\":\"JSON\",\"version\":1}\u{1e}")
        .await;
    assert_eq!(ws.next_text_message().await, "{}");
    ws.assert_echo("1", json!("upper case")).await;
    ws.close().await;
    expect_handshake_error(
        &server,
        "{\"protocol\":\"Json\",\"version\":3}\u{1e}",
        "The server does not support version 3 of the 'json' protocol.",
    )
    .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_extra_fields_and_version_2_are_accepted() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut ws = ws_connect(&server, &token).await;
    ws.send_text("{\"version\":2,\"extra\":[1,{}],\"protocol\":\"json\"}\u{1e}")
        .await;
    assert_eq!(ws.next_text_message().await, "{}");
    ws.assert_echo("1", json!(null)).await;
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_over_maximum_size_is_canceled() {
    let server = start_with(
        HubOptions {
            maximum_receive_message_size: Some(1024),
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let padding = "p".repeat(2000);
    expect_handshake_error(
        &server,
        &format!("{{\"protocol\":\"json\",\"version\":1,\"pad\":\"{padding}\"}}\u{1e}"),
        "Handshake was canceled.",
    )
    .await;
    finish(&server).await;
}

/// Runs on a current-thread runtime: the hub task then queues the Completion right behind the
/// handshake response before the transport's writer runs, which makes the outcome deterministic.
#[tokio::test]
async fn handshake_and_invocation_in_one_frame() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut ws = ws_connect(&server, &token).await;
    ws.send_text(&format!(
        "{{\"protocol\":\"json\",\"version\":1}}{RS}{}",
        echo_invocation("1", &json!("same frame"))
    ))
    .await;
    assert_eq!(ws.next_text_message().await, "{}");
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "1", "result": "same frame"})
    );
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_over_sse_is_refused() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut stream = sse(&server, &token).await;
    assert_eq!(stream.take(3).await, ":\r\n");
    let response = post(
        &server,
        &token,
        "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}",
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        stream.next_event().await,
        "data: {\"error\":\"Cannot use the 'messagepack' protocol on the current transport. \
         The transport does not support 'Binary' transfer format.\"}\u{1e}\r\n\r\n"
    );
    stream.expect_end().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout() {
    let server = start_with(
        HubOptions {
            handshake_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let (_, token) = negotiate(&server).await;
    let mut ws = ws_connect(&server, &token).await;
    let started = std::time::Instant::now();
    let response = ws.next_text_message().await;
    assert_eq!(response, r#"{"error":"Handshake was canceled."}"#);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "handshake timeout fired too early: {:?}",
        started.elapsed()
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Hub messages (docs/protocol.md, "Hub messages")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_after_handshake_closes_with_error() {
    let server = start().await;
    let mut ws = ws_json(&server).await;
    ws.send_text("{\"type\":1,\"target\":\u{1e}").await;
    // Exact bytes: .NET field order, `allowReconnect` written because it is true (docs/protocol.md, "Close message").
    assert_eq!(
        ws.next_text_message().await,
        r#"{"type":7,"error":"Connection closed with an error.","allowReconnect":true}"#
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_with_detailed_errors() {
    let server = start_with(
        HubOptions {
            enable_detailed_errors: true,
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let mut ws = ws_json(&server).await;
    ws.send_text("not json\u{1e}").await;
    let close = ws.next_json().await;
    assert_eq!(close["type"], json!(7), "{close}");
    assert_eq!(close["allowReconnect"], json!(true), "{close}");
    let error = close["error"].as_str().expect("error text");
    assert!(
        error.starts_with("Connection closed with an error. InvalidDataException:"),
        "{error:?}"
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_without_target_closes_with_error() {
    let server = start().await;
    let mut ws = ws_json(&server).await;
    // Valid JSON, but an Invocation needs `target` (docs/protocol.md, "JSON encoding").
    ws.send_text("{\"type\":1,\"invocationId\":\"1\",\"arguments\":[]}\u{1e}")
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"type": 7, "error": CLOSED_WITH_ERROR, "allowReconnect": true})
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

/// Negotiates, opens a WebSocket and completes a MessagePack handshake (response in a binary
/// frame, docs/protocol.md, "Handshake").
async fn ws_msgpack(server: &TestServer) -> Ws {
    let (_, token) = negotiate(server).await;
    let mut ws = ws_connect(server, &token).await;
    ws.send_text("{\"protocol\":\"messagepack\",\"version\":1}\u{1e}")
        .await;
    match ws.next_frame().await {
        Frame::Binary(bytes) => {
            assert!(
                bytes.starts_with(b"{}\x1e"),
                "MessagePack handshake response {bytes:?}"
            );
            ws.buffer.extend_from_slice(&bytes[3..]);
        }
        other => panic!("expected the handshake response in a binary frame, got {other:?}"),
    }
    ws
}

/// Expects a MessagePack Close `[7, "Connection closed with an error.", true]`, then the close.
async fn expect_msgpack_error_close(ws: &mut Ws) {
    let close = msgpack_to_json(&ws.next_msgpack().await);
    assert_eq!(close, json!([7, CLOSED_WITH_ERROR, true]));
    assert_eq!(ws.expect_close().await, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_oversized_varint_closes_with_error() {
    let server = start().await;
    let mut ws = ws_msgpack(&server).await;
    ws.send_binary(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    expect_msgpack_error_close(&mut ws).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_message_split_across_frames() {
    let server = start().await;
    let mut ws = ws_msgpack(&server).await;
    let framed = varint_framed(&msgpack_echo_invocation("7", "split across frames"));
    let (head, tail) = framed.split_at(1 + (framed.len() - 1) / 2);
    ws.send_binary(head).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send_binary(tail).await;
    let completion = msgpack_to_json(&ws.next_msgpack().await);
    assert_eq!(completion, json!([3, {}, "7", 3, "split across frames"]));

    // A prefix alone in one frame, the body in the next.
    let framed = varint_framed(&msgpack_echo_invocation("8", "prefix alone"));
    ws.send_binary(&framed[..1]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ws.send_binary(&framed[1..]).await;
    let completion = msgpack_to_json(&ws.next_msgpack().await);
    assert_eq!(completion, json!([3, {}, "8", 3, "prefix alone"]));
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_message_over_maximum_size() {
    let server = start_with(
        HubOptions {
            maximum_receive_message_size: Some(1024),
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let mut ws = ws_msgpack(&server).await;
    // Under the limit: fine.
    let small = "s".repeat(900);
    ws.send_binary(&varint_framed(&msgpack_echo_invocation("1", &small)))
        .await;
    let completion = msgpack_to_json(&ws.next_msgpack().await);
    assert_eq!(completion, json!([3, {}, "1", 3, small]));
    // Over it: Close with an error.
    let big = "b".repeat(2000);
    ws.send_binary(&varint_framed(&msgpack_echo_invocation("2", &big)))
        .await;
    expect_msgpack_error_close(&mut ws).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_is_ignored() {
    let server = start().await;
    let mut ws = ws_json(&server).await;
    let frame = format!(
        "{{\"type\":99,\"whatever\":[1,2]}}{RS}{}",
        echo_invocation("1", &json!("after unknown"))
    );
    ws.send_text(&frame).await;
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "1", "result": "after unknown"})
    );
    ws.close().await;
    finish(&server).await;
}

/// An Echo invocation whose text, RS included, is exactly `total` bytes.
fn echo_of_size(invocation_id: &str, total: usize) -> String {
    let empty = echo_invocation(invocation_id, &json!("")).len();
    let text = echo_invocation(invocation_id, &json!("x".repeat(total - empty)));
    assert_eq!(text.len(), total);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_message_size_limit() {
    let server = start_with(
        HubOptions {
            maximum_receive_message_size: Some(1024),
            ..Default::default()
        },
        ConnectionOptions::default(),
    )
    .await;
    let mut ws = ws_json(&server).await;
    // 1023 bytes with the RS: just under the limit.
    ws.send_text(&echo_of_size("1", 1023)).await;
    let completion = ws.next_json_skip_pings().await;
    assert_eq!(completion["invocationId"], json!("1"), "{completion}");
    assert_eq!(
        completion["result"].as_str().map(str::len),
        Some(1023 - echo_invocation("1", &json!("")).len())
    );
    // 1025 bytes: over.
    ws.send_text(&echo_of_size("2", 1025)).await;
    assert_eq!(
        ws.next_json().await,
        json!({"type": 7, "error": CLOSED_WITH_ERROR, "allowReconnect": true})
    );
    assert_eq!(ws.expect_close().await, Some(1000));

    // The same message split across many small frames is limited the same way.
    let mut ws = ws_json(&server).await;
    let text = echo_of_size("3", 2000);
    for chunk in text.as_bytes().chunks(100) {
        ws.send_text(std::str::from_utf8(chunk).expect("ASCII"))
            .await;
    }
    assert_eq!(
        ws.next_json().await,
        json!({"type": 7, "error": CLOSED_WITH_ERROR, "allowReconnect": true})
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_messages_in_one_frame() {
    let server = start().await;
    let mut ws = ws_json(&server).await;
    let frame = format!(
        "{}{}{}",
        echo_invocation("1", &json!("first")),
        "{\"type\":6}\u{1e}",
        echo_invocation("2", &json!({"second": true})),
    );
    ws.send_text(&frame).await;
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "1", "result": "first"})
    );
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "2", "result": {"second": true}})
    );
    // And a message split across two frames, with the next one starting in the second.
    let first = echo_invocation("3", &json!("three"));
    let second = echo_invocation("4", &json!("four"));
    let (a, b) = first.split_at(10);
    ws.send_text(a).await;
    ws.send_text(&format!("{b}{second}")).await;
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "3", "result": "three"})
    );
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "4", "result": "four"})
    );
    ws.close().await;
    finish(&server).await;
}
