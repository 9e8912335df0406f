//! A tour of handlers and calls, against a hub this example serves itself (so it needs nothing
//! else running):
//!
//! ```sh
//! cargo run -p signalr-hub-client --example typed_handlers
//! ```
//!
//! It shows typed handlers (tuples and structs), dynamic (`serde_json::Value`) and raw
//! (`Vec<Payload>`) handlers, an async handler answering a client-result call, `invoke`, `send`,
//! a server-to-client stream, an upload stream, a hub error, and the lifetime events around a
//! server-initiated reconnect.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use signalr_hub_client::{ClientStream, HubConnectionBuilder, Payload};
use signalr_server::{Hub, HubCallerContext, HubError, hub::UploadStream};

/// What `Announce` sends: its two arguments, bound positionally to a struct.
#[derive(Debug, Deserialize)]
struct Announcement {
    title: String,
    priority: u8,
}

/// A typed argument and result.
#[derive(Debug, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

async fn serve() -> Result<String, std::io::Error> {
    let hub = Hub::builder()
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
        .method("Announce", |hub: HubCallerContext| async move {
            hub.clients()
                .caller()
                .send("Announcement", ("maintenance at noon", 2))
                .await?;
            Ok::<_, HubError>(())
        })
        .method("Mirror", |_: HubCallerContext, p: Point| async move {
            Point { x: -p.x, y: -p.y }
        })
        .method("AskForName", |hub: HubCallerContext| async move {
            // A client result (docs/protocol.md, "Client results"): the server awaits the client's handler.
            hub.clients()
                .caller()
                .invoke::<String>("GetName", ("please",))
                .await
                .map_err(|err| HubError::new(err.to_string()))
        })
        .method("Countdown", |_: HubCallerContext, from: u32| async move {
            futures_util::stream::iter((0..=from).rev())
        })
        .method(
            "Average",
            |_: HubCallerContext, values: UploadStream<f64>| async move {
                let values: Vec<f64> = values.filter_map(|v| async move { v.ok() }).collect().await;
                values.iter().sum::<f64>() / values.len().max(1) as f64
            },
        )
        .method("Fail", |_: HubCallerContext| async move {
            Err::<(), _>(HubError::new("this is the server's message"))
        })
        .method("Reconnect", |hub: HubCallerContext| async move {
            hub.close(Some("maintenance".into()), true);
        })
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/chat", listener.local_addr()?);
    let app = axum::Router::new().nest("/chat", hub.router());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = serve().await?;
    println!("hub at {url}");

    let connection = HubConnectionBuilder::new()
        .with_url(&url)
        .with_automatic_reconnect()
        .build()?;

    // Typed: a tuple of the arguments.
    let _chat = connection.on("ReceiveMessage", |(user, text): (String, String)| {
        println!("[typed]   {user} says {text:?}");
    });
    // Typed: a struct, bound positionally from the arguments.
    let _announcement = connection.on("Announcement", |a: Announcement| {
        println!("[struct]  {} (priority {})", a.title, a.priority);
    });
    // Dynamic: every argument in a JSON array.
    let _dynamic = connection.on("ReceiveMessage", |args: serde_json::Value| {
        println!("[dynamic] {args}");
    });
    // Raw: bind each payload yourself.
    let _raw = connection.on("ReceiveMessage", |args: Vec<Payload>| {
        let user: String = args[0].deserialize().unwrap_or_default();
        println!("[raw]     {} arguments, the first is {user:?}", args.len());
    });
    // Async, answering a client-result call with `Some(value)`.
    let _name = connection.on("GetName", |(word,): (String,)| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Some(format!("a polite client ({word})"))
    });

    let (tx, mut reconnected) = tokio::sync::mpsc::unbounded_channel();
    connection.on_reconnecting(|error| println!("[event]   reconnecting: {error}"));
    connection.on_reconnected(move |id| {
        println!("[event]   reconnected as {}", id.unwrap_or_default());
        let _ = tx.send(());
    });
    connection.on_closed(|error| println!("[event]   closed: {error:?}"));

    connection.start().await?;
    println!(
        "connected as {}",
        connection.connection_id().unwrap_or_default()
    );

    connection.send("SendMessage", ("ann", "hello")).await?;
    connection.send("Announce", ()).await?;

    let mirrored: Point = connection
        .invoke("Mirror", (Point { x: 1.5, y: -2.0 },))
        .await?;
    println!("[invoke]  Mirror -> {mirrored:?}");

    let name: String = connection.invoke("AskForName", ()).await?;
    println!("[result]  the server asked us and got {name:?}");

    let mut countdown = connection.stream::<u32>("Countdown", (3,)).await?;
    while let Some(n) = countdown.next().await {
        println!("[stream]  {}", n?);
    }

    let values = futures_util::stream::iter([1.0, 2.0, 4.5]);
    let average: f64 = connection
        .invoke("Average", (ClientStream::new(values),))
        .await?;
    println!("[upload]  average = {average}");

    match connection.invoke::<()>("Fail", ()).await {
        Err(err) if err.is_server_error() => println!("[error]   {err}"),
        other => println!("[error]   unexpected {other:?}"),
    }

    // The server closes us with allowReconnect: automatic reconnect brings us back.
    connection.send("Reconnect", ()).await?;
    reconnected.recv().await;
    connection
        .send("SendMessage", ("ann", "back again"))
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    connection.stop().await;
    Ok(())
}
