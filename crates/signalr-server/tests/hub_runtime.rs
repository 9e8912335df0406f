//! The hub runtime over raw WebSocket frames (exact JSON and MessagePack messages): hub method
//! binding and results (docs/protocol.md, "Completions"), server-to-client streams and cancellation (docs/protocol.md, "Server-to-client streams"),
//! upload streams (docs/protocol.md, "Client-to-server streams"), the per-client invocation limit (docs/protocol.md, "Limits"), `Clients.*` and groups, the hub
//! context, client results (docs/protocol.md, "Client results"), connection hooks, the caller context, and filters.
//!
//! Every test ends with [`finish`]: a fresh connection still works and no server-side panic
//! happened.

mod common;
#[path = "common/runtime.rs"]
mod runtime;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Frame, finish, within};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream;
use runtime::{
    Client, HeaderClient, Log, build, connect, connect_as, connect_msgpack, connect_raw,
    connect_with, eventually, expect_panic, expect_silence_all, open, serve, serve_router,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use signalr_server::{
    Hub, HubBuilder, HubCallerContext, HubError, HubOptions, HubProtocol, TransportType,
    auth::{AuthError, AuthRequest, User},
    error::ClientResultError,
    filter::{HubFilter, HubInvocation, LoggingFilter, Next, NextConnected, NextDisconnected},
    hub::{InvokeError, MethodOutput, State, UploadStream},
    protocol::Payload,
};

const RS: char = '\u{1e}';

// ---------------------------------------------------------------------------------------------
// Hub definitions shared by several tests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

/// `text.parse::<i32>()` with the parse error as an unexpected [`HubError`] (via `?`).
fn parse_number(text: &str) -> Result<i32, HubError> {
    Ok(text.parse::<i32>()?)
}

fn options(change: impl FnOnce(&mut HubOptions)) -> HubOptions {
    let mut options = HubOptions::default();
    change(&mut options);
    options
}

/// Plain (non-streaming) methods.
fn basic_methods(builder: HubBuilder) -> HubBuilder {
    builder
        .method("Void", |_: HubCallerContext| async {})
        .method("Constant", |_: HubCallerContext| async { 42 })
        .method("Negate", |_: HubCallerContext, n: i64| async move { -n })
        .method(
            "Add",
            |_: HubCallerContext, a: i64, b: i64| async move { a + b },
        )
        .method(
            "Describe",
            |_: HubCallerContext, text: String, list: Vec<i32>, flag: Option<bool>| async move {
                json!({"text": text, "sum": list.iter().sum::<i32>(), "flag": flag})
            },
        )
        .method("Move", |_: HubCallerContext, p: Point| async move {
            Point {
                x: p.x + 1,
                y: p.y * 2,
            }
        })
        .method("Wrap", |_: HubCallerContext, value: Value| async move {
            json!({ "wrapped": value })
        })
        .method("Maybe", |_: HubCallerContext, present: bool| async move {
            present.then(|| "here".to_owned())
        })
        .method("Fail", |_: HubCallerContext, message: String| async move {
            Err::<(), _>(HubError::new(message))
        })
        .method("Checked", |_: HubCallerContext, n: i32| async move {
            if n >= 0 {
                Ok(n * 10)
            } else {
                Err(HubError::new(format!("{n} is negative")))
            }
        })
        .method("Parse", |_: HubCallerContext, text: String| async move {
            parse_number(&text)
        })
        .method("Sleep", |_: HubCallerContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
}

/// Server-to-client streaming methods. `Ticks` logs `cancelled` when its cancellation fires.
fn stream_methods(builder: HubBuilder, log: Log) -> HubBuilder {
    builder
        .method("Count", |_: HubCallerContext, to: u32| async move {
            stream::iter(1..=to)
        })
        .method("CountThenFail", |_: HubCallerContext| async {
            stream::iter(vec![
                Ok(1),
                Ok(2),
                Err(HubError::new("stream broke")),
                Ok(4),
            ])
        })
        .method("CountThenCrash", |_: HubCallerContext| async {
            stream::iter(vec![Ok(1), parse_number("not a number"), Ok(3)])
        })
        .method("Ticks", move |ctx: HubCallerContext, interval_ms: u64| {
            let log = log.clone();
            async move {
                let token = ctx.cancellation().clone();
                tokio::spawn(async move {
                    token.cancelled().await;
                    log.push("cancelled");
                });
                stream::unfold(0u64, move |n| async move {
                    tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                    Some((n, n + 1))
                })
            }
        })
}

/// `AwaitCancel` waits for its cancellation and logs `invocation cancelled`.
fn cancellation_methods(builder: HubBuilder, log: Log) -> HubBuilder {
    builder.method("AwaitCancel", move |ctx: HubCallerContext| {
        let log = log.clone();
        async move {
            ctx.cancellation().cancelled().await;
            log.push("invocation cancelled");
        }
    })
}

/// Methods with client-to-server stream parameters.
fn upload_methods(builder: HubBuilder) -> HubBuilder {
    builder
        .method(
            "Sum",
            |_: HubCallerContext, mut items: UploadStream<i32>| async move {
                let mut sum = 0;
                while let Some(item) = items.next().await {
                    sum += item.map_err(HubError::new)?;
                }
                Ok::<_, HubError>(sum)
            },
        )
        .method(
            "Scale",
            |_: HubCallerContext, factor: i32, items: UploadStream<i32>| async move {
                let items: Vec<Result<i32, String>> = items.collect().await;
                items
                    .into_iter()
                    .map(|item| item.map(|n| n * factor).map_err(HubError::new))
                    .collect::<Result<Vec<i32>, HubError>>()
            },
        )
        .method(
            "Zip",
            |_: HubCallerContext, letters: UploadStream<String>, numbers: UploadStream<i32>| async move {
                let (letters, numbers) = futures_util::future::join(
                    letters.collect::<Vec<_>>(),
                    numbers.collect::<Vec<_>>(),
                )
                .await;
                let letters = letters.into_iter().collect::<Result<Vec<_>, _>>();
                let numbers = numbers.into_iter().collect::<Result<Vec<_>, _>>();
                match (letters, numbers) {
                    (Ok(letters), Ok(numbers)) => Ok(json!({"letters": letters, "numbers": numbers})),
                    (Err(err), _) | (_, Err(err)) => Err(HubError::new(err)),
                }
            },
        )
        .method(
            "Doubles",
            |_: HubCallerContext, items: UploadStream<i32>| async move {
                items.map(|item| item.map(|n| n * 2).map_err(HubError::new))
            },
        )
        .method(
            "First",
            |_: HubCallerContext, mut items: UploadStream<i32>| async move {
                items.next().await.and_then(Result::ok)
            },
        )
}

/// How a client-result error is surfaced on the wire: `<Debug>: <Display>`.
fn describe(err: &ClientResultError) -> HubError {
    HubError::new(format!("{err:?}: {err}"))
}

#[derive(Clone)]
struct OnConnectedOutcome(String);

/// Client-result methods, and an `on_connected` that tries a client result when the query has
/// `ask`.
fn result_methods(builder: HubBuilder, log: Log) -> HubBuilder {
    builder
        .method(
            "AskCaller",
            |ctx: HubCallerContext, method: String| async move {
                ctx.clients()
                    .caller()
                    .invoke::<i32>(&method, (1, "two"))
                    .await
                    .map_err(|e| describe(&e))
            },
        )
        .method(
            "AskClient",
            |ctx: HubCallerContext, id: String| async move {
                ctx.clients()
                    .client(id)
                    .invoke::<String>("GetName", ())
                    .await
                    .map_err(|e| describe(&e))
            },
        )
        .method("AskCallerLogged", move |ctx: HubCallerContext| {
            let log = log.clone();
            async move {
                let outcome = ctx.clients().caller().invoke::<i32>("GetNumber", ()).await;
                log.push(match outcome {
                    Ok(n) => format!("ok {n}"),
                    Err(err) => format!("{err:?}: {err}"),
                });
            }
        })
        .method("OnConnectedOutcome", |ctx: HubCallerContext| async move {
            ctx.item::<OnConnectedOutcome>().map(|o| o.0)
        })
        .on_connected(|ctx: HubCallerContext| async move {
            let ask = ctx.request().and_then(|r| r.query_param("ask")).is_some();
            if ask {
                let outcome = ctx.clients().caller().invoke::<i32>("GetNumber", ()).await;
                let text = match outcome {
                    Ok(n) => format!("ok {n}"),
                    Err(err) => format!("{err:?}: {err}"),
                };
                ctx.insert_item(OnConnectedOutcome(text));
            }
        })
}

/// `Clients.*` and group methods; every send calls `Receive(label)`.
fn client_methods(builder: HubBuilder) -> HubBuilder {
    builder
        .method("ToAll", |ctx: HubCallerContext, label: String| async move {
            ctx.clients().all().send("Receive", (label,)).await?;
            Ok::<_, HubError>(())
        })
        .method(
            "ToOthers",
            |ctx: HubCallerContext, label: String| async move {
                ctx.clients().others().send("Receive", (label,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToCaller",
            |ctx: HubCallerContext, label: String| async move {
                ctx.clients().caller().send("Receive", (label,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToClient",
            |ctx: HubCallerContext, id: String, label: String| async move {
                ctx.clients().client(id).send("Receive", (label,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToClients",
            |ctx: HubCallerContext, ids: Vec<String>, label: String| async move {
                ctx.clients().clients(ids).send("Receive", (label,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToAllExcept",
            |ctx: HubCallerContext, ids: Vec<String>, label: String| async move {
                ctx.clients()
                    .all_except(ids)
                    .send("Receive", (label,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToGroup",
            |ctx: HubCallerContext, group: String, label: String| async move {
                ctx.clients().group(group).send("Receive", (label,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToGroups",
            |ctx: HubCallerContext, groups: Vec<String>, label: String| async move {
                ctx.clients()
                    .groups(groups)
                    .send("Receive", (label,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToGroupExcept",
            |ctx: HubCallerContext, group: String, ids: Vec<String>, label: String| async move {
                ctx.clients()
                    .group_except(group, ids)
                    .send("Receive", (label,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToOthersInGroup",
            |ctx: HubCallerContext, group: String, label: String| async move {
                ctx.clients()
                    .others_in_group(group)
                    .send("Receive", (label,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToUser",
            |ctx: HubCallerContext, user: String, label: String| async move {
                ctx.clients().user(user).send("Receive", (label,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "ToUsers",
            |ctx: HubCallerContext, users: Vec<String>, label: String| async move {
                ctx.clients().users(users).send("Receive", (label,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method("Join", |ctx: HubCallerContext, group: String| async move {
            ctx.groups()
                .add_to_group(ctx.connection_id(), &group)
                .await?;
            Ok::<_, HubError>(())
        })
        .method("Leave", |ctx: HubCallerContext, group: String| async move {
            ctx.groups()
                .remove_from_group(ctx.connection_id(), &group)
                .await?;
            Ok::<_, HubError>(())
        })
        .method("WhoAmI", |ctx: HubCallerContext| async move {
            ctx.user_identifier().map(str::to_owned)
        })
}

/// The test authenticator: the `access_token` value becomes a user with that `sub`.
fn token_as_sub(request: AuthRequest<'_>) -> Result<Option<User>, AuthError> {
    Ok(request.token.map(|token| {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".to_owned(), json!(token));
        User::authenticated(claims)
    }))
}

fn clients_hub() -> HubBuilder {
    client_methods(Hub::builder())
        .authenticator(token_as_sub)
        .user_id_provider(|user: &User| user.claim("sub"))
}

// ---------------------------------------------------------------------------------------------
// Hub methods: binding and results (docs/protocol.md, "Completions")
// ---------------------------------------------------------------------------------------------

/// What ASP.NET sends for a `HubException` from hub method `method` (`ErrorMessageHelper`).
fn hub_ex(method: &str, text: &str) -> String {
    format!("An unexpected error occurred invoking '{method}' on the server. HubException: {text}")
}

/// What ASP.NET sends for a `HubException` that ends a stream.
fn stream_ex(text: &str) -> String {
    format!("An error occurred on the server while streaming results. HubException: {text}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn void_result_is_null_as_in_aspnet() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.invoke("1", "Void", json!([])).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": null}))
        .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_arguments_zero_to_three() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.invoke("0", "Constant", json!([])).await;
    a.expect(json!({"type": 3, "invocationId": "0", "result": 42}))
        .await;
    a.invoke("1", "Negate", json!([5])).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": -5}))
        .await;
    a.invoke("2", "Add", json!([2, 40])).await;
    a.expect(json!({"type": 3, "invocationId": "2", "result": 42}))
        .await;
    // String, Vec and Option (present and null).
    a.call("3", "Describe", json!(["hi", [1, 2, 3], true]))
        .await
        .assert_result(json!({"text": "hi", "sum": 6, "flag": true}));
    a.call("4", "Describe", json!(["", [], null]))
        .await
        .assert_result(json!({"text": "", "sum": 0, "flag": null}));
    // A struct in and out.
    a.call("5", "Move", json!([{"x": 1, "y": 21}]))
        .await
        .assert_result(json!({"x": 2, "y": 42}));
    // Any JSON value.
    let value = json!({"nested": [1, "two", null, {"three": 3.5}], "flag": false});
    a.call("6", "Wrap", json!([value]))
        .await
        .assert_result(json!({ "wrapped": value }));
    a.call("7", "Wrap", json!([null]))
        .await
        .assert_result(json!({ "wrapped": null }));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_return_is_result_null() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.invoke("1", "Maybe", json!([false])).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": null}))
        .await;
    a.invoke("2", "Maybe", json!([true])).await;
    a.expect(json!({"type": 3, "invocationId": "2", "result": "here"}))
        .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_error_text_reaches_the_client_after_the_hub_exception_prefix() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.invoke(
        "1",
        "Fail",
        json!(["You shall not pass: 'reason' \"quoted\""]),
    )
    .await;
    a.expect(json!({
        "type": 3,
        "invocationId": "1",
        "error": hub_ex("Fail", "You shall not pass: 'reason' \"quoted\""),
    }))
    .await;
    // Result<T, HubError>: Ok is the result, Err the text.
    a.call("2", "Checked", json!([4]))
        .await
        .assert_result(json!(40));
    a.invoke("3", "Checked", json!([-1])).await;
    a.expect(json!({"type": 3, "invocationId": "3", "error": hub_ex("Checked", "-1 is negative")}))
        .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_error_is_generic() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.call("1", "Parse", json!(["17"]))
        .await
        .assert_result(json!(17));
    a.invoke("2", "Parse", json!(["seventeen"])).await;
    a.expect(json!({
        "type": 3,
        "invocationId": "2",
        "error": "An unexpected error occurred invoking 'Parse' on the server.",
    }))
    .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detailed_errors() {
    let detailed = options(|o| o.enable_detailed_errors = true);
    let server = serve(basic_methods(Hub::builder()).options(detailed)).await;
    let mut a = connect(&server).await;
    a.call("1", "Parse", json!(["x"])).await.assert_error(
        "An unexpected error occurred invoking 'Parse' on the server. invalid digit found in string",
    );
    a.call("2", "Wrap", json!([1, 2])).await.assert_error(
        "Failed to invoke 'Wrap' due to an error on the server. InvalidDataException: Invocation provides 2 argument(s) but target expects 1.",
    );
    a.call("3", "Add", json!([1])).await.assert_error(
        "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2.",
    );
    a.call("4", "Add", json!(["one", 2])).await.assert_error(
        "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.",
    );
    // HubError::new stays verbatim with detailed errors too.
    a.call("5", "Fail", json!(["plain text"]))
        .await
        .assert_error(&hub_ex("Fail", "plain text"));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_count_mismatch() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    for (id, target, arguments) in [
        ("1", "Wrap", json!([1, 2])),
        ("2", "Wrap", json!([])),
        ("3", "Add", json!([1])),
        ("4", "Add", json!([1, 2, 3])),
        ("5", "Void", json!([null])),
        ("6", "Describe", json!(["a", []])),
    ] {
        a.invoke(id, target, arguments).await;
        a.expect(json!({
            "type": 3,
            "invocationId": id,
            "error": format!("Failed to invoke '{target}' due to an error on the server."),
        }))
        .await;
    }
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_type_mismatch() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    for (id, target, arguments) in [
        ("1", "Add", json!(["one", 2])),
        ("2", "Negate", json!([null])),
        ("3", "Negate", json!([1.5])),
        ("4", "Move", json!([{"x": "left", "y": 1}])),
        ("5", "Move", json!([[1]])),
        ("6", "Describe", json!(["a", "not a list", null])),
        ("7", "Describe", json!([1, [1], null])),
        ("8", "Maybe", json!(["yes"])),
    ] {
        a.invoke(id, target, arguments).await;
        a.expect(json!({
            "type": 3,
            "invocationId": id,
            "error": format!("Failed to invoke '{target}' due to an error on the server."),
        }))
        .await;
    }
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_blocking_calls_send_nothing() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.send_call("Fail", json!(["hub error"])).await;
    a.send_call("Parse", json!(["unexpected error"])).await;
    a.send_call("Add", json!(["binding", "error"])).await;
    a.send_call("Wrap", json!([1, 2])).await;
    a.send_call("NoSuchMethod", json!([])).await;
    a.send_call("Add", json!([1, 2])).await;
    a.send_call("Void", json!([])).await;
    a.expect_silence().await;
    // The next answer is the next blocking call's.
    a.call("after", "Add", json!([1, 1]))
        .await
        .assert_result(json!(2));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_names_are_case_insensitive() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    for (id, target) in [("1", "add"), ("2", "ADD"), ("3", "aDd")] {
        a.call(id, target, json!([2, 3]))
            .await
            .assert_result(json!(5));
    }
    // Error texts name the method as the client spelled it (ASP.NET uses the message's target).
    a.call("4", "PARSE", json!(["x"]))
        .await
        .assert_error("An unexpected error occurred invoking 'PARSE' on the server.");
    a.call("5", "wrap", json!([]))
        .await
        .assert_error("Failed to invoke 'wrap' due to an error on the server.");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_method_names_panic_at_build() {
    // The same name ignoring case and the same number of arguments.
    let message = expect_panic(|| {
        Hub::builder()
            .method("Send", |_: HubCallerContext, _x: String| async {})
            .method("SEND", |_: HubCallerContext, _x: i32| async {})
            .build()
    });
    assert!(
        message.contains("'SEND'") && message.contains("registered twice"),
        "unexpected panic message: {message:?}"
    );
    // Injected parameters do not count: one client argument each.
    let message = expect_panic(|| {
        Hub::builder()
            .state(1u8)
            .method("Send", |_: HubCallerContext, _x: String| async {})
            .method(
                "Send",
                |_: HubCallerContext, _s: State<u8>, _x: i32| async {},
            )
    });
    assert!(message.contains("registered twice"), "{message:?}");
    // The same name twice with the same case too.
    let message = expect_panic(|| {
        Hub::builder()
            .method("Send", |_: HubCallerContext| async {})
            .method("Send", |_: HubCallerContext| async {})
    });
    assert!(message.contains("registered twice"), "{message:?}");
    // Distinct names are fine.
    let hub = Hub::builder()
        .method("Send", |_: HubCallerContext| async {})
        .method("Sender", |_: HubCallerContext| async {})
        .build();
    let mut names: Vec<&str> = hub.method_names().collect();
    names.sort_unstable();
    assert_eq!(names, ["Send", "Sender"]);
    let server = serve(basic_methods(Hub::builder())).await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Server-to-client streaming (docs/protocol.md, "Server-to-client streams")
// ---------------------------------------------------------------------------------------------

fn item(id: &str, item: Value) -> Value {
    json!({"type": 2, "invocationId": id, "item": item})
}

fn is_completion(message: &Value) -> bool {
    message["type"] == json!(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_items_then_completion() {
    let server = serve(stream_methods(Hub::builder(), Log::default())).await;
    let mut a = connect(&server).await;
    a.stream("1", "Count", json!([3])).await;
    for n in 1..=3 {
        a.expect(item("1", json!(n))).await;
    }
    a.expect(json!({"type": 3, "invocationId": "1"})).await;
    // An empty stream is just the Completion.
    a.stream("2", "Count", json!([0])).await;
    a.expect(json!({"type": 3, "invocationId": "2"})).await;
    a.expect_silence().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_hub_error_ends_stream() {
    let server = serve(stream_methods(Hub::builder(), Log::default())).await;
    let mut a = connect(&server).await;
    a.stream("1", "CountThenFail", json!([])).await;
    a.expect(item("1", json!(1))).await;
    a.expect(item("1", json!(2))).await;
    a.expect(json!({"type": 3, "invocationId": "1", "error": stream_ex("stream broke")}))
        .await;
    a.expect_silence().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_unexpected_error_is_generic() {
    let server = serve(stream_methods(Hub::builder(), Log::default())).await;
    let mut a = connect(&server).await;
    a.stream("1", "CountThenCrash", json!([])).await;
    a.expect(item("1", json!(1))).await;
    a.expect(json!({
        "type": 3,
        "invocationId": "1",
        "error": "An error occurred on the server while streaming results.",
    }))
    .await;
    a.expect_silence().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_and_non_streaming_invocation_kinds_must_match() {
    let server = serve(stream_methods(
        basic_methods(Hub::builder()),
        Log::default(),
    ))
    .await;
    let mut a = connect(&server).await;
    a.invoke("1", "Count", json!([3])).await;
    a.expect(json!({
        "type": 3,
        "invocationId": "1",
        "error": "The client attempted to invoke the streaming 'Count' method with a non-streaming invocation.",
    }))
    .await;
    a.stream("2", "Add", json!([1, 2])).await;
    a.expect(json!({
        "type": 3,
        "invocationId": "2",
        "error": "The client attempted to invoke the non-streaming 'Add' method with a streaming invocation.",
    }))
    .await;
    // A non-blocking Invocation of a streaming method gets no answer.
    a.send_call("Count", json!([3])).await;
    a.expect_silence().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_invocation_stops_stream() {
    let log = Log::default();
    let server = serve(stream_methods(Hub::builder(), log.clone())).await;
    let mut a = connect(&server).await;
    a.stream("1", "Ticks", json!([20])).await;
    a.expect(item("1", json!(0))).await;
    a.expect(item("1", json!(1))).await;
    assert!(log.events().is_empty(), "cancelled too early");
    a.send(json!({"type": 5, "invocationId": "1"})).await;
    // Items already on their way may trail; then a Completion without error.
    let messages = a.recv_until(is_completion).await;
    let (completion, items) = messages.split_last().expect("at least the Completion");
    assert_eq!(completion, &json!({"type": 3, "invocationId": "1"}));
    for (n, message) in items.iter().enumerate() {
        assert_eq!(
            message,
            &item("1", json!(n + 2)),
            "trailing items {items:?}"
        );
    }
    a.expect_silence().await;
    assert_eq!(log.wait_for(1).await, ["cancelled"]);
    // Cancelling an unknown or finished id is ignored.
    a.send(json!({"type": 5, "invocationId": "1"})).await;
    a.send(json!({"type": 5, "invocationId": "unknown"})).await;
    a.expect_silence().await;
    a.call("2", "Echo", json!(["fine"]))
        .await
        .assert_result(json!("fine"));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cancelled_when_connection_closes() {
    let log = Log::default();
    let server = serve(stream_methods(Hub::builder(), log.clone())).await;
    let mut a = connect(&server).await;
    a.stream("1", "Ticks", json!([20])).await;
    a.expect(item("1", json!(0))).await;
    a.ws.close().await;
    assert_eq!(log.wait_for(1).await, ["cancelled"]);
    finish(&server).await;
}

/// The cancellation of a running (non-streaming) invocation fires when the connection ends
/// (ASP.NET: a `CancellationToken` parameter is linked to `ConnectionAborted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_cancelled_when_connection_closes() {
    let log = Log::default();
    let server = serve(cancellation_methods(Hub::builder(), log.clone())).await;
    let mut a = connect(&server).await;
    a.invoke("1", "AwaitCancel", json!([])).await;
    a.expect_silence().await;
    assert!(log.events().is_empty());
    a.ws.close().await;
    assert_eq!(log.wait_for(1).await, ["invocation cancelled"]);
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_streaming_invocation_id() {
    let server = serve(stream_methods(Hub::builder(), Log::default())).await;
    let mut a = connect(&server).await;
    a.stream("1", "Ticks", json!([30])).await;
    a.expect(item("1", json!(0))).await;
    a.stream("1", "Count", json!([2])).await;
    let messages = a.recv_until(is_completion).await;
    let (error, items) = messages.split_last().expect("at least the Completion");
    assert_eq!(
        error,
        &json!({"type": 3, "invocationId": "1", "error": "Invocation ID '1' is already in use."})
    );
    // The items before it are the first stream's, in sequence (none of Count's).
    for (n, message) in items.iter().enumerate() {
        assert_eq!(message, &item("1", json!(n + 1)), "{items:?}");
    }
    // The first stream still runs and ends normally when cancelled.
    let next = a.recv().await;
    assert_eq!(
        next["type"],
        json!(2),
        "the first stream still runs: {next}"
    );
    a.send(json!({"type": 5, "invocationId": "1"})).await;
    let messages = a.recv_until(is_completion).await;
    assert_eq!(
        messages.last(),
        Some(&json!({"type": 3, "invocationId": "1"}))
    );
    // The id is free again.
    a.stream("1", "Count", json!([1])).await;
    a.expect(item("1", json!(1))).await;
    a.expect(json!({"type": 3, "invocationId": "1"})).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_do_not_count_against_parallel_limit() {
    let server = serve(stream_methods(
        basic_methods(Hub::builder()),
        Log::default(),
    ))
    .await;
    let mut a = connect(&server).await;
    // Sleep occupies the only slot, Add waits for it; the stream runs at once.
    a.invoke("1", "Sleep", json!([400])).await;
    a.invoke("2", "Add", json!([1, 2])).await;
    a.stream("3", "Count", json!([2])).await;
    a.expect(item("3", json!(1))).await;
    a.expect(item("3", json!(2))).await;
    a.expect(json!({"type": 3, "invocationId": "3"})).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": 400}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "2", "result": 3}))
        .await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Client-to-server streams (docs/protocol.md, "Client-to-server streams")
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stream_sum() {
    let server = serve(upload_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.send(json!({"type": 1, "invocationId": "1", "target": "Sum", "arguments": [], "streamIds": ["s1"]}))
        .await;
    for n in 1..=3 {
        a.send(json!({"type": 2, "invocationId": "s1", "item": n}))
            .await;
    }
    // Batched in one frame too.
    a.ws.send_text(&format!(
        "{}{RS}{}{RS}",
        json!({"type": 2, "invocationId": "s1", "item": 4}),
        json!({"type": 3, "invocationId": "s1"}),
    ))
    .await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": 10}))
        .await;
    // An empty upload.
    a.send(json!({"type": 1, "invocationId": "2", "target": "Sum", "arguments": [], "streamIds": ["s2"]}))
        .await;
    a.send(json!({"type": 3, "invocationId": "s2"})).await;
    a.expect(json!({"type": 3, "invocationId": "2", "result": 0}))
        .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stream_error_completion() {
    let server = serve(upload_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.send(json!({"type": 1, "invocationId": "1", "target": "Sum", "arguments": [], "streamIds": ["s1"]}))
        .await;
    a.send(json!({"type": 2, "invocationId": "s1", "item": 1}))
        .await;
    a.send(json!({"type": 3, "invocationId": "s1", "error": "client gave up"}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "1", "error": hub_ex("Sum", "client gave up")}))
        .await;
    // An item that does not bind to the item type ends the stream with an error too.
    a.send(json!({"type": 1, "invocationId": "2", "target": "Sum", "arguments": [], "streamIds": ["s2"]}))
        .await;
    a.send(json!({"type": 2, "invocationId": "s2", "item": "not a number"}))
        .await;
    let completion = a.recv().await;
    assert_eq!(completion["invocationId"], json!("2"), "{completion}");
    assert!(
        completion["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{completion}"
    );
    a.send(json!({"type": 3, "invocationId": "s2"})).await;
    a.expect_silence().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stream_count_mismatch() {
    let server = serve(upload_methods(basic_methods(Hub::builder()))).await;
    let mut a = connect(&server).await;
    for (id, target, stream_ids, error) in [
        (
            "1",
            "Sum",
            json!(["a", "b"]),
            "Client sent 2 stream(s), Hub method expects 1.",
        ),
        (
            "2",
            "Sum",
            json!([]),
            "Client sent 0 stream(s), Hub method expects 1.",
        ),
        (
            "3",
            "Zip",
            json!(["a"]),
            "Client sent 1 stream(s), Hub method expects 2.",
        ),
        (
            "4",
            "Void",
            json!(["a"]),
            "Client sent 1 stream(s), Hub method expects 0.",
        ),
    ] {
        a.send(json!({
            "type": 1,
            "invocationId": id,
            "target": target,
            "arguments": [],
            "streamIds": stream_ids,
        }))
        .await;
        // ASP.NET reports the count as a HubException from the method, detailed errors or not.
        a.expect(json!({"type": 3, "invocationId": id, "error": hub_ex(target, error)}))
            .await;
    }
    // Sum without streamIds at all.
    a.invoke("5", "Sum", json!([])).await;
    a.expect(json!({
        "type": 3,
        "invocationId": "5",
        "error": hub_ex("Sum", "Client sent 0 stream(s), Hub method expects 1."),
    }))
    .await;
    finish(&server).await;
}

/// When an invocation is wrong in several ways, the client hears about the first failing check in
/// ASP.NET's order: the argument count (checked while the message is parsed), then streaming vs
/// non-streaming invocation, then the upload stream count. Each case is what ASP.NET Core 10 answered
/// to the same message (detailed errors on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_checks_follow_aspnet_order() {
    let detailed = options(|o| o.enable_detailed_errors = true);
    let hub = upload_methods(stream_methods(
        basic_methods(Hub::builder()),
        Log::default(),
    ));
    let server = serve(hub.options(detailed)).await;
    let mut a = connect(&server).await;
    let count = |target: &str, given: usize, expected: usize| {
        format!(
            "Failed to invoke '{target}' due to an error on the server. InvalidDataException: Invocation provides {given} argument(s) but target expects {expected}."
        )
    };
    let streaming = "The client attempted to invoke the streaming 'CountThenFail' method with a non-streaming invocation.";
    let non_streaming = "The client attempted to invoke the non-streaming 'Negate' method with a streaming invocation.";
    for (id, kind, target, arguments, stream_ids, error) in [
        // Argument count before the stream count.
        (
            "1",
            1,
            "Negate",
            json!([]),
            json!(["s"]),
            count("Negate", 0, 1),
        ),
        ("2", 1, "Sum", json!(["x"]), json!([]), count("Sum", 1, 0)),
        // Argument count before the invocation kind.
        (
            "3",
            1,
            "CountThenFail",
            json!(["x"]),
            json!([]),
            count("CountThenFail", 1, 0),
        ),
        (
            "4",
            4,
            "Negate",
            json!([]),
            json!([]),
            count("Negate", 0, 1),
        ),
        (
            "5",
            4,
            "CountThenFail",
            json!(["x"]),
            json!(["s"]),
            count("CountThenFail", 1, 0),
        ),
        // Invocation kind before the stream count.
        (
            "6",
            1,
            "CountThenFail",
            json!([]),
            json!(["s"]),
            streaming.to_owned(),
        ),
        (
            "7",
            4,
            "Negate",
            json!([1]),
            json!(["s"]),
            non_streaming.to_owned(),
        ),
        // The stream count last, as a HubException from the method.
        (
            "8",
            1,
            "Negate",
            json!([1]),
            json!(["s"]),
            hub_ex("Negate", "Client sent 1 stream(s), Hub method expects 0."),
        ),
        (
            "9",
            4,
            "CountThenFail",
            json!([]),
            json!(["s"]),
            hub_ex(
                "CountThenFail",
                "Client sent 1 stream(s), Hub method expects 0.",
            ),
        ),
    ] {
        a.send(json!({
            "type": kind,
            "invocationId": id,
            "target": target,
            "arguments": arguments,
            "streamIds": stream_ids,
        }))
        .await;
        a.expect(json!({"type": 3, "invocationId": id, "error": error}))
            .await;
    }
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_upload_streams() {
    let server = serve(upload_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.send(json!({"type": 1, "invocationId": "1", "target": "Zip", "arguments": [], "streamIds": ["L", "N"]}))
        .await;
    for (stream, value) in [
        ("L", json!("x")),
        ("N", json!(1)),
        ("L", json!("y")),
        ("N", json!(2)),
    ] {
        a.send(json!({"type": 2, "invocationId": stream, "item": value}))
            .await;
    }
    a.send(json!({"type": 3, "invocationId": "N"})).await;
    a.send(json!({"type": 2, "invocationId": "L", "item": "z"}))
        .await;
    a.expect_silence().await;
    a.send(json!({"type": 3, "invocationId": "L"})).await;
    a.expect(json!({
        "type": 3,
        "invocationId": "1",
        "result": {"letters": ["x", "y", "z"], "numbers": [1, 2]},
    }))
    .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stream_with_value_argument() {
    let server = serve(upload_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.send(json!({"type": 1, "invocationId": "1", "target": "Scale", "arguments": [10], "streamIds": ["s"]}))
        .await;
    a.send(json!({"type": 2, "invocationId": "s", "item": 1}))
        .await;
    a.send(json!({"type": 2, "invocationId": "s", "item": 2}))
        .await;
    a.send(json!({"type": 3, "invocationId": "s"})).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": [10, 20]}))
        .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_stream_into_streaming_method() {
    let server = serve(upload_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.send(json!({"type": 4, "invocationId": "1", "target": "Doubles", "arguments": [], "streamIds": ["u"]}))
        .await;
    for n in 1..=3 {
        a.send(json!({"type": 2, "invocationId": "u", "item": n}))
            .await;
        a.expect(item("1", json!(n * 2))).await;
    }
    a.send(json!({"type": 3, "invocationId": "u"})).await;
    a.expect(json!({"type": 3, "invocationId": "1"})).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_items_after_method_returned_are_ignored() {
    let server = serve(upload_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    a.send(json!({"type": 1, "invocationId": "1", "target": "First", "arguments": [], "streamIds": ["s"]}))
        .await;
    a.send(json!({"type": 2, "invocationId": "s", "item": 5}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": 5}))
        .await;
    for n in 6..20 {
        a.send(json!({"type": 2, "invocationId": "s", "item": n}))
            .await;
    }
    a.send(json!({"type": 3, "invocationId": "s"})).await;
    a.send(json!({"type": 2, "invocationId": "never-opened", "item": 1}))
        .await;
    a.expect_silence().await;
    a.call("2", "Echo", json!(["ok"]))
        .await
        .assert_result(json!("ok"));
    finish(&server).await;
}

/// ASP.NET does not count invocations of methods with upload-stream parameters against
/// MaximumParallelInvocationsPerClient (`DefaultHubDispatcher.ProcessInvocation`: the limit applies
/// only when `!isStreamCall && !isStreamResponse`): `Sum` runs while `Sleep` holds the only slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_invocations_do_not_count_against_parallel_limit() {
    let server = serve(upload_methods(basic_methods(Hub::builder()))).await;
    let mut a = connect(&server).await;
    a.invoke("1", "Sleep", json!([400])).await;
    a.send(json!({"type": 1, "invocationId": "2", "target": "Sum", "arguments": [], "streamIds": ["s"]}))
        .await;
    a.send(json!({"type": 2, "invocationId": "s", "item": 1}))
        .await;
    a.send(json!({"type": 3, "invocationId": "s"})).await;
    a.expect(json!({"type": 3, "invocationId": "2", "result": 1}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": 400}))
        .await;
    finish(&server).await;
}

/// More upload items than the stream buffer holds, for an upload invocation sent while another
/// invocation runs: reading may wait (back-pressure) but the connection must not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_beyond_buffer_while_another_invocation_runs() {
    let small_buffer = options(|o| o.stream_buffer_capacity = 2);
    let server = serve(upload_methods(basic_methods(Hub::builder())).options(small_buffer)).await;
    let mut a = connect(&server).await;
    a.invoke("1", "Sleep", json!([300])).await;
    a.send(json!({"type": 1, "invocationId": "2", "target": "Sum", "arguments": [], "streamIds": ["s"]}))
        .await;
    for n in 1..=6 {
        a.send(json!({"type": 2, "invocationId": "s", "item": n}))
            .await;
    }
    a.send(json!({"type": 3, "invocationId": "s"})).await;
    // Either order (ASP.NET: Sum first, see above).
    let mut completions = vec![a.recv().await, a.recv().await];
    completions.sort_by_key(|m| m["invocationId"].as_str().map(str::to_owned));
    assert_eq!(
        completions,
        [
            json!({"type": 3, "invocationId": "1", "result": 300}),
            json!({"type": 3, "invocationId": "2", "result": 21}),
        ]
    );
    a.call("3", "Add", json!([1, 2]))
        .await
        .assert_result(json!(3));
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// MaximumParallelInvocationsPerClient (docs/protocol.md, "Limits")
// ---------------------------------------------------------------------------------------------

fn two_sleeps() -> String {
    format!(
        "{}{RS}{}{RS}",
        json!({"type": 1, "invocationId": "1", "target": "Sleep", "arguments": [300]}),
        json!({"type": 1, "invocationId": "2", "target": "Sleep", "arguments": [300]}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_limit_one_runs_invocations_in_order() {
    let server = serve(basic_methods(Hub::builder())).await;
    let mut a = connect(&server).await;
    let started = Instant::now();
    a.ws.send_text(&two_sleeps()).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": 300}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "2", "result": 300}))
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600),
        "the invocations overlapped: {elapsed:?}"
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_limit_two_overlaps() {
    let two = options(|o| o.maximum_parallel_invocations_per_client = 2);
    let server = serve(basic_methods(Hub::builder()).options(two)).await;
    let mut a = connect(&server).await;
    let started = Instant::now();
    a.ws.send_text(&two_sleeps()).await;
    let mut ids = vec![a.recv().await, a.recv().await];
    let elapsed = started.elapsed();
    ids.sort_by_key(|m| m["invocationId"].as_str().map(str::to_owned));
    assert_eq!(
        ids,
        [
            json!({"type": 3, "invocationId": "1", "result": 300}),
            json!({"type": 3, "invocationId": "2", "result": 300}),
        ]
    );
    assert!(
        elapsed < Duration::from_millis(550),
        "the invocations did not overlap: {elapsed:?}"
    );
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

fn receive(label: &str) -> Value {
    json!({"type": 1, "target": "Receive", "arguments": [label]})
}

/// `sender` invokes `target(arguments)`; every client of `receivers` gets exactly one
/// `Receive(label)`, `silent` ones get nothing; the sender gets `Receive(label)` before its
/// Completion when `sender_receives`.
async fn deliver(
    sender: &mut Client,
    sender_receives: bool,
    (target, arguments, label): (&str, Value, &str),
    receivers: &mut [&mut Client],
    silent: &mut [&mut Client],
) {
    sender.invoke("d", target, arguments).await;
    if sender_receives {
        sender.expect(receive(label)).await;
    }
    sender
        .expect(json!({"type": 3, "invocationId": "d", "result": null}))
        .await;
    for receiver in receivers.iter_mut() {
        receiver.expect(receive(label)).await;
    }
    let mut everyone: Vec<&mut Client> = receivers.iter_mut().map(|c| &mut **c).collect();
    everyone.extend(silent.iter_mut().map(|c| &mut **c));
    everyone.push(sender);
    expect_silence_all(&mut everyone).await;
}

async fn three(server: &common::TestServer) -> (Client, Client, Client) {
    (
        connect(server).await,
        connect(server).await,
        connect(server).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_all() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let call = ("ToAll", json!(["all"]), "all");
    deliver(&mut a, true, call, &mut [&mut b, &mut c], &mut []).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_others() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let call = ("ToOthers", json!(["others"]), "others");
    deliver(&mut a, false, call, &mut [&mut b, &mut c], &mut []).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_caller() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let call = ("ToCaller", json!(["me"]), "me");
    deliver(&mut a, true, call, &mut [], &mut [&mut b, &mut c]).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_client_by_id() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let call = ("ToClient", json!([b.id, "you"]), "you");
    deliver(&mut a, false, call, &mut [&mut b], &mut [&mut c]).await;
    // To oneself by id.
    let call = ("ToClient", json!([a.id, "self"]), "self");
    deliver(&mut a, true, call, &mut [], &mut [&mut b, &mut c]).await;
    // An unknown id is ignored.
    let call = (
        "ToClient",
        json!(["no-such-connection", "nobody"]),
        "nobody",
    );
    deliver(&mut a, false, call, &mut [], &mut [&mut b, &mut c]).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_by_ids() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    // A duplicated id is delivered once; unknown ids are ignored.
    let ids = json!([b.id, c.id, b.id, "unknown"]);
    let call = ("ToClients", json!([ids, "listed"]), "listed");
    deliver(&mut a, false, call, &mut [&mut b, &mut c], &mut []).await;
    let call = ("ToClients", json!([[], "empty"]), "empty");
    deliver(&mut a, false, call, &mut [], &mut [&mut b, &mut c]).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_all_except() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let call = ("ToAllExcept", json!([[b.id], "except b"]), "except b");
    deliver(&mut a, true, call, &mut [&mut c], &mut [&mut b]).await;
    let call = ("ToAllExcept", json!([[a.id, c.id], "only b"]), "only b");
    deliver(&mut a, false, call, &mut [&mut b], &mut [&mut c]).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_group() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    b.call("j", "Join", json!(["g"])).await.assert_void();
    c.call("j", "Join", json!(["other"])).await.assert_void();
    let call = ("ToGroup", json!(["g", "group"]), "group");
    deliver(&mut a, false, call, &mut [&mut b], &mut [&mut c]).await;
    // Group names are case-sensitive, as in ASP.NET.
    let call = ("ToGroup", json!(["G", "case"]), "case");
    deliver(&mut a, false, call, &mut [], &mut [&mut b, &mut c]).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_groups_deliver_once() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let mut d = connect(&server).await;
    b.call("j1", "Join", json!(["g1"])).await;
    b.call("j2", "Join", json!(["g2"])).await;
    c.call("j", "Join", json!(["g2"])).await;
    d.call("j", "Join", json!(["g3"])).await;
    let call = (
        "ToGroups",
        json!([["g1", "g2", "missing"], "groups"]),
        "groups",
    );
    deliver(&mut a, false, call, &mut [&mut b, &mut c], &mut [&mut d]).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_group_except() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    a.call("j", "Join", json!(["g"])).await;
    b.call("j", "Join", json!(["g"])).await;
    c.call("j", "Join", json!(["g"])).await;
    let call = ("ToGroupExcept", json!(["g", [b.id], "not b"]), "not b");
    deliver(&mut a, true, call, &mut [&mut c], &mut [&mut b]).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_others_in_group() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let mut d = connect(&server).await;
    a.call("j", "Join", json!(["g"])).await;
    b.call("j", "Join", json!(["g"])).await;
    c.call("j", "Join", json!(["g"])).await;
    let call = ("ToOthersInGroup", json!(["g", "peers"]), "peers");
    deliver(&mut a, false, call, &mut [&mut b, &mut c], &mut [&mut d]).await;
    // From outside the group: every member.
    let call = ("ToOthersInGroup", json!(["g", "outsider"]), "outsider");
    deliver(&mut d, false, call, &mut [&mut a, &mut b, &mut c], &mut []).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_user_and_users() {
    let server = serve(clients_hub()).await;
    let mut alice1 = connect_as(&server, "alice").await;
    let mut alice2 = connect_as(&server, "alice").await;
    let mut bob = connect_as(&server, "bob").await;
    let mut carol = connect_as(&server, "carol").await;
    let mut anonymous = connect(&server).await;
    alice1
        .call("w", "WhoAmI", json!([]))
        .await
        .assert_result(json!("alice"));
    anonymous
        .call("w", "WhoAmI", json!([]))
        .await
        .assert_result(json!(null));
    let call = ("ToUser", json!(["alice", "for alice"]), "for alice");
    deliver(
        &mut bob,
        false,
        call,
        &mut [&mut alice1, &mut alice2],
        &mut [&mut carol, &mut anonymous],
    )
    .await;
    // The caller's own user too.
    let call = ("ToUser", json!(["alice", "mine"]), "mine");
    deliver(
        &mut alice1,
        true,
        call,
        &mut [&mut alice2],
        &mut [&mut bob, &mut carol, &mut anonymous],
    )
    .await;
    let call = (
        "ToUsers",
        json!([["alice", "bob", "nobody"], "some"]),
        "some",
    );
    deliver(
        &mut carol,
        false,
        call,
        &mut [&mut alice1, &mut alice2, &mut bob],
        &mut [&mut anonymous],
    )
    .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_json_and_msgpack_clients() {
    let server = serve(clients_hub()).await;
    let mut a = connect(&server).await;
    let mut m = connect_msgpack(&server).await;
    // Make sure the MessagePack connection is registered (an Echo round trip).
    m.send(json!([1, {}, "e", "Echo", ["x"], []])).await;
    m.expect(json!([3, {}, "e", 3, "x"])).await;
    a.invoke("1", "ToAll", json!(["both"])).await;
    a.expect(receive("both")).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": null}))
        .await;
    m.expect(json!([1, {}, null, "Receive", ["both"], []]))
        .await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_add_and_remove() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    a.call("j", "Join", json!(["g"])).await;
    let call = ("ToGroup", json!(["g", "in"]), "in");
    deliver(&mut b, false, call, &mut [&mut a], &mut [&mut c]).await;
    // Joining twice is one membership.
    a.call("j2", "Join", json!(["g"])).await;
    let call = ("ToGroup", json!(["g", "once"]), "once");
    deliver(&mut b, false, call, &mut [&mut a], &mut [&mut c]).await;
    a.call("l", "Leave", json!(["g"])).await;
    let call = ("ToGroup", json!(["g", "out"]), "out");
    deliver(&mut b, false, call, &mut [], &mut [&mut a, &mut c]).await;
    // Leaving a group one is not in is harmless.
    c.call("l", "Leave", json!(["g"])).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_membership_ends_with_connection() {
    let server = serve(clients_hub()).await;
    let context = server.hub.context();
    let mut sender = connect(&server).await;
    let mut alice = connect_as(&server, "alice").await;
    alice.call("j", "Join", json!(["g"])).await;
    assert_eq!(context.group_count(), 1);
    alice.close().await;
    eventually("the group to disappear", || context.group_count() == 0).await;
    // The same user again: a new connection, not in the group.
    let mut again = connect_as(&server, "alice").await;
    let call = ("ToGroup", json!(["g", "gone"]), "gone");
    deliver(&mut sender, false, call, &mut [], &mut [&mut again]).await;
    let call = ("ToUser", json!(["alice", "still alice"]), "still alice");
    deliver(&mut sender, false, call, &mut [&mut again], &mut []).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_count_tracks_members() {
    let server = serve(clients_hub()).await;
    let context = server.hub.context();
    let (mut a, mut b, _c) = three(&server).await;
    assert_eq!(context.group_count(), 0);
    assert_eq!(context.connection_count(), 3);
    a.call("1", "Join", json!(["g1"])).await;
    b.call("1", "Join", json!(["g1"])).await;
    a.call("2", "Join", json!(["g2"])).await;
    assert_eq!(context.group_count(), 2);
    a.call("3", "Leave", json!(["g1"])).await;
    assert_eq!(context.group_count(), 2, "b is still in g1");
    b.call("2", "Leave", json!(["g1"])).await;
    assert_eq!(context.group_count(), 1, "g1 has no members left");
    a.close().await;
    eventually("g2 to disappear with its last member", || {
        context.group_count() == 0
    })
    .await;
    eventually("the connection to be gone", || {
        context.connection_count() == 2
    })
    .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_separate_per_hub() {
    let first = build(clients_hub());
    let second = build(clients_hub());
    let router = axum::Router::new()
        .nest("/hub", first.router())
        .nest("/hub2", second.router());
    let server = serve_router(first.clone(), router).await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    let mut x = connect_with(&server, "2", "").await;
    let mut y = connect_with(&server, "2", "").await;
    a.call("j", "Join", json!(["g"])).await;
    x.call("j", "Join", json!(["g"])).await;
    assert_eq!(
        (
            first.context().connection_count(),
            second.context().connection_count()
        ),
        (2, 2)
    );
    assert_eq!(
        (
            first.context().group_count(),
            second.context().group_count()
        ),
        (1, 1)
    );
    let call = ("ToGroup", json!(["g", "hub one"]), "hub one");
    deliver(&mut b, false, call, &mut [&mut a], &mut [&mut x, &mut y]).await;
    let call = ("ToGroup", json!(["g", "hub two"]), "hub two");
    deliver(&mut y, false, call, &mut [&mut x], &mut [&mut a, &mut b]).await;
    let call = ("ToAll", json!(["all of two"]), "all of two");
    deliver(&mut y, true, call, &mut [&mut x], &mut [&mut a, &mut b]).await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// HubContext
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_context_background_task_sends_in_order() {
    let server = serve(clients_hub()).await;
    let mut clients = vec![
        connect(&server).await,
        connect(&server).await,
        connect(&server).await,
    ];
    let context = server.hub.context();
    assert_eq!(context.connection_count(), 3);
    let task = tokio::spawn({
        let context = context.clone();
        async move {
            for n in 0..100 {
                context
                    .clients()
                    .all()
                    .send("Tick", (n, "tick"))
                    .await
                    .expect("send");
            }
        }
    });
    within("the background task", task)
        .await
        .expect("background task");
    for client in &mut clients {
        for n in 0..100 {
            client
                .expect(json!({"type": 1, "target": "Tick", "arguments": [n, "tick"]}))
                .await;
        }
    }
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    expect_silence_all(&mut refs).await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_context_groups_and_single_client() {
    let server = serve(clients_hub()).await;
    let (mut a, mut b, mut c) = three(&server).await;
    let context = server.hub.context();
    context
        .groups()
        .add_to_group(&b.id, "outside")
        .await
        .expect("add to group");
    context
        .groups()
        .add_to_group("unknown-id", "outside")
        .await
        .expect("add to group");
    assert_eq!(context.group_count(), 1);
    context
        .clients()
        .group("outside")
        .send("Receive", ("from outside",))
        .await
        .expect("send");
    b.expect(receive("from outside")).await;
    context
        .clients()
        .client(c.id.clone())
        .send("Receive", ("just c",))
        .await
        .expect("send");
    c.expect(receive("just c")).await;
    context
        .groups()
        .remove_from_group(&b.id, "outside")
        .await
        .expect("remove from group");
    assert_eq!(context.group_count(), 0);
    context
        .clients()
        .group("outside")
        .send("Receive", ("nobody",))
        .await
        .expect("send");
    expect_silence_all(&mut [&mut a, &mut b, &mut c]).await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Client results (docs/protocol.md, "Client results")
// ---------------------------------------------------------------------------------------------

fn results_hub(log: Log) -> HubBuilder {
    result_methods(Hub::builder(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_result_value() {
    let server = serve(results_hub(Log::default())).await;
    let mut a = connect(&server).await;
    a.invoke("1", "AskCaller", json!(["GetNumber"])).await;
    a.expect(
        json!({"type": 1, "invocationId": "s1", "target": "GetNumber", "arguments": [1, "two"]}),
    )
    .await;
    a.send(json!({"type": 3, "invocationId": "s1", "result": 42}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": 42}))
        .await;
    // The next one is s2.
    a.invoke("2", "AskCaller", json!(["GetOther"])).await;
    a.expect(
        json!({"type": 1, "invocationId": "s2", "target": "GetOther", "arguments": [1, "two"]}),
    )
    .await;
    a.send(json!({"type": 3, "invocationId": "s2", "result": -7}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "2", "result": -7}))
        .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_result_error() {
    let server = serve(results_hub(Log::default())).await;
    let mut a = connect(&server).await;
    a.invoke("1", "AskCaller", json!(["GetNumber"])).await;
    a.expect(
        json!({"type": 1, "invocationId": "s1", "target": "GetNumber", "arguments": [1, "two"]}),
    )
    .await;
    a.send(json!({"type": 3, "invocationId": "s1", "error": "Client didn't provide a result."}))
        .await;
    a.expect(json!({
        "type": 3,
        "invocationId": "1",
        "error": hub_ex("AskCaller", "Client(\"Client didn't provide a result.\"): Client didn't provide a result."),
    }))
    .await;
    // A result that does not bind to i32.
    a.invoke("2", "AskCaller", json!(["GetNumber"])).await;
    assert_eq!(a.recv().await["invocationId"], json!("s2"));
    a.send(json!({"type": 3, "invocationId": "s2", "result": "not a number"}))
        .await;
    let completion = a.recv().await;
    let error = completion["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&hub_ex("AskCaller", "InvalidResult(")),
        "{completion}"
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_result_from_another_connection() {
    let server = serve(results_hub(Log::default())).await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    a.invoke("1", "AskClient", json!([b.id])).await;
    b.expect(json!({"type": 1, "invocationId": "s1", "target": "GetName", "arguments": []}))
        .await;
    b.send(json!({"type": 3, "invocationId": "s1", "result": "bob"}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": "bob"}))
        .await;
    expect_silence_all(&mut [&mut a, &mut b]).await;
    // Unknown connection.
    a.call("2", "AskClient", json!(["no-such-id"]))
        .await
        .assert_error(&hub_ex(
            "AskClient",
            "UnknownConnection(\"no-such-id\"): Connection 'no-such-id' does not exist.",
        ));
    // The asked connection goes away without answering.
    a.invoke("3", "AskClient", json!([b.id])).await;
    b.expect(json!({"type": 1, "invocationId": "s2", "target": "GetName", "arguments": []}))
        .await;
    let b_id = b.id.clone();
    b.ws.close().await;
    a.expect(json!({
        "type": 3,
        "invocationId": "3",
        "error": hub_ex("AskClient", &format!("Disconnected(\"{b_id}\"): Connection '{b_id}' disconnected.")),
    }))
    .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_result_caller_disconnects() {
    let log = Log::default();
    let server = serve(results_hub(log.clone())).await;
    let mut a = connect(&server).await;
    a.invoke("1", "AskCallerLogged", json!([])).await;
    a.expect(json!({"type": 1, "invocationId": "s1", "target": "GetNumber", "arguments": []}))
        .await;
    let id = a.id.clone();
    a.close().await;
    assert_eq!(
        log.wait_for(1).await,
        [format!(
            "Disconnected(\"{id}\"): Connection '{id}' disconnected."
        )]
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_result_timeout() {
    let short = options(|o| o.client_result_timeout = Duration::from_millis(300));
    let server = serve(results_hub(Log::default()).options(short)).await;
    let mut a = connect(&server).await;
    let started = Instant::now();
    a.invoke("1", "AskCaller", json!(["GetNumber"])).await;
    a.expect(
        json!({"type": 1, "invocationId": "s1", "target": "GetNumber", "arguments": [1, "two"]}),
    )
    .await;
    a.expect(json!({
        "type": 3,
        "invocationId": "1",
        "error": hub_ex("AskCaller", "Timeout: The client did not return a result within the timeout."),
    }))
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A late answer is ignored.
    a.send(json!({"type": 3, "invocationId": "s1", "result": 1}))
        .await;
    a.expect_silence().await;
    a.call("2", "Echo", json!(["alive"]))
        .await
        .assert_result(json!("alive"));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_result_not_allowed_in_on_connected() {
    let server = serve(results_hub(Log::default())).await;
    let mut a = connect_with(&server, "", "&ask=1").await;
    a.call("1", "OnConnectedOutcome", json!([]))
        .await
        .assert_result(json!(
            "NotAllowedInOnConnected: Client results inside OnConnectedAsync Hub methods are not allowed."
        ));
    a.expect_silence().await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Connection hooks
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Ready(String);

fn lifetime_hub(log: Log) -> HubBuilder {
    Hub::builder()
        .on_connected(|ctx: HubCallerContext| async move {
            if ctx.request().and_then(|r| r.query_param("fail")).is_some() {
                parse_number("on_connected fails")?;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            ctx.insert_item(Ready(format!("ready {}", ctx.connection_id())));
            Ok::<(), HubError>(())
        })
        .on_disconnected(move |ctx: HubCallerContext, error: Option<String>| {
            let log = log.clone();
            async move {
                log.push(format!("{} {error:?}", ctx.connection_id()));
            }
        })
        .method("ReadReady", |ctx: HubCallerContext| async move {
            ctx.item::<Ready>().map(|r| r.0)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_connected_runs_before_first_invocation() {
    let server = serve(lifetime_hub(Log::default())).await;
    let (id, mut ws) = open(&server, "", "").await;
    // The handshake and the first invocation in one frame.
    let invocation =
        json!({"type": 1, "invocationId": "1", "target": "ReadReady", "arguments": []});
    ws.send_text(&format!(
        r#"{{"protocol":"json","version":1}}{RS}{invocation}{RS}"#
    ))
    .await;
    assert_eq!(ws.next_text_message().await, "{}");
    assert_eq!(
        ws.next_json().await,
        json!({"type": 3, "invocationId": "1", "result": format!("ready {id}")})
    );
    ws.close().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disconnected_error_argument() {
    let log = Log::default();
    let server = serve(lifetime_hub(log.clone())).await;

    // A Close message from the client: a normal close.
    let mut a = connect(&server).await;
    a.send(json!({"type": 7})).await;
    assert!(
        matches!(a.ws.next_frame().await, Frame::Close(_) | Frame::Ended),
        "the server ends the connection after the client's Close"
    );
    assert_eq!(log.wait_for(1).await, [format!("{} None", a.id)]);

    // The socket closed without a Close message: also normal.
    let b = connect(&server).await;
    let b_id = b.id.clone();
    b.ws.close().await;
    assert_eq!(log.wait_for(2).await[1], format!("{b_id} None"));

    // A protocol error: the server closes with an error, and on_disconnected gets it.
    let mut c = connect(&server).await;
    c.ws.send_text(&format!("this is not JSON{RS}")).await;
    c.expect(
        json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true}),
    )
    .await;
    let events = log.wait_for(3).await;
    assert!(
        events[2].starts_with(&format!("{} Some(", c.id)),
        "on_disconnected after a protocol error: {events:?}"
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_connected_error_closes_with_error() {
    let server = serve(lifetime_hub(Log::default())).await;
    let (_, mut ws) = open(&server, "", "&fail=1").await;
    ws.handshake_json().await;
    assert_eq!(
        ws.next_json().await,
        json!({"type": 7, "error": "Connection closed with an error."})
    );
    assert!(matches!(ws.next_frame().await, Frame::Close(_)));
    eventually("the failed connection to be gone", || {
        server.hub.context().connection_count() == 0
    })
    .await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// The caller context
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Greeting(String);

#[derive(Clone)]
struct Missing;

#[derive(Clone)]
struct Item(String);

fn context_hub() -> HubBuilder {
    Hub::builder()
        .state(Greeting("Hello".to_owned()))
        .method("RequestInfo", |ctx: HubCallerContext| async move {
            let request = ctx.request();
            json!({
                "header": request.and_then(|r| r.header("x-custom-header")),
                "session": request.and_then(|r| r.cookie("session")),
                "theme": request.and_then(|r| r.cookie("theme")),
                "color": request.and_then(|r| r.query_param("color")),
                "transport": ctx.transport().map(TransportType::name),
                "protocol": ctx.protocol().map(HubProtocol::name),
            })
        })
        .method(
            "SetItem",
            |ctx: HubCallerContext, value: String| async move {
                ctx.insert_item(Item(value)).map(|previous| previous.0)
            },
        )
        .method("GetItem", |ctx: HubCallerContext| async move {
            ctx.item::<Item>().map(|item| item.0)
        })
        .method("Abort", |ctx: HubCallerContext| async move { ctx.abort() })
        .method(
            "Greet",
            |_: HubCallerContext, State(greeting): State<Greeting>, name: String| async move {
                format!("{}, {name}!", greeting.0)
            },
        )
        .method(
            "GreetLast",
            |_: HubCallerContext, name: String, State(greeting): State<Greeting>| async move {
                format!("{}, {name}!", greeting.0)
            },
        )
        .method("StateFromContext", |ctx: HubCallerContext| async move {
            ctx.state::<Greeting>().map(|g| g.0)
        })
        .method(
            "NoState",
            |_: HubCallerContext, _missing: State<Missing>| async {},
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_query_cookies_transport_protocol() {
    let server = serve(context_hub()).await;
    let mut client = HeaderClient::connect(
        &server,
        "&color=blue%20green",
        &[
            ("Cookie", "theme=dark; session=abc123"),
            ("X-Custom-Header", "custom value"),
        ],
    )
    .await;
    assert_eq!(
        client.call("1", "RequestInfo").await,
        json!({
            "type": 3,
            "invocationId": "1",
            "result": {
                "header": "custom value",
                "session": "abc123",
                "theme": "dark",
                "color": "blue green",
                "transport": "WebSockets",
                "protocol": "json",
            },
        })
    );
    client.close().await;
    // The same over MessagePack.
    let mut m = connect_msgpack(&server).await;
    m.send(json!([1, {}, "2", "RequestInfo", [], []])).await;
    m.expect(json!([3, {}, "2", 3, {
        "header": null,
        "session": null,
        "theme": null,
        "color": null,
        "transport": "WebSockets",
        "protocol": "messagepack",
    }]))
    .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_per_connection() {
    let server = serve(context_hub()).await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    a.call("1", "SetItem", json!(["for a"]))
        .await
        .assert_result(json!(null));
    a.call("2", "SetItem", json!(["for a, again"]))
        .await
        .assert_result(json!("for a"));
    b.call("1", "GetItem", json!([]))
        .await
        .assert_result(json!(null));
    b.call("2", "SetItem", json!(["for b"]))
        .await
        .assert_result(json!(null));
    a.call("3", "GetItem", json!([]))
        .await
        .assert_result(json!("for a, again"));
    b.call("3", "GetItem", json!([]))
        .await
        .assert_result(json!("for b"));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_closes_without_reconnect() {
    let server = serve(context_hub()).await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;
    a.invoke("1", "Abort", json!([])).await;
    // No Completion: the Close message, then the end of the socket.
    assert_eq!(a.ws.next_json().await, json!({"type": 7}));
    assert!(
        matches!(a.ws.next_frame().await, Frame::Close(_) | Frame::Ended),
        "the socket must close after the Close message"
    );
    b.call("1", "GetItem", json!([]))
        .await
        .assert_result(json!(null));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_parameters_are_injected() {
    let server = serve(context_hub()).await;
    let mut a = connect(&server).await;
    a.call("1", "Greet", json!(["ann"]))
        .await
        .assert_result(json!("Hello, ann!"));
    a.call("2", "GreetLast", json!(["bo"]))
        .await
        .assert_result(json!("Hello, bo!"));
    a.call("3", "StateFromContext", json!([]))
        .await
        .assert_result(json!("Hello"));
    // The injected parameter is not an argument.
    a.call("4", "Greet", json!(["state?", "ann"]))
        .await
        .assert_error("Failed to invoke 'Greet' due to an error on the server.");
    a.call("5", "NoState", json!([]))
        .await
        .assert_error("Failed to invoke 'NoState' due to an error on the server.");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_parameter_count_detailed() {
    let detailed = options(|o| o.enable_detailed_errors = true);
    let server = serve(context_hub().options(detailed)).await;
    let mut a = connect(&server).await;
    a.call("1", "Greet", json!(["state?", "ann"])).await.assert_error(
        "Failed to invoke 'Greet' due to an error on the server. InvalidDataException: Invocation provides 2 argument(s) but target expects 1.",
    );
    let completion = a.call("2", "NoState", json!([])).await;
    let error = completion.0["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Failed to invoke 'NoState' due to an error on the server. "),
        "{completion:?}"
    );
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

type InvokeResult = Result<MethodOutput, InvokeError>;

/// Logs `<name>:before:<method>` / `<name>:after:<method>` around invocations (Echo excluded)
/// and `<name>:connected` / `<name>:disconnected:<error>` around the connection hooks.
struct Recorder {
    name: &'static str,
    log: Log,
}

impl HubFilter for Recorder {
    fn invoke(
        self: Arc<Self>,
        invocation: HubInvocation,
        next: Next,
    ) -> BoxFuture<'static, InvokeResult> {
        Box::pin(async move {
            let method = invocation.method.clone();
            if method == "Echo" {
                return next.run(invocation).await;
            }
            self.log.push(format!("{}:before:{method}", self.name));
            let result = next.run(invocation).await;
            self.log.push(format!("{}:after:{method}", self.name));
            result
        })
    }

    fn on_connected(
        self: Arc<Self>,
        caller: HubCallerContext,
        next: NextConnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        Box::pin(async move {
            self.log.push(format!("{}:connected", self.name));
            next.run(caller).await
        })
    }

    fn on_disconnected(
        self: Arc<Self>,
        caller: HubCallerContext,
        error: Option<String>,
        next: NextDisconnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        Box::pin(async move {
            self.log
                .push(format!("{}:disconnected:{error:?}", self.name));
            next.run(caller, error).await
        })
    }
}

/// Rejects `Secret`; replaces argument 0 of `Add` with 100 and doubles its result; turns
/// unexpected errors into `handled`.
struct Policy;

impl HubFilter for Policy {
    fn invoke(
        self: Arc<Self>,
        mut invocation: HubInvocation,
        next: Next,
    ) -> BoxFuture<'static, InvokeResult> {
        Box::pin(async move {
            match invocation.method.as_str() {
                "Secret" => return Err(InvokeError::Method(HubError::new("blocked"))),
                "Add" => {
                    if let Some(first) = invocation.arguments.first_mut() {
                        *first = Payload::from_value(100);
                    }
                    return match next.run(invocation).await? {
                        MethodOutput::Value(payload) => {
                            let n: i64 = payload
                                .deserialize()
                                .map_err(|e| InvokeError::Method(HubError::new(e.to_string())))?;
                            Ok(MethodOutput::Value(Payload::from_value(n * 2)))
                        }
                        other => Ok(other),
                    };
                }
                _ => {}
            }
            match next.run(invocation).await {
                Err(InvokeError::Method(err)) if !err.is_hub_error() => {
                    Err(InvokeError::Method(HubError::new("handled")))
                }
                other => other,
            }
        })
    }
}

fn filtered_hub(log: Log) -> HubBuilder {
    let method_log = log.clone();
    basic_methods(Hub::builder())
        .method("Secret", move |_: HubCallerContext| {
            let log = method_log.clone();
            async move {
                log.push("method:Secret");
                "the secret"
            }
        })
        .filter(Recorder {
            name: "outer",
            log: log.clone(),
        })
        .filter(Recorder { name: "inner", log })
        .filter(Policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_run_outer_to_inner() {
    let log = Log::default();
    let server = serve(filtered_hub(log.clone())).await;
    let mut a = connect_raw(&server, "", "").await;
    a.call("1", "Negate", json!([1]))
        .await
        .assert_result(json!(-1));
    let events: Vec<String> = log.events();
    assert_eq!(
        events,
        [
            "outer:connected",
            "inner:connected",
            "outer:before:Negate",
            "inner:before:Negate",
            "inner:after:Negate",
            "outer:after:Negate",
        ]
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_rejects_method() {
    let log = Log::default();
    let server = serve(filtered_hub(log.clone())).await;
    let mut a = connect(&server).await;
    a.call("1", "Secret", json!([]))
        .await
        .assert_error(&hub_ex("Secret", "blocked"));
    a.call("2", "secret", json!([]))
        .await
        .assert_error(&hub_ex("secret", "blocked"));
    assert!(
        !log.events().iter().any(|e| e == "method:Secret"),
        "the rejected method ran: {:?}",
        log.events()
    );
    // Non-blocking: rejected silently.
    a.send_call("Secret", json!([])).await;
    a.expect_silence().await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_transforms_arguments_and_result() {
    let server = serve(filtered_hub(Log::default())).await;
    let mut a = connect(&server).await;
    // (100 + 2) * 2
    a.call("1", "Add", json!([1, 2]))
        .await
        .assert_result(json!(204));
    // Other methods are untouched.
    a.call("2", "Negate", json!([3]))
        .await
        .assert_result(json!(-3));
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_handles_errors() {
    let server = serve(filtered_hub(Log::default())).await;
    let mut a = connect(&server).await;
    a.call("1", "Parse", json!(["x"]))
        .await
        .assert_error(&hub_ex("Parse", "handled"));
    // HubErrors and binding errors pass through.
    a.call("2", "Fail", json!(["kept"]))
        .await
        .assert_error(&hub_ex("Fail", "kept"));
    a.call("3", "Parse", json!([1]))
        .await
        .assert_error("Failed to invoke 'Parse' due to an error on the server.");
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_filters_wrap_lifetime_hooks() {
    let log = Log::default();
    let hook_log = log.clone();
    let disconnect_log = log.clone();
    let builder = Hub::builder()
        .filter(Recorder {
            name: "filter",
            log: log.clone(),
        })
        .on_connected(move |_: HubCallerContext| {
            let log = hook_log.clone();
            async move { log.push("hub:connected") }
        })
        .on_disconnected(move |_: HubCallerContext, error: Option<String>| {
            let log = disconnect_log.clone();
            async move { log.push(format!("hub:disconnected:{error:?}")) }
        });
    let server = serve(builder).await;
    let a = connect_raw(&server, "", "").await;
    assert_eq!(log.wait_for(2).await, ["filter:connected", "hub:connected"]);
    a.close().await;
    assert_eq!(
        log.wait_for(4).await,
        [
            "filter:connected",
            "hub:connected",
            "filter:disconnected:None",
            "hub:disconnected:None",
        ]
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_filter_keeps_results() {
    let builder =
        stream_methods(basic_methods(Hub::builder()), Log::default()).filter(LoggingFilter);
    let server = serve(builder).await;
    let mut a = connect(&server).await;
    a.invoke("1", "Void", json!([])).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": null}))
        .await;
    a.call("2", "Add", json!([20, 22]))
        .await
        .assert_result(json!(42));
    a.call("3", "Fail", json!(["still verbatim"]))
        .await
        .assert_error(&hub_ex("Fail", "still verbatim"));
    a.call("4", "Parse", json!(["x"]))
        .await
        .assert_error("An unexpected error occurred invoking 'Parse' on the server.");
    a.call("5", "Add", json!(["x", 1]))
        .await
        .assert_error("Failed to invoke 'Add' due to an error on the server.");
    a.stream("6", "Count", json!([2])).await;
    a.expect(item("6", json!(1))).await;
    a.expect(item("6", json!(2))).await;
    a.expect(json!({"type": 3, "invocationId": "6"})).await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// MessagePack
// ---------------------------------------------------------------------------------------------

fn msgpack_hub(log: Log) -> HubBuilder {
    let builder = stream_methods(basic_methods(Hub::builder()), log.clone());
    result_methods(upload_methods(builder), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_streaming() {
    let log = Log::default();
    let server = serve(msgpack_hub(log.clone())).await;
    let mut m = connect_msgpack(&server).await;
    m.send(json!([4, {}, "1", "Count", [3], []])).await;
    for n in 1..=3 {
        m.expect(json!([2, {}, "1", n])).await;
    }
    m.expect(json!([3, {}, "1", 2])).await;
    m.send(json!([4, {}, "2", "CountThenFail", [], []])).await;
    m.expect(json!([2, {}, "2", 1])).await;
    m.expect(json!([2, {}, "2", 2])).await;
    m.expect(json!([3, {}, "2", 1, stream_ex("stream broke")]))
        .await;
    m.send(json!([4, {}, "3", "CountThenCrash", []])).await;
    m.expect(json!([2, {}, "3", 1])).await;
    m.expect(json!([
        3,
        {},
        "3",
        1,
        "An error occurred on the server while streaming results."
    ]))
    .await;
    m.send(json!([1, {}, "4", "Count", [3], []])).await;
    m.expect(json!([
        3,
        {},
        "4",
        1,
        "The client attempted to invoke the streaming 'Count' method with a non-streaming invocation."
    ]))
    .await;
    // Cancel an endless stream.
    m.send(json!([4, {}, "5", "Ticks", [20], []])).await;
    m.expect(json!([2, {}, "5", 0])).await;
    m.send(json!([5, {}, "5"])).await;
    loop {
        let message = m.recv().await;
        if message[0] == json!(3) {
            assert_eq!(message, json!([3, {}, "5", 2]));
            break;
        }
        assert_eq!((&message[0], &message[2]), (&json!(2), &json!("5")));
    }
    assert_eq!(log.wait_for(1).await, ["cancelled"]);
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_client_results() {
    let server = serve(msgpack_hub(Log::default())).await;
    let mut m = connect_msgpack(&server).await;
    m.send(json!([1, {}, "1", "AskCaller", ["GetNumber"], []]))
        .await;
    m.expect(json!([1, {}, "s1", "GetNumber", [1, "two"], []]))
        .await;
    m.send(json!([3, {}, "s1", 3, 42])).await;
    m.expect(json!([3, {}, "1", 3, 42])).await;
    m.send(json!([1, {}, "2", "AskCaller", ["GetNumber"], []]))
        .await;
    m.expect(json!([1, {}, "s2", "GetNumber", [1, "two"], []]))
        .await;
    m.send(json!([3, {}, "s2", 1, "Client didn't provide a result."]))
        .await;
    m.expect(json!([
        3,
        {},
        "2",
        1,
        hub_ex(
            "AskCaller",
            "Client(\"Client didn't provide a result.\"): Client didn't provide a result."
        )
    ]))
    .await;
    // Another connection answers a JSON caller.
    let mut a = connect(&server).await;
    a.invoke("3", "AskClient", json!([m.id])).await;
    m.expect(json!([1, {}, "s3", "GetName", [], []])).await;
    m.send(json!([3, {}, "s3", 3, "msgpack"])).await;
    a.expect(json!({"type": 3, "invocationId": "3", "result": "msgpack"}))
        .await;
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_upload_stream() {
    let server = serve(msgpack_hub(Log::default())).await;
    let mut m = connect_msgpack(&server).await;
    m.send(json!([1, {}, "1", "Sum", [], ["u"]])).await;
    for n in 1..=4 {
        m.send(json!([2, {}, "u", n])).await;
    }
    m.send(json!([3, {}, "u", 2])).await;
    m.expect(json!([3, {}, "1", 3, 10])).await;
    m.send(json!([1, {}, "2", "Sum", [], ["v"]])).await;
    m.send(json!([3, {}, "v", 1, "gave up"])).await;
    m.expect(json!([3, {}, "2", 1, hub_ex("Sum", "gave up")]))
        .await;
    m.send(json!([1, {}, "3", "Sum", [], ["a", "b"]])).await;
    m.expect(json!([
        3,
        {},
        "3",
        1,
        hub_ex("Sum", "Client sent 2 stream(s), Hub method expects 1.")
    ]))
    .await;
    finish(&server).await;
}
