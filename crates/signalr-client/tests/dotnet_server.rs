//! This client against the real ASP.NET Core SignalR server: `dotnet-peer server` (ASP.NET Core
//! 10 with its functional-test `TestHub`, detailed errors on), found at `../shared/peers/` beside
//! the repository. Without that folder every test prints why it is skipped and checks nothing.
//!
//! - `every_transport_and_protocol`: each of WebSockets × JSON/MessagePack, Server-Sent Events ×
//!   JSON and long polling × JSON/MessagePack runs the same checks (invoke, request header, error
//!   texts, client methods, streams both ways, cancel, complex objects, 50 parallel calls, client
//!   results, groups with a second connection, stop) and prints a table of what passed;
//!   Server-Sent Events × MessagePack is refused by the client before any request, as the server
//!   offers that transport for text only.
//! - `endpoints`: negotiate redirects with their access token, the `[Authorize]` hub (401 without
//!   a token, a JWT from `/generateJwtToken` on every cell), transport fallback on the hub
//!   without WebSockets, skip negotiation, a failing negotiate, restart after stop, a hub that
//!   allows stateful reconnect, and an oversized message (the server closes with its error).
//! - `keep_alive`: a server with a 1 s keep-alive and a 4 s client timeout, and a client with the
//!   same: 6 s of silence break nothing on any cell.
//! - `network_drop`: through `dotnet-peer proxy`, which cuts every TCP connection on `drop`:
//!   WebSockets and Server-Sent Events reconnect automatically (new connection id); long polling
//!   is not disconnected at all (the next poll opens a new socket; same id, no reconnect events),
//!   as with the official clients.
//!
//! The server is started per test with `--port 0` and killed when the test ends.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use signalr_hub_client::{
    ClientStream, Error, HubConnection, HubConnectionBuilder, HubConnectionState, HubProtocol,
    TransportType,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Upper bound of any single step: a hang fails the check instead of blocking the test.
const STEP: Duration = Duration::from_secs(10);

/// Every transport × protocol cell the server can carry.
const CELLS: [(TransportType, HubProtocol); 5] = [
    (TransportType::WebSockets, HubProtocol::Json),
    (TransportType::WebSockets, HubProtocol::MessagePack),
    (TransportType::ServerSentEvents, HubProtocol::Json),
    (TransportType::LongPolling, HubProtocol::Json),
    (TransportType::LongPolling, HubProtocol::MessagePack),
];

/// `../shared/peers/dotnet-peer`, relative to the workspace root, if it is there. Also installs
/// a tracing subscriber (`RUST_LOG=signalr_hub_client=debug` shows the client's events).
fn peer_program() -> Option<PathBuf> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/dotnet-peer");
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "skipped: ../shared/peers not found ({} is absent), so the real ASP.NET Core server \
             is not available; nothing was tested",
            path.display()
        );
        None
    }
}

/// A running `dotnet-peer` program (server or proxy), killed on drop.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What followed `Listening on ` in its first line.
    address: String,
}

impl Peer {
    /// Starts `program args…` and waits for its `Listening on ADDRESS` line; the rest of its
    /// output is drained so that it never blocks on a full pipe.
    async fn start(program: &PathBuf, args: &[&str]) -> Peer {
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
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match lines.next_line().await.expect("read the peer's stdout") {
                    Some(line) => {
                        if let Some(address) = line.strip_prefix("Listening on ") {
                            break address.trim().to_owned();
                        }
                    }
                    None => panic!("dotnet-peer {args:?} ended before listening"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("dotnet-peer {args:?} did not listen within 30 s"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Peer {
            child,
            stdin,
            address,
        }
    }

    /// `dotnet-peer server --port 0`; `address` is its base URL (`http://127.0.0.1:PORT`).
    async fn server(program: &PathBuf) -> Peer {
        Peer::start(program, &["server", "--port", "0"]).await
    }

    /// `dotnet-peer server --port 0` with a 1 s keep-alive and a 4 s client timeout.
    async fn fast_keep_alive_server(program: &PathBuf) -> Peer {
        let args = [
            "server",
            "--port",
            "0",
            "--keepalive-seconds",
            "1",
            "--client-timeout-seconds",
            "4",
        ];
        Peer::start(program, &args).await
    }

    /// `dotnet-peer proxy --to HOST:PORT` in front of `server`; `address` is `127.0.0.1:PORT`.
    async fn proxy(program: &PathBuf, server: &Peer) -> Peer {
        let to = server
            .address
            .strip_prefix("http://")
            .expect("an http:// address")
            .to_owned();
        Peer::start(program, &["proxy", "--to", &to]).await
    }

    /// Writes one command line (`drop`, `pause`, `resume`) to the proxy.
    async fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the proxy");
        stdin.flush().await.expect("flush");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The outcome of one check: `Err` says what went wrong.
type Check = Result<(), String>;

/// Runs `future` with [`STEP`] as deadline.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP, future)
        .await
        .map_err(|_| format!("{what}: timed out after {STEP:?}"))
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Check {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// Invokes `method` and binds the result to `T`, as a check step.
async fn call<T: serde::de::DeserializeOwned + 'static>(
    connection: &HubConnection,
    method: &str,
    arguments: impl signalr_hub_client::IntoArguments,
) -> Result<T, String> {
    within(method, connection.invoke::<T>(method, arguments))
        .await?
        .map_err(|err| format!("{method}: {err}"))
}

/// Invokes `method`, which must fail with a server error of exactly `text`.
async fn call_fails(
    connection: &HubConnection,
    method: &str,
    arguments: impl signalr_hub_client::IntoArguments,
    text: &str,
) -> Check {
    match within(
        method,
        connection.invoke::<serde_json::Value>(method, arguments),
    )
    .await?
    {
        Ok(value) => Err(format!("{method}: succeeded with {value}, want an error")),
        Err(err) if !err.is_server_error() => Err(format!("{method}: not a server error: {err:?}")),
        Err(err) => expect_eq(method, err.to_string().as_str(), text),
    }
}

async fn next<T>(what: &str, receiver: &mut mpsc::UnboundedReceiver<T>) -> Result<T, String> {
    within(what, receiver.recv())
        .await?
        .ok_or_else(|| format!("{what}: channel closed"))
}

async fn quiet<T: std::fmt::Debug>(
    what: &str,
    receiver: &mut mpsc::UnboundedReceiver<T>,
    time: Duration,
) -> Check {
    match tokio::time::timeout(time, receiver.recv()).await {
        Ok(Some(item)) => Err(format!("{what}: expected nothing, got {item:?}")),
        _ => Ok(()),
    }
}

fn cell_name(transport: TransportType, protocol: HubProtocol) -> String {
    let protocol = match protocol {
        HubProtocol::Json => "JSON",
        HubProtocol::MessagePack => "MessagePack",
    };
    format!("{} {protocol}", transport.name())
}

fn builder(url: String, transport: TransportType, protocol: HubProtocol) -> HubConnectionBuilder {
    HubConnectionBuilder::new()
        .with_url(url)
        .with_transport(transport)
        .with_protocol(protocol)
}

async fn started(
    url: String,
    transport: TransportType,
    protocol: HubProtocol,
) -> Result<HubConnection, String> {
    let connection = builder(url, transport, protocol)
        .build()
        .map_err(|err| format!("build: {err}"))?;
    within("start", connection.start())
        .await?
        .map_err(|err| format!("start: {err}"))?;
    Ok(connection)
}

/// The `CustomObject` of the TestHub (PascalCase on the wire: the server's naming policy is off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CustomObject {
    name: String,
    value: i32,
}

/// Echo of non-ASCII text, the caller's connection id and the transport the server sees.
async fn check_invoke(c: &HubConnection, transport: TransportType) -> Check {
    let text = format!("héllo wörld 🌍 ✓ \u{1F600} {}", "x".repeat(1000));
    let echoed: String = call(c, "Echo", (text.clone(),)).await?;
    expect_eq("Echo", echoed, text)?;
    let null: Option<String> = call(c, "Echo", (None::<String>,)).await?;
    expect_eq("Echo(null)", null, None)?;
    let id: String = call(c, "GetCallerConnectionId", ()).await?;
    expect_eq("GetCallerConnectionId", Some(id), c.connection_id())?;
    let name: String = call(c, "GetActiveTransportName", ()).await?;
    expect_eq("GetActiveTransportName", name.as_str(), transport.name())?;
    let header: Option<String> = call(c, "GetHeader", ("X-Peer-Test",)).await?;
    expect_eq("GetHeader", header.as_deref(), Some("header-value"))
}

/// The server's exact error texts (detailed errors are on), and the connection survives them.
async fn check_errors(c: &HubConnection) -> Check {
    call_fails(
        c,
        "ThrowException",
        ("boom",),
        "An unexpected error occurred invoking 'ThrowException' on the server. \
         InvalidOperationException: boom",
    )
    .await?;
    call_fails(
        c,
        "ThrowHubException",
        ("custom",),
        "An unexpected error occurred invoking 'ThrowHubException' on the server. \
         HubException: custom",
    )
    .await?;
    call_fails(
        c,
        "NoSuchMethod",
        (),
        "Failed to invoke 'NoSuchMethod' due to an error on the server. \
         HubException: Method does not exist.",
    )
    .await?;
    call_fails(
        c,
        "Echo",
        ("a", "b"),
        "Failed to invoke 'Echo' due to an error on the server. \
         InvalidDataException: Invocation provides 2 argument(s) but target expects 1.",
    )
    .await?;
    call_fails(
        c,
        "EmptyStream",
        (),
        "The client attempted to invoke the streaming 'EmptyStream' method with a non-streaming \
         invocation.",
    )
    .await?;
    expect_eq(
        "state after errors",
        c.state(),
        HubConnectionState::Connected,
    )?;
    let echoed: String = call(c, "Echo", ("still",)).await?;
    expect_eq("Echo after errors", echoed.as_str(), "still")
}

/// InvokeWithString → client `Message`, SendCustomObject → client `CustomObject`, by invoke and
/// by send.
async fn check_client_methods(c: &HubConnection) -> Check {
    let (tx, mut messages) = mpsc::unbounded_channel();
    let _message = c.on("Message", move |(text,): (String,)| {
        let _ = tx.send(text);
    });
    let (tx, mut objects) = mpsc::unbounded_channel();
    let _object = c.on("customobject", move |(object,): (CustomObject,)| {
        let _ = tx.send(object);
    });
    let () = call(c, "InvokeWithString", ("ping-ü",)).await?;
    expect_eq(
        "Message",
        next("Message", &mut messages).await?.as_str(),
        "ping-ü",
    )?;
    within("send", c.send("InvokeWithString", ("ping-2",)))
        .await?
        .map_err(|err| format!("send: {err}"))?;
    expect_eq(
        "Message",
        next("Message", &mut messages).await?.as_str(),
        "ping-2",
    )?;
    let sent = CustomObject {
        name: "n1 ✓".to_owned(),
        value: 42,
    };
    let () = call(c, "SendCustomObject", (sent.clone(),)).await?;
    expect_eq(
        "CustomObject",
        next("CustomObject", &mut objects).await?,
        sent,
    )
}

/// Collects a server-to-client stream: its items, and the error that ended it, if any.
async fn collect(
    c: &HubConnection,
    method: &str,
    arguments: impl signalr_hub_client::IntoArguments,
) -> Result<(Vec<String>, Option<Error>), String> {
    let stream = within(method, c.stream::<serde_json::Value>(method, arguments))
        .await?
        .map_err(|err| format!("{method}: {err}"))?;
    let items: Vec<Result<serde_json::Value, Error>> = within(method, stream.collect()).await?;
    let mut values = Vec::new();
    let mut error = None;
    for item in items {
        match item {
            Ok(serde_json::Value::String(text)) => values.push(text),
            Ok(other) => values.push(other.to_string()),
            Err(err) if error.is_none() => error = Some(err),
            Err(err) => return Err(format!("{method}: a second error {err}")),
        }
    }
    Ok((values, error))
}

/// Stream → a, b, c; StreamWithError → a, b, then the server's error; EmptyStream → nothing;
/// StreamThrowException → only the error.
async fn check_streams(c: &HubConnection) -> Check {
    let (items, error) = collect(c, "Stream", ()).await?;
    expect_eq(
        "Stream",
        (items, error.map(|e| e.to_string())),
        (vec!["a".into(), "b".into(), "c".into()], None),
    )?;
    let (items, error) = collect(c, "EmptyStream", ()).await?;
    expect_eq(
        "EmptyStream",
        (items.len(), error.map(|e| e.to_string())),
        (0, None),
    )?;
    let (items, error) = collect(c, "StreamWithError", ("mid",)).await?;
    expect_eq(
        "StreamWithError items",
        items,
        vec!["a".to_owned(), "b".to_owned()],
    )?;
    let error = error.ok_or("StreamWithError: ended without an error")?;
    if !error.is_server_error() {
        return Err(format!("StreamWithError: not a server error: {error:?}"));
    }
    expect_eq(
        "StreamWithError error",
        error.to_string().as_str(),
        "An error occurred on the server while streaming results. InvalidOperationException: mid",
    )?;
    let (items, error) = collect(c, "StreamThrowException", ("bad",)).await?;
    expect_eq(
        "StreamThrowException",
        (items.len(), error.map(|e| e.to_string())),
        (
            0,
            Some(
                "An unexpected error occurred invoking 'StreamThrowException' on the server. \
                 InvalidOperationException: bad"
                    .to_owned(),
            ),
        ),
    )
}

/// InfiniteStream, dropped after a while: the server's token fires and it calls the client's
/// `StreamCanceled`.
async fn check_cancel(c: &HubConnection) -> Check {
    let (tx, mut canceled) = mpsc::unbounded_channel();
    let _canceled = c.on("StreamCanceled", move |(): ()| {
        let _ = tx.send(());
    });
    let stream = within("InfiniteStream", c.stream::<String>("InfiniteStream", ()))
        .await?
        .map_err(|err| format!("InfiniteStream: {err}"))?;
    quiet(
        "InfiniteStream before cancel",
        &mut canceled,
        Duration::from_millis(300),
    )
    .await?;
    drop(stream);
    next("StreamCanceled", &mut canceled).await?;
    let echoed: String = call(c, "Echo", ("after cancel",)).await?;
    expect_eq("Echo after cancel", echoed.as_str(), "after cancel")
}

/// StreamingConcat with an upload stream (items spaced out, non-ASCII), one of 20 items, and one
/// that fails on the client side (the call fails, the connection stays).
async fn check_upload(c: &HubConnection) -> Check {
    let spaced = futures_util::stream::iter(["a", "b", "c", "ü"]).then(|item| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        item
    });
    let joined: String = call(c, "StreamingConcat", (ClientStream::new(spaced),)).await?;
    expect_eq("StreamingConcat", joined.as_str(), "abcü")?;
    let many = futures_util::stream::iter((0..20).map(|i| i.to_string()));
    let joined: String = call(c, "StreamingConcat", (ClientStream::new(many),)).await?;
    let want: String = (0..20).map(|i| i.to_string()).collect();
    expect_eq("StreamingConcat of 20", joined, want)?;
    let failing = futures_util::stream::iter(vec![Ok("a"), Err("client side failure")]);
    match within(
        "StreamingConcat with an error",
        c.invoke::<String>("StreamingConcat", (ClientStream::try_new(failing),)),
    )
    .await?
    {
        Ok(joined) => return Err(format!("StreamingConcat with an error: got {joined:?}")),
        // The server completes the upload stream with the client's error text, as a HubException.
        Err(err) if err.is_server_error() => expect_eq(
            "StreamingConcat with an error",
            err.to_string().as_str(),
            "An unexpected error occurred invoking 'StreamingConcat' on the server. \
             HubException: client side failure",
        )?,
        Err(err) => return Err(format!("StreamingConcat with an error: {err:?}")),
    }
    expect_eq(
        "state after a failed upload",
        c.state(),
        HubConnectionState::Connected,
    )
}

/// `GET /clientresult/{connectionId}` makes the server invoke the client's `Result()` and answers
/// with its int.
async fn check_client_result(c: &HubConnection, base: &str) -> Check {
    let _result = c.on("Result", |(): ()| Some(10));
    let id = c.connection_id().ok_or("no connection id")?;
    let url = format!("{base}/clientresult/{id}");
    let text = within("GET /clientresult", async {
        reqwest::get(&url).await?.error_for_status()?.text().await
    })
    .await?
    .map_err(|err| format!("GET /clientresult: {err}"))?;
    expect_eq("client result", text.trim(), "10")?;
    // A handler that answers nothing: the server's invocation fails with the client's text.
    let _none = c.on("Result", |(): ()| None::<i32>);
    drop(_result);
    let text = within("GET /clientresult", async {
        reqwest::get(&url).await?.error_for_status()?.text().await
    })
    .await?
    .map_err(|err| format!("GET /clientresult: {err}"))?;
    expect_eq(
        "no client result",
        text.trim(),
        "Client didn't provide a result.",
    )
}

/// JoinGroup / SendToGroup / LeaveGroup, with a second connection of the same cell sending.
async fn check_groups(
    c: &HubConnection,
    url: &str,
    transport: TransportType,
    protocol: HubProtocol,
) -> Check {
    let other = started(url.to_owned(), transport, protocol).await?;
    let group = format!("group {}", cell_name(transport, protocol));
    let (tx, mut received) = mpsc::unbounded_channel();
    let _member = c.on("GroupMessage", move |(g, m): (String, String)| {
        let _ = tx.send(format!("{g}:{m}"));
    });
    let (tx, mut outsider) = mpsc::unbounded_channel();
    let _outsider = other.on("GroupMessage", move |(g, m): (String, String)| {
        let _ = tx.send(format!("{g}:{m}"));
    });
    let outcome = async {
        let () = call(c, "JoinGroup", (group.clone(),)).await?;
        let () = call(&other, "SendToGroup", (group.clone(), "hi")).await?;
        expect_eq(
            "GroupMessage",
            next("GroupMessage", &mut received).await?,
            format!("{group}:hi"),
        )?;
        let () = call(&other, "SendToGroup", ("another group", "not-mine")).await?;
        let () = call(c, "LeaveGroup", (group.clone(),)).await?;
        let () = call(&other, "SendToGroup", (group.clone(), "after-leave")).await?;
        quiet(
            "GroupMessage after leaving",
            &mut received,
            Duration::from_millis(300),
        )
        .await?;
        quiet(
            "GroupMessage to a non-member",
            &mut outsider,
            Duration::from_millis(1),
        )
        .await
    }
    .await;
    within("stop the second connection", other.stop()).await?;
    outcome
}

/// The fields of the TestHub's `ComplexObject` that bind the same way in both protocols (its
/// `ByteArray` is base64 text in JSON but MessagePack binary, its `DateTime` ISO 8601 text in
/// JSON but a MessagePack timestamp extension: ignored here, checked for JSON below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ComplexObject {
    string: String,
    int_array: Vec<i32>,
    guid: String,
}

/// SendComplexObject / EchoComplexObject: PascalCase members both ways, unknown binary and
/// extension values skipped, and (JSON) the server's byte array and date texts.
async fn check_complex(c: &HubConnection, protocol: HubProtocol) -> Check {
    let sent: ComplexObject = call(c, "SendComplexObject", ()).await?;
    expect_eq(
        "SendComplexObject",
        sent,
        ComplexObject {
            string: "hello world".to_owned(),
            int_array: vec![1, 2, 3],
            guid: "00010203-0405-0607-0706-050403020100".to_owned(),
        },
    )?;
    let input = ComplexObject {
        string: "s ✓".to_owned(),
        int_array: vec![4, 5],
        guid: "11111111-2222-3333-4444-555555555555".to_owned(),
    };
    let echoed: ComplexObject = call(c, "EchoComplexObject", (input.clone(),)).await?;
    expect_eq("EchoComplexObject", echoed, input)?;
    if protocol == HubProtocol::Json {
        let value: serde_json::Value = call(c, "SendComplexObject", ()).await?;
        expect_eq(
            "SendComplexObject as JSON",
            (&value["ByteArray"], &value["DateTime"]),
            (
                &serde_json::json!("AQID"),
                &serde_json::json!("2000-01-01T00:00:00Z"),
            ),
        )?;
    }
    Ok(())
}

/// 50 invocations at once: every result comes back to its own call.
async fn check_parallel(c: &HubConnection) -> Check {
    let calls = (0..50).map(|i| c.invoke::<String>("Echo", (format!("m{i}"),)));
    let results = within("50 invocations", futures_util::future::join_all(calls)).await?;
    let results: Result<Vec<String>, Error> = results.into_iter().collect();
    let want: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    expect_eq("results", results.map_err(|e| e.to_string()), Ok(want))
}

/// `stop()`: Closed without an error, state Disconnected, calls refused.
async fn check_stop(
    c: &HubConnection,
    closed: &mut mpsc::UnboundedReceiver<Option<Error>>,
) -> Check {
    within("stop", c.stop()).await?;
    let error = next("closed", closed).await?;
    expect_eq("closed error", error.map(|e| e.to_string()), None)?;
    expect_eq("state", c.state(), HubConnectionState::Disconnected)?;
    match c.invoke::<String>("Echo", ("x",)).await {
        Err(err) if err.is_closed() => Ok(()),
        other => Err(format!("invoke after stop: {other:?}")),
    }
}

/// The features of one cell, in order, with their outcomes.
async fn run_cell(
    base: &str,
    transport: TransportType,
    protocol: HubProtocol,
) -> Vec<(&'static str, Check)> {
    let url = format!("{base}/testhub");
    let connection = match builder(url.clone(), transport, protocol)
        .with_header("X-Peer-Test", "header-value")
        .build()
    {
        Ok(connection) => connection,
        Err(err) => return vec![("start", Err(format!("build: {err}")))],
    };
    let (tx, mut closed) = mpsc::unbounded_channel();
    connection.on_closed(move |error| {
        let _ = tx.send(error);
    });
    let start = match within("start", connection.start()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("start: {err}")),
        Err(err) => Err(err),
    };
    let mut results = vec![("start", start.clone())];
    if start.is_err() {
        return results;
    }
    let c = &connection;
    results.push(("invoke", check_invoke(c, transport).await));
    results.push(("errors", check_errors(c).await));
    results.push(("client methods", check_client_methods(c).await));
    results.push(("streams", check_streams(c).await));
    results.push(("stream cancel", check_cancel(c).await));
    results.push(("upload streams", check_upload(c).await));
    results.push(("complex objects", check_complex(c, protocol).await));
    results.push(("50 parallel", check_parallel(c).await));
    results.push(("client result", check_client_result(c, base).await));
    results.push(("groups", check_groups(c, &url, transport, protocol).await));
    results.push(("stop", check_stop(c, &mut closed).await));
    results
}

/// Prints the outcomes and fails with every failure.
fn report(title: &str, outcomes: &[(String, Vec<(&'static str, Check)>)]) {
    println!("{title}");
    let mut failures = Vec::new();
    for (cell, checks) in outcomes {
        for (feature, outcome) in checks {
            match outcome {
                Ok(()) => println!("  {cell:<28} {feature:<16} pass"),
                Err(why) => {
                    println!("  {cell:<28} {feature:<16} FAIL  {why}");
                    failures.push(format!("{cell} / {feature}: {why}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_and_protocol() {
    let Some(program) = peer_program() else {
        return;
    };
    let started_at = Instant::now();
    let server = Peer::server(&program).await;
    let base = server.address.clone();
    let cells = CELLS.map(|(transport, protocol)| {
        let base = base.clone();
        async move {
            (
                cell_name(transport, protocol),
                run_cell(&base, transport, protocol).await,
            )
        }
    });
    let mut outcomes = futures_util::future::join_all(cells).await;

    // Server-Sent Events cannot carry MessagePack: the real server offers SSE for text only, and
    // the client refuses the cell without trying it.
    let refused = async {
        let connection = builder(
            format!("{base}/testhub"),
            TransportType::ServerSentEvents,
            HubProtocol::MessagePack,
        )
        .build()
        .map_err(|err| format!("build: {err}"))?;
        match within("start", connection.start()).await? {
            Ok(()) => Err("started, want a refusal".to_owned()),
            Err(err) if err.is_transport() => expect_eq(
                "start error",
                err.to_string().as_str(),
                "Unable to connect to the server with any of the available transports. \
                 WebSockets failed: 'WebSockets' is disabled by the client. \
                 ServerSentEvents failed: 'ServerSentEvents' does not support Binary. \
                 LongPolling failed: 'LongPolling' is disabled by the client.",
            ),
            Err(err) => Err(format!("start: {err:?}")),
        }
    }
    .await;
    outcomes.push((
        cell_name(TransportType::ServerSentEvents, HubProtocol::MessagePack),
        vec![("refused", refused)],
    ));
    report(
        &format!(
            "ASP.NET Core TestHub, every cell ({:.1} s):",
            started_at.elapsed().as_secs_f64()
        ),
        &outcomes,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints() {
    let Some(program) = peer_program() else {
        return;
    };
    let server = Peer::server(&program).await;
    let base = server.address.clone();
    let token = reqwest::get(format!("{base}/generateJwtToken?user=alice"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("GET /generateJwtToken")
        .text()
        .await
        .expect("token");
    let token = Arc::new(token);
    let cells = CELLS.map(|(transport, protocol)| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            let mut checks: Vec<(&'static str, Check)> = Vec::new();
            // Negotiate at /redirect answers with the hub's URL and an access token.
            let redirect = async {
                let url = format!("{base}/redirect?baseUrl={base}");
                let c = started(url, transport, protocol).await?;
                let echoed: String = call(&c, "Echo", ("via-redirect",)).await?;
                expect_eq("Echo", echoed.as_str(), "via-redirect")?;
                let redirects: i32 = call(&c, "GetNumRedirects", ()).await?;
                if redirects < 1 {
                    return Err(format!("GetNumRedirects: {redirects}"));
                }
                let name: String = call(&c, "GetActiveTransportName", ()).await?;
                expect_eq("GetActiveTransportName", name.as_str(), transport.name())?;
                within("stop", c.stop()).await
            }
            .await;
            checks.push(("redirect", redirect));
            // The [Authorize] hub: 401 at negotiate without a token, a working connection with one.
            let refused = async {
                let c = builder(format!("{base}/authorizedhub"), transport, protocol)
                    .build()
                    .map_err(|err| format!("build: {err}"))?;
                match within("start", c.start()).await? {
                    Ok(()) => Err("started without a token".to_owned()),
                    Err(err) if err.is_negotiate() => expect_eq("status", err.status(), Some(401)),
                    Err(err) => Err(format!("start without a token: {err:?}")),
                }
            }
            .await;
            checks.push(("401 without JWT", refused));
            let authorized = async {
                let token = token.clone();
                let c = builder(format!("{base}/authorizedhub"), transport, protocol)
                    .with_access_token_provider(move || {
                        let token = token.clone();
                        async move { token.as_str().to_owned() }
                    })
                    .build()
                    .map_err(|err| format!("build: {err}"))?;
                within("start", c.start())
                    .await?
                    .map_err(|err| format!("start: {err}"))?;
                let echoed: String = call(&c, "Echo", ("auth",)).await?;
                expect_eq("Echo", echoed.as_str(), "auth")?;
                let user: String = call(&c, "GetUserIdentifier", ()).await?;
                expect_eq("GetUserIdentifier", user.as_str(), "alice")?;
                within("stop", c.stop()).await
            }
            .await;
            checks.push(("JWT", authorized));
            (cell_name(transport, protocol), checks)
        }
    });
    let (mut outcomes, endpoints) = tokio::join!(
        futures_util::future::join_all(cells),
        endpoint_checks(&base)
    );
    outcomes.extend(endpoints);
    report("ASP.NET Core endpoints:", &outcomes);
}

/// Endpoint-level behaviour, once per protocol where it matters.
async fn endpoint_checks(base: &str) -> Vec<(String, Vec<(&'static str, Check)>)> {
    let mut outcomes = Vec::new();
    // Every transport allowed, a hub without WebSockets: JSON picks Server-Sent Events, MessagePack
    // (which SSE cannot carry) long polling.
    for (protocol, want) in [
        (HubProtocol::Json, TransportType::ServerSentEvents),
        (HubProtocol::MessagePack, TransportType::LongPolling),
    ] {
        let fallback = async {
            let c = HubConnectionBuilder::new()
                .with_url(format!("{base}/testhub-nowebsockets"))
                .with_protocol(protocol)
                .build()
                .map_err(|err| format!("build: {err}"))?;
            within("start", c.start())
                .await?
                .map_err(|err| format!("start: {err}"))?;
            let name: String = call(&c, "GetActiveTransportName", ()).await?;
            expect_eq("GetActiveTransportName", name.as_str(), want.name())?;
            within("stop", c.stop()).await
        }
        .await;
        outcomes.push((
            format!("fallback {}", cell_name(want, protocol)),
            vec![("no-WebSockets hub", fallback)],
        ));
    }
    let skip = async {
        let c = builder(
            format!("{base}/testhub"),
            TransportType::WebSockets,
            HubProtocol::Json,
        )
        .skip_negotiation(true)
        .build()
        .map_err(|err| format!("build: {err}"))?;
        within("start", c.start())
            .await?
            .map_err(|err| format!("start: {err}"))?;
        let echoed: String = call(&c, "Echo", ("skip",)).await?;
        expect_eq("Echo", echoed.as_str(), "skip")?;
        expect_eq("connection id", c.connection_id(), None)?;
        within("stop", c.stop()).await
    }
    .await;
    let bad = async {
        let c = HubConnectionBuilder::new()
            .with_url(format!("{base}/bad-negotiate"))
            .build()
            .map_err(|err| format!("build: {err}"))?;
        match within("start", c.start()).await? {
            Ok(()) => Err("started".to_owned()),
            Err(err) if err.is_negotiate() => expect_eq(
                "start error",
                (err.to_string().as_str(), err.status()),
                (
                    "Failed to complete negotiation with the server: \
                     Unexpected status code returned from negotiate '400'",
                    Some(400),
                ),
            ),
            Err(err) => Err(format!("start: {err:?}")),
        }
    }
    .await;
    let restart = async {
        let c = started(
            format!("{base}/testhub"),
            TransportType::WebSockets,
            HubProtocol::Json,
        )
        .await?;
        let first = c.connection_id();
        within("stop", c.stop()).await?;
        within("restart", c.start())
            .await?
            .map_err(|err| format!("restart: {err}"))?;
        if c.connection_id() == first || c.connection_id().is_none() {
            return Err(format!(
                "id after restart {:?}, first {first:?}",
                c.connection_id()
            ));
        }
        let echoed: String = call(&c, "Echo", ("again",)).await?;
        expect_eq("Echo", echoed.as_str(), "again")?;
        within("stop", c.stop()).await
    }
    .await;
    // A hub that allows stateful reconnect: this client never asks for it, so the server treats
    // the connection as a plain one.
    let stateful = async {
        let c = started(
            format!("{base}/testhub-stateful"),
            TransportType::WebSockets,
            HubProtocol::Json,
        )
        .await?;
        let echoed: String = call(&c, "Echo", ("plain",)).await?;
        expect_eq("Echo", echoed.as_str(), "plain")?;
        within("stop", c.stop()).await
    }
    .await;
    let oversized = async {
        let c = builder(
            format!("{base}/testhub"),
            TransportType::WebSockets,
            HubProtocol::Json,
        )
        .build()
        .map_err(|err| format!("build: {err}"))?;
        let (tx, mut closed) = mpsc::unbounded_channel();
        c.on_closed(move |error| {
            let _ = tx.send(error);
        });
        within("start", c.start())
            .await?
            .map_err(|err| format!("start: {err}"))?;
        // Beyond the server's 32 KiB limit: it closes the connection with an error (a Close
        // message without allowReconnect), which fails the pending call and closes the client.
        let text = "Server returned an error on close: Connection closed with an error. \
                    InvalidDataException: The maximum message size of 32768B was exceeded. \
                    The message size can be configured in AddHubOptions.";
        match within("Echo", c.invoke::<String>("Echo", ("y".repeat(40_000),))).await? {
            Ok(_) => return Err("an oversized Echo succeeded".to_owned()),
            Err(err) if err.is_closed() => expect_eq(
                "Echo error",
                err.to_string().as_str(),
                "Invocation canceled due to the underlying connection being closed.",
            )?,
            Err(err) => return Err(format!("Echo: {err:?}")),
        }
        let error = next("closed", &mut closed)
            .await?
            .ok_or("closed without an error")?;
        if !error.is_server_close() {
            return Err(format!("closed with {error:?}"));
        }
        expect_eq("closed error", error.to_string().as_str(), text)?;
        expect_eq("state", c.state(), HubConnectionState::Disconnected)
    }
    .await;
    outcomes.push((
        "WebSockets JSON".to_owned(),
        vec![
            ("skip negotiation", skip),
            ("bad negotiate", bad),
            ("restart", restart),
            ("stateful hub", stateful),
            ("oversized", oversized),
        ],
    ));
    outcomes
}

/// Lifetime events of a connection, as text.
fn record_events(c: &HubConnection) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (t1, t2, t3) = (tx.clone(), tx.clone(), tx);
    c.on_reconnecting(move |error| {
        let _ = t1.send(format!("reconnecting: {error}"));
    });
    c.on_reconnected(move |id| {
        let _ = t2.send(format!("reconnected {}", id.unwrap_or_default()));
    });
    c.on_closed(move |error| {
        let _ = t3.send(format!("closed: {error:?}"));
    });
    rx
}

/// One connection through its own proxy; the proxy cuts every TCP connection once.
async fn drop_network(
    program: &PathBuf,
    server: &Peer,
    transport: TransportType,
    protocol: HubProtocol,
) -> Check {
    let mut proxy = Peer::proxy(program, server).await;
    let url = format!("http://{}/testhub", proxy.address);
    let c = builder(url, transport, protocol)
        .with_automatic_reconnect_delays(vec![
            Duration::ZERO,
            Duration::from_millis(200),
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ])
        .build()
        .map_err(|err| format!("build: {err}"))?;
    let mut events = record_events(&c);
    within("start", c.start())
        .await?
        .map_err(|err| format!("start: {err}"))?;
    let first = c.connection_id().ok_or("no connection id")?;
    proxy.command("drop").await;
    if transport == TransportType::LongPolling {
        // A cut poll is no disconnect: the next poll goes out on a new socket.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let echoed: String = call(&c, "Echo", ("after",)).await?;
        expect_eq("Echo after the drop", echoed.as_str(), "after")?;
        expect_eq("connection id", c.connection_id(), Some(first.clone()))?;
        let server_id: String = call(&c, "GetCallerConnectionId", ()).await?;
        expect_eq("the server's id", server_id, first)?;
        quiet("lifetime events", &mut events, Duration::from_millis(200)).await?;
    } else {
        let event = next("reconnecting", &mut events).await?;
        if !event.starts_with("reconnecting") {
            return Err(format!("want reconnecting, got {event}"));
        }
        let event = next("reconnected", &mut events).await?;
        let id = event
            .strip_prefix("reconnected ")
            .ok_or_else(|| format!("want reconnected, got {event}"))?
            .to_owned();
        if id == first || id.is_empty() {
            return Err(format!("reconnected with id {id:?}, first was {first:?}"));
        }
        expect_eq("connection id", c.connection_id(), Some(id.clone()))?;
        let echoed: String = call(&c, "Echo", ("after",)).await?;
        expect_eq("Echo after reconnect", echoed.as_str(), "after")?;
        let server_id: String = call(&c, "GetCallerConnectionId", ()).await?;
        expect_eq("the server's id", server_id, id)?;
    }
    within("stop", c.stop()).await?;
    let event = next("closed", &mut events).await?;
    expect_eq("closed", event.as_str(), "closed: None")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_drop() {
    let Some(program) = peer_program() else {
        return;
    };
    let server = Peer::server(&program).await;
    let cells = CELLS.map(|(transport, protocol)| {
        let (program, server) = (&program, &server);
        async move {
            (
                cell_name(transport, protocol),
                vec![(
                    "network drop",
                    drop_network(program, server, transport, protocol).await,
                )],
            )
        }
    });
    let outcomes = futures_util::future::join_all(cells).await;
    report(
        "ASP.NET Core behind a proxy that cuts every connection:",
        &outcomes,
    );
}

/// An idle connection to a server with a 1 s keep-alive and a 4 s client timeout, with a client
/// that pings every second and times the server out after 4 s: neither side gives up during 6 s
/// of silence (long polling needs no pings: its poll cycle is the keep-alive), and calls work
/// afterwards.
async fn idle(base: &str, transport: TransportType, protocol: HubProtocol) -> Check {
    let c = builder(format!("{base}/testhub"), transport, protocol)
        .keep_alive_interval(Duration::from_secs(1))
        .server_timeout(Duration::from_secs(4))
        .with_automatic_reconnect()
        .build()
        .map_err(|err| format!("build: {err}"))?;
    let mut events = record_events(&c);
    within("start", c.start())
        .await?
        .map_err(|err| format!("start: {err}"))?;
    let id = c.connection_id();
    quiet(
        "lifetime events while idle",
        &mut events,
        Duration::from_secs(6),
    )
    .await?;
    expect_eq("state", c.state(), HubConnectionState::Connected)?;
    expect_eq("connection id", c.connection_id(), id)?;
    let echoed: String = call(&c, "Echo", ("still",)).await?;
    expect_eq("Echo after 6 s idle", echoed.as_str(), "still")?;
    within("stop", c.stop()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive() {
    let Some(program) = peer_program() else {
        return;
    };
    let server = Peer::fast_keep_alive_server(&program).await;
    let cells = CELLS.map(|(transport, protocol)| {
        let base = server.address.clone();
        async move {
            (
                cell_name(transport, protocol),
                vec![("idle 6 s", idle(&base, transport, protocol).await)],
            )
        }
    });
    let outcomes = futures_util::future::join_all(cells).await;
    report(
        "ASP.NET Core with a 1 s keep-alive and a 4 s client timeout:",
        &outcomes,
    );
}
