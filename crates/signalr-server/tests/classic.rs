//! The classic SignalR 2.x front door (`classic_router`) driven over raw HTTP and raw WebSocket
//! frames: bad input gets SignalR 2.4's answer and leaves the server healthy (a connection that
//! was open carries on, a fresh one works, nothing panicked); the per-connection message buffer
//! stays within its bounds; the lifetime events run when SignalR 2.4 runs them; keep-alives and
//! timeouts come on time; Core and classic clients of one hub reach each other.
//!
//! Options are short (keep-alives of a few hundred milliseconds, a disconnect timeout of one
//! second) so the whole file runs in a few seconds.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{HttpResponse, assert_no_panics, install_panic_hook, send, within, within_for};
use serde_json::{Map, Value, json};
use signalr_server::{
    Hub, HubCallerContext, HubError, TransportType,
    auth::{AuthError, AuthRequest, User},
    classic::{ClassicOptions, classic_router_with},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UNKNOWN_TRANSPORT: &str = "Protocol error: Unknown transport.";
const MISSING_TOKEN: &str = "Protocol error: Missing connection token.";
const BAD_TOKEN: &str = "The ConnectionId is in the incorrect format.";
const USER_CHANGED: &str = "Unrecognized user identity. The user identity cannot change during an active SignalR connection.";

/// `connectionData` naming the test hub, as jQuery sends it (lower case).
const TEST_HUB: &str = r#"[{"name":"testhub"}]"#;

/// A cursor no server run of ours issues (the shape the differential harness sends).
const UNKNOWN_CURSOR: &str = "d-0000-garbage,1|Z,9";

const KIB: usize = 1024;

// ---------------------------------------------------------------------------------------------
// The test server
// ---------------------------------------------------------------------------------------------

/// The lifetime events the hub saw: `connected:<id>`, `reconnected:<id>` and
/// `disconnected:<id>:<stop_called>`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn push(&self, event: String) {
        self.0.lock().expect("events lock").push(event);
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().expect("events lock").clone()
    }

    fn count(&self, event: &str) -> usize {
        self.all().iter().filter(|e| *e == event).count()
    }

    /// The events about connection `id`.
    fn of(&self, id: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|e| e.split(':').nth(1) == Some(id))
            .collect()
    }

    /// Waits until `event` happened, at most `limit`.
    async fn wait_for(&self, event: &str, limit: Duration) {
        within_for(limit, &format!("the hub event {event}"), async {
            while self.count(event) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// The hub: `TestHub`, whose users are the `x-user` header (anonymous without one).
fn test_hub(events: &Events) -> Hub {
    let (connected, reconnected, disconnected) = (events.clone(), events.clone(), events.clone());
    Hub::builder()
        .name("TestHub")
        .authenticator(|request: AuthRequest<'_>| {
            let Some(name) = request.headers.get("x-user") else {
                return Ok(None);
            };
            let name = name
                .to_str()
                .map_err(|_| AuthError("x-user is not text".into()))?;
            let mut claims = Map::new();
            claims.insert("name".into(), Value::from(name));
            Ok(Some(User::authenticated(claims)))
        })
        .on_connected(move |caller: HubCallerContext| {
            let events = connected.clone();
            async move { events.push(format!("connected:{}", caller.connection_id())) }
        })
        .on_reconnected(move |caller: HubCallerContext| {
            let events = reconnected.clone();
            async move { events.push(format!("reconnected:{}", caller.connection_id())) }
        })
        .on_disconnected(move |caller: HubCallerContext, _error: Option<String>| {
            let events = disconnected.clone();
            async move {
                events.push(format!(
                    "disconnected:{}:{}",
                    caller.connection_id(),
                    caller.stop_called()
                ));
            }
        })
        .method(
            "Echo",
            |_: HubCallerContext, value: Value| async move { value },
        )
        .method("GetConnectionId", |caller: HubCallerContext| async move {
            caller.connection_id().to_owned()
        })
        .method("GetUser", |caller: HubCallerContext| async move {
            caller.user().name()
        })
        .method(
            "JoinGroup",
            |caller: HubCallerContext, group: String| async move {
                caller
                    .groups()
                    .add_to_group(caller.connection_id(), &group)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToGroup",
            |caller: HubCallerContext, group: String, message: String| async move {
                caller
                    .clients()
                    .group(group.clone())
                    .send("groupMessage", (group, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToAll",
            |caller: HubCallerContext, message: String| async move {
                caller.clients().all().send("broadcast", (message,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .build()
}

/// A server with the test hub at `/signalr` for classic clients and at `/hub` for Core ones.
struct Server {
    addr: SocketAddr,
    hub: Hub,
    http: reqwest::Client,
    events: Events,
    options: ClassicOptions,
}

/// Options for tests: keep-alives off (so frames are only what a test expects), timeouts short.
fn quiet() -> ClassicOptions {
    ClassicOptions {
        keep_alive: None,
        connection_timeout: Duration::from_secs(4),
        ..ClassicOptions::default()
    }
}

async fn serve(options: ClassicOptions) -> Server {
    install_panic_hook();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let events = Events::default();
    let hub = test_hub(&events);
    let app = axum::Router::new()
        .nest("/hub", hub.router())
        .nest("/signalr", classic_router_with(options.clone(), [&hub]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(std::future::IntoFuture::into_future(signalr_server::serve(
        listener, app,
    )));
    Server {
        addr,
        hub,
        http: reqwest::Client::new(),
        events,
        options,
    }
}

impl Server {
    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// A request to `path_and_query` as `user` (the `x-user` header), with a form body.
    async fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        user: Option<&str>,
        body: Option<String>,
    ) -> HttpResponse {
        let mut request = self.http.request(method.clone(), self.url(path_and_query));
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        send(&format!("{method} {path_and_query}"), request).await
    }

    async fn negotiate_raw(&self, connection_data: &str, user: Option<&str>) -> HttpResponse {
        let query = encode(&[
            ("clientProtocol", "2.1"),
            ("connectionData", connection_data),
        ]);
        self.request(
            reqwest::Method::GET,
            &format!("/signalr/negotiate?{query}"),
            user,
            None,
        )
        .await
    }

    /// Negotiates for the test hub as `user`.
    async fn negotiate(&self, user: Option<&str>) -> Session {
        let response = self.negotiate_raw(TEST_HUB, user).await;
        assert_eq!(response.status, 200, "negotiate: {response:?}");
        let json = response.json();
        Session {
            id: json["ConnectionId"]
                .as_str()
                .expect("ConnectionId")
                .to_owned(),
            token: json["ConnectionToken"]
                .as_str()
                .expect("ConnectionToken")
                .to_owned(),
            user: user.map(str::to_owned),
        }
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn encode(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

/// A negotiated connection: its id, token and user.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    token: String,
    user: Option<String>,
}

impl Session {
    /// The query of a transport request: transport, token, the test hub, and `extra`.
    fn query(&self, transport: &str, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![
            ("transport", transport),
            ("clientProtocol", "2.1"),
            ("connectionToken", self.token.as_str()),
            ("connectionData", TEST_HUB),
        ];
        pairs.extend_from_slice(extra);
        encode(&pairs)
    }

    /// `POST /signalr/<action>` on `transport` with a form body.
    async fn post(
        &self,
        server: &Server,
        action: &str,
        transport: &str,
        body: &[(&str, &str)],
    ) -> HttpResponse {
        let path = format!("/signalr/{action}?{}", self.query(transport, &[]));
        server
            .request(
                reqwest::Method::POST,
                &path,
                self.user.as_deref(),
                Some(encode(body)),
            )
            .await
    }

    /// `GET /signalr/start`.
    async fn start(&self, server: &Server, transport: &str) -> HttpResponse {
        let path = format!("/signalr/start?{}", self.query(transport, &[]));
        server
            .request(reqwest::Method::GET, &path, self.user.as_deref(), None)
            .await
    }
}

/// A hub invocation as classic clients write it.
fn invocation(method: &str, arguments: Value, id: &str) -> String {
    json!({"H": "testhub", "M": method, "A": arguments, "I": id}).to_string()
}

/// Asserts SignalR 2.4's protocol-error answer: 400, the text, no content type, `nosniff`.
#[track_caller]
fn assert_protocol_error(response: &HttpResponse, text: &str, what: &str) {
    assert_eq!(
        (response.status, response.body.as_str()),
        (400, text),
        "{what}: {response:?}"
    );
    assert_eq!(response.content_type, None, "{what}: {response:?}");
    assert_nosniff(response, what);
}

#[track_caller]
fn assert_nosniff(response: &HttpResponse, what: &str) {
    assert_eq!(
        response
            .headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "{what}: {response:?}"
    );
}

/// Asserts the real server's answer to what it cannot make sense of: 500, empty, unmarked.
#[track_caller]
fn assert_server_error(response: &HttpResponse, what: &str) {
    assert_eq!(
        (response.status, response.body.as_str()),
        (500, ""),
        "{what}: {response:?}"
    );
    assert!(
        response.headers.get("x-content-type-options").is_none(),
        "{what}: a 500 is not marked nosniff: {response:?}"
    );
}

/// The messages (`M`) of an envelope.
fn messages(envelope: &Value) -> Vec<Value> {
    envelope["M"].as_array().cloned().unwrap_or_default()
}

/// A client-method call as it appears in an envelope.
fn client_call(method: &str, arguments: Value) -> Value {
    json!({"H": "TestHub", "M": method, "A": arguments})
}

// ---------------------------------------------------------------------------------------------
// Long polling
// ---------------------------------------------------------------------------------------------

/// A started long-polling connection.
struct Lp {
    session: Session,
    /// The newest cursor received.
    cursor: String,
}

impl Lp {
    /// Negotiates, connects (the init message) and starts.
    async fn open(server: &Server, user: Option<&str>) -> Lp {
        let lp = Lp::connect(server, user).await;
        let started = lp.session.start(server, "longPolling").await;
        assert_eq!(started.status, 200, "start: {started:?}");
        assert_eq!(started.json(), json!({"Response": "started"}));
        lp
    }

    /// Negotiates and connects, without `/start`.
    async fn connect(server: &Server, user: Option<&str>) -> Lp {
        let session = server.negotiate(user).await;
        let init = session.post(server, "connect", "longPolling", &[]).await;
        assert_eq!(init.status, 200, "connect: {init:?}");
        let init = init.json();
        assert_eq!(init["S"], json!(1), "init message: {init}");
        assert_eq!(messages(&init), Vec::<Value>::new(), "init message: {init}");
        let cursor = init["C"].as_str().expect("init cursor").to_owned();
        Lp { session, cursor }
    }

    /// `POST /send` with `data`.
    async fn send(&self, server: &Server, data: &str) -> HttpResponse {
        self.session
            .post(server, "send", "longPolling", &[("data", data)])
            .await
    }

    /// Calls `method` and returns the hub result.
    async fn call(&self, server: &Server, method: &str, arguments: Value, id: &str) -> Value {
        let response = self.send(server, &invocation(method, arguments, id)).await;
        assert_eq!(response.status, 200, "{method}: {response:?}");
        response.json()
    }

    async fn assert_echo(&self, server: &Server, value: &str, id: &str) {
        let result = self.call(server, "Echo", json!([value]), id).await;
        assert_eq!(result, json!({"R": value, "I": id}), "Echo on long polling");
    }
}

/// A fresh long-polling connection must work after whatever a test did.
async fn assert_fresh_connection_works(server: &Server) {
    let lp = Lp::open(server, None).await;
    lp.assert_echo(server, "fresh", "0").await;
    let mut ws = WsConn::open(server, None).await;
    ws.assert_echo("fresh", "0").await;
}

/// The end of every bad-input test: the connection that was open meanwhile carries on, a fresh
/// one works, nothing panicked.
async fn finish(server: &Server, bystander: &mut WsConn) {
    bystander.assert_echo("still here", "990").await;
    assert_fresh_connection_works(server).await;
    assert_no_panics();
}

// ---------------------------------------------------------------------------------------------
// A raw WebSocket client
// ---------------------------------------------------------------------------------------------

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
const MASK: [u8; 4] = [0x5c, 0x21, 0xe3, 0x90];

/// Most bytes a test reads from one socket; a server that sends more fails the test.
const MAX_READ: usize = 1024 * KIB;

/// A client frame: FIN, opcode, masked payload.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 | opcode } else { opcode });
    match u8::try_from(payload.len()) {
        Ok(len) if len < 126 => out.push(0x80 | len),
        _ => match u16::try_from(payload.len()) {
            Ok(len) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Err(_) => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        },
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// What the server sent on a socket.
#[derive(Debug, PartialEq)]
enum WsEvent {
    Text(String),
    Binary(Vec<u8>),
    /// A Close frame with its code (`None`: no code).
    Close(Option<u16>),
    /// The TCP connection ended (EOF or reset).
    End,
    Timeout,
}

struct RawWs {
    stream: TcpStream,
    read: Vec<u8>,
}

/// The answer to a WebSocket upgrade: the socket, or the refusal's status and body.
enum Upgrade {
    Open(RawWs),
    Refused(u16, String),
}

impl RawWs {
    async fn open(addr: SocketAddr, path_and_query: &str, user: Option<&str>) -> Upgrade {
        let mut stream = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        let user_header = user.map_or_else(String::new, |u| format!("x-user: {u}\r\n"));
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{user_header}\r\n"
        );
        within(
            "write the upgrade request",
            stream.write_all(request.as_bytes()),
        )
        .await
        .expect("write the upgrade request");
        let mut read = Vec::with_capacity(4096);
        let head_end = within("the upgrade response", async {
            loop {
                if let Some(pos) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                    return pos + 4;
                }
                assert!(read.len() < 64 * KIB, "response head too long");
                let n = stream.read_buf(&mut read).await.expect("read");
                assert!(n > 0, "connection closed during the upgrade");
            }
        })
        .await;
        let head = String::from_utf8_lossy(&read[..head_end]).into_owned();
        read.drain(..head_end);
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        if status == 101 {
            return Upgrade::Open(RawWs { stream, read });
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        within("the refusal's body", async {
            while read.len() < length.min(64 * KIB) {
                if stream.read_buf(&mut read).await.unwrap_or(0) == 0 {
                    break;
                }
            }
        })
        .await;
        Upgrade::Refused(status, String::from_utf8_lossy(&read).into_owned())
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        // The server may already have dropped the socket; what it answered is what tests check.
        let _ = within("write a frame", self.stream.write_all(bytes)).await;
    }

    async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&client_frame(fin, opcode, payload)).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.send_frame(true, TEXT, text.as_bytes()).await;
    }

    /// The next whole message (fragments joined, pings and pongs skipped), the end of TCP or a
    /// timeout.
    async fn event(&mut self, limit: Duration) -> WsEvent {
        let deadline = tokio::time::Instant::now() + limit;
        let mut message: Option<(u8, Vec<u8>)> = None;
        loop {
            while let Some((fin, opcode, payload)) = self.parse() {
                match opcode {
                    PING | PONG => {}
                    CLOSE => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        return WsEvent::Close(code);
                    }
                    CONTINUATION => {
                        let (_, data) = message.as_mut().expect("a continuation without a start");
                        data.extend_from_slice(&payload);
                    }
                    opcode => message = Some((opcode, payload)),
                }
                if !fin {
                    continue;
                }
                if let Some((opcode, data)) = message.take() {
                    return if opcode == TEXT {
                        WsEvent::Text(String::from_utf8(data).expect("text frames are UTF-8"))
                    } else {
                        WsEvent::Binary(data)
                    };
                }
            }
            assert!(self.read.len() < MAX_READ, "the server sent too much");
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read)).await {
                Err(_) => return WsEvent::Timeout,
                Ok(Ok(0) | Err(_)) => return WsEvent::End,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// One server frame out of the read buffer: (FIN, opcode, payload).
    fn parse(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let buf = &self.read;
        if buf.len() < 2 {
            return None;
        }
        assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
        let (len, header) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&buf[2..10]);
                (usize::try_from(u64::from_be_bytes(be)).expect("length"), 10)
            }
            126 | 127 => return None,
            len => (usize::from(len), 2),
        };
        if buf.len() < header + len {
            return None;
        }
        let frame = (
            buf[0] & 0x80 != 0,
            buf[0] & 0x0f,
            buf[header..header + len].to_vec(),
        );
        self.read.drain(..header + len);
        Some(frame)
    }

    /// Everything until TCP ends or `limit` passes: the texts, the Close code, whether TCP ended.
    async fn ending(&mut self, limit: Duration) -> Ending {
        let deadline = Instant::now() + limit;
        let mut ending = Ending::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.event(left).await {
                WsEvent::Text(text) => ending.texts.push(text),
                WsEvent::Binary(data) => ending.texts.push(format!("<binary {data:?}>")),
                WsEvent::Close(code) => ending.close = Some(code),
                WsEvent::End => {
                    ending.tcp_ended = true;
                    return ending;
                }
                WsEvent::Timeout => return ending,
            }
        }
    }
}

#[derive(Debug, Default)]
struct Ending {
    texts: Vec<String>,
    close: Option<Option<u16>>,
    tcp_ended: bool,
}

/// A started classic WebSocket connection.
struct WsConn {
    session: Session,
    ws: RawWs,
    /// The newest cursor and groups token received.
    cursor: String,
    groups: Option<String>,
    /// Envelopes received while waiting for something else.
    envelopes: std::collections::VecDeque<Value>,
}

impl WsConn {
    /// Negotiates, connects (the init message) and starts.
    async fn open(server: &Server, user: Option<&str>) -> WsConn {
        let session = server.negotiate(user).await;
        let ws = WsConn::connect(server, session).await;
        let started = ws.session.start(server, "webSockets").await;
        assert_eq!(started.status, 200, "start: {started:?}");
        ws
    }

    /// `/connect` of `session` over WebSockets, reading the init message; no `/start`.
    async fn connect(server: &Server, session: Session) -> WsConn {
        let path = format!("/signalr/connect?{}", session.query("webSockets", &[]));
        let Upgrade::Open(mut ws) = RawWs::open(server.addr, &path, session.user.as_deref()).await
        else {
            panic!("WebSocket connect refused");
        };
        let init = match ws.event(Duration::from_secs(5)).await {
            WsEvent::Text(text) => serde_json::from_str::<Value>(&text).expect("init is JSON"),
            other => panic!("expected the init message, got {other:?}"),
        };
        assert_eq!(init["S"], json!(1), "init message: {init}");
        let cursor = init["C"].as_str().expect("init cursor").to_owned();
        WsConn {
            session,
            ws,
            cursor,
            groups: None,
            envelopes: Default::default(),
        }
    }

    /// `/reconnect` of `session` over WebSockets with `extra` (messageId, groupsToken).
    async fn reconnect(server: &Server, session: Session, extra: &[(&str, &str)]) -> WsConn {
        let path = format!("/signalr/reconnect?{}", session.query("webSockets", extra));
        let Upgrade::Open(ws) = RawWs::open(server.addr, &path, session.user.as_deref()).await
        else {
            panic!("WebSocket reconnect refused");
        };
        WsConn {
            session,
            ws,
            cursor: String::new(),
            groups: None,
            envelopes: Default::default(),
        }
    }

    /// The next JSON frame that is not a keep-alive, or `None` after `limit`; envelopes update
    /// the cursor and groups token.
    async fn next_json(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ws.event(left).await {
                WsEvent::Text(text) if text == "{}" => {}
                WsEvent::Text(text) => {
                    let value: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|err| panic!("frame is not JSON ({err}): {text}"));
                    if let Some(cursor) = value["C"].as_str() {
                        cursor.clone_into(&mut self.cursor);
                    }
                    if let Some(groups) = value["G"].as_str() {
                        self.groups = Some(groups.to_owned());
                    }
                    return Some(value);
                }
                WsEvent::Timeout => return None,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Sends `text`, then returns the hub result whose `I` is `id`; envelopes meanwhile are kept.
    async fn result(&mut self, text: &str, id: &str) -> Value {
        self.ws.send_text(text).await;
        loop {
            let value = self
                .next_json(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("no hub result for {text}"));
            if value.get("C").is_some() {
                self.envelopes.push_back(value);
            } else {
                assert_eq!(value["I"], json!(id), "a result of another call: {value}");
                return value;
            }
        }
    }

    async fn call(&mut self, method: &str, arguments: Value, id: &str) -> Value {
        self.result(&invocation(method, arguments, id), id).await
    }

    async fn assert_echo(&mut self, value: &str, id: &str) {
        let result = self.call("Echo", json!([value]), id).await;
        assert_eq!(result, json!({"R": value, "I": id}), "Echo on WebSockets");
    }

    /// The next envelope, or `None` after `limit`.
    async fn envelope(&mut self, limit: Duration) -> Option<Value> {
        if let Some(envelope) = self.envelopes.pop_front() {
            return Some(envelope);
        }
        let value = self.next_json(limit).await?;
        assert!(value.get("C").is_some(), "expected an envelope: {value}");
        Some(value)
    }

    /// The client-method calls received within `limit`.
    async fn calls_within(&mut self, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut calls = Vec::new();
        while let Some(envelope) = self
            .envelope(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            calls.extend(messages(&envelope));
        }
        calls
    }

    /// Waits for an envelope carrying client-method calls and returns them.
    async fn next_calls(&mut self) -> Vec<Value> {
        loop {
            let envelope = self
                .envelope(Duration::from_secs(5))
                .await
                .expect("an envelope with messages");
            let calls = messages(&envelope);
            if !calls.is_empty() {
                return calls;
            }
        }
    }

    /// Joins `group` and waits for the groups token that says so.
    async fn join(&mut self, group: &str, id: &str) {
        let result = self.call("JoinGroup", json!([group]), id).await;
        assert_eq!(result, json!({"I": id}), "JoinGroup");
        while self.groups.is_none() {
            self.envelope(Duration::from_secs(5))
                .await
                .expect("the envelope with the groups token");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: transport, token, user
// ---------------------------------------------------------------------------------------------

/// Query parameters.
type Query<'a> = Vec<(&'a str, &'a str)>;

const ACTIONS: [&str; 6] = ["connect", "reconnect", "poll", "send", "start", "abort"];

/// Every transport action without a transport, with an unknown one, without a token and with
/// a garbage, tampered or truncated token gets SignalR 2.4's 400 and text; the transport name
/// ignores case; a WebSocket upgrade without a token gets the same 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_and_token_are_checked_on_every_action() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;
    let session = server.negotiate(None).await;
    let token = session.token.clone();
    let mid = token.len() / 2;
    let flipped = if token.as_bytes()[mid] == b'A' {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{flipped}{}", &token[..mid], &token[mid + 1..]);
    let truncated = token[..token.len() - 4].to_owned();
    let hubs = ("connectionData", TEST_HUB);
    let cases: Vec<(&str, Query<'_>, &str)> = vec![
        (
            "no transport",
            vec![("connectionToken", token.as_str()), hubs],
            UNKNOWN_TRANSPORT,
        ),
        (
            "unknown transport",
            vec![
                ("transport", "carrierPigeon"),
                ("connectionToken", token.as_str()),
                hubs,
            ],
            UNKNOWN_TRANSPORT,
        ),
        (
            "foreverFrame (not served)",
            vec![
                ("transport", "foreverFrame"),
                ("connectionToken", token.as_str()),
                hubs,
            ],
            UNKNOWN_TRANSPORT,
        ),
        (
            "no token",
            vec![("transport", "longPolling"), hubs],
            MISSING_TOKEN,
        ),
        (
            "garbage token",
            vec![
                ("transport", "longPolling"),
                ("connectionToken", "abc"),
                hubs,
            ],
            BAD_TOKEN,
        ),
        (
            "tampered token",
            vec![
                ("transport", "longPolling"),
                ("connectionToken", tampered.as_str()),
                hubs,
            ],
            BAD_TOKEN,
        ),
        (
            "truncated token",
            vec![
                ("transport", "longPolling"),
                ("connectionToken", truncated.as_str()),
                hubs,
            ],
            BAD_TOKEN,
        ),
    ];
    for (what, query, text) in &cases {
        for action in ACTIONS {
            let path = format!("/signalr/{action}?{}", encode(query));
            let response = server
                .request(reqwest::Method::POST, &path, None, Some(String::new()))
                .await;
            assert_protocol_error(&response, text, &format!("{what}, POST /{action}"));
        }
    }
    // The real token connects as usual.
    let init = session.post(&server, "connect", "LONGPOLLING", &[]).await;
    assert_eq!(init.status, 200, "transport names ignore case: {init:?}");
    assert_eq!(init.json()["S"], json!(1));

    // A WebSocket upgrade without a token, or with a garbage one.
    let no_token = encode(&[("transport", "webSockets"), hubs]);
    match RawWs::open(server.addr, &format!("/signalr/connect?{no_token}"), None).await {
        Upgrade::Refused(status, body) => assert_eq!((status, body.as_str()), (400, MISSING_TOKEN)),
        Upgrade::Open(_) => panic!("a WebSocket without a token was accepted"),
    }
    let garbage = encode(&[
        ("transport", "webSockets"),
        ("connectionToken", "abc"),
        hubs,
    ]);
    match RawWs::open(server.addr, &format!("/signalr/connect?{garbage}"), None).await {
        Upgrade::Refused(status, body) => assert_eq!((status, body.as_str()), (400, BAD_TOKEN)),
        Upgrade::Open(_) => panic!("a WebSocket with a garbage token was accepted"),
    }
    // A GET /connect on WebSockets without the upgrade headers.
    let path = format!("/signalr/connect?{}", session.query("webSockets", &[]));
    let response = server
        .request(reqwest::Method::GET, &path, None, None)
        .await;
    assert_protocol_error(&response, "Not a valid web socket request.", "no upgrade");
    finish(&server, &mut bystander).await;
}

/// A transport the options leave out is an unknown transport; negotiate says whether to try
/// WebSockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_left_out_of_the_options_are_unknown() {
    let server = serve(ClassicOptions {
        transports: vec![TransportType::LongPolling],
        ..quiet()
    })
    .await;
    let negotiate = server.negotiate_raw(TEST_HUB, None).await;
    assert_eq!(negotiate.json()["TryWebSockets"], json!(false));
    let session = server.negotiate(None).await;
    let path = format!("/signalr/connect?{}", session.query("webSockets", &[]));
    match RawWs::open(server.addr, &path, None).await {
        Upgrade::Refused(status, body) => {
            assert_eq!((status, body.as_str()), (400, UNKNOWN_TRANSPORT));
        }
        Upgrade::Open(_) => panic!("WebSockets are off, yet the upgrade was accepted"),
    }
    let response = session
        .post(&server, "connect", "serverSentEvents", &[])
        .await;
    assert_protocol_error(&response, UNKNOWN_TRANSPORT, "SSE left out");
    let lp = Lp::open(&server, None).await;
    lp.assert_echo(&server, "lp", "1").await;
    assert_no_panics();
}

/// A connection token is bound to the user it was issued to: another user (or nobody) using it
/// gets 403 and SignalR 2.4's text, on every action and on the WebSocket upgrade; the rightful
/// user goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_user_is_403() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, Some("carol")).await;
    let alice = server.negotiate(Some("alice")).await;
    for (who, user) in [("bob", Some("bob")), ("anonymous", None)] {
        let thief = Session {
            user: user.map(str::to_owned),
            ..alice.clone()
        };
        for action in ACTIONS {
            let response = thief.post(&server, action, "longPolling", &[]).await;
            assert_eq!(
                (response.status, response.body.as_str()),
                (403, USER_CHANGED),
                "{who} with alice's token, POST /{action}: {response:?}"
            );
        }
        let path = format!("/signalr/connect?{}", thief.query("webSockets", &[]));
        match RawWs::open(server.addr, &path, user).await {
            Upgrade::Refused(status, body) => {
                assert_eq!((status, body.as_str()), (403, USER_CHANGED), "{who}");
            }
            Upgrade::Open(_) => panic!("{who} opened a WebSocket with alice's token"),
        }
    }
    // An anonymous token is not alice's either.
    let anonymous = Session {
        user: Some("alice".into()),
        ..server.negotiate(None).await
    };
    let response = anonymous.post(&server, "connect", "longPolling", &[]).await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (403, USER_CHANGED)
    );
    // Nothing of that made or started a connection.
    assert!(
        server.events.of(&alice.id).is_empty(),
        "{:?}",
        server.events.all()
    );

    let init = alice.post(&server, "connect", "longPolling", &[]).await;
    assert_eq!(init.status, 200, "{init:?}");
    assert_eq!(alice.start(&server, "longPolling").await.status, 200);
    let lp = Lp {
        session: alice,
        cursor: String::new(),
    };
    let user = lp.call(&server, "GetUser", json!([]), "1").await;
    assert_eq!(user, json!({"R": "alice", "I": "1"}));
    finish(&server, &mut bystander).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input: connectionData, send data, caller state
// ---------------------------------------------------------------------------------------------

const BAD_CONNECTION_DATA: [&str; 10] = [
    "garbage",
    "{}",
    "[{}]",
    "[1]",
    r#"[{"name":""}]"#,
    r#"[{"name":1}]"#,
    r#"[{"name":"nosuchhub"}]"#,
    r#"[{"name":"testhub"},{"name":"nosuchhub"}]"#,
    r#"[{"name":"testhub"},{"name":"testhub"}]"#,
    r#"[{"name":"testhub"},{"name":"TestHub"}]"#,
];

/// Malformed `connectionData`, an unknown hub and a hub named twice get an empty 500 on
/// negotiate and on every transport request; absent, empty and `[]` connectionData are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connection_data_is_an_empty_500() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;
    let session = server.negotiate(None).await;
    for data in BAD_CONNECTION_DATA {
        let response = server.negotiate_raw(data, None).await;
        assert_server_error(&response, &format!("negotiate with {data}"));
        for action in ["connect", "start", "send", "poll"] {
            let query = encode(&[
                ("transport", "longPolling"),
                ("connectionToken", &session.token),
                ("connectionData", data),
            ]);
            let response = server
                .request(
                    reqwest::Method::POST,
                    &format!("/signalr/{action}?{query}"),
                    None,
                    Some(encode(&[("data", &invocation("Echo", json!(["x"]), "0"))])),
                )
                .await;
            assert_server_error(&response, &format!("POST /{action} with {data}"));
        }
    }
    assert!(server.events.of(&session.id).is_empty());
    for data in ["", "[]", "null"] {
        let response = server.negotiate_raw(data, None).await;
        assert_eq!(
            response.status, 200,
            "negotiate with {data:?}: {response:?}"
        );
    }
    finish(&server, &mut bystander).await;
}

/// `/send` data the server cannot read as a hub invocation gets an empty 500 (missing `A` is a
/// failed call instead); the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_send_data_is_an_empty_500() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;
    let lp = Lp::open(&server, None).await;
    let cases: [(&str, Option<&str>); 11] = [
        ("data={}", Some("{}")),
        ("data= (empty)", Some("")),
        ("data=not json", Some("not json")),
        ("data=[1,2]", Some("[1,2]")),
        (
            "A not an array",
            Some(r#"{"H":"testhub","M":"Echo","A":"x","I":"0"}"#),
        ),
        ("no M", Some(r#"{"H":"testhub","A":["x"],"I":"0"}"#)),
        ("no H", Some(r#"{"M":"Echo","A":["x"],"I":"0"}"#)),
        (
            "unknown hub",
            Some(r#"{"H":"nosuchhub","M":"Echo","A":["x"],"I":"0"}"#),
        ),
        ("truncated JSON", Some(r#"{"H":"testhub","M":"Ech"#)),
        ("invalid UTF-8 (percent-encoded)", None),
        ("no data field", None),
    ];
    for (what, data) in cases {
        let body = match (what, data) {
            (_, Some(data)) => encode(&[("data", data)]),
            ("no data field", None) => "other=1".to_owned(),
            _ => "data=%FF%FE%7B".to_owned(),
        };
        let path = format!("/signalr/send?{}", lp.session.query("longPolling", &[]));
        let response = server
            .request(reqwest::Method::POST, &path, None, Some(body))
            .await;
        assert_server_error(&response, what);
    }
    let path = format!("/signalr/send?{}", lp.session.query("longPolling", &[]));
    let response = server
        .request(reqwest::Method::POST, &path, None, Some(String::new()))
        .await;
    assert_server_error(&response, "empty body");
    // Without A the call happens, with no arguments: Echo takes one, so it fails.
    let no_arguments = lp
        .send(&server, r#"{"H":"testhub","M":"Echo","I":"0"}"#)
        .await;
    assert_eq!(no_arguments.status, 200, "{no_arguments:?}");
    assert_eq!(
        no_arguments.json(),
        json!({"I": "0", "E": "There was an error invoking Hub method 'testhub.Echo'."})
    );
    lp.assert_echo(&server, "after", "9").await;
    finish(&server, &mut bystander).await;
}

/// Caller state of 4,096 characters of JSON is fine; one more fails the call: 500 on `/send`,
/// no answer at all on a WebSocket (which carries on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_state_over_4096_characters_is_refused() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;
    // {"k":"xx…x"} is 8 characters plus the x's.
    let state = |length: usize| json!({"k": "x".repeat(length - 8)});
    assert_eq!(state(4096).to_string().len(), 4096);
    let call = |length: usize, id: &str| {
        json!({"H": "testhub", "M": "Echo", "A": ["s"], "I": id, "S": state(length)}).to_string()
    };

    let lp = Lp::open(&server, None).await;
    let fits = lp.send(&server, &call(4096, "4096")).await;
    assert_eq!(fits.status, 200, "{fits:?}");
    assert_eq!(fits.json(), json!({"R": "s", "I": "4096"}));
    let over = lp.send(&server, &call(4097, "4097")).await;
    assert_server_error(&over, "caller state of 4097 characters on /send");
    lp.assert_echo(&server, "after", "9").await;

    let mut ws = WsConn::open(&server, None).await;
    let fits = ws.result(&call(4096, "4096"), "4096").await;
    assert_eq!(fits, json!({"R": "s", "I": "4096"}));
    ws.ws.send_text(&call(4097, "4097")).await;
    // Calls are answered in order: the next answer is the Echo's, so 4097 got none.
    ws.assert_echo("after", "9").await;
    finish(&server, &mut bystander).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input: WebSocket frames
// ---------------------------------------------------------------------------------------------

/// An Echo invocation of exactly `size` bytes.
fn echo_of_size(size: usize, id: &str) -> String {
    let empty = invocation("Echo", json!([""]), id);
    let text = invocation("Echo", json!(["x".repeat(size - empty.len())]), id);
    assert_eq!(text.len(), size);
    text
}

/// A message of exactly 64 KiB (in one frame or two) is answered and the socket stays; one byte
/// more ends the TCP connection without a Close frame or an answer, as SignalR 2.4 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_over_64_kib_end_the_socket() {
    let server = serve(quiet()).await;
    assert_eq!(server.options.max_incoming_message_size, 64 * KIB);
    let mut bystander = WsConn::open(&server, None).await;
    for fragments in [1, 2] {
        let mut ws = WsConn::open(&server, None).await;
        let text = echo_of_size(64 * KIB, "0");
        let (first, second) = text.as_bytes().split_at(text.len() / fragments);
        if fragments == 1 {
            ws.ws.send_frame(true, TEXT, first).await;
        } else {
            ws.ws.send_frame(false, TEXT, first).await;
            ws.ws.send_frame(true, CONTINUATION, second).await;
        }
        let answer = ws.next_json(Duration::from_secs(5)).await.expect("answer");
        assert_eq!(answer["I"], json!("0"));
        assert_eq!(
            answer["R"].as_str().map(str::len),
            Some(64 * KIB - invocation("Echo", json!([""]), "0").len())
        );
        ws.assert_echo("after", "1").await;
    }
    for fragments in [1, 2] {
        let mut ws = WsConn::open(&server, None).await;
        let text = echo_of_size(64 * KIB + 1, "0");
        let (first, second) = text.as_bytes().split_at(text.len() / fragments);
        if fragments == 1 {
            ws.ws.send_frame(true, TEXT, first).await;
        } else {
            ws.ws.send_frame(false, TEXT, first).await;
            ws.ws.send_frame(true, CONTINUATION, second).await;
        }
        let ending = ws.ws.ending(Duration::from_secs(3)).await;
        assert!(
            ending.tcp_ended,
            "{fragments} fragment(s): TCP still open {ending:?}"
        );
        assert_eq!(ending.close, None, "{fragments} fragment(s): {ending:?}");
        assert!(
            ending.texts.is_empty(),
            "{fragments} fragment(s): {ending:?}"
        );
    }
    finish(&server, &mut bystander).await;
}

/// A binary frame ends the TCP connection without a Close frame; text that is not UTF-8 gets
/// Close 1007.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_and_invalid_utf8_end_the_socket() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;

    let mut ws = WsConn::open(&server, None).await;
    let echo = invocation("Echo", json!(["bin"]), "0");
    ws.ws.send_frame(true, BINARY, echo.as_bytes()).await;
    let ending = ws.ws.ending(Duration::from_secs(3)).await;
    assert!(ending.tcp_ended, "binary frame: {ending:?}");
    assert_eq!(ending.close, None, "binary frame: {ending:?}");
    assert!(ending.texts.is_empty(), "binary frame: {ending:?}");

    let mut ws = WsConn::open(&server, None).await;
    ws.ws
        .send_frame(true, TEXT, &[b'{', 0xff, 0xfe, b'}'])
        .await;
    let ending = ws.ws.ending(Duration::from_secs(3)).await;
    assert_eq!(ending.close, Some(Some(1007)), "invalid UTF-8: {ending:?}");
    assert!(ending.texts.is_empty(), "invalid UTF-8: {ending:?}");
    finish(&server, &mut bystander).await;
}

/// Text frames that are no hub invocation of a subscribed hub get no answer and the socket
/// reads on; pings are answered by the WebSocket layer only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_it_cannot_use_are_ignored() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;
    let mut ws = WsConn::open(&server, None).await;
    for (i, text) in [
        "not json",
        "",
        "[1]",
        r#"{"M":"Echo","A":["x"],"I":"0"}"#,
        r#"{"H":"nosuchhub","M":"Echo","A":["x"],"I":"0"}"#,
        r#"{"H":"testhub","M":"Echo","A":"x","I":"0"}"#,
    ]
    .iter()
    .enumerate()
    {
        ws.ws.send_text(text).await;
        ws.ws.send_frame(true, PING, b"p").await;
        ws.assert_echo("after", &format!("{}", 100 + i)).await;
    }
    finish(&server, &mut bystander).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input: reconnect
// ---------------------------------------------------------------------------------------------

/// WebSocket reconnects after JoinGroup("g") with the transport dropped and a group message
/// sent meanwhile: with the cursor and the groups token the message is replayed and the
/// connection is still in the group; with a tampered groups token, a forged one, another
/// connection's or none, it is in no group afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_rejoins_only_the_groups_of_a_valid_groups_token() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;
    let sender = Lp::open(&server, None).await;
    let mut other = WsConn::open(&server, None).await;
    other.join("g-other", "0").await;
    let others_token = other.groups.clone().expect("groups token");

    for variant in [
        "valid",
        "tampered",
        "forged",
        "another connection's",
        "none",
    ] {
        let group = format!("g-{}", variant.replace(' ', "-"));
        let mut ws = WsConn::open(&server, None).await;
        ws.join(&group, "0").await;
        let cursor = ws.cursor.clone();
        let groups = ws.groups.clone().expect("groups token");
        // A groups token names the connection and its groups, and is not a connection token.
        let as_connection_token = Session {
            token: groups.clone(),
            ..ws.session.clone()
        };
        let response = as_connection_token
            .post(&server, "connect", "longPolling", &[])
            .await;
        assert_protocol_error(&response, BAD_TOKEN, "a groups token as connection token");
        let session = ws.session.clone();
        drop(ws);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let missed = sender
            .call(&server, "SendToGroup", json!([group, "missed"]), "0")
            .await;
        assert_eq!(missed, json!({"I": "0"}));

        let token = match variant {
            "valid" => Some(groups.clone()),
            "tampered" => {
                let mid = groups.len() / 2;
                let flipped = if groups.as_bytes()[mid] == b'A' {
                    'B'
                } else {
                    'A'
                };
                Some(format!("{}{flipped}{}", &groups[..mid], &groups[mid + 1..]))
            }
            // The payload of our tokens is readable: another group under the old tag.
            "forged" => {
                let (payload, tag) = groups.split_once('.').expect("payload.tag");
                let text = base64url_decode(payload);
                let text = text.replace(&group, "g-other");
                Some(format!("{}.{tag}", base64url_encode(&text)))
            }
            "another connection's" => Some(others_token.clone()),
            _ => None,
        };
        let mut extra = vec![("messageId", cursor.as_str())];
        if let Some(token) = &token {
            extra.push(("groupsToken", token.as_str()));
        }
        let mut back = WsConn::reconnect(&server, session.clone(), &extra).await;
        if variant == "valid" {
            assert_eq!(
                back.next_calls().await,
                [client_call("groupMessage", json!([group, "missed"]))],
                "replayed"
            );
        }
        back.assert_echo("back", "5").await;
        let after = sender
            .call(&server, "SendToGroup", json!([group, "after"]), "1")
            .await;
        assert_eq!(after, json!({"I": "1"}));
        let to_other = sender
            .call(&server, "SendToGroup", json!(["g-other", "other"]), "2")
            .await;
        assert_eq!(to_other, json!({"I": "2"}));
        let received = back.calls_within(Duration::from_millis(500)).await;
        let expected = if variant == "valid" {
            vec![client_call("groupMessage", json!([group, "after"]))]
        } else {
            Vec::new()
        };
        // Without a valid token "missed" is not replayed either (SignalR 2.4 replays only what
        // reached the groups the token names), nor is a new groups token sent.
        assert_eq!(
            received, expected,
            "{variant}: received after the reconnect"
        );
        assert_eq!(
            server.events.of(&session.id),
            [
                format!("connected:{}", session.id),
                format!("reconnected:{}", session.id)
            ],
            "{variant}"
        );
    }
    // The other connection is still in its group.
    assert_eq!(
        other.next_calls().await,
        vec![client_call("groupMessage", json!(["g-other", "other"])); 1]
    );
    finish(&server, &mut bystander).await;
}

fn base64url_decode(text: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url payload");
    String::from_utf8(bytes).expect("UTF-8 payload")
}

fn base64url_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// A reconnect with a cursor the server never issued (garbage, or past what was sent) replays
/// nothing and the connection works on: new messages arrive, calls are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_an_unknown_cursor_replays_nothing() {
    let server = serve(quiet()).await;
    let mut bystander = WsConn::open(&server, None).await;
    let context = server.hub.context();
    let ws = WsConn::open(&server, None).await;
    let (epoch, _) = ws.cursor.rsplit_once('-').expect("cursor d-<epoch>-<seq>");
    let beyond = format!("{epoch}-999999");
    let session = ws.session.clone();
    drop(ws);
    for cursor in [UNKNOWN_CURSOR, beyond.as_str(), ""] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        context
            .clients()
            .client(session.id.clone())
            .send("note", ("missed",))
            .await
            .expect("send");
        let mut back = WsConn::reconnect(&server, session.clone(), &[("messageId", cursor)]).await;
        context
            .clients()
            .client(session.id.clone())
            .send("note", ("after",))
            .await
            .expect("send");
        assert_eq!(
            back.next_calls().await,
            [client_call("note", json!(["after"]))],
            "cursor {cursor:?}: the first thing received is the new message"
        );
        back.assert_echo("works", "3").await;
        drop(back);
    }
    finish(&server, &mut bystander).await;
}

/// `/send`, `/poll` and `/reconnect` bodies over `max_incoming_message_size` get 413; a body of
/// exactly the limit is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_incoming_message_size_are_413() {
    let server = serve(ClassicOptions {
        max_incoming_message_size: 16 * KIB,
        ..quiet()
    })
    .await;
    let mut bystander = WsConn::open(&server, None).await;
    let lp = Lp::open(&server, None).await;
    let limit = 16 * KIB;
    let body_of = |size: usize| {
        let empty = encode(&[("data", &invocation("Echo", json!([""]), "0"))]);
        let body = encode(&[(
            "data",
            &invocation("Echo", json!(["x".repeat(size - empty.len())]), "0"),
        )]);
        assert_eq!(body.len(), size);
        body
    };
    let path = |action: &str| format!("/signalr/{action}?{}", lp.session.query("longPolling", &[]));
    let fits = server
        .request(
            reqwest::Method::POST,
            &path("send"),
            None,
            Some(body_of(limit)),
        )
        .await;
    assert_eq!(fits.status, 200, "a body of exactly the limit: {fits:?}");
    assert_eq!(fits.json()["I"], json!("0"));
    for action in ["send", "poll", "reconnect"] {
        let over = server
            .request(
                reqwest::Method::POST,
                &path(action),
                None,
                Some(body_of(limit + 1)),
            )
            .await;
        assert_eq!(over.status, 413, "POST /{action} one byte over: {over:?}");
    }
    lp.assert_echo(&server, "after", "9").await;
    finish(&server, &mut bystander).await;
}

// ---------------------------------------------------------------------------------------------
// Bounds: the message buffer
// ---------------------------------------------------------------------------------------------

/// Sends `count` messages `note(<i>, <filler>)` to connection `id` from outside the hub.
async fn send_notes(server: &Server, id: &str, count: usize, filler: usize) {
    let clients = server.hub.context().clients();
    for i in 0..count {
        clients
            .client(id.to_owned())
            .send("note", (i, "f".repeat(filler)))
            .await
            .expect("send");
    }
}

/// What a long-polling reconnect with `cursor` replays (the numbers of the notes).
async fn replayed_notes(server: &Server, lp: &Lp, cursor: &str) -> Vec<u64> {
    let answer = lp
        .session
        .post(server, "reconnect", "longPolling", &[("messageId", cursor)])
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    messages(&answer.json())
        .iter()
        .map(|m| {
            assert_eq!(m["M"], json!("note"), "{m}");
            m["A"][0].as_u64().expect("note number")
        })
        .collect()
}

/// With `message_buffer_size` 5, ten messages sent while no transport is attached leave the
/// last five for a reconnect with the first cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_buffer_keeps_at_most_message_buffer_size_messages() {
    let server = serve(ClassicOptions {
        message_buffer_size: 5,
        ..quiet()
    })
    .await;
    let lp = Lp::open(&server, None).await;
    send_notes(&server, &lp.session.id, 10, 1).await;
    assert_eq!(
        replayed_notes(&server, &lp, &lp.cursor).await,
        [5, 6, 7, 8, 9]
    );
    // A buffer that never filled replays everything.
    let lp = Lp::open(&server, None).await;
    send_notes(&server, &lp.session.id, 3, 1).await;
    assert_eq!(replayed_notes(&server, &lp, &lp.cursor).await, [0, 1, 2]);
    assert_fresh_connection_works(&server).await;
    assert_no_panics();
}

/// With `message_buffer_bytes` 3,500 and messages of about 1,030 bytes, only the newest three
/// are kept; one message larger than the bound is still kept alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_buffer_keeps_at_most_message_buffer_bytes() {
    let server = serve(ClassicOptions {
        message_buffer_bytes: 3500,
        ..quiet()
    })
    .await;
    let lp = Lp::open(&server, None).await;
    send_notes(&server, &lp.session.id, 10, 1000).await;
    assert_eq!(replayed_notes(&server, &lp, &lp.cursor).await, [7, 8, 9]);

    let lp = Lp::open(&server, None).await;
    send_notes(&server, &lp.session.id, 2, 10).await;
    let clients = server.hub.context().clients();
    clients
        .client(lp.session.id.clone())
        .send("note", (2, "f".repeat(5000)))
        .await
        .expect("send");
    assert_eq!(replayed_notes(&server, &lp, &lp.cursor).await, [2]);
    assert_fresh_connection_works(&server).await;
    assert_no_panics();
}

// ---------------------------------------------------------------------------------------------
// Lifetime
// ---------------------------------------------------------------------------------------------

/// A connection without a transport ends once `disconnect_timeout` passed: `on_disconnected`
/// runs with `stop_called() == false`, the hub forgets it. A connection whose transport stays
/// attached lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_transport_ends_after_the_disconnect_timeout() {
    let timeout = Duration::from_secs(1);
    let server = serve(ClassicOptions {
        disconnect_timeout: timeout,
        ..quiet()
    })
    .await;
    let mut attached = WsConn::open(&server, None).await;
    // A long-polling connection has no transport between requests: from its /connect on.
    let detached_at = Instant::now();
    let lp = Lp::open(&server, None).await;
    assert_eq!(server.hub.context().connection_count(), 2);
    let gone = format!("disconnected:{}:false", lp.session.id);
    server
        .events
        .wait_for(&gone, timeout + Duration::from_secs(4))
        .await;
    let elapsed = detached_at.elapsed();
    assert!(
        elapsed >= timeout,
        "ended after {elapsed:?}, before the disconnect timeout"
    );
    assert_eq!(server.events.count(&gone), 1);
    assert_eq!(server.hub.context().connection_count(), 1);
    // The attached one did not end, and works.
    assert!(
        server.events.of(&attached.session.id).len() == 1,
        "{:?}",
        server.events.all()
    );
    attached.assert_echo("alive", "1").await;
    assert_fresh_connection_works(&server).await;
    assert_no_panics();
}

/// `/abort` ends the connection at once: `on_disconnected` with `stop_called() == true` (once,
/// even when aborted twice), the WebSocket ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_runs_on_disconnected_at_once_with_stop_called() {
    let server = serve(ClassicOptions {
        disconnect_timeout: Duration::from_secs(30),
        ..quiet()
    })
    .await;
    let mut ws = WsConn::open(&server, None).await;
    let started = Instant::now();
    let abort = ws.session.post(&server, "abort", "webSockets", &[]).await;
    assert_eq!(
        (
            abort.status,
            abort.body.as_str(),
            abort.content_type.as_deref()
        ),
        (200, "", Some("text/plain")),
        "{abort:?}"
    );
    let gone = format!("disconnected:{}:true", ws.session.id);
    server.events.wait_for(&gone, Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let ending = ws.ws.ending(Duration::from_secs(3)).await;
    assert!(ending.tcp_ended, "the socket ends: {ending:?}");
    let again = ws.session.post(&server, "abort", "webSockets", &[]).await;
    assert_eq!(again.status, 200, "{again:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.events.of(&ws.session.id),
        [format!("connected:{}", ws.session.id), gone.clone()]
    );
    // Long polling: the pending poll is answered, on_disconnected runs with stop_called.
    let lp = Lp::open(&server, None).await;
    let poll = {
        let session = lp.session.clone();
        let cursor = lp.cursor.clone();
        let http = server.http.clone();
        let url = server.url(&format!(
            "/signalr/poll?{}",
            session.query("longPolling", &[])
        ));
        tokio::spawn(async move {
            let response = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&[("messageId", &cursor)]))
                .send()
                .await
                .expect("poll");
            (
                response.status().as_u16(),
                response.text().await.expect("poll body"),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let abort = lp.session.post(&server, "abort", "longPolling", &[]).await;
    assert_eq!(abort.status, 200);
    let (status, body) = within("the pending poll", poll).await.expect("poll task");
    assert_eq!(status, 200);
    let envelope: Value = serde_json::from_str(body.trim_start()).expect("envelope");
    assert_eq!(messages(&envelope), Vec::<Value>::new(), "{envelope}");
    server
        .events
        .wait_for(
            &format!("disconnected:{}:true", lp.session.id),
            Duration::from_secs(2),
        )
        .await;
    assert_fresh_connection_works(&server).await;
    assert_no_panics();
}

/// `on_connected` runs at `/start` (once), not at `/connect`; `on_reconnected` runs on
/// `/reconnect`, before the transport is up, and `on_connected` does not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_events_run_at_start_and_reconnect() {
    let server = serve(quiet()).await;
    let session = server.negotiate(None).await;
    let id = session.id.clone();
    let ws = WsConn::connect(&server, session.clone()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.events.of(&id).is_empty(),
        "nothing before /start: {:?}",
        server.events.all()
    );
    // The connection exists before /start: it receives messages, kept until the client reads.
    assert_eq!(server.hub.context().connection_count(), 1);
    let start = session.start(&server, "webSockets").await;
    assert_eq!(start.json(), json!({"Response": "started"}));
    assert_eq!(server.events.of(&id), [format!("connected:{id}")]);
    let again = session.start(&server, "webSockets").await;
    assert_eq!(again.json(), json!({"Response": "started"}));
    assert_eq!(server.events.of(&id), [format!("connected:{id}")]);
    let cursor = ws.cursor.clone();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut back = WsConn::reconnect(&server, session.clone(), &[("messageId", &cursor)]).await;
    assert_eq!(
        server.events.of(&id),
        [format!("connected:{id}"), format!("reconnected:{id}")]
    );
    back.assert_echo("back", "1").await;
    // Over long polling too.
    let lp = Lp::connect(&server, None).await;
    let lp_id = lp.session.id.clone();
    assert!(server.events.of(&lp_id).is_empty());
    assert_eq!(lp.session.start(&server, "longPolling").await.status, 200);
    assert_eq!(server.events.of(&lp_id), [format!("connected:{lp_id}")]);
    send_notes(&server, &lp_id, 1, 1).await;
    assert_eq!(replayed_notes(&server, &lp, &lp.cursor).await, [0]);
    assert_eq!(
        server.events.of(&lp_id),
        [format!("connected:{lp_id}"), format!("reconnected:{lp_id}")]
    );
    assert_no_panics();
}

// ---------------------------------------------------------------------------------------------
// Keep-alives and the long-poll timeout
// ---------------------------------------------------------------------------------------------

/// A long poll with nothing to deliver writes a space per keep-alive while it waits, then
/// answers an empty envelope at its cursor after `connection_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_long_poll_sends_spaces_then_an_empty_envelope() {
    let keep_alive = Duration::from_millis(200);
    let timeout = Duration::from_millis(1200);
    let server = serve(ClassicOptions {
        keep_alive: Some(keep_alive),
        connection_timeout: timeout,
        ..quiet()
    })
    .await;
    let negotiate = server.negotiate_raw(TEST_HUB, None).await.json();
    assert_eq!(negotiate["KeepAliveTimeout"], json!(0.4));
    assert_eq!(negotiate["ConnectionTimeout"], json!(1.2));
    let lp = Lp::open(&server, None).await;
    let url = server.url(&format!(
        "/signalr/poll?{}",
        lp.session.query("longPolling", &[])
    ));
    let started = Instant::now();
    let mut response = within(
        "the poll's head",
        server
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&[("messageId", &lp.cursor)]))
            .send(),
    )
    .await
    .expect("poll");
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    let mut first_space_at = None;
    within_for(
        timeout + Duration::from_secs(3),
        "the poll's answer",
        async {
            while let Some(chunk) = response.chunk().await.expect("poll body") {
                if first_space_at.is_none() && chunk.first() == Some(&b' ') {
                    first_space_at = Some(started.elapsed());
                }
                body.extend_from_slice(&chunk);
                assert!(body.len() < 64 * KIB);
            }
        },
    )
    .await;
    let elapsed = started.elapsed();
    let body = String::from_utf8(body).expect("UTF-8");
    let spaces = body.len() - body.trim_start_matches(' ').len();
    let first_space_at = first_space_at.expect("a space while waiting");
    assert!(
        first_space_at < timeout,
        "first keep-alive at {first_space_at:?}"
    );
    let most = usize::try_from(elapsed.as_millis() / keep_alive.as_millis()).expect("count");
    assert!(
        (3..=most).contains(&spaces),
        "one space per keep-alive ({most} at most): {body:?}"
    );
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
    let envelope: Value = serde_json::from_str(body.trim_start()).expect("envelope");
    assert_eq!(envelope, json!({"C": lp.cursor, "M": []}));
    lp.assert_echo(&server, "after", "1").await;
    assert_no_panics();
}

/// Keep-alives: `{}` frames on WebSockets and `data: {}` events on Server-Sent Events, one per
/// `keep_alive` while idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_on_websockets_and_sse() {
    let keep_alive = Duration::from_millis(250);
    let server = serve(ClassicOptions {
        keep_alive: Some(keep_alive),
        ..quiet()
    })
    .await;
    let mut ws = WsConn::open(&server, None).await;
    let started = Instant::now();
    for _ in 0..3 {
        match ws.ws.event(Duration::from_secs(2)).await {
            WsEvent::Text(text) => assert_eq!(text, "{}"),
            other => panic!("expected a keep-alive, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= keep_alive * 2 && elapsed < keep_alive * 3 + Duration::from_secs(1),
        "three keep-alives in {elapsed:?}"
    );
    ws.assert_echo("still", "1").await;

    let session = server.negotiate(None).await;
    let url = server.url(&format!(
        "/signalr/connect?{}",
        session.query("serverSentEvents", &[])
    ));
    let mut response = within(
        "SSE head",
        server
            .http
            .get(url)
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("SSE connect");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let started = Instant::now();
    let mut text = String::new();
    within("three SSE keep-alives", async {
        while text.matches("data: {}\n\n").count() < 3 {
            let chunk = response.chunk().await.expect("SSE body").expect("SSE open");
            text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            assert!(text.len() < 64 * KIB);
        }
    })
    .await;
    let elapsed = started.elapsed();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events[0], "data: initialized", "{text:?}");
    let init: Value =
        serde_json::from_str(events[1].strip_prefix("data: ").expect("data")).expect("init JSON");
    assert_eq!(init["S"], json!(1));
    assert_eq!(events[2..5], ["data: {}"; 3], "{text:?}");
    assert!(
        elapsed >= keep_alive * 2,
        "three keep-alives in {elapsed:?}"
    );
    assert_no_panics();
}

// ---------------------------------------------------------------------------------------------
// One hub, Core and classic clients
// ---------------------------------------------------------------------------------------------

/// A Core JSON client on a raw WebSocket at `/hub`.
struct CoreClient {
    ws: RawWs,
    /// Messages received and not taken yet (a frame may carry several).
    pending: std::collections::VecDeque<Value>,
}

impl CoreClient {
    async fn open(server: &Server) -> CoreClient {
        let Upgrade::Open(mut ws) = RawWs::open(server.addr, "/hub", None).await else {
            panic!("Core WebSocket refused");
        };
        ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
            .await;
        let mut client = CoreClient {
            ws,
            pending: Default::default(),
        };
        assert_eq!(client.next().await, json!({}), "handshake response");
        client
    }

    /// The next hub message (pings skipped).
    async fn next(&mut self) -> Value {
        loop {
            while let Some(value) = self.pending.pop_front() {
                if value["type"] != json!(6) {
                    return value;
                }
            }
            let text = match self.ws.event(Duration::from_secs(5)).await {
                WsEvent::Text(text) => text,
                other => panic!("expected a Core message, got {other:?}"),
            };
            let body = text.strip_suffix('\u{1e}').expect("record separator");
            for message in body.split('\u{1e}') {
                let value: Value = serde_json::from_str(message).expect("Core message is JSON");
                self.pending.push_back(value);
            }
        }
    }

    async fn invoke(&mut self, target: &str, arguments: Value, id: &str) -> Vec<Value> {
        let message =
            json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments});
        self.ws.send_text(&format!("{message}\u{1e}")).await;
        let mut others = Vec::new();
        loop {
            let value = self.next().await;
            if value["type"] == json!(3) && value["invocationId"] == json!(id) {
                assert!(value.get("error").is_none(), "{target} failed: {value}");
                return others;
            }
            others.push(value);
        }
    }
}

fn core_call(target: &str, arguments: Value) -> Value {
    json!({"type": 1, "target": target, "arguments": arguments})
}

/// One hub served to Core clients (`hub.router()`) and classic ones (`classic_router`): a
/// Core client's `clients().all()` reaches the classic connection and a classic call reaches
/// the Core client; groups are shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_and_classic_clients_share_one_hub() {
    let server = serve(quiet()).await;
    let mut core = CoreClient::open(&server).await;
    let mut classic = WsConn::open(&server, None).await;
    assert_eq!(server.hub.context().connection_count(), 2);

    let mut seen = core.invoke("SendToAll", json!(["from core"]), "1").await;
    if seen.is_empty() {
        seen.push(core.next().await);
    }
    assert_eq!(seen, [core_call("broadcast", json!(["from core"]))]);
    assert_eq!(
        classic.next_calls().await,
        [client_call("broadcast", json!(["from core"]))]
    );

    let result = classic
        .call("SendToAll", json!(["from classic"]), "1")
        .await;
    assert_eq!(result, json!({"I": "1"}));
    assert_eq!(
        core.next().await,
        core_call("broadcast", json!(["from classic"]))
    );
    assert_eq!(
        classic.next_calls().await,
        [client_call("broadcast", json!(["from classic"]))]
    );

    assert!(
        core.invoke("JoinGroup", json!(["both"]), "2")
            .await
            .is_empty()
    );
    classic.join("both", "2").await;
    let result = classic
        .call("SendToGroup", json!(["both", "m1"]), "3")
        .await;
    assert_eq!(result, json!({"I": "3"}));
    assert_eq!(
        core.next().await,
        core_call("groupMessage", json!(["both", "m1"]))
    );
    assert_eq!(
        classic.next_calls().await,
        [client_call("groupMessage", json!(["both", "m1"]))]
    );
    let mut seen = core.invoke("SendToGroup", json!(["both", "m2"]), "3").await;
    if seen.is_empty() {
        seen.push(core.next().await);
    }
    assert_eq!(seen, [core_call("groupMessage", json!(["both", "m2"]))]);
    assert_eq!(
        classic.next_calls().await,
        [client_call("groupMessage", json!(["both", "m2"]))]
    );

    // The hub context reaches both.
    server
        .hub
        .context()
        .clients()
        .group("both")
        .send("fromContext", ("ctx",))
        .await
        .expect("send");
    assert_eq!(core.next().await, core_call("fromContext", json!(["ctx"])));
    assert_eq!(
        classic.next_calls().await,
        [client_call("fromContext", json!(["ctx"]))]
    );
    assert_eq!(server.hub.context().group_count(), 1);
    assert_no_panics();
}
