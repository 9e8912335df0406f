//! Shared helpers of the integration tests: an in-process test server, raw protocol clients for
//! every transport (WebSockets, Server-Sent Events, long polling) and the end-of-test checks.
//!
//! Every test ends with [`finish`]: a fresh connection must still work ([`assert_healthy`]) and no
//! panic may have happened outside the test code ([`assert_no_panics`]), because a panic inside a
//! spawned server task is swallowed by tokio and would otherwise go unnoticed.

#![allow(dead_code)]

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signalr_server::{ConnectionOptions, Hub, HubCallerContext, HubOptions};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The record separator ending every JSON hub message and the handshake (docs/protocol.md, "Text framing").
pub const RS: char = '\u{1e}';

/// Upper bound for any single wait on the server; a hang fails the test instead of blocking it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Panic accounting
// ---------------------------------------------------------------------------------------------

static PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// Whether a panic location is inside the test code itself (a failing assertion of a test), as
/// opposed to the server, its dependencies or the runtime.
fn is_test_code(file: &str) -> bool {
    let file = file.replace('\\', "/");
    file.starts_with("tests/") || file.contains("signalr-server/tests/")
}

/// Installs (once per test process) a panic hook that counts every panic happening outside the
/// test files, then runs the default hook. Panics of failing test assertions are not counted, so
/// one failing test does not make every other test of the binary fail too.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location();
            if !location.is_some_and(|l| is_test_code(l.file())) {
                PANICS.fetch_add(1, Ordering::SeqCst);
                let thread = std::thread::current();
                let text = format!(
                    "panic on thread {:?} at {}: {}",
                    thread.name().unwrap_or("<unnamed>"),
                    location.map_or_else(|| "<unknown>".to_owned(), ToString::to_string),
                    panic_text(info),
                );
                if let Ok(mut messages) = PANIC_MESSAGES.lock() {
                    messages.push(text);
                }
            }
            default(info);
        }));
    });
}

fn panic_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    if let Some(text) = info.payload().downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = info.payload().downcast_ref::<String>() {
        text.clone()
    } else {
        "<non-string payload>".to_owned()
    }
}

/// Fails when any panic happened outside the test code since the process started.
pub fn assert_no_panics() {
    let count = PANICS.load(Ordering::SeqCst);
    let messages = PANIC_MESSAGES.lock().map(|m| m.clone()).unwrap_or_default();
    assert_eq!(count, 0, "server-side panics happened: {messages:#?}");
}

// ---------------------------------------------------------------------------------------------
// Test server
// ---------------------------------------------------------------------------------------------

/// A hub served over HTTP on `127.0.0.1:<random port>` at `/hub`.
pub struct TestServer {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// The hub (for `context().connection_count()`).
    pub hub: Hub,
    /// A plain HTTP client.
    pub http: reqwest::Client,
}

/// Starts a server with default options.
pub async fn start() -> TestServer {
    start_with(HubOptions::default(), ConnectionOptions::default()).await
}

/// Starts a server with the given options. Hub methods:
/// * `Echo(value)` returns `value`;
/// * `CloseWithBye()` closes the caller with `hub.close(Some("bye"), false)`.
pub async fn start_with(options: HubOptions, connection_options: ConnectionOptions) -> TestServer {
    install_panic_hook();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let hub = Hub::builder()
        .options(options)
        .connection_options(connection_options)
        .method("Echo", |_: HubCallerContext, v: Value| async move { v })
        .method("CloseWithBye", |hub: HubCallerContext| async move {
            hub.close(Some("bye".into()), false);
        })
        .build();
    let app = axum::Router::new().nest("/hub", hub.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(signalr_server::serve(listener, app).into_future());
    TestServer {
        addr,
        hub,
        http: reqwest::Client::new(),
    }
}

impl TestServer {
    /// `http://addr{path_and_query}`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// `ws://addr{path_and_query}`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }
}

/// Runs `future` with [`STEP_TIMEOUT`]; a timeout fails the test with `what`.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(STEP_TIMEOUT, what, future).await
}

/// Runs `future` with `limit`; a timeout fails the test with `what`.
pub async fn within_for<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for: {what}"))
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP
// ---------------------------------------------------------------------------------------------

/// Reads a response head (up to the blank line) and as much of the body as came with it.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    within("a response head", async {
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read response head");
            assert!(
                n > 0,
                "connection closed before a response head: {received:?}"
            );
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads until the server closes the connection (EOF or reset), at most `limit`; returns the
/// time it took and the bytes read meanwhile.
pub async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    within_for(limit, "the server to close the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(error) => panic!("unexpected read error: {error}"),
            }
        }
    })
    .await;
    (started.elapsed(), received)
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as text (lossy).
    pub body: String,
}

impl HttpResponse {
    async fn read(response: reqwest::Response) -> HttpResponse {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.expect("read response body");
        HttpResponse {
            status,
            content_type,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Asserts an ASP.NET `text/plain` error response (docs/protocol.md, "Status codes").
    #[track_caller]
    pub fn assert_text(&self, status: u16, body: &str) {
        assert_eq!(
            (self.status, self.body.as_str()),
            (status, body),
            "unexpected response {self:?}"
        );
        let content_type = self.content_type.as_deref().unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain"),
            "expected a text/plain body, got {self:?}"
        );
    }

    /// The body parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {self:?}"))
    }
}

/// Sends `request` and reads the whole response, within [`STEP_TIMEOUT`].
pub async fn send(what: &str, request: reqwest::RequestBuilder) -> HttpResponse {
    within(what, async {
        let response = request.send().await.expect("HTTP request");
        HttpResponse::read(response).await
    })
    .await
}

/// `POST /hub/negotiate{query}` (query including `?`, or empty).
pub async fn negotiate_raw(server: &TestServer, query: &str) -> HttpResponse {
    let url = server.url(&format!("/hub/negotiate{query}"));
    send("negotiate", server.http.post(url)).await
}

/// Negotiates version 1 and returns `(connectionId, connectionToken)`.
pub async fn negotiate(server: &TestServer) -> (String, String) {
    let response = negotiate_raw(server, "?negotiateVersion=1").await;
    assert_eq!(response.status, 200, "negotiate failed: {response:?}");
    let json = response.json();
    let id = json["connectionId"]
        .as_str()
        .expect("connectionId in negotiate response")
        .to_owned();
    let token = json["connectionToken"]
        .as_str()
        .expect("connectionToken in negotiate response")
        .to_owned();
    (id, token)
}

/// `GET /hub?id={token}` without `Accept: text/event-stream`: a long poll.
pub async fn poll(server: &TestServer, token: &str) -> HttpResponse {
    poll_query(server, &format!("?id={token}")).await
}

/// A long poll with an explicit query (`?...` or empty).
pub async fn poll_query(server: &TestServer, query: &str) -> HttpResponse {
    let url = server.url(&format!("/hub{query}"));
    send("long poll", server.http.get(url)).await
}

/// A long poll that may legitimately wait up to `limit`.
pub async fn poll_for(server: &TestServer, token: &str, limit: Duration) -> HttpResponse {
    let url = server.url(&format!("/hub?id={token}"));
    let request = server.http.get(url);
    within_for(limit, "long poll", async {
        let response = request.send().await.expect("HTTP request");
        HttpResponse::read(response).await
    })
    .await
}

/// `POST /hub{query}` with `body`.
pub async fn post_query(
    server: &TestServer,
    query: &str,
    body: impl Into<Vec<u8>>,
) -> HttpResponse {
    let url = server.url(&format!("/hub{query}"));
    send("POST", server.http.post(url).body(body.into())).await
}

/// `POST /hub?id={token}` with `body`.
pub async fn post(server: &TestServer, token: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
    post_query(server, &format!("?id={token}"), body).await
}

/// `DELETE /hub{query}`.
pub async fn delete_query(server: &TestServer, query: &str) -> HttpResponse {
    let url = server.url(&format!("/hub{query}"));
    send("DELETE", server.http.delete(url)).await
}

/// `DELETE /hub?id={token}`.
pub async fn delete(server: &TestServer, token: &str) -> HttpResponse {
    delete_query(server, &format!("?id={token}")).await
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------------

/// An open SSE response whose body is read incrementally.
pub struct Sse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    /// Bytes received and not consumed yet.
    pub buffer: Vec<u8>,
}

/// `GET /hub{query}` with `Accept: text/event-stream`; returns once the headers arrived.
pub async fn sse_query(server: &TestServer, query: &str) -> Sse {
    let url = server.url(&format!("/hub{query}"));
    let request = server
        .http
        .get(url)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    let response = within("SSE response headers", request.send())
        .await
        .expect("SSE request");
    Sse {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        response,
        buffer: Vec::new(),
    }
}

/// `GET /hub?id={token}` with `Accept: text/event-stream`.
pub async fn sse(server: &TestServer, token: &str) -> Sse {
    sse_query(server, &format!("?id={token}")).await
}

impl Sse {
    /// Reads the next body chunk into the buffer; `false` at the end of the body.
    async fn fill(&mut self) -> bool {
        match within("SSE data", self.response.chunk()).await {
            Ok(Some(chunk)) => {
                self.buffer.extend_from_slice(&chunk);
                true
            }
            Ok(None) => false,
            Err(err) => panic!("SSE body error: {err}"),
        }
    }

    /// Reads until the buffer holds at least `n` bytes, then takes exactly `n`.
    pub async fn take(&mut self, n: usize) -> String {
        while self.buffer.len() < n {
            assert!(
                self.fill().await,
                "SSE stream ended early; have {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
        }
        let taken: Vec<u8> = self.buffer.drain(..n).collect();
        String::from_utf8(taken).expect("SSE stream is UTF-8")
    }

    /// The next complete event (up to and including the empty line), as raw text.
    pub async fn next_event(&mut self) -> String {
        loop {
            if let Some(pos) = find(&self.buffer, b"\r\n\r\n") {
                let taken: Vec<u8> = self.buffer.drain(..pos + 4).collect();
                return String::from_utf8(taken).expect("SSE stream is UTF-8");
            }
            assert!(
                self.fill().await,
                "SSE stream ended before a complete event; have {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
        }
    }

    /// Waits for the end of the body; fails if more data arrives.
    pub async fn expect_end(&mut self) {
        while self.fill().await {}
        assert!(
            self.buffer.is_empty(),
            "unexpected SSE data before the end: {:?}",
            String::from_utf8_lossy(&self.buffer)
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// WebSockets
// ---------------------------------------------------------------------------------------------

/// One WebSocket frame as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame with its code (`None` for a close frame without payload).
    Close(Option<u16>),
    /// The TCP stream ended (or errored) without a close frame.
    Ended,
}

/// A raw WebSocket client speaking the hub protocol by hand.
pub struct Ws {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Received bytes not yet taken as messages (frames are a byte stream, docs/protocol.md, "Layers").
    pub buffer: Vec<u8>,
    /// Set once a close frame or the end of the stream was seen.
    pub closed: Option<Frame>,
}

/// Opens a WebSocket on `/hub{query}`; `Err((status, body))` when the server refuses the upgrade.
pub async fn ws_connect_query(server: &TestServer, query: &str) -> Result<Ws, (u16, String)> {
    use tokio_tungstenite::tungstenite::Error;
    let url = server.ws_url(&format!("/hub{query}"));
    match within("WebSocket connect", tokio_tungstenite::connect_async(url)).await {
        Ok((socket, _)) => Ok(Ws {
            socket,
            buffer: Vec::new(),
            closed: None,
        }),
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(err) => panic!("WebSocket connect failed: {err}"),
    }
}

/// Opens a WebSocket on `/hub?id={token}`, which must succeed.
pub async fn ws_connect(server: &TestServer, token: &str) -> Ws {
    match ws_connect_query(server, &format!("?id={token}")).await {
        Ok(ws) => ws,
        Err((status, body)) => panic!("WebSocket upgrade refused: {status} {body:?}"),
    }
}

/// Negotiates, opens a WebSocket and completes a JSON handshake.
pub async fn ws_json(server: &TestServer) -> Ws {
    let (_, token) = negotiate(server).await;
    let mut ws = ws_connect(server, &token).await;
    ws.handshake_json().await;
    ws
}

/// Negotiates a long-polling connection, starts it with its first poll and completes a JSON
/// handshake (the handshake answer arrives on the next poll); returns the connection token.
pub async fn long_polling_json(server: &TestServer) -> String {
    let (_, token) = negotiate(server).await;
    assert_eq!(poll(server, &token).await.status, 200, "start poll");
    let handshake = post(
        server,
        &token,
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
    )
    .await;
    assert_eq!(handshake.status, 200);
    assert_eq!(poll(server, &token).await.body, "{}\u{1e}");
    token
}

/// The JSON text of an Invocation of `Echo` with `invocation_id` and `value`, with its RS.
pub fn echo_invocation(invocation_id: &str, value: &Value) -> String {
    let message = serde_json::json!({
        "type": 1,
        "invocationId": invocation_id,
        "target": "Echo",
        "arguments": [value],
    });
    format!("{message}{RS}")
}

impl Ws {
    /// Drops the TCP connection without a close frame, as a lost network looks to the server.
    pub fn cut(self) {
        drop(self.socket);
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        within("WebSocket send", self.socket.send(Message::text(text)))
            .await
            .expect("send text frame");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        within(
            "WebSocket send",
            self.socket.send(Message::binary(bytes.to_vec())),
        )
        .await
        .expect("send binary frame");
    }

    /// The next frame (pings and pongs of the WebSocket layer skipped), within `limit`;
    /// `None` on timeout.
    pub async fn next_frame_within(&mut self, limit: Duration) -> Option<Frame> {
        if let Some(closed) = &self.closed {
            return Some(closed.clone());
        }
        let frame = tokio::time::timeout(limit, async {
            loop {
                let frame = match self.socket.next().await {
                    None | Some(Err(_)) => Frame::Ended,
                    Some(Ok(Message::Text(text))) => Frame::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
                    Some(Ok(Message::Close(close))) => {
                        Frame::Close(close.map(|c| u16::from(c.code)))
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                };
                return frame;
            }
        })
        .await
        .ok()?;
        if matches!(frame, Frame::Close(_) | Frame::Ended) {
            self.closed = Some(frame.clone());
        }
        Some(frame)
    }

    /// The next frame, within [`STEP_TIMEOUT`].
    pub async fn next_frame(&mut self) -> Frame {
        self.next_frame_within(STEP_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("timed out after {STEP_TIMEOUT:?} waiting for a frame"))
    }

    /// Reads frames until the buffer holds a complete RS-terminated message, within `limit`;
    /// `Ok(None)` on timeout, `Err(frame)` when the socket closed first.
    pub async fn next_text_message_within(
        &mut self,
        limit: Duration,
    ) -> Result<Option<String>, Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(pos) = self.buffer.iter().position(|&b| b == 0x1e) {
                let taken: Vec<u8> = self.buffer.drain(..=pos).collect();
                let text = String::from_utf8(taken[..pos].to_vec()).expect("message is UTF-8");
                return Ok(Some(text));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame_within(left).await {
                None => return Ok(None),
                Some(Frame::Text(text)) => self.buffer.extend_from_slice(text.as_bytes()),
                Some(Frame::Binary(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(frame) => return Err(frame),
            }
        }
    }

    /// The next RS-terminated message (the handshake response or a JSON hub message), as text
    /// without the RS.
    pub async fn next_text_message(&mut self) -> String {
        match self.next_text_message_within(STEP_TIMEOUT).await {
            Ok(Some(text)) => text,
            Ok(None) => panic!(
                "timed out after {STEP_TIMEOUT:?} waiting for a message; buffered {:?}",
                String::from_utf8_lossy(&self.buffer)
            ),
            Err(frame) => panic!(
                "socket closed ({frame:?}) while waiting for a message; buffered {:?}",
                String::from_utf8_lossy(&self.buffer)
            ),
        }
    }

    /// The next JSON hub message.
    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text_message().await;
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"))
    }

    /// The next JSON hub message that is not a Ping.
    pub async fn next_json_skip_pings(&mut self) -> Value {
        loop {
            let message = self.next_json().await;
            if message != serde_json::json!({"type": 6}) {
                return message;
            }
        }
    }

    /// Sends the JSON handshake and expects `{}`.
    pub async fn handshake_json(&mut self) {
        self.send_text(&format!(r#"{{"protocol":"json","version":1}}{RS}"#))
            .await;
        let response = self.next_text_message().await;
        assert_eq!(response, "{}", "handshake response");
    }

    /// Invokes `Echo(value)` with `invocation_id` and asserts the Completion.
    pub async fn assert_echo(&mut self, invocation_id: &str, value: Value) {
        self.send_text(&echo_invocation(invocation_id, &value))
            .await;
        let completion = self.next_json_skip_pings().await;
        assert_eq!(
            completion,
            serde_json::json!({"type": 3, "invocationId": invocation_id, "result": value}),
            "Echo completion"
        );
    }

    /// Expects the connection to end with a close frame (code returned) with no more data.
    pub async fn expect_close(&mut self) -> Option<u16> {
        assert!(
            self.buffer.is_empty(),
            "unconsumed data before close: {:?}",
            String::from_utf8_lossy(&self.buffer)
        );
        match self.next_frame().await {
            Frame::Close(code) => code,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Takes the next VarInt-framed MessagePack message body out of the received binary data.
    pub async fn next_msgpack(&mut self) -> Vec<u8> {
        loop {
            if let Some((length, prefix)) = read_varint(&self.buffer)
                && self.buffer.len() >= prefix + length
            {
                let taken: Vec<u8> = self.buffer.drain(..prefix + length).collect();
                return taken[prefix..].to_vec();
            }
            match self.next_frame().await {
                Frame::Binary(bytes) => self.buffer.extend_from_slice(&bytes),
                other => panic!(
                    "expected a binary frame, got {other:?}; buffered {:?}",
                    self.buffer
                ),
            }
        }
    }

    /// Closes the socket politely (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.close(None)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// MessagePack
// ---------------------------------------------------------------------------------------------

/// Reads a VarInt length prefix: `(length, prefix size)`, or `None` if incomplete.
pub fn read_varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut length = 0usize;
    for (i, &byte) in buf.iter().enumerate().take(5) {
        length |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((length, i + 1));
        }
    }
    None
}

/// `body` with its VarInt length prefix.
pub fn varint_framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut length = body.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// The MessagePack body (without prefix) of `[1, {}, id, "Echo", [value], []]`.
pub fn msgpack_echo_invocation(invocation_id: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 6).expect("encode");
    rmp::encode::write_uint(&mut out, 1).expect("encode");
    rmp::encode::write_map_len(&mut out, 0).expect("encode");
    rmp::encode::write_str(&mut out, invocation_id).expect("encode");
    rmp::encode::write_str(&mut out, "Echo").expect("encode");
    rmp::encode::write_array_len(&mut out, 1).expect("encode");
    rmp::encode::write_str(&mut out, value).expect("encode");
    rmp::encode::write_array_len(&mut out, 0).expect("encode");
    out
}

/// Decodes one MessagePack value (the subset hub messages use) into JSON for easy comparison;
/// binary data becomes an array of numbers.
pub fn msgpack_to_json(mut bytes: &[u8]) -> Value {
    let value = decode_value(&mut bytes);
    assert!(bytes.is_empty(), "trailing bytes after MessagePack value");
    value
}

fn decode_value(rd: &mut &[u8]) -> Value {
    use rmp::Marker;
    fn take<'a>(rd: &mut &'a [u8], n: usize) -> &'a [u8] {
        assert!(rd.len() >= n, "truncated MessagePack value");
        let (head, tail) = rd.split_at(n);
        *rd = tail;
        head
    }
    fn be(rd: &mut &[u8], n: usize) -> u64 {
        take(rd, n)
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
    fn string(rd: &mut &[u8], n: usize) -> Value {
        Value::String(String::from_utf8(take(rd, n).to_vec()).expect("UTF-8 string"))
    }
    fn array(rd: &mut &[u8], n: usize) -> Value {
        Value::Array((0..n).map(|_| decode_value(rd)).collect())
    }
    fn map(rd: &mut &[u8], n: usize) -> Value {
        let mut object = serde_json::Map::new();
        for _ in 0..n {
            let key = match decode_value(rd) {
                Value::String(key) => key,
                other => other.to_string(),
            };
            object.insert(key, decode_value(rd));
        }
        Value::Object(object)
    }
    let marker = rmp::decode::read_marker(rd).expect("MessagePack marker");
    match marker {
        Marker::Null => Value::Null,
        Marker::True => Value::Bool(true),
        Marker::False => Value::Bool(false),
        Marker::FixPos(n) => Value::from(n),
        Marker::FixNeg(n) => Value::from(n),
        Marker::U8 => Value::from(be(rd, 1)),
        Marker::U16 => Value::from(be(rd, 2)),
        Marker::U32 => Value::from(be(rd, 4)),
        Marker::U64 => Value::from(be(rd, 8)),
        Marker::I8 => Value::from(be(rd, 1) as u8 as i8),
        Marker::I16 => Value::from(be(rd, 2) as u16 as i16),
        Marker::I32 => Value::from(be(rd, 4) as u32 as i32),
        Marker::I64 => Value::from(be(rd, 8) as i64),
        Marker::F32 => Value::from(f64::from(f32::from_bits(be(rd, 4) as u32))),
        Marker::F64 => Value::from(f64::from_bits(be(rd, 8))),
        Marker::FixStr(n) => string(rd, usize::from(n)),
        Marker::Str8 => {
            let n = be(rd, 1) as usize;
            string(rd, n)
        }
        Marker::Str16 => {
            let n = be(rd, 2) as usize;
            string(rd, n)
        }
        Marker::Str32 => {
            let n = be(rd, 4) as usize;
            string(rd, n)
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            let width = match marker {
                Marker::Bin8 => 1,
                Marker::Bin16 => 2,
                _ => 4,
            };
            let n = be(rd, width) as usize;
            Value::Array(take(rd, n).iter().map(|&b| Value::from(b)).collect())
        }
        Marker::FixArray(n) => array(rd, usize::from(n)),
        Marker::Array16 => {
            let n = be(rd, 2) as usize;
            array(rd, n)
        }
        Marker::Array32 => {
            let n = be(rd, 4) as usize;
            array(rd, n)
        }
        Marker::FixMap(n) => map(rd, usize::from(n)),
        Marker::Map16 => {
            let n = be(rd, 2) as usize;
            map(rd, n)
        }
        Marker::Map32 => {
            let n = be(rd, 4) as usize;
            map(rd, n)
        }
        other => panic!("unsupported MessagePack marker {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// End-of-test checks
// ---------------------------------------------------------------------------------------------

/// A fresh connection (negotiate + WebSocket + JSON handshake) gets its Echo result back: proves
/// the server still serves other connections.
pub async fn assert_healthy(server: &TestServer) {
    let mut ws = ws_json(server).await;
    ws.assert_echo("healthy", serde_json::json!({"still": "alive", "n": 1}))
        .await;
    ws.close().await;
}

/// The end of every test: [`assert_healthy`] and [`assert_no_panics`].
pub async fn finish(server: &TestServer) {
    assert_healthy(server).await;
    assert_no_panics();
}
