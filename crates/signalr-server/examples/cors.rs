//! A hub that browser pages on other origins may use (CORS), with cookies and access tokens.
//!
//! ```sh
//! cargo run -p signalr-server --example cors -- http://localhost:8080 https://app.example.com
//! ```
//!
//! Every argument is an origin (`scheme://host[:port]`) whose pages may connect; pages of any
//! other origin are refused by the browser (negotiate) and by the server (403 on WebSocket
//! upgrades). Listens on 127.0.0.1:5000 (`PORT=0` picks a free port). From such a page:
//! `new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/chat").build()`.

use axum::Router;
use serde_json::{Value, json};
use signalr_server::{ConnectionOptions, Hub, HubCallerContext, cors::cors_layer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let origins: Vec<String> = std::env::args().skip(1).collect();
    let chat = Hub::builder()
        // CORS does not cover WebSocket upgrades: the server refuses other origins itself.
        .connection_options(ConnectionOptions {
            allowed_origins: origins.clone(),
            ..ConnectionOptions::default()
        })
        // What crossed origins with the page's credentials: its cookie and its access token.
        .method("Whoami", |ctx: HubCallerContext| async move {
            let request = ctx.request();
            let token = request.and_then(|r| {
                r.header("authorization")
                    .map(|h| h.trim_start_matches("Bearer ").to_owned())
                    .or_else(|| r.query_param("access_token"))
            });
            json!({
                "cookie": request.and_then(|r| r.cookie("session")),
                "token": token,
                "transport": ctx.transport(),
            })
        })
        .method(
            "Echo",
            |_: HubCallerContext, value: Value| async move { value },
        )
        .build();
    let app = Router::new().nest("/chat", chat.router().layer(cors_layer(&origins)));

    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    println!("Allowed origins: {origins:?}");
    signalr_server::serve(listener, app).await
}
