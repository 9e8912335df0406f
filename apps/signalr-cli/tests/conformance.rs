//! The `signalr` binary against the conformance server's `TestHub` (the hub of ASP.NET Core's
//! client functional tests, `apps/conformance-server/src/test_hub.rs`, compiled into this test),
//! and against the real ASP.NET Core server of `../shared/peers` when it is there.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../../conformance-server/src/complex.rs"]
mod complex;
#[allow(dead_code, unreachable_pub)]
#[path = "../../conformance-server/src/test_hub.rs"]
mod test_hub;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use axum::Router;
use common::{signalr, signalr_with_input};
use serde_json::{Value, json};
use signalr_server::TransportType;

fn testhub() -> String {
    static BASE: OnceLock<String> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        common::serve(|| {
            let hub = test_hub::test_hub(vec![
                TransportType::WebSockets,
                TransportType::ServerSentEvents,
                TransportType::LongPolling,
            ]);
            Router::new().nest("/testhub", hub.router())
        })
    });
    format!("{base}/testhub")
}

#[test]
fn echo_and_the_active_transport() {
    let url = testhub();
    for (transport, name) in [
        ("websockets", "WebSockets"),
        ("sse", "ServerSentEvents"),
        ("longpolling", "LongPolling"),
    ] {
        let run = signalr(&[
            "invoke",
            &url,
            "Echo",
            "\"hello\"",
            "--transport",
            transport,
        ]);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "\"hello\"\n"),
            "{run:?}"
        );
        let run = signalr(&[
            "invoke",
            &url,
            "GetActiveTransportName",
            "--transport",
            transport,
        ]);
        assert_eq!(run.stdout.trim(), format!("\"{name}\""), "{run:?}");
    }
}

#[test]
fn headers_and_the_access_token_reach_the_server() {
    let url = testhub();
    let run = signalr(&[
        "invoke",
        &url,
        "GetHeader",
        "\"X-Tenant\"",
        "--header",
        "X-Tenant: blue",
    ]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "\"blue\"\n"),
        "{run:?}"
    );
    for transport in ["websockets", "sse", "longpolling"] {
        let run = signalr(&[
            "invoke",
            &url,
            "GetHeader",
            "\"Authorization\"",
            "--token",
            "secret-1",
            "--transport",
            transport,
        ]);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "\"Bearer secret-1\"\n"),
            "{transport}: {run:?}"
        );
    }
    // The token from the environment.
    let mut command = common::command(&["invoke", &url, "GetHeader", "\"Authorization\""]);
    command
        .env("SIGNALR_ACCESS_TOKEN", "from-env")
        .stdin(Stdio::null());
    let run = common::finish(command.spawn().expect("spawn"), common::RUN_LIMIT);
    assert_eq!(run.stdout, "\"Bearer from-env\"\n", "{run:?}");
}

#[test]
fn hub_exceptions_exit_1() {
    let url = testhub();
    let run = signalr(&["invoke", &url, "ThrowException", "\"bad thing\""]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "An unexpected error occurred invoking 'ThrowException' on the server. InvalidOperationException: bad thing"
        ),
        "{run:?}"
    );
}

#[test]
fn streams_and_stream_errors() {
    let url = testhub();
    let run = signalr(&["stream", &url, "Stream"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.lines(), ["\"a\"", "\"b\"", "\"c\""]);

    let run = signalr(&["stream", &url, "EmptyStream", "--json"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");

    // Items, then the error: exit 1 after printing the items.
    let run = signalr(&["--json", "stream", &url, "StreamWithError", "\"broken\""]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines = run.json_lines();
    assert_eq!(
        lines[..2],
        [
            json!({"type": "item", "value": "a"}),
            json!({"type": "item", "value": "b"})
        ]
    );
    assert_eq!(lines[2]["type"], "error");
    assert!(
        lines[2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("broken")),
        "{run:?}"
    );
}

#[test]
fn json_and_messagepack_print_the_same_complex_object() {
    // String, int array, byte array (base64 in JSON, binary in MessagePack), Guid, DateTime
    // (ISO text in JSON, a timestamp extension in MessagePack).
    let url = testhub();
    let expected = json!({
        "String": "hello world",
        "IntArray": [1, 2, 3],
        "ByteArray": "AQID",
        "Guid": "00010203-0405-0607-0706-050403020100",
        "DateTime": "2000-01-01T00:00:00Z",
    });
    for protocol in ["json", "messagepack"] {
        let run = signalr(&["invoke", &url, "SendComplexObject", "--protocol", protocol]);
        assert_eq!(run.code, 0, "{run:?}");
        let printed: Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
        assert_eq!(printed, expected, "{protocol}");
    }
}

#[test]
fn connect_prints_the_message_the_hub_sends_back() {
    let url = testhub();
    let run = signalr_with_input(
        &["connect", &url, "--on", "Message"],
        "InvokeWithString \"pong\"\nEcho \"done\"\n",
    );
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.lines();
    assert!(lines.contains(&"Message \"pong\""), "{run:?}");
    // Results print in the order of the lines typed; an incoming call prints from its handler,
    // so under load it may come after a later result.
    let results: Vec<&&str> = lines
        .iter()
        .filter(|l| !l.starts_with("Message "))
        .collect();
    assert_eq!(results, [&"null", &"\"done\""], "{run:?}");
}

/// The real ASP.NET Core server (`dotnet-peer server`), next to the repository.
#[test]
fn invokes_the_real_aspnetcore_server() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let peers = root.join("../shared/peers");
    let program = peers.join("dotnet-peer");
    if !peers.is_dir() || !program.exists() {
        println!(
            "SKIPPED invokes_the_real_aspnetcore_server: {} is absent (the ASP.NET Core peer program lives outside the repository)",
            peers.display()
        );
        return;
    }
    /// Stops the server however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Command::new(&program)
        .args(["server", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dotnet-peer");
    let stdout = server.stdout.take().expect("stdout");
    let _stop = Stop(server);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(address) = line.strip_prefix("Listening on ") {
                let _ = sender.send(address.trim().to_owned());
            }
        }
    });
    let Ok(base) = receiver.recv_timeout(std::time::Duration::from_secs(60)) else {
        panic!("dotnet-peer server printed no address");
    };
    let url = format!("{base}/testhub");
    let mut failures = Vec::new();
    for protocol in ["json", "messagepack"] {
        for transport in ["websockets", "longpolling"] {
            let run = signalr(&[
                "invoke",
                &url,
                "Echo",
                "\"from rust\"",
                "--protocol",
                protocol,
                "--transport",
                transport,
            ]);
            if (run.code, run.stdout.as_str()) != (0, "\"from rust\"\n") {
                failures.push(format!("Echo {protocol} {transport}: {run:?}"));
            }
        }
        let run = signalr(&[
            "invoke",
            &url,
            "ThrowHubException",
            "\"nope\"",
            "--protocol",
            protocol,
        ]);
        if run.code != 1 || !run.stderr.contains("nope") {
            failures.push(format!("ThrowHubException {protocol}: {run:?}"));
        }
        let run = signalr(&["stream", &url, "Stream", "--protocol", protocol]);
        if run.code != 0 || run.lines() != ["\"a\"", "\"b\"", "\"c\""] {
            failures.push(format!("Stream {protocol}: {run:?}"));
        }
    }
    let run = signalr(&[
        "invoke",
        &url,
        "SendComplexObject",
        "--protocol",
        "messagepack",
    ]);
    let json_run = signalr(&["invoke", &url, "SendComplexObject"]);
    let parse = |text: &str| serde_json::from_str::<Value>(text.trim()).ok();
    if run.code != 0
        || parse(&run.stdout).is_none()
        || parse(&run.stdout) != parse(&json_run.stdout)
    {
        failures.push(format!(
            "SendComplexObject differs between protocols: {run:?} vs {json_run:?}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
