//! Several hubs on one server, each at its own path, sharing application state; one hub also
//! sends to another's clients through that hub's `HubContext`.
//!
//! ```sh
//! cargo run -p signalr-server --example several_hubs
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port): `/hubs/chat` (`Send(text)` broadcasts
//! `Message(text)` and counts it) and `/hubs/admin` (`Count()` returns the count, `Announce(text)`
//! sends `Message(text)` to the chat's clients).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use signalr_server::{Hub, HubCallerContext, HubError, hub::State};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let chat = Hub::builder()
        .state(sent.clone())
        .method(
            "Send",
            |hub: HubCallerContext, State(sent): State<Arc<AtomicU64>>, text: String| async move {
                sent.fetch_add(1, Ordering::Relaxed);
                hub.clients().all().send("Message", (text,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .build();
    let chat_clients = chat.context();
    let admin = Hub::builder()
        .state(sent)
        .method(
            "Count",
            |_: HubCallerContext, State(sent): State<Arc<AtomicU64>>| async move {
                sent.load(Ordering::Relaxed)
            },
        )
        .method("Announce", move |_: HubCallerContext, text: String| {
            let chat_clients = chat_clients.clone();
            async move {
                chat_clients
                    .clients()
                    .all()
                    .send("Message", (text,))
                    .await?;
                Ok::<_, HubError>(())
            }
        })
        .build();

    let app = Router::new()
        .nest("/hubs/chat", chat.router())
        .nest("/hubs/admin", admin.router());
    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app).await
}
