//! A hub for signed-in users only: clients send a JWT (`Authorization: Bearer`, or
//! `access_token` in the query for WebSockets and SSE, as the official clients do); without a
//! valid one negotiate answers 401.
//!
//! ```sh
//! cargo run -p signalr-server --example jwt
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port) and prints a token valid for an hour
//! (HS256, subject `alice`). `POST /login?user=NAME` issues one for another name. In JavaScript:
//! `withUrl("http://127.0.0.1:5000/chat", { accessTokenFactory: () => token })`; `WhoAmI`
//! returns the token's `sub`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Query;
use axum::routing::post;
use serde::Deserialize;
use signalr_server::{
    Hub, HubCallerContext,
    auth::{AuthorizationPolicy, JwtAuthenticator},
};

/// Use a long random secret from your configuration, at least 32 bytes.
const SECRET: &[u8] = b"example secret: replace with 32+ random bytes";

fn token_for(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        + Duration::from_secs(3600);
    let claims = serde_json::json!({ "sub": user, "exp": exp.as_secs() });
    JwtAuthenticator::encode_hs256(SECRET, &claims).unwrap_or_default()
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let chat = Hub::builder()
        .authenticator(JwtAuthenticator::hs256(SECRET))
        // ASP.NET's [Authorize] on the hub: every request needs an authenticated user.
        .require_authorization(AuthorizationPolicy::authenticated())
        .method("WhoAmI", |ctx: HubCallerContext| async move {
            ctx.user().claim("sub")
        })
        .build();
    // A real application checks a password (or another identity provider) here.
    let login = post(|Query(login): Query<Login>| async move { token_for(&login.user) });
    let app = Router::new()
        .nest("/chat", chat.router())
        .route("/login", login);

    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    println!("Token for alice: {}", token_for("alice"));
    signalr_server::serve(listener, app).await
}
