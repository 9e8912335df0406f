//! Helpers of `hub_runtime.rs`: serving a custom hub next to the `Echo` method the end-of-test
//! health check needs, raw JSON and MessagePack clients that know their connection id, a shared
//! event log, and catching a start-up panic without the panic counter seeing it.

#![allow(dead_code)]

use std::future::IntoFuture;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use signalr_server::{Hub, HubBuilder, HubCallerContext};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{
    RS, TestServer, Ws, install_panic_hook, msgpack_to_json, varint_framed, within,
    ws_connect_query,
};

/// How long a client waits to conclude that nothing was sent to it.
pub const SILENCE: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// Adds `Echo(value)` (used by [`crate::common::assert_healthy`]) and builds the hub.
pub fn build(builder: HubBuilder) -> Hub {
    builder
        .method(
            "Echo",
            |_: HubCallerContext, value: Value| async move { value },
        )
        .build()
}

/// Serves `builder` (plus `Echo`) at `/hub`.
pub async fn serve(builder: HubBuilder) -> TestServer {
    let hub = build(builder);
    let router = axum::Router::new().nest("/hub", hub.router());
    serve_router(hub, router).await
}

/// Serves `router`; `hub` is the one mounted at `/hub`.
pub async fn serve_router(hub: Hub, router: axum::Router) -> TestServer {
    install_panic_hook();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(signalr_server::serve(listener, router).into_future());
    TestServer {
        addr,
        hub,
        http: reqwest::Client::new(),
    }
}

/// Polls `condition` every 10 ms until it holds; fails the test after 5 s.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// A shared log
// ---------------------------------------------------------------------------------------------

/// Events recorded by hub code, read by the test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Appends an event.
    pub fn push(&self, event: impl Into<String>) {
        self.0.lock().expect("log lock").push(event.into());
    }

    /// The events so far.
    pub fn events(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
    }

    /// Waits until at least `n` events were recorded and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        eventually(&format!("{n} logged events"), || self.events().len() >= n).await;
        self.events()
    }
}

// ---------------------------------------------------------------------------------------------
// JSON clients
// ---------------------------------------------------------------------------------------------

/// A raw WebSocket client that completed the JSON handshake, with its public connection id.
pub struct Client {
    /// The connection id (negotiate `connectionId`).
    pub id: String,
    /// The socket.
    pub ws: Ws,
}

/// Negotiates on `/hub{path_suffix}` (`""` or e.g. `"2"` for `/hub2`) with `extra_query`
/// (`&k=v...`, or empty) and opens the WebSocket; returns `(connectionId, socket)`.
pub async fn open(server: &TestServer, path_suffix: &str, extra_query: &str) -> (String, Ws) {
    let url = server.url(&format!(
        "/hub{path_suffix}/negotiate?negotiateVersion=1{extra_query}"
    ));
    let response = within("negotiate", async {
        server
            .http
            .post(url)
            .send()
            .await
            .expect("negotiate request")
            .text()
            .await
            .expect("negotiate body")
    })
    .await;
    let response: Value = serde_json::from_str(&response).expect("negotiate JSON");
    let id = response["connectionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no connectionId: {response}"))
        .to_owned();
    let token = response["connectionToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no connectionToken: {response}"));
    let query = format!("{path_suffix}?id={token}{extra_query}");
    let ws = match ws_connect_query(server, &query).await {
        Ok(ws) => ws,
        Err((status, body)) => panic!("WebSocket upgrade refused: {status} {body:?}"),
    };
    (id, ws)
}

/// Negotiates, opens a WebSocket, completes the JSON handshake and makes one `Echo` round trip
/// (so the connection is registered with the hub and `on_connected` has run).
pub async fn connect(server: &TestServer) -> Client {
    connect_with(server, "", "").await
}

/// [`connect`] with the `access_token` query parameter (a user for the test authenticator).
pub async fn connect_as(server: &TestServer, user: &str) -> Client {
    connect_with(server, "", &format!("&access_token={user}")).await
}

/// [`connect`] on `/hub{path_suffix}` with `extra_query`.
pub async fn connect_with(server: &TestServer, path_suffix: &str, extra_query: &str) -> Client {
    let mut client = connect_raw(server, path_suffix, extra_query).await;
    client
        .call("connect", "Echo", json!(["ready"]))
        .await
        .assert_result(json!("ready"));
    client
}

/// Negotiates, opens a WebSocket and completes the JSON handshake; nothing else.
pub async fn connect_raw(server: &TestServer, path_suffix: &str, extra_query: &str) -> Client {
    let (id, mut ws) = open(server, path_suffix, extra_query).await;
    ws.handshake_json().await;
    Client { id, ws }
}

/// A received Completion, for short assertions.
#[derive(Debug)]
pub struct Received(pub Value);

impl Received {
    /// Asserts `{"type":3,"invocationId":..,"result":expected}` (id not checked).
    #[track_caller]
    pub fn assert_result(&self, expected: Value) {
        assert_eq!(self.0["type"], json!(3), "not a Completion: {}", self.0);
        assert!(
            self.0.get("error").is_none(),
            "Completion error: {}",
            self.0
        );
        assert_eq!(self.0.get("result"), Some(&expected), "{}", self.0);
    }

    /// Asserts the Completion of a method without a result: `"result": null` and no error, as
    /// ASP.NET answers every non-streaming invocation (id not checked).
    #[track_caller]
    pub fn assert_void(&self) {
        assert_eq!(self.0["type"], json!(3), "not a Completion: {}", self.0);
        assert!(
            self.0.get("result") == Some(&Value::Null) && self.0.get("error").is_none(),
            "expected the Completion of a void method: {}",
            self.0
        );
    }

    /// Asserts a Completion with `error` (id not checked).
    #[track_caller]
    pub fn assert_error(&self, expected: &str) {
        assert_eq!(self.0["type"], json!(3), "not a Completion: {}", self.0);
        assert!(self.0.get("result").is_none(), "{}", self.0);
        assert_eq!(self.0["error"], json!(expected), "{}", self.0);
    }
}

impl Client {
    /// Sends one JSON hub message (RS appended).
    pub async fn send(&mut self, message: Value) {
        self.ws.send_text(&format!("{message}{RS}")).await;
    }

    /// Sends an Invocation with `invocation_id`.
    pub async fn invoke(&mut self, invocation_id: &str, target: &str, arguments: Value) {
        self.send(json!({
            "type": 1,
            "invocationId": invocation_id,
            "target": target,
            "arguments": arguments,
        }))
        .await;
    }

    /// Sends a non-blocking Invocation (no id).
    pub async fn send_call(&mut self, target: &str, arguments: Value) {
        self.send(json!({"type": 1, "target": target, "arguments": arguments}))
            .await;
    }

    /// Sends a StreamInvocation.
    pub async fn stream(&mut self, invocation_id: &str, target: &str, arguments: Value) {
        self.send(json!({
            "type": 4,
            "invocationId": invocation_id,
            "target": target,
            "arguments": arguments,
        }))
        .await;
    }

    /// Invokes and returns the next message, which must be the Completion of `invocation_id`.
    pub async fn call(&mut self, invocation_id: &str, target: &str, arguments: Value) -> Received {
        self.invoke(invocation_id, target, arguments).await;
        let message = self.recv().await;
        assert_eq!(
            (&message["type"], &message["invocationId"]),
            (&json!(3), &json!(invocation_id)),
            "expected the Completion of {invocation_id}, got {message}"
        );
        Received(message)
    }

    /// The next hub message (Pings skipped).
    pub async fn recv(&mut self) -> Value {
        self.ws.next_json_skip_pings().await
    }

    /// Asserts that the next hub message is exactly `expected`.
    pub async fn expect(&mut self, expected: Value) {
        let message = self.recv().await;
        assert_eq!(message, expected, "unexpected message on {}", self.id);
    }

    /// Reads messages until one satisfies `last`; returns all of them (the last included).
    pub async fn recv_until(&mut self, mut last: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let message = self.recv().await;
            let done = last(&message);
            messages.push(message);
            if done {
                return messages;
            }
        }
    }

    /// Asserts that nothing (but Pings) arrives within [`SILENCE`].
    pub async fn expect_silence(&mut self) {
        loop {
            match self.ws.next_text_message_within(SILENCE).await {
                Ok(None) => return,
                Ok(Some(text)) if text == r#"{"type":6}"# => {}
                Ok(Some(text)) => panic!(
                    "connection {} received an unexpected message: {text}",
                    self.id
                ),
                Err(frame) => panic!("connection {} closed unexpectedly: {frame:?}", self.id),
            }
        }
    }

    /// Sends a Close message and closes the socket.
    pub async fn close(mut self) {
        self.send(json!({"type": 7})).await;
        self.ws.close().await;
    }
}

/// Asserts silence on every client at once (one [`SILENCE`] window for all).
pub async fn expect_silence_all(clients: &mut [&mut Client]) {
    futures_util::future::join_all(clients.iter_mut().map(|c| c.expect_silence())).await;
}

// ---------------------------------------------------------------------------------------------
// WebSocket with custom upgrade-request headers
// ---------------------------------------------------------------------------------------------

/// A JSON hub connection opened with extra headers on the WebSocket upgrade request.
pub struct HeaderClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    buffer: String,
}

impl HeaderClient {
    /// Negotiates, upgrades `/hub?id=<token>{extra_query}` with `headers`, does the handshake.
    pub async fn connect(server: &TestServer, extra_query: &str, headers: &[(&str, &str)]) -> Self {
        use futures_util::SinkExt;
        let url = server.url(&format!("/hub/negotiate?negotiateVersion=1{extra_query}"));
        let response: Value = within("negotiate", async {
            let response = server.http.post(url).send().await.expect("negotiate");
            let body = response.text().await.expect("negotiate body");
            serde_json::from_str(&body).expect("negotiate JSON")
        })
        .await;
        let token = response["connectionToken"].as_str().expect("token");
        let mut request = server
            .ws_url(&format!("/hub?id={token}{extra_query}"))
            .into_client_request()
            .expect("WebSocket request");
        for (name, value) in headers {
            request.headers_mut().append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let (socket, _) = within(
            "WebSocket connect",
            tokio_tungstenite::connect_async(request),
        )
        .await
        .expect("WebSocket upgrade");
        let mut client = HeaderClient {
            socket,
            buffer: String::new(),
        };
        within(
            "send handshake",
            client.socket.send(Message::text(format!(
                r#"{{"protocol":"json","version":1}}{RS}"#
            ))),
        )
        .await
        .expect("send handshake");
        assert_eq!(client.next_text().await, "{}");
        client
    }

    async fn next_text(&mut self) -> String {
        use futures_util::StreamExt;
        loop {
            if let Some(pos) = self.buffer.find(RS) {
                let text = self.buffer[..pos].to_owned();
                self.buffer.drain(..=pos);
                return text;
            }
            match within("WebSocket message", self.socket.next()).await {
                Some(Ok(Message::Text(text))) => self.buffer.push_str(text.as_str()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("unexpected WebSocket event {other:?}"),
            }
        }
    }

    /// Invokes `target` without arguments and returns its Completion.
    pub async fn call(&mut self, invocation_id: &str, target: &str) -> Value {
        use futures_util::SinkExt;
        let message = json!({
            "type": 1,
            "invocationId": invocation_id,
            "target": target,
            "arguments": [],
        });
        within(
            "send invocation",
            self.socket.send(Message::text(format!("{message}{RS}"))),
        )
        .await
        .expect("send invocation");
        serde_json::from_str(&self.next_text().await).expect("JSON message")
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.close(None)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// MessagePack
// ---------------------------------------------------------------------------------------------

/// Encodes a JSON value as MessagePack (the subset hub messages use).
pub fn to_msgpack(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => rmp::encode::write_nil(out).expect("encode"),
        Value::Bool(flag) => rmp::encode::write_bool(out, *flag).expect("encode"),
        Value::Number(number) => {
            if let Some(n) = number.as_u64() {
                rmp::encode::write_uint(out, n).expect("encode");
            } else if let Some(n) = number.as_i64() {
                rmp::encode::write_sint(out, n).expect("encode");
            } else {
                let n = number.as_f64().expect("a number");
                rmp::encode::write_f64(out, n).expect("encode");
            }
        }
        Value::String(text) => rmp::encode::write_str(out, text).expect("encode"),
        Value::Array(items) => {
            let len = u32::try_from(items.len()).expect("array length");
            rmp::encode::write_array_len(out, len).expect("encode");
            for item in items {
                to_msgpack(item, out);
            }
        }
        Value::Object(map) => {
            let len = u32::try_from(map.len()).expect("map length");
            rmp::encode::write_map_len(out, len).expect("encode");
            for (key, item) in map {
                rmp::encode::write_str(out, key).expect("encode");
                to_msgpack(item, out);
            }
        }
    }
}

/// A raw WebSocket client that completed the MessagePack handshake.
pub struct MsgpackClient {
    /// The connection id.
    pub id: String,
    /// The socket.
    pub ws: Ws,
}

/// Negotiates, opens a WebSocket and completes the MessagePack handshake.
pub async fn connect_msgpack(server: &TestServer) -> MsgpackClient {
    let (id, ws) = open(server, "", "").await;
    let mut client = MsgpackClient { id, ws };
    client
        .ws
        .send_text(&format!(r#"{{"protocol":"messagepack","version":1}}{RS}"#))
        .await;
    // The response `{}` + RS arrives in a binary frame; whatever follows it stays buffered.
    assert_eq!(client.ws.next_text_message().await, "{}");
    client
}

impl MsgpackClient {
    /// Sends one message given as JSON (e.g. `[1, {}, "1", "Add", [1, 2], []]`), VarInt-framed.
    pub async fn send(&mut self, message: Value) {
        let mut body = Vec::new();
        to_msgpack(&message, &mut body);
        self.ws.send_binary(&varint_framed(&body)).await;
    }

    /// The next message decoded to JSON (Pings skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = msgpack_to_json(&self.ws.next_msgpack().await);
            if message != json!([6]) {
                return message;
            }
        }
    }

    /// Asserts that the next message is exactly `expected`.
    pub async fn expect(&mut self, expected: Value) {
        let message = self.recv().await;
        assert_eq!(message, expected, "unexpected MessagePack message");
    }
}

// ---------------------------------------------------------------------------------------------
// Start-up panics
// ---------------------------------------------------------------------------------------------

/// Runs `f`, which is expected to panic, on this thread and returns the panic message. The
/// panic is hidden from the panic counter of [`crate::common::assert_no_panics`] (and from the
/// default hook's output); panics of other threads meanwhile are still counted.
pub fn expect_panic<R>(f: impl FnOnce() -> R) -> String {
    install_panic_hook();
    let this = std::thread::current().id();
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let forward = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != this {
            forward(info);
        }
    }));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    drop(std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| previous(info)));
    match result {
        Ok(_) => panic!("expected a panic"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    }
}
