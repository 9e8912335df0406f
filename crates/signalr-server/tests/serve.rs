//! `signalr_server::serve`: the limits against slow and oversized requests, the cap on half-sent
//! requests and `ConnectionAbort`, on raw TCP sockets with small limits so every test takes a
//! few seconds at most. Every test ends with a fresh normal request and the panic check.

mod common;

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use signalr_server::serve::{ConnectionAbort, MinDataRate, RequestBodyTooSlow, ServeOptions};
use signalr_server::{Hub, HubCallerContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::{read_head, wait_closed, within};

/// What the test routes share with the test.
#[derive(Clone, Default)]
struct Probe {
    /// The `ConnectionAbort` of the latest `/stream` or `/ws` request.
    abort: Arc<Mutex<Option<ConnectionAbort>>>,
    /// Chunks the `/stream` body has produced.
    chunks: Arc<AtomicU64>,
    /// Set when the `/stream` body is dropped (hyper let go of the response).
    stream_dropped: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn app(probe: Probe) -> Router {
    let hub = Hub::builder()
        .method(
            "Echo",
            |_: HubCallerContext, v: serde_json::Value| async move { v },
        )
        .build();
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/peer", get(peer))
        .route("/upload", post(upload))
        .route("/slow", get(slow))
        .route("/stream", get(stream))
        .route("/ws", get(websocket))
        .with_state(probe)
        .nest("/hub", hub.router())
}

/// The remote address and whether the request carries a `ConnectionAbort`.
async fn peer(request: Request) -> String {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let abort = request.extensions().get::<ConnectionAbort>().is_some();
    format!("remote={} abort={abort}", remote.unwrap_or_default())
}

/// Reads the body frame by frame: `200 "<n> bytes"`, or `408 "too slow <received>"` when the body
/// failed with `RequestBodyTooSlow`, or `400` with the error for other body errors.
async fn upload(body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(error) => {
                let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
                while let Some(current) = source {
                    if let Some(slow) = current.downcast_ref::<RequestBodyTooSlow>() {
                        return (
                            StatusCode::REQUEST_TIMEOUT,
                            format!("too slow {} {received}", slow.received()),
                        )
                            .into_response();
                    }
                    source = current.source();
                }
                return (StatusCode::BAD_REQUEST, format!("body error: {error}")).into_response();
            }
        }
    }
    format!("{received} bytes").into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(600)).await;
    "done"
}

/// An endless response of 64 KiB chunks; keeps the request's `ConnectionAbort` in the probe.
async fn stream(State(probe): State<Probe>, Extension(abort): Extension<ConnectionAbort>) -> Body {
    *probe.abort.lock().expect("probe lock") = Some(abort);
    let guard = SetOnDrop(probe.stream_dropped.clone());
    let chunks = probe.chunks.clone();
    let body = futures_util::stream::repeat_with(move || {
        let _keep = &guard;
        chunks.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 * 1024]))
    });
    Body::from_stream(body)
}

/// A WebSocket echo; keeps the request's `ConnectionAbort` in the probe.
async fn websocket(
    State(probe): State<Probe>,
    Extension(abort): Extension<ConnectionAbort>,
    upgrade: WebSocketUpgrade,
) -> Response {
    *probe.abort.lock().expect("probe lock") = Some(abort);
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if let WsMessage::Text(text) = message
                && socket.send(WsMessage::Text(text)).await.is_err()
            {
                break;
            }
        }
    })
}

/// Serves [`app`] with `options` on a random port.
async fn start(options: ServeOptions) -> (SocketAddr, Probe) {
    common::install_panic_hook();
    let probe = Probe::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let server = signalr_server::serve(listener, app(probe.clone())).options(options);
    tokio::spawn(std::future::IntoFuture::into_future(server));
    (addr, probe)
}

/// Reads a whole response sent with `Content-Length` on a connection that stays open.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut text = read_head(stream).await;
    let head_end = text.find("\r\n\r\n").expect("blank line") + 4;
    let length: usize = text[..head_end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("numeric content-length"))
        })
        .expect("content-length");
    let mut body = text.as_bytes()[head_end..].to_vec();
    while body.len() < length {
        let mut buf = [0u8; 4096];
        let n = within("a response body", stream.read(&mut buf))
            .await
            .expect("read body");
        assert!(n > 0, "connection closed inside a response body");
        body.extend_from_slice(&buf[..n]);
    }
    text.truncate(head_end);
    text + &String::from_utf8_lossy(&body)
}

/// Whether the server has closed `stream`, without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// `GET /` on a fresh connection answers `200 ok`: the server still serves normal clients.
async fn assert_fresh_request_works(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write request");
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
    common::assert_no_panics();
}

/// `POST /hub/negotiate?negotiateVersion=1` on a fresh connection; returns the response and the
/// time from connect to the complete response.
async fn negotiate(addr: SocketAddr, extra_headers: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: test\r\n{extra_headers}\
         Content-Length: 0\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write negotiate");
    let response = read_response(&mut stream).await;
    (response, started.elapsed())
}

#[tokio::test]
async fn slowloris_headers_are_closed_at_the_header_timeout() {
    let timeout = Duration::from_millis(600);
    let (addr, _) = start(ServeOptions::new().header_read_timeout(timeout)).await;

    // A head trickled one byte every 50 ms: the timeout counts from the start, not per byte.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .expect("write");
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let mut sent = 0u32;
        while writer.write_all(b"a").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    });
    let started = Instant::now();
    let mut received = Vec::new();
    within("the trickling connection to be closed", async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let trickled = started.elapsed();
    let bytes_sent = within("the trickle to stop", trickle)
        .await
        .expect("trickle task");
    println!(
        "trickled head: closed after {trickled:?}, {bytes_sent} single bytes sent, {} response bytes",
        received.len()
    );
    assert!(
        trickled >= timeout - Duration::from_millis(100) && trickled < timeout * 3,
        "closed after {trickled:?}, header timeout {timeout:?}"
    );
    assert!(received.is_empty(), "no response expected: {received:?}");

    // A connection that never sends a byte is closed at the same timeout.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let (silent_after, received) = wait_closed(&mut silent, Duration::from_secs(5)).await;
    println!("silent connection: closed after {silent_after:?}");
    assert!(
        silent_after >= timeout - Duration::from_millis(100) && silent_after < timeout * 3,
        "closed after {silent_after:?}, header timeout {timeout:?}"
    );
    assert!(received.is_empty(), "no response expected: {received:?}");

    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_at_the_header_timeout() {
    let timeout = Duration::from_millis(600);
    let (addr, _) = start(ServeOptions::new().header_read_timeout(timeout)).await;

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    for round in 0..2 {
        // Idle for half the timeout, then a request: the connection is reused.
        tokio::time::sleep(timeout / 2).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write request");
        let response = read_response(&mut stream).await;
        assert!(
            response.starts_with("HTTP/1.1 200 OK\r\n"),
            "round {round}: {response}"
        );
    }
    // Then idle: hyper's header timer runs while it waits for the next request.
    let (idle, received) = wait_closed(&mut stream, Duration::from_secs(5)).await;
    println!("idle keep-alive connection: closed {idle:?} after its last response");
    assert!(
        idle >= timeout - Duration::from_millis(100) && idle < timeout * 3,
        "closed after {idle:?}, header timeout {timeout:?}"
    );
    assert!(received.is_empty(), "no response expected: {received:?}");

    // The timer does not run while a request is being served: a 600 ms response on a server with
    // a 250 ms header timeout completes.
    let (slow_addr, _) =
        start(ServeOptions::new().header_read_timeout(Duration::from_millis(250))).await;
    let mut stream = TcpStream::connect(slow_addr).await.expect("connect");
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write request");
    let response = read_response(&mut stream).await;
    assert!(response.ends_with("\r\n\r\ndone"), "{response}");

    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn oversized_heads_get_431() {
    // Defaults: 32 KiB of head. The original finding: a 64 KB header line on negotiate got 200.
    let (addr, _) = start(ServeOptions::new()).await;
    let big = format!("X-Big: {}\r\n", "b".repeat(64 * 1024));
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: test\r\n{big}Content-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let head = read_head(&mut stream).await;
    assert!(
        head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{head}"
    );
    wait_closed(&mut stream, Duration::from_secs(5)).await;

    // Just under the limit: served.
    let fits = format!("X-Big: {}\r\n", "b".repeat(30 * 1024));
    let (response, _) = negotiate(addr, &fits).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\"connectionToken\""), "{response}");

    // A small limit, and a header count limit.
    let (addr, _) = start(
        ServeOptions::new()
            .max_request_headers_total_size(4096)
            .max_request_header_count(10),
    )
    .await;
    for (headers, status) in [
        (format!("X-Big: {}\r\n", "b".repeat(5000)), "431"),
        (format!("X-Big: {}\r\n", "b".repeat(3000)), "200"),
        ((0..10).map(|i| format!("X-{i}: v\r\n")).collect(), "431"),
        ((0..9).map(|i| format!("X-{i}: v\r\n")).collect(), "200"),
    ] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET / HTTP/1.1\r\nHost: test\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let head = read_head(&mut stream).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{} bytes of head: expected {status}, got {head}",
            request.len()
        );
        if status == "431" {
            wait_closed(&mut stream, Duration::from_secs(5)).await;
        }
    }

    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn bodies_slower_than_the_minimum_rate_fail() {
    let rate = MinDataRate::new(100, Duration::from_secs(1));
    let (addr, _) = start(ServeOptions::new().min_request_body_data_rate(Some(rate))).await;

    // 10 bytes every 200 ms = 50 B/s, half the minimum: fails once the 1 s grace period is over.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n")
        .await
        .expect("write head");
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let mut sent = 0usize;
        while writer.write_all(&[b'z'; 10]).await.is_ok() {
            sent += 10;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if sent >= 1000 {
                break;
            }
        }
        (sent, writer)
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    within("the slow body's response and close", async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let failed_after = started.elapsed();
    trickle.abort();
    let response = String::from_utf8_lossy(&response).into_owned();
    println!(
        "slow body (50 B/s, minimum 100 B/s after 1 s): {failed_after:?} until response and close: {response:?}"
    );
    assert!(
        response.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{response}"
    );
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let mut words = body.split(' ');
    assert_eq!(words.next(), Some("too"), "{body}");
    assert_eq!(words.next(), Some("slow"), "{body}");
    let reported: u64 = words.next().and_then(|w| w.parse().ok()).expect("count");
    assert!(
        (30..=100).contains(&reported),
        "about 50-60 bytes arrive in the first 1.0-1.2 s, the error says {reported}"
    );
    assert!(
        failed_after >= Duration::from_millis(900) && failed_after < Duration::from_secs(3),
        "failed after {failed_after:?} with a 1 s grace period"
    );

    // 100 bytes every 100 ms = 1,000 B/s for 2 s: well above the minimum, delivered in full.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 2000\r\n\r\n")
        .await
        .expect("write head");
    for _ in 0..20 {
        stream.write_all(&[b'z'; 100]).await.expect("write body");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\n2000 bytes"), "{response}");

    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn normal_clients_get_through_while_half_sent_requests_exceed_the_cap() {
    const CAP: usize = 16;
    const HELD: usize = 200;
    let (addr, _) = start(
        ServeOptions::new()
            .max_pending_connections(CAP)
            .header_read_timeout(Duration::from_secs(20)),
    )
    .await;

    // HELD connections, each with a half-sent negotiate, opened one after the other.
    let mut held = Vec::new();
    for _ in 0..HELD {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: test\r\n")
            .await
            .expect("write half a head");
        held.push(stream);
    }
    // The server closes the oldest ones and keeps the newest CAP.
    within("the oldest half-sent connections to be closed", async {
        while held.iter().filter(|s| is_closed(s)).count() < HELD - CAP {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed: Vec<bool> = held.iter().map(is_closed).collect();
    assert!(
        closed[..HELD - CAP].iter().all(|&c| c),
        "oldest closed: {closed:?}"
    );
    assert!(
        closed[HELD - CAP..].iter().all(|&c| !c),
        "newest open: {closed:?}"
    );

    // A normal client is served at once.
    let (response, took) = negotiate(addr, "").await;
    println!("{HELD} half-sent connections held, cap {CAP}: negotiate took {took:?}");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(took < Duration::from_millis(500), "negotiate took {took:?}");

    // A flood of half-sent connections from 4 tasks while a normal client negotiates 20 times,
    // one every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> =
        (0..4)
            .map(|_| {
                tokio::spawn({
                    let stop = stop.clone();
                    async move {
                        let mut opened = 0u64;
                        let mut keep = std::collections::VecDeque::new();
                        while !stop.load(Ordering::SeqCst) {
                            let Ok(mut stream) = TcpStream::connect(addr).await else {
                                continue;
                            };
                            let _ = stream
                    .write_all(b"POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: x\r\n")
                    .await;
                            opened += 1;
                            keep.push_back(stream);
                            if keep.len() > 4 * CAP {
                                keep.pop_front();
                            }
                        }
                        opened
                    }
                })
            })
            .collect();
    let flood_started = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let (response, took) = negotiate(addr, "").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        latencies.push(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let elapsed = flood_started.elapsed();
    let mut opened = 0;
    for task in flood {
        opened += within("the flood to stop", task).await.expect("flood task");
    }
    latencies.sort();
    println!(
        "flood: {opened} half-sent connections in {elapsed:?} ({:.0}/s); 20 negotiates: median {:?}, max {:?}",
        opened as f64 / elapsed.as_secs_f64(),
        latencies[10],
        latencies[19]
    );
    assert!(
        opened > 10 * CAP as u64,
        "the flood must exceed the cap many times over ({opened})"
    );
    assert!(
        latencies[19] < Duration::from_secs(1),
        "slowest negotiate under the flood: {:?}",
        latencies[19]
    );

    drop(held);
    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn connection_abort_closes_a_connection_whose_client_stopped_reading() {
    let (addr, probe) = start(ServeOptions::new()).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write request");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");

    // The client reads no more: the socket buffers fill and hyper stops polling the body.
    let stalled = within("hyper to stop pulling the body", async {
        let mut last = probe.chunks.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = probe.chunks.load(Ordering::SeqCst);
            if now == last && now > 0 {
                return now;
            }
            last = now;
        }
    })
    .await;
    assert!(
        !probe.stream_dropped.load(Ordering::SeqCst),
        "the stalled response is still alive before the abort"
    );

    let abort = probe
        .abort
        .lock()
        .expect("probe lock")
        .clone()
        .expect("the handler saw a ConnectionAbort");
    assert!(!abort.is_aborted());
    let aborted_at = Instant::now();
    abort.abort();
    within("the response body to be dropped", async {
        while !probe.stream_dropped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let dropped_after = aborted_at.elapsed();
    assert!(abort.is_aborted());
    within("aborted() to complete", abort.aborted()).await;

    // The client finds the rest of what was buffered, then the end of the connection.
    let (_, rest) = wait_closed(&mut stream, Duration::from_secs(5)).await;
    let closed_after = aborted_at.elapsed();
    println!(
        "stalled streaming response: {stalled} chunks of 64 KiB produced before hyper blocked; \
         body dropped {dropped_after:?} after abort(), client saw the close {closed_after:?} after \
         it (having drained {} buffered bytes)",
        rest.len()
    );
    assert!(
        dropped_after < Duration::from_millis(500),
        "{dropped_after:?}"
    );
    assert!(
        (rest.len() as u64) < stalled * 64 * 1024,
        "the client cannot have read more than was produced"
    );

    assert_fresh_request_works(addr).await;
}

/// `write_stall_timeout`: a client that stops reading a streaming response is dropped once a
/// write has made no progress for that long, without anyone calling `abort()`.
#[tokio::test]
async fn a_write_stalled_past_the_timeout_drops_the_connection() {
    let stall = Duration::from_millis(700);
    let (addr, probe) = start(ServeOptions::new().write_stall_timeout(Some(stall))).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write request");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let started = Instant::now();
    within("the stalled response body to be dropped", async {
        while !probe.stream_dropped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let dropped_after = started.elapsed();
    println!(
        "stalled response dropped {dropped_after:?} after the client stopped reading (timeout {stall:?})"
    );
    assert!(dropped_after >= stall, "{dropped_after:?}");
    assert!(dropped_after < stall * 4, "{dropped_after:?}");
    let (_, _) = wait_closed(&mut stream, Duration::from_secs(5)).await;
    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn connection_abort_closes_an_upgraded_websocket() {
    let (addr, probe) = start(ServeOptions::new()).await;
    let (mut ws, _) = within(
        "WebSocket connect",
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .expect("WebSocket upgrade");
    ws.send(Message::text("ping")).await.expect("send");
    let echo = within("echo", ws.next()).await;
    assert!(
        matches!(echo, Some(Ok(Message::Text(ref t))) if t.as_str() == "ping"),
        "{echo:?}"
    );

    let abort = probe
        .abort
        .lock()
        .expect("probe lock")
        .clone()
        .expect("the handler saw a ConnectionAbort");
    let aborted_at = Instant::now();
    abort.abort();
    let end = within("the WebSocket to end", ws.next()).await;
    let ended_after = aborted_at.elapsed();
    println!("upgraded WebSocket: ended {ended_after:?} after abort(): {end:?}");
    assert!(
        matches!(end, None | Some(Err(_))),
        "the socket closed without a close frame: {end:?}"
    );
    assert!(ended_after < Duration::from_millis(500), "{ended_after:?}");

    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn every_request_carries_connect_info_and_an_abort_handle() {
    let (addr, _) = start(ServeOptions::new()).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let local = stream.local_addr().expect("local address");
    for _ in 0..2 {
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        let response = read_response(&mut stream).await;
        assert!(
            response.ends_with(&format!("\r\n\r\nremote={local} abort=true")),
            "{response}"
        );
    }

    // Through the hub: negotiate, WebSocket and an invocation work on this server.
    let server = common::TestServer {
        addr,
        hub: Hub::builder().build(),
        http: reqwest::Client::new(),
    };
    let mut ws = common::ws_json(&server).await;
    ws.assert_echo("1", json!({"served": "by signalr_server::serve"}))
        .await;
    ws.close().await;

    assert_fresh_request_works(addr).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    common::install_panic_hook();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(std::future::IntoFuture::into_future(
        signalr_server::serve(listener, app(Probe::default())).with_graceful_shutdown(async {
            let _ = stopped.await;
        }),
    ));

    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut busy = TcpStream::connect(addr).await.expect("connect");
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    stop.send(()).expect("signal");

    // The connection without a request closes at once; the listener stops accepting.
    let (idle_closed, _) = wait_closed(&mut idle, Duration::from_secs(2)).await;
    within("the listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The request in flight completes.
    let response = read_response(&mut busy).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\ndone"), "{response}");
    let result = within("serve to return", server).await.expect("serve task");
    let returned = signalled.elapsed();
    println!(
        "graceful shutdown: idle connection closed after {idle_closed:?}, serve returned after {returned:?}"
    );
    assert!(result.is_ok(), "{result:?}");
    assert!(idle_closed < Duration::from_millis(300), "{idle_closed:?}");
    assert!(
        returned >= Duration::from_millis(400),
        "serve waited for the request ({returned:?})"
    );
    common::assert_no_panics();
}
