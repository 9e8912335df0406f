//! Interop beyond our own server: this client against `aiosignalr`'s server (PyPI 0.1.1).
//!
//! Works (asserted): WebSockets × JSON — where the official TS client cannot even start, because
//! aiosignalr sends JSON in *binary* WebSocket frames, which this client tolerates — and
//! Server-Sent Events × JSON: invoke with a complex non-ASCII value, send + a client method,
//! a server-to-client stream, a server error.
//!
//! aiosignalr's faults (asserted to still fail, so a fixed version gets noticed; the official TS
//! client fails the same way):
//! - MessagePack: empty headers are written as the integer 128 (`_EMPTY_HEADERS = 0x80` packed by
//!   msgpack as `cc 80`) instead of an empty map, so the first Completion is invalid (TS client:
//!   "Invalid headers.").
//! - Long polling: the first poll waits for data instead of returning 200 at once (docs/protocol.md, "Long polling"), so no
//!   client can send its handshake and `start()` never completes.
//!
//! Needs a Python with `aiosignalr` installed: set `AIOSIGNALR_PYTHON` to it
//! (`./scripts/test.sh` makes a venv from `interop/aiosignalr/requirements.txt` and runs
//! `cargo test -p signalr-hub-client --test aiosignalr -- --ignored`). The hub is
//! `interop/aiosignalr/server.py`.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use signalr_hub_client::{HubConnectionBuilder, HubProtocol, TransportType};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct PythonServer {
    child: Child,
    url: String,
}

async fn start_server() -> PythonServer {
    let python = std::env::var("AIOSIGNALR_PYTHON").expect(
        "AIOSIGNALR_PYTHON must name a Python with aiosignalr installed (see ./scripts/test.sh)",
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../interop/aiosignalr/server.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .arg("--port")
        .arg("0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the aiosignalr server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("server starts within 20 s")
        .expect("read stdout")
        .expect("a line");
    let base = line
        .strip_prefix("Listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    PythonServer {
        child,
        url: format!("{base}/chat"),
    }
}

/// Runs the checks of one cell; returns what failed, if anything.
async fn check(url: &str, transport: TransportType, protocol: HubProtocol) -> Result<(), String> {
    let connection = HubConnectionBuilder::new()
        .with_url(url)
        .with_transport(transport)
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _subscription = connection.on("ReceiveMessage", move |(user, text): (String, String)| {
        let _ = tx.send((user, text));
    });
    let within = |what: &'static str| move |_| format!("{what}: timed out");
    let t = Duration::from_secs(10);
    tokio::time::timeout(t, connection.start())
        .await
        .map_err(within("start"))?
        .map_err(|e| format!("start: {e}"))?;
    let echoed: serde_json::Value = tokio::time::timeout(
        t,
        connection.invoke(
            "Echo",
            (serde_json::json!({"text": "héllo ✓", "n": [1, 2]}),),
        ),
    )
    .await
    .map_err(within("invoke"))?
    .map_err(|e| format!("invoke: {e}"))?;
    if echoed != serde_json::json!({"text": "héllo ✓", "n": [1, 2]}) {
        return Err(format!("invoke: echoed {echoed}"));
    }
    connection
        .send("SendMessage", ("ann", "hi"))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let received = tokio::time::timeout(t, rx.recv())
        .await
        .map_err(within("ReceiveMessage"))?;
    if received != Some(("ann".to_owned(), "hi".to_owned())) {
        return Err(format!("ReceiveMessage: {received:?}"));
    }
    let stream = tokio::time::timeout(t, connection.stream::<u32>("Count", (3,)))
        .await
        .map_err(within("stream"))?
        .map_err(|e| format!("stream: {e}"))?;
    let items: Vec<Result<u32, _>> = tokio::time::timeout(t, stream.collect())
        .await
        .map_err(within("stream items"))?;
    let items: Result<Vec<u32>, _> = items.into_iter().collect();
    match items {
        Ok(items) if items == [1, 2, 3] => {}
        other => return Err(format!("stream: {other:?}")),
    }
    let error = tokio::time::timeout(t, connection.invoke::<()>("Fail", ("boom",)))
        .await
        .map_err(within("server error"))?
        .expect_err("Fail must fail");
    if !error.is_server_error() {
        return Err(format!("server error: {error}"));
    }
    tokio::time::timeout(t, connection.stop())
        .await
        .map_err(within("stop"))?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs Python with aiosignalr: run through ./scripts/test.sh"]
async fn client_against_aiosignalr_server() {
    let mut server = start_server().await;
    // (transport, protocol, works, the failure aiosignalr 0.1.1 causes otherwise)
    let cells = [
        (TransportType::WebSockets, HubProtocol::Json, true, ""),
        (TransportType::ServerSentEvents, HubProtocol::Json, true, ""),
        (
            TransportType::WebSockets,
            HubProtocol::MessagePack,
            false,
            "invoke:",
        ),
        (
            TransportType::LongPolling,
            HubProtocol::Json,
            false,
            "start: timed out",
        ),
        (
            TransportType::LongPolling,
            HubProtocol::MessagePack,
            false,
            "start: timed out",
        ),
    ];
    let mut report = Vec::new();
    for (transport, protocol, works, failure) in cells {
        let outcome = check(&server.url, transport, protocol).await;
        println!("{transport:?} × {protocol:?}: {outcome:?}");
        report.push((transport, protocol, works, failure, outcome));
    }
    let _ = server.child.kill().await;
    for (transport, protocol, works, failure, outcome) in &report {
        if *works {
            assert!(outcome.is_ok(), "{transport:?} × {protocol:?}: {outcome:?}");
        } else {
            let error = outcome
                .as_ref()
                .expect_err("aiosignalr fixed this cell: update the test and the docs");
            assert!(
                error.starts_with(failure),
                "{transport:?} × {protocol:?}: {error}"
            );
        }
    }
}
