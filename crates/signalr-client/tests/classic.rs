//! The classic (SignalR 2.x) client against the classic TestHub contract (the hubs of
//! `apps/conformance-server/src/classic_hub.rs`, which `dotnet-peer classic-client` checks),
//! on every transport and with automatic selection:
//!
//! - against our classic server, in process (the conformance server's hubs, compiled in);
//! - against the real SignalR 2.4.1 server, `../shared/peers/classic-peer`, when that folder is
//!   beside the repository; without it the test prints why it is skipped and checks nothing.
//!
//! The same checks run against both: a behaviour both servers must show.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use signalr_hub_client::classic::{
    ClassicHubConnection, ClassicTransport, ConnectionState, StateChange,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

#[allow(dead_code, unreachable_pub)]
#[path = "../../../apps/conformance-server/src/classic_hub.rs"]
mod classic_hub;

/// What `classic_hub.rs` takes from the conformance server's `test_hub.rs`.
mod test_hub {
    use signalr_server::HubCallerContext;

    /// A request header as ASP.NET's `Request.Headers[name]` gives it: all values joined with `,`.
    pub(crate) fn header(hub: &HubCallerContext, name: &str) -> Option<String> {
        let request = hub.request()?;
        let values: Vec<&str> = request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// Upper bound of one wait.
const STEP: Duration = Duration::from_secs(10);

type Check = Result<(), String>;

const TRANSPORTS: [ClassicTransport; 4] = [
    ClassicTransport::WebSockets,
    ClassicTransport::ServerSentEvents,
    ClassicTransport::LongPolling,
    ClassicTransport::Auto,
];

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Our classic server on a free port: `/signalr` with `TestHub`, `renamed`, `SecretHub`, and
/// `GET /broadcast?msg=`. Returns the site root (`http://127.0.0.1:PORT/`).
async fn our_server() -> String {
    use axum::extract::{Query, State};
    let test = classic_hub::test_hub();
    let context = test.context();
    let classic = signalr_server::classic_router([
        &test,
        &classic_hub::renamed_hub(),
        &classic_hub::secret_hub(),
    ]);
    let app = axum::Router::new()
        .route(
            "/broadcast",
            axum::routing::get(
                |State(context): State<signalr_server::HubContext>,
                 Query(query): Query<HashMap<String, String>>| async move {
                    let msg = query.get("msg").cloned().unwrap_or_default();
                    let _ = context.clients().all().send("broadcast", (msg,)).await;
                    "ok"
                },
            ),
        )
        .with_state(context)
        .nest("/signalr", classic);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    tokio::spawn(async move { signalr_server::serve(listener, app).await });
    url
}

/// `../shared/peers/classic-peer`, if present.
fn classic_peer_program() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/classic-peer");
    if path.is_file() {
        Some(path)
    } else {
        println!(
            "skipped: ../shared/peers not found ({} is absent), so the real SignalR 2.4 server \
             is not available; nothing was tested against it",
            path.display()
        );
        None
    }
}

/// A running peer program, killed on drop.
struct Peer {
    _child: Child,
    address: String,
}

async fn start_peer(program: &PathBuf, args: &[&str]) -> Peer {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match lines.next_line().await.expect("read the peer's stdout") {
                Some(line) => {
                    if let Some(address) = line.strip_prefix("Listening on ") {
                        break address.trim().to_owned();
                    }
                }
                None => panic!("{} ended before listening", program.display()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} did not listen within 30 s", program.display()));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Peer {
        _child: child,
        address,
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP, future)
        .await
        .map_err(|_| format!("timed out after {STEP:?}: {what}"))
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Check {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

async fn next<T>(what: &str, receiver: &mut mpsc::UnboundedReceiver<T>) -> Result<T, String> {
    within(what, receiver.recv())
        .await?
        .ok_or_else(|| format!("{what}: channel closed"))
}

/// Nothing arrives on `receiver` within `wait`.
async fn quiet<T: std::fmt::Debug>(
    what: &str,
    receiver: &mut mpsc::UnboundedReceiver<T>,
    wait: Duration,
) -> Check {
    match tokio::time::timeout(wait, receiver.recv()).await {
        Ok(Some(item)) => Err(format!("{what}: unexpected {item:?}")),
        _ => Ok(()),
    }
}

fn connection(root: &str, transport: ClassicTransport, user: &str) -> ClassicHubConnection {
    ClassicHubConnection::builder(root)
        .with_transport(transport)
        .with_query("user", user)
        .with_query("qs", "query value")
        .with_header("X-Test", "header value")
        .build()
        .expect("build")
}

/// Runs the checks of one transport; every result is named.
async fn transport_checks(root: &str, transport: ClassicTransport) -> Vec<(&'static str, Check)> {
    let mut results: Vec<(&'static str, Check)> = Vec::new();
    let c = connection(root, transport, "alice");
    let hub = c.create_hub_proxy("TestHub");
    let renamed = c.create_hub_proxy("renamed");
    let states = Arc::new(Mutex::new(Vec::<StateChange>::new()));
    {
        let states = states.clone();
        c.on_state_changed(move |change| states.lock().expect("lock").push(change));
    }
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    c.on_closed(move || {
        let _ = closed_tx.send(());
    });
    let (received_tx, mut received_rx) = mpsc::unbounded_channel::<String>();
    c.on_received(move |text| {
        let _ = received_tx.send(text.to_owned());
    });
    let (message_tx, mut message_rx) = mpsc::unbounded_channel::<String>();
    let _message = hub.on("Message", move |(text,): (String,)| {
        let _ = message_tx.send(text);
    });
    let (broadcast_tx, mut broadcast_rx) = mpsc::unbounded_channel::<String>();
    let _broadcast = hub.on("broadcast", move |(text,): (String,)| {
        let _ = broadcast_tx.send(text);
    });
    let (group_tx, mut group_rx) = mpsc::unbounded_channel::<(String, String)>();
    let _group = hub.on("groupMessage", move |args: (String, String)| {
        let _ = group_tx.send(args);
    });
    let (notify_tx, mut notify_rx) = mpsc::unbounded_channel::<()>();
    let _notify = hub.on("notify", move |(): ()| {
        let _ = notify_tx.send(());
    });
    let (many_tx, mut many_rx) = mpsc::unbounded_channel::<Value>();
    let _many = hub.on("manyArgs", move |args: Value| {
        let _ = many_tx.send(args);
    });
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Stock {
        symbol: String,
        price: f64,
    }
    let (stock_tx, mut stock_rx) = mpsc::unbounded_channel::<Stock>();
    let _stock = hub.on("updateStockPrice", move |(stock,): (Stock,)| {
        let _ = stock_tx.send(stock);
    });

    let started = within("start", c.start()).await;
    let started = match started {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("start failed: {err}")),
        Err(err) => Err(err),
    };
    let failed_start = started.is_err();
    results.push(("start", started));
    if failed_start {
        return results;
    }
    results.push((
        "state changes Disconnected -> Connecting -> Connected",
        expect_eq(
            "states",
            states
                .lock()
                .expect("lock")
                .iter()
                .map(|s| (s.old_state, s.new_state))
                .collect::<Vec<_>>(),
            vec![
                (ConnectionState::Disconnected, ConnectionState::Connecting),
                (ConnectionState::Connecting, ConnectionState::Connected),
            ],
        ),
    ));
    let kind = c.transport().expect("a transport");
    let expected_kind = match transport {
        ClassicTransport::Auto => ClassicTransport::WebSockets,
        other => other,
    };
    results.push((
        "transport in use",
        expect_eq("transport", kind, expected_kind),
    ));

    macro_rules! check {
        ($name:expr, $body:expr) => {{
            let outcome: Check = async { $body }.await;
            results.push(($name, outcome));
        }};
    }
    async fn call<T: serde::de::DeserializeOwned>(
        proxy: &signalr_hub_client::classic::HubProxy,
        method: &str,
        args: Vec<Value>,
    ) -> Result<T, String> {
        within(method, proxy.invoke::<T>(method, args))
            .await?
            .map_err(|err| format!("{method} failed: {err}"))
    }

    check!("Echo", {
        let echoed: String = call(&hub, "Echo", vec![json!("hi")]).await?;
        expect_eq("Echo", echoed.as_str(), "hi")
    });
    check!("Add with numbers and strings", {
        expect_eq(
            "Add",
            call::<i64>(&hub, "Add", vec![json!(2), json!(3)]).await?,
            5,
        )?;
        expect_eq(
            "Add",
            call::<i64>(&hub, "Add", vec![json!("1"), json!("2")]).await?,
            3,
        )
    });
    check!("EchoObject", {
        let echoed: Value =
            call(&hub, "EchoObject", vec![json!({"Name": "n", "Value": 7})]).await?;
        expect_eq("EchoObject", echoed, json!({"Name": "n", "Value": 7}))
    });
    check!("GetConnectionId", {
        let id: String = call(&hub, "GetConnectionId", vec![]).await?;
        expect_eq("id", Some(id), c.connection_id())
    });
    check!("GetTransportName", {
        let name: String = call(&hub, "GetTransportName", vec![]).await?;
        expect_eq("transport", name.as_str(), kind.name())
    });
    check!("a header", {
        let value: Option<String> = call(&hub, "GetHeader", vec![json!("X-Test")]).await?;
        expect_eq("header", value.as_deref(), Some("header value"))
    });
    check!("a query string", {
        let value: Option<String> = call(&hub, "GetQueryString", vec![json!("qs")]).await?;
        expect_eq("query", value.as_deref(), Some("query value"))
    });
    check!("HubException with error data", {
        match within(
            "ThrowHubException",
            hub.invoke::<Value>("ThrowHubException", ("boom",)),
        )
        .await?
        {
            Ok(value) => Err(format!("no error but {value}")),
            Err(err) => {
                expect_eq("server error", err.is_server_error(), true)?;
                expect_eq("hub exception", err.is_hub_exception(), true)?;
                expect_eq("message", err.message(), "boom")?;
                expect_eq("data", err.error_data(), Some(&json!({"Code": 42})))
            }
        }
    });
    check!("a generic error hides its text", {
        match within(
            "ThrowException",
            hub.invoke_void("ThrowException", ("secret",)),
        )
        .await?
        {
            Ok(()) => Err("no error".to_owned()),
            Err(err) => {
                expect_eq("server error", err.is_server_error(), true)?;
                expect_eq("hub exception", err.is_hub_exception(), false)?;
                expect_eq("text hidden", err.message().contains("secret"), false)
            }
        }
    });
    check!("an unknown method fails", {
        match within("Nope", hub.invoke_void("Nope", ())).await? {
            Ok(()) => Err("no error".to_owned()),
            Err(err) => expect_eq("message", err.message().contains("Nope"), true),
        }
    });
    check!("a client method, name in another case", {
        hub.invoke_void("InvokeWithString", ("to caller",))
            .await
            .map_err(|e| e.to_string())?;
        expect_eq(
            "message",
            next("message", &mut message_rx).await?.as_str(),
            "to caller",
        )
    });
    check!("Received sees the client-method call", {
        loop {
            let text = next("received", &mut received_rx).await?;
            if text.contains("to caller") {
                break Ok(());
            }
        }
    });
    check!("a client method without arguments", {
        hub.invoke_void("NotifyNoArgs", ())
            .await
            .map_err(|e| e.to_string())?;
        next("notify", &mut notify_rx).await
    });
    check!("a client method with seven arguments, dynamic", {
        hub.invoke_void("SendManyArgs", ())
            .await
            .map_err(|e| e.to_string())?;
        let args = next("manyArgs", &mut many_rx).await?;
        expect_eq(
            "args",
            args,
            json!([1, "two", 3.5, true, [4, 5], {"Symbol": "MSFT", "Price": 12.34}, "seven"]),
        )
    });
    check!("a complex type with a decimal, both ways", {
        let stock: Value = call(
            &hub,
            "UpdateStockPrice",
            vec![json!({"Symbol": "MSFT", "Price": 10.5})],
        )
        .await?;
        expect_eq("result", stock["Symbol"].as_str(), Some("MSFT"))?;
        let pushed = next("updateStockPrice", &mut stock_rx).await?;
        expect_eq(
            "pushed",
            pushed,
            Stock {
                symbol: "MSFT".to_owned(),
                price: 11.5,
            },
        )
    });
    check!("a renamed method", {
        let echoed: String = call(&hub, "aliasedEcho", vec![json!("alias")]).await?;
        expect_eq("aliasedEcho", echoed.as_str(), "alias")
    });
    check!("overloads by argument count", {
        expect_eq("0", call::<i64>(&hub, "Overload", vec![]).await?, 0)?;
        expect_eq("1", call::<i64>(&hub, "Overload", vec![json!(1)]).await?, 1)?;
        expect_eq(
            "2",
            call::<i64>(&hub, "Overload", vec![json!(1), json!(2)]).await?,
            2,
        )
    });
    check!("progress", {
        let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
        let done: String = within(
            "CountWithProgress",
            hub.invoke_with_progress("CountWithProgress", (3,), move |n: i64| {
                let _ = tx.send(n);
            }),
        )
        .await?
        .map_err(|e| e.to_string())?;
        expect_eq("result", done.as_str(), "done")?;
        let mut reports = Vec::new();
        while let Ok(n) = rx.try_recv() {
            reports.push(n);
        }
        expect_eq("reports", reports, vec![1, 2, 3])
    });
    check!("caller state sent and merged back", {
        hub.set_state("name", "ann");
        hub.set_state("count", 1);
        let name: Option<String> = call(&hub, "GetStateName", vec![]).await?;
        expect_eq("name", name.as_deref(), Some("ann"))?;
        expect_eq(
            "greeted",
            hub.get_state("greeted"),
            Some(json!("hello ann")),
        )?;
        expect_eq("count", hub.get_state("count"), Some(json!(2)))?;
        let _: Option<String> = call(&hub, "GetStateName", vec![]).await?;
        expect_eq("count again", hub.get_state("count"), Some(json!(3)))
    });
    check!("groups", {
        hub.invoke_void("JoinGroup", ("g1",))
            .await
            .map_err(|e| e.to_string())?;
        hub.invoke_void("SendToGroup", ("g1", "in g1"))
            .await
            .map_err(|e| e.to_string())?;
        expect_eq(
            "groupMessage",
            next("groupMessage", &mut group_rx).await?,
            ("g1".to_owned(), "in g1".to_owned()),
        )?;
        hub.invoke_void("LeaveGroup", ("g1",))
            .await
            .map_err(|e| e.to_string())?;
        hub.invoke_void("SendToGroup", ("g1", "after leave"))
            .await
            .map_err(|e| e.to_string())?;
        quiet("after leave", &mut group_rx, Duration::from_millis(500)).await
    });
    check!("two hubs on one connection", {
        let echoed: String = call(&renamed, "Echo", vec![json!("r")]).await?;
        expect_eq("renamed.Echo", echoed.as_str(), "r")
    });
    check!("the hub context reaches the client", {
        let url = format!("{root}broadcast?msg=from%20context");
        let response = within("GET /broadcast", reqwest::get(&url))
            .await?
            .map_err(|e| e.to_string())?;
        expect_eq("status", response.status().as_u16(), 200)?;
        expect_eq(
            "broadcast",
            next("broadcast", &mut broadcast_rx).await?.as_str(),
            "from context",
        )
    });
    check!("a removed handler is not called", {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let subscription = hub.on("message", move |(text,): (String,)| {
            let _ = tx.send(text);
        });
        drop(subscription);
        hub.invoke_void("InvokeWithString", ("again",))
            .await
            .map_err(|e| e.to_string())?;
        expect_eq(
            "still the first",
            next("message", &mut message_rx).await?.as_str(),
            "again",
        )?;
        quiet("removed", &mut rx, Duration::from_millis(300)).await
    });
    check!("Others, AllExcept and Clients with a second connection", {
        let other = connection(root, transport, "bob");
        let other_hub = other.create_hub_proxy("TestHub");
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let _sub = other_hub.on("message", move |(text,): (String,)| {
            let _ = tx.send(text);
        });
        within("second start", other.start())
            .await?
            .map_err(|e| e.to_string())?;
        let other_id = other.connection_id().unwrap_or_default();
        hub.invoke_void("SendToOthers", ("to others",))
            .await
            .map_err(|e| e.to_string())?;
        expect_eq(
            "others",
            next("others", &mut rx).await?.as_str(),
            "to others",
        )?;
        hub.invoke_void("SendToClient", (other_id.clone(), "direct"))
            .await
            .map_err(|e| e.to_string())?;
        expect_eq("direct", next("direct", &mut rx).await?.as_str(), "direct")?;
        hub.invoke_void("SendToUser", ("bob", "to bob"))
            .await
            .map_err(|e| e.to_string())?;
        expect_eq("user", next("user", &mut rx).await?.as_str(), "to bob")?;
        quiet(
            "caller is not an other",
            &mut message_rx,
            Duration::from_millis(300),
        )
        .await?;
        other.stop().await;
        let id = other_id;
        let mut gone = false;
        for _ in 0..50 {
            if call::<bool>(&hub, "WasDisconnected", vec![json!(id)]).await? {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        expect_eq("OnDisconnected after stop", gone, true)
    });
    check!("stop -> Closed, Disconnected, calls refused", {
        c.stop().await;
        next("closed", &mut closed_rx).await?;
        expect_eq("state", c.state(), ConnectionState::Disconnected)?;
        match hub.invoke_void("Echo", ("x",)).await {
            Ok(()) => Err("a call after stop succeeded".to_owned()),
            Err(err) => expect_eq("closed", err.is_closed(), true),
        }
    });
    results
}

/// Checks made once per server.
async fn server_checks(root: &str) -> Vec<(&'static str, Check)> {
    let mut results = Vec::new();
    let secret_alone = async {
        let c = ClassicHubConnection::new(root).map_err(|e| e.to_string())?;
        let _secret = c.create_hub_proxy("SecretHub");
        match within("start", c.start()).await? {
            Ok(()) => Err("started".to_owned()),
            Err(err) => {
                expect_eq("negotiate", err.is_negotiate(), true)?;
                expect_eq("status", err.status(), Some(401))?;
                expect_eq("state", c.state(), ConnectionState::Disconnected)
            }
        }
    };
    results.push(("an [Authorize] hub alone: 401", secret_alone.await));
    let secret_beside = async {
        let c = ClassicHubConnection::new(root).map_err(|e| e.to_string())?;
        let secret = c.create_hub_proxy("SecretHub");
        let test = c.create_hub_proxy("TestHub");
        within("start", c.start())
            .await?
            .map_err(|e| e.to_string())?;
        let refused =
            match within("SecretHub.Echo", secret.invoke::<String>("Echo", ("s",))).await? {
                Ok(_) => Err("allowed".to_owned()),
                Err(err) => expect_eq(
                    "message",
                    err.message(),
                    "There was an error invoking Hub method 'SecretHub.Echo'.",
                ),
            };
        let echoed: Result<String, _> = test.invoke("Echo", ("t",)).await;
        c.stop().await;
        refused?;
        expect_eq(
            "TestHub.Echo",
            echoed.map_err(|e| e.to_string())?.as_str(),
            "t",
        )
    };
    results.push((
        "an [Authorize] hub beside an allowed one",
        secret_beside.await,
    ));
    let root_with_path = async {
        // The endpoint URL itself, not the site root: /signalr is not added twice.
        let c = ClassicHubConnection::new(format!("{root}signalr")).map_err(|e| e.to_string())?;
        let hub = c.create_hub_proxy("testhub");
        within("start", c.start())
            .await?
            .map_err(|e| e.to_string())?;
        let echoed: Result<String, _> = hub.invoke("echo", ("lower",)).await;
        c.stop().await;
        expect_eq("echo", echoed.map_err(|e| e.to_string())?.as_str(), "lower")
    };
    results.push((
        "the endpoint URL and lower-case names",
        root_with_path.await,
    ));
    results
}

/// A loopback TCP proxy in front of a server: `cut()` closes every connection it carries (new
/// ones are accepted again), `pause(true)` holds every byte in both directions while the
/// connections stay open (a stalled network).
struct TcpProxy {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    paused: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    async fn start(to: String) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (paused, _) = tokio::sync::watch::channel(false);
        let cut_rx = cut.subscribe();
        let paused_rx = paused.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&to).await else {
                    continue;
                };
                let mut cut_rx = cut_rx.clone();
                cut_rx.mark_unchanged();
                let paused_rx = paused_rx.clone();
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pipe(cr, sw, paused_rx.clone());
                    let down = pipe(sr, cw, paused_rx);
                    tokio::select! {
                        _ = cut_rx.changed() => {}
                        () = async { tokio::join!(up, down); } => {}
                    }
                });
            }
        });
        TcpProxy { port, cut, paused }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    fn pause(&self, paused: bool) {
        let _ = self.paused.send(paused);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A cut connection on WebSockets and Server-Sent Events: Reconnecting, then Reconnected with
/// the same connection id, a message sent meanwhile to its group replayed, lifetime events
/// `OnConnected, OnReconnected`.
async fn check_network_drop(root: &str, transport: ClassicTransport) -> Check {
    let address = root
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = TcpProxy::start(address).await;
    let proxied = format!("http://127.0.0.1:{}/", proxy.port);
    let c = connection(&proxied, transport, "dropped");
    let hub = c.create_hub_proxy("TestHub");
    let (group_tx, mut group_rx) = mpsc::unbounded_channel::<(String, String)>();
    let _group = hub.on("groupMessage", move |args: (String, String)| {
        let _ = group_tx.send(args);
    });
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<&'static str>();
    let tx = events_tx.clone();
    c.on_reconnecting(move || {
        let _ = tx.send("reconnecting");
    });
    let tx = events_tx.clone();
    c.on_reconnected(move || {
        let _ = tx.send("reconnected");
    });
    c.on_closed(move || {
        let _ = events_tx.send("closed");
    });
    within("start", c.start())
        .await?
        .map_err(|e| e.to_string())?;
    let id = c.connection_id();
    hub.invoke_void("JoinGroup", ("dropgroup",))
        .await
        .map_err(|e| e.to_string())?;

    let sender = connection(root, ClassicTransport::LongPolling, "sender");
    let sender_hub = sender.create_hub_proxy("TestHub");
    within("sender start", sender.start())
        .await?
        .map_err(|e| e.to_string())?;

    proxy.cut();
    expect_eq(
        "event",
        next("reconnecting", &mut events_rx).await?,
        "reconnecting",
    )?;
    expect_eq("state", c.state(), ConnectionState::Reconnecting)?;
    sender_hub
        .invoke_void("SendToGroup", ("dropgroup", "missed"))
        .await
        .map_err(|e| e.to_string())?;
    expect_eq(
        "event",
        next("reconnected", &mut events_rx).await?,
        "reconnected",
    )?;
    expect_eq("state", c.state(), ConnectionState::Connected)?;
    expect_eq("same id", c.connection_id(), id)?;
    expect_eq(
        "replayed",
        next("groupMessage", &mut group_rx).await?,
        ("dropgroup".to_owned(), "missed".to_owned()),
    )?;
    let events: Vec<String> = within("GetLifetimeEvents", hub.invoke("GetLifetimeEvents", ()))
        .await?
        .map_err(|e| e.to_string())?;
    expect_eq(
        "lifetime",
        events,
        vec!["OnConnected".to_owned(), "OnReconnected".to_owned()],
    )?;
    sender_hub
        .invoke_void("SendToGroup", ("dropgroup", "still in"))
        .await
        .map_err(|e| e.to_string())?;
    expect_eq(
        "group kept",
        next("groupMessage", &mut group_rx).await?,
        ("dropgroup".to_owned(), "still in".to_owned()),
    )?;
    c.stop().await;
    sender.stop().await;
    expect_eq("event", next("closed", &mut events_rx).await?, "closed")
}

/// A cut connection on long polling: the poll cut before its answer is sent again on a new
/// socket, without a reconnect (what the real server and the .NET client do): no Reconnecting,
/// the same connection id, a message sent to its group meanwhile delivered, lifetime events just
/// `OnConnected`, the group kept.
async fn check_long_polling_drop(root: &str) -> Check {
    let address = root
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = TcpProxy::start(address).await;
    let proxied = format!("http://127.0.0.1:{}/", proxy.port);
    let c = connection(&proxied, ClassicTransport::LongPolling, "dropped-poll");
    let hub = c.create_hub_proxy("TestHub");
    let (group_tx, mut group_rx) = mpsc::unbounded_channel::<(String, String)>();
    let _group = hub.on("groupMessage", move |args: (String, String)| {
        let _ = group_tx.send(args);
    });
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<&'static str>();
    let tx = events_tx.clone();
    c.on_reconnecting(move || {
        let _ = tx.send("reconnecting");
    });
    let tx = events_tx.clone();
    c.on_reconnected(move || {
        let _ = tx.send("reconnected");
    });
    c.on_closed(move || {
        let _ = events_tx.send("closed");
    });
    within("start", c.start())
        .await?
        .map_err(|e| e.to_string())?;
    let id = c.connection_id();
    hub.invoke_void("JoinGroup", ("droppollgroup",))
        .await
        .map_err(|e| e.to_string())?;

    let sender = connection(root, ClassicTransport::LongPolling, "sender");
    let sender_hub = sender.create_hub_proxy("TestHub");
    within("sender start", sender.start())
        .await?
        .map_err(|e| e.to_string())?;

    // Let the poll after JoinGroup's answer be the one waiting, then cut it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    sender_hub
        .invoke_void("SendToGroup", ("droppollgroup", "during the cut"))
        .await
        .map_err(|e| e.to_string())?;
    expect_eq(
        "delivered",
        next("groupMessage", &mut group_rx).await?,
        ("droppollgroup".to_owned(), "during the cut".to_owned()),
    )?;
    quiet("no reconnect", &mut events_rx, Duration::from_secs(1)).await?;
    expect_eq("state", c.state(), ConnectionState::Connected)?;
    expect_eq("same id", c.connection_id(), id.clone())?;
    let events: Vec<String> = within("GetLifetimeEvents", hub.invoke("GetLifetimeEvents", ()))
        .await?
        .map_err(|e| e.to_string())?;
    expect_eq("lifetime", events, vec!["OnConnected".to_owned()])?;
    // A second cut, with nothing sent meanwhile: still no reconnect, the group kept.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sender_hub
        .invoke_void("SendToGroup", ("droppollgroup", "still in"))
        .await
        .map_err(|e| e.to_string())?;
    expect_eq(
        "group kept",
        next("groupMessage", &mut group_rx).await?,
        ("droppollgroup".to_owned(), "still in".to_owned()),
    )?;
    quiet("no reconnect", &mut events_rx, Duration::from_millis(500)).await?;
    expect_eq("same id", c.connection_id(), id)?;
    c.stop().await;
    sender.stop().await;
    expect_eq("event", next("closed", &mut events_rx).await?, "closed")
}

/// A stalled network (every byte held): ConnectionSlow within two thirds of the 20 s
/// keep-alive timeout, and the connection recovers without a reconnect once bytes flow.
async fn check_connection_slow(root: &str) -> Check {
    let address = root
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = TcpProxy::start(address).await;
    let proxied = format!("http://127.0.0.1:{}/", proxy.port);
    let c = connection(&proxied, ClassicTransport::WebSockets, "slow");
    let hub = c.create_hub_proxy("TestHub");
    let (events_tx, mut events_rx) =
        mpsc::unbounded_channel::<(&'static str, std::time::Instant)>();
    let tx = events_tx.clone();
    c.on_connection_slow(move || {
        let _ = tx.send(("slow", std::time::Instant::now()));
    });
    c.on_reconnecting(move || {
        let _ = events_tx.send(("reconnecting", std::time::Instant::now()));
    });
    within("start", c.start())
        .await?
        .map_err(|e| e.to_string())?;
    let paused_at = std::time::Instant::now();
    proxy.pause(true);
    let (event, at) = tokio::time::timeout(Duration::from_secs(16), events_rx.recv())
        .await
        .map_err(|_| "no ConnectionSlow within 16 s".to_owned())?
        .ok_or("channel closed")?;
    expect_eq("event", event, "slow")?;
    let after = at.duration_since(paused_at);
    if after > Duration::from_millis(13_334 + 1_000) {
        return Err(format!(
            "ConnectionSlow after {after:?}, later than 2/3 of 20 s"
        ));
    }
    proxy.pause(false);
    let echoed: String = within("Echo", hub.invoke("Echo", ("alive",)))
        .await?
        .map_err(|e| e.to_string())?;
    expect_eq("echo", echoed.as_str(), "alive")?;
    quiet("no reconnect", &mut events_rx, Duration::from_secs(1)).await?;
    expect_eq("state", c.state(), ConnectionState::Connected)?;
    c.stop().await;
    Ok(())
}

/// The network checks of one server.
async fn network_checks(root: &str) -> Vec<(&'static str, Check)> {
    vec![
        (
            "webSockets: a cut connection reconnects",
            check_network_drop(root, ClassicTransport::WebSockets).await,
        ),
        (
            "serverSentEvents: a cut connection reconnects",
            check_network_drop(root, ClassicTransport::ServerSentEvents).await,
        ),
        (
            "longPolling: a cut poll is sent again, without a reconnect",
            check_long_polling_drop(root).await,
        ),
        (
            "a stalled network raises ConnectionSlow and recovers",
            check_connection_slow(root).await,
        ),
    ]
}

/// Runs everything against `root`, prints a TAP-like report, and returns the failures.
async fn run_all(server: &str, root: &str) -> (usize, Vec<String>) {
    let mut passed = 0;
    let mut failures = Vec::new();
    let mut report = |group: &str, results: Vec<(&'static str, Check)>| {
        for (name, result) in results {
            match result {
                Ok(()) => {
                    passed += 1;
                    println!("ok - {server} {group}: {name}");
                }
                Err(why) => {
                    println!("not ok - {server} {group}: {name} # {why}");
                    failures.push(format!("{group}: {name}: {why}"));
                }
            }
        }
    };
    for transport in TRANSPORTS {
        let results = transport_checks(root, transport).await;
        report(transport.name(), results);
    }
    report("once", server_checks(root).await);
    report("network", network_checks(root).await);
    println!("{server}: {passed} passed, {} failed", failures.len());
    (passed, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_contract_against_our_server() {
    init_tracing();
    let root = our_server().await;
    let (_, failures) = run_all("ours", &root).await;
    assert!(
        failures.is_empty(),
        "failed checks:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_contract_against_signalr_2_4() {
    init_tracing();
    let Some(program) = classic_peer_program() else {
        return;
    };
    let peer = start_peer(&program, &["--port", "0"]).await;
    let root = format!("{}/", peer.address.trim_end_matches('/'));
    // The .NET process compiles its code paths on first use: one warm-up connection, with a
    // generous limit, before the timed checks.
    let warm_up = connection(&root, ClassicTransport::Auto, "warm-up");
    let _hub = warm_up.create_hub_proxy("TestHub");
    let began = std::time::Instant::now();
    let started = tokio::time::timeout(Duration::from_secs(60), warm_up.start()).await;
    println!(
        "classic-peer warm-up start: {started:?} after {:?}",
        began.elapsed()
    );
    warm_up.stop().await;
    let (_, failures) = run_all("classic-peer", &root).await;
    assert!(
        failures.is_empty(),
        "failed checks:\n{}",
        failures.join("\n")
    );
}
