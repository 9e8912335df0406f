//! A console chat client.
//!
//! Every line typed is sent with `SendMessage(user, text)`; every `ReceiveMessage(user, text)`
//! from the hub is printed. Works against the chat server (`cargo run -p chat-server`, hub
//! `http://127.0.0.1:5000/chat`) or any ASP.NET Core chat hub with those two methods.
//!
//! ```sh
//! cargo run -p signalr-hub-client --example chat -- [URL] [USER] [json|messagepack]
//! cargo run -p signalr-hub-client --example chat -- http://127.0.0.1:5000/chat ann
//! ```
//!
//! Type `/quit` (or end the input) to leave. `RUST_LOG=signalr_hub_client=debug` shows what the
//! client does.

use std::time::Duration;

use signalr_hub_client::{HubConnectionBuilder, HubProtocol};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:5000/chat".to_owned());
    let user = args
        .next()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "rust".to_owned());
    let protocol = match args.next().as_deref() {
        None | Some("json") => HubProtocol::Json,
        Some("messagepack") => HubProtocol::MessagePack,
        Some(other) => return Err(format!("unknown protocol '{other}'").into()),
    };

    let connection = HubConnectionBuilder::new()
        .with_url(&url)
        .with_protocol(protocol)
        .with_automatic_reconnect()
        .build()?;

    connection
        .on("ReceiveMessage", |(user, text): (String, String)| {
            println!("{user}: {text}");
        })
        .detach();
    connection.on_reconnecting(|error| eprintln!("* connection lost ({error}); reconnecting..."));
    connection.on_reconnected(|id| eprintln!("* reconnected as {}", id.unwrap_or_default()));
    connection.on_closed(|error| match error {
        Some(error) => eprintln!("* connection closed: {error}"),
        None => eprintln!("* connection closed"),
    });

    // A failed start is not retried automatically: retry a few times here.
    let mut attempt = 1;
    while let Err(error) = connection.start().await {
        if attempt == 5 {
            return Err(format!("cannot connect to {url}: {error}").into());
        }
        eprintln!("* cannot connect to {url} ({error}); retrying in 2 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        attempt += 1;
    }
    eprintln!(
        "* connected to {url} as {user} ({}); type messages, /quit to leave",
        protocol.name()
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if text == "/quit" {
            break;
        }
        if let Err(error) = connection
            .send("SendMessage", (user.clone(), text.to_owned()))
            .await
        {
            eprintln!("* not sent: {error}");
        }
    }
    connection.stop().await;
    Ok(())
}
