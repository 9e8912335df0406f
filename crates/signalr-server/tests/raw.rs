//! Raw connections (`connection_router`): bytes echo over WebSockets (text and binary frames)
//! and long polling, without the hub protocol.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use signalr_server::{
    ConnectionOptions,
    raw::{RawConnection, connection_router},
};
use tokio_tungstenite::tungstenite::Message;

async fn echo_server() -> String {
    let echo = connection_router(
        ConnectionOptions::default(),
        |mut connection: RawConnection| async move {
            while let Some(data) = connection.receive().await {
                if !connection.send(data).await {
                    break;
                }
            }
        },
    );
    let app = axum::Router::new().nest("/echo", echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("127.0.0.1:{}", address.port())
}

async fn next_data(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo within 5 s")
            .expect("socket open")
            .expect("valid frame");
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            return message;
        }
    }
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_frames_in_kind() {
    let host = echo_server().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{host}/echo"))
        .await
        .expect("connect");
    ws.send(Message::text("hello ✓")).await.expect("send text");
    assert_eq!(next_data(&mut ws).await, Message::text("hello ✓"));
    ws.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .expect("send binary");
    assert_eq!(
        next_data(&mut ws).await,
        Message::binary(vec![0u8, 159, 146, 150])
    );
}

#[tokio::test]
async fn long_polling_echoes_posted_bytes() {
    let host = echo_server().await;
    let client = reqwest::Client::new();
    let body = client
        .post(format!("http://{host}/echo/negotiate?negotiateVersion=1"))
        .send()
        .await
        .expect("negotiate")
        .bytes()
        .await
        .expect("body");
    let negotiate: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let token = negotiate["connectionToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let url = format!("http://{host}/echo?id={token}");
    let first = client.get(&url).send().await.expect("first poll");
    assert_eq!(first.status(), 200);
    let post = client
        .post(&url)
        .body(vec![1u8, 2, 3, 255])
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 200);
    let poll = client.get(&url).send().await.expect("poll");
    assert_eq!(poll.status(), 200);
    assert_eq!(
        poll.bytes().await.expect("body").as_ref(),
        &[1u8, 2, 3, 255]
    );
    let delete = client.delete(&url).send().await.expect("delete");
    assert_eq!(delete.status(), 202);
}
