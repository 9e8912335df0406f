//! Scale-out: run this twice on one Redis and the clients of both servers chat together (and
//! with ASP.NET Core servers whose `ChatHub` is `Peer.ChatHub`, on the same Redis).
//!
//! ```sh
//! redis-server --port 6379 --save '' &
//! PORT=5000 cargo run -p signalr-redis --example redis
//! PORT=5001 cargo run -p signalr-redis --example redis   # in another terminal
//! ```
//!
//! `REDIS_URL` (default `redis://127.0.0.1:6379`) picks the Redis. Hub at `/chat`:
//! `SendMessage(user, text)` reaches `ReceiveMessage(user, text)` on both servers' clients.

use signalr_redis::{RedisBackplane, RedisOptions};
use signalr_server::{Hub, HubCallerContext, HubError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // One backplane per process, shared by every hub.
    let backplane = RedisBackplane::connect(RedisOptions::new(url)).await?;
    let chat = Hub::builder()
        .method(
            "SendMessage",
            |hub: HubCallerContext, user: String, text: String| async move {
                // Fails when Redis cannot take the message in time: the caller gets an error.
                hub.clients()
                    .all()
                    .send("ReceiveMessage", (user, text))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        // The backplane name: servers (Rust or .NET) using the same one share their clients.
        .lifetime_manager(backplane.hub("Peer.ChatHub"))
        .build();
    let app = axum::Router::new().nest("/chat", chat.router());

    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app).await?;
    Ok(())
}
