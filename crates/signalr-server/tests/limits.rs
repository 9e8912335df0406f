//! The bounds of the connection layer, measured on the wire: WebSocket message limits and the
//! hub's Close message, unfinished fragments, the incoming and outgoing queues bounded in bytes,
//! streamed POST bodies (one at a time per connection), the transport send timeout, the
//! per-connection stream limit, and the RFC 6455 close handshake.
//!
//! The WebSocket side is a minimal client written here (TCP, upgrade request, masked frames built
//! by hand, unmasked server frames parsed) so that fragments, opcodes and Close frames are under
//! the test's control. Bytes are measured three ways:
//! * **taken by the server**: what the client wrote minus what the kernel still holds on either
//!   side (the client socket's send queue and the server socket's receive queue, from `ss` or
//!   `/proc/net/tcp`), i.e. the bytes the server process has read into its own memory; the
//!   server's listener and the clients set small kernel buffers so that this is most of it;
//! * **RSS** of the process (`VmRSS` in `/proc/self/status`) where memory is the point. Those
//!   tests run in a fresh copy of this test binary (only that test, see [`in_fresh_process`]) so
//!   that memory freed by other tests cannot hide growth, and their clients write one shared,
//!   prebuilt buffer (the per-message bytes are built on the stack) so the client side allocates
//!   nothing per message;
//! * **time** to the hub Close message, the WebSocket Close frame and the end of TCP.
//!
//! Linux only (`/proc`). The server is served with TCP_NODELAY, as the serving recipe in the
//! crate docs: with Nagle's algorithm on, a Close frame written just before the server resets
//! a connection it stopped reading can be held back and lost with the reset.
//!
//! Every test prints a `measured:` line (`cargo test --test limits -- --nocapture`) and ends with
//! [`finish`]: a fresh connection still works and no server task panicked.

mod common;
#[path = "common/runtime.rs"]
mod runtime;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};

use axum::serve::ListenerExt as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, finish, install_panic_hook, within};
use futures_util::StreamExt;
use futures_util::stream;
use runtime::{build, eventually};
use serde_json::{Value, json};
use signalr_server::{
    ConnectionOptions, Hub, HubBuilder, HubCallerContext, HubError, HubOptions,
    hub::UploadStream,
    raw::{RawConnection, connection_router},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// The hub's Close message after a message over the limit (and after a client timeout).
const CLOSED_WITH_ERROR: &str =
    r#"{"type":7,"error":"Connection closed with an error.","allowReconnect":true}"#;

/// WebSocket opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A mask key for frames whose bytes are built per frame (the shared-buffer frames use the
/// all-zero key, which leaves the payload as it is).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Size of each WebSocket's read buffer on the server (`websocket_read_buffer_size` default).
const READ_BUFFER: u64 = 8 * 1024;

const KIB: u64 = 1024;

// ---------------------------------------------------------------------------------------------
// Fresh processes, RSS and kernel socket queues
// ---------------------------------------------------------------------------------------------

const FRESH_PROCESS: &str = "SIGNALR_LIMITS_FRESH_PROCESS";

/// Runs `body` on a 2-worker runtime in a fresh copy of this test binary that runs nothing but
/// the test `name` (which must be the calling test's name), and fails when that run fails. In
/// the copy itself (marked by an environment variable) `body` just runs.
fn in_fresh_process<F: Future<Output = ()>>(name: &str, body: impl FnOnce() -> F) {
    if std::env::var_os(FRESH_PROCESS).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body());
        return;
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let output = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(FRESH_PROCESS, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{name} failed in its own process:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the fresh process did not run {name}:\n{stdout}"
    );
}

/// The resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Samples the RSS every 5 ms on its own thread and keeps the highest value.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    peak.fetch_max(rss_kib(), Ordering::AcqRel);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        RssPeak {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the highest RSS seen, in KiB.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("RSS sampler");
        }
        self.peak.load(Ordering::Acquire).max(rss_kib())
    }
}

/// One socket as the kernel sees it.
#[derive(Debug, Clone, Copy)]
struct TcpEntry {
    established: bool,
    /// Bytes written by the application and not yet acknowledged by the peer.
    tx_queue: u64,
    /// Bytes received and not yet read by the application.
    rx_queue: u64,
}

/// The kernel's view of the sockets from or to one port: `(local, remote)` to the entry.
struct TcpTable(HashMap<(SocketAddr, SocketAddr), TcpEntry>);

impl TcpTable {
    /// The sockets from or to `port` on 127.0.0.1. Asks `ss` (netlink, filtered in the kernel:
    /// fast even with many sockets on the machine), else reads `/proc/net/tcp` whole.
    fn of_port(port: u16) -> TcpTable {
        let filter = format!("( sport = :{port} or dport = :{port} )");
        let ss = std::process::Command::new("ss")
            .args(["-tnHa", &filter])
            .output();
        match ss {
            Ok(output) if output.status.success() => TcpTable::from_ss(&output.stdout),
            _ => TcpTable::from_proc(port),
        }
    }

    /// `ss -tnH` lines: `STATE RECV-Q SEND-Q LOCAL PEER`.
    fn from_ss(output: &[u8]) -> TcpTable {
        let text = String::from_utf8_lossy(output);
        let mut table = HashMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [state, rx, tx, local, remote, ..] = fields[..] else {
                continue;
            };
            let (Ok(local), Ok(remote)) = (local.parse(), remote.parse()) else {
                continue;
            };
            let (Ok(rx_queue), Ok(tx_queue)) = (rx.parse(), tx.parse()) else {
                continue;
            };
            let entry = TcpEntry {
                established: state == "ESTAB",
                tx_queue,
                rx_queue,
            };
            table.insert((local, remote), entry);
        }
        TcpTable(table)
    }

    /// `/proc/net/tcp`: addresses as little-endian hex, state `01` = established.
    fn from_proc(port: u16) -> TcpTable {
        fn address(text: &str) -> Option<SocketAddr> {
            let (ip, port) = text.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(ip.to_le_bytes()),
                port,
            )))
        }
        let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let mut table = HashMap::new();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 {
                continue;
            }
            let (Some(local), Some(remote)) = (address(fields[1]), address(fields[2])) else {
                continue;
            };
            if local.port() != port && remote.port() != port {
                continue;
            }
            let Some((tx, rx)) = fields[4].split_once(':') else {
                continue;
            };
            let (Ok(tx_queue), Ok(rx_queue)) =
                (u64::from_str_radix(tx, 16), u64::from_str_radix(rx, 16))
            else {
                continue;
            };
            let entry = TcpEntry {
                established: fields[3] == "01",
                tx_queue,
                rx_queue,
            };
            table.insert((local, remote), entry);
        }
        TcpTable(table)
    }

    fn get(&self, local: SocketAddr, remote: SocketAddr) -> Option<TcpEntry> {
        self.0.get(&(local, remote)).copied()
    }

    /// Whether the server's end of the client socket `(client, server)` is still established.
    fn server_end_open(&self, client: SocketAddr, server: SocketAddr) -> bool {
        self.get(server, client).is_some_and(|e| e.established)
    }
}

/// The client and server addresses of a client socket.
fn ends(client: &TcpStream) -> (SocketAddr, SocketAddr) {
    (
        client.local_addr().expect("local address"),
        client.peer_addr().expect("peer address"),
    )
}

/// Whether the server's end of the client socket `client` is still established.
fn server_end_open(client: &TcpStream) -> bool {
    let (local, server) = ends(client);
    TcpTable::of_port(server.port()).server_end_open(local, server)
}

/// Of `written` bytes the client wrote on `client`, those the server process has read: what
/// neither the client's send queue nor the server's receive queue still holds.
fn taken_by_server(client: &TcpStream, written: u64) -> u64 {
    let (local, server) = ends(client);
    let table = TcpTable::of_port(server.port());
    let sending = table.get(local, server).map_or(0, |e| e.tx_queue);
    let unread = table.get(server, local).map_or(0, |e| e.rx_queue);
    written.saturating_sub(sending + unread)
}

/// Bytes the kernel holds on their way from the server to `client`: the server socket's send
/// queue and the client socket's receive queue.
fn in_kernel_to_client(client: &TcpStream) -> u64 {
    let (local, server) = ends(client);
    let table = TcpTable::of_port(server.port());
    let sending = table.get(server, local).map_or(0, |e| e.tx_queue);
    let unread = table.get(local, server).map_or(0, |e| e.rx_queue);
    sending + unread
}

// ---------------------------------------------------------------------------------------------
// Servers and sockets with chosen kernel buffer sizes
// ---------------------------------------------------------------------------------------------

/// Kernel buffer sizes to request (`SO_RCVBUF`/`SO_SNDBUF`; Linux doubles them and turns off
/// auto-tuning). A listener's sizes are inherited by the sockets it accepts.
#[derive(Clone, Copy, Default)]
struct Buffers {
    recv: Option<u32>,
    send: Option<u32>,
}

fn socket(buffers: Buffers) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("TCP socket");
    if let Some(size) = buffers.recv {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    if let Some(size) = buffers.send {
        socket.set_send_buffer_size(size).expect("SO_SNDBUF");
    }
    socket
}

/// Serves `router` (with `hub` at `/hub`) on a listener with `buffers`.
async fn serve_router(hub: Hub, router: axum::Router, buffers: Buffers) -> TestServer {
    install_panic_hook();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let listener = socket(buffers);
    listener
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind 127.0.0.1:0");
    let listener = listener.listen(1024).expect("listen");
    let addr = listener.local_addr().expect("local address");
    // As the serving recipe (crate docs, apps): TCP_NODELAY, so that small frames such as a
    // Close frame leave at once instead of waiting behind Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(axum::serve(listener, router).into_future());
    TestServer {
        addr,
        hub,
        http: reqwest::Client::new(),
    }
}

/// Serves `builder` (plus `Echo`) at `/hub` on a listener with `buffers`.
async fn serve(builder: HubBuilder, buffers: Buffers) -> TestServer {
    let hub = build(builder);
    let router = axum::Router::new().nest("/hub", hub.router());
    serve_router(hub, router, buffers).await
}

async fn tcp_connect(addr: SocketAddr, buffers: Buffers) -> TcpStream {
    within("TCP connect", socket(buffers).connect(addr))
        .await
        .expect("TCP connect")
}

// ---------------------------------------------------------------------------------------------
// The test hub
// ---------------------------------------------------------------------------------------------

/// The sequence numbers `Work` received, per connection id, in arrival order.
#[derive(Clone, Default)]
struct WorkLog(Arc<Mutex<HashMap<String, Vec<u64>>>>);

impl WorkLog {
    fn total(&self) -> usize {
        self.0.lock().expect("log").values().map(Vec::len).sum()
    }

    /// The sequence of the connection whose first number is `first`.
    fn sequence_starting_at(&self, first: u64) -> Vec<u64> {
        let log = self.0.lock().expect("log");
        log.values()
            .find(|sequence| sequence.first() == Some(&first))
            .cloned()
            .unwrap_or_default()
    }

    fn sequences(&self) -> Vec<Vec<u64>> {
        self.0.lock().expect("log").values().cloned().collect()
    }
}

/// The hub of these tests (plus `Echo`):
/// * `Block()` waits until the test adds a permit to `gate` (it gives the permit back);
/// * `Work(seq, data)` records `seq` for the caller in `log`;
/// * `Broadcast(data)` sends `Receive(data)` to every other connection;
/// * `Big(len)` returns a string of `len` bytes;
/// * `Forever()` streams one item, then nothing until cancelled;
/// * `Upload(items)` sums an upload stream;
/// * `CloseWithBye()` closes the caller with the error `bye`, without reconnect.
fn limits_hub(gate: Arc<Semaphore>, log: WorkLog) -> HubBuilder {
    Hub::builder()
        .method("Block", move |_: HubCallerContext| {
            let gate = gate.clone();
            async move {
                let _permit = gate.acquire().await.expect("gate open");
            }
        })
        .method(
            "Work",
            move |ctx: HubCallerContext, seq: u64, _data: String| {
                let log = log.clone();
                async move {
                    let mut log = log.0.lock().expect("log");
                    log.entry(ctx.connection_id().to_owned())
                        .or_default()
                        .push(seq);
                }
            },
        )
        .method(
            "Broadcast",
            |ctx: HubCallerContext, data: String| async move {
                ctx.clients().others().send("Receive", (data,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method("Big", |_: HubCallerContext, len: usize| async move {
            "x".repeat(len)
        })
        .method("Forever", |_: HubCallerContext| async {
            stream::once(async { 1 }).chain(stream::pending())
        })
        .method(
            "Upload",
            |_: HubCallerContext, mut items: UploadStream<i32>| async move {
                let mut sum = 0;
                while let Some(Ok(item)) = items.next().await {
                    sum += item;
                }
                sum
            },
        )
        .method("CloseWithBye", |ctx: HubCallerContext| async move {
            ctx.close(Some("bye".into()), false);
        })
}

/// A gate for `Block()` that the test never opens.
fn closed_gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}

fn hub_options(change: impl FnOnce(&mut HubOptions)) -> HubOptions {
    let mut options = HubOptions::default();
    change(&mut options);
    options
}

fn connection_options(change: impl FnOnce(&mut ConnectionOptions)) -> ConnectionOptions {
    let mut options = ConnectionOptions::default();
    change(&mut options);
    options
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// Writes a client frame header (mask bit set, all-zero mask key) for a payload of `len` bytes
/// into `out`; returns its length.
fn zero_mask_header(first_byte: u8, len: usize, out: &mut [u8]) -> usize {
    out[0] = first_byte;
    let mut n = if len < 126 {
        out[1] = 0x80 | len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 0x80 | 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 0x80 | 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    out[n..n + 4].fill(0);
    n += 4;
    n
}

/// A whole client frame: `first_byte` (FIN, RSV bits, opcode), then `payload`, masked with
/// `mask` (`None`: sent unmasked, which clients must not do).
fn frame_bytes(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0u8; 14];
    let header = zero_mask_header(first_byte, payload.len(), &mut out);
    out.truncate(header);
    match mask {
        Some(key) => {
            out[header - 4..].copy_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            out[1] &= 0x7f;
            out.truncate(header - 4);
            out.extend_from_slice(payload);
        }
    }
    out
}

fn first_byte(fin: bool, opcode: u8) -> u8 {
    if fin { 0x80 | opcode } else { opcode }
}

/// The text of a JSON invocation, with its record separator.
fn invocation(id: Option<&str>, target: &str, arguments: Value) -> String {
    let mut message = json!({"type": 1, "target": target, "arguments": arguments});
    if let Some(id) = id {
        message["invocationId"] = json!(id);
    }
    format!("{message}\u{1e}")
}

/// `Work(seq, filler)` invocations (no invocation id: nothing is sent back) with 7-digit
/// sequence numbers, so all have the same length; as WebSocket frames (all-zero mask key) or as
/// plain bytes (a POST body). Only the head of each message is built per message, on the stack.
struct WorkMessages {
    filler: Vec<u8>,
    websocket: bool,
}

const WORK_PREFIX: &[u8] = br#"{"type":1,"target":"Work","arguments":["#;
const WORK_TAIL: &[u8] = b"\"]}\x1e";
/// The first sequence number of client `k` is `SEQ_BASE + k * SEQ_STRIDE`.
const SEQ_BASE: u64 = 1_000_000;
const SEQ_STRIDE: u64 = 100_000;

impl WorkMessages {
    /// Messages of exactly `size` bytes (frame header excluded).
    fn new(size: usize, websocket: bool) -> Self {
        let fixed = WORK_PREFIX.len() + 7 + 2 + WORK_TAIL.len();
        WorkMessages {
            filler: vec![b'w'; size - fixed],
            websocket,
        }
    }

    fn payload_len(&self) -> usize {
        WORK_PREFIX.len() + 7 + 2 + self.filler.len() + WORK_TAIL.len()
    }

    /// Bytes of one message on the wire (frame header included).
    fn wire_len(&self) -> u64 {
        let mut header = [0u8; 14];
        let header = if self.websocket {
            zero_mask_header(first_byte(true, TEXT), self.payload_len(), &mut header)
        } else {
            0
        };
        (header + self.payload_len()) as u64
    }

    /// Writes the frame header (if any), the prefix and `seq` into `out`; returns the length.
    fn head(&self, seq: u64, out: &mut [u8; 64]) -> usize {
        assert!((1_000_000..10_000_000).contains(&seq), "7-digit sequence");
        let mut n = 0;
        if self.websocket {
            n = zero_mask_header(first_byte(true, TEXT), self.payload_len(), out);
        }
        out[n..n + WORK_PREFIX.len()].copy_from_slice(WORK_PREFIX);
        n += WORK_PREFIX.len();
        let mut digits = seq;
        for i in (0..7).rev() {
            out[n + i] = b'0' + (digits % 10) as u8;
            digits /= 10;
        }
        n += 7;
        out[n..n + 2].copy_from_slice(b",\"");
        n + 2
    }
}

/// How a [`Pusher`] stopped.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// All messages asked for are written.
    Done,
    /// A write made no progress within the stall time: the peer stopped reading.
    Stalled,
    /// The socket failed (closed by the peer).
    Failed,
}

/// Writes `Work` messages `base, base + 1, ...` on a socket and remembers where it stopped.
struct Pusher {
    base: u64,
    index: u64,
    part: u8,
    offset: usize,
    written: u64,
}

impl Pusher {
    fn new(base: u64) -> Self {
        Pusher {
            base,
            index: 0,
            part: 0,
            offset: 0,
            written: 0,
        }
    }

    /// Writes until `until` messages are complete, the socket stalls for `stall` or fails.
    async fn push(
        &mut self,
        stream: &mut TcpStream,
        messages: &WorkMessages,
        until: u64,
        stall: Duration,
    ) -> Pushed {
        let mut head = [0u8; 64];
        while self.index < until {
            let bytes: &[u8] = match self.part {
                0 => {
                    let n = messages.head(self.base + self.index, &mut head);
                    &head[..n]
                }
                1 => &messages.filler,
                _ => WORK_TAIL,
            };
            match tokio::time::timeout(stall, stream.write(&bytes[self.offset..])).await {
                Err(_) => return Pushed::Stalled,
                Ok(Err(_) | Ok(0)) => return Pushed::Failed,
                Ok(Ok(n)) => {
                    self.offset += n;
                    self.written += n as u64;
                    if self.offset == bytes.len() {
                        self.offset = 0;
                        self.part += 1;
                        if self.part == 3 {
                            self.part = 0;
                            self.index += 1;
                        }
                    }
                }
            }
        }
        Pushed::Done
    }

    /// Messages of which at least one byte was written.
    fn started(&self) -> u64 {
        self.index + u64::from(self.part != 0 || self.offset != 0)
    }
}

// ---------------------------------------------------------------------------------------------
// A raw WebSocket client
// ---------------------------------------------------------------------------------------------

/// How the TCP connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpEnd {
    Eof,
    Reset,
}

/// One server frame.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

#[derive(Debug)]
enum Event {
    Frame(Frame),
    End(TcpEnd),
    Timeout,
}

/// What a client saw while its connection ended, with times since `start`.
#[derive(Debug, Default)]
struct Ending {
    /// Hub messages (text without the record separator).
    messages: Vec<String>,
    /// The WebSocket Close frame's code (`Some(None)`: a Close without code).
    close: Option<Option<u16>>,
    close_at: Option<Duration>,
    tcp: Option<TcpEnd>,
    tcp_at: Option<Duration>,
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

struct RawWs {
    stream: TcpStream,
    /// Bytes read and not parsed yet.
    read: Vec<u8>,
    /// Payload of data frames not yet split into hub messages.
    text: Vec<u8>,
}

impl RawWs {
    /// Opens a WebSocket on `path` (`/hub` without `id`: negotiation skipped).
    async fn open(addr: SocketAddr, path: &str, buffers: Buffers) -> RawWs {
        let mut stream = tcp_connect(addr, buffers).await;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        within("upgrade request", stream.write_all(request.as_bytes()))
            .await
            .expect("write the upgrade request");
        let mut read = Vec::with_capacity(4096);
        let head_end = within("upgrade response", async {
            loop {
                if let Some(pos) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                    return pos + 4;
                }
                let n = stream.read_buf(&mut read).await.expect("read");
                assert!(n > 0, "connection closed during the upgrade");
            }
        })
        .await;
        let head = String::from_utf8_lossy(&read[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        read.drain(..head_end);
        RawWs {
            stream,
            read,
            text: Vec::with_capacity(1024),
        }
    }

    /// Opens `/hub` and completes the JSON handshake.
    async fn hub(server: &TestServer, buffers: Buffers) -> RawWs {
        let mut ws = RawWs::open(server.addr, "/hub", buffers).await;
        ws.send(
            true,
            TEXT,
            br#"{"protocol":"json","version":1}"#.iter().chain(b"\x1e"),
        )
        .await;
        assert_eq!(ws.message().await, "{}", "handshake response");
        ws
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes))
            .await
            .expect("write to the server");
    }

    /// Sends one masked frame.
    async fn send<'a>(&mut self, fin: bool, opcode: u8, payload: impl IntoIterator<Item = &'a u8>) {
        let payload: Vec<u8> = payload.into_iter().copied().collect();
        let frame = frame_bytes(first_byte(fin, opcode), &payload, Some(MASK));
        self.send_raw(&frame).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.send(true, TEXT, text.as_bytes()).await;
    }

    /// The next frame, the end of TCP, or a timeout after `limit`.
    async fn event(&mut self, limit: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.parse() {
                return Event::Frame(frame);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read)).await {
                Err(_) => return Event::Timeout,
                Ok(Ok(0)) => return Event::End(TcpEnd::Eof),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Event::End(TcpEnd::Reset),
            }
        }
    }

    /// Takes one complete server frame out of the read buffer.
    fn parse(&mut self) -> Option<Frame> {
        let buf = &self.read;
        if buf.len() < 2 {
            return None;
        }
        assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
        assert_eq!(buf[0] & 0x70, 0, "the server set RSV bits");
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
        let frame = Frame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0f,
            payload: buf[header..header + len].to_vec(),
        };
        self.read.drain(..header + len);
        Some(frame)
    }

    /// Takes a complete hub message out of the data received so far.
    fn take_message(&mut self) -> Option<String> {
        let pos = self.text.iter().position(|&b| b == 0x1e)?;
        let message: Vec<u8> = self.text.drain(..=pos).collect();
        Some(String::from_utf8(message[..pos].to_vec()).expect("hub message is UTF-8"))
    }

    /// The next hub message (hub Pings skipped), within 5 s.
    async fn message(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            while let Some(message) = self.take_message() {
                if message != r#"{"type":6}"# {
                    return message;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.event(left).await {
                Event::Frame(frame) if matches!(frame.opcode, TEXT | BINARY | CONTINUATION) => {
                    self.text.extend_from_slice(&frame.payload);
                }
                Event::Frame(frame) if matches!(frame.opcode, PING | PONG) => {}
                other => panic!("expected a hub message, got {other:?}"),
            }
        }
    }

    /// Reads until TCP ends or `limit` passes, answering nothing; times are since `start`.
    async fn ending(&mut self, start: Instant, limit: Duration) -> Ending {
        self.ending_answering(start, limit, None).await
    }

    /// [`RawWs::ending`], answering the server's Close frame with one after `answer_after`.
    async fn ending_answering(
        &mut self,
        start: Instant,
        limit: Duration,
        answer_after: Option<Duration>,
    ) -> Ending {
        let deadline = Instant::now() + limit;
        let mut ending = Ending::default();
        loop {
            while let Some(message) = self.take_message() {
                if message != r#"{"type":6}"# {
                    ending.messages.push(message);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.event(left).await {
                Event::Timeout => return ending,
                Event::End(end) => {
                    ending.tcp = Some(end);
                    ending.tcp_at = Some(start.elapsed());
                    return ending;
                }
                Event::Frame(frame) => match frame.opcode {
                    TEXT | BINARY | CONTINUATION => self.text.extend_from_slice(&frame.payload),
                    CLOSE => {
                        assert!(frame.fin, "fragmented Close frame");
                        ending.close = Some(close_code(&frame.payload));
                        ending.close_at = Some(start.elapsed());
                        if let Some(after) = answer_after {
                            tokio::time::sleep(after).await;
                            let payload = 1000u16.to_be_bytes();
                            // The server may be gone already; that is what the test looks at.
                            let frame = frame_bytes(first_byte(true, CLOSE), &payload, Some(MASK));
                            let _ = self.stream.write_all(&frame).await;
                        }
                    }
                    _ => {}
                },
            }
        }
    }
}

/// Asserts the over-limit ending: exactly the hub's Close message, WebSocket Close 1000, then
/// the end of TCP, all within `limit`; returns the time TCP ended.
#[track_caller]
fn assert_error_close(ending: &Ending, what: &str, limit: Duration) -> Duration {
    assert_eq!(ending.messages, [CLOSED_WITH_ERROR], "{what}: {ending:?}");
    assert_eq!(ending.close, Some(Some(1000)), "{what}: {ending:?}");
    let tcp_at = ending
        .tcp_at
        .unwrap_or_else(|| panic!("{what}: TCP still open: {ending:?}"));
    assert!(tcp_at <= limit, "{what}: TCP ended after {tcp_at:?}");
    tcp_at
}

// ---------------------------------------------------------------------------------------------
// 1. WebSocket messages over the limit; unfinished fragmented messages
// ---------------------------------------------------------------------------------------------

/// Hub limit 1 KiB, so the WebSocket limit is 2 KiB. Over 2 KiB in one frame or in fragments:
/// the hub Close message, WebSocket Close 1000 and the end of TCP within 1 s (the server cannot
/// read on, so it does not wait for the client's Close). Between 1 and 2 KiB in one frame (the
/// hub's parser): the same Close message and Close 1000; the client answers and TCP ends. Two messages of 0.9 KB in one frame (1.8 KB, as
/// clients coalesce) are both answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_message_over_the_limit_closes_with_the_hub_close_message() {
    let options = hub_options(|o| o.maximum_receive_message_size = Some(1024));
    let server = serve(
        limits_hub(closed_gate(), WorkLog::default()).options(options),
        Buffers::default(),
    )
    .await;
    let limit = Duration::from_secs(1);

    // Under the limits: two 0.9 KB messages in one 1.8 KB frame.
    let mut ws = RawWs::hub(&server, Buffers::default()).await;
    let value = "v".repeat(860);
    let one = invocation(Some("1"), "Echo", json!([value]));
    let two = invocation(Some("2"), "Echo", json!([value]));
    assert!(one.len() < 1024 && one.len() + two.len() > 1024);
    ws.send_text(&format!("{one}{two}")).await;
    for id in ["1", "2"] {
        let completion: Value = serde_json::from_str(&ws.message().await).expect("JSON");
        assert_eq!(
            completion,
            json!({"type": 3, "invocationId": id, "result": value})
        );
    }

    let mut times = Vec::new();
    // 3,300 bytes in one frame: refused on its header.
    let mut ws = RawWs::hub(&server, Buffers::default()).await;
    let big = invocation(Some("1"), "Echo", json!(["b".repeat(3300)]));
    let start = Instant::now();
    ws.send_text(&big).await;
    let ending = ws.ending(start, Duration::from_secs(3)).await;
    times.push((
        "one 3.3 KB frame",
        assert_error_close(&ending, "one frame", limit),
        ending.tcp,
    ));

    // 4 fragments of 800 bytes: refused when the third passes 2 KiB.
    let mut ws = RawWs::hub(&server, Buffers::default()).await;
    let start = Instant::now();
    let bytes = big.as_bytes();
    for (i, chunk) in bytes[..3200].chunks(800).enumerate() {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        // The server may close before the last fragment.
        let frame = frame_bytes(first_byte(false, opcode), chunk, Some(MASK));
        let _ = ws.stream.write_all(&frame).await;
    }
    let ending = ws.ending(start, Duration::from_secs(3)).await;
    times.push((
        "4 fragments of 800 B",
        assert_error_close(&ending, "fragments", limit),
        ending.tcp,
    ));

    // 1,500 bytes in one frame: under the WebSocket limit, over the hub's.
    let mut ws = RawWs::hub(&server, Buffers::default()).await;
    let middle = invocation(Some("1"), "Echo", json!(["m".repeat(1450)]));
    assert!((1025..2048).contains(&middle.len()));
    let start = Instant::now();
    ws.send_text(&middle).await;
    // Here the WebSocket is still readable: the server waits for the client's Close, which
    // this client sends at once, as the official clients do.
    let ending = ws
        .ending_answering(start, Duration::from_secs(3), Some(Duration::ZERO))
        .await;
    times.push((
        "one 1.5 KB frame",
        assert_error_close(&ending, "hub limit", limit),
        ending.tcp,
    ));

    println!("measured: over-limit closes (TCP end after the send): {times:?}");
    finish(&server).await;
}

/// A fragmented message that never ends, after the client's first Ping, with a 1 s client
/// timeout: the hub's Close message 1–3 s after the Ping (fragments are not messages, so the
/// 300 ms later one does not reset the timeout), WebSocket Close 1000; the client answers and
/// TCP ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_fragmented_message_is_closed_by_the_client_timeout() {
    let options = hub_options(|o| o.client_timeout_interval = Duration::from_secs(1));
    let server = serve(
        limits_hub(closed_gate(), WorkLog::default()).options(options),
        Buffers::default(),
    )
    .await;
    let mut ws = RawWs::hub(&server, Buffers::default()).await;
    ws.send_text("{\"type\":6}\u{1e}").await;
    let start = Instant::now();
    let message = invocation(Some("1"), "Echo", json!(["f".repeat(900)]));
    let bytes = message.as_bytes();
    ws.send(false, TEXT, &bytes[..400]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(false, CONTINUATION, &bytes[400..800]).await;
    let ending = ws
        .ending_answering(start, Duration::from_secs(5), Some(Duration::ZERO))
        .await;
    assert_eq!(ending.messages, [CLOSED_WITH_ERROR], "{ending:?}");
    assert_eq!(ending.close, Some(Some(1000)), "{ending:?}");
    let close_at = ending.close_at.expect("Close frame");
    assert!(
        close_at >= Duration::from_millis(900) && close_at <= Duration::from_secs(3),
        "client timeout after {close_at:?} since the Ping"
    );
    let tcp_at = ending.tcp_at.expect("TCP closed after the client's Close");
    assert!(tcp_at - close_at < Duration::from_millis(500), "{ending:?}");
    println!(
        "measured: unfinished fragments + 1 s client timeout: Close at {close_at:?}, TCP {:?} at {tcp_at:?}",
        ending.tcp
    );
    finish(&server).await;
}

/// 20 connections with default options each offer 1 MB of one unfinished fragmented message.
/// Each is closed (hub Close message, WebSocket 1000) once its bytes pass the 64 KiB WebSocket
/// limit (2 × the 32 KiB hub limit), and the process grows by less than 256 KiB per connection
/// (the server holds at most the 64 KiB limit plus the 8 KiB read buffer per connection; before
/// the byte-counted limit it buffered the whole message: ~1.1 MiB per connection).
#[test]
fn unfinished_fragments_of_20_connections_are_cut_at_the_limit() {
    in_fresh_process(
        "unfinished_fragments_of_20_connections_are_cut_at_the_limit",
        || async {
            const CONNECTIONS: usize = 20;
            const OFFERED: usize = 1024 * 1024;
            let reasons: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
            let builder = {
                let reasons = reasons.clone();
                limits_hub(closed_gate(), WorkLog::default()).on_disconnected(
                    move |_: HubCallerContext, error: Option<String>| {
                        let reasons = reasons.clone();
                        async move { reasons.lock().expect("reasons").push(error) }
                    },
                )
            };
            let server = serve(builder, Buffers::default()).await;
            // One shared buffer: the first fragment, and 4 continuation fragments of 16 KiB.
            let first = Arc::new(frame_bytes(
                first_byte(false, TEXT),
                br#"{"type":1,"target":"Echo","arguments":[""#,
                Some([0; 4]),
            ));
            let mut chunk = Vec::new();
            for _ in 0..4 {
                chunk.extend(frame_bytes(
                    first_byte(false, CONTINUATION),
                    &[b'a'; 16 * 1024],
                    Some([0; 4]),
                ));
            }
            let chunk = Arc::new(chunk);
            let mut clients = Vec::new();
            for _ in 0..CONNECTIONS {
                clients.push(RawWs::hub(&server, Buffers::default()).await);
            }
            let before = rss_kib();
            let peak = RssPeak::start();
            let start = Instant::now();
            let tasks: Vec<_> = clients
                .into_iter()
                .map(|mut ws| {
                    let (first, chunk) = (first.clone(), chunk.clone());
                    tokio::spawn(async move {
                        let mut offered = 0;
                        let mut ok = ws.stream.write_all(&first).await.is_ok();
                        while ok && offered < OFFERED {
                            ok = ws.stream.write_all(&chunk).await.is_ok();
                            offered += 64 * 1024;
                        }
                        let ending = ws.ending(start, Duration::from_secs(5)).await;
                        (offered, ending)
                    })
                })
                .collect();
            let mut endings = Vec::new();
            for task in tasks {
                endings.push(task.await.expect("client task"));
            }
            let peak = peak.stop();
            let after = rss_kib();
            // The server closes with the client's later bytes unread, so its kernel resets the
            // connection after the Close frame (with Nagle's algorithm on, the reset could
            // discard the still-held Close frame: hence TCP_NODELAY, as the serving recipe).
            let mut slowest = Duration::ZERO;
            let mut resets = 0;
            for (offered, ending) in &endings {
                let tcp_at =
                    assert_error_close(ending, "unfinished fragments", Duration::from_secs(3));
                slowest = slowest.max(tcp_at);
                resets += usize::from(ending.tcp == Some(TcpEnd::Reset));
                assert!(*offered <= OFFERED);
            }
            // Server side: every connection ended with the size error.
            eventually("every connection ended", || {
                reasons.lock().expect("reasons").len() == CONNECTIONS
            })
            .await;
            let reasons = reasons.lock().expect("reasons").clone();
            assert!(
                reasons
                    .iter()
                    .all(|r| r.as_deref() == Some("Connection closed with an error.")),
                "{reasons:?}"
            );
            let growth = peak.saturating_sub(before);
            println!(
                "measured: {CONNECTIONS} connections x 1 MB unfinished fragments: all got the hub \
                 Close + WS 1000, then TCP ended ({resets} by a reset: their unread bytes; slowest \
                 {slowest:?}); RSS {before} KiB -> peak {peak} KiB (+{growth} KiB, {} KiB/connection) \
                 -> {after} KiB",
                growth / CONNECTIONS as u64
            );
            assert!(
                growth < 256 * CONNECTIONS as u64,
                "RSS grew {growth} KiB for {CONNECTIONS} connections"
            );
            finish(&server).await;
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The incoming queue, bounded in bytes
// ---------------------------------------------------------------------------------------------

/// 20 WebSocket connections each start `Block()` (max 1 parallel invocation), then push 30 KB
/// `Work` invocations until their writes stall. The server stops reading: per connection it
/// takes at most the running invocation, the hub's queue of parsed invocations (below the 64 KiB
/// incoming buffer size plus one message), the transport's queue (the same), the message the
/// reader holds (under the 64 KiB WebSocket limit) and the 8 KiB read buffer; the process grows
/// accordingly. Released, every invocation runs, in order.
#[test]
fn incoming_queue_is_bounded_in_bytes_while_the_hub_is_blocked() {
    in_fresh_process(
        "incoming_queue_is_bounded_in_bytes_while_the_hub_is_blocked",
        || async {
            const CONNECTIONS: u64 = 20;
            const MESSAGE: usize = 30_000;
            const INCOMING: u64 = 64 * KIB;
            let ws_limit = 64 * KIB;
            let gate = Arc::new(Semaphore::new(0));
            let log = WorkLog::default();
            let builder = limits_hub(gate.clone(), log.clone())
                .options(hub_options(|o| {
                    o.maximum_parallel_invocations_per_client = 1;
                    o.maximum_receive_message_size = Some(32 * 1024);
                }))
                .connection_options(connection_options(|o| {
                    o.incoming_buffer_size = INCOMING as usize;
                }));
            let small = Buffers {
                recv: Some(64 * 1024),
                send: Some(64 * 1024),
            };
            let server = serve(builder, small).await;
            let messages = WorkMessages::new(MESSAGE, true);
            let block = frame_bytes(
                first_byte(true, TEXT),
                invocation(None, "Block", json!([])).as_bytes(),
                Some([0; 4]),
            );
            let mut clients = Vec::new();
            for k in 0..CONNECTIONS {
                let mut ws = RawWs::hub(&server, small).await;
                ws.send_raw(&block).await;
                clients.push((ws, Pusher::new(SEQ_BASE + k * SEQ_STRIDE)));
            }
            let before = rss_kib();
            let peak = RssPeak::start();
            let stall = Duration::from_millis(500);
            let mut pushed =
                futures_util::future::join_all(clients.into_iter().map(|(mut ws, mut pusher)| {
                    let messages = &messages;
                    async move {
                        let end = pusher.push(&mut ws.stream, messages, 1000, stall).await;
                        (ws, pusher, end)
                    }
                }))
                .await;
            let peak = peak.stop();
            let one = messages.wire_len();
            let bound = one + 2 * (INCOMING + one) + ws_limit + READ_BUFFER;
            let mut most = 0;
            for (ws, pusher, end) in &pushed {
                assert_eq!(*end, Pushed::Stalled, "the server kept reading");
                let taken = taken_by_server(&ws.stream, pusher.written);
                most = most.max(taken);
                assert!(
                    taken <= bound,
                    "the server took {taken} of {} bytes (bound {bound})",
                    pusher.written
                );
                assert!(taken > INCOMING, "the server took only {taken} bytes");
            }
            let growth = peak.saturating_sub(before);
            let offered: u64 = pushed.iter().map(|(_, p, _)| p.written).sum();
            println!(
                "measured: incoming queue, hub blocked: {CONNECTIONS} connections wrote {} KiB in all \
                 before stalling; the server took at most {} KiB per connection (bound {} KiB); \
                 RSS +{growth} KiB ({} KiB/connection)",
                offered / KIB,
                most / KIB,
                bound / KIB,
                growth / CONNECTIONS
            );
            assert!(
                growth <= CONNECTIONS * bound * 2 / KIB,
                "RSS grew {growth} KiB"
            );
            // Released: the rest of each started message is written, then all run in order.
            gate.add_permits(1);
            let mut expected = 0;
            for (ws, pusher, _) in &mut pushed {
                let until = pusher.started();
                let end = pusher
                    .push(&mut ws.stream, &messages, until, Duration::from_secs(5))
                    .await;
                assert_eq!(end, Pushed::Done);
                expected += until as usize;
            }
            eventually("every Work invocation ran", || log.total() == expected).await;
            for (_, pusher, _) in &pushed {
                let sequence = log.sequence_starting_at(pusher.base);
                let wanted: Vec<u64> = (pusher.base..pusher.base + pusher.index).collect();
                assert_eq!(sequence, wanted, "order of one connection's invocations");
            }
            finish(&server).await;
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 3. POST bodies (long polling and Server-Sent Events)
// ---------------------------------------------------------------------------------------------

/// A long-polling or SSE connection after its handshake, with a poll (or the SSE stream) open.
struct HttpConnection {
    token: String,
    _receiving: tokio::task::JoinHandle<()>,
}

/// Negotiates and completes the JSON handshake over long polling (`sse == false`) or SSE, and
/// keeps a poll (or the event stream) open in a task.
async fn http_connection(server: &TestServer, sse: bool) -> HttpConnection {
    let (_, token) = common::negotiate(server).await;
    let handshake = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    let receiving = if sse {
        let mut events = common::sse(server, &token).await;
        assert_eq!(events.status, 200);
        assert_eq!(common::post(server, &token, handshake).await.status, 200);
        let event = events.next_event().await;
        assert!(event.contains("data: {}\u{1e}"), "{event:?}");
        tokio::spawn(async move {
            let _events = events;
            std::future::pending::<()>().await;
        })
    } else {
        assert_eq!(common::poll(server, &token).await.status, 200);
        assert_eq!(common::post(server, &token, handshake).await.status, 200);
        let response = common::poll(server, &token).await;
        assert_eq!(response.body, "{}\u{1e}");
        let request = server.http.get(server.url(&format!("/hub?id={token}")));
        tokio::spawn(async move {
            let _ = request.send().await;
        })
    };
    HttpConnection {
        token,
        _receiving: receiving,
    }
}

/// Opens a TCP connection and writes the head of `POST /hub?id={token}` with `length`.
async fn post_head(server: &TestServer, token: &str, length: u64, buffers: Buffers) -> TcpStream {
    let mut stream = tcp_connect(server.addr, buffers).await;
    let head = format!(
        "POST /hub?id={token} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
         Content-Length: {length}\r\n\r\n",
        server.addr
    );
    within("POST head", stream.write_all(head.as_bytes()))
        .await
        .expect("write the POST head");
    stream
}

/// The status of the HTTP response on `stream`, or `None` when none arrives within `limit`.
async fn response_status(stream: &mut TcpStream, limit: Duration) -> Option<u16> {
    let mut head = [0u8; 512];
    let mut len = 0;
    let read = tokio::time::timeout(limit, async {
        loop {
            let n = stream
                .read(&mut head[len..])
                .await
                .expect("read the response");
            assert!(n > 0, "connection closed without a response");
            len += n;
            if head[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == head.len() {
                return;
            }
        }
    })
    .await;
    read.ok()?;
    let text = String::from_utf8_lossy(&head[..len]);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok());
    Some(status.unwrap_or_else(|| panic!("not an HTTP response: {text:?}")))
}

/// Three long-polling and three SSE connections each POST 2 MB of 1 KB `Work` invocations
/// behind a `Block()` while the hub is blocked. Each body streams in with back-pressure: the
/// server takes at most the 64 KiB incoming buffer, the hub's queue (32 invocations) and one
/// body chunk of the HTTP server (at most ~400 KiB, hyper's largest read) per POST, and the
/// process grows accordingly (before, each 2 MB body was read whole). Released, every POST
/// completes with 200 and every invocation runs, in order.
#[test]
fn post_bodies_stream_in_with_back_pressure() {
    in_fresh_process("post_bodies_stream_in_with_back_pressure", || async {
        const POSTS: u64 = 6;
        const MESSAGE: usize = 1000;
        const COUNT: u64 = 2000;
        const INCOMING: u64 = 64 * KIB;
        let gate = Arc::new(Semaphore::new(0));
        let log = WorkLog::default();
        let builder = limits_hub(gate.clone(), log.clone())
            .options(hub_options(|o| {
                o.maximum_parallel_invocations_per_client = 1
            }))
            .connection_options(connection_options(|o| {
                o.incoming_buffer_size = INCOMING as usize;
            }));
        let small = Buffers {
            recv: Some(64 * 1024),
            send: Some(64 * 1024),
        };
        let server = serve(builder, small).await;
        let messages = WorkMessages::new(MESSAGE, false);
        let block = invocation(None, "Block", json!([]));
        let length = block.len() as u64 + COUNT * messages.wire_len();
        let mut posts = Vec::new();
        for k in 0..POSTS {
            let connection = http_connection(&server, k % 2 == 1).await;
            let mut stream = post_head(&server, &connection.token, length, small).await;
            within("write Block", stream.write_all(block.as_bytes()))
                .await
                .expect("write");
            posts.push((connection, stream, Pusher::new(SEQ_BASE + k * SEQ_STRIDE)));
        }
        let before = rss_kib();
        let peak = RssPeak::start();
        let stall = Duration::from_millis(500);
        let mut pushed = futures_util::future::join_all(posts.into_iter().map(
            |(connection, mut stream, mut pusher)| {
                let messages = &messages;
                async move {
                    let end = pusher.push(&mut stream, messages, COUNT, stall).await;
                    (connection, stream, pusher, end)
                }
            },
        ))
        .await;
        let peak = peak.stop();
        let bound = INCOMING + 33 * messages.wire_len() + 420 * KIB;
        let mut most = 0;
        for (_, stream, pusher, end) in &mut pushed {
            assert_eq!(*end, Pushed::Stalled, "the server read the whole body");
            let taken = taken_by_server(stream, pusher.written + block.len() as u64);
            most = most.max(taken);
            assert!(
                taken <= bound,
                "the server took {taken} bytes (bound {bound})"
            );
            assert_eq!(response_status(stream, Duration::ZERO).await, None);
        }
        let growth = peak.saturating_sub(before);
        println!(
            "measured: {POSTS} POSTs of {} KiB, hub blocked: the server took at most {} KiB per \
             POST (bound {} KiB); RSS +{growth} KiB ({} KiB/POST)",
            length / KIB,
            most / KIB,
            bound / KIB,
            growth / POSTS
        );
        assert!(growth <= POSTS * bound * 2 / KIB, "RSS grew {growth} KiB");
        gate.add_permits(1);
        for (_, stream, pusher, _) in &mut pushed {
            let end = pusher
                .push(stream, &messages, COUNT, Duration::from_secs(10))
                .await;
            assert_eq!(end, Pushed::Done);
        }
        for (_, stream, _, _) in &mut pushed {
            assert_eq!(
                response_status(stream, Duration::from_secs(10)).await,
                Some(200)
            );
        }
        eventually("every Work invocation ran", || {
            log.total() == (POSTS * COUNT) as usize
        })
        .await;
        for (_, _, pusher, _) in &pushed {
            let wanted: Vec<u64> = (pusher.base..pusher.base + COUNT).collect();
            assert_eq!(log.sequence_starting_at(pusher.base), wanted);
        }
        finish(&server).await;
    });
}

/// 20 POSTs of 1 MB (4 KB `Work` invocations) on ONE long-polling connection, the first behind
/// a `Block()`: one body is read at a time. While the hub is blocked the first POST's body
/// streams in up to the back-pressure bound and each other POST is read no further than the
/// HTTP server's first reads (asserted: at most 32 KiB of its 1 MB); none is answered (no 409, as ASP.NET). Released,
/// all get 200 and the invocations run one POST after the other (never interleaved).
#[test]
fn concurrent_posts_on_one_connection_are_read_one_at_a_time() {
    in_fresh_process(
        "concurrent_posts_on_one_connection_are_read_one_at_a_time",
        || async {
            const POSTS: u64 = 20;
            const MESSAGE: usize = 4000;
            const COUNT: u64 = 250;
            const INCOMING: u64 = 64 * KIB;
            let gate = Arc::new(Semaphore::new(0));
            let log = WorkLog::default();
            let builder = limits_hub(gate.clone(), log.clone())
                .options(hub_options(|o| {
                    o.maximum_parallel_invocations_per_client = 1
                }))
                .connection_options(connection_options(|o| {
                    o.incoming_buffer_size = INCOMING as usize;
                }));
            let small = Buffers {
                recv: Some(64 * 1024),
                send: Some(64 * 1024),
            };
            let server = serve(builder, small).await;
            let connection = http_connection(&server, false).await;
            let messages = WorkMessages::new(MESSAGE, false);
            let block = invocation(None, "Block", json!([]));
            let length = COUNT * messages.wire_len();
            let before = rss_kib();
            let peak = RssPeak::start();
            // The first POST starts Block and fills the bounded input.
            let mut first = post_head(
                &server,
                &connection.token,
                block.len() as u64 + length,
                small,
            )
            .await;
            first.write_all(block.as_bytes()).await.expect("write");
            let mut first_pusher = Pusher::new(SEQ_BASE);
            let stall = Duration::from_millis(500);
            let end = first_pusher.push(&mut first, &messages, COUNT, stall).await;
            assert_eq!(end, Pushed::Stalled);
            let mut others = Vec::new();
            for k in 1..POSTS {
                let stream = post_head(&server, &connection.token, length, small).await;
                others.push((stream, Pusher::new(SEQ_BASE + k * SEQ_STRIDE)));
            }
            let mut others = futures_util::future::join_all(others.into_iter().map(
                |(mut stream, mut pusher)| {
                    let messages = &messages;
                    async move {
                        let end = pusher.push(&mut stream, messages, COUNT, stall).await;
                        (stream, pusher, end)
                    }
                },
            ))
            .await;
            let peak = peak.stop();
            let first_taken = taken_by_server(&first, first_pusher.written + block.len() as u64);
            let bound = INCOMING + 33 * messages.wire_len() + 420 * KIB;
            assert!(
                first_taken <= bound,
                "first POST: {first_taken} bytes taken"
            );
            let mut most = 0;
            for (stream, pusher, end) in &mut others {
                assert_eq!(*end, Pushed::Stalled, "a waiting POST was read");
                let taken = taken_by_server(stream, pusher.written);
                most = most.max(taken);
                assert!(taken <= 32 * KIB, "a waiting POST had {taken} bytes read");
                assert_eq!(
                    response_status(stream, Duration::ZERO).await,
                    None,
                    "answered early"
                );
            }
            assert_eq!(response_status(&mut first, Duration::ZERO).await, None);
            let growth = peak.saturating_sub(before);
            println!(
                "measured: {POSTS} concurrent 1 MB POSTs on one connection, hub blocked: first \
                 POST {} KiB taken (bound {} KiB), the {} waiting ones at most {most} bytes each; \
                 RSS +{growth} KiB",
                first_taken / KIB,
                bound / KIB,
                POSTS - 1
            );
            assert!(
                growth <= 4 * bound / KIB + POSTS * 64,
                "RSS grew {growth} KiB"
            );
            gate.add_permits(1);
            let (first_done, others_done) = tokio::join!(
                async {
                    let end = first_pusher
                        .push(&mut first, &messages, COUNT, Duration::from_secs(20))
                        .await;
                    assert_eq!(end, Pushed::Done);
                    response_status(&mut first, Duration::from_secs(20)).await
                },
                futures_util::future::join_all(others.iter_mut().map(|(stream, pusher, _)| {
                    let messages = &messages;
                    async move {
                        let end = pusher
                            .push(stream, messages, COUNT, Duration::from_secs(20))
                            .await;
                        assert_eq!(end, Pushed::Done);
                        response_status(stream, Duration::from_secs(20)).await
                    }
                }))
            );
            assert_eq!(first_done, Some(200));
            assert!(
                others_done.iter().all(|s| *s == Some(200)),
                "{others_done:?}"
            );
            eventually("every Work invocation ran", || {
                log.total() == (POSTS * COUNT) as usize
            })
            .await;
            let sequences = log.sequences();
            assert_eq!(sequences.len(), 1, "one connection");
            let sequence = &sequences[0];
            for block in sequence.chunks(COUNT as usize) {
                let base = block[0];
                let wanted: Vec<u64> = (base..base + COUNT).collect();
                assert_eq!(block, wanted, "one POST's invocations, not interleaved");
            }
            assert_eq!(sequence[0], SEQ_BASE, "the first POST first");
            finish(&server).await;
        },
    );
}

/// On long polling and on SSE, a POST whose body stalls halfway holds the connection's send
/// lock: a second, complete POST is not answered while the first waits; once the first body is
/// finished both get 200, the first first, and their invocations run in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_post_body_holds_the_send_lock() {
    let log = WorkLog::default();
    let server = serve(limits_hub(closed_gate(), log.clone()), Buffers::default()).await;
    let messages = WorkMessages::new(200, false);
    let mut measured = Vec::new();
    for (k, sse) in [(0u64, false), (1, true)] {
        let connection = http_connection(&server, sse).await;
        let first_seq = SEQ_BASE + k * SEQ_STRIDE;
        let mut head = [0u8; 64];
        let n = messages.head(first_seq, &mut head);
        let mut one = head[..n].to_vec();
        one.extend_from_slice(&messages.filler);
        one.extend_from_slice(WORK_TAIL);
        let n = messages.head(first_seq + 1, &mut head);
        let mut two = head[..n].to_vec();
        two.extend_from_slice(&messages.filler);
        two.extend_from_slice(WORK_TAIL);

        let mut first = post_head(
            &server,
            &connection.token,
            one.len() as u64,
            Buffers::default(),
        )
        .await;
        first.write_all(&one[..100]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut second = post_head(
            &server,
            &connection.token,
            two.len() as u64,
            Buffers::default(),
        )
        .await;
        second.write_all(&two).await.expect("write");
        let waited = Instant::now();
        assert_eq!(
            response_status(&mut second, Duration::from_millis(700)).await,
            None,
            "the second POST was served while the first body stalled"
        );
        first.write_all(&one[100..]).await.expect("write");
        assert_eq!(
            response_status(&mut first, Duration::from_secs(5)).await,
            Some(200)
        );
        assert_eq!(
            response_status(&mut second, Duration::from_secs(5)).await,
            Some(200)
        );
        measured.push((if sse { "SSE" } else { "long polling" }, waited.elapsed()));
        eventually("both invocations ran", || {
            log.sequence_starting_at(first_seq).len() == 2
        })
        .await;
        assert_eq!(
            log.sequence_starting_at(first_seq),
            [first_seq, first_seq + 1]
        );
    }
    println!("measured: the second POST waited (until the first body was finished): {measured:?}");
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// 4. The outgoing queue, bounded in bytes; the transport send timeout
// ---------------------------------------------------------------------------------------------

/// 10 WebSocket clients with an 8 KiB receive buffer stop reading after the handshake; another
/// connection broadcasts 30 KB messages to them every 20 ms. Each stalled one is closed as a slow
/// consumer after the 64 KiB outgoing buffer plus what the kernel took (and at most two messages
/// more), i.e. after a few messages instead of 1,024; its socket is released within 1 s; the
/// sender's calls are never held up (each answered within 1 s, where ASP.NET blocks the sender
/// for its 10 s send timeout); the process grows by less than 512 KiB per stalled connection
/// (it holds at most about two copies of one batch: the queue's and the WebSocket writer's).
#[test]
fn slow_consumers_are_closed_after_the_outgoing_buffer() {
    in_fresh_process(
        "slow_consumers_are_closed_after_the_outgoing_buffer",
        || async {
            const STALLED: usize = 10;
            const MESSAGE: usize = 30_000;
            const OUTGOING: u64 = 64 * KIB;
            let broadcasts = Arc::new(AtomicU64::new(0));
            // Per connection: the broadcast count and the time when on_disconnected ran.
            let closed_at: Arc<Mutex<HashMap<String, (u64, Instant)>>> = Arc::default();
            let builder = {
                let (broadcasts, closed_at) = (broadcasts.clone(), closed_at.clone());
                let counter = broadcasts.clone();
                limits_hub(closed_gate(), WorkLog::default())
                    .method("Count", move |_: HubCallerContext| {
                        let broadcasts = counter.clone();
                        async move { broadcasts.fetch_add(1, Ordering::AcqRel) + 1 }
                    })
                    .on_disconnected({
                        let broadcasts = broadcasts.clone();
                        move |ctx: HubCallerContext, _error: Option<String>| {
                            let (broadcasts, closed_at) = (broadcasts.clone(), closed_at.clone());
                            async move {
                                let count = broadcasts.load(Ordering::Acquire);
                                closed_at.lock().expect("log").insert(
                                    ctx.connection_id().to_owned(),
                                    (count, Instant::now()),
                                );
                            }
                        }
                    })
                    .options(hub_options(|o| {
                        o.maximum_receive_message_size = Some(64 * 1024);
                    }))
                    .connection_options(connection_options(|o| {
                        o.outgoing_buffer_size = OUTGOING as usize;
                    }))
            };
            let server = serve(
                builder,
                Buffers {
                    recv: None,
                    send: Some(16 * 1024),
                },
            )
            .await;
            let stalled_buffers = Buffers {
                recv: Some(8 * 1024),
                send: None,
            };
            let mut stalled = Vec::new();
            for _ in 0..STALLED {
                let mut ws = RawWs::hub(&server, stalled_buffers).await;
                ws.send_text(&invocation(Some("1"), "Echo", json!(["ready"])))
                    .await;
                assert!(ws.message().await.contains("ready"));
                stalled.push(ws);
            }
            let mut sender = runtime::connect(&server).await;
            assert_eq!(server.hub.context().connection_count(), STALLED + 1);
            // When each stalled connection's server socket leaves ESTABLISHED.
            let addresses: Vec<(SocketAddr, SocketAddr)> =
                stalled.iter().map(|ws| ends(&ws.stream)).collect();
            let port = server.addr.port();
            let monitor = tokio::task::spawn_blocking(move || {
                let mut left = vec![None::<Instant>; addresses.len()];
                let give_up = Instant::now() + Duration::from_secs(20);
                while left.iter().any(Option::is_none) && Instant::now() < give_up {
                    let table = TcpTable::of_port(port);
                    for (i, (client, server)) in addresses.iter().enumerate() {
                        if left[i].is_none() && !table.server_end_open(*client, *server) {
                            left[i] = Some(Instant::now());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                left
            });
            let payload = "p".repeat(MESSAGE);
            let before = rss_kib();
            let peak = RssPeak::start();
            let mut kernel_most = 0;
            let mut slowest = Duration::ZERO;
            let mut calls = 0;
            let mut all_closed_at = None;
            while calls < 200 {
                calls += 1;
                let started = Instant::now();
                // `Count` then `Broadcast`: the count is what on_disconnected sees.
                sender
                    .call("c", "Count", json!([]))
                    .await
                    .assert_result(json!(calls));
                sender
                    .call("b", "Broadcast", json!([payload]))
                    .await
                    .assert_void();
                slowest = slowest.max(started.elapsed());
                for ws in &stalled {
                    kernel_most = kernel_most.max(in_kernel_to_client(&ws.stream));
                }
                if closed_at.lock().expect("log").len() == STALLED {
                    let first = *all_closed_at.get_or_insert(calls);
                    if calls >= first + 10 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let peak = peak.stop();
            let all_closed_at = all_closed_at.expect("every stalled connection closed");
            let left = monitor.await.expect("monitor");
            let closed: Vec<(u64, Instant)> =
                closed_at.lock().expect("log").values().copied().collect();
            let last_disconnect = closed.iter().map(|(_, at)| *at).max().expect("closes");
            let last_release = left
                .iter()
                .map(|at| at.expect("a stalled socket still ESTABLISHED after 20 s"))
                .max()
                .expect("sockets");
            let released = last_release.saturating_duration_since(last_disconnect);
            let one = (MESSAGE + 40) as u64;
            let closes: Vec<u64> = closed.iter().map(|(count, _)| *count).collect();
            for &count in &closes {
                // The broadcast that found the queue full is not counted as accepted.
                let accepted = (count - 1) * one;
                assert!(
                    accepted <= OUTGOING + 2 * one + kernel_most,
                    "closed after {accepted} bytes (kernel held up to {kernel_most})"
                );
                assert!(
                    accepted >= OUTGOING,
                    "closed too early, after {accepted} bytes"
                );
            }
            let growth = peak.saturating_sub(before);
            println!(
                "measured: slow consumers: {STALLED} closed after {closes:?} broadcasts of 30 KB \
             (outgoing buffer 64 KiB, kernel held up to {} KiB per connection); the last socket left \
             ESTABLISHED {released:?} after the last on_disconnected (all closed by broadcast \
             {all_closed_at}); slowest \
             sender call {slowest:?} over {calls} broadcasts; RSS +{growth} KiB",
                kernel_most / KIB
            );
            assert!(
                slowest < Duration::from_secs(1),
                "the sender was held up {slowest:?}"
            );
            assert!(
                released < Duration::from_secs(1),
                "sockets released after {released:?}"
            );
            assert!(growth < 512 * STALLED as u64, "RSS grew {growth} KiB");
            sender.close().await;
            finish(&server).await;
        },
    );
}

/// With `transport_send_timeout` 1 s, a client that never reads and asked for a 4 MB result:
/// the one write of that Completion gets stuck, and the connection is closed (hub disconnect,
/// and the server's socket leaves ESTABLISHED) within 1–3 s, although nothing more is sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_write_is_cut_by_the_transport_send_timeout() {
    let disconnected = Arc::new(Mutex::new(None::<Instant>));
    let builder = {
        let disconnected = disconnected.clone();
        limits_hub(closed_gate(), WorkLog::default())
            .on_disconnected(move |_: HubCallerContext, _error: Option<String>| {
                let disconnected = disconnected.clone();
                async move {
                    *disconnected.lock().expect("time") = Some(Instant::now());
                }
            })
            .connection_options(connection_options(|o| {
                o.transport_send_timeout = Duration::from_secs(1);
            }))
    };
    let server = serve(
        builder,
        Buffers {
            recv: None,
            send: Some(16 * 1024),
        },
    )
    .await;
    let mut ws = RawWs::hub(
        &server,
        Buffers {
            recv: Some(8 * 1024),
            send: None,
        },
    )
    .await;
    let invoked = Instant::now();
    ws.send_text(&invocation(Some("1"), "Big", json!([4_000_000])))
        .await;
    // The clock starts with the write: when the Completion's first bytes reach the kernel.
    within("the Completion's first bytes", async {
        while in_kernel_to_client(&ws.stream) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let start = Instant::now();
    let encoded = invoked.elapsed();
    let closed = within("the socket to leave ESTABLISHED", async {
        loop {
            if !server_end_open(&ws.stream) {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    eventually("on_disconnected", || {
        disconnected.lock().expect("time").is_some()
    })
    .await;
    let disconnected_at = disconnected
        .lock()
        .expect("time")
        .map(|t| t.saturating_duration_since(start))
        .unwrap_or_default();
    let kernel = in_kernel_to_client(&ws.stream);
    println!(
        "measured: send timeout 1 s: writing began {encoded:?} after the invocation; from then \
         the socket was closed at {closed:?}, on_disconnected at {disconnected_at:?}; {} KiB of \
         the 4 MB stuck in the kernel",
        kernel / KIB
    );
    assert!(
        closed >= Duration::from_millis(900) && closed <= Duration::from_secs(3),
        "closed at {closed:?}"
    );
    assert!(disconnected_at <= Duration::from_secs(3));
    assert!(kernel < 1024 * KIB, "{kernel} bytes reached the kernel");
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Streams per connection
// ---------------------------------------------------------------------------------------------

fn too_many_streams(method: &str) -> String {
    format!(
        "Failed to invoke '{method}' because the connection already has the maximum number of open streams (3)."
    )
}

/// `maximum_streams_per_client` 3: with three streams open (server-to-client or uploads, in any
/// mix), a fourth of either kind is answered with the exact Completion error; ordinary
/// invocations still run; a cancelled stream or a completed upload frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fourth_stream_is_refused() {
    let options = hub_options(|o| o.maximum_streams_per_client = 3);
    let server = serve(
        limits_hub(closed_gate(), WorkLog::default()).options(options),
        Buffers::default(),
    )
    .await;
    let mut c = runtime::connect(&server).await;
    for id in ["s1", "s2", "s3"] {
        c.stream(id, "Forever", json!([])).await;
        c.expect(json!({"type": 2, "invocationId": id, "item": 1}))
            .await;
    }
    // A fourth server-to-client stream, and an upload.
    c.stream("s4", "Forever", json!([])).await;
    c.expect(json!({"type": 3, "invocationId": "s4", "error": too_many_streams("Forever")}))
        .await;
    c.send(json!({"type": 1, "invocationId": "u1", "target": "Upload", "arguments": [], "streamIds": ["up1"]}))
        .await;
    c.expect(json!({"type": 3, "invocationId": "u1", "error": too_many_streams("Upload")}))
        .await;
    // The refused upload's stream id is unknown: its items are ignored.
    c.send(json!({"type": 2, "invocationId": "up1", "item": 5}))
        .await;
    c.call("e1", "Echo", json!(["still fine"]))
        .await
        .assert_result(json!("still fine"));

    // Cancelling s1 frees a slot: an upload takes it, and the limit holds again.
    c.send(json!({"type": 5, "invocationId": "s1"})).await;
    c.expect(json!({"type": 3, "invocationId": "s1"})).await;
    c.send(json!({"type": 1, "invocationId": "u2", "target": "Upload", "arguments": [], "streamIds": ["up2"]}))
        .await;
    c.send(json!({"type": 2, "invocationId": "up2", "item": 20}))
        .await;
    c.stream("s5", "Forever", json!([])).await;
    c.expect(json!({"type": 3, "invocationId": "s5", "error": too_many_streams("Forever")}))
        .await;
    // Completing the upload frees its slot (its Completion is the method's result).
    c.send(json!({"type": 2, "invocationId": "up2", "item": 22}))
        .await;
    c.send(json!({"type": 3, "invocationId": "up2"})).await;
    c.expect(json!({"type": 3, "invocationId": "u2", "result": 42}))
        .await;
    c.stream("s6", "Forever", json!([])).await;
    c.expect(json!({"type": 2, "invocationId": "s6", "item": 1}))
        .await;
    c.stream("s7", "Forever", json!([])).await;
    c.expect(json!({"type": 3, "invocationId": "s7", "error": too_many_streams("Forever")}))
        .await;
    c.call("e2", "Echo", json!([2]))
        .await
        .assert_result(json!(2));
    c.close().await;
    finish(&server).await;
}

// ---------------------------------------------------------------------------------------------
// 6. The close handshake and protocol violations
// ---------------------------------------------------------------------------------------------

/// The client's Close 1000 is answered with Close 1000, then TCP ends (within 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_is_answered_with_close_1000() {
    let server = serve(
        limits_hub(closed_gate(), WorkLog::default()),
        Buffers::default(),
    )
    .await;
    let mut ws = RawWs::hub(&server, Buffers::default()).await;
    let start = Instant::now();
    ws.send(true, CLOSE, &1000u16.to_be_bytes()).await;
    let ending = ws.ending(start, Duration::from_secs(3)).await;
    assert!(ending.messages.is_empty(), "{ending:?}");
    assert_eq!(ending.close, Some(Some(1000)), "{ending:?}");
    assert_eq!(ending.tcp, Some(TcpEnd::Eof), "{ending:?}");
    let tcp_at = ending.tcp_at.expect("TCP end");
    assert!(tcp_at < Duration::from_secs(1), "{ending:?}");
    println!(
        "measured: client Close -> server Close 1000 at {:?}, TCP EOF at {tcp_at:?}",
        ending.close_at
    );
    finish(&server).await;
}

/// A hub method closes its connection (`close(Some("bye"), false)`): the hub Close message, WS
/// Close 1000, then the server waits for the client's Close: TCP stays open until the client
/// answers (after 300 ms here) and ends right after; without an answer it ends at the 1 s
/// `websocket_close_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_waits_for_the_clients_close() {
    let close_timeout = Duration::from_secs(1);
    let server = serve(
        limits_hub(closed_gate(), WorkLog::default()).connection_options(connection_options(|o| {
            o.websocket_close_timeout = close_timeout
        })),
        Buffers::default(),
    )
    .await;
    let bye = r#"{"type":7,"error":"bye"}"#;
    let answer_after = Duration::from_millis(300);

    let mut answering = RawWs::hub(&server, Buffers::default()).await;
    let start = Instant::now();
    answering
        .send_text(&invocation(Some("1"), "CloseWithBye", json!([])))
        .await;
    let answered = answering
        .ending_answering(start, Duration::from_secs(4), Some(answer_after))
        .await;
    assert_eq!(answered.messages, [bye], "{answered:?}");
    assert_eq!(answered.close, Some(Some(1000)), "{answered:?}");
    let close_at = answered.close_at.expect("Close frame");
    let tcp_at = answered.tcp_at.expect("TCP end");
    assert!(
        tcp_at >= close_at + answer_after,
        "TCP ended before the client answered: {answered:?}"
    );
    assert!(
        tcp_at < close_at + answer_after + Duration::from_millis(500),
        "TCP did not end soon after the client's Close: {answered:?}"
    );

    let mut silent = RawWs::hub(&server, Buffers::default()).await;
    let start = Instant::now();
    silent
        .send_text(&invocation(Some("1"), "CloseWithBye", json!([])))
        .await;
    let unanswered = silent.ending(start, Duration::from_secs(4)).await;
    assert_eq!(unanswered.messages, [bye], "{unanswered:?}");
    assert_eq!(unanswered.close, Some(Some(1000)), "{unanswered:?}");
    let wait = unanswered.tcp_at.expect("TCP end") - unanswered.close_at.expect("Close");
    assert!(
        wait >= close_timeout - Duration::from_millis(100)
            && wait <= close_timeout + Duration::from_secs(1),
        "TCP ended {wait:?} after the server's Close"
    );
    println!(
        "measured: server-initiated close: answered after 300 ms -> TCP {:?} {:?} after the \
         Close; unanswered -> TCP {:?} {wait:?} after the Close (timeout {close_timeout:?})",
        answered.tcp,
        tcp_at - close_at,
        unanswered.tcp
    );
    finish(&server).await;
}

/// Protocol violations after the handshake, each answered with a Close frame (1002 protocol
/// error, 1007 invalid payload) and the end of TCP within 1 s: an unmasked frame, invalid UTF-8
/// in a text frame, a reserved opcode, an RSV bit without extension, a Ping with a 200-byte
/// payload (control frames carry at most 125) and a fragmented Ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_1002_or_1007() {
    let server = serve(
        limits_hub(closed_gate(), WorkLog::default()),
        Buffers::default(),
    )
    .await;
    let ping = r#"{"type":6}"#.to_owned() + "\u{1e}";
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            frame_bytes(first_byte(true, TEXT), ping.as_bytes(), None),
            1002,
        ),
        (
            "invalid UTF-8",
            frame_bytes(first_byte(true, TEXT), &[0xff, 0xfe, 0x1e], Some(MASK)),
            1007,
        ),
        (
            "reserved opcode 0x3",
            frame_bytes(first_byte(true, 0x3), b"x", Some(MASK)),
            1002,
        ),
        (
            "RSV1 without extension",
            frame_bytes(0x40 | first_byte(true, TEXT), ping.as_bytes(), Some(MASK)),
            1002,
        ),
        (
            "200-byte Ping",
            frame_bytes(first_byte(true, PING), &[0; 200], Some(MASK)),
            1002,
        ),
        (
            "fragmented Ping",
            frame_bytes(first_byte(false, PING), b"p", Some(MASK)),
            1002,
        ),
    ];
    let mut measured = Vec::new();
    for (what, frame, code) in cases {
        let mut ws = RawWs::hub(&server, Buffers::default()).await;
        let start = Instant::now();
        ws.send_raw(&frame).await;
        let ending = ws.ending(start, Duration::from_secs(3)).await;
        assert!(ending.messages.is_empty(), "{what}: {ending:?}");
        assert_eq!(ending.close, Some(Some(code)), "{what}: {ending:?}");
        let tcp_at = ending
            .tcp_at
            .unwrap_or_else(|| panic!("{what}: TCP still open: {ending:?}"));
        assert!(tcp_at < Duration::from_secs(1), "{what}: {ending:?}");
        measured.push((what, code, ending.tcp, tcp_at));
    }
    println!("measured: protocol violations (close code, TCP end, time): {measured:?}");
    finish(&server).await;
}

/// A raw connection (`connection_router`) with `incoming_buffer_size` 4 KiB: a WebSocket message
/// over 4 KiB, in one frame or in fragments, gets Close 1009 (message too big) and TCP ends
/// within 1 s; a 4 KiB message is still echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_connection_message_over_the_limit_gets_1009() {
    let hub = build(limits_hub(closed_gate(), WorkLog::default()));
    let echo = connection_router(
        connection_options(|o| o.incoming_buffer_size = 4096),
        |mut connection: RawConnection| async move {
            while let Some(data) = connection.receive().await {
                if !connection.send(data).await {
                    break;
                }
            }
        },
    );
    let router = axum::Router::new()
        .nest("/hub", hub.router())
        .nest("/echo", echo);
    let server = serve_router(hub, router, Buffers::default()).await;

    let mut ws = RawWs::open(server.addr, "/echo", Buffers::default()).await;
    ws.send(true, BINARY, &[7u8; 4096]).await;
    let mut echoed = 0;
    while echoed < 4096 {
        match ws.event(Duration::from_secs(5)).await {
            Event::Frame(frame) if frame.opcode == BINARY => {
                assert!(frame.payload.iter().all(|&b| b == 7));
                echoed += frame.payload.len();
            }
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    assert_eq!(echoed, 4096);

    let mut measured = Vec::new();
    for fragments in [1usize, 3] {
        let mut ws = RawWs::open(server.addr, "/echo", Buffers::default()).await;
        let start = Instant::now();
        let piece = 5000 / fragments;
        for i in 0..fragments {
            let opcode = if i == 0 { BINARY } else { CONTINUATION };
            let frame = frame_bytes(
                first_byte(i + 1 == fragments, opcode),
                &vec![1u8; piece],
                Some(MASK),
            );
            let _ = ws.stream.write_all(&frame).await;
        }
        let ending = ws.ending(start, Duration::from_secs(3)).await;
        assert!(ending.messages.is_empty(), "{ending:?}");
        assert_eq!(
            ending.close,
            Some(Some(1009)),
            "{fragments} fragment(s): {ending:?}"
        );
        let tcp_at = ending.tcp_at.expect("TCP end");
        assert!(tcp_at < Duration::from_secs(1), "{ending:?}");
        measured.push((fragments, ending.tcp, tcp_at));
    }
    println!(
        "measured: raw connection, 5,000 B over a 4 KiB limit (fragments, TCP end, time): {measured:?}"
    );
    finish(&server).await;
}
