//! The `signalr` binary against a small hub of `signalr-server` in the test process.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use common::{Background, signalr, signalr_with_input, unreachable_url};
use serde_json::{Value, json};
use signalr_server::{Hub, HubCallerContext, HubContext, HubError};

/// The hub every test here talks to, at `/hub`, and at `/closing` one whose `CloseAll()` closes
/// every connection of that hub with an error.
fn base() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        common::serve(|| {
            let closing_context: Arc<OnceLock<HubContext>> = Arc::default();
            let context = closing_context.clone();
            let closing = Hub::builder()
                .method("CloseAll", move |_: HubCallerContext| {
                    let context = context.clone();
                    async move {
                        if let Some(context) = context.get() {
                            context.close_all(Some("closed by the test".to_owned()), false);
                        }
                    }
                })
                .build();
            let _ = closing_context.set(closing.context());
            Router::new()
                .nest("/hub", test_hub().router())
                .nest("/closing", closing.router())
        })
    })
}

fn url() -> String {
    format!("{}/hub", base())
}

fn test_hub() -> Hub {
    Hub::builder()
        .method(
            "Echo",
            |_: HubCallerContext, value: Value| async move { value },
        )
        .method(
            "Add",
            |_: HubCallerContext, a: i64, b: i64| async move { a + b },
        )
        .method("Nothing", |_: HubCallerContext| async move {})
        .method("Fail", |_: HubCallerContext, message: String| async move {
            Err::<(), _>(HubError::new(message))
        })
        .method("Count", |_: HubCallerContext, n: u32| async move {
            futures_util::stream::iter(1..=n)
        })
        .method("Sleep", |_: HubCallerContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .method(
            "Broadcast",
            |hub: HubCallerContext, text: String| async move {
                hub.clients().all().send("Notify", (text, 1)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method("CallMe", |hub: HubCallerContext, value: Value| async move {
            hub.clients()
                .client(hub.connection_id())
                .send("Called", (value,))
                .await?;
            Ok::<_, HubError>(())
        })
        .build()
}

const TRANSPORTS: [&str; 3] = ["websockets", "sse", "longpolling"];

#[test]
fn invoke_echoes_on_every_transport_and_protocol() {
    let url = url();
    let value = r#"{"list":[1,-2.5,"x",null,true],"text":"héllo wörld"}"#;
    let expected: Value = serde_json::from_str(value).expect("json");
    for protocol in ["json", "messagepack"] {
        for transport in TRANSPORTS {
            if protocol == "messagepack" && transport == "sse" {
                continue; // SSE is text only (below)
            }
            let run = signalr(&[
                "invoke",
                &url,
                "Echo",
                value,
                "--transport",
                transport,
                "--protocol",
                protocol,
            ]);
            assert_eq!(run.code, 0, "{transport} {protocol}: {run:?}");
            let printed: Value = serde_json::from_str(run.stdout.trim()).expect("stdout is JSON");
            assert_eq!(printed, expected, "{transport} {protocol}");
            assert!(run.stderr.contains("connected"), "{run:?}");
        }
        // Negotiate's best transport.
        let run = signalr(&["invoke", &url, "Echo", "\"hi\"", "--protocol", protocol]);
        assert_eq!((run.code, run.stdout.as_str()), (0, "\"hi\"\n"), "{run:?}");
    }
}

#[test]
fn messagepack_over_sse_is_a_connection_failure() {
    let run = signalr(&[
        "invoke",
        &url(),
        "Echo",
        "1",
        "--transport",
        "sse",
        "--protocol",
        "messagepack",
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("could not connect"), "{run:?}");
}

#[test]
fn invoke_with_several_arguments_and_json_output() {
    let url = url();
    let run = signalr(&["invoke", &url, "Add", "-1", "43"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "42\n"), "{run:?}");

    let run = signalr(&["--json", "invoke", &url, "Add", "--args", "[40, 2]"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json_lines(), [json!({"type": "result", "value": 42})]);

    let run = signalr(&["invoke", &url, "Nothing", "--json", "-q"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json_lines(), [json!({"type": "result", "value": null})]);
    assert_eq!(run.stderr, "", "--quiet");
}

#[test]
fn a_hub_error_exits_1_with_the_servers_message() {
    let url = url();
    let run = signalr(&["invoke", &url, "Fail", "\"boom\""]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains(
            "error: An unexpected error occurred invoking 'Fail' on the server. HubException: boom"
        ),
        "{run:?}"
    );

    // An unknown method is a hub error too.
    let run = signalr(&["--json", "invoke", &url, "NoSuchMethod"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines = run.json_lines();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert_eq!(lines[0]["type"], "error");
    assert_eq!(lines[0]["kind"], "hub");
    assert!(
        lines[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NoSuchMethod")),
        "{run:?}"
    );
}

#[test]
fn an_unreachable_server_exits_3() {
    let dead = unreachable_url();
    let started = Instant::now();
    let run = signalr(&["invoke", &dead, "Echo", "1"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("could not connect to"), "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(20));

    let run = signalr(&["--json", "stream", &dead, "Count", "1"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.json_lines()[0]["kind"], "connection");

    // A path that is no hub: negotiate answers 404.
    let run = signalr(&["invoke", &format!("{}/nohub", base()), "Echo", "1"]);
    assert_eq!(run.code, 3, "{run:?}");
}

#[test]
fn usage_errors_exit_2_and_never_connect() {
    let dead = unreachable_url();
    // Not JSON: a bare word.
    let run = signalr(&["invoke", &dead, "Echo", "hi"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("argument 1 is not valid JSON"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("connecting"), "{run:?}");

    let run = signalr(&[
        "stream",
        &dead,
        "Count",
        "--args",
        "{\"not\": \"an array\"}",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--args must be a JSON array"),
        "{run:?}"
    );

    for args in [
        &["invoke", "not a url", "Echo", "1"][..],
        &["invoke", "ftp://host/hub", "Echo", "1"],
        &["invoke", &dead, "Echo", "1", "--header", "no colon"],
        &["invoke", &dead, "Echo", "1", "--header", "Bad Name: v"],
        &[
            "invoke",
            &dead,
            "Echo",
            "1",
            "--transport",
            "carrier-pigeon",
        ],
        &["invoke", &dead, "Echo", "1", "--skip-negotiation"],
        &["invoke", &dead],
        &["listen", &dead],
        &["frobnicate"],
        &[],
    ] {
        let run = signalr(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:?}");
    }
}

#[test]
fn a_result_that_takes_too_long_exits_4() {
    let started = Instant::now();
    let run = signalr(&["invoke", &url(), "Sleep", "20000", "--timeout", "1"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("no result from 'Sleep' within 1 s"),
        "{run:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Within the time it is fine.
    let run = signalr(&["invoke", &url(), "Sleep", "100", "--timeout", "10"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "100\n"), "{run:?}");
}

#[test]
fn a_server_that_never_answers_negotiate_exits_4() {
    // Accepts TCP connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hub", listener.local_addr().expect("address"));
    let held = std::thread::spawn(move || {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept() {
            sockets.push(socket);
            if sockets.len() >= 4 {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let run = signalr(&["invoke", &url, "Echo", "1", "--timeout", "1"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("within 1 s"), "{run:?}");
    drop(held);
}

#[test]
fn stream_prints_every_item() {
    let url = url();
    for transport in TRANSPORTS {
        let run = signalr(&["stream", &url, "Count", "5", "--transport", transport]);
        assert_eq!(run.code, 0, "{transport}: {run:?}");
        assert_eq!(run.lines(), ["1", "2", "3", "4", "5"], "{transport}");
    }
    let run = signalr(&[
        "stream",
        &url,
        "Count",
        "3",
        "--json",
        "--protocol",
        "messagepack",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.json_lines(),
        [1, 2, 3].map(|n| json!({"type": "item", "value": n}))
    );
    let run = signalr(&["stream", &url, "Count", "0"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    // Not a streaming method.
    let run = signalr(&["stream", &url, "Echo", "1"]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn send_does_not_wait_for_the_result() {
    let run = signalr(&["send", &url(), "Sleep", "3000"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    assert!(run.stderr.contains("sent"), "{run:?}");
}

#[test]
fn listen_prints_what_the_server_sends() {
    let url = url();
    for (protocol, transport) in [
        ("json", "websockets"),
        ("messagepack", "longpolling"),
        ("json", "sse"),
    ] {
        let listener = Background::start(
            &[
                "listen",
                &url,
                "Notify",
                "--count",
                "2",
                "--protocol",
                protocol,
                "--transport",
                transport,
            ],
            "listening for Notify",
        );
        // Another client makes the server broadcast.
        for text in ["one", "two words"] {
            let run = signalr(&["invoke", &url, "Broadcast", &format!("\"{text}\"")]);
            assert_eq!(run.code, 0, "{run:?}");
        }
        let run = listener.finish();
        assert_eq!(run.code, 0, "{protocol} {transport}: {run:?}");
        assert_eq!(
            run.lines(),
            ["Notify \"one\" 1", "Notify \"two words\" 1"],
            "{protocol} {transport}"
        );
    }

    let listener = Background::start(
        &["--json", "listen", &url, "notify", "Other", "--count", "1"],
        "listening for",
    );
    let run = signalr(&["invoke", &url, "Broadcast", "\"x\""]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = listener.finish();
    assert_eq!(run.code, 0, "{run:?}");
    // The name as subscribed (method names match case-insensitively).
    assert_eq!(
        run.json_lines(),
        [json!({"type": "invocation", "target": "notify", "arguments": ["x", 1]})]
    );
}

#[test]
fn ctrl_c_ends_listen_and_connect_cleanly() {
    let url = url();
    for args in [
        &["listen", &url, "Notify"][..],
        &["connect", &url, "--on", "Notify"],
    ] {
        let ready = if args[0] == "listen" {
            "listening for"
        } else {
            "type `Method"
        };
        let running = Background::start(args, ready);
        if !running.interrupt() {
            println!("SKIPPED ctrl_c_ends_listen_and_connect_cleanly: no kill program");
            return;
        }
        let run = running.finish();
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stderr.contains("interrupted"), "{args:?}: {run:?}");
    }
}

#[test]
fn listen_exits_3_when_the_server_closes_the_connection() {
    let url = format!("{}/closing", base());
    let listener = Background::start(&["listen", &url, "Anything"], "listening for");
    let run = signalr(&["invoke", &url, "CloseAll"]);
    // The invoking connection is closed too, maybe before its Completion.
    assert!(run.code == 0 || run.code == 3, "{run:?}");
    let run = listener.finish();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("closed by the test"), "{run:?}");
}

#[test]
fn connect_runs_each_line() {
    // Line 8 is not UTF-8.
    let input: &[u8] = b"Echo \"hi\"\n\
                 Add 1 2\n\
                 [\"Echo\", [1, 2]]\n\
                 \n\
                 # a comment\n\
                 Echo not-json\n\
                 Echo \"crlf\"\r\n\
                 Echo \"\xff\"\n\
                 Fail \"oops\"\n\
                 Echo {\"after\": \"errors\"}\n\
                 exit\n\
                 Echo \"not run\"\n";
    let run = signalr_with_input(&["connect", &url()], input);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.lines(),
        ["\"hi\"", "3", "[1,2]", "\"crlf\"", "{\"after\":\"errors\"}"],
        "{run:?}"
    );
    assert!(
        run.stderr.contains("argument 1 is not valid JSON"),
        "{run:?}"
    );
    assert!(run.stderr.contains("HubException: oops"), "{run:?}");
    assert!(run.stderr.contains("line 8 is not valid UTF-8"), "{run:?}");
    assert!(run.stderr.contains("--on METHOD"), "{run:?}");
}

#[test]
fn connect_prints_the_servers_calls_and_stops_at_end_of_input() {
    let run = signalr_with_input(
        &[
            "connect",
            &url(),
            "--on",
            "Called",
            "--json",
            "--protocol",
            "messagepack",
        ],
        "CallMe {\"n\": 7}\nEcho 5\n",
    );
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.json_lines();
    assert!(
        lines.contains(&json!({"type": "invocation", "target": "Called", "arguments": [{"n": 7}]})),
        "{run:?}"
    );
    assert!(
        lines.contains(&json!({"type": "result", "value": null})),
        "{run:?}"
    );
    assert_eq!(
        lines.last(),
        Some(&json!({"type": "result", "value": 5})),
        "{run:?}"
    );
}

#[test]
fn connect_exits_3_when_the_connection_is_lost() {
    let url = format!("{}/closing", base());
    // Nothing on stdin would end the session: the close does.
    let mut child = common::command(&["connect", &url])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdin = child.stdin.take();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        signalr(&["invoke", &url, "CloseAll"])
    });
    let run = common::finish(child, common::RUN_LIMIT);
    drop(stdin);
    let _ = closer.join();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("closed by the test"), "{run:?}");
}

#[test]
fn help_documents_the_exit_codes() {
    let run = signalr(&["--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for text in [
        "Exit codes:",
        "1  hub error",
        "2  usage error",
        "3  connection failure",
        "4  timeout",
        "connect",
        "invoke",
        "listen",
        "stream",
        "--transport",
        "--protocol",
        "--header",
        "--token",
        "--timeout",
        "--json",
    ] {
        assert!(run.stdout.contains(text), "{text}: {}", run.stdout);
    }
    let run = signalr(&["connect", "--help"]);
    assert!(run.stdout.contains("--on <METHOD>"), "{}", run.stdout);
    assert!(
        run.stdout.contains("no catch-all handler"),
        "{}",
        run.stdout
    );
}
