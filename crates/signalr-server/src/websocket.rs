//! The WebSocket transport (docs/protocol.md, "WebSockets"), framed by us on the upgraded socket.
//!
//! One task per connection reads, runs the hub protocol and writes: [`WebSocket`] is polled by
//! the hub's message loop (`hub_connection`), so an invocation goes from the socket to the hub
//! method and its completion back to the socket without a hand-off between tasks. Reads go
//! through a buffer on the stack and the frame [`Decoder`] appends payloads straight to the hub
//! protocol's parse buffer: an idle connection holds no read buffer. Writes send everything
//! queued on the connection as one frame, header and queued messages together in one vectored
//! write, without copying them.
//!
//! Closing follows RFC 6455 §7: a client's Close frame is answered with one carrying its code;
//! when the application ends, the server sends Close 1000 (1009 for a raw connection after a
//! message over the limit) and waits at most [`ConnectionOptions::websocket_close_timeout`] for
//! the client's; a protocol violation is answered with Close 1002 (1007 for text that is not
//! UTF-8) and ends the connection. A write that makes no progress for
//! [`ConnectionOptions::transport_send_timeout`] drops the socket.

mod frame;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Sleep;

use crate::connection::{Connection, Outbox};
use crate::options::ConnectionOptions;
use frame::{Control, DecodeError, Decoder, Event};

/// The largest read the transport takes from the socket at once, in bytes (a buffer of this
/// size lives on the stack during the read only).
const MAX_READ_CHUNK: usize = 64 * 1024;

/// At most this many queued messages go into one frame (one vectored write).
const MAX_MESSAGES_PER_FRAME: usize = 256;

/// The GUID of the opening handshake (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn header_is(headers: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_contains(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains(token))
}

/// A refused opening handshake: its status code and text.
pub(crate) struct Rejection(StatusCode, &'static str);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1).into_response();
        if self.1 == WRONG_VERSION {
            // RFC 6455 §4.2.2: name the version the server speaks.
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

fn rejection(status: StatusCode, body: &'static str) -> Rejection {
    Rejection(status, body)
}

const WRONG_VERSION: &str = "`Sec-WebSocket-Version` header did not include '13'";

/// A checked opening handshake: the 101 response to send and the upgrade to wait for.
pub(crate) struct Accepted {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Checks a WebSocket opening handshake (RFC 6455 §4.2.1). Refusals have axum's status codes
/// and texts: 405 for a method other than GET; 400 for a `Connection` header without
/// `upgrade`, an `Upgrade` header other than `websocket`, a missing `Sec-WebSocket-Key` or one
/// that is not the base64 of 16 bytes, or a `Sec-WebSocket-Version` other than 13 (answered
/// with `Sec-WebSocket-Version: 13`, §4.2.2); 426 when the connection cannot be upgraded
/// (HTTP/1.0, or not served by hyper).
pub(crate) fn accept(parts: &mut Parts) -> Result<Accepted, Rejection> {
    if parts.method != Method::GET {
        return Err(rejection(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request method must be `GET`",
        ));
    }
    if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
        return Err(rejection(
            StatusCode::BAD_REQUEST,
            "Connection header did not include 'upgrade'",
        ));
    }
    if !header_is(&parts.headers, header::UPGRADE, "websocket") {
        return Err(rejection(
            StatusCode::BAD_REQUEST,
            "`Upgrade` header did not include 'websocket'",
        ));
    }
    let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(rejection(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` header missing",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
    if decoded.map_or(true, |nonce| nonce.len() != 16) {
        return Err(rejection(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` header is not the base64 of 16 bytes",
        ));
    }
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(rejection(StatusCode::BAD_REQUEST, WRONG_VERSION));
    }
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(rejection(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        ));
    };
    let accept = HeaderValue::from_str(&accept)
        .map_err(|_| rejection(StatusCode::BAD_REQUEST, "invalid `Sec-WebSocket-Key`"))?;
    Ok(Accepted { accept, on_upgrade })
}

impl Accepted {
    /// The 101 Switching Protocols response to send, and the upgrade hyper completes once the
    /// response is written (it resolves to the socket).
    pub(crate) fn into_parts(self) -> (Response, OnUpgrade) {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        (response, self.on_upgrade)
    }
}

/// What the transport has for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Bytes were appended to the application's buffer (`message_end`: a message ended, and
    /// whether it was binary).
    Data { message_end: Option<bool> },
    /// The client sent a message over the limit; nothing more will be read.
    TooLarge,
    /// Nothing more will be read or written: the client closed, the socket failed, the client
    /// broke the protocol, or a write timed out.
    Closed,
}

/// The frame being written: its header, then the queued messages that make its payload.
struct Outgoing {
    header: [u8; 10],
    header_len: usize,
    /// Bytes of the header written so far.
    header_written: usize,
    messages: VecDeque<Bytes>,
    /// Bytes of the outgoing queue's budget these messages hold until written.
    reserved: usize,
    kind: Kind,
}

/// What a frame being written is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Messages of the application.
    Data,
    /// A pong.
    Pong,
    /// The Close frame: nothing follows it.
    Close,
}

/// How the socket is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// A Close frame with this code is to be written after the current frame.
    Pending(u16),
    /// The Close frame is being written: nothing else goes out.
    Writing,
    /// The Close frame is written.
    Sent,
}

/// A server-side WebSocket connection driven by the task that owns it (see the module docs).
pub(crate) struct WebSocket {
    /// The socket; `None` while a stateful-reconnect connection waits for its client to resume.
    /// While there is one, the connection counts as "active" (out of the disconnect timeout's
    /// reach: `Connection::enter_request`).
    io: Option<TokioIo<Upgraded>>,
    connection: Arc<Connection>,
    outbox: OwnedMutexGuard<Outbox>,
    decoder: Decoder,
    /// Reading has ended (client Close, end of stream, error or violation).
    read_closed: bool,
    /// The client sent a message over the limit.
    too_large: bool,
    /// A raw connection: Close 1009 after a message over the limit.
    raw: bool,
    /// The latest ping's payload, to be answered after the current frame.
    pong: Option<Control>,
    /// Raw connections: where each message received since the last
    /// [`take_message_ends`](Self::take_message_ends) ends in the caller's buffer, and whether
    /// it was binary.
    ends: Vec<(usize, bool)>,
    frame: Option<Outgoing>,
    closing: Closing,
    /// The application's end was taken from the queue.
    ended: bool,
    /// The socket failed or a write timed out.
    failed: bool,
    /// Stateful reconnect: a socket lost without a Close frame waits for the client to resume
    /// on a new one instead of ending the connection.
    resumable: bool,
    /// A resumed socket took over since [`take_resumed`](Self::take_resumed) was last called.
    resumed: bool,
    /// What the application's buffer holds came from a socket that is gone: cleared before
    /// the next read.
    stale_input: bool,
    /// Running while a write waits for the socket (started when a write is pending).
    write_deadline: Option<Pin<Box<Sleep>>>,
    read_chunk: usize,
    /// [`ConnectionOptions::transport_send_timeout`].
    send_timeout: Duration,
    /// [`ConnectionOptions::websocket_close_timeout`].
    close_timeout: Duration,
}

impl WebSocket {
    /// Wraps an upgraded socket; `max_message` bounds a received message, in bytes.
    pub(crate) fn new(
        io: Upgraded,
        raw: bool,
        connection: Arc<Connection>,
        outbox: OwnedMutexGuard<Outbox>,
        max_message: usize,
        options: &ConnectionOptions,
    ) -> Self {
        connection.enter_request();
        WebSocket {
            io: Some(TokioIo::new(io)),
            raw,
            connection,
            outbox,
            decoder: Decoder::new(max_message),
            read_closed: false,
            too_large: false,
            pong: None,
            ends: Vec::new(),
            frame: None,
            closing: Closing::Open,
            ended: false,
            failed: false,
            resumable: false,
            resumed: false,
            stale_input: false,
            write_deadline: None,
            read_chunk: options
                .websocket_read_buffer_size
                .clamp(1024, MAX_READ_CHUNK),
            send_timeout: options.transport_send_timeout,
            close_timeout: options.websocket_close_timeout,
        }
    }

    /// Writes what is queued and, when `read`, reads; returns what the application must see.
    /// Never returns while neither happens: with `read` false it waits until the socket is
    /// closed. Cancel-safe.
    pub(crate) async fn next(&mut self, buf: &mut BytesMut, read: bool) -> Input {
        poll_fn(|cx| self.poll_next(cx, buf, read)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut, read: bool) -> Poll<Input> {
        loop {
            if self.resumable {
                if let Poll::Ready(io) = self.connection.poll_handover(cx) {
                    self.attach(io);
                }
                if self.io.is_none() {
                    return if self.connection.is_closed() {
                        Poll::Ready(Input::Closed)
                    } else {
                        Poll::Pending
                    };
                }
            }
            if read && self.stale_input {
                buf.clear();
                self.stale_input = false;
            }
            let input = self.poll_socket(cx, buf, read);
            if input == Poll::Ready(Input::Closed) && self.lost() {
                self.detach();
                continue;
            }
            return input;
        }
    }

    /// Lets a socket lost without a Close frame wait for the client to resume (stateful
    /// reconnect), or not (the connection is ending).
    pub(crate) fn set_resumable(&mut self, resumable: bool) {
        self.resumable = resumable;
    }

    /// Whether a resumed socket took over since the last call: the application then ignores
    /// the client's messages until its Sequence message.
    pub(crate) fn take_resumed(&mut self) -> bool {
        std::mem::take(&mut self.resumed)
    }

    /// The socket went away without a Close frame while the connection can resume.
    fn lost(&self) -> bool {
        self.resumable && self.failed && !self.ended && !self.connection.is_closed()
    }

    /// Drops the lost socket; the connection waits (out of the disconnect timeout's reach no
    /// longer) for the client to resume.
    fn detach(&mut self) {
        tracing::debug!(connection_id = %self.connection.id, "WebSocket lost: waiting for the client to resume");
        if self.io.take().is_some() {
            self.connection.leave_request();
        }
        if let Some(frame) = self.frame.take()
            && frame.kind == Kind::Data
        {
            self.outbox.release(frame.reserved);
        }
        self.decoder = Decoder::new(self.decoder.max_message());
        self.read_closed = false;
        self.too_large = false;
        self.pong = None;
        self.closing = Closing::Open;
        self.failed = false;
        self.write_deadline = None;
        self.stale_input = true;
    }

    /// A resuming client's socket takes over (replacing one the server has not seen fail):
    /// it writes the Sequence message and the unacknowledged messages first.
    fn attach(&mut self, io: Upgraded) {
        if self.io.is_some() {
            self.detach();
        }
        tracing::debug!(connection_id = %self.connection.id, "WebSocket resumed");
        self.io = Some(TokioIo::new(io));
        self.connection.enter_request();
        self.connection.touch_read();
        self.connection.resend_unacknowledged();
        self.resumed = true;
        self.stale_input = true;
    }

    /// [`poll_next`](Self::poll_next) on the attached socket.
    fn poll_socket(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut, read: bool) -> Poll<Input> {
        if self.poll_write(cx).is_ready() && self.failed {
            return Poll::Ready(Input::Closed);
        }
        if self.read_closed {
            if self.closing == Closing::Sent || self.failed {
                return Poll::Ready(Input::Closed);
            }
            return Poll::Pending;
        }
        if !read {
            return Poll::Pending;
        }
        let input = ready!(self.poll_read(cx, buf));
        // Answer a ping or a Close at once.
        let _ = self.poll_write(cx);
        Poll::Ready(input)
    }

    /// Raw connections: where the messages completed since the last call end in the buffer
    /// given to [`next`](Self::next) (offsets from its start), and whether each was binary.
    pub(crate) fn take_message_ends(&mut self) -> Vec<(usize, bool)> {
        std::mem::take(&mut self.ends)
    }

    /// One read of the socket, decoded into `buf`.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<Input> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Pending;
        };
        let mut chunk = [MaybeUninit::<u8>::uninit(); MAX_READ_CHUNK];
        let mut read_buf = ReadBuf::uninit(&mut chunk[..self.read_chunk]);
        match Pin::new(io).poll_read(cx, &mut read_buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => {
                self.read_closed = true;
                self.failed = true;
                return Poll::Ready(Input::Closed);
            }
            Poll::Ready(Ok(())) => {}
        }
        let mut input = read_buf.filled();
        if input.is_empty() {
            // End of stream without a Close frame.
            self.read_closed = true;
            self.failed = true;
            return Poll::Ready(Input::Closed);
        }
        let mut message_end = None;
        while !input.is_empty() {
            let (used, result) = self.decoder.decode(input, buf);
            input = &input[used..];
            match result {
                Ok(None) => {}
                Ok(Some(Event::MessageEnd { binary })) => {
                    message_end = Some(binary);
                    self.connection.received_frame(binary);
                    if self.raw {
                        self.ends.push((buf.len(), binary));
                    }
                }
                Ok(Some(Event::Ping(payload))) => self.pong = Some(payload),
                Ok(Some(Event::Pong)) => {}
                Ok(Some(Event::Close(code))) => {
                    // Data after a Close frame is ignored (§5.5.1).
                    self.read_closed = true;
                    self.close_with(code.unwrap_or(1000));
                    return Poll::Ready(Input::Closed);
                }
                Err(DecodeError::TooLarge) => {
                    tracing::debug!(connection_id = %self.connection.id, "WebSocket message over the size limit");
                    self.read_closed = true;
                    self.too_large = true;
                    return Poll::Ready(Input::TooLarge);
                }
                Err(err) => {
                    tracing::debug!(connection_id = %self.connection.id, ?err, "WebSocket protocol violation");
                    self.read_closed = true;
                    self.close_with(err.close_code());
                    return Poll::Ready(Input::Closed);
                }
            }
        }
        Poll::Ready(Input::Data { message_end })
    }

    /// Queues a Close frame with `code` (after the frame being written), once.
    fn close_with(&mut self, code: u16) {
        if self.closing == Closing::Open {
            self.closing = Closing::Pending(code);
        }
    }

    /// Writes until nothing is left or the socket is full. `Ready` when nothing is left to
    /// write for now (or the socket failed: see `failed`).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.failed || self.closing == Closing::Sent {
                return Poll::Ready(());
            }
            if self.frame.is_none() && !self.next_frame(cx) {
                return Poll::Ready(());
            }
            match self.poll_write_frame(cx) {
                Poll::Ready(true) => {
                    self.write_deadline = None;
                    match self.frame.take() {
                        Some(Outgoing {
                            kind: Kind::Data,
                            reserved,
                            ..
                        }) => {
                            self.outbox.release(reserved);
                            self.connection.touch_write();
                        }
                        Some(Outgoing {
                            kind: Kind::Close, ..
                        }) => self.closing = Closing::Sent,
                        _ => {}
                    }
                }
                Poll::Ready(false) => {
                    self.failed = true;
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    let deadline = self
                        .write_deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.send_timeout)));
                    if deadline.as_mut().poll(cx).is_ready() {
                        tracing::debug!(connection_id = %self.connection.id, "WebSocket send timed out");
                        self.failed = true;
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Picks the next frame to write: a pong, the Close frame, or what the application queued.
    /// `false` when there is nothing.
    fn next_frame(&mut self, cx: &mut Context<'_>) -> bool {
        match self.closing {
            Closing::Open => {}
            Closing::Pending(code) => {
                self.closing = Closing::Writing;
                self.frame = Some(control_frame(Kind::Close, &code.to_be_bytes()));
                return true;
            }
            Closing::Writing | Closing::Sent => return false,
        }
        if let Some(ping) = self.pong.take() {
            self.frame = Some(control_frame(Kind::Pong, ping.as_slice()));
            return true;
        }
        if self.ended {
            return false;
        }
        let mut messages = VecDeque::new();
        let Poll::Ready(Some(taken)) =
            self.outbox
                .poll_take(cx, &mut messages, MAX_MESSAGES_PER_FRAME)
        else {
            return false;
        };
        if taken.end {
            self.ended = true;
            let code = if self.too_large && self.raw {
                1009
            } else {
                1000
            };
            self.close_with(code);
        }
        let len: usize = messages.iter().map(Bytes::len).sum();
        if len == 0 {
            self.outbox.release(taken.bytes);
            return self.next_frame(cx);
        }
        let binary = self.connection.binary_frames()
            || (self.raw && messages.iter().any(|m| std::str::from_utf8(m).is_err()));
        let (header, header_len) = frame::header(frame::data_opcode(binary), len);
        self.frame = Some(Outgoing {
            header,
            header_len,
            header_written: 0,
            messages,
            reserved: taken.bytes,
            kind: Kind::Data,
        });
        true
    }

    /// Writes the current frame; `Ready(true)` once all of it is written, `Ready(false)` when
    /// the socket failed.
    fn poll_write_frame(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(frame) = self.frame.as_mut() else {
            return Poll::Ready(true);
        };
        loop {
            let mut slices = [IoSlice::new(&[]); 64];
            let mut count = 0;
            if frame.header_written < frame.header_len {
                slices[0] = IoSlice::new(&frame.header[frame.header_written..frame.header_len]);
                count = 1;
            }
            for message in frame.messages.iter().take(slices.len() - count) {
                slices[count] = IoSlice::new(message);
                count += 1;
            }
            if count == 0 {
                return Poll::Ready(true);
            }
            let Some(io) = self.io.as_mut() else {
                return Poll::Ready(false);
            };
            let written = match Pin::new(io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) | Poll::Ready(Ok(0)) => return Poll::Ready(false),
                Poll::Ready(Ok(n)) => n,
            };
            let mut left = written;
            let header_left = frame.header_len - frame.header_written;
            let from_header = left.min(header_left);
            frame.header_written += from_header;
            left -= from_header;
            while left > 0 {
                let Some(front) = frame.messages.front_mut() else {
                    break;
                };
                if left >= front.len() {
                    left -= front.len();
                    frame.messages.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
    }

    /// Flushes the socket's buffers, if it has any (a TLS stream does).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(());
        };
        match Pin::new(io).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if result.is_err() {
                    self.failed = true;
                }
                Poll::Ready(())
            }
        }
    }

    /// Ends the connection's socket after its application ended: writes what is queued up to
    /// the application's end and the Close frame, then waits (at most the close timeout) for
    /// the client's Close frame. Returns at once when the connection was disposed (a slow
    /// consumer, a shutdown): the socket is dropped.
    pub(crate) async fn finish(mut self) {
        if self.io.is_none() {
            return;
        }
        let closed = self.connection.closed.clone();
        let close_timeout = self.close_timeout;
        let done = async {
            // Everything up to the application's end, then the Close frame.
            poll_fn(|cx| {
                ready!(self.poll_write(cx));
                if self.failed || self.closing == Closing::Sent {
                    Poll::Ready(())
                } else {
                    // Waiting for the application's end to be queued.
                    Poll::Pending
                }
            })
            .await;
            poll_fn(|cx| self.poll_flush(cx)).await;
            if self.failed || self.read_closed {
                return;
            }
            // Wait for the client's Close frame, discarding anything else.
            let _ = tokio::time::timeout(close_timeout, async {
                let mut discard = BytesMut::new();
                loop {
                    discard.clear();
                    match poll_fn(|cx| self.poll_read(cx, &mut discard)).await {
                        Input::Data { .. } => {}
                        Input::TooLarge | Input::Closed => return,
                    }
                }
            })
            .await;
        };
        tokio::select! {
            () = done => {}
            () = closed.cancelled() => {}
        }
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        if self.io.is_some() {
            self.connection.leave_request();
        }
    }
}

/// A pong or Close frame with `payload` (at most 125 bytes).
fn control_frame(kind: Kind, payload: &[u8]) -> Outgoing {
    let opcode = if kind == Kind::Close {
        frame::CLOSE
    } else {
        frame::PONG
    };
    let (header, header_len) = frame::header(opcode, payload.len());
    let mut messages = VecDeque::new();
    if !payload.is_empty() {
        messages.push_back(Bytes::copy_from_slice(payload));
    }
    Outgoing {
        header,
        header_len,
        header_written: 0,
        messages,
        reserved: 0,
        kind,
    }
}
