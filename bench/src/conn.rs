//! One load-generator connection: SignalR over WebSockets (skip negotiation), on top of
//! `signalr-protocol` and tokio-tungstenite, or over Server-Sent Events or long polling
//! (negotiated; see [`crate::http_conn`]).
//!
//! Lean on purpose: each connection reuses one read buffer and one write buffer, and invocations
//! are stamped into a pre-encoded [`Template`] (an invocation id and a timestamp patched in place)
//! instead of being encoded afresh, so sending allocates nothing once the buffers are warm.
//! Received messages are parsed with [`HubProtocol::parse_message`], which allocates a little
//! (the invocation id and target strings); the ceiling check tells whether that matters.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use signalr_protocol::{
    CompletionResult, HandshakeRequest, HandshakeResponse, HubMessage, HubProtocol, Invocation,
    NegotiateResponse, Payload, msgpack,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::http_conn;

/// Errors of the load generator: their text is all a benchmark needs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Origin of the timestamps carried in payloads (one process, one clock).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since [`base`].
pub fn now_ns() -> u64 {
    u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Whether new connections repair aiosignalr's MessagePack headers (see [`set_peer_fixup`]).
static PEER_FIXUP: AtomicBool = AtomicBool::new(false);

/// Turns the aiosignalr fix-up on for connections made from now on.
///
/// aiosignalr 0.1.1 writes the headers of MessagePack Completion, StreamItem and
/// CancelInvocation messages as the integer 128 (`msgpack.packb` of its `_EMPTY_HEADERS = 0x80`)
/// instead of an empty map. The JavaScript client ignores headers, but strict parsers (ASP.NET's
/// .NET client, signalr-protocol) reject every such message. With the fix-up on, the load
/// generator rewrites those two bytes (`cc 80`) to an empty map (`80`) before parsing.
pub fn set_peer_fixup(on: bool) {
    PEER_FIXUP.store(on, Ordering::Relaxed);
}

/// The transport of a load-generator connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// WebSockets, negotiation skipped (as the official clients may).
    WebSockets,
    /// Server-Sent Events (negotiated), sends as POSTs.
    ServerSentEvents,
    /// Long polling (negotiated), sends as POSTs.
    LongPolling,
}

impl Transport {
    /// The name in case parameters and notes.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSockets => "WebSockets",
            Transport::ServerSentEvents => "SSE",
            Transport::LongPolling => "long polling",
        }
    }
}

/// What carries a connection's frames.
enum Wire {
    Ws(Box<WebSocketStream<TcpStream>>),
    Http(Box<HttpWire>),
}

/// The two halves of an SSE or long-polling connection.
struct HttpWire {
    poster: http_conn::Poster,
    /// `None` once handed to a separate task ([`Conn::take_receiver`]).
    receiver: Option<http_conn::Receiver>,
}

/// Send an Ack at the latest this long after the previous one (when something arrived since).
const ACK_INTERVAL: Duration = Duration::from_secs(1);
/// Send an Ack as soon as more than this many bytes of numbered messages arrived since the
/// previous one: half the server's default replay buffer (100,000 bytes), so that the server
/// never waits for an Ack with its buffer full.
const ACK_BYTES: usize = 50_000;

/// What a connection with stateful reconnect counts, to acknowledge the server's messages
/// (see [`Conn::connect_stateful`]). It keeps nothing for resending: the load generator never
/// reconnects.
struct Stateful {
    /// Numbered messages received (Invocation, StreamItem, Completion, StreamInvocation,
    /// CancelInvocation): the server numbers them from 1, so this is the id of the latest.
    received: u64,
    /// `received` as of the last Ack sent.
    acked: u64,
    /// Bytes of numbered messages (framing included) received since the last Ack.
    unacked_bytes: usize,
    /// When the last Ack was sent (or the connection opened).
    last_ack: Instant,
}

impl Stateful {
    /// The sequence id to acknowledge now, if an Ack is due.
    fn due(&self) -> Option<u64> {
        (self.received > self.acked
            && (self.unacked_bytes > ACK_BYTES || self.last_ack.elapsed() >= ACK_INTERVAL))
            .then_some(self.received)
    }
}

/// Acks sent by stateful connections, and the numbered messages they acknowledged (for the
/// report's check that acknowledging kept up).
static ACKS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Acks sent by all stateful connections so far, and the numbered messages they acknowledged.
pub fn acks_sent() -> (u64, u64) {
    (
        ACKS[0].load(Ordering::Relaxed),
        ACKS[1].load(Ordering::Relaxed),
    )
}

/// Whether messages of this type are numbered by stateful reconnect (types 1 to 5).
fn numbered(message: &HubMessage) -> bool {
    matches!(
        message,
        HubMessage::Invocation(_)
            | HubMessage::StreamItem(_)
            | HubMessage::Completion(_)
            | HubMessage::StreamInvocation(_)
            | HubMessage::CancelInvocation(_)
    )
}

/// A connected, handshaken hub connection.
pub struct Conn {
    wire: Wire,
    protocol: HubProtocol,
    /// Stateful reconnect's counting, when it is on.
    stateful: Option<Box<Stateful>>,
    /// Received bytes before the aiosignalr fix-up, when it is on.
    fixup: Option<BytesMut>,
    rbuf: BytesMut,
    /// Where frames are built; [`Template::frame`] splits each frame off it.
    pub wbuf: BytesMut,
}

pub(crate) fn ws_config() -> WebSocketConfig {
    // 16 KiB instead of tungstenite's eager 128 KiB keeps 10,000 client connections small; the
    // write buffer is flushed on every send anyway.
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
}

impl Conn {
    /// Opens `ws://addr/hub{query}` and completes the SignalR handshake for `protocol`.
    pub async fn connect(addr: SocketAddr, query: &str, protocol: HubProtocol) -> Result<Conn> {
        Conn::connect_with(addr, query, protocol, None).await
    }

    /// [`Conn::connect`] with a fixed socket receive buffer of `recv_buffer` bytes (which turns
    /// the kernel's autotuning off), for a receiver that is meant to fall behind quickly.
    pub async fn connect_with(
        addr: SocketAddr,
        query: &str,
        protocol: HubProtocol,
        recv_buffer: Option<u32>,
    ) -> Result<Conn> {
        Conn::connect_ws(addr, query, protocol, recv_buffer, 1).await
    }

    /// A WebSocket connection with stateful reconnect on: negotiates with
    /// `useStatefulReconnect=true` (an error unless the server grants it), opens
    /// `ws://addr/hub?id=TOKEN` and handshakes with version 2. Such a connection skips the
    /// server's Ack (and Sequence) messages when reading, counts the server's numbered messages,
    /// and acknowledges them before a send once an Ack is due: about once a second, or as soon
    /// as more than 50,000 bytes of them arrived since the previous Ack.
    pub async fn connect_stateful(addr: SocketAddr, protocol: HubProtocol) -> Result<Conn> {
        let token = negotiate_with(addr, true).await?;
        let mut conn = Conn::connect_ws(addr, &format!("?id={token}"), protocol, None, 2).await?;
        conn.stateful = Some(Box::new(Stateful {
            received: 0,
            acked: 0,
            unacked_bytes: 0,
            last_ack: Instant::now(),
        }));
        Ok(conn)
    }

    /// Opens `ws://addr/hub{query}` and handshakes with hub protocol `version`.
    async fn connect_ws(
        addr: SocketAddr,
        query: &str,
        protocol: HubProtocol,
        recv_buffer: Option<u32>,
        version: u32,
    ) -> Result<Conn> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{addr}/hub{query}");
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
        let fixup = (protocol == HubProtocol::MessagePack && PEER_FIXUP.load(Ordering::Relaxed))
            .then(BytesMut::new);
        let mut conn = Conn {
            wire: Wire::Ws(Box::new(ws)),
            protocol,
            stateful: None,
            fixup: None,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(4096),
        };
        let mut handshake = BytesMut::new();
        HandshakeRequest {
            protocol: protocol.name().to_owned(),
            version,
        }
        .write(&mut handshake);
        if let Wire::Ws(ws) = &mut conn.wire {
            ws.send(Message::Text(Utf8Bytes::try_from(handshake.freeze())?))
                .await?;
        }
        loop {
            if let Some(response) = HandshakeResponse::parse(&mut conn.rbuf)? {
                if let Some(error) = response.error {
                    return Err(format!("handshake refused: {error}").into());
                }
                // The handshake is JSON whatever the protocol: fix hub messages only.
                conn.fixup = fixup;
                return Ok(conn);
            }
            conn.fill().await?;
        }
    }

    /// Opens a connection over `transport` (`query` applies to WebSockets only) and completes
    /// the SignalR handshake for `protocol` (JSON only over SSE and long polling).
    pub async fn connect_over(
        addr: SocketAddr,
        query: &str,
        protocol: HubProtocol,
        transport: Transport,
    ) -> Result<Conn> {
        let sse = match transport {
            Transport::WebSockets => return Conn::connect(addr, query, protocol).await,
            Transport::ServerSentEvents => true,
            Transport::LongPolling => false,
        };
        if protocol != HubProtocol::Json {
            return Err(format!("{} cases use JSON", transport.name()).into());
        }
        let (poster, receiver) = http_conn::open(addr, sse).await?;
        let mut conn = Conn {
            wire: Wire::Http(Box::new(HttpWire {
                poster,
                receiver: Some(receiver),
            })),
            protocol,
            stateful: None,
            fixup: None,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(4096),
        };
        let mut handshake = BytesMut::new();
        HandshakeRequest {
            protocol: protocol.name().to_owned(),
            version: 1,
        }
        .write(&mut handshake);
        conn.send_frame(handshake.freeze()).await?;
        loop {
            if let Some(response) = HandshakeResponse::parse(&mut conn.rbuf)? {
                if let Some(error) = response.error {
                    return Err(format!("handshake refused: {error}").into());
                }
                return Ok(conn);
            }
            conn.fill().await?;
        }
    }

    /// Sends one frame: text for JSON, binary for MessagePack (as the official clients do) over
    /// WebSockets; a POST (answered before this returns) over SSE and long polling.
    /// With stateful reconnect, an Ack that is due goes first, as a frame of its own.
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<()> {
        if let Some(sequence_id) = self.stateful.as_deref().and_then(Stateful::due) {
            let mut ack = BytesMut::new();
            self.protocol
                .write_message(&HubMessage::Ack { sequence_id }, &mut ack)?;
            self.write_frame(ack.freeze()).await?;
            if let Some(state) = self.stateful.as_deref_mut() {
                ACKS[0].fetch_add(1, Ordering::Relaxed);
                ACKS[1].fetch_add(sequence_id - state.acked, Ordering::Relaxed);
                state.acked = sequence_id;
                state.unacked_bytes = 0;
                state.last_ack = Instant::now();
            }
        }
        self.write_frame(frame).await
    }

    async fn write_frame(&mut self, frame: Bytes) -> Result<()> {
        match &mut self.wire {
            Wire::Ws(ws) => {
                let message = match self.protocol {
                    HubProtocol::Json => Message::Text(Utf8Bytes::try_from(frame)?),
                    HubProtocol::MessagePack => Message::Binary(frame),
                };
                ws.send(message).await?;
            }
            Wire::Http(http) => http.poster.send(&frame).await?,
        }
        Ok(())
    }

    /// Reads one more data frame (or SSE event, or poll response) into the read buffer.
    async fn fill(&mut self) -> Result<()> {
        let ws = match &mut self.wire {
            Wire::Ws(ws) => ws,
            Wire::Http(http) => {
                return match &mut http.receiver {
                    Some(receiver) => receiver.fill(&mut self.rbuf).await,
                    None => Err("the receiving half was handed off".into()),
                };
            }
        };
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    self.rbuf.extend_from_slice(text.as_bytes());
                    return Ok(());
                }
                Some(Ok(Message::Binary(bytes))) => {
                    match &mut self.fixup {
                        Some(raw) => {
                            raw.extend_from_slice(&bytes);
                            fix_headers(raw, &mut self.rbuf);
                        }
                        None => self.rbuf.extend_from_slice(&bytes),
                    }
                    return Ok(());
                }
                Some(Ok(Message::Close(_))) | None => return Err("connection closed".into()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
            }
        }
    }

    /// The next hub message (pings included). With stateful reconnect the server's Ack and
    /// Sequence messages are skipped, and numbered messages counted for the next Ack.
    pub async fn next_message(&mut self) -> Result<HubMessage> {
        loop {
            let before = self.rbuf.len();
            if let Some(message) = self.protocol.parse_message(&mut self.rbuf, None)? {
                if let Some(state) = self.stateful.as_deref_mut() {
                    if matches!(
                        message,
                        HubMessage::Ack { .. } | HubMessage::Sequence { .. }
                    ) {
                        continue;
                    }
                    if numbered(&message) {
                        state.received += 1;
                        state.unacked_bytes += before - self.rbuf.len();
                    }
                }
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    /// Waits for the answer to invocation `id`: its Completion (a hub server) or the invocation
    /// itself echoed back (the ceiling). Returns the stamp found in the answer's payload.
    pub async fn reply(&mut self, id: &[u8]) -> Result<Option<Stamp>> {
        loop {
            if let Some(answer) = answer_to(self.next_message().await?, id) {
                return answer;
            }
        }
    }

    /// Sends `frame` (an invocation with id `id`) and waits for its answer, as [`Conn::reply`];
    /// also returns when the answer arrived. Over SSE and long polling the POST and the wait for
    /// the answer run at once (the answer may come before the POST's own response).
    pub async fn round_trip(
        &mut self,
        frame: Bytes,
        id: &[u8],
    ) -> Result<(Option<Stamp>, Instant)> {
        let Conn {
            wire,
            protocol,
            rbuf,
            ..
        } = self;
        let Wire::Http(http) = wire else {
            self.send_frame(frame).await?;
            let stamp = self.reply(id).await?;
            return Ok((stamp, Instant::now()));
        };
        let HttpWire { poster, receiver } = &mut **http;
        let receiver = receiver
            .as_mut()
            .ok_or("the receiving half was handed off")?;
        let answer = async {
            loop {
                if let Some(message) = protocol.parse_message(rbuf, None)? {
                    if let Some(answer) = answer_to(message, id) {
                        return answer.map(|stamp| (stamp, Instant::now()));
                    }
                    continue;
                }
                receiver.fill(rbuf).await?;
            }
        };
        let (sent, answer) = tokio::join!(poster.send(&frame), answer);
        sent?;
        answer
    }

    /// Over SSE and long polling: closes the POST connection, which a connection that only
    /// receives does not keep open (the next send opens a new one). Nothing over WebSockets.
    pub fn release_sender(&mut self) {
        if let Wire::Http(http) = &mut self.wire {
            http.poster.release();
        }
    }

    /// Over SSE and long polling: the receiving half, for a task of its own that drains what a
    /// send-only connection receives (pings), so that the stream is read or the poll loop keeps
    /// the connection alive. `None` over WebSockets.
    pub fn take_receiver(&mut self) -> Option<http_conn::Receiver> {
        match &mut self.wire {
            Wire::Http(http) => http.receiver.take(),
            Wire::Ws(_) => None,
        }
    }

    /// Invokes `target(args)` and waits for its completion (used for `JoinGroup`).
    pub async fn invoke(&mut self, id: &str, target: &str, args: Vec<Payload>) -> Result<()> {
        let message = HubMessage::Invocation(Invocation {
            invocation_id: Some(id.to_owned()),
            target: target.to_owned(),
            arguments: args,
            ..Default::default()
        });
        self.protocol.write_message(&message, &mut self.wbuf)?;
        let frame = self.wbuf.split().freeze();
        self.round_trip(frame, id.as_bytes()).await.map(drop)
    }

    /// Starts the WebSocket close handshake and waits (at most `limit`) for the server to end the
    /// connection, so that the TIME_WAIT state stays on the server's side. Over SSE and long
    /// polling the sockets are just closed.
    pub async fn close(self, limit: Duration) {
        let Wire::Ws(mut ws) = self.wire else {
            return;
        };
        let _ = WebSocketStream::close(&mut ws, None).await;
        let _ =
            tokio::time::timeout(limit, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    }

    /// Reads and drops everything until the connection ends; returns whether the server closed it
    /// (rather than the time running out) and how many data frames (SSE events, poll responses
    /// with data) arrived. A long-polling connection keeps polling meanwhile.
    pub async fn drain(&mut self, limit: Duration) -> (bool, u64) {
        let mut frames = 0;
        let ended = match &mut self.wire {
            Wire::Ws(ws) => tokio::time::timeout(limit, async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => frames += 1,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                        Some(Ok(_)) => {}
                    }
                }
            })
            .await
            .is_ok(),
            Wire::Http(http) => match &mut http.receiver {
                Some(receiver) => tokio::time::timeout(limit, receiver.drain(&mut frames))
                    .await
                    .is_ok(),
                None => false,
            },
        };
        (ended, frames)
    }
}

/// The answer to invocation `id` if `message` is it: its Completion (a hub server) or the
/// invocation itself echoed back (the ceiling), as the stamp found in its payload.
fn answer_to(message: HubMessage, id: &[u8]) -> Option<Result<Option<Stamp>>> {
    match message {
        HubMessage::Completion(c) if c.invocation_id.as_bytes() == id => Some(match c.result {
            CompletionResult::Value(payload) => Ok(Stamp::read(&payload)),
            CompletionResult::Void => Ok(None),
            CompletionResult::Error(error) => Err(error.into()),
        }),
        HubMessage::Invocation(i) if i.invocation_id.as_deref().map(str::as_bytes) == Some(id) => {
            Some(Ok(i.arguments.last().and_then(Stamp::read)))
        }
        HubMessage::Close(close) => Some(Err(format!("server closed: {:?}", close.error).into())),
        _ => None,
    }
}

/// Moves the complete MessagePack messages of `raw` to `out`, rewriting the integer headers of
/// aiosignalr's Completion / StreamItem / CancelInvocation to an empty map (see
/// [`set_peer_fixup`]).
fn fix_headers(raw: &mut BytesMut, out: &mut BytesMut) {
    loop {
        let Ok(Some((len, prefix))) = msgpack::read_varint(raw) else {
            if msgpack::read_varint(raw).is_err() {
                // Not ours to judge: hand the bytes to the parser, which reports the error.
                out.extend_from_slice(raw);
                raw.clear();
            }
            return;
        };
        if raw.len() < prefix + len {
            return;
        }
        let body = &raw[prefix..prefix + len];
        if body.len() >= 4
            && body[0] & 0xf0 == 0x90
            && matches!(body[1], 2 | 3 | 5)
            && body[2..4] == [0xcc, 0x80]
        {
            msgpack::write_varint(out, len - 1);
            out.extend_from_slice(&body[..2]);
            out.put_u8(0x80);
            out.extend_from_slice(&body[4..]);
        } else {
            out.extend_from_slice(&raw[..prefix + len]);
        }
        raw.advance(prefix + len);
    }
}

/// What a benchmark payload carries: when it was sent and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// [`now_ns`] at sending.
    pub sent_ns: u64,
    /// Sequence number (broadcast slot bookkeeping).
    pub seq: u32,
}

const STAMP_LEN: usize = 24;
const ID_LEN: usize = Template::ID_PLACEHOLDER.len();
const STAMP_PLACEHOLDER: &[u8; STAMP_LEN] = b"TTTTTTTTTTTTTTTTSSSSSSSS";

fn hex(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn unhex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some((acc << 4) | u64::from(v))
    })
}

impl Stamp {
    /// Reads the stamp at the start of a string payload (JSON or MessagePack).
    pub fn read(payload: &Payload) -> Option<Stamp> {
        let text: &[u8] = match payload {
            Payload::Json(bytes) => return Stamp::read_json(bytes),
            Payload::MessagePack(bytes) => {
                let skip = match *bytes.first()? {
                    0xa0..=0xbf => 1,
                    0xd9 => 2,
                    0xda => 3,
                    0xdb => 5,
                    _ => return None,
                };
                bytes.get(skip..)?
            }
            Payload::Value(_) => return None,
        };
        Stamp::read_digits(text)
    }

    /// Reads the stamp at the start of a JSON string (`"` then the stamp), as found in a JSON
    /// payload or a classic result.
    pub fn read_json(json: &[u8]) -> Option<Stamp> {
        match json.split_first()? {
            (b'"', text) => Stamp::read_digits(text),
            _ => None,
        }
    }

    fn read_digits(text: &[u8]) -> Option<Stamp> {
        let digits = text.get(..STAMP_LEN)?;
        Some(Stamp {
            sent_ns: unhex(&digits[..16])?,
            seq: u32::try_from(unhex(&digits[16..])?).ok()?,
        })
    }

    /// Bytes of the invocation id used for sequence number `seq`.
    pub fn id(seq: u32) -> [u8; ID_LEN] {
        let mut id = [0; ID_LEN];
        hex(&mut id, u64::from(seq));
        id
    }
}

/// A pre-encoded invocation with its id and its payload's stamp patched in per send.
///
/// The payload is a string of `payload_size` bytes: a 24-character stamp (16 hex digits of send
/// time, 8 of sequence number) padded with `x`.
pub struct Template {
    bytes: Vec<u8>,
    id_at: Option<usize>,
    stamp_at: usize,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Template {
    /// The id placeholder, as text, for encoders of other wire formats.
    pub const ID_PLACEHOLDER: &'static str = "IIIIIIII";

    /// The payload placeholder of `payload_size` bytes: a stamp placeholder padded with `x`.
    pub fn payload(payload_size: usize) -> String {
        let mut payload = String::from_utf8_lossy(STAMP_PLACEHOLDER).into_owned();
        payload.extend(std::iter::repeat_n(
            'x',
            payload_size.saturating_sub(STAMP_LEN),
        ));
        payload
    }

    /// Encodes `target(leading_args..., payload)` once with `protocol`; with an invocation id
    /// when `with_id` (a blocking invoke), without one otherwise (a send).
    pub fn new(
        protocol: HubProtocol,
        target: &str,
        with_id: bool,
        leading_args: &[&str],
        payload_size: usize,
    ) -> Result<Template> {
        let payload = Template::payload(payload_size);
        let mut arguments: Vec<Payload> = leading_args
            .iter()
            .map(|a| Payload::from_value(a.to_string()))
            .collect();
        arguments.push(Payload::from_value(payload));
        let message = HubMessage::Invocation(Invocation {
            invocation_id: with_id.then(|| Template::ID_PLACEHOLDER.to_owned()),
            target: target.to_owned(),
            arguments,
            ..Default::default()
        });
        let mut out = BytesMut::new();
        protocol.write_message(&message, &mut out)?;
        Template::from_encoded(out.to_vec(), with_id)
    }

    /// A template over an encoded invocation (of any wire format) whose payload is a
    /// [`Template::payload`] and whose id, when `with_id`, is [`Template::ID_PLACEHOLDER`].
    pub fn from_encoded(bytes: Vec<u8>, with_id: bool) -> Result<Template> {
        let id_at = if with_id {
            Some(find(&bytes, Template::ID_PLACEHOLDER.as_bytes()).ok_or("no id placeholder")?)
        } else {
            None
        };
        let stamp_at = find(&bytes, STAMP_PLACEHOLDER).ok_or("no stamp placeholder")?;
        Ok(Template {
            bytes,
            id_at,
            stamp_at,
        })
    }

    /// Builds the frame for sequence number `seq`, stamped now, in `buf` (whose allocation is
    /// reused once the previous frame was written and dropped).
    pub fn frame(&self, buf: &mut BytesMut, seq: u32) -> Bytes {
        buf.reserve(self.bytes.len());
        buf.extend_from_slice(&self.bytes);
        if let Some(at) = self.id_at {
            hex(&mut buf[at..at + ID_LEN], u64::from(seq));
        }
        let at = self.stamp_at;
        hex(&mut buf[at..at + 16], now_ns());
        hex(&mut buf[at + 16..at + STAMP_LEN], u64::from(seq));
        buf.split().freeze()
    }
}

/// `POST /hub/negotiate?negotiateVersion=1` over a fresh HTTP/1.1 connection (closed by the
/// server); returns the connection token.
pub async fn negotiate(addr: SocketAddr) -> Result<String> {
    negotiate_with(addr, false).await
}

/// [`negotiate`]; with `stateful`, asks for stateful reconnect (`useStatefulReconnect=true`)
/// and fails unless the answer grants it.
pub async fn negotiate_with(addr: SocketAddr, stateful: bool) -> Result<String> {
    let path = if stateful {
        "/hub/negotiate?negotiateVersion=1&useStatefulReconnect=true"
    } else {
        "/hub/negotiate?negotiateVersion=1"
    };
    let body = http_request(addr, "POST", path).await?;
    let negotiate: NegotiateResponse = serde_json::from_slice(&body)?;
    if stateful && !negotiate.use_stateful_reconnect {
        return Err(
            "negotiate did not grant stateful reconnect (the server does not allow it)".into(),
        );
    }
    negotiate
        .connection_token
        .or(negotiate.connection_id)
        .ok_or_else(|| "negotiate: no connection token".into())
}

/// One HTTP/1.1 request without a body over a fresh connection (`Connection: close`, so the
/// server closes and keeps the TIME_WAIT state); returns the body of a 200 answer. Reads at most
/// 64 KiB; the caller bounds the time.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(1024);
    (&mut stream)
        .take(64 * 1024)
        .read_to_end(&mut response)
        .await?;
    let split = find(&response, b"\r\n\r\n").ok_or("HTTP: no end of headers")?;
    let head = std::str::from_utf8(&response[..split])?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{method} {path}: {}",
            head.lines().next().unwrap_or_default()
        )
        .into());
    }
    let body = &response[split + 4..];
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk is all these small answers need.
        let line = find(body, b"\r\n").ok_or("HTTP: bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line])?.trim(), 16)?;
        return Ok(body
            .get(line + 2..line + 2 + size)
            .ok_or("HTTP: short chunk")?
            .to_vec());
    }
    Ok(body.to_vec())
}
