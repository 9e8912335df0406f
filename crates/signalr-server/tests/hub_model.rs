//! Hub model additions shared by both front doors, seen through the ASP.NET Core protocol:
//! errors with data, overloads by argument count, caller state and progress (inert for Core
//! callers), `stop_called`, `on_reconnected`, the outgoing filter hook and connect
//! authorization.
//!
//! Every test ends with [`finish`]: a fresh connection still works and no server-side panic
//! happened.

mod common;
#[path = "common/runtime.rs"]
mod runtime;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{delete, finish, negotiate, negotiate_raw, poll, post, send, ws_connect_query};
use futures_util::StreamExt;
use runtime::{Log, connect, expect_panic, serve};
use serde_json::json;
use signalr_server::{
    Hub, HubBuilder, HubCallerContext, HubError, HubOptions,
    auth::{AuthError, AuthRequest, ConnectRequest, User},
    context::CallerState,
    filter::{HubFilter, OutgoingInvocation},
    hub,
    hub::{Progress, UploadStream},
    protocol::Payload,
};

const JSON_HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";

fn detailed_errors() -> HubOptions {
    HubOptions {
        enable_detailed_errors: true,
        ..HubOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors with data
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_data_is_not_sent_to_core_clients() {
    let server = serve(
        Hub::builder()
            .method("WithData", |_: HubCallerContext| async move {
                Err::<(), _>(HubError::with_data("boom", json!({ "Code": 42 })))
            })
            .method("Plain", |_: HubCallerContext| async move {
                Err::<(), _>(HubError::new("boom"))
            }),
    )
    .await;
    let mut a = connect(&server).await;
    let expected =
        "An unexpected error occurred invoking 'WithData' on the server. HubException: boom";
    let with_data = a.call("1", "WithData", json!([])).await;
    with_data.assert_error(expected);
    assert_eq!(
        with_data.0,
        json!({ "type": 3, "invocationId": "1", "error": expected }),
        "nothing but the error text"
    );
    a.call("2", "Plain", json!([]))
        .await
        .assert_error(&expected.replace("WithData", "Plain"));
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Overloads by argument count
// ---------------------------------------------------------------------------------------------

fn overloads() -> HubBuilder {
    Hub::builder()
        .method("Overload", |_: HubCallerContext| async { 0 })
        .method(
            "Overload",
            |_: HubCallerContext, a: i32, b: i32| async move { a + b + 200 },
        )
        .method(
            "overload",
            |_: HubCallerContext, a: i32| async move { a + 100 },
        )
        .method("Single", |_: HubCallerContext, a: i32| async move { a })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloads_are_picked_by_argument_count() {
    let server = serve(overloads()).await;
    let mut a = connect(&server).await;
    a.call("1", "Overload", json!([]))
        .await
        .assert_result(json!(0));
    a.call("2", "OVERLOAD", json!([1]))
        .await
        .assert_result(json!(101));
    a.call("3", "overload", json!([1, 2]))
        .await
        .assert_result(json!(203));
    a.call("4", "Overload", json!([1, 2, 3]))
        .await
        .assert_error("Failed to invoke 'Overload' due to an error on the server.");
    let mut names: Vec<&str> = server.hub.method_names().collect();
    names.sort_unstable();
    assert_eq!(names, ["Echo", "Overload", "Single", "overload"]);
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_argument_count_error_lists_the_counts() {
    let server = serve(overloads().options(detailed_errors())).await;
    let mut a = connect(&server).await;
    a.call("1", "Overload", json!([1, 2, 3]))
        .await
        .assert_error(
            "Failed to invoke 'Overload' due to an error on the server. InvalidDataException: \
         Invocation provides 3 argument(s) but target expects one of 0, 1, 2.",
        );
    // Not overloaded: ASP.NET Core's text.
    a.call("2", "Single", json!([])).await.assert_error(
        "Failed to invoke 'Single' due to an error on the server. InvalidDataException: \
         Invocation provides 0 argument(s) but target expects 1.",
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloads_with_upload_streams_count_only_value_arguments() {
    let server = serve(
        Hub::builder()
            .method(
                "Total",
                |_: HubCallerContext, mut items: UploadStream<i64>| async move {
                    let mut sum = 0;
                    while let Some(Ok(item)) = items.next().await {
                        sum += item;
                    }
                    sum
                },
            )
            .method("Total", |_: HubCallerContext, a: i64| async move { a }),
    )
    .await;
    let mut a = connect(&server).await;
    a.call("1", "Total", json!([7]))
        .await
        .assert_result(json!(7));
    a.send(json!({
        "type": 1, "invocationId": "2", "target": "Total", "arguments": [], "streamIds": ["s"],
    }))
    .await;
    a.send(json!({"type": 2, "invocationId": "s", "item": 5}))
        .await;
    a.send(json!({"type": 2, "invocationId": "s", "item": 6}))
        .await;
    a.send(json!({"type": 3, "invocationId": "s"})).await;
    let completion = a.recv().await;
    assert_eq!(
        completion,
        json!({"type": 3, "invocationId": "2", "result": 11})
    );
    finish(&server).await;
}

#[test]
fn parameter_names_panic_on_unknown_overload_or_wrong_count() {
    let message = expect_panic(|| {
        Hub::builder()
            .method("Send", |_: HubCallerContext, _a: i32| async {})
            .parameter_names("Send", 2, &["a", "b"])
    });
    assert!(message.contains("no overload with 2"), "{message:?}");
    let message = expect_panic(|| {
        Hub::builder()
            .method("Send", |_: HubCallerContext, _a: i32| async {})
            .parameter_names("Send", 1, &["a", "b"])
    });
    assert!(message.contains("2 name(s) given for 1"), "{message:?}");
    let message = expect_panic(|| Hub::builder().parameter_names("Nope", 0, &[]));
    assert!(message.contains("no hub method 'Nope'"), "{message:?}");
}

#[derive(Default)]
struct OverloadHub;

#[hub]
impl OverloadHub {
    #[hub_method(name = "Overload")]
    async fn none(&self, _ctx: HubCallerContext) -> i32 {
        0
    }

    #[hub_method(name = "Overload")]
    async fn one(&self, _ctx: HubCallerContext, a: i32) -> i32 {
        a + 100
    }

    #[authorize]
    #[hub_method(name = "overload")]
    async fn two(&self, _ctx: HubCallerContext, a: i32, b: i32) -> i32 {
        a + b + 200
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_macro_overloads() {
    let server = serve(OverloadHub::hub_builder()).await;
    let mut a = connect(&server).await;
    a.call("1", "Overload", json!([]))
        .await
        .assert_result(json!(0));
    a.call("2", "Overload", json!([1]))
        .await
        .assert_result(json!(101));
    // `#[authorize]` applies to its overload only.
    a.call("3", "Overload", json!([1, 2]))
        .await
        .assert_error("Failed to invoke 'Overload' because user is unauthorized");
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Caller state and progress: inert for Core callers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_state_and_progress_are_inert_for_core_callers() {
    let server = serve(
        Hub::builder()
            .method("State", |ctx: HubCallerContext| async move {
                let state = ctx.caller_state();
                state.set("count", 1);
                json!({
                    "inert": state.is_inert(),
                    "count": state.get::<i32>("count"),
                    "removed": state.remove("count"),
                })
            })
            .method(
                "StateParameter",
                |ctx: HubCallerContext, n: i32, state: CallerState| async move {
                    state.set("n", n);
                    json!([state.is_inert(), ctx.caller_state().get_value("n"), n])
                },
            )
            .method(
                "CountWithProgress",
                |_: HubCallerContext, n: u32, progress: Progress<u32>| async move {
                    for i in 1..=n {
                        progress.report(i);
                    }
                    let clone = progress.clone();
                    clone.report(0);
                    json!([progress.is_inert(), "done"])
                },
            ),
    )
    .await;
    let mut a = connect(&server).await;
    a.call("1", "State", json!([]))
        .await
        .assert_result(json!({ "inert": true, "count": null, "removed": null }));
    // Progress and CallerState parameters are not client arguments.
    a.call("2", "StateParameter", json!([5]))
        .await
        .assert_result(json!([true, null, 5]));
    a.call("3", "CountWithProgress", json!([3]))
        .await
        .assert_result(json!([true, "done"]));
    a.expect_silence().await;
    a.call("4", "CountWithProgress", json!([3, 4]))
        .await
        .assert_error("Failed to invoke 'CountWithProgress' due to an error on the server.");
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// stop_called and on_reconnected
// ---------------------------------------------------------------------------------------------

/// A hub logging `disconnected <id> stop=<bool>` and `reconnected <id>`, with `Abort()`.
fn lifetime_hub(log: &Log) -> HubBuilder {
    let disconnected = log.clone();
    let reconnected = log.clone();
    Hub::builder()
        .method("Abort", |ctx: HubCallerContext| async move { ctx.abort() })
        .method("StopCalled", |ctx: HubCallerContext| async move {
            ctx.stop_called()
        })
        .on_reconnected(move |ctx: HubCallerContext| {
            let log = reconnected.clone();
            async move { log.push(format!("reconnected {}", ctx.connection_id())) }
        })
        .on_disconnected(move |ctx: HubCallerContext, _error: Option<String>| {
            let log = disconnected.clone();
            async move {
                log.push(format!(
                    "disconnected {} stop={}",
                    ctx.connection_id(),
                    ctx.stop_called()
                ));
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_called_when_the_client_sends_close() {
    let log = Log::default();
    let server = serve(lifetime_hub(&log)).await;
    let mut a = connect(&server).await;
    a.call("1", "StopCalled", json!([]))
        .await
        .assert_result(json!(false));
    let id = a.id.clone();
    a.close().await;
    assert_eq!(
        log.wait_for(1).await,
        [format!("disconnected {id} stop=true")]
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stop_called_when_the_transport_goes_away_or_the_server_closes() {
    let log = Log::default();
    let server = serve(lifetime_hub(&log)).await;
    // The socket closes without a Close message.
    let a = connect(&server).await;
    let a_id = a.id.clone();
    a.ws.close().await;
    assert_eq!(
        log.wait_for(1).await,
        [format!("disconnected {a_id} stop=false")]
    );
    // The server ends the connection.
    let mut b = connect(&server).await;
    let b_id = b.id.clone();
    b.invoke("1", "Abort", json!([])).await;
    assert_eq!(
        log.wait_for(2).await[1..],
        [format!("disconnected {b_id} stop=false")]
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_called_on_long_polling_delete() {
    let log = Log::default();
    let server = serve(lifetime_hub(&log)).await;
    let (id, token) = negotiate(&server).await;
    assert_eq!(poll(&server, &token).await.status, 200);
    assert_eq!(post(&server, &token, JSON_HANDSHAKE).await.status, 200);
    assert_eq!(poll(&server, &token).await.body, "{}\u{1e}");
    assert_eq!(delete(&server, &token).await.status, 202);
    assert_eq!(
        log.wait_for(1).await,
        [format!("disconnected {id} stop=true")]
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_reconnected_never_runs_for_core_clients() {
    let log = Log::default();
    let server = serve(lifetime_hub(&log)).await;
    // A Core client's reconnect is a new connection.
    let a = connect(&server).await;
    let a_id = a.id.clone();
    a.ws.close().await;
    let b = connect(&server).await;
    let b_id = b.id.clone();
    b.close().await;
    let events = log.wait_for(2).await;
    assert_eq!(
        events,
        [
            format!("disconnected {a_id} stop=false"),
            format!("disconnected {b_id} stop=true")
        ]
    );
    finish(&server).await;
    assert!(
        !log.events().iter().any(|e| e.starts_with("reconnected")),
        "{:?}",
        log.events()
    );
}

// ---------------------------------------------------------------------------------------------
// on_outgoing
// ---------------------------------------------------------------------------------------------

/// Renames `Shout` to `Receive` with an upper-cased argument, drops `Secret`, and logs what it
/// saw.
struct Outgoing(Log);

impl HubFilter for Outgoing {
    fn on_outgoing(&self, invocation: &mut OutgoingInvocation) -> bool {
        self.0.push(format!(
            "{} {:?} result={}",
            invocation.method,
            invocation.recipients(),
            invocation.expects_result()
        ));
        match invocation.method.as_str() {
            "Secret" => false,
            "Shout" => {
                invocation.method = "Receive".to_owned();
                let text: String = invocation.arguments[0].deserialize().unwrap_or_default();
                invocation.arguments = vec![Payload::from_value(text.to_uppercase())];
                true
            }
            _ => true,
        }
    }
}

/// Counts the calls it sees; never drops.
struct Counting(Arc<AtomicUsize>);

impl HubFilter for Counting {
    fn on_outgoing(&self, _: &mut OutgoingInvocation) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_outgoing_changes_or_drops_client_method_calls() {
    let log = Log::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = serve(
        Hub::builder()
            .filter(Outgoing(log.clone()))
            .filter(Counting(seen.clone()))
            .method(
                "Send",
                |ctx: HubCallerContext, method: String, text: String| async move {
                    ctx.clients().all().send(&method, (text,)).await?;
                    Ok::<_, HubError>(())
                },
            )
            .method(
                "SendCaller",
                |ctx: HubCallerContext, method: String| async move {
                    ctx.clients().caller().send(&method, ("x",)).await?;
                    Ok::<_, HubError>(())
                },
            )
            .method("AskCaller", |ctx: HubCallerContext| async move {
                ctx.clients()
                    .caller()
                    .invoke::<i32>("Secret", ())
                    .await
                    .map_err(|err| HubError::new(format!("{err:?}: {err}")))
            }),
    )
    .await;
    let mut a = connect(&server).await;
    let mut b = connect(&server).await;

    // Changed: every recipient gets the changed call; the filter saw it once. The method awaits
    // the send (queued) before it returns, so the caller gets the call before the Completion.
    a.invoke("1", "Send", json!(["Shout", "hi"])).await;
    let changed = json!({"type": 1, "target": "Receive", "arguments": ["HI"]});
    a.expect(changed.clone()).await;
    a.expect(json!({"type": 3, "invocationId": "1", "result": null}))
        .await;
    b.expect(changed).await;

    // Dropped: nobody gets it, later filters do not see it.
    a.call("2", "Send", json!(["Secret", "pssst"]))
        .await
        .assert_void();
    a.call("3", "SendCaller", json!(["Secret"]))
        .await
        .assert_void();
    // A dropped client result fails at once.
    a.call("4", "AskCaller", json!([])).await.assert_error(
        "An unexpected error occurred invoking 'AskCaller' on the server. HubException: \
         DroppedByFilter(\"Secret\"): A hub filter dropped the call of client method 'Secret'.",
    );
    // Untouched calls, from outside the hub too.
    a.invoke("5", "SendCaller", json!(["Plain"])).await;
    a.expect(json!({"type": 1, "target": "Plain", "arguments": ["x"]}))
        .await;
    a.expect(json!({"type": 3, "invocationId": "5", "result": null}))
        .await;
    server
        .hub
        .context()
        .clients()
        .group("g")
        .send("FromOutside", ())
        .await
        .expect("send");
    a.expect_silence().await;
    b.expect_silence().await;

    assert_eq!(
        log.events(),
        [
            "Shout All result=false".to_owned(),
            "Secret All result=false".to_owned(),
            format!("Secret Connections([{:?}]) result=false", a.id),
            format!("Secret Connections([{:?}]) result=true", a.id),
            format!("Plain Connections([{:?}]) result=false", a.id),
            "FromOutside Groups([\"g\"]) result=false".to_owned(),
        ]
    );
    assert_eq!(seen.load(Ordering::SeqCst), 3, "Shout, Plain, FromOutside");
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Connect authorization
// ---------------------------------------------------------------------------------------------

/// The bearer token becomes a user with that `sub`.
fn token_as_sub(request: AuthRequest<'_>) -> Result<Option<User>, AuthError> {
    Ok(request.token.map(|token| {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".to_owned(), json!(token));
        User::authenticated(claims)
    }))
}

/// Refuses requests whose query has `deny` or that carry `x-deny`; logs what it saw.
fn connect_checked_hub(log: &Log) -> HubBuilder {
    let log = log.clone();
    Hub::builder()
        .authenticator(token_as_sub)
        .authorize_connect(move |request: &ConnectRequest| {
            log.push(format!(
                "user={:?} deny={:?} header={:?}",
                request.user().claim("sub"),
                request.query_param("deny"),
                request.header("x-deny"),
            ));
            request.query_param("deny").is_none() && request.header("x-deny").is_none()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_connect_refuses_like_the_hub_policy() {
    let log = Log::default();
    let server = serve(connect_checked_hub(&log)).await;

    // Allowed: the connection works.
    let mut a = connect(&server).await;
    a.call("1", "Echo", json!(["ok"]))
        .await
        .assert_result(json!("ok"));

    // Anonymous and refused: 401 with the Bearer challenge.
    let refused = negotiate_raw(&server, "?negotiateVersion=1&deny=a%20b").await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(
        refused
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    // Authenticated and refused: 403.
    let url = server.url("/hub/negotiate?negotiateVersion=1");
    let refused = send(
        "negotiate",
        server
            .http
            .post(url)
            .bearer_auth("ann")
            .header("x-deny", "yes"),
    )
    .await;
    assert_eq!(refused.status, 403, "{refused:?}");

    // The transport request is checked too.
    let (_, token) = negotiate(&server).await;
    match ws_connect_query(&server, &format!("?id={token}&deny=1")).await {
        Err((status, _)) => assert_eq!(status, 401),
        Ok(_) => panic!("the WebSocket with deny=1 was accepted"),
    }

    let events = log.events();
    assert!(
        events.contains(&"user=None deny=Some(\"a b\") header=None".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"user=Some(\"ann\") deny=None header=Some(\"yes\")".to_owned()),
        "{events:?}"
    );
    finish(&server).await;
}
