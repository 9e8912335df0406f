//! SignalR's two HTTP transports for the load generator, on raw HTTP/1.1 over tokio's
//! `TcpStream` (response heads parsed with `httparse`):
//!
//! - **Server-Sent Events**: one streaming `GET {hub}?id=TOKEN` with `Accept: text/event-stream`
//!   carries everything the server sends, as `data:` lines of events; the client sends with
//!   POSTs on a second, keep-alive connection.
//! - **Long polling**: a loop of `GET {hub}?id=TOKEN` on one keep-alive connection, each answered
//!   with whatever the server has queued for the connection (the first poll returns at once: it
//!   starts the connection); the client sends with POSTs on another connection, as browsers do.
//!
//! Negotiation (`POST {hub}/negotiate?negotiateVersion=1`) goes over the POST connection; the
//! SignalR handshake then goes over the transport itself (a POST, its answer on the stream or a
//! poll). Only JSON is spoken here: SSE carries text only.
//!
//! Every buffer is bounded ([`MAX_HEAD`], [`MAX_BODY`]) and every wait is bounded by the caller
//! (the scenarios time each operation out).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::Result;

/// The longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// The longest response body (poll response, negotiate answer) or SSE event accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// The JSON hub protocol's record separator.
const RS: u8 = 0x1e;

// ---------------------------------------------------------------------------------------------
// Batching counters

/// Poll responses that carried data, and the hub messages in them.
static POLL_RESPONSES: AtomicU64 = AtomicU64::new(0);
static POLL_MESSAGES: AtomicU64 = AtomicU64::new(0);
/// SSE events, and the hub messages in them.
static SSE_EVENTS: AtomicU64 = AtomicU64::new(0);
static SSE_MESSAGES: AtomicU64 = AtomicU64::new(0);

/// How many units (poll responses with data, or SSE events) and hub messages the load generator
/// received so far over `transport`: the difference of two readings over their difference is
/// the number of messages a server batches into one response or event.
pub fn batching(transport: crate::conn::Transport) -> (u64, u64) {
    use crate::conn::Transport;
    match transport {
        Transport::LongPolling => (
            POLL_RESPONSES.load(Ordering::Relaxed),
            POLL_MESSAGES.load(Ordering::Relaxed),
        ),
        Transport::ServerSentEvents => (
            SSE_EVENTS.load(Ordering::Relaxed),
            SSE_MESSAGES.load(Ordering::Relaxed),
        ),
        Transport::WebSockets => (0, 0),
    }
}

/// Hub messages in a JSON transport payload: its record separators.
pub fn count_records(data: &[u8]) -> u64 {
    data.iter().filter(|&&b| b == RS).count() as u64
}

// ---------------------------------------------------------------------------------------------
// Response heads

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (1xx, 204, 304).
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// How the body ends.
    pub body: BodyKind,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while incomplete, else the head and
/// its length in bytes. Heads longer than [`MAX_HEAD`] are an error.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD => {
            return Err("HTTP: response head too long".into());
        }
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.ok_or("HTTP: no status")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = response.version == Some(0);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default().trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| "HTTP: bad Content-Length")?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(length) = length {
        BodyKind::Length(length)
    } else {
        BodyKind::UntilClose
    };
    let keep_alive = !close && body != BodyKind::UntilClose;
    Ok(Some((
        Head {
            status,
            body,
            keep_alive,
        },
        len,
    )))
}

// ---------------------------------------------------------------------------------------------
// Chunked transfer coding

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// In the hex size of a chunk (`digits` read so far).
    Size { value: u64, digits: u8 },
    /// After the size: extensions or spaces, up to the line end.
    SizeRest { value: u64 },
    /// Expecting the LF of the size line.
    SizeLf { value: u64 },
    /// Inside chunk data, this many bytes to go.
    Data(u64),
    /// Expecting the CR (or LF) after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Expecting the LF that ends the body.
    FinalLf,
    /// The body is complete.
    Done,
}

/// An incremental decoder of the chunked transfer coding (RFC 9112 §7.1).
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl Chunked {
    /// Whether the last chunk and the trailers were read.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes as much of `input` as it can, appending chunk data to `out`; returns the bytes of
    /// `input` consumed (all of them unless the body ended before).
    pub fn decode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize> {
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            self.state = match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(remaining) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::Size { value, digits } => match (byte as char).to_digit(16) {
                    Some(d) if digits < 15 => ChunkState::Size {
                        value: (value << 4) | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err("HTTP: chunk size too large".into()),
                    None if digits == 0 => return Err("HTTP: bad chunk size".into()),
                    None => match byte {
                        b'\r' => ChunkState::SizeLf { value },
                        b'\n' => self.after_size(value),
                        b';' | b' ' | b'\t' => ChunkState::SizeRest { value },
                        _ => return Err("HTTP: bad chunk size".into()),
                    },
                },
                ChunkState::SizeRest { value } => match byte {
                    b'\r' => ChunkState::SizeLf { value },
                    b'\n' => self.after_size(value),
                    _ => ChunkState::SizeRest { value },
                },
                ChunkState::SizeLf { value } => match byte {
                    b'\n' => self.after_size(value),
                    _ => return Err("HTTP: bad chunk size line".into()),
                },
                ChunkState::DataCr => match byte {
                    b'\r' => ChunkState::DataLf,
                    b'\n' => Chunked::default().state,
                    _ => return Err("HTTP: chunk data too long".into()),
                },
                ChunkState::DataLf => match byte {
                    b'\n' => Chunked::default().state,
                    _ => return Err("HTTP: chunk data too long".into()),
                },
                ChunkState::TrailerStart => match byte {
                    b'\r' => ChunkState::FinalLf,
                    b'\n' => ChunkState::Done,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => match byte {
                    b'\n' => ChunkState::TrailerStart,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::FinalLf => match byte {
                    b'\n' => ChunkState::Done,
                    _ => return Err("HTTP: bad end of chunked body".into()),
                },
            };
            i += 1;
        }
        Ok(i)
    }

    fn after_size(&self, value: u64) -> ChunkState {
        if value == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data(value)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events

/// An incremental parser of an event stream (the WHATWG `text/event-stream` format): lines end
/// with CRLF, LF or CR; `data:` lines accumulate (joined by LF); an empty line ends the event;
/// comments (`:`) and other fields are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last byte was a CR: an LF right after it ends nothing more.
    after_cr: bool,
}

impl SseParser {
    /// Feeds `input`; calls `event` with the data of every complete event. A line or an event
    /// longer than [`MAX_BODY`] is an error.
    pub fn feed(&mut self, input: &[u8], mut event: impl FnMut(&[u8])) -> Result<()> {
        let mut rest = input;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.push_line(rest)?;
                    break;
                }
                Some(at) => {
                    self.push_line(&rest[..at])?;
                    self.after_cr = rest[at] == b'\r';
                    rest = &rest[at + 1..];
                    self.end_line(&mut event);
                }
            }
        }
        Ok(())
    }

    fn push_line(&mut self, bytes: &[u8]) -> Result<()> {
        if self.line.len() + bytes.len() + self.data.len() > MAX_BODY {
            return Err("SSE: event too long".into());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, event: &mut impl FnMut(&[u8])) {
        if self.line.is_empty() {
            if self.has_data {
                event(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => {
                self.line = line;
                self.line.clear();
                return;
            }
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        self.line = line;
        self.line.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// One HTTP/1.1 client connection

/// One keep-alive HTTP/1.1 client connection.
pub struct HttpConn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request being written.
    out: Vec<u8>,
    host: String,
    /// Whether the connection may carry another request.
    reusable: bool,
}

impl HttpConn {
    /// Opens a connection to `addr` (`TCP_NODELAY`, as browsers' and servers' sockets).
    pub async fn connect(addr: SocketAddr) -> Result<HttpConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: BytesMut::with_capacity(4096),
            out: Vec::with_capacity(512),
            host: addr.to_string(),
            reusable: true,
        })
    }

    /// Whether the connection may carry another request.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Writes one request: `headers` are extra header lines, each ending in CRLF.
    async fn write_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
    ) -> Result<()> {
        use std::io::Write as _;
        self.out.clear();
        write!(
            self.out,
            "{method} {target} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )?;
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Reads more bytes into the buffer; an error at the end of the stream.
    async fn read_more(&mut self) -> Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            self.reusable = false;
            return Err("HTTP: connection closed by the server".into());
        }
        Ok(())
    }

    /// Reads a response head.
    async fn read_head(&mut self) -> Result<Head> {
        loop {
            if let Some((head, len)) = parse_head(&self.buf)? {
                self.buf.advance(len);
                if !head.keep_alive {
                    self.reusable = false;
                }
                return Ok(head);
            }
            self.read_more().await?;
        }
    }

    /// Reads the whole body of `head` into `out` (at most [`MAX_BODY`] bytes).
    async fn read_body(&mut self, head: Head, out: &mut BytesMut) -> Result<()> {
        match head.body {
            BodyKind::None => Ok(()),
            BodyKind::Length(len) => {
                if len > MAX_BODY {
                    return Err("HTTP: response body too long".into());
                }
                while self.buf.len() < len {
                    self.read_more().await?;
                }
                out.extend_from_slice(&self.buf[..len]);
                self.buf.advance(len);
                Ok(())
            }
            BodyKind::Chunked => {
                let mut decoder = Chunked::default();
                loop {
                    let used = decoder.decode(&self.buf, out)?;
                    self.buf.advance(used);
                    if decoder.done() {
                        return Ok(());
                    }
                    if out.len() > MAX_BODY {
                        return Err("HTTP: response body too long".into());
                    }
                    self.read_more().await?;
                }
            }
            BodyKind::UntilClose => loop {
                out.extend_from_slice(&self.buf);
                self.buf.clear();
                if out.len() > MAX_BODY {
                    return Err("HTTP: response body too long".into());
                }
                self.buf.reserve(4096);
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    self.reusable = false;
                    return Ok(());
                }
            },
        }
    }

    /// One request and its whole response: returns the status, the body appended to `out`.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<u16> {
        if !self.reusable {
            return Err("HTTP: connection not reusable".into());
        }
        self.write_request(method, target, headers, body).await?;
        let head = self.read_head().await?;
        self.read_body(head, out).await?;
        Ok(head.status)
    }
}

// ---------------------------------------------------------------------------------------------
// The two halves of an HTTP SignalR connection

/// The sending half: POSTs on a keep-alive connection, reopened when needed (after the server
/// closed it, or after [`Poster::release`]).
pub struct Poster {
    addr: SocketAddr,
    /// `{hub}?id=TOKEN`.
    target: String,
    conn: Option<HttpConn>,
    body: BytesMut,
}

/// Header lines of a POST carrying JSON hub messages (what browsers send for a string body).
const TEXT_BODY: &str = "Content-Type: text/plain;charset=UTF-8\r\n";

impl Poster {
    async fn conn(&mut self) -> Result<&mut HttpConn> {
        if !self.conn.as_ref().is_some_and(HttpConn::reusable) {
            self.conn = Some(HttpConn::connect(self.addr).await?);
        }
        self.conn.as_mut().ok_or_else(|| "no connection".into())
    }

    /// POSTs `frame` (hub messages) and waits for the server's 200.
    pub async fn send(&mut self, frame: &[u8]) -> Result<()> {
        let target = std::mem::take(&mut self.target);
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let result = async {
            let conn = self.conn().await?;
            conn.request("POST", &target, TEXT_BODY, frame, &mut body)
                .await
        }
        .await;
        self.target = target;
        self.body = body;
        match result? {
            200 => Ok(()),
            status => Err(format!(
                "POST: {status} {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
            .into()),
        }
    }

    /// Closes the POST connection (an idle or receive-only connection keeps none open); the next
    /// [`Poster::send`] opens a new one.
    pub fn release(&mut self) {
        self.conn = None;
    }
}

/// The receiving half: an SSE stream or a poll loop.
pub enum Receiver {
    /// The open event stream.
    Sse(Box<SseStream>),
    /// The poll loop.
    Poll(Box<Poller>),
}

/// An open event stream.
pub struct SseStream {
    conn: HttpConn,
    /// `None` when the body runs until the connection closes.
    chunked: Option<Chunked>,
    parser: SseParser,
    decoded: BytesMut,
}

/// A long-polling loop: one poll at a time on one keep-alive connection.
pub struct Poller {
    addr: SocketAddr,
    target: String,
    conn: Option<HttpConn>,
    body: BytesMut,
    /// A poll was sent and its response head not read yet.
    pending: bool,
}

/// How long the first poll may take to return before the handshake is sent anyway. ASP.NET Core
/// and ours answer it at once (it starts the connection, as the official clients expect);
/// aiosignalr 0.1.1 holds it like any other poll (up to its 15 s poll timeout), so the
/// handshake goes out while that poll is still open and its answer comes back on it. All three
/// servers also accept the handshake before the first poll returned (checked with this wait at
/// zero), so a first poll slowed down by a busy server costs nothing but the order.
const FIRST_POLL_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

impl Receiver {
    /// Appends at least one more event's or poll response's worth of hub messages to `out`.
    pub async fn fill(&mut self, out: &mut BytesMut) -> Result<()> {
        match self {
            Receiver::Sse(sse) => sse.fill(out).await,
            Receiver::Poll(poller) => poller.fill(out).await,
        }
    }

    /// Receives and drops everything until the connection ends or fails; returns how many
    /// events or poll responses carried data.
    pub async fn drain(&mut self, count: &mut u64) {
        let mut scratch = BytesMut::new();
        while self.fill(&mut scratch).await.is_ok() {
            *count += 1;
            scratch.clear();
        }
    }
}

impl SseStream {
    async fn fill(&mut self, out: &mut BytesMut) -> Result<()> {
        let before = out.len();
        loop {
            // Decode what is buffered, then hand complete events to `out`.
            self.decoded.clear();
            match &mut self.chunked {
                Some(chunked) => {
                    let used = chunked.decode(&self.conn.buf, &mut self.decoded)?;
                    self.conn.buf.advance(used);
                    if chunked.done() {
                        return Err("SSE: the server ended the stream".into());
                    }
                }
                None => {
                    self.decoded.extend_from_slice(&self.conn.buf);
                    self.conn.buf.clear();
                }
            }
            let mut events = 0;
            let mut messages = 0;
            self.parser.feed(&self.decoded, |data| {
                events += 1;
                messages += count_records(data);
                out.extend_from_slice(data);
            })?;
            SSE_EVENTS.fetch_add(events, Ordering::Relaxed);
            SSE_MESSAGES.fetch_add(messages, Ordering::Relaxed);
            if out.len() > before {
                return Ok(());
            }
            if out.len() > MAX_BODY {
                return Err("SSE: too much unread data".into());
            }
            self.conn.read_more().await?;
        }
    }
}

impl Poller {
    async fn conn(&mut self) -> Result<&mut HttpConn> {
        if !self.conn.as_ref().is_some_and(HttpConn::reusable) {
            self.conn = Some(HttpConn::connect(self.addr).await?);
        }
        self.conn.as_mut().ok_or_else(|| "no connection".into())
    }

    /// Sends a poll unless one is pending.
    async fn send_poll(&mut self) -> Result<()> {
        if self.pending {
            return Ok(());
        }
        let target = std::mem::take(&mut self.target);
        let result = async {
            let conn = self.conn().await?;
            conn.write_request("GET", &target, "", &[]).await
        }
        .await;
        self.target = target;
        result?;
        self.pending = true;
        Ok(())
    }

    /// Reads the head of the pending poll's response (cancel-safe: what was read stays
    /// buffered, the poll stays pending).
    async fn poll_head(&mut self) -> Result<Head> {
        let conn = self.conn.as_mut().ok_or("no poll pending")?;
        let head = conn.read_head().await;
        self.pending = false;
        head
    }

    /// The body of a poll response with `head` into `self.body`.
    async fn poll_body(&mut self, head: Head) -> Result<u16> {
        self.body.clear();
        let conn = self.conn.as_mut().ok_or("no poll pending")?;
        conn.read_body(head, &mut self.body).await?;
        Ok(head.status)
    }

    /// One poll (or the pending one): its status, the body in `self.body`.
    async fn poll(&mut self) -> Result<u16> {
        self.send_poll().await?;
        let head = self.poll_head().await?;
        self.poll_body(head).await
    }

    async fn fill(&mut self, out: &mut BytesMut) -> Result<()> {
        loop {
            match self.poll().await? {
                // An empty 200 is the poll timing out (or the first poll): poll again.
                200 if self.body.is_empty() => {}
                200 => {
                    POLL_RESPONSES.fetch_add(1, Ordering::Relaxed);
                    POLL_MESSAGES.fetch_add(count_records(&self.body), Ordering::Relaxed);
                    out.extend_from_slice(&self.body);
                    return Ok(());
                }
                204 => return Err("long polling: the server ended the connection (204)".into()),
                status => return Err(format!("poll: {status}").into()),
            }
        }
    }
}

/// The negotiate answer's connection token (`connectionToken`, or `connectionId` for a server of
/// negotiate version 0).
fn token_of(body: &[u8]) -> Result<String> {
    let negotiate: signalr_protocol::NegotiateResponse = serde_json::from_slice(body)?;
    if let Some(error) = negotiate.error {
        return Err(format!("negotiate: {error}").into());
    }
    negotiate
        .connection_token
        .or(negotiate.connection_id)
        .ok_or_else(|| "negotiate: no connection token".into())
}

/// Negotiates on a new POST connection and opens the receiving half of `transport`
/// (`sse`: the event stream; else the first poll). Returns both halves; the caller sends the
/// handshake.
pub async fn open(addr: SocketAddr, sse: bool) -> Result<(Poster, Receiver)> {
    let mut conn = HttpConn::connect(addr).await?;
    let mut body = BytesMut::new();
    let status = conn
        .request(
            "POST",
            "/hub/negotiate?negotiateVersion=1",
            "",
            &[],
            &mut body,
        )
        .await?;
    if status != 200 {
        return Err(format!("negotiate: {status}").into());
    }
    let token = token_of(&body)?;
    let target = format!(
        "/hub?id={}",
        form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    );
    let poster = Poster {
        addr,
        target: target.clone(),
        conn: Some(conn),
        body: BytesMut::new(),
    };
    let receiver = if sse {
        let mut conn = HttpConn::connect(addr).await?;
        conn.write_request(
            "GET",
            &target,
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
            &[],
        )
        .await?;
        let head = conn.read_head().await?;
        if head.status != 200 {
            let mut body = BytesMut::new();
            let _ = conn.read_body(head, &mut body).await;
            return Err(format!(
                "SSE: {} {}",
                head.status,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
            .into());
        }
        let chunked = match head.body {
            BodyKind::Chunked => Some(Chunked::default()),
            BodyKind::UntilClose => None,
            other => return Err(format!("SSE: unexpected response body ({other:?})").into()),
        };
        Receiver::Sse(Box::new(SseStream {
            conn,
            chunked,
            parser: SseParser::default(),
            decoded: BytesMut::new(),
        }))
    } else {
        let mut poller = Poller {
            addr,
            target,
            conn: None,
            body: BytesMut::new(),
            pending: false,
        };
        // The first poll starts the connection and returns at once, empty (see
        // FIRST_POLL_WAIT for a server that holds it).
        poller.send_poll().await?;
        if let Ok(head) = tokio::time::timeout(FIRST_POLL_WAIT, poller.poll_head()).await {
            match poller.poll_body(head?).await? {
                200 => {}
                status => return Err(format!("first poll: {status}").into()),
            }
            if !poller.body.is_empty() {
                return Err("first poll: unexpected data".into());
            }
        }
        Receiver::Poll(Box::new(poller))
    };
    Ok((poster, receiver))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes.
    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize)> {
        let mut decoder = Chunked::default();
        let mut out = BytesMut::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = decoder.decode(piece, &mut out)?;
            used += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((out.to_vec(), decoder.done(), used))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for step in 1..=body.len() {
            let (out, done, used) = dechunk(body, step).expect("decodes");
            assert_eq!(out, b"hello, world", "step {step}");
            assert!(done, "step {step}");
            assert_eq!(&body[used..], b"NEXT", "step {step}");
        }
    }

    #[test]
    fn chunked_accepts_bare_lf_and_upper_case_hex() {
        let (out, done, _) = dechunk(b"A\nabcdefghij\n0\n\n", 3).expect("decodes");
        assert_eq!(out, b"abcdefghij");
        assert!(done);
    }

    #[test]
    fn an_unfinished_chunked_body_is_not_done() {
        let (out, done, _) = dechunk(b"3\r\nabc\r\n4\r\nde", 2).expect("decodes");
        assert_eq!(out, b"abcde");
        assert!(!done);
    }

    #[test]
    fn bad_chunked_bodies_are_errors_not_panics() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"3\r\nabcd\r\n",
            b"3\rX",
            b"ffffffffffffffffff\r\n",
            b"0\r\n\rX",
        ] {
            assert!(
                dechunk(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                dechunk(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn events(input: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            parser
                .feed(piece, |e| out.push(e.to_vec()))
                .expect("parses");
        }
        out
    }

    #[test]
    fn sse_events_parse_whatever_the_read_boundaries() {
        // A comment first (as both servers send), CRLF and LF and CR line ends, a record
        // separator inside the data, two data lines joined by LF.
        let stream = b":\r\ndata: {\"type\":6}\x1e\r\n\r\ndata:a\ndata: b\n\ndata: c\r\rid: 1\ndata: d\r\n\r\n";
        for step in 1..=stream.len() {
            assert_eq!(
                events(stream, step),
                vec![
                    b"{\"type\":6}\x1e".to_vec(),
                    b"a\nb".to_vec(),
                    b"c".to_vec(),
                    b"d".to_vec()
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn sse_lines_without_data_dispatch_nothing() {
        assert!(events(b":hi\r\n\r\nevent: x\r\n\r\n\r\n", 4).is_empty());
        // An event not yet ended by an empty line is held back.
        assert!(events(b"data: x\r\n", 1).is_empty());
        // A field without a colon is a field with an empty value.
        assert_eq!(events(b"data\n\n", 1), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn an_endless_sse_line_is_an_error() {
        let mut parser = SseParser::default();
        let big = vec![b'x'; MAX_BODY / 4];
        let mut failed = false;
        for _ in 0..5 {
            if parser.feed(&big, |_| {}).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn response_heads_say_how_the_body_ends() {
        let head = |text: &str| {
            parse_head(text.as_bytes())
                .expect("parses")
                .expect("complete")
                .0
        };
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"),
            Head {
                status: 200,
                body: BodyKind::Length(12),
                keep_alive: true
            }
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
            Head {
                status: 200,
                body: BodyKind::Chunked,
                keep_alive: false
            }
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").body,
            BodyKind::None
        );
        let until_close = head("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        assert_eq!(until_close.body, BodyKind::UntilClose);
        assert!(!until_close.keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        let (_, len) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .expect("parses")
            .expect("complete");
        assert_eq!(len, 38);
    }

    #[test]
    fn partial_and_bad_heads() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
                .expect("parses")
                .is_none()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert!(parse_head(&long).is_err());
    }

    #[test]
    fn records_are_counted() {
        assert_eq!(count_records(b"{\"type\":6}\x1e{\"type\":1}\x1e"), 2);
        assert_eq!(count_records(b""), 0);
    }

    #[test]
    fn the_negotiate_token_is_read() {
        let body = br#"{"negotiateVersion":1,"connectionId":"a","connectionToken":"b+c","availableTransports":[]}"#;
        assert_eq!(token_of(body).expect("token"), "b+c");
        assert!(token_of(br#"{"error":"nope"}"#).is_err());
        assert!(token_of(b"not json").is_err());
    }
}
