//! The ceiling: a raw WebSocket server on axum's `ws` (the WebSocket stack signalr-server uses),
//! without SignalR. It receives the same bytes as the hub server and does the least work a server
//! must do with them, so its figures bound what any server on this stack can reach.
//!
//! - `GET /hub` (WebSocket): the first frame (the client's handshake, a JSON object, which reads as
//!   a successful handshake response) is echoed back. After it, without `room`, every frame is
//!   echoed back; with `?room=NAME`, every frame is fanned out to all other sockets of that room.
//!   Each room socket has a bounded queue of 1024 frames drained by one writer that sends whatever
//!   is queued before flushing; a fan-out that finds a queue full closes that socket (the hub
//!   server's slow-consumer policy).
//! - `POST /hub/negotiate`: a constant negotiate response, so connect storms pay for one HTTP
//!   request as they do against a hub server.
//!
//! Prints `Listening on http://ADDR` on stdout once it accepts connections.

#[path = "../server_runtime.rs"]
mod runtime;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Raw WebSocket echo/fan-out server (axum ws, no SignalR): the benchmark ceiling")]
struct Args {
    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Leave Nagle's algorithm on (axum::serve's default). By default the server sets TCP_NODELAY
    /// on every connection, as Kestrel and aiohttp do: with Nagle on, a small write that follows
    /// an unacknowledged one waits for the peer's delayed ACK (~40 ms on Linux).
    #[arg(long)]
    nagle: bool,
    /// WebSocket read buffer per connection, in bytes (default 8 KiB, as signalr-server's
    /// `ConnectionOptions::websocket_read_buffer_size`; tungstenite's own default is 128 KiB).
    /// tungstenite allocates it eagerly and zero-fills the free part before every socket read, so
    /// it sets both the memory of an idle connection and a memset per read.
    #[arg(long, default_value_t = 8 * 1024)]
    read_buffer_size: usize,
    /// The Tokio scheduler (see `server_runtime.rs`): `auto` is `current-thread` on one CPU.
    #[arg(long, value_enum, default_value_t = runtime::Flavor::Auto)]
    runtime: runtime::Flavor,
}

#[derive(Clone)]
struct AppState {
    rooms: Arc<Rooms>,
    read_buffer_size: usize,
}

/// Frames a room socket may have queued before a fan-out closes it (as the hub server's 1024).
const QUEUE_CAPACITY: usize = 1024;

const NEGOTIATE: &str = r#"{"negotiateVersion":1,"connectionId":"ceiling","connectionToken":"ceiling","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}"#;

type Room = HashMap<u64, mpsc::Sender<Message>>;

#[derive(Default)]
struct Rooms {
    rooms: RwLock<HashMap<String, Room>>,
    next_id: AtomicU64,
}

impl Rooms {
    fn join(&self, room: &str, tx: mpsc::Sender<Message>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut rooms) = self.rooms.write() {
            rooms.entry(room.to_owned()).or_default().insert(id, tx);
        }
        id
    }

    fn leave(&self, room: &str, id: u64) {
        if let Ok(mut rooms) = self.rooms.write()
            && let Some(members) = rooms.get_mut(room)
        {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Queues `message` on every other socket of `room`; sockets whose queue is full are removed,
    /// which closes them.
    fn fan_out(&self, room: &str, from: u64, message: &Message) {
        let mut full = Vec::new();
        if let Ok(rooms) = self.rooms.read() {
            let Some(members) = rooms.get(room) else {
                return;
            };
            for (&id, tx) in members {
                if id != from && tx.try_send(message.clone()).is_err() {
                    full.push(id);
                }
            }
        }
        for id in full {
            self.leave(room, id);
        }
    }
}

async fn ws(
    mut upgrade: WebSocketUpgrade,
    Query(query): Query<HashMap<String, String>>,
    State(state): State<AppState>,
) -> Response {
    let room = query.get("room").cloned();
    upgrade = upgrade.read_buffer_size(state.read_buffer_size);
    let rooms = state.rooms;
    upgrade.on_upgrade(move |socket| async move {
        match room {
            None => echo(socket).await,
            Some(room) => fan_out(socket, &rooms, &room).await,
        }
    })
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

async fn fan_out(socket: WebSocket, rooms: &Rooms, room: &str) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE_CAPACITY);
    // The socket's own sender, for the handshake echo only: once it is dropped the room holds the
    // last sender, so removing the socket from the room ends its writer.
    let mut own = Some(tx.clone());
    let id = rooms.join(room, tx);
    let reader = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(_) | Message::Binary(_) if own.is_some() => {
                    let Some(own) = own.take() else { return };
                    if own.send(message).await.is_err() {
                        return;
                    }
                }
                Message::Text(_) | Message::Binary(_) => rooms.fan_out(room, id, &message),
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    };
    let writer = async {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = rx.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        // Removed from the room as a slow consumer: close the socket.
        let _ = sink.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    rooms.leave(room, id);
}

async fn negotiate() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], NEGOTIATE)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    runtime::build(args.runtime)?.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let app = Router::new()
        .route("/hub", get(ws))
        .route("/hub/negotiate", post(negotiate))
        .with_state(AppState {
            rooms: Arc::new(Rooms::default()),
            read_buffer_size: args.read_buffer_size,
        });
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let address = listener.local_addr()?;
    let nodelay = !args.nagle;
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    println!("Listening on http://{address}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
