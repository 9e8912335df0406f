//! `HubContext::close_all`: every connection gets a Close message, then its transport closes.

use std::time::Duration;

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
