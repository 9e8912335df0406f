//! Beside the official classic client: one script of calls, run by `dotnet-peer classic-call`
//! (`Microsoft.AspNet.SignalR.Client` 2.4.2) and by our classic client against the real
//! SignalR 2.4.1 server (`classic-peer`), on each transport; both must print the same lines
//! (results, errors with their data, client-method calls, progress, caller state, events), the
//! connection ids aside, and client-method calls compared among themselves (their interleaving
//! with results is not defined: it differs between transports for the official client too; on SSE
//! and long polling so is the number of progress reports seen before the result). Needs `../shared/peers`; without it the test prints why it is skipped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use signalr_hub_client::classic::{ClassicHubConnection, ClassicTransport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

const SCRIPT: &[&str] = &[
    "on message",
    "on groupMessage",
    "invoke Echo [\"hi\"]",
    "invoke Add [2, 3]",
    "invoke EchoObject [{\"Name\":\"n\",\"Value\":1}]",
    "invoke ThrowHubException [\"boom\"]",
    "invoke ThrowException [\"secret\"]",
    "invoke InvokeWithString [\"to caller\"]",
    "wait 300",
    "progress CountWithProgress [3]",
    "state name \"ann\"",
    "state count 1",
    "invoke GetStateName",
    "getstate greeted",
    "getstate count",
    "invoke JoinGroup [\"g\"]",
    "invoke SendToGroup [\"g\", \"hello group\"]",
    "wait 300",
    "invoke Overload [1, 2]",
    "invoke Nope",
    "id",
    "stop",
];

fn peers() -> Option<(PathBuf, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers");
    let (dotnet, classic) = (dir.join("dotnet-peer"), dir.join("classic-peer"));
    if dotnet.is_file() && classic.is_file() {
        Some((dotnet, classic))
    } else {
        println!(
            "skipped: ../shared/peers not found ({} is absent), so the official classic client \
             and the real SignalR 2.4 server are not available; nothing was tested",
            dir.display()
        );
        None
    }
}

/// The official client's lines for `SCRIPT`.
async fn official(program: &PathBuf, url: &str, transport: &str) -> Vec<String> {
    let mut child = Command::new(program)
        .args([
            "classic-call",
            "--url",
            url,
            "--hub",
            "TestHub",
            "--transport",
            transport,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start dotnet-peer classic-call");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all((SCRIPT.join("\n") + "\n").as_bytes())
        .await
        .expect("write the script");
    drop(stdin);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut out = Vec::new();
    let collect = async {
        while let Ok(Some(line)) = lines.next_line().await {
            out.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("classic-call ended within 60 s");
    out
}

fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Our client running `SCRIPT`, printing what `classic-call` prints.
async fn ours(root: &str, transport: ClassicTransport) -> Vec<String> {
    let mut out = Vec::new();
    let connection = ClassicHubConnection::builder(root)
        .with_transport(transport)
        .build()
        .expect("build");
    let hub = connection.create_hub_proxy("TestHub");
    let (calls_tx, mut calls) = mpsc::unbounded_channel::<String>();
    let mut subscriptions = Vec::new();
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<()>();
    connection.on_closed(move || {
        let _ = closed_tx.send(());
    });
    let mut started = false;
    let drain = |calls: &mut mpsc::UnboundedReceiver<String>, out: &mut Vec<String>| {
        while let Ok(line) = calls.try_recv() {
            out.push(line);
        }
    };
    for line in SCRIPT {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        if command != "on" && !started {
            connection.start().await.expect("start");
            out.push(format!(
                "connected {} {}",
                connection.connection_id().unwrap_or_default(),
                connection.transport().map_or("?", ClassicTransport::name)
            ));
            started = true;
        }
        drain(&mut calls, &mut out);
        match command {
            "on" => {
                let method = rest.to_owned();
                let tx = calls_tx.clone();
                subscriptions.push(hub.on(&method.clone(), move |args: Value| {
                    let _ = tx.send(format!("call {method} {}", json_text(&args)));
                }));
                out.push(format!("on {rest}"));
            }
            "invoke" | "progress" => {
                let (method, args) = rest.split_once(' ').unwrap_or((rest, "[]"));
                let args: Vec<Value> = serde_json::from_str(args).expect("JSON arguments");
                let result = if command == "progress" {
                    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
                    let result = hub
                        .invoke_with_progress::<Value, Value>(method, args, move |p| {
                            let _ = tx.send(p);
                        })
                        .await;
                    while let Ok(p) = rx.try_recv() {
                        out.push(format!("progress {}", json_text(&p)));
                    }
                    result
                } else {
                    hub.invoke::<Value>(method, args).await
                };
                drain(&mut calls, &mut out);
                out.push(match result {
                    Ok(value) => format!("result {}", json_text(&value)),
                    Err(err) if err.is_hub_exception() => match err.error_data() {
                        Some(data) => format!("error HubException: {err} data {}", json_text(data)),
                        None => format!("error HubException: {err}"),
                    },
                    Err(err) => format!("error InvalidOperationException: {err}"),
                });
            }
            "state" => {
                let (key, value) = rest.split_once(' ').expect("state KEY JSON");
                let value: Value = serde_json::from_str(value).expect("JSON state");
                hub.set_state(key, value);
            }
            "getstate" => {
                let value = hub.get_state(rest).unwrap_or(Value::Null);
                out.push(format!("state {rest} {}", json_text(&value)));
            }
            "wait" => {
                let ms: u64 = rest.parse().expect("milliseconds");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            "id" => out.push(format!(
                "id {}",
                connection.connection_id().unwrap_or_default()
            )),
            "stop" => {
                connection.stop().await;
                let _ = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
                drain(&mut calls, &mut out);
                out.push("closed".to_owned());
                break;
            }
            other => panic!("unknown command {other}"),
        }
    }
    out
}

/// The lines with connection ids replaced by `ID`, JSON parts compared as values.
fn normalize(lines: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix("connected ") {
            ids.extend(rest.split(' ').next().map(str::to_owned));
        }
    }
    lines
        .iter()
        .map(|line| {
            let mut line = line.clone();
            for id in &ids {
                line = line.replace(id.as_str(), "ID");
            }
            // Re-serialize the JSON tail of result/call/progress/state lines.
            for prefix in ["result ", "progress "] {
                if let Some(rest) = line.strip_prefix(prefix)
                    && let Ok(value) = serde_json::from_str::<Value>(rest)
                {
                    line = format!("{prefix}{}", json_text(&value));
                }
            }
            line
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_and_the_official_client_agree() {
    let Some((dotnet, classic)) = peers() else {
        return;
    };
    let mut child = Command::new(&classic)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start classic-peer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.expect("read").expect("a line");
            if let Some(address) = line.strip_prefix("Listening on ") {
                break address.trim().trim_end_matches('/').to_owned();
            }
        }
    })
    .await
    .expect("classic-peer listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let root = format!("{address}/");
    let url = format!("{address}/signalr");
    let mut mismatches = Vec::new();
    for transport in [
        ClassicTransport::WebSockets,
        ClassicTransport::ServerSentEvents,
        ClassicTransport::LongPolling,
    ] {
        let theirs = normalize(&official(&dotnet, &url, transport.name()).await);
        let ours = normalize(&ours(&root, transport).await);
        println!("{transport}: official {theirs:#?}\n{transport}: ours {ours:#?}");
        // A client-method call and the result of the invocation that caused it travel on
        // different streams (the WebSocket frame order, or the SSE stream beside the /send
        // answer), and the official client itself prints them in either order: the calls are
        // compared in their order, and everything else in its order.
        //
        // On SSE and long polling the hub result is the body of the `/send` answer while
        // progress reports come on the stream or the poll: a report can arrive after the
        // result, and a client (the official one does) drops a report for an invocation that
        // has completed. There each side's reports must be `progress 1`, `progress 2`, … in
        // order, and the shorter list a prefix of the longer; on WebSockets they are compared
        // exactly, in their place.
        let in_band = transport == ClassicTransport::WebSockets;
        let split = |lines: &[String]| -> (Vec<String>, Vec<String>, Vec<String>) {
            let (calls, rest): (Vec<String>, Vec<String>) = lines
                .iter()
                .cloned()
                .partition(|line| line.starts_with("call "));
            let (progress, rest) = if in_band {
                (Vec::new(), rest)
            } else {
                rest.into_iter()
                    .partition(|line| line.starts_with("progress "))
            };
            (calls, progress, rest)
        };
        let (their_calls, their_progress, their_rest) = split(&theirs);
        let (our_calls, our_progress, our_rest) = split(&ours);
        let counted = |progress: &[String]| {
            progress
                .iter()
                .enumerate()
                .all(|(i, line)| *line == format!("progress {}", i + 1))
        };
        if their_calls != our_calls
            || their_rest != our_rest
            || !counted(&their_progress)
            || !counted(&our_progress)
        {
            mismatches.push(format!(
                "{transport}:\n official {theirs:?}\n ours     {ours:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
