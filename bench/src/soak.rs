//! soak: many ordinary connections doing a low-rate echo while one attacker runs abuse phases.
//!
//! `signalr-bench --soak` starts one server (our `bench-server`, or with `--servers aspnetcore` the
//! real ASP.NET Core server from `../shared/peers/dotnet-peer`, serving the same benchmark hub on
//! `/hub`), opens `--soak-conns` (10,000) WebSocket/JSON connections that each invoke
//! `Echo(32 B)` once every 10 s (spread evenly, so 1,000 invocations/s in all), and then runs the
//! phases in turn, `--soak-phase` (20) seconds each (slowloris twice that, to outlast a 30 s
//! request-head timeout), between a `--soak-calm` (10 s) baseline and recovery:
//!
//! | phase | the attacker |
//! |---|---|
//! | `baseline` | nothing (reference figures) |
//! | `ws-oversize` | keeps 64 WebSockets each holding 1 MiB of a fragmented text message that never ends (FIN never set), replacing any the server closes; and every 200 ms opens one more that sends a complete 40 KB message (over the 32 KiB limit) |
//! | `big-posts` | 8 long-polling connections, each with a poll always pending and two concurrent 1 MiB POST bodies (valid Pings) in a loop; and every second a throwaway long-polling connection that POSTs one 2 MiB message |
//! | `slowloris` | 2,000 negotiate request heads and 500 POST bodies (each to a long-polling connection of its own) trickled one byte every 2 s; each is reopened as soon as the server answers or closes it (the figures count answers by status) |
//! | `fanout-stall` | 4 group members that joined the group `stall` and never read (8 KiB receive buffers), and a feeder sending `GroupBroadcast("stall", 30 KB)` 100 times a second |
//! | `recovery` | nothing: do latency and memory come back? |
//!
//! Every `--soak-interval` (5) seconds it prints: time, phase, the ordinary clients' echo
//! replies/s and p50/p99 latency over the interval (counted from each echo's scheduled time, so a
//! stalled server shows up as latency, not as a lower rate), ordinary connections that failed
//! (error, close or no reply within 10 s) and reconnects the server refused, the server's RSS and
//! open file descriptors, and what the attacker saw. Each ordinary connection that fails
//! reconnects (skip negotiation). The default run takes about 2.5 minutes per server. The phase
//! lengths are fixed, so the figures of one server can be set beside another's; "closed by
//! server" counts attacker connections the server ended (for WebSockets: a Close frame or the
//! end of the stream).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use signalr_protocol::{HubProtocol, Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, sleep, timeout};

use crate::conn::{Conn, Result, Stamp, Template, negotiate};
use crate::proc::{ServerCommand, ServerProcess, cpu_us, rss_bytes};
use crate::stats::histogram;

/// How long one echo may take before its connection counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;
/// Hub handshake for JSON, as sent by the official clients.
const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
const PING: &[u8] = b"{\"type\":6}\x1e";
const MIB: f64 = 1024.0 * 1024.0;

/// The servers a soak can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `bench-server` (signalr-server).
    Ours,
    /// ASP.NET Core 10 SignalR: `dotnet-peer server` from `../shared/peers`.
    AspNetCore,
}

impl Target {
    /// Parses `ours` or `aspnetcore`.
    pub fn parse(name: &str) -> Option<Target> {
        match name.trim().to_ascii_lowercase().as_str() {
            "ours" => Some(Target::Ours),
            "aspnetcore" | "aspnet" => Some(Target::AspNetCore),
            _ => None,
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Ours => "ours",
            Target::AspNetCore => "aspnetcore",
        }
    }
}

/// The command that starts `target` (logs go to `logs`).
pub fn command(target: Target, logs: &std::path::Path) -> Result<ServerCommand> {
    let argv = match target {
        Target::Ours => {
            let program = crate::servers::ours_binary()?;
            if !program.exists() {
                return Err(format!(
                    "{} is missing: cargo build -p signalr-bench",
                    program.display()
                )
                .into());
            }
            vec![program.display().to_string()]
        }
        Target::AspNetCore => {
            let program = crate::servers::aspnetcore_peer();
            if !program.exists() {
                return Err(format!(
                    "{} is absent (the ASP.NET Core peer exists only next to the project's shared/ folder)",
                    program.display()
                )
                .into());
            }
            vec![program.display().to_string(), "server".to_owned()]
        }
    };
    let mut argv = argv;
    argv.extend(["--port", "0"].map(String::from));
    Ok(ServerCommand {
        argv,
        log: logs.join(format!("soak-{}.log", target.name())),
    })
}

/// Sizes and durations of a soak run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Ordinary connections.
    pub conns: usize,
    /// Length of each attack phase.
    pub phase: Duration,
    /// Length of the baseline and recovery phases.
    pub calm: Duration,
    /// Report interval.
    pub interval: Duration,
    /// Each ordinary connection echoes once per this period.
    pub period: Duration,
    /// Attack phases to run (names of [`PHASES`]); empty: all.
    pub only: Vec<String>,
}

/// The attack phases, in order.
pub const PHASES: [&str; 4] = ["ws-oversize", "big-posts", "slowloris", "fanout-stall"];

// ---------------------------------------------------------------------------------------------
// what the ordinary clients record

/// Per-interval tallies of the ordinary clients.
struct Tally {
    hist: RefCell<Histogram<u64>>,
    failed: Cell<u64>,
    refused: Cell<u64>,
    last_error: RefCell<Option<String>>,
    stop: Cell<bool>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: RefCell::new(histogram()),
            failed: Cell::new(0),
            refused: Cell::new(0),
            last_error: RefCell::new(None),
            stop: Cell::new(false),
        }
    }

    fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.hist.borrow_mut().record(us);
    }

    fn failed(&self, why: String) {
        self.failed.set(self.failed.get() + 1);
        *self.last_error.borrow_mut() = Some(why);
    }

    /// The interval's figures; resets them.
    fn take(&self) -> Snapshot {
        let mut h = self.hist.borrow_mut();
        let replies = h.len();
        let ms = |q: f64| {
            if replies > 0 {
                h.value_at_quantile(q) as f64 / 1000.0
            } else {
                0.0
            }
        };
        let (p50, p99) = (ms(0.5), ms(0.99));
        h.reset();
        Snapshot {
            replies,
            p50,
            p99,
            failed: self.failed.replace(0),
            refused: self.refused.replace(0),
            error: self.last_error.borrow_mut().take(),
        }
    }
}

/// One interval of the ordinary clients.
struct Snapshot {
    /// Echo replies received.
    replies: u64,
    /// Median latency, ms.
    p50: f64,
    /// 99th percentile latency, ms.
    p99: f64,
    /// Connections that failed.
    failed: u64,
    /// Reconnect attempts that failed.
    refused: u64,
    /// The last failure's reason.
    error: Option<String>,
}

/// One ordinary client: an `Echo` every `period` from `first` on; reconnects when it fails.
async fn ordinary(
    addr: SocketAddr,
    mut conn: Conn,
    tally: Rc<Tally>,
    template: Rc<Template>,
    first: tokio::time::Instant,
    period: Duration,
) {
    let mut ticks = tokio::time::interval_at(first, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq: u32 = 0;
    loop {
        let scheduled = ticks.tick().await;
        if tally.stop.get() {
            return;
        }
        seq = seq.wrapping_add(1);
        let frame = template.frame(&mut conn.wbuf, seq);
        let outcome = async {
            conn.send_frame(frame).await?;
            match timeout(REPLY_TIMEOUT, conn.reply(&Stamp::id(seq))).await {
                Ok(Ok(Some(stamp))) if stamp.seq == seq => Ok(()),
                Ok(Ok(_)) => Err("a reply with another payload".into()),
                Ok(Err(err)) => Err(err),
                Err(_) => Err("no reply within 10 s".into()),
            }
        }
        .await;
        match outcome {
            Ok(()) => tally.record(scheduled.elapsed()),
            Err(err) => {
                if tally.stop.get() {
                    return;
                }
                tally.failed(err.to_string());
                // Reconnect until the server takes us back (or the run ends).
                loop {
                    match timeout(
                        Duration::from_secs(10),
                        Conn::connect(addr, "", HubProtocol::Json),
                    )
                    .await
                    {
                        Ok(Ok(fresh)) => {
                            conn = fresh;
                            break;
                        }
                        _ => {
                            tally.refused.set(tally.refused.get() + 1);
                            if tally.stop.get() {
                                return;
                            }
                            sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// raw sockets for the attacker

/// What the attacker saw in the current phase.
#[derive(Default)]
struct Attack {
    opened: Cell<u64>,
    open: Cell<i64>,
    closed_by_server: Cell<u64>,
    connect_failed: Cell<u64>,
    sent: Cell<u64>,
    /// Phase-specific figures (name, value), printed as they are.
    extra: RefCell<Vec<(String, u64)>>,
}

impl Attack {
    fn opened(&self) {
        self.opened.set(self.opened.get() + 1);
        self.open.set(self.open.get() + 1);
    }

    fn ended(&self, by_server: bool) {
        self.open.set(self.open.get() - 1);
        if by_server {
            self.closed_by_server.set(self.closed_by_server.get() + 1);
        }
    }

    fn sent(&self, n: usize) {
        self.sent.set(self.sent.get() + n as u64);
    }

    fn bump(&self, name: impl Into<String>) {
        let name = name.into();
        let mut extra = self.extra.borrow_mut();
        match extra.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v += 1,
            None => extra.push((name, 1)),
        }
    }

    /// Sets figure `name` to `value`.
    fn set(&self, name: &str, value: u64) {
        let mut extra = self.extra.borrow_mut();
        match extra.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => extra.push((name.to_owned(), value)),
        }
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "open {} (opened {}), closed by server {}, connect failures {}, sent {:.1} MiB",
            self.open.get(),
            self.opened.get(),
            self.closed_by_server.get(),
            self.connect_failed.get(),
            self.sent.get() as f64 / MIB
        );
        for (k, v) in self.extra.borrow().iter() {
            s.push_str(&format!(", {k} {v}"));
        }
        s
    }
}

/// A masked client frame (RFC 6455 §5.2); the mask key is fixed, which a server must accept.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x5a, 0x17, 0xc3, 0x81];
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&KEY);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    out
}

/// Reads an HTTP response head; returns the status code and the bytes after the head.
async fn read_head(stream: &mut TcpStream) -> Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("bad status line")?;
            return Ok((status, buf[end + 4..].to_vec()));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Err("response head too long".into());
        }
    }
}

/// A raw WebSocket on `/hub` (skip negotiation) after the JSON hub handshake.
async fn raw_hub_ws(addr: SocketAddr) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET /hub HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c29hay1hdHRhY2tlci0xMg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let (status, mut rest) = read_head(&mut stream).await?;
    if status != 101 {
        return Err(format!("upgrade answered {status}").into());
    }
    stream.write_all(&frame(1, true, HANDSHAKE)).await?;
    let mut chunk = [0u8; 1024];
    while !rest.contains(&0x1e) {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("closed during the hub handshake".into());
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    Ok(stream)
}

/// Reads and drops until the server closes the stream (or it errs).
async fn until_closed(stream: &mut TcpStream) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Reads server frames until a Close frame (answered, as a client must) or the end of the stream.
/// Returns whether a Close frame came.
async fn ws_until_close(stream: &mut TcpStream) -> bool {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Whole frames at the front of the buffer (server frames are not masked).
        loop {
            if buf.len() < 2 {
                break;
            }
            let (opcode, len7) = (buf[0] & 0x0f, usize::from(buf[1] & 0x7f));
            let (len, at): (usize, usize) = match len7 {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (
                        usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                        10,
                    )
                }
                126 | 127 => break,
                n => (n, 2),
            };
            if buf.len() < at.saturating_add(len) {
                break;
            }
            if opcode == 8 {
                let code = buf.get(at..at + len.min(2)).unwrap_or_default().to_vec();
                let _ = stream.write_all(&frame(8, true, &code)).await;
                return true;
            }
            buf.drain(..at + len);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); returns the status.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let (status, _) = read_head(&mut stream).await?;
    until_closed(&mut stream).await;
    Ok(status)
}

/// A long-polling connection after its hub handshake; returns its `/hub?id=` path.
async fn long_polling(addr: SocketAddr) -> Result<String> {
    let token = negotiate(addr).await?;
    let path = format!("/hub?id={token}");
    let first = http(addr, "GET", &path, b"").await?;
    if first != 200 {
        return Err(format!("first poll {first}").into());
    }
    let st = http(addr, "POST", &path, HANDSHAKE).await?;
    if st != 200 {
        return Err(format!("handshake POST {st}").into());
    }
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// the attacks

/// ws-oversize: holders of unfinished 1 MiB messages, plus a stream of 40 KB messages.
async fn ws_oversize(addr: SocketAddr, attack: Rc<Attack>) {
    let mut tasks = JoinSet::new();
    // Built once: masking a megabyte per connection would make the load generator the bottleneck.
    let fragment = Rc::new(frame(0, false, &[b'y'; 64 * 1024]));
    for _ in 0..64 {
        let attack = attack.clone();
        let fragment = fragment.clone();
        tasks.spawn_local(async move {
            loop {
                let Ok(Ok(mut ws)) = timeout(Duration::from_secs(10), raw_hub_ws(addr)).await
                else {
                    attack.connect_failed.set(attack.connect_failed.get() + 1);
                    sleep(Duration::from_millis(500)).await;
                    continue;
                };
                attack.opened();
                let mut ok = ws
                    .write_all(&frame(
                        1,
                        false,
                        b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"",
                    ))
                    .await
                    .is_ok();
                let mut sent = 0;
                while ok && sent < 1024 * 1024 {
                    // A server that stops reading blocks us here: that is its answer.
                    ok = ws.write_all(&fragment).await.is_ok();
                    if ok {
                        attack.sent(fragment.len());
                        sent += 64 * 1024;
                    }
                }
                if ok {
                    // Hold it, never finishing the message, until the server gives up.
                    ws_until_close(&mut ws).await;
                }
                attack.ended(true);
                sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let oversized = {
        let mut m =
            b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"".to_vec();
        m.extend(std::iter::repeat_n(b'x', 40 * 1024));
        m.extend_from_slice(b"\"]}\x1e");
        frame(1, true, &m)
    };
    let oversized = Rc::new(oversized);
    loop {
        sleep(Duration::from_millis(200)).await;
        let attack = attack.clone();
        let message = oversized.clone();
        tasks.spawn_local(async move {
            let Ok(Ok(mut ws)) = timeout(Duration::from_secs(10), raw_hub_ws(addr)).await else {
                attack.connect_failed.set(attack.connect_failed.get() + 1);
                return;
            };
            attack.opened();
            if ws.write_all(&message).await.is_ok() {
                attack.sent(message.len());
            }
            let closed = timeout(Duration::from_secs(5), ws_until_close(&mut ws))
                .await
                .is_ok();
            attack.bump(if closed {
                "40KB-closed"
            } else {
                "40KB-still-open-5s"
            });
            attack.ended(closed);
        });
        // Reap finished one-shot tasks.
        while tasks.try_join_next().is_some() {}
    }
}

/// big-posts: concurrent 1 MiB POSTs on long-polling connections, and 2 MiB single messages.
async fn big_posts(addr: SocketAddr, attack: Rc<Attack>) {
    let mut tasks = JoinSet::new();
    let pings: Rc<Vec<u8>> = Rc::new(PING.repeat(1024 * 1024 / PING.len()));
    for _ in 0..8 {
        let attack = attack.clone();
        let pings = pings.clone();
        tasks.spawn_local(async move {
            loop {
                let Ok(Ok(path)) = timeout(Duration::from_secs(10), long_polling(addr)).await
                else {
                    attack.connect_failed.set(attack.connect_failed.get() + 1);
                    sleep(Duration::from_millis(500)).await;
                    continue;
                };
                attack.opened();
                let alive = Rc::new(Cell::new(true));
                let mut inner = JoinSet::new();
                {
                    let (path, alive) = (path.clone(), alive.clone());
                    inner.spawn_local(async move {
                        while alive.get() {
                            match http(addr, "GET", &path, b"").await {
                                Ok(200 | 204) => {}
                                _ => alive.set(false),
                            }
                        }
                    });
                }
                for _ in 0..2 {
                    let (path, alive, attack, pings) =
                        (path.clone(), alive.clone(), attack.clone(), pings.clone());
                    inner.spawn_local(async move {
                        while alive.get() {
                            match http(addr, "POST", &path, &pings).await {
                                Ok(200) => attack.sent(pings.len()),
                                Ok(st) => {
                                    attack.bump(format!("1MiB-POST-{st}"));
                                    alive.set(false);
                                }
                                Err(_) => {
                                    attack.bump("POST-error");
                                    alive.set(false);
                                }
                            }
                        }
                    });
                }
                while inner.join_next().await.is_some() {
                    if !alive.get() {
                        inner.abort_all();
                    }
                }
                attack.ended(true);
            }
        });
    }
    let huge = {
        let mut m =
            b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"".to_vec();
        m.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
        m.extend_from_slice(b"\"]}\x1e");
        Rc::new(m)
    };
    loop {
        sleep(Duration::from_secs(1)).await;
        let attack = attack.clone();
        let huge = huge.clone();
        tasks.spawn_local(async move {
            let Ok(Ok(path)) = timeout(Duration::from_secs(10), long_polling(addr)).await else {
                attack.connect_failed.set(attack.connect_failed.get() + 1);
                return;
            };
            attack.opened();
            match timeout(Duration::from_secs(30), http(addr, "POST", &path, &huge)).await {
                Ok(Ok(st)) => {
                    attack.sent(huge.len());
                    attack.bump(format!("2MiB-POST-{st}"));
                }
                _ => attack.bump("2MiB-no-answer"),
            }
            attack.ended(true);
        });
        while tasks.try_join_next().is_some() {}
    }
}

/// One trickler: sends a request head (`body` false: an unfinished negotiate head; true: the
/// complete head of a long-polling send on a connection of its own, with `Content-Length:
/// 100000`), then one more byte every 2 s, until the server answers or closes; then again.
async fn trickle(addr: SocketAddr, body: bool, attack: Rc<Attack>) {
    let kind = if body { "body" } else { "head" };
    loop {
        let head = if body {
            match timeout(Duration::from_secs(10), long_polling(addr)).await {
                Ok(Ok(path)) => format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n"
                ),
                _ => {
                    attack.connect_failed.set(attack.connect_failed.get() + 1);
                    sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        } else {
            format!("POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ")
        };
        let tail: &[u8] = if body {
            PING
        } else {
            b"abcdefghijklmnopqrstuvwxyz"
        };
        let Ok(Ok(mut stream)) = timeout(Duration::from_secs(10), TcpStream::connect(addr)).await
        else {
            attack.connect_failed.set(attack.connect_failed.get() + 1);
            sleep(Duration::from_secs(1)).await;
            continue;
        };
        attack.opened();
        let t0 = Instant::now();
        let mut ok = stream.write_all(head.as_bytes()).await.is_ok();
        let mut i = 0;
        let mut chunk = [0u8; 1024];
        let mut answer = None;
        while ok {
            tokio::select! {
                read = stream.read(&mut chunk) => {
                    // Anything back (a 408/400, or the end) means the server gave up on us.
                    ok = false;
                    if let Ok(n) = read {
                        answer = std::str::from_utf8(&chunk[..n])
                            .ok()
                            .and_then(|t| t.split_whitespace().nth(1))
                            .map(str::to_owned);
                    }
                }
                () = sleep(Duration::from_secs(2)) => {
                    let byte = [tail[i % tail.len()]];
                    i += 1;
                    ok = stream.write_all(&byte).await.is_ok();
                    attack.sent(1);
                }
            }
        }
        attack.bump(format!("{kind}-{}", answer.as_deref().unwrap_or("closed")));
        attack.set(&format!("{kind}-last-lived-s"), t0.elapsed().as_secs());
        attack.ended(true);
        sleep(Duration::from_millis(100)).await;
    }
}

/// slowloris: 2,000 trickled request heads and 500 trickled POST bodies.
async fn slowloris(addr: SocketAddr, attack: Rc<Attack>) {
    let mut tasks = JoinSet::new();
    for i in 0..2500 {
        tasks.spawn_local(trickle(addr, i >= 2000, attack.clone()));
        if i % 100 == 99 {
            sleep(Duration::from_millis(20)).await;
        }
    }
    std::future::pending::<()>().await;
}

/// fanout-stall: members that never read, and a feeder.
async fn fanout_stall(addr: SocketAddr, attack: Rc<Attack>, held: Rc<RefCell<Vec<Conn>>>) {
    for _ in 0..4 {
        match Conn::connect_with(addr, "", HubProtocol::Json, Some(8 * 1024)).await {
            Ok(mut member) => {
                if member
                    .invoke("j", "JoinGroup", vec![Payload::from_value("stall")])
                    .await
                    .is_ok()
                {
                    attack.opened();
                    held.borrow_mut().push(member);
                } else {
                    attack.connect_failed.set(attack.connect_failed.get() + 1);
                }
            }
            Err(_) => attack.connect_failed.set(attack.connect_failed.get() + 1),
        }
    }
    let Ok(mut feeder) = Conn::connect(addr, "", HubProtocol::Json).await else {
        attack.connect_failed.set(attack.connect_failed.get() + 1);
        return;
    };
    let Ok(template) = Template::new(
        HubProtocol::Json,
        "GroupBroadcast",
        false,
        &["stall"],
        30_000,
    ) else {
        return;
    };
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0;
    loop {
        ticks.tick().await;
        seq += 1;
        let f = template.frame(&mut feeder.wbuf, seq);
        let n = f.len();
        if feeder.send_frame(f).await.is_err() {
            attack.bump("feeder-closed");
            return;
        }
        attack.sent(n);
    }
}

// ---------------------------------------------------------------------------------------------
// the run

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Runs the soak against `target`, printing as it goes.
pub async fn run(target: Target, command: &ServerCommand, o: &SoakOptions) -> Result<()> {
    let server = ServerProcess::start(command).await?;
    let addr = server.addr;
    let pid = server.pid;
    let t_start = Instant::now();
    eprintln!(
        "soak against {} (pid {pid}, {addr}): opening {} connections",
        target.name(),
        o.conns
    );
    let conns: Vec<Result<Conn>> = stream::iter(0..o.conns)
        .map(|_| async move {
            timeout(
                Duration::from_secs(20),
                Conn::connect(addr, "", HubProtocol::Json),
            )
            .await
            .map_err(|_| "connect timed out")?
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut ready = Vec::with_capacity(o.conns);
    let mut setup_failed = 0;
    for c in conns {
        match c {
            Ok(c) => ready.push(c),
            Err(_) => setup_failed += 1,
        }
    }
    eprintln!(
        "   {} connected in {:.1} s ({setup_failed} failed), RSS {:.1} MiB, {} fds",
        ready.len(),
        t_start.elapsed().as_secs_f64(),
        rss_bytes(pid) as f64 / MIB,
        open_fds(pid)
    );
    let tally = Rc::new(Tally::new());
    let template = Rc::new(Template::new(HubProtocol::Json, "Echo", true, &[], 32)?);
    let mut clients = JoinSet::new();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let n = ready.len().max(1);
    for (i, conn) in ready.into_iter().enumerate() {
        let offset = o.period.mul_f64(i as f64 / n as f64);
        clients.spawn_local(ordinary(
            addr,
            conn,
            tally.clone(),
            template.clone(),
            start + offset,
            o.period,
        ));
    }
    // Let every client make its first echo before the baseline counts.
    sleep(o.period).await;
    let _ = tally.take();

    let mut phases: Vec<&str> = vec!["baseline"];
    phases.extend(
        PHASES
            .iter()
            .copied()
            .filter(|p| o.only.is_empty() || o.only.iter().any(|x| x == p)),
    );
    phases.push("recovery");
    println!(
        "| t (s) | phase | echo/s | p50 ms | p99 ms | failed | refused | RSS MiB | fds | server CPU % | generator CPU % | attacker |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let t0 = Instant::now();
    for phase in phases {
        let attack = Rc::new(Attack::default());
        let held = Rc::new(RefCell::new(Vec::new()));
        let mut attacker = JoinSet::new();
        match phase {
            "ws-oversize" => {
                attacker.spawn_local(ws_oversize(addr, attack.clone()));
            }
            "big-posts" => {
                attacker.spawn_local(big_posts(addr, attack.clone()));
            }
            "slowloris" => {
                attacker.spawn_local(slowloris(addr, attack.clone()));
            }
            "fanout-stall" => {
                attacker.spawn_local(fanout_stall(addr, attack.clone(), held.clone()));
            }
            _ => {}
        }
        let length = match phase {
            "baseline" | "recovery" => o.calm,
            // Long enough to see Kestrel's 30 s request-head timeout.
            "slowloris" => o.phase * 2,
            _ => o.phase,
        };
        let phase_start = Instant::now();
        let mut last = Instant::now();
        let mut cpu_server = cpu_us(Some(pid));
        let mut cpu_gen = cpu_us(None);
        while phase_start.elapsed() < length {
            let left = length.saturating_sub(phase_start.elapsed());
            sleep(o.interval.min(left)).await;
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            let (server_now, gen_now) = (cpu_us(Some(pid)), cpu_us(None));
            let pct = |a: u64, b: u64| b.saturating_sub(a) as f64 / (secs * 1e4);
            let (server_pct, gen_pct) = (pct(cpu_server, server_now), pct(cpu_gen, gen_now));
            (cpu_server, cpu_gen) = (server_now, gen_now);
            let Snapshot {
                replies: count,
                p50,
                p99,
                failed,
                refused,
                error,
            } = tally.take();
            let who = if phase == "baseline" || phase == "recovery" {
                "–".to_owned()
            } else {
                attack.summary()
            };
            println!(
                "| {:.0} | {phase} | {:.0} | {p50:.2} | {p99:.2} | {failed} | {refused} | {:.1} | {} | {server_pct:.0} | {gen_pct:.0} | {who} |",
                t0.elapsed().as_secs_f64(),
                count as f64 / secs,
                rss_bytes(pid) as f64 / MIB,
                open_fds(pid),
            );
            if let Some(error) = error {
                println!("|  |  | last failure: {error} |  |  |  |  |  |  |  |  |  |");
            }
        }
        attacker.shutdown().await;
        // The members that never read: did the server close them?
        let members: Vec<Conn> = held.borrow_mut().drain(..).collect();
        if !members.is_empty() {
            let mut closed = 0;
            let mut frames = 0;
            let count = members.len();
            for mut m in members {
                let (ended, f) = m.drain(Duration::from_secs(2)).await;
                closed += usize::from(ended);
                frames += f;
            }
            println!(
                "|  | {phase} | stalled members closed by the server: {closed}/{count} ({frames} frames were still buffered for them) |  |  |  |  |  |  |  |  |  |"
            );
        }
    }
    tally.stop.set(true);
    clients.shutdown().await;
    server.stop().await;
    eprintln!(
        "soak against {} done in {:.0} s",
        target.name(),
        t_start.elapsed().as_secs_f64()
    );
    Ok(())
}
