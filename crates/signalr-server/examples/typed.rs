//! A `#[hub]` with typed client calls (`#[hub_client]`): method names, argument types and the
//! client methods the hub calls are checked at compile time.
//!
//! ```sh
//! cargo run -p signalr-server --example typed
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port), hub at `/chat`: `SendMessage(user,
//! text)` calls `ReceiveMessage(user, text)` on every client, `Join(room)` adds the caller to a
//! group, `SendToRoom(room, text)` calls `ReceiveMessage` on its members.

use axum::Router;
use signalr_server::{HubCallerContext, HubError, hub, hub_client};

/// What the hub calls on its clients: `connection.on("ReceiveMessage", (user, text) => ...)`.
#[hub_client]
trait ChatClient {
    async fn receive_message(&self, user: String, text: String);
}

/// One instance per invocation (`Default`); shared data goes in `State<T>` or the builder's state.
#[derive(Default)]
struct ChatHub;

#[hub]
impl ChatHub {
    /// Exposed as `SendMessage` (names match case-insensitively).
    async fn send_message(
        &self,
        ctx: HubCallerContext,
        user: String,
        text: String,
    ) -> Result<(), HubError> {
        ctx.clients().all().receive_message(user, text).await?;
        Ok(())
    }

    async fn join(&self, ctx: HubCallerContext, room: String) -> Result<(), HubError> {
        ctx.groups()
            .add_to_group(ctx.connection_id(), &room)
            .await?;
        Ok(())
    }

    async fn send_to_room(
        &self,
        ctx: HubCallerContext,
        room: String,
        text: String,
    ) -> Result<(), HubError> {
        if room.is_empty() {
            return Err(HubError::new("a room name is required")); // reaches the client
        }
        let user = ctx.connection_id().to_owned();
        ctx.clients()
            .group(&room)
            .receive_message(user, text)
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new().nest("/chat", ChatHub::hub_builder().build().router());
    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app).await
}
