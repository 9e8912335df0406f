//! Streams both ways: `Countdown(from)` streams numbers to the client (`connection.stream`),
//! `Sum(numbers)` reads a stream the client sends (a `Subject` in JavaScript) and returns the sum.
//!
//! ```sh
//! cargo run -p signalr-server --example streaming
//! ```
//!
//! Listens on 127.0.0.1:5000 (`PORT=0` picks a free port), hub at `/streams`. In JavaScript:
//! `connection.stream("Countdown", 3).subscribe({ next: console.log })` prints 3, 2, 1, 0;
//! `const s = new signalR.Subject(); const sum = connection.invoke("Sum", s); s.next(1); s.next(2);
//! s.complete(); await sum` is 3.

use std::time::Duration;

use axum::Router;
use futures_util::{Stream, StreamExt};
use signalr_server::{Hub, HubCallerContext, HubError, hub::UploadStream};

/// One item every 200 ms; the stream ends (and the client's `complete` runs) after 0. When
/// the client cancels, the stream is dropped.
fn countdown(from: u32) -> impl Stream<Item = u32> {
    futures_util::stream::unfold(Some(from), |next| async move {
        let n = next?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((n, n.checked_sub(1)))
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = Hub::builder()
        .method("Countdown", |_: HubCallerContext, from: u32| async move {
            countdown(from)
        })
        .method(
            "Sum",
            |_: HubCallerContext, mut numbers: UploadStream<i64>| async move {
                let mut sum = 0i64;
                while let Some(item) = numbers.next().await {
                    // An item that is not a number, or the client ending the stream with an error.
                    sum += item.map_err(HubError::new)?;
                }
                Ok::<_, HubError>(sum)
            },
        )
        .build();
    let app = Router::new().nest("/streams", hub.router());

    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("Listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app).await
}
