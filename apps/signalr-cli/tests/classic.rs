//! `signalr --classic` against the conformance server's classic `TestHub`
//! (`apps/conformance-server/src/classic_hub.rs`, compiled into this test and served at
//! `/signalr`), and against the real SignalR 2.4.1 server (`classic-peer` of `../shared/peers`)
//! when it is there. Both get the same checks.

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../../conformance-server/src/classic_hub.rs"]
mod classic_hub;
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
use common::{Background, Run, signalr, signalr_with_input};
use serde_json::json;
use signalr_server::classic_router;

/// Our classic endpoint, `http://127.0.0.1:PORT/signalr`.
fn ours() -> String {
    static BASE: OnceLock<String> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        common::serve(|| {
            let hub = classic_hub::test_hub();
            Router::new().nest("/signalr", classic_router([&hub]))
        })
    });
    format!("{base}/signalr")
}

/// `signalr --classic --hub TestHub` with `args` (the command first).
fn classic(args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--classic", "--hub", "TestHub"]);
    signalr(&all)
}

/// The transports, as given to `--transport`, and the name the server sees (`None` for auto).
const TRANSPORTS: [(&str, Option<&str>); 4] = [
    ("webSockets", Some("webSockets")),
    ("serverSentEvents", Some("serverSentEvents")),
    ("longPolling", Some("longPolling")),
    ("auto", None),
];

/// Every check of one server at `url`; the failures.
fn check(url: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let mut expect = |what: String, ok: bool, run: &Run| {
        if !ok {
            failures.push(format!("{what}: {run:?}"));
        }
    };
    for (transport, name) in TRANSPORTS {
        let run = classic(&["invoke", url, "Echo", "\"hi\"", "--transport", transport]);
        expect(
            format!("Echo over {transport}"),
            (run.code, run.stdout.as_str()) == (0, "\"hi\"\n"),
            &run,
        );
        if let Some(name) = name {
            let run = classic(&["invoke", url, "GetTransportName", "--transport", transport]);
            expect(
                format!("GetTransportName over {transport}"),
                run.code == 0 && run.stdout.trim() == format!("\"{name}\""),
                &run,
            );
        }

        // A hub error with error data: exit 1, the message and the data on stderr.
        let run = classic(&[
            "invoke",
            url,
            "ThrowHubException",
            "\"nope\"",
            "--transport",
            transport,
        ]);
        expect(
            format!("ThrowHubException over {transport}"),
            run.code == 1
                && run.stdout.is_empty()
                && run.stderr.contains("error: nope\n")
                && run.stderr.contains("error data: {\"Code\":42}"),
            &run,
        );
        let run = classic(&[
            "--json",
            "invoke",
            url,
            "ThrowHubException",
            "\"nope\"",
            "--transport",
            transport,
        ]);
        expect(
            format!("ThrowHubException --json over {transport}"),
            run.code == 1
                && run.lines().len() == 1
                && run.json_lines()[0]
                    == json!({"type": "error", "kind": "hub", "message": "nope", "data": {"Code": 42}}),
            &run,
        );

        // A client method: `listen` prints the broadcast another `signalr` makes.
        let text = format!("\"to {transport}\"");
        let listener = Background::start(
            &[
                "listen",
                url,
                "broadcast",
                "--count",
                "1",
                "--transport",
                transport,
                "--classic",
                "--hub",
                "TestHub",
            ],
            "listening for",
        );
        let sent = classic(&["send", url, "SendToAll", &text, "--transport", transport]);
        expect(
            format!("send SendToAll over {transport}"),
            sent.code == 0,
            &sent,
        );
        let run = listener.finish();
        expect(
            format!("listen broadcast over {transport}"),
            run.code == 0 && run.stdout == format!("broadcast {text}\n"),
            &run,
        );
    }

    let run = classic(&["--json", "invoke", url, "Add", "2", "-5"]);
    expect(
        "Add --json".to_owned(),
        run.code == 0 && run.json_lines() == [json!({"type": "result", "value": -3})],
        &run,
    );
    let run = classic(&[
        "invoke",
        url,
        "EchoObject",
        "--args",
        "[{\"Name\":\"n\",\"Value\":7}]",
    ]);
    expect(
        "EchoObject".to_owned(),
        run.code == 0
            && serde_json::from_str::<serde_json::Value>(run.stdout.trim()).ok()
                == Some(json!({"Name": "n", "Value": 7})),
        &run,
    );
    // A void method prints null.
    let run = classic(&["invoke", url, "NotifyNoArgs"]);
    expect(
        "NotifyNoArgs".to_owned(),
        (run.code, run.stdout.as_str()) == (0, "null\n"),
        &run,
    );
    // An unknown method is the hub's error.
    let run = classic(&["invoke", url, "NoSuchMethod"]);
    expect("NoSuchMethod".to_owned(), run.code == 1, &run);
    let run = classic(&[
        "invoke",
        url,
        "GetHeader",
        "\"X-Tenant\"",
        "--header",
        "X-Tenant: blue",
    ]);
    expect(
        "GetHeader".to_owned(),
        (run.code, run.stdout.as_str()) == (0, "\"blue\"\n"),
        &run,
    );
    let run = classic(&[
        "invoke",
        url,
        "GetHeader",
        "\"Authorization\"",
        "--token",
        "secret-1",
    ]);
    expect(
        "the token".to_owned(),
        (run.code, run.stdout.as_str()) == (0, "\"Bearer secret-1\"\n"),
        &run,
    );

    // Interactive: the client method the hub calls back, then the results.
    let run = signalr_with_input(
        &[
            "connect",
            url,
            "--on",
            "message",
            "--classic",
            "--hub",
            "TestHub",
        ],
        "InvokeWithString \"pong\"\nEcho \"done\"\n",
    );
    let lines = run.lines();
    expect(
        "connect".to_owned(),
        run.code == 0
            && lines.contains(&"message \"pong\"")
            && lines.contains(&"null")
            && lines.last() == Some(&"\"done\""),
        &run,
    );
    failures
}

#[test]
fn against_our_classic_server() {
    let failures = check(&ours());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    // Nothing listens there: a usage error must come before any connection attempt.
    let url = common::unreachable_url();
    let run = classic(&["stream", &url, "Count", "3"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("classic SignalR 2.x has no streaming"),
        "{run:?}"
    );
    let run = classic(&["--json", "stream", &url, "Count"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.json_lines()[0]["kind"], "usage", "{run:?}");

    let run = signalr(&["invoke", &url, "Echo", "\"hi\"", "--classic"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--classic needs --hub"), "{run:?}");
    let run = classic(&["invoke", &url, "Echo", "--protocol", "messagepack"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = classic(&["invoke", &url, "Echo", "--skip-negotiation"]);
    assert_eq!(run.code, 2, "{run:?}");
    // --hub alone is for --classic only.
    let run = signalr(&["invoke", &url, "Echo", "--hub", "TestHub"]);
    assert_eq!(run.code, 2, "{run:?}");

    // And a server that is not there is a connection failure.
    let run = classic(&[
        "invoke",
        &url,
        "Echo",
        "\"hi\"",
        "--transport",
        "longPolling",
    ]);
    assert_eq!(run.code, 3, "{run:?}");
}

/// The real classic ASP.NET SignalR 2.4.1 server (`classic-peer`), next to the repository.
#[test]
fn against_the_real_classic_server() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let peers = root.join("../shared/peers");
    let program = peers.join("classic-peer");
    if !program.exists() {
        println!(
            "SKIPPED against_the_real_classic_server: {} is absent (the classic peer program lives outside the repository)",
            program.display()
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
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start classic-peer");
    let stdout = server.stdout.take().expect("stdout");
    let _stop = Stop(server);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(address) = line.strip_prefix("Listening on ") {
                let _ = sender.send(address.trim().trim_end_matches('/').to_owned());
            }
        }
    });
    let Ok(base) = receiver.recv_timeout(std::time::Duration::from_secs(60)) else {
        panic!("classic-peer printed no address");
    };
    let failures = check(&format!("{base}/signalr"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
