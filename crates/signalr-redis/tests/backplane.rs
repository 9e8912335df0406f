//! The Redis backplane end to end, in one process: several "servers" (each its own hub, its own
//! Redis connections, its own HTTP listener) on a real `redis-server` started on a free loopback
//! port, with Rust hub clients on them. Skipped, saying so, when `redis-server` is not installed
//! (`./scripts/test.sh` installs it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use signalr_hub_client::{HubConnection, HubConnectionBuilder};
use signalr_redis::{RedisBackplane, RedisOptions};
use signalr_server::{
    Hub, HubCallerContext, HubContext, HubError, HubProtocol,
    error::{ClientResultError, GroupError, SendError},
};
use tokio::sync::mpsc;

const HUB: &str = "Peer.ChatHub";

// ---------------------------------------------------------------------------------------------
// A redis-server of our own
// ---------------------------------------------------------------------------------------------

struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts `redis-server` on a free port; `None` (after saying why) when it is not installed.
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("SKIPPED: redis-server is not installed (./scripts/test.sh installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut redis = Redis { port, child: None };
        redis.spawn();
        Some(redis)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw Redis connection")
    }

    /// `PUBSUB CHANNELS pattern`, sorted.
    async fn channels(&self, pattern: &str) -> Vec<String> {
        let mut connection = self.raw().await;
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query_async(&mut connection)
            .await
            .expect("PUBSUB CHANNELS");
        channels.sort();
        channels
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------------------------

/// The chat hub of the scale-out contract (the conformance server's `/chat`), trimmed to what
/// these tests call.
fn chat_hub(backplane: &RedisBackplane) -> Hub {
    Hub::builder()
        .name("ChatHub")
        .user_id_from_request(|_, request| request.query_param("user"))
        .method("GetConnectionId", |hub: HubCallerContext| async move {
            hub.connection_id().to_owned()
        })
        .method(
            "SendMessage",
            |hub: HubCallerContext, user: String, text: String| async move {
                hub.clients()
                    .all()
                    .send("ReceiveMessage", (user, text))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToOthers",
            |hub: HubCallerContext, user: String, text: String| async move {
                hub.clients()
                    .others()
                    .send("ReceiveMessage", (user, text))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendAllExcept",
            |hub: HubCallerContext, id: String, text: String| async move {
                hub.clients()
                    .all_except([id])
                    .send("ReceiveMessage", ("all-except", text))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "JoinGroup",
            |hub: HubCallerContext, group: String| async move {
                hub.groups()
                    .add_to_group(hub.connection_id(), &group)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "LeaveGroup",
            |hub: HubCallerContext, group: String| async move {
                hub.groups()
                    .remove_from_group(hub.connection_id(), &group)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "AddToGroup",
            |hub: HubCallerContext, id: String, group: String| async move {
                hub.groups().add_to_group(&id, &group).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToGroup",
            |hub: HubCallerContext, group: String, text: String| async move {
                hub.clients()
                    .group(group.clone())
                    .send("GroupMessage", (group, text))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToGroupExcept",
            |hub: HubCallerContext, group: String, id: String, text: String| async move {
                hub.clients()
                    .group_except(group.clone(), [id])
                    .send("GroupMessage", (group, text))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToUser",
            |hub: HubCallerContext, user: String, text: String| async move {
                hub.clients()
                    .user(user)
                    .send("UserMessage", (text,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToConnection",
            |hub: HubCallerContext, id: String, text: String| async move {
                hub.clients()
                    .client(id)
                    .send("DirectMessage", (text,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "AskClient",
            |hub: HubCallerContext, id: String, question: String| async move {
                let answer: String = hub
                    .clients()
                    .client(id)
                    .invoke("GetAnswer", (question,))
                    .await?;
                Ok::<_, HubError>(answer)
            },
        )
        .lifetime_manager(backplane.hub(HUB))
        .build()
}

struct Server {
    addr: SocketAddr,
    context: HubContext,
    backplane: RedisBackplane,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(redis: &Redis, options: impl FnOnce(RedisOptions) -> RedisOptions) -> Server {
        let backplane = RedisBackplane::connect(options(RedisOptions::new(redis.url())))
            .await
            .expect("connect to Redis");
        let hub = chat_hub(&backplane);
        let context = hub.context();
        let app = axum::Router::new()
            .nest("/chat", hub.router())
            .nest("/signalr", signalr_server::classic_router([&hub]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            addr,
            context,
            backplane,
            task,
        }
    }

    /// Waits until the hub's start channels are subscribed.
    async fn ready(&self) {
        within("the hub's Redis subscription", async {
            while !self.backplane.status().iter().all(|hub| hub.subscribed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Rust hub client with every event of the contract recorded as one line.
struct Client {
    connection: HubConnection,
    id: String,
    events: mpsc::UnboundedReceiver<String>,
}

impl Client {
    async fn connect(server: &Server, name: &str, protocol: HubProtocol) -> Client {
        let connection = HubConnectionBuilder::new()
            .with_url(format!("http://{}/chat?user={name}", server.addr))
            .with_protocol(protocol)
            .build()
            .expect("client");
        let (tx, events) = mpsc::unbounded_channel();
        for (method, arity) in [
            ("ReceiveMessage", 2),
            ("GroupMessage", 2),
            ("UserMessage", 1),
            ("DirectMessage", 1),
        ] {
            let tx = tx.clone();
            connection
                .on(method, move |args: Vec<serde_json::Value>| {
                    assert_eq!(args.len(), arity, "{method} arguments");
                    let text: Vec<String> = args
                        .iter()
                        .map(|a| a.as_str().unwrap_or_default().to_owned())
                        .collect();
                    let _ = tx.send(format!("{method} {}", text.join(" ")));
                })
                .detach();
        }
        let answer_name = name.to_owned();
        connection
            .on("GetAnswer", move |(question,): (String,)| {
                Some(format!("{answer_name} answers {question}"))
            })
            .detach();
        within("client start", connection.start())
            .await
            .expect("start");
        let id: String = connection
            .invoke("GetConnectionId", ())
            .await
            .expect("GetConnectionId");
        Client {
            connection,
            id,
            events,
        }
    }

    async fn call(&self, method: &str, args: Vec<&str>) {
        let args: Vec<serde_json::Value> = args.into_iter().map(Into::into).collect();
        let _: serde_json::Value = within(method, self.connection.invoke(method, args))
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
    }

    async fn next(&mut self, what: &str) -> String {
        within(what, self.events.recv())
            .await
            .unwrap_or_else(|| panic!("{what}: the connection closed"))
    }

    /// Asserts that nothing more arrives within a short settle time.
    async fn nothing_more(&mut self, who: &str) {
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(300), self.events.recv()).await
        {
            panic!("{who} got an unexpected {event:?}");
        }
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Every target kind of the contract reaches exactly the right clients across three servers,
/// with JSON and MessagePack clients mixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_kind_across_three_servers() {
    init_tracing();
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis, |o| o).await;
    let b = Server::start(&redis, |o| o).await;
    let c = Server::start(&redis, |o| o).await;
    for server in [&a, &b, &c] {
        server.ready().await;
    }
    let mut ann = Client::connect(&a, "ann", HubProtocol::Json).await;
    let mut bob = Client::connect(&b, "bob", HubProtocol::MessagePack).await;
    let mut cid = Client::connect(&c, "cid", HubProtocol::Json).await;
    // bob again, on a third server: user sends reach both of his connections.
    let mut bob2 = Client::connect(&c, "bob", HubProtocol::Json).await;

    ann.call("SendMessage", vec!["ann", "hello-all"]).await;
    for client in [&mut ann, &mut bob, &mut cid, &mut bob2] {
        assert_eq!(client.next("all").await, "ReceiveMessage ann hello-all");
    }

    bob.call("SendToOthers", vec!["bob", "to-others"]).await;
    for client in [&mut ann, &mut cid, &mut bob2] {
        assert_eq!(client.next("others").await, "ReceiveMessage bob to-others");
    }

    let bob_id = bob.id.clone();
    ann.call("SendAllExcept", vec![&bob_id, "not-bob"]).await;
    for client in [&mut ann, &mut cid, &mut bob2] {
        assert_eq!(
            client.next("all-except").await,
            "ReceiveMessage all-except not-bob"
        );
    }

    // bob joins room1 on his own server; ann (elsewhere, no member there) sends to it.
    bob.call("JoinGroup", vec!["room1"]).await;
    ann.call("SendToGroup", vec!["room1", "hi-room1"]).await;
    assert_eq!(bob.next("group").await, "GroupMessage room1 hi-room1");

    // ann's server adds cid (on server c) to room2: the group command and its ack.
    let cid_id = cid.id.clone();
    ann.call("AddToGroup", vec![&cid_id, "room2"]).await;
    ann.call("SendToGroup", vec!["room2", "hi-room2"]).await;
    assert_eq!(
        cid.next("group after AddToGroup").await,
        "GroupMessage room2 hi-room2"
    );

    // Group-except: cid and bob2 in room3, cid excluded.
    cid.call("JoinGroup", vec!["room3"]).await;
    bob2.call("JoinGroup", vec!["room3"]).await;
    ann.call("SendToGroupExcept", vec!["room3", &cid_id, "not-cid"])
        .await;
    assert_eq!(
        bob2.next("group-except").await,
        "GroupMessage room3 not-cid"
    );

    ann.call("SendToUser", vec!["bob", "hey-bob"]).await;
    assert_eq!(bob.next("user").await, "UserMessage hey-bob");
    assert_eq!(bob2.next("user").await, "UserMessage hey-bob");

    ann.call("SendToConnection", vec![&cid_id, "direct-cid"])
        .await;
    assert_eq!(cid.next("connection").await, "DirectMessage direct-cid");

    // bob leaves room1 (removing on his own server); the group is then empty everywhere.
    bob.call("LeaveGroup", vec!["room1"]).await;
    ann.call("SendToGroup", vec!["room1", "nobody"]).await;

    for (client, name) in [
        (&mut ann, "ann"),
        (&mut bob, "bob"),
        (&mut cid, "cid"),
        (&mut bob2, "bob2"),
    ] {
        client.nothing_more(name).await;
    }
}

/// Client results across servers: the invoking server publishes the call on the connection's
/// channel, the owning server relays the client's answer on the return channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_result_from_a_client_on_another_server() {
    init_tracing();
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis, |o| o).await;
    let b = Server::start(&redis, |o| o).await;
    a.ready().await;
    b.ready().await;
    let ann = Client::connect(&a, "ann", HubProtocol::Json).await;
    let bob = Client::connect(&b, "bob", HubProtocol::MessagePack).await;

    let answer: String = ann
        .connection
        .invoke("AskClient", (bob.id.clone(), "q1"))
        .await
        .expect("AskClient");
    assert_eq!(answer, "bob answers q1");
    let answer: String = bob
        .connection
        .invoke("AskClient", (ann.id.clone(), "q2"))
        .await
        .expect("AskClient");
    assert_eq!(answer, "ann answers q2");

    // From outside any hub method too, and for a connection nobody has.
    let answer: String = a
        .context
        .clients()
        .client(bob.id.clone())
        .invoke("GetAnswer", ("q3",))
        .await
        .expect("HubContext invoke");
    assert_eq!(answer, "bob answers q3");
    let unknown = a
        .context
        .clients()
        .client("no-such-connection")
        .invoke::<String>("GetAnswer", ("q4",))
        .await;
    assert_eq!(
        unknown,
        Err(ClientResultError::UnknownConnection(
            "no-such-connection".into()
        ))
    );
}

/// A group change for a connection no server has waits for an acknowledgement that never
/// comes, then fails with `AckTimeout` (ASP.NET: a `TaskCanceledException` after 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_ack_that_never_comes_times_out() {
    init_tracing();
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis, |o| o.ack_timeout(Duration::from_millis(500))).await;
    a.ready().await;
    let started = Instant::now();
    let result = a.context.groups().add_to_group("nobody", "room").await;
    assert_eq!(
        result,
        Err(GroupError::AckTimeout {
            connection_id: "nobody".into(),
            group: "room".into()
        })
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // The invocation of a hub method that does this fails with an error completion.
    let ann = Client::connect(&a, "ann", HubProtocol::Json).await;
    let error = ann
        .connection
        .invoke::<serde_json::Value>("AddToGroup", ("nobody", "room"))
        .await
        .expect_err("AddToGroup of an unknown connection");
    assert!(
        error
            .to_string()
            .contains("An unexpected error occurred invoking 'AddToGroup'"),
        "{error}"
    );
}

/// The channels a server subscribes follow ASP.NET's rules: the four start channels, a
/// connection channel and a user channel per connected user, a group channel while the group
/// has a local member; all but the start channels go when the connections do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_connections_users_and_groups() {
    init_tracing();
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis, |o| o.channel_prefix("App")).await;
    a.ready().await;
    let server = a.backplane.status()[0].server_name.clone();
    let start = {
        let mut start = vec![
            "AppPeer.ChatHub:all".to_owned(),
            "AppPeer.ChatHub:internal:groups".to_owned(),
            format!("AppPeer.ChatHub:internal:ack:{server}"),
            format!("AppPeer.ChatHub:internal:return:{server}"),
        ];
        start.sort();
        start
    };
    assert_eq!(redis.channels("*").await, start, "start channels, prefixed");

    let ann = Client::connect(&a, "ann", HubProtocol::Json).await;
    ann.call("JoinGroup", vec!["room1"]).await;
    let mut expected = start.clone();
    expected.push(format!("AppPeer.ChatHub:connection:{}", ann.id));
    expected.push("AppPeer.ChatHub:group:room1".to_owned());
    expected.push("AppPeer.ChatHub:user:ann".to_owned());
    expected.sort();
    assert_eq!(redis.channels("*").await, expected);

    ann.call("LeaveGroup", vec!["room1"]).await;
    assert!(
        !redis
            .channels("*")
            .await
            .contains(&"AppPeer.ChatHub:group:room1".to_owned()),
        "the group channel goes with its last local member"
    );
    ann.call("JoinGroup", vec!["room2"]).await;
    ann.connection.stop().await;
    within("channels of a closed connection released", async {
        while redis.channels("*").await != start {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// What this server publishes is byte for byte what ASP.NET Core publishes (the recorded send
/// to all of `ReceiveMessage("ann", "hello-all")`, 129 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_all_publishes_aspnet_core_bytes() {
    init_tracing();
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis, |o| o).await;
    a.ready().await;
    let mut pubsub = redis::Client::open(redis.url())
        .expect("url")
        .get_async_pubsub()
        .await
        .expect("raw subscriber");
    pubsub
        .subscribe("Peer.ChatHub:all")
        .await
        .expect("subscribe");
    a.context
        .clients()
        .all()
        .send("ReceiveMessage", ("ann", "hello-all"))
        .await
        .expect("send");
    let message = within("the published payload", pubsub.on_message().next())
        .await
        .expect("a message");
    let expected = concat!(
        "929082a46a736f6ec4457b2274797065223a312c22746172676574223a225265",
        "63656976654d657373616765222c22617267756d656e7473223a5b22616e6e22",
        "2c2268656c6c6f2d616c6c225d7d1eab6d6573736167657061636bc424239601",
        "80c0ae526563656976654d65737361676592a3616e6ea968656c6c6f2d616c6c",
        "90"
    );
    let actual: String = message
        .get_payload_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(actual, expected);
}

/// Redis goes away: sends fail within the command timeout with a clear error (no hang), the
/// servers keep serving their own clients' calls, and once Redis is back (same port) the
/// subscriptions are restored and deliveries across servers resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_fails_sends_fast_then_deliveries_resume() {
    init_tracing();
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let timeout = Duration::from_millis(700);
    let a = Server::start(&redis, |o| o.command_timeout(timeout)).await;
    let b = Server::start(&redis, |o| o.command_timeout(timeout)).await;
    a.ready().await;
    b.ready().await;
    let ann = Client::connect(&a, "ann", HubProtocol::Json).await;
    let mut bob = Client::connect(&b, "bob", HubProtocol::MessagePack).await;
    ann.call("SendMessage", vec!["ann", "before"]).await;
    assert_eq!(
        bob.next("before the restart").await,
        "ReceiveMessage ann before"
    );

    redis.stop();
    let started = Instant::now();
    let failed = a
        .context
        .clients()
        .all()
        .send("ReceiveMessage", ("ann", "lost"))
        .await;
    assert!(
        matches!(&failed, Err(SendError::Backplane(text)) if text.contains("Redis")),
        "{failed:?}"
    );
    assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
    // The hub method's invocation fails with an error completion, not a hang.
    let error = within(
        "SendMessage while Redis is away",
        ann.connection
            .invoke::<serde_json::Value>("SendMessage", ("ann", "lost")),
    )
    .await
    .expect_err("SendMessage while Redis is away");
    assert!(error.to_string().contains("SendMessage"), "{error}");
    // Calls that need no backplane still work.
    let id: String = ann
        .connection
        .invoke("GetConnectionId", ())
        .await
        .expect("GetConnectionId");
    assert_eq!(id, ann.id);

    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "deliveries did not resume");
        let _ = ann
            .connection
            .invoke::<serde_json::Value>("SendMessage", ("ann", "after"))
            .await;
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(300), bob.events.recv()).await
        {
            assert_eq!(event, "ReceiveMessage ann after");
            break;
        }
    }
    assert!(
        b.backplane.status().iter().all(|hub| hub.subscribed),
        "subscriptions restored"
    );
}

/// A classic SignalR 2.x client over long polling, by hand (negotiate, connect, start, send,
/// poll), enough to see what reaches it.
struct ClassicClient {
    http: reqwest::Client,
    base: String,
    query: String,
    cursor: String,
}

impl ClassicClient {
    async fn open(server: &Server, user: &str) -> ClassicClient {
        let http = reqwest::Client::new();
        let base = format!("http://{}/signalr", server.addr);
        let data = "%5B%7B%22name%22%3A%22chathub%22%7D%5D";
        let negotiate: serde_json::Value = serde_json::from_str(
            &http
                .get(format!(
                    "{base}/negotiate?clientProtocol=1.5&connectionData={data}&user={user}"
                ))
                .send()
                .await
                .expect("negotiate")
                .text()
                .await
                .expect("negotiate body"),
        )
        .expect("negotiate JSON");
        let token = negotiate["ConnectionToken"].as_str().expect("token");
        let token: String = url_encode(token);
        let query = format!(
            "transport=longPolling&clientProtocol=1.5&connectionToken={token}&connectionData={data}&user={user}"
        );
        let mut client = ClassicClient {
            http,
            base,
            query,
            cursor: String::new(),
        };
        let init = client.post("connect", "").await;
        client.cursor = init["C"].as_str().expect("init cursor").to_owned();
        let started = client.get("start").await;
        assert_eq!(started, serde_json::json!({"Response": "started"}));
        client
    }

    async fn get(&self, action: &str) -> serde_json::Value {
        let url = format!("{}/{action}?{}", self.base, self.query);
        let text = within(action, async {
            self.http.get(url).send().await.expect(action).text().await
        })
        .await
        .expect("body");
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{action}: {text}"))
    }

    async fn post(&self, action: &str, form: &str) -> serde_json::Value {
        let mut url = format!("{}/{action}?{}", self.base, self.query);
        if !self.cursor.is_empty() {
            url.push_str(&format!("&messageId={}", url_encode(&self.cursor)));
        }
        let text = within(action, async {
            self.http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_owned())
                .send()
                .await
                .expect(action)
                .text()
                .await
        })
        .await
        .expect("body");
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{action}: {text}"))
    }

    /// Calls hub method `method` of `ChatHub`.
    async fn call(&self, method: &str, args: serde_json::Value) -> serde_json::Value {
        let data = serde_json::json!({"H": "chathub", "M": method, "A": args, "I": 0}).to_string();
        self.post("send", &format!("data={}", url_encode(&data)))
            .await
    }

    /// Polls until a client-method call arrives; returns it.
    async fn next(&mut self) -> serde_json::Value {
        loop {
            let envelope = self.post("poll", "").await;
            if let Some(cursor) = envelope["C"].as_str() {
                self.cursor = cursor.to_owned();
            }
            if let Some(first) = envelope["M"].as_array().and_then(|m| m.first()) {
                return first.clone();
            }
        }
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Classic SignalR 2.x clients are on the backplane too: a jQuery-style client on one server
/// gets what ASP.NET Core clients on another send to all, to its group and to its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_clients_are_reachable_across_servers() {
    init_tracing();
    let Some(redis) = Redis::start() else { return };
    let a = Server::start(&redis, |o| o).await;
    let b = Server::start(&redis, |o| o).await;
    a.ready().await;
    b.ready().await;
    let mut classic = ClassicClient::open(&a, "cls").await;
    let joined = classic.call("JoinGroup", serde_json::json!(["room"])).await;
    assert_eq!(joined["I"], "0", "JoinGroup answered: {joined}");
    let bob = Client::connect(&b, "bob", HubProtocol::MessagePack).await;

    bob.call("SendMessage", vec!["bob", "hello-classic"]).await;
    assert_eq!(
        within("all", classic.next()).await,
        serde_json::json!({"H": "ChatHub", "M": "ReceiveMessage", "A": ["bob", "hello-classic"]})
    );
    bob.call("SendToGroup", vec!["room", "hi-room"]).await;
    assert_eq!(
        within("group", classic.next()).await,
        serde_json::json!({"H": "ChatHub", "M": "GroupMessage", "A": ["room", "hi-room"]})
    );
    bob.call("SendToUser", vec!["cls", "hey-cls"]).await;
    assert_eq!(
        within("user", classic.next()).await,
        serde_json::json!({"H": "ChatHub", "M": "UserMessage", "A": ["hey-cls"]})
    );
}
