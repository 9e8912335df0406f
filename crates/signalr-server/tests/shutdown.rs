//! `HubContext::close_all`: every connection gets a Close message, then its transport closes;
//! `HubContext::open_transport_count` says when every transport has delivered it.

mod common;

use std::time::Duration;

use common::*;

use futures_util::{SinkExt, StreamExt};
use signalr_server::{Hub, HubCallerContext};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn close_all_sends_close_to_every_connection() {
    let hub = Hub::builder()
        .method("Echo", |_: HubCallerContext, v: String| async move { v })
        .build();
    let context = hub.context();
    let app = axum::Router::new().nest("/hub", hub.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/hub"))
            .await
            .expect("connect");
        ws.send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
            .await
            .expect("handshake");
        let response = ws.next().await.expect("frame").expect("valid");
        assert_eq!(response, Message::text("{}\u{1e}"));
        sockets.push(ws);
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while context.connection_count() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("three connections registered");

    context.close_all(None, true);
    for mut ws in sockets {
        let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("Close within 5 s")
            .expect("frame")
            .expect("valid");
        assert_eq!(
            close,
            Message::text("{\"type\":7,\"allowReconnect\":true}\u{1e}")
        );
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("close frame within 5 s");
        assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while context.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all connections gone");
}

/// A long-polling connection leaves the hub when its Close message is queued, but its transport
/// stays open until a poll has taken the message: only then may a graceful shutdown stop the
/// HTTP server. The connection itself stays until the client's DELETE (202).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_transport_stays_open_until_close_message_is_polled() {
    let server = start().await;
    let context = server.hub.context();
    let token = long_polling_json(&server).await;
    within("connection registered", async {
        while context.connection_count() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(context.open_transport_count(), 1);

    context.close_all(None, true);
    within("the hub lets the connection go", async {
        while context.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        context.open_transport_count(),
        1,
        "the Close message is not delivered yet"
    );
    let close = poll(&server, &token).await;
    assert_eq!(
        (close.status, close.body.as_str()),
        (200, "{\"type\":7,\"allowReconnect\":true}\u{1e}")
    );
    // The end may come with the Close message or on the next poll.
    if context.open_transport_count() == 1 {
        assert_eq!(poll(&server, &token).await.status, 204, "the end");
    }
    assert_eq!(context.open_transport_count(), 0);
    assert_eq!(delete(&server, &token).await.status, 202);
    finish(&server).await;
}
