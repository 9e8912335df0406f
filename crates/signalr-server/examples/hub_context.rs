//! Sending to a hub's clients from outside the hub: an axum handler and a background task use
//! its [`HubContext`] (ASP.NET's `IHubContext<THub>`).
//!
//! ```sh
//! cargo run -p signalr-server --example hub_context
//! curl -X POST -d 'hello from curl' http://127.0.0.1:5000/notify
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port). Clients of `/notifications` receive
//! `Notify(text)` for every POST to `/notify` and `Tick(n)` every 10 s.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use signalr_server::{Hub, HubContext};

/// `POST /notify`: the body goes to every client of the hub.
async fn notify(State(hub): State<HubContext>, text: String) -> StatusCode {
    match hub.clients().all().send("Notify", (text,)).await {
        Ok(()) => StatusCode::ACCEPTED,
        // Only a backplane can fail to take a message; the in-memory default never does.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = Hub::builder().build();
    let context = hub.context(); // cheap to clone, lives as long as you keep it

    let ticker = context.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(10));
        for n in 0u64.. {
            interval.tick().await;
            let _ = ticker.clients().all().send("Tick", (n,)).await;
        }
    });

    let app = Router::new()
        .route("/notify", post(notify))
        .with_state(context) // the handlers' state; the hub's router needs none
        .nest("/notifications", hub.router());
    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app).await
}
