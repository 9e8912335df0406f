//! The smallest hub: `SendMessage` broadcasts, `Echo` answers.
//!
//! ```sh
//! cargo run -p signalr-server --example minimal
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port); connect with
//! `new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/chat").build()`.

use axum::Router;
use signalr_server::{Hub, HubCallerContext, HubError};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let chat = Hub::builder()
        .method(
            "SendMessage",
            |hub: HubCallerContext, user: String, text: String| async move {
                hub.clients()
                    .all()
                    .send("ReceiveMessage", (user, text))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "Echo",
            |_: HubCallerContext, value: serde_json::Value| async move { value },
        )
        .build();
    let app = Router::new().nest("/chat", chat.router());

    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app).await
}
