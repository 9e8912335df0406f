//! Stateful reconnect (`HubConnectionBuilder::with_stateful_reconnect`; docs/protocol.md,
//! "Stateful reconnect").
//!
//! Against real servers, through `dotnet-peer proxy`, which cuts every TCP connection (RST) on
//! `drop` and accepts new ones at once: on WebSockets with JSON and with MessagePack, 200 rounds
//! of `InvokeWithString(i)` (a send, answered by the client method `Message(i)`) and
//! `Echo(i)` (an invoke), the connection cut after round 100. Every result and every `Message`
//! must arrive exactly once and in order, the connection id must stay the same (for the client
//! and for the server's `GetCallerConnectionId`), and neither `on_reconnecting` nor
//! `on_reconnected` may fire (as with the official clients, a stateful resume happens below the
//! hub connection, which stays `Connected`). Each protocol runs three times: cut at once (nothing acknowledged yet), cut
//! after 1.5 s (the first half acknowledged both ways, so the replay starts in the middle), and
//! with a 4,000-byte replay buffer (sends wait for the server's Acks, before and after the cut).
//! - `aspnet_core`: `dotnet-peer server` (ASP.NET Core 10), hub `/testhub-stateful`. Needs
//!   `../shared/peers` beside the repository; without it the test prints why it is skipped.
//! - `conformance_server`: our `conformance-server` binary (`CONFORMANCE_SERVER_BIN`, else
//!   `conformance-server` beside this test's target directory: `cargo build -p
//!   conformance-server`), same hub path. Skipped with a message when the binary or the peers
//!   are absent.
//!
//! Against a hand-written server (always run): the negotiate query and handshake version, the
//! resume on the same `id` with Sequence and replay, duplicates dropped, Acks sent, the byte
//! bound of the replay buffer and its timeout, a refused resume (with and without automatic
//! reconnect), `stop()` during a resume, a resume lost again before the server's Sequence, and
//! bad input (an Ack of an id never sent, a Sequence that jumps forward), which must close the
//! connection with an error.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use futures_util::FutureExt;
use serde_json::{Value, json};
use signalr_hub_client::{
    Error, HubConnection, HubConnectionBuilder, HubConnectionState, HubProtocol, TransportType,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Upper bound of any single wait: a hang fails the check instead of blocking the test.
const STEP: Duration = Duration::from_secs(15);

/// Rounds of the check; the connection is cut before round `ROUNDS / 2`.
const ROUNDS: usize = 200;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?}: {what}"))
}

async fn next<T>(what: &str, receiver: &mut mpsc::UnboundedReceiver<T>) -> T {
    within(what, receiver.recv())
        .await
        .unwrap_or_else(|| panic!("channel closed while waiting for {what}"))
}

/// `../shared/peers/dotnet-peer`, relative to the workspace root, if it is there.
fn peer_program() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/dotnet-peer");
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "skipped: ../shared/peers not found ({} is absent), so the real ASP.NET Core server \
             and the cutting proxy are not available; nothing was tested",
            path.display()
        );
        None
    }
}

/// Our conformance server's binary: `CONFORMANCE_SERVER_BIN`, else `conformance-server` in the
/// target directory this test was built into.
fn conformance_program() -> Option<PathBuf> {
    let path = match std::env::var_os("CONFORMANCE_SERVER_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            // target/debug/deps/stateful-<hash> -> target/debug/conformance-server
            let exe = std::env::current_exe().expect("current_exe");
            let dir = exe.parent().and_then(|deps| deps.parent());
            let Some(dir) = dir else {
                println!(
                    "skipped: cannot locate the target directory of {}",
                    exe.display()
                );
                return None;
            };
            dir.join("conformance-server")
        }
    };
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "skipped: {} is absent (build it with `cargo build -p conformance-server`, or set \
             CONFORMANCE_SERVER_BIN); nothing was tested against our server",
            path.display()
        );
        None
    }
}

/// A running server or proxy process, killed on drop.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What followed `Listening on ` in its output.
    address: String,
}

impl Process {
    /// Starts `program args…` and waits for its `Listening on ADDRESS` line; the rest of its
    /// output is drained so that it never blocks on a full pipe.
    async fn start(program: &PathBuf, args: &[&str]) -> Process {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match lines.next_line().await.expect("read the process's stdout") {
                    Some(line) => {
                        if let Some(at) = line.find("Listening on ") {
                            break line[at + "Listening on ".len()..].trim().to_owned();
                        }
                    }
                    None => panic!("{} {args:?} ended before listening", program.display()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not listen within 60 s", program.display()));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Process {
            child,
            stdin,
            address,
        }
    }

    /// `dotnet-peer proxy --to HOST:PORT` in front of the server at `base` (`http://HOST:PORT`).
    async fn proxy(program: &PathBuf, base: &str) -> Process {
        let to = base
            .strip_prefix("http://")
            .expect("an http:// address")
            .trim_end_matches('/')
            .to_owned();
        Process::start(program, &["proxy", "--to", &to, "--listen", "0"]).await
    }

    /// Writes one command line (`drop`) to the proxy.
    async fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the proxy");
        stdin.flush().await.expect("flush");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Lifetime events as text, with the state seen inside each handler.
fn record_events(c: &HubConnection) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx);
    let (c1, c2) = (c.clone(), c.clone());
    c.on_reconnecting(move |error| {
        let _ = t1.send(format!("reconnecting ({}): {error}", c1.state()));
    });
    c.on_reconnected(move |id| {
        let _ = t2.send(format!(
            "reconnected ({}) {}",
            c2.state(),
            id.unwrap_or_default()
        ));
    });
    c.on_closed(move |error| {
        let _ = t3.send(format!("closed: {:?}", error.map(|e| e.to_string())));
    });
    rx
}

/// The check of the module docs against the hub at `base`/testhub-stateful behind a new
/// proxy. With `settle`, the cut waits 1.5 s after round 100, so that both sides have
/// acknowledged the first half and the replay starts in the middle; without, everything sent
/// is still unacknowledged when the connection is cut. `buffer` bounds the client's replay
/// buffer (bytes): small, the sends wait for the server's Acks, before and after the cut.
async fn cut_in_the_middle(
    peers: &PathBuf,
    base: &str,
    protocol: HubProtocol,
    settle: bool,
    buffer: usize,
) {
    let mut proxy = Process::proxy(peers, base).await;
    let c = HubConnectionBuilder::new()
        .with_url(format!("http://{}/testhub-stateful", proxy.address))
        .with_transport(TransportType::WebSockets)
        .with_protocol(protocol)
        .with_stateful_reconnect()
        .stateful_reconnect_buffer_size(buffer)
        .build()
        .expect("build");
    let mut events = record_events(&c);
    let (tx, mut messages) = mpsc::unbounded_channel();
    let _messages = c.on("Message", move |(text,): (String,)| {
        let _ = tx.send(text);
    });
    within("start", c.start()).await.expect("start");
    let id = c.connection_id().expect("a connection id");
    let server_id: String = within(
        "GetCallerConnectionId",
        c.invoke("GetCallerConnectionId", ()),
    )
    .await
    .expect("GetCallerConnectionId");
    assert_eq!(server_id, id);

    let mut echoes = Vec::new();
    for i in 0..ROUNDS {
        if i == ROUNDS / 2 {
            if settle {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
            }
            proxy.command("drop").await;
        }
        within("send", c.send("InvokeWithString", (format!("m{i}"),)))
            .await
            .unwrap_or_else(|err| panic!("send {i}: {err:?}"));
        // Polled once here, so that the invocations go out in order, then awaited together.
        // (With a small buffer it may wait for room, to be sent when it is polled again.) On a
        // multi-thread runtime the result may already be in by the end of that first poll.
        let mut echo = Box::pin(c.invoke::<String>("Echo", (format!("e{i}"),)));
        let echo = match (&mut echo).now_or_never() {
            Some(result) => futures_util::future::ready(result).boxed(),
            None => echo.boxed(),
        };
        echoes.push(echo);
    }
    let results = within("the Echo results", futures_util::future::join_all(echoes)).await;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(text) => assert_eq!(text, format!("e{i}")),
            Err(err) => panic!("Echo {i}: {err:?}"),
        }
    }
    for i in 0..ROUNDS {
        assert_eq!(next("Message", &mut messages).await, format!("m{i}"));
    }
    // No duplicates behind them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(messages.try_recv().is_err(), "a Message arrived twice");

    assert!(
        events.try_recv().is_err(),
        "a stateful resume fires no reconnecting/reconnected event, as in the official clients"
    );
    assert_eq!(c.state(), HubConnectionState::Connected);
    assert_eq!(c.connection_id().as_deref(), Some(id.as_str()));
    let server_id: String = within(
        "GetCallerConnectionId",
        c.invoke("GetCallerConnectionId", ()),
    )
    .await
    .expect("GetCallerConnectionId after the cut");
    assert_eq!(server_id, id, "the server kept the connection");
    within("stop", c.stop()).await;
    assert_eq!(next("closed", &mut events).await, "closed: None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aspnet_core() {
    init_tracing();
    let Some(peers) = peer_program() else {
        return;
    };
    let server = Process::start(&peers, &["server", "--port", "0"]).await;
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        for (settle, buffer) in [(false, 100_000), (true, 100_000), (false, 4_000)] {
            cut_in_the_middle(&peers, &server.address, protocol, settle, buffer).await;
            println!(
                "ASP.NET Core, WebSockets {protocol:?}, settle {settle}, buffer {buffer} bytes: passed"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_server() {
    init_tracing();
    let Some(peers) = peer_program() else {
        return;
    };
    let Some(ours) = conformance_program() else {
        return;
    };
    let server = Process::start(&ours, &["--port", "0"]).await;
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        for (settle, buffer) in [(false, 100_000), (true, 100_000), (false, 4_000)] {
            cut_in_the_middle(&peers, &server.address, protocol, settle, buffer).await;
            println!(
                "conformance-server, WebSockets {protocol:?}, settle {settle}, buffer {buffer} bytes: passed"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A hand-written server: JSON over WebSockets, stateful reconnect granted when asked for.

/// What one WebSocket of the fake server sees and does.
struct Socket {
    socket: WebSocket,
    buffer: String,
    /// The `id` query parameter of its request.
    id: String,
}

impl Socket {
    /// The next RS-terminated message from the client; `None` once the socket ended.
    async fn read(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buffer.find('\u{1e}') {
                let message = self.buffer[..pos].to_owned();
                self.buffer.drain(..=pos);
                return Some(message);
            }
            match within("a client message", self.socket.recv()).await? {
                Ok(Message::Text(text)) => self.buffer.push_str(text.as_str()),
                Ok(Message::Binary(bytes)) => {
                    self.buffer.push_str(&String::from_utf8_lossy(&bytes))
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next client message that is not a Ping, as JSON.
    async fn read_json(&mut self) -> Option<Value> {
        loop {
            let text = self.read().await?;
            let value: Value = serde_json::from_str(&text).expect("JSON from the client");
            if value["type"] != 6 {
                return Some(value);
            }
        }
    }

    /// Sends these messages in one frame, each ended by RS.
    async fn send(&mut self, messages: &[Value]) {
        let mut text = String::new();
        for message in messages {
            text.push_str(&message.to_string());
            text.push('\u{1e}');
        }
        let _ = self.socket.send(Message::Text(text.into())).await;
    }
}

/// What the fake server does with a second WebSocket for a connection token.
#[derive(Debug, Clone, Copy)]
enum Resume {
    /// Upgrades it, as ASP.NET does within its disconnect timeout.
    Accept,
    /// Answers 404, as ASP.NET does once its disconnect timeout passed.
    Refuse,
    /// Never answers.
    Stall,
}

type Script =
    Arc<dyn Fn(usize, Socket) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// Serves `/hub/negotiate` (connection `id-N` with token `token-N` for the N-th negotiate,
/// from 0, granting stateful reconnect when asked; the negotiate queries are sent to
/// `negotiates`) and `/hub` (each WebSocket, numbered from 0, runs `script`; with
/// `resume` deciding what a second WebSocket for a token gets). Returns the hub URL.
async fn fake_server(script: Script, resume: Resume) -> (String, mpsc::UnboundedReceiver<String>) {
    let (negotiated, negotiates) = mpsc::unbounded_channel();
    let count = Arc::new(Mutex::new(0usize));
    let negotiations = Arc::new(Mutex::new(0usize));
    let tokens = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let routes = Router::new()
        .route(
            "/hub/negotiate",
            post(move |Query(query): Query<Vec<(String, String)>>| {
                let negotiated = negotiated.clone();
                let negotiations = negotiations.clone();
                async move {
                    let n = {
                        let mut negotiations = negotiations.lock().expect("lock");
                        *negotiations += 1;
                        *negotiations - 1
                    };
                    let text = query
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("&");
                    let _ = negotiated.send(text);
                    let asked = query
                        .iter()
                        .any(|(k, v)| k == "useStatefulReconnect" && v == "true");
                    let mut body = json!({
                        "negotiateVersion": 1,
                        "connectionId": format!("id-{n}"),
                        "connectionToken": format!("token-{n}"),
                        "availableTransports": [
                            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
                        ]
                    });
                    if asked {
                        body["useStatefulReconnect"] = json!(true);
                    }
                    axum::Json(body)
                }
            }),
        )
        .route(
            "/hub",
            any(
                move |Query(query): Query<std::collections::HashMap<String, String>>,
                      upgrade: WebSocketUpgrade| {
                    let script = script.clone();
                    let count = count.clone();
                    let tokens = tokens.clone();
                    async move {
                        let id = query.get("id").cloned().unwrap_or_default();
                        if !tokens.lock().expect("lock").insert(id.clone()) {
                            match resume {
                                Resume::Accept => {}
                                Resume::Refuse => {
                                    return axum::http::StatusCode::NOT_FOUND.into_response();
                                }
                                Resume::Stall => std::future::pending::<()>().await,
                            }
                        }
                        let index = {
                            let mut count = count.lock().expect("lock");
                            *count += 1;
                            *count - 1
                        };
                        upgrade
                            .on_upgrade(move |socket| {
                                script(
                                    index,
                                    Socket {
                                        socket,
                                        buffer: String::new(),
                                        id,
                                    },
                                )
                            })
                            .into_response()
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hub", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, routes).await });
    (url, negotiates)
}

fn invocation(target: &str, argument: &str) -> Value {
    json!({"type": 1, "target": target, "arguments": [argument]})
}

/// Reports of a script to the test.
fn reports() -> (
    Arc<Mutex<mpsc::UnboundedSender<Value>>>,
    mpsc::UnboundedReceiver<Value>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Mutex::new(tx)), rx)
}

fn report(to: &Arc<Mutex<mpsc::UnboundedSender<Value>>>, value: Value) {
    let _ = to.lock().expect("lock").send(value);
}

/// The first socket does the handshake, receives one invocation and sends two, then is dropped
/// without a close frame; the second (the resume) reports what it receives first, then replays
/// from 1 (the server has no Ack from the client yet), adds a third invocation and reports the
/// client's Ack.
#[tokio::test]
async fn resume_on_the_same_id_with_sequence_replay_and_acks() {
    init_tracing();
    let (to_test, mut seen) = reports();
    let script: Script = Arc::new(move |index, mut socket| {
        let to_test = to_test.clone();
        async move {
            report(&to_test, json!({"socket": index, "id": socket.id}));
            if index == 0 {
                let handshake = socket.read_json().await.expect("handshake");
                report(&to_test, handshake);
                socket.send(&[json!({})]).await;
                let first = socket.read_json().await.expect("an invocation");
                report(&to_test, first);
                socket
                    .send(&[invocation("Message", "a"), invocation("Message", "b")])
                    .await;
                // Wait for the client's Ack of both, then vanish without a close frame.
                let ack = socket.read_json().await.expect("an Ack");
                report(&to_test, ack);
                drop(socket);
            } else {
                // The resume: no handshake, the client's Sequence first, then its replay.
                for _ in 0..3 {
                    let message = socket.read_json().await.expect("a message");
                    report(&to_test, message);
                }
                // Our replay starts at 1: "a" and "b" are duplicates, "c" is new.
                socket
                    .send(&[
                        json!({"type": 9, "sequenceId": 1}),
                        invocation("Message", "a"),
                        invocation("Message", "b"),
                        invocation("Message", "c"),
                    ])
                    .await;
                let ack = socket.read_json().await.expect("an Ack");
                report(&to_test, ack);
                while socket.read().await.is_some() {}
            }
        }
        .boxed()
    });
    let (url, mut negotiates) = fake_server(script, Resume::Accept).await;
    let c = HubConnectionBuilder::new()
        .with_url(url)
        .with_stateful_reconnect()
        .build()
        .expect("build");
    let mut events = record_events(&c);
    let (tx, mut messages) = mpsc::unbounded_channel();
    let _messages = c.on("Message", move |(text,): (String,)| {
        let _ = tx.send(text);
    });
    within("start", c.start()).await.expect("start");
    assert_eq!(
        next("negotiate", &mut negotiates).await,
        "negotiateVersion=1&useStatefulReconnect=true"
    );
    assert_eq!(
        next("socket 0", &mut seen).await,
        json!({"socket": 0, "id": "token-0"})
    );
    assert_eq!(
        next("handshake", &mut seen).await,
        json!({"protocol": "json", "version": 2})
    );
    c.send("First", ("x",)).await.expect("send");
    assert_eq!(
        next("first", &mut seen).await,
        json!({"type": 1, "target": "First", "arguments": ["x"]})
    );
    assert_eq!(next("a", &mut messages).await, "a");
    assert_eq!(next("b", &mut messages).await, "b");
    assert_eq!(
        next("ack", &mut seen).await,
        json!({"type": 8, "sequenceId": 2})
    );
    assert_eq!(
        next("socket 1", &mut seen).await,
        json!({"socket": 1, "id": "token-0"})
    );
    // The server never acknowledged "First": Sequence 1, then "First" again.
    assert_eq!(
        next("sequence", &mut seen).await,
        json!({"type": 9, "sequenceId": 1})
    );
    assert_eq!(
        next("replay", &mut seen).await,
        json!({"type": 1, "target": "First", "arguments": ["x"]})
    );
    assert_eq!(c.state(), HubConnectionState::Connected);
    // A call after the resume gets the next sequence id (2); no negotiate happened.
    c.send("Second", ("y",)).await.expect("send");
    assert_eq!(
        next("second", &mut seen).await,
        json!({"type": 1, "target": "Second", "arguments": ["y"]})
    );
    assert_eq!(next("c", &mut messages).await, "c");
    assert_eq!(
        next("ack after the resume", &mut seen).await,
        json!({"type": 8, "sequenceId": 3})
    );
    assert!(messages.try_recv().is_err(), "duplicates were dropped");
    assert!(negotiates.try_recv().is_err(), "no second negotiate");
    assert_eq!(c.connection_id().as_deref(), Some("id-0"));
    c.stop().await;
    assert_eq!(next("closed", &mut events).await, "closed: None");
}

/// Answers the handshake, then runs `then` on the socket.
fn after_handshake<F, Fut>(then: F) -> Script
where
    F: Fn(usize, Socket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let then = Arc::new(then);
    Arc::new(move |index, mut socket| {
        let then = then.clone();
        async move {
            if index == 0 {
                socket.read_json().await.expect("handshake");
                socket.send(&[json!({})]).await;
            }
            then(index, socket).await;
        }
        .boxed()
    })
}

async fn connect(
    url: String,
    builder: impl FnOnce(HubConnectionBuilder) -> HubConnectionBuilder,
) -> (HubConnection, mpsc::UnboundedReceiver<String>) {
    let c = builder(
        HubConnectionBuilder::new()
            .with_url(url)
            .with_stateful_reconnect(),
    )
    .build()
    .expect("build");
    let events = record_events(&c);
    within("start", c.start()).await.expect("start");
    (c, events)
}

/// Bad input: an Ack of a message never sent, and a Sequence beyond what was received. Each
/// closes the connection with a protocol error (no automatic reconnect configured), and a
/// pending call fails; nothing panics.
#[tokio::test]
async fn bad_ack_and_sequence_close_the_connection() {
    init_tracing();
    let cases = [
        (
            json!({"type": 8, "sequenceId": 5}),
            "Invalid message from the server: Ack of sequence id 5, but the client sent only 1 messages.",
        ),
        (
            json!({"type": 9, "sequenceId": 3}),
            "Sequence ID greater than amount of messages we've received.",
        ),
    ];
    for (bad, text) in cases {
        let script = after_handshake(move |_, mut socket| {
            let bad = bad.clone();
            async move {
                // The client's invocation, then the bad message.
                socket.read_json().await;
                socket.send(&[bad]).await;
                while socket.read().await.is_some() {}
            }
        });
        let (url, _) = fake_server(script, Resume::Accept).await;
        let (c, mut events) = connect(url, |b| b).await;
        let err = within("Wait", c.invoke::<()>("Wait", ()))
            .await
            .expect_err("the connection closes");
        assert!(err.is_closed(), "{err:?}");
        let closed = next("closed", &mut events).await;
        assert!(closed.contains(text), "{closed}");
        assert_eq!(c.state(), HubConnectionState::Disconnected);
    }
}

/// The byte bound: with 50 bytes, a send that crosses it is taken, the next one waits until the
/// server's Ack; without an Ack it fails after the server timeout.
#[tokio::test]
async fn a_full_replay_buffer_waits_for_an_ack_and_times_out() {
    init_tracing();
    let (to_test, mut seen) = reports();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Value>();
    let ack_rx = Arc::new(tokio::sync::Mutex::new(ack_rx));
    let script = after_handshake(move |_, mut socket| {
        let (to_test, ack_rx) = (to_test.clone(), ack_rx.clone());
        async move {
            let mut ack_rx = ack_rx.lock().await;
            loop {
                tokio::select! {
                    message = socket.read_json() => match message {
                        Some(message) => report(&to_test, message),
                        None => return,
                    },
                    ack = ack_rx.recv() => match ack {
                        Some(ack) => socket.send(&[ack]).await,
                        None => return,
                    },
                    // Keeps the client's server timeout from firing.
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        socket.send(&[json!({"type": 6})]).await;
                    }
                }
            }
        }
    });
    let (url, _) = fake_server(script, Resume::Accept).await;
    let (c, mut events) = connect(url, |b| {
        b.stateful_reconnect_buffer_size(50)
            .server_timeout(Duration::from_secs(2))
    })
    .await;
    let long = "x".repeat(60);
    within("first send", c.send("M", (long.clone(),)))
        .await
        .expect("the first send crosses the bound and is taken");
    assert_eq!(
        next("first", &mut seen).await["arguments"][0],
        long.as_str()
    );
    let mut second = Box::pin(c.send("M", ("second",)));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "the second send waits for room"
    );
    ack_tx
        .send(json!({"type": 8, "sequenceId": 1}))
        .expect("send");
    within("second send", second)
        .await
        .expect("the Ack made room");
    assert_eq!(next("second", &mut seen).await["arguments"][0], "second");
    ack_tx
        .send(json!({"type": 8, "sequenceId": 2}))
        .expect("send");
    // The buffer is empty again: the next send is taken (and crosses the bound), and without
    // an Ack the one after it fails after the server timeout, 2 s.
    tokio::time::sleep(Duration::from_millis(200)).await;
    within("third send", c.send("M", (long.clone(),)))
        .await
        .expect("taken");
    let err: Error = within("fourth send", c.send("M", ("fourth",)))
        .await
        .expect_err("no Ack within the server timeout");
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("The stateful reconnect buffer stayed full for 2 s"),
        "{err}"
    );
    // The connection itself is fine.
    assert_eq!(c.state(), HubConnectionState::Connected);
    c.stop().await;
    assert_eq!(next("closed", &mut events).await, "closed: None");
}

/// A resume the server refuses (404, as ASP.NET once its disconnect timeout passed): without
/// automatic reconnect the connection closes with that error and the pending call fails; with
/// it, `on_reconnecting` fires (the resume itself fired nothing) and a new connection is
/// negotiated (new id).
#[tokio::test]
async fn a_refused_resume_falls_back_to_a_new_connection_or_closes() {
    init_tracing();
    for automatic in [false, true] {
        let script = after_handshake(move |index, mut socket| async move {
            if index == 0 {
                // Lost, without a close frame, after the client's first invocation.
                socket.read_json().await;
                drop(socket);
            } else {
                // The new connection of automatic reconnect.
                socket.read_json().await.expect("handshake");
                socket.send(&[json!({})]).await;
                while socket.read().await.is_some() {}
            }
        });
        let (url, mut negotiates) = fake_server(script, Resume::Refuse).await;
        let (c, mut events) = connect(url, |b| {
            if automatic {
                b.with_automatic_reconnect_delays(vec![Duration::ZERO])
            } else {
                b
            }
        })
        .await;
        next("negotiate", &mut negotiates).await;
        let err = within("Wait", c.invoke::<()>("Wait", ()))
            .await
            .expect_err("the resume fails");
        assert!(err.is_closed(), "{err:?}");
        let lost = "The connection was lost and could not be resumed: WebSocket failed to \
                    connect: the server answered status code 404.";
        if automatic {
            let event = next("reconnecting", &mut events).await;
            assert!(
                event.starts_with("reconnecting (Reconnecting): "),
                "{event}"
            );
            assert_eq!(
                next("reconnected", &mut events).await,
                "reconnected (Connected) id-1"
            );
            next("second negotiate", &mut negotiates).await;
            assert_eq!(c.connection_id().as_deref(), Some("id-1"));
            c.stop().await;
            assert_eq!(next("closed", &mut events).await, "closed: None");
        } else {
            assert_eq!(
                next("closed", &mut events).await,
                format!("closed: {:?}", Some(lost))
            );
            assert_eq!(c.state(), HubConnectionState::Disconnected);
        }
    }
}

/// `stop()` while the resume WebSocket does not answer: the pending call fails, the connection
/// ends at once with `on_closed(None)`.
#[tokio::test]
async fn stop_during_a_resume_ends_it() {
    init_tracing();
    let script = after_handshake(|_, mut socket| async move {
        socket.read_json().await;
        drop(socket);
    });
    let (url, _) = fake_server(script, Resume::Stall).await;
    let (c, mut events) = connect(url, |b| b).await;
    let pending = tokio::spawn({
        let c = c.clone();
        async move { c.invoke::<()>("Wait", ()).await }
    });
    // The first socket is lost and the resume stalls; the connection stays `Connected` and
    // fires nothing meanwhile, as in the official clients.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err(), "no event during a resume");
    assert_eq!(c.state(), HubConnectionState::Connected);
    // Calls are taken meanwhile (buffered for the resume).
    let mut buffered = Box::pin(c.send("Later", ()));
    assert!(
        (&mut buffered).now_or_never().is_some_and(|r| r.is_ok()),
        "a send during the resume is buffered"
    );
    within("stop", c.stop()).await;
    assert_eq!(next("closed", &mut events).await, "closed: None");
    let err = within("Wait", pending)
        .await
        .expect("join")
        .expect_err("stopped");
    assert!(err.is_closed(), "{err:?}");
    assert_eq!(c.state(), HubConnectionState::Disconnected);
}

/// A server that takes the resume WebSocket and drops it again before its Sequence: that counts
/// as a failed resume (no endless resumes); without automatic reconnect the connection closes.
#[tokio::test]
async fn a_resume_lost_before_the_servers_sequence_is_not_retried() {
    init_tracing();
    let script = after_handshake(|_, mut socket| async move {
        // Socket 0: after the client's invocation; socket 1 (the resume): after its Sequence.
        socket.read_json().await;
        drop(socket);
    });
    let (url, _) = fake_server(script, Resume::Accept).await;
    let (c, mut events) = connect(url, |b| b).await;
    let err = within("Wait", c.invoke::<()>("Wait", ()))
        .await
        .expect_err("the connection is lost twice");
    assert!(err.is_closed(), "{err:?}");
    let closed = next("closed", &mut events).await;
    assert!(closed.starts_with("closed: Some("), "{closed}");
    assert!(events.try_recv().is_err(), "no second resume");
    assert_eq!(c.state(), HubConnectionState::Disconnected);
}
