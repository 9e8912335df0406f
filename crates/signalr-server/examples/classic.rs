//! One hub for both kinds of clients: ASP.NET Core SignalR clients at `/chat`, classic SignalR
//! 2.x clients (jQuery `signalr` 2.x, `Microsoft.AspNet.SignalR.Client`) at `/signalr`.
//!
//! ```sh
//! cargo run -p signalr-server --example classic
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port). The generated jQuery proxy is at
//! `/signalr/hubs`: `$.connection.chatHub.server.send("ann", "hi")` reaches every client, Core
//! or classic, as `addMessage(name, text)`.

use axum::Router;
use signalr_server::{Hub, HubCallerContext, HubError, classic_router};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let chat = Hub::builder()
        .name("ChatHub") // classic clients address hubs by name
        .method(
            "Send",
            |hub: HubCallerContext, name: String, text: String| async move {
                hub.clients().all().send("addMessage", (name, text)).await?;
                Ok::<_, HubError>(())
            },
        )
        .build();
    let app = Router::new()
        .nest("/chat", chat.router())
        .nest("/signalr", classic_router([&chat]));

    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app).await
}
