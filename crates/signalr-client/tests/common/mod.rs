//! Shared helpers of the client's integration tests: an in-process `signalr-server` hub that can
//! be killed (every TCP connection shut down, as if the server process died) and brought back on
//! the same port, and helpers to await events with a deadline.

#![allow(dead_code)]

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use futures_util::StreamExt;
use serde_json::Value;
use signalr_hub_client::{Error, HubConnection, HubConnectionState, HubProtocol, TransportType};
use signalr_server::{
    ConnectionOptions, Hub, HubBuilder, HubCallerContext, HubError, HubOptions,
    hub::{State, UploadStream},
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound of any single wait in a test: a hang fails the test instead of blocking it.
pub const STEP: Duration = Duration::from_secs(10);

/// Runs `future` with [`STEP`] as deadline.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?}: {what}"))
}

/// Installs a tracing subscriber once (`RUST_LOG=debug` shows client and server events).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// What the test hub reports about its side of the connection (cancellations, upload items).
#[derive(Clone)]
pub struct Probe {
    sender: mpsc::UnboundedSender<String>,
}

impl Probe {
    fn report(&self, event: impl Into<String>) {
        let _ = self.sender.send(event.into());
    }
}

/// The test hub's methods:
/// - `Echo(value) -> value`, `Add(a, b) -> a + b`, `Fail(message)` -> `HubError::new(message)`;
/// - `SendMessage(user, text)` broadcasts `ReceiveMessage(user, text)`;
/// - `Count(n)` streams `1..=n`; `Ticks()` streams forever every 10 ms and reports
///   `cancelled` to the probe when the client cancels it;
/// - `Sum(UploadStream<i64>) -> i64`; `Collect(prefix, UploadStream<String>)` reports each item
///   and returns them joined; `StreamSum(UploadStream<i64>)` streams running sums;
/// - `AskCaller(method, argument) -> value` asks the caller for a client result;
/// - `Transport()`, `Protocol()`, `ConnectionId()`;
/// - `CloseMe(error, allow_reconnect)` makes the server close the caller with a Close message;
/// - `Hang()` reports `hang` and never answers;
/// - `Auth()` returns what the request that opened the transport carried.
pub fn hub_builder(probe: Probe) -> HubBuilder {
    Hub::builder()
        .state(probe)
        .method("Echo", |_: HubCallerContext, v: Value| async move { v })
        .method(
            "Add",
            |_: HubCallerContext, a: i64, b: i64| async move { a + b },
        )
        .method("Fail", |_: HubCallerContext, message: String| async move {
            Err::<(), _>(HubError::new(message))
        })
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
        .method("Count", |_: HubCallerContext, n: u32| async move {
            futures_util::stream::iter(1..=n)
        })
        .method(
            "Ticks",
            |hub: HubCallerContext, State(probe): State<Probe>| async move {
                let token = hub.cancellation().clone();
                tokio::spawn(async move {
                    token.cancelled().await;
                    probe.report("cancelled");
                });
                futures_util::stream::unfold(0u64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Some((n, n + 1))
                })
            },
        )
        .method(
            "Sum",
            |_: HubCallerContext, items: UploadStream<i64>| async move {
                let items: Vec<Result<i64, String>> = items.collect().await;
                items
                    .into_iter()
                    .sum::<Result<i64, String>>()
                    .map_err(HubError::new)
            },
        )
        .method(
            "Collect",
            |_: HubCallerContext,
             prefix: String,
             mut items: UploadStream<String>,
             State(probe): State<Probe>| async move {
                let mut all = Vec::new();
                while let Some(item) = items.next().await {
                    match item {
                        Ok(item) => {
                            probe.report(format!("item {item}"));
                            all.push(item);
                        }
                        Err(error) => {
                            probe.report(format!("error {error}"));
                            return Err(HubError::new(error));
                        }
                    }
                }
                Ok(format!("{prefix}{}", all.join(",")))
            },
        )
        .method(
            "StreamSum",
            |_: HubCallerContext, items: UploadStream<i64>| async move {
                items.scan(0i64, |sum, item| {
                    *sum += item.unwrap_or(0);
                    futures_util::future::ready(Some(*sum))
                })
            },
        )
        .method(
            "AskCaller",
            |hub: HubCallerContext, method: String, argument: Value| async move {
                hub.clients()
                    .caller()
                    .invoke::<Value>(&method, (argument,))
                    .await
                    .map_err(|err| HubError::new(err.to_string()))
            },
        )
        .method("Transport", |hub: HubCallerContext| async move {
            hub.transport().map(|t| t.name().to_owned())
        })
        .method("Protocol", |hub: HubCallerContext| async move {
            hub.protocol().map(|p| p.name().to_owned())
        })
        .method("ConnectionId", |hub: HubCallerContext| async move {
            hub.connection_id().to_owned()
        })
        .method(
            "CloseMe",
            |hub: HubCallerContext, error: Option<String>, allow_reconnect: bool| async move {
                hub.close(error, allow_reconnect);
            },
        )
        .method(
            "Hang",
            |_: HubCallerContext, State(probe): State<Probe>| async move {
                probe.report("hang");
                std::future::pending::<()>().await;
            },
        )
        .method("Auth", |hub: HubCallerContext| async move {
            let request = hub.request();
            serde_json::json!({
                "user": hub.user().name(),
                "authorization": request.and_then(|r| r.header("authorization")).map(str::to_owned),
                "access_token": request.and_then(|r| r.query_param("access_token")),
                "custom": request.and_then(|r| r.header("x-custom")).map(str::to_owned),
                "query": request.and_then(|r| r.query_param("tenant")),
            })
        })
}

type SocketSlots = Arc<Mutex<Vec<Arc<Mutex<Option<std::net::TcpStream>>>>>>;

/// A listener that keeps a duplicate of every accepted socket, so that [`TestServer::kill`] can
/// shut them all down (even upgraded WebSockets, which run on tasks of their own).
struct TrackingListener {
    listener: tokio::net::TcpListener,
    sockets: SocketSlots,
}

/// An accepted socket; dropping it also drops its duplicate, so that a connection the server
/// closes really closes.
pub struct TrackedStream {
    inner: tokio::net::TcpStream,
    duplicate: Arc<Mutex<Option<std::net::TcpStream>>>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        if let Ok(mut duplicate) = self.duplicate.lock() {
            duplicate.take();
        }
    }
}

impl tokio::io::AsyncRead for TrackedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for TrackingListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let Ok(std_stream) = stream.into_std() else {
                continue;
            };
            let duplicate = Arc::new(Mutex::new(std_stream.try_clone().ok()));
            if let Ok(mut sockets) = self.sockets.lock() {
                sockets.retain(|slot| slot.lock().map(|s| s.is_some()).unwrap_or(false));
                sockets.push(duplicate.clone());
            }
            if let Ok(inner) = tokio::net::TcpStream::from_std(std_stream) {
                return (TrackedStream { inner, duplicate }, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An in-process server: the test hub at `/hub`, plus any extra routes.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    serve: JoinHandle<()>,
    sockets: SocketSlots,
}

/// The probe a hub reports to, and the receiving end for the test.
pub fn probe() -> (Probe, mpsc::UnboundedReceiver<String>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (Probe { sender }, receiver)
}

impl TestServer {
    /// Serves `hub` at `/hub` (and `extra` routes) on `addr` (port 0 for any).
    pub async fn serve(hub: Hub, extra: Router, addr: SocketAddr) -> TestServer {
        init_tracing();
        let app = extra.nest("/hub", hub.router());
        let listener = bind(addr).await;
        let addr = listener.local_addr().expect("local address");
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let tracking = TrackingListener {
            listener,
            sockets: sockets.clone(),
        };
        let serve = tokio::spawn(async move {
            let _ = axum::serve(tracking, app).into_future().await;
        });
        TestServer {
            addr,
            hub,
            serve,
            sockets,
        }
    }

    /// The test hub with default options on a free port.
    pub async fn start(probe: Probe) -> TestServer {
        TestServer::serve(
            hub_builder(probe).build(),
            Router::new(),
            "127.0.0.1:0".parse().expect("address"),
        )
        .await
    }

    /// The test hub with these options on a free port.
    pub async fn start_with(
        probe: Probe,
        options: HubOptions,
        connection_options: ConnectionOptions,
    ) -> TestServer {
        TestServer::serve(
            hub_builder(probe)
                .options(options)
                .connection_options(connection_options)
                .build(),
            Router::new(),
            "127.0.0.1:0".parse().expect("address"),
        )
        .await
    }

    /// `http://addr/hub`.
    pub fn url(&self) -> String {
        format!("http://{}/hub", self.addr)
    }

    /// Stops accepting and frees the port; existing connections keep running.
    pub async fn stop_listening(&mut self) {
        self.serve.abort();
        let _ = (&mut self.serve).await;
    }

    /// Shuts down every TCP connection the server accepted: clients see their sockets die, as if
    /// the server process was killed.
    pub fn kill_connections(&self) {
        let slots = std::mem::take(&mut *self.sockets.lock().expect("sockets"));
        for slot in slots {
            if let Some(socket) = slot.lock().expect("socket").take() {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Stops listening and kills every connection.
    pub async fn kill(mut self) {
        self.stop_listening().await;
        self.kill_connections();
    }
}

/// Binds `addr`, retrying briefly while a just-closed listener still holds the port.
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let mut last = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) => {
                last = Some(err);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("cannot bind {addr}: {last:?}");
}

/// Receives the next item from `receiver` within [`STEP`].
pub async fn next<T>(what: &str, receiver: &mut mpsc::UnboundedReceiver<T>) -> T {
    within(what, receiver.recv())
        .await
        .unwrap_or_else(|| panic!("channel closed while waiting for {what}"))
}

/// Asserts nothing arrives on `receiver` for `quiet`.
pub async fn assert_quiet<T: std::fmt::Debug>(
    receiver: &mut mpsc::UnboundedReceiver<T>,
    quiet: Duration,
) {
    if let Ok(Some(item)) = tokio::time::timeout(quiet, receiver.recv()).await {
        panic!("expected nothing, got {item:?}");
    }
}

/// The lifetime events of a connection, in order, with the state seen inside each handler.
#[derive(Debug)]
pub enum Event {
    Reconnecting(Error, HubConnectionState),
    Reconnected(Option<String>, HubConnectionState),
    Closed(Option<Error>, HubConnectionState),
}

/// Records `connection`'s lifetime events (the handlers keep a clone of the connection to read
/// its state at the moment of the event).
pub fn record_events(connection: &HubConnection) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (c1, c2, c3) = (connection.clone(), connection.clone(), connection.clone());
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx);
    connection.on_reconnecting(move |error| {
        let _ = t1.send(Event::Reconnecting(error, c1.state()));
    });
    connection.on_reconnected(move |id| {
        let _ = t2.send(Event::Reconnected(id, c2.state()));
    });
    connection.on_closed(move |error| {
        let _ = t3.send(Event::Closed(error, c3.state()));
    });
    rx
}

/// Every transport × protocol combination (Server-Sent Events carry JSON only).
pub const COMBINATIONS: [(TransportType, HubProtocol); 5] = [
    (TransportType::WebSockets, HubProtocol::Json),
    (TransportType::WebSockets, HubProtocol::MessagePack),
    (TransportType::ServerSentEvents, HubProtocol::Json),
    (TransportType::LongPolling, HubProtocol::Json),
    (TransportType::LongPolling, HubProtocol::MessagePack),
];
