//! A client that stops reading while the server fans messages out to it: closed as a slow
//! consumer once its outgoing queue passes `outgoing_buffer_size`, and — served by
//! `signalr_server::serve` — its transport response ends and its socket is released at once
//! (Server-Sent Events, long polling), while the fan-out sender never waits.

mod common;
#[path = "common/runtime.rs"]
mod runtime;

use std::time::{Duration, Instant};

use common::*;
use runtime::{eventually, serve};
use serde_json::json;
use signalr_server::{ConnectionOptions, Hub, HubCallerContext, HubError};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// 30 KB of payload per broadcast.
const PAYLOAD: usize = 30_000;

async fn start() -> TestServer {
    let options = ConnectionOptions {
        outgoing_buffer_size: 64 * 1024,
        ..Default::default()
    };
    serve(Hub::builder().connection_options(options).method(
        "Broadcast",
        |hub: HubCallerContext, text: String| async move {
            hub.clients().others().send("Receive", (text,)).await?;
            Ok::<_, HubError>(())
        },
    ))
    .await
}

/// A TCP connection with a 4 KiB receive buffer, so the server's writes stall quickly.
async fn small_window(server: &TestServer) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(server.addr).await.expect("connect")
}

/// Calls `Broadcast` from another connection until `stalled` is gone from the hub (closed as a
/// slow consumer). Returns how many broadcasts it took; each call must complete promptly (the
/// sender is never blocked by the stalled receiver).
async fn broadcast_until_closed(server: &TestServer, connections_before: usize) -> usize {
    let mut sender = ws_json(server).await;
    let text = "x".repeat(PAYLOAD);
    for n in 1..=400 {
        let started = Instant::now();
        sender
            .send_text(&format!(
                "{}\u{1e}",
                json!({"type": 1, "invocationId": n.to_string(), "target": "Broadcast", "arguments": [text]})
            ))
            .await;
        let completion = sender.next_json_skip_pings().await;
        assert_eq!(
            completion["invocationId"],
            json!(n.to_string()),
            "{completion}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "broadcast {n} took {:?}: the sender waited for the stalled client",
            started.elapsed()
        );
        // The sender itself counts; the stalled one is gone when only the others remain.
        if server.hub.context().connection_count() < connections_before {
            sender.close().await;
            return n;
        }
    }
    panic!("the stalled client was never closed as a slow consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sse_client_is_closed_and_its_socket_released() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let mut stream = small_window(&server).await;
    stream
        .write_all(
            format!("GET /hub?id={token} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("SSE request");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let handshake = post(
        &server,
        &token,
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
    )
    .await;
    assert_eq!(handshake.status, 200);
    eventually("the SSE connection to join the hub", || {
        server.hub.context().connection_count() == 1
    })
    .await;
    // One sender connection plus the stalled one.
    let took = broadcast_until_closed(&server, 2).await;
    println!("SSE: closed as a slow consumer after {took} broadcasts of {PAYLOAD} B");
    // The whole payload offered (took × 30 KB) is far more than the buffers between us.
    let (elapsed, _) = wait_closed(&mut stream, Duration::from_secs(2)).await;
    println!("SSE: socket closed {elapsed:?} after the slow-consumer close");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_long_polling_client_is_closed_and_its_socket_released() {
    let server = start().await;
    let (_, token) = negotiate(&server).await;
    let first = poll(&server, &token).await;
    assert_eq!(first.status, 200);
    let handshake = post(
        &server,
        &token,
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
    )
    .await;
    assert_eq!(handshake.status, 200);
    let mut stream = small_window(&server).await;
    // The poll that receives the handshake response and what follows, never read.
    stream
        .write_all(format!("GET /hub?id={token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("poll request");
    eventually("the long-polling connection to join the hub", || {
        server.hub.context().connection_count() == 1
    })
    .await;
    let took = broadcast_until_closed(&server, 2).await;
    println!("long polling: closed as a slow consumer after {took} broadcasts of {PAYLOAD} B");
    let (elapsed, _) = wait_closed(&mut stream, Duration::from_secs(2)).await;
    println!("long polling: socket closed {elapsed:?} after the slow-consumer close");
    finish(&server).await;
}
