//! `#[hub]` and `#[hub_client]` against a real server: a hub written as an impl block, called by
//! raw WebSocket JSON clients.

mod common;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{RS, TestServer, Ws, finish, install_panic_hook, within, ws_connect_query};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use signalr_server::{
    HubCallerContext, HubError, HubOptions,
    auth::{AuthError, AuthRequest, User},
    hub,
    hub::{State, UploadStream},
    hub_client,
};

/// How many `ChatHub` instances were made (all tests of this binary share it).
static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// Every instance knows its serial number, so tests can tell instances apart.
struct ChatHub {
    serial: usize,
}

impl Default for ChatHub {
    fn default() -> Self {
        ChatHub {
            serial: INSTANCES.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }
}

/// What the connection hooks saw, as application state.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn push(&self, event: String) {
        self.0.lock().expect("events lock").push(event);
    }

    fn contains(&self, event: &str) -> bool {
        self.0
            .lock()
            .expect("events lock")
            .iter()
            .any(|e| e == event)
    }
}

#[derive(Clone)]
struct Greeting(String);

#[hub_client]
trait ChatClient {
    /// A chat message.
    async fn receive_message(&self, user: String, text: String);
    #[client_method(name = "Notify")]
    async fn notify_all(&self, n: u32);
}

fn is_admin(user: &User) -> bool {
    user.claim("role").as_deref() == Some("admin")
}

#[hub(name = "chat")]
impl ChatHub {
    /// `Echo(value)`: what the end-of-test health check calls.
    async fn echo(&self, _ctx: HubCallerContext, value: Value) -> Value {
        value
    }

    async fn send_message(
        &self,
        ctx: HubCallerContext,
        user: String,
        text: String,
    ) -> Result<(), HubError> {
        ctx.clients().others().receive_message(user, text).await?;
        Ok(())
    }

    async fn broadcast(&self, ctx: HubCallerContext, n: u32) -> Result<(), HubError> {
        ctx.clients().all().notify_all(n).await?;
        Ok(())
    }

    async fn add(&self, _ctx: HubCallerContext, a: i64, b: i64) -> i64 {
        a + b
    }

    #[hub_method(name = "Instance")]
    async fn instance_serial(&self, _ctx: HubCallerContext) -> usize {
        self.serial()
    }

    #[hub_method(skip)]
    fn serial(&self) -> usize {
        self.serial
    }

    async fn connection_id(&self, ctx: HubCallerContext) -> String {
        ctx.connection_id().to_owned()
    }

    #[authorize]
    async fn secret(&self, ctx: HubCallerContext) -> String {
        format!("hello {}", ctx.user().name().unwrap_or_default())
    }

    #[authorize(policy = is_admin)]
    async fn admin_only(&self, _ctx: HubCallerContext) -> &'static str {
        "admin"
    }

    async fn fail(&self, _ctx: HubCallerContext) -> Result<(), HubError> {
        Err(HubError::new("nope"))
    }

    async fn greet(
        &self,
        _ctx: HubCallerContext,
        State(greeting): State<Greeting>,
        name: String,
    ) -> String {
        format!("{}, {name}!", greeting.0)
    }

    async fn count(&self, _ctx: HubCallerContext, to: u32) -> impl Stream<Item = u32> + use<> {
        futures_util::stream::iter(1..=to)
    }

    async fn sum(&self, _ctx: HubCallerContext, mut items: UploadStream<i64>) -> i64 {
        let mut total = 0;
        while let Some(Ok(item)) = items.next().await {
            total += item;
        }
        total
    }

    #[on_connected]
    async fn connected(&self, ctx: HubCallerContext) {
        if let Some(events) = ctx.state::<Events>() {
            events.push(format!("connected {}", ctx.connection_id()));
        }
    }

    #[on_disconnected]
    async fn disconnected(
        &self,
        ctx: HubCallerContext,
        error: Option<String>,
    ) -> Result<(), HubError> {
        let events = ctx
            .state::<Events>()
            .ok_or_else(|| HubError::new("no events"))?;
        events.push(format!("disconnected {} {error:?}", ctx.connection_id()));
        Ok(())
    }
}

/// `access_token=<name>` authenticates as `<name>`; `root` is an admin.
fn authenticate(request: AuthRequest<'_>) -> Result<Option<User>, AuthError> {
    Ok(request.token.map(|name| {
        let mut claims = serde_json::Map::new();
        claims.insert("name".into(), json!(name));
        if name == "root" {
            claims.insert("role".into(), json!("admin"));
        }
        User::authenticated(claims)
    }))
}

/// Serves `ChatHub` at `/hub`, with detailed errors.
async fn start() -> (TestServer, Events) {
    install_panic_hook();
    let events = Events::default();
    let hub = ChatHub::hub_builder()
        .state(events.clone())
        .state(Greeting("Hello".into()))
        .authenticator(authenticate)
        .options(HubOptions {
            enable_detailed_errors: true,
            ..HubOptions::default()
        })
        .build();
    let app = axum::Router::new().nest("/hub", hub.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(axum::serve(listener, app).into_future());
    let server = TestServer {
        addr,
        hub,
        http: reqwest::Client::new(),
    };
    (server, events)
}

/// A WebSocket without negotiation (`query` may carry `access_token`), after the JSON handshake.
async fn connect(server: &TestServer, query: &str) -> Ws {
    let mut ws = match ws_connect_query(server, query).await {
        Ok(ws) => ws,
        Err((status, body)) => panic!("WebSocket upgrade refused: {status} {body:?}"),
    };
    ws.handshake_json().await;
    ws
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send_text(&format!("{message}{RS}")).await;
}

/// Invokes `target` with `arguments` and returns the Completion.
async fn invoke(ws: &mut Ws, id: &str, target: &str, arguments: Value) -> Value {
    send(
        ws,
        json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments}),
    )
    .await;
    ws.next_json_skip_pings().await
}

/// Invokes and asserts the Completion's `result`.
async fn assert_result(ws: &mut Ws, target: &str, arguments: Value, result: Value) {
    let completion = invoke(ws, "r", target, arguments).await;
    assert_eq!(
        completion,
        json!({"type": 3, "invocationId": "r", "result": result}),
        "{target}"
    );
}

/// Invokes and asserts the Completion's `error`.
async fn assert_error(ws: &mut Ws, target: &str, arguments: Value, error: &str) {
    let completion = invoke(ws, "e", target, arguments).await;
    assert_eq!(
        completion,
        json!({"type": 3, "invocationId": "e", "error": error}),
        "{target}"
    );
}

fn does_not_exist(target: &str) -> String {
    format!(
        "Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
    )
}

#[tokio::test]
async fn methods_are_registered_by_pascal_case_and_renamed_names() {
    let (server, _) = start().await;
    assert_eq!(ChatHub::HUB_NAME, "chat");
    let mut names: Vec<&str> = server.hub.method_names().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "Add",
            "AdminOnly",
            "Broadcast",
            "ConnectionId",
            "Count",
            "Echo",
            "Fail",
            "Greet",
            "Instance",
            "Secret",
            "SendMessage",
            "Sum",
        ]
    );

    let mut ws = connect(&server, "").await;
    assert_result(&mut ws, "Add", json!([1, 2]), json!(3)).await;
    assert_result(&mut ws, "add", json!([40, 2]), json!(42)).await;
    assert_result(&mut ws, "ADD", json!([-1, 1]), json!(0)).await;
    let serial = invoke(&mut ws, "i", "instance", json!([])).await;
    assert!(serial["result"].is_u64(), "{serial}");
    // The Rust names of renamed methods, helpers and hooks are not hub methods.
    for target in [
        "InstanceSerial",
        "instance_serial",
        "Serial",
        "Connected",
        "Disconnected",
    ] {
        assert_error(&mut ws, target, json!([]), &does_not_exist(target)).await;
    }
    ws.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn arguments_bind_and_results_come_back() {
    let (server, _) = start().await;
    let mut ws = connect(&server, "").await;
    assert_result(
        &mut ws,
        "Echo",
        json!([{"a": [1, 2]}]),
        json!({"a": [1, 2]}),
    )
    .await;
    assert_result(&mut ws, "Greet", json!(["ann"]), json!("Hello, ann!")).await;
    assert_error(
        &mut ws,
        "Fail",
        json!([]),
        "An unexpected error occurred invoking 'Fail' on the server. HubException: nope",
    )
    .await;
    assert_error(
        &mut ws,
        "Add",
        json!(["one", 2]),
        "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.",
    )
    .await;
    assert_error(
        &mut ws,
        "Add",
        json!([1]),
        "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2.",
    )
    .await;

    // A streaming method.
    send(
        &mut ws,
        json!({"type": 4, "invocationId": "s", "target": "Count", "arguments": [3]}),
    )
    .await;
    for item in 1..=3 {
        assert_eq!(
            ws.next_json_skip_pings().await,
            json!({"type": 2, "invocationId": "s", "item": item})
        );
    }
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "s"})
    );

    // A client-to-server stream.
    send(
        &mut ws,
        json!({"type": 1, "invocationId": "u", "target": "Sum", "arguments": [], "streamIds": ["x"]}),
    )
    .await;
    for item in [5, 6, 7] {
        send(
            &mut ws,
            json!({"type": 2, "invocationId": "x", "item": item}),
        )
        .await;
    }
    send(&mut ws, json!({"type": 3, "invocationId": "x"})).await;
    assert_eq!(
        ws.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "u", "result": 18})
    );
    ws.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn every_operation_gets_a_fresh_instance() {
    let (server, _) = start().await;
    let mut ws = connect(&server, "").await;
    let mut serials = Vec::new();
    for id in ["1", "2", "3"] {
        let completion = invoke(&mut ws, id, "Instance", json!([])).await;
        serials.push(
            completion["result"]
                .as_u64()
                .unwrap_or_else(|| panic!("no serial in {completion}")),
        );
    }
    // Serials come from one counter shared with the other tests: strictly increasing means a new
    // `ChatHub::default()` for every call.
    assert!(
        serials.windows(2).all(|pair| pair[0] < pair[1]),
        "{serials:?}"
    );
    ws.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn authorize_refuses_users_the_policy_does_not_allow() {
    let (server, _) = start().await;

    let mut anonymous = connect(&server, "").await;
    for target in ["Secret", "secret", "AdminOnly"] {
        let error = format!("Failed to invoke '{target}' because user is unauthorized");
        assert_error(&mut anonymous, target, json!([]), &error).await;
    }
    assert_result(&mut anonymous, "Add", json!([1, 1]), json!(2)).await;
    anonymous.close().await;

    let mut alice = connect(&server, "?access_token=alice").await;
    assert_result(&mut alice, "Secret", json!([]), json!("hello alice")).await;
    assert_error(
        &mut alice,
        "AdminOnly",
        json!([]),
        "Failed to invoke 'AdminOnly' because user is unauthorized",
    )
    .await;
    alice.close().await;

    let mut root = connect(&server, "?access_token=root").await;
    assert_result(&mut root, "Secret", json!([]), json!("hello root")).await;
    assert_result(&mut root, "adminonly", json!([]), json!("admin")).await;
    root.close().await;
    finish(&server).await;
}

#[tokio::test]
async fn on_connected_and_on_disconnected_run() {
    let (server, events) = start().await;
    let mut ws = connect(&server, "").await;
    let completion = invoke(&mut ws, "c", "ConnectionId", json!([])).await;
    let id = completion["result"]
        .as_str()
        .unwrap_or_else(|| panic!("no connection id in {completion}"))
        .to_owned();
    assert!(
        events.contains(&format!("connected {id}")),
        "on_connected did not run"
    );
    ws.close().await;
    let disconnected = format!("disconnected {id} None");
    within("on_disconnected", async {
        while !events.contains(&disconnected) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    finish(&server).await;
}

#[tokio::test]
async fn typed_client_calls_reach_other_connections() {
    let (server, _) = start().await;
    let mut ann = connect(&server, "").await;
    let mut bob = connect(&server, "").await;

    // `others()`: bob gets the message, ann only her Completion.
    let completion = invoke(&mut ann, "1", "SendMessage", json!(["ann", "hi"])).await;
    assert_eq!(
        completion,
        json!({"type": 3, "invocationId": "1", "result": null})
    );
    assert_eq!(
        bob.next_json_skip_pings().await,
        json!({"type": 1, "target": "ReceiveMessage", "arguments": ["ann", "hi"]})
    );

    // `all()` with a renamed client method: both get it, the caller before its Completion.
    send(
        &mut bob,
        json!({"type": 1, "invocationId": "2", "target": "Broadcast", "arguments": [7]}),
    )
    .await;
    let notify = json!({"type": 1, "target": "Notify", "arguments": [7]});
    assert_eq!(bob.next_json_skip_pings().await, notify);
    assert_eq!(
        bob.next_json_skip_pings().await,
        json!({"type": 3, "invocationId": "2", "result": null})
    );
    assert_eq!(ann.next_json_skip_pings().await, notify);

    // The typed client also works on a hub context, outside hub methods.
    server
        .hub
        .context()
        .clients()
        .all()
        .receive_message("server".to_owned(), "tick".to_owned())
        .await
        .expect("send");
    let tick = json!({"type": 1, "target": "ReceiveMessage", "arguments": ["server", "tick"]});
    assert_eq!(ann.next_json_skip_pings().await, tick);
    assert_eq!(bob.next_json_skip_pings().await, tick);

    ann.close().await;
    bob.close().await;
    finish(&server).await;
}

#[derive(Default)]
struct Minimal;

#[hub]
impl Minimal {
    /// Compiled out of the tests, so not registered either.
    #[cfg(not(test))]
    async fn production_only(&self, _ctx: HubCallerContext) {}

    #[cfg(test)]
    async fn test_only(&self, _ctx: HubCallerContext) {}

    /// Other items of the block are left alone.
    const ANSWER: u32 = 42;
}

#[derive(Default)]
struct Empty;

#[hub]
impl Empty {}

#[test]
fn hub_name_defaults_to_the_type_name_and_cfg_applies_to_registrations() {
    assert_eq!(Minimal::HUB_NAME, "Minimal");
    assert_eq!(Minimal::ANSWER, 42);
    let hub = Minimal::hub_builder().build();
    assert_eq!(hub.method_names().collect::<Vec<_>>(), ["TestOnly"]);
    assert_eq!(Empty::HUB_NAME, "Empty");
    assert_eq!(Empty::hub_builder().build().method_names().count(), 0);
}
