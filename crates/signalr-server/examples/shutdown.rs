//! Graceful shutdown: on Ctrl-C (or SIGTERM) every client gets a Close message that lets it
//! reconnect (`allow_reconnect`, so clients with automatic reconnect come back to the restarted
//! server), then the HTTP server stops accepting and finishes the requests in flight.
//!
//! ```sh
//! cargo run -p signalr-server --example shutdown
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port), hub at `/chat`.

use std::time::Duration;

use axum::Router;
use signalr_server::{Hub, HubCallerContext};

/// Ctrl-C, or SIGTERM on Unix (what service managers and `docker stop` send).
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let chat = Hub::builder()
        .method(
            "Echo",
            |_: HubCallerContext, text: String| async move { text },
        )
        .build();
    let context = chat.context();
    let app = Router::new().nest("/chat", chat.router());

    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = signalr_server::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    let server = tokio::spawn(server.into_future());

    stop_signal().await;
    println!(
        "stopping: asking {} clients to reconnect",
        context.connection_count()
    );
    // Queues a Close message for every connection: WebSockets end with it, and SSE and
    // long-polling responses end, so they don't hold the shutdown up.
    context.close_all(Some("Server is restarting".into()), true);
    // Let the transports deliver that Close message before their sockets go (at most 5 s).
    for _ in 0..100 {
        if context.open_transport_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(()); // stop accepting; finish the requests in flight
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(result) => result.unwrap_or_else(|panicked| Err(std::io::Error::other(panicked))),
        Err(_) => {
            println!("connections still open after 10 s; stopping anyway");
            Ok(())
        }
    }
}
