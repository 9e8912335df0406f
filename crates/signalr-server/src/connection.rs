//! The connection layer (ASP.NET "Http.Connections", docs/protocol.md, "Connection lifetime"): connections keyed by their
//! secret token, each an opaque duplex byte stream with one bounded incoming queue, one bounded
//! outgoing queue and one writer at a time that coalesces what is queued into one transport write.
//!
//! Both queues are bounded twice, in items and in bytes (a high-water mark, as ASP.NET's pipes
//! pause their writer at 64 KiB): the incoming one is a channel with a [`ByteBudget`], made only
//! for transports whose reads come from another task (the POSTs of SSE and long polling, raw
//! connections); the outgoing one is an [`OutgoingQueue`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use signalr_protocol::{HubMessage, HubProtocol, TransportType};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::options::ConnectionOptions;

/// One item for a connection's outgoing queue.
pub(crate) enum Outgoing {
    /// Bytes already encoded by the application (hub messages in the connection's protocol).
    Data(Bytes),
    /// One hub message that stateful reconnect numbers and keeps until the client acknowledges
    /// it (Invocation, StreamItem, Completion, StreamInvocation, CancelInvocation:
    /// docs/protocol.md, "Stateful reconnect"); the same as `Data` on other connections.
    Ackable(Bytes),
    /// Flush what is queued before this, then close the transport.
    End,
}

/// A byte high-water mark shared by the incoming queue's producers and its consumer.
///
/// A producer may add an item while fewer than `limit` bytes are queued (so one item larger
/// than the limit still fits into an empty queue); at or above it, producers wait
/// ([`ByteBudget::reserve`]) or fail ([`ByteBudget::try_reserve`]). At most `limit` plus one
/// item's bytes are ever held.
pub(crate) struct ByteBudget {
    queued: AtomicUsize,
    limit: usize,
    room: Notify,
}

impl ByteBudget {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(ByteBudget {
            queued: AtomicUsize::new(0),
            limit: limit.max(1),
            room: Notify::new(),
        })
    }

    /// Adds `len` bytes if the queue is below its limit.
    fn try_reserve(&self, len: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.limit).then(|| queued.saturating_add(len))
            })
            .is_ok()
    }

    /// Adds `len` bytes, waiting until the queue is below its limit.
    async fn reserve(&self, len: usize) {
        loop {
            if self.try_reserve(len) {
                return;
            }
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_reserve(len) {
                return;
            }
            notified.await;
        }
    }

    /// Takes `len` bytes out; wakes waiting producers when that brings the queue below its limit.
    fn release(&self, len: usize) {
        if len == 0 {
            return;
        }
        let before = self.queued.fetch_sub(len, Ordering::AcqRel);
        if before >= self.limit && before - len < self.limit {
            self.room.notify_waiters();
        }
    }
}

/// A latch the writer waits on before its first write.
///
/// The hub queues its handshake response, registers the connection with the hub's clients, then
/// opens the gate: a client that sees the handshake response can count on being reachable by
/// `Clients.All` and friends, and nothing a fan-out queued can overtake the handshake response.
pub(crate) struct Gate(Arc<OutgoingQueue>);

impl Gate {
    /// Opens the gate (idempotent).
    pub(crate) fn open(&self) {
        self.0.open_gate();
    }
}

/// A connection's outgoing queue: bounded in items and in bytes, with one consumer at a time
/// (whoever holds the [`Outbox`]). It allocates nothing until something is queued.
///
/// Bytes count against the bound from when they are queued until the transport has written
/// them ([`OutgoingQueue::release`]). A producer may add an item while fewer than the byte limit
/// are counted (so one item larger than the limit still fits into an empty queue).
pub(crate) struct OutgoingQueue {
    state: Mutex<QueueState>,
    /// In items and in bytes; 32 bits each (4 G items, 4 GiB) keep the queue, which every
    /// connection has, one word smaller.
    capacity: u32,
    byte_limit: u32,
    /// Producers waiting for room.
    room: Notify,
}

struct QueueState {
    items: std::collections::VecDeque<Outgoing>,
    /// Bytes queued or taken and not yet written.
    bytes: usize,
    gate_open: bool,
    /// The consumer waiting for items (or for the gate).
    consumer: Option<std::task::Waker>,
    /// Stateful reconnect's side of the queue, on connections that use it.
    replay: Option<Box<Replay>>,
}

/// Stateful reconnect on one connection (docs/protocol.md, "Stateful reconnect"): the
/// messages sent and not yet acknowledged, the acknowledgements owed to the client, and the
/// socket a resuming client hands over. Kept under the outgoing queue's lock, since the queue's
/// consumer numbers the messages as it takes them (the order they go out in).
struct Replay {
    protocol: HubProtocol,
    /// Bytes of sent messages kept, past which the writer waits for an Ack
    /// (`HubOptions::stateful_reconnect_buffer_size`).
    limit: usize,
    /// Sent ackable messages the client has not acknowledged, oldest first, copied end to end
    /// (a copy of a small message into one warm buffer costs less than keeping its own
    /// allocation alive until the Ack), and the length of each. The oldest has id
    /// `next_id - sent_lengths.len()`.
    sent: BytesMut,
    sent_lengths: std::collections::VecDeque<usize>,
    /// The id the next ackable message gets (ids start at 1).
    next_id: u64,
    /// Written before anything else: the Sequence message and the unacknowledged messages
    /// after a resume.
    resend: std::collections::VecDeque<Bytes>,
    /// The Ack owed to the client, written before queued messages.
    ack: Option<Bytes>,
    /// The highest id of the client's ackable messages the hub has processed, and the highest
    /// acknowledged to the client so far.
    received: u64,
    acked: u64,
    /// The socket of a resuming client, until the connection's task takes it.
    handover: Option<hyper::upgrade::Upgraded>,
    /// The connection's task, waiting for a socket to be handed over.
    handover_waker: Option<std::task::Waker>,
}

impl Replay {
    fn encode(&self, message: &HubMessage) -> Bytes {
        let mut out = BytesMut::new();
        // Ack and Sequence hold one number: writing them cannot fail.
        let _ = self.protocol.write_message(message, &mut out);
        out.freeze()
    }

    /// Whether the writer must wait for an Ack before sending more ackable messages (past the
    /// limit, as ASP.NET's check).
    fn full(&self) -> bool {
        self.sent.len() > self.limit
    }

    /// The id of the oldest unacknowledged message, or of the next one when none is kept.
    fn first_unacknowledged(&self) -> u64 {
        self.next_id - self.sent_lengths.len() as u64
    }

    /// Records an ackable message as it is taken for writing.
    fn record(&mut self, bytes: &Bytes) {
        self.sent.extend_from_slice(bytes);
        self.sent_lengths.push_back(bytes.len());
        self.next_id += 1;
    }
}

impl OutgoingQueue {
    fn new(capacity: usize, byte_limit: usize) -> Arc<Self> {
        Arc::new(OutgoingQueue {
            state: Mutex::new(QueueState {
                items: std::collections::VecDeque::new(),
                bytes: 0,
                gate_open: false,
                consumer: None,
                replay: None,
            }),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX).max(1),
            byte_limit: u32::try_from(byte_limit).unwrap_or(u32::MAX).max(1),
            room: Notify::new(),
        })
    }

    fn capacity(&self) -> usize {
        self.capacity as usize
    }

    fn byte_limit(&self) -> usize {
        self.byte_limit as usize
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open_gate(&self) {
        let mut state = self.lock();
        state.gate_open = true;
        Self::wake_consumer(state);
    }

    /// Queues `item` if there is room; gives it back otherwise.
    fn try_push(&self, item: Outgoing) -> Result<(), Outgoing> {
        let len = item.len();
        let waker = {
            let mut state = self.lock();
            if state.items.len() >= self.capacity() || (len > 0 && state.bytes >= self.byte_limit())
            {
                return Err(item);
            }
            state.bytes += len;
            state.items.push_back(item);
            state.consumer.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `item`, waiting for room.
    async fn push(&self, mut item: Outgoing) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            notified.await;
        }
    }

    /// Moves the queued items (at least one, at most `max`) into `items`; `Pending` while
    /// nothing is queued or the gate is closed (the consumer is woken when that changes). With
    /// stateful reconnect, ackable items are numbered and kept as they are taken, and wait while
    /// the replay buffer is past its limit.
    fn poll_take(
        &self,
        cx: &mut std::task::Context<'_>,
        items: &mut std::collections::VecDeque<Bytes>,
        max: usize,
    ) -> std::task::Poll<Taken> {
        let mut taken = Taken {
            bytes: 0,
            end: false,
        };
        let mut guard = self.lock();
        let QueueState {
            items: queue,
            gate_open,
            consumer,
            replay,
            ..
        } = &mut *guard;
        if !*gate_open {
            *consumer = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        // Stateful reconnect: what a resume must resend and the Ack owed to the client go
        // first (neither counts against the queue's bounds).
        let mut replay = replay.as_deref_mut();
        if let Some(replay) = replay.as_deref_mut() {
            while items.len() < max {
                let Some(bytes) = replay.resend.pop_front() else {
                    break;
                };
                items.push_back(bytes);
            }
            if items.len() < max
                && let Some(ack) = replay.ack.take()
            {
                items.push_back(ack);
            }
        }
        let was_full = queue.len() >= self.capacity();
        while items.len() < max {
            match queue.pop_front() {
                Some(Outgoing::Data(bytes)) => {
                    taken.bytes += bytes.len();
                    items.push_back(bytes);
                }
                Some(Outgoing::Ackable(bytes)) => {
                    if let Some(replay) = replay.as_deref_mut() {
                        // While the kept bytes are past the limit, ackable items wait in the
                        // queue (and everything behind them), as ASP.NET's writes wait for an
                        // Ack; the others are numbered and kept until acknowledged.
                        if replay.full() {
                            queue.push_front(Outgoing::Ackable(bytes));
                            break;
                        }
                        replay.record(&bytes);
                    }
                    taken.bytes += bytes.len();
                    items.push_back(bytes);
                }
                Some(Outgoing::End) => {
                    taken.end = true;
                    break;
                }
                None => break,
            }
        }
        if items.is_empty() && !taken.end {
            *consumer = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        if queue.is_empty() {
            // Don't keep the queue's memory for an idle connection (the allocator's cache
            // makes the next one cheap).
            *queue = std::collections::VecDeque::new();
        }
        let made_room = was_full && queue.len() < self.capacity();
        drop(guard);
        if made_room {
            self.room.notify_waiters();
        }
        std::task::Poll::Ready(taken)
    }

    fn wake_consumer(mut state: std::sync::MutexGuard<'_, QueueState>) {
        let waker = state.consumer.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Turns stateful reconnect on for this queue: from now on ackable items are numbered and
    /// kept (at most about `limit` bytes) until acknowledged.
    fn enable_replay(&self, protocol: HubProtocol, limit: usize) {
        self.lock().replay = Some(Box::new(Replay {
            protocol,
            limit: limit.max(1),
            sent: BytesMut::new(),
            sent_lengths: std::collections::VecDeque::new(),
            next_id: 1,
            resend: std::collections::VecDeque::new(),
            ack: None,
            received: 0,
            acked: 0,
            handover: None,
            handover_waker: None,
        }));
    }

    /// The client acknowledged every message up to `id`: they are forgotten, and a writer
    /// waiting for room in the replay buffer goes on.
    fn acknowledge(&self, id: u64) {
        let mut state = self.lock();
        let Some(replay) = state.replay.as_deref_mut() else {
            return;
        };
        let was_full = replay.full();
        let mut first = replay.first_unacknowledged();
        while first <= id {
            let Some(len) = replay.sent_lengths.pop_front() else {
                break;
            };
            replay.sent.advance(len);
            first += 1;
        }
        if replay.sent_lengths.is_empty() {
            // Nothing kept: an idle connection holds no buffer (a busy one makes a new one
            // about once a second, at its Ack).
            replay.sent = BytesMut::new();
            replay.sent_lengths = std::collections::VecDeque::new();
        }
        if was_full && !replay.full() {
            Self::wake_consumer(state);
        }
    }

    /// A new socket took over: what it writes first is the Sequence message (the id of the
    /// oldest unacknowledged message, or of the next one), then every unacknowledged message in
    /// order, as ASP.NET's resend does.
    fn resume(&self) {
        let mut state = self.lock();
        let Some(replay) = state.replay.as_deref_mut() else {
            return;
        };
        let first = replay.first_unacknowledged();
        let sequence = replay.encode(&HubMessage::Sequence { sequence_id: first });
        replay.resend.clear();
        replay.resend.push_back(sequence);
        let mut offset = 0;
        for &len in &replay.sent_lengths {
            let message = Bytes::copy_from_slice(&replay.sent[offset..offset + len]);
            replay.resend.push_back(message);
            offset += len;
        }
        Self::wake_consumer(state);
    }

    /// Records that the hub processed the client's ackable message `id`.
    fn received(&self, id: u64) {
        if let Some(replay) = self.lock().replay.as_deref_mut() {
            replay.received = replay.received.max(id);
        }
    }

    /// Queues an Ack for what the hub processed since the last one, if anything (the
    /// heartbeat's 1 s tick, as ASP.NET's 1 s ack timer).
    fn queue_ack(&self) {
        let mut state = self.lock();
        let Some(replay) = state.replay.as_deref_mut() else {
            return;
        };
        if replay.received <= replay.acked {
            return;
        }
        replay.acked = replay.received;
        replay.ack = Some(replay.encode(&HubMessage::Ack {
            sequence_id: replay.received,
        }));
        Self::wake_consumer(state);
    }

    /// Hands a resuming client's socket to the connection's task; `false` when the connection
    /// does not use stateful reconnect.
    fn hand_over(&self, io: hyper::upgrade::Upgraded) -> bool {
        let waker = {
            let mut state = self.lock();
            let Some(replay) = state.replay.as_deref_mut() else {
                return false;
            };
            // A newer resume replaces one not taken yet.
            replay.handover = Some(io);
            replay.handover_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The socket a resuming client handed over, if any (the task is woken when one comes).
    fn poll_handover(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<hyper::upgrade::Upgraded> {
        let mut state = self.lock();
        let Some(replay) = state.replay.as_deref_mut() else {
            return std::task::Poll::Pending;
        };
        match replay.handover.take() {
            Some(io) => std::task::Poll::Ready(io),
            None => {
                if !replay
                    .handover_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    replay.handover_waker = Some(cx.waker().clone());
                }
                std::task::Poll::Pending
            }
        }
    }

    /// Gives back `len` bytes once written; wakes waiting producers when that makes room.
    pub(crate) fn release(&self, len: usize) {
        if len == 0 {
            return;
        }
        let made_room = {
            let mut state = self.lock();
            let before = state.bytes;
            state.bytes = before.saturating_sub(len);
            before >= self.byte_limit() && state.bytes < self.byte_limit()
        };
        if made_room {
            self.room.notify_waiters();
        }
    }

    /// Bytes counted now (queued, or taken and not written yet).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Outgoing {
    /// Bytes it counts against the outgoing budget.
    fn len(&self) -> usize {
        match self {
            Outgoing::Data(bytes) | Outgoing::Ackable(bytes) => bytes.len(),
            Outgoing::End => 0,
        }
    }
}

/// What a transport writes next: everything that was queued, and whether the connection ends.
/// Its bytes count against the outgoing budget until the batch is dropped (after the write).
pub(crate) struct Batch {
    pub data: Bytes,
    pub end: bool,
    reserved: usize,
    queue: Arc<OutgoingQueue>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.queue.release(self.reserved);
    }
}

/// The consuming end of the outgoing queue; whoever holds its lock is the connection's writer.
pub(crate) struct Outbox {
    queue: Arc<OutgoingQueue>,
    ended: bool,
}

/// What [`Outbox::poll_take`] took.
pub(crate) struct Taken {
    /// Bytes of the outgoing bound the taken items hold; give them back with
    /// [`Outbox::release`] once written.
    pub bytes: usize,
    /// The end was taken: nothing more will be.
    pub end: bool,
}

impl Outbox {
    /// Waits for at least one queued item, then takes everything else already queued without
    /// waiting into one buffer. Returns `None` once the end was delivered.
    /// Cancel-safe: nothing is taken before the wait ends. Waits for the connection's
    /// [`Gate`] first.
    pub(crate) async fn next_batch(&mut self) -> Option<Batch> {
        if self.ended {
            return None;
        }
        let mut items = std::collections::VecDeque::new();
        let taken =
            std::future::poll_fn(|cx| self.queue.poll_take(cx, &mut items, usize::MAX)).await;
        self.ended = taken.end;
        // A batch of one item is written without copying it.
        let data = if items.len() == 1 {
            items.pop_front().unwrap_or_default()
        } else {
            let mut out = BytesMut::with_capacity(taken.bytes);
            for item in &items {
                out.extend_from_slice(item);
            }
            out.freeze()
        };
        Some(Batch {
            data,
            end: taken.end,
            reserved: taken.bytes,
            queue: self.queue.clone(),
        })
    }

    /// Moves the queued items (at least one, at most `max`) into `items` without copying them;
    /// `Ready(None)` once the end was taken. `Pending` while nothing is queued or the
    /// connection's [`Gate`] is closed.
    pub(crate) fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        items: &mut std::collections::VecDeque<Bytes>,
        max: usize,
    ) -> std::task::Poll<Option<Taken>> {
        if self.ended {
            return std::task::Poll::Ready(None);
        }
        let taken = std::task::ready!(self.queue.poll_take(cx, items, max));
        self.ended = taken.end;
        std::task::Poll::Ready(Some(taken))
    }

    /// Gives back `bytes` of the outgoing bound (items taken with [`Outbox::poll_take`] and
    /// written).
    pub(crate) fn release(&self, bytes: usize) {
        self.queue.release(bytes);
    }
}

/// A connection's incoming queue: the transport's reads for the application.
struct InboundQueue {
    tx: mpsc::Sender<Received>,
    rx: Mutex<Option<Inbound>>,
    budget: Arc<ByteBudget>,
}

/// One read of a transport, as handed to the application.
pub(crate) enum Received {
    /// Bytes of the client (a WebSocket message, a chunk of a POST body).
    Data(Bytes),
    /// The client sent a WebSocket message larger than the transport accepts; nothing more will
    /// be read.
    MessageTooLarge,
}

/// The application's end of a connection's incoming queue.
pub(crate) struct Inbound {
    rx: mpsc::Receiver<Received>,
    budget: Arc<ByteBudget>,
}

impl Inbound {
    /// The next read of the transport; `None` when the transport is gone. Its bytes leave the
    /// incoming budget here: the caller owns (and bounds) them from now on.
    pub(crate) async fn recv(&mut self) -> Option<Received> {
        let received = self.rx.recv().await?;
        if let Received::Data(bytes) = &received {
            self.budget.release(bytes.len());
        }
        Some(received)
    }
}

/// Data of the HTTP request that opened the transport (ASP.NET `Context.GetHttpContext()`):
/// its headers, query string and the client's address.
///
/// Every connection keeps one for its whole life, so it is stored packed (the header names and
/// values in one allocation of their exact size); [`headers`](Self::headers) builds the
/// `HeaderMap` on first use.
#[derive(Clone, Default)]
pub struct ConnectionRequest {
    /// Each header as its name, a NUL byte, its value and a NUL byte (NUL is in neither: see
    /// `HeaderValue::from_bytes`), in the request's order.
    packed: Box<[u8]>,
    query: Box<str>,
    remote_addr: Option<std::net::SocketAddr>,
    headers: OnceLock<Box<HeaderMap>>,
}

impl ConnectionRequest {
    /// A request with these headers, query string (without `?`) and client address.
    pub fn new(
        headers: &HeaderMap,
        query: &str,
        remote_addr: Option<std::net::SocketAddr>,
    ) -> Self {
        let size = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 2)
            .sum();
        let mut packed = Vec::with_capacity(size);
        for (name, value) in headers {
            packed.extend_from_slice(name.as_str().as_bytes());
            packed.push(0);
            packed.extend_from_slice(value.as_bytes());
            packed.push(0);
        }
        ConnectionRequest {
            packed: packed.into_boxed_slice(),
            query: query.into(),
            remote_addr,
            headers: OnceLock::new(),
        }
    }

    /// The request headers (every value of a repeated header, in the request's order).
    pub fn headers(&self) -> &HeaderMap {
        self.headers.get_or_init(|| {
            let mut map = HeaderMap::new();
            let mut fields = self.packed.split(|&b| b == 0);
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name),
                    axum::http::HeaderValue::from_bytes(value),
                ) {
                    map.append(name, value);
                }
            }
            Box::new(map)
        })
    }

    /// The query string, without `?` (empty when the request had none).
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The client's address, when the server records it ([`serve`](crate::serve()) always
    /// does; with `axum::serve`, `into_make_service_with_connect_info::<SocketAddr>()`).
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.remote_addr
    }

    /// A query parameter (percent-decoded), by exact name; the first when repeated.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// A header value as text; the first when repeated, `None` when absent or not visible
    /// ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// A cookie from the `Cookie` headers, by exact name.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers()
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

impl std::fmt::Debug for ConnectionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRequest")
            .field("headers", self.headers())
            .field("query", &self.query)
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

struct Activity {
    active_requests: usize,
    inactive_since: Instant,
}

/// Why sending into a connection's outgoing queue failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The connection is gone.
    Closed,
    /// The queue is full (fan-out sends only); the connection has been closed as a slow consumer.
    Full,
}

/// One logical connection.
pub(crate) struct Connection {
    /// Set when a long poll took the end of the outgoing queue: the transport has handed over
    /// everything (WebSocket and SSE connections are disposed when they get there).
    pub end_delivered: AtomicBool,
    pub id: String,
    pub token: String,
    transport: OnceLock<TransportType>,
    /// When the transport started ([`crate::metrics::now_nanos`]), for
    /// `signalr.server.connection.duration`; 0 until then.
    started_at: AtomicU64,
    /// Made on first use: a WebSocket hub connection reads its socket itself and needs none.
    inbound: OnceLock<InboundQueue>,
    incoming_capacity: usize,
    incoming_bytes: usize,
    outgoing: Arc<OutgoingQueue>,
    pub outbox: Arc<tokio::sync::Mutex<Outbox>>,
    /// Opened once the application may be written to the client (see [`Gate`]).
    pub writer_gate: Gate,
    /// Cancelled when the connection is disposed.
    pub closed: CancellationToken,
    /// Set when the connection is disposed, before `closed` is cancelled (see `is_closed`).
    disposed: AtomicBool,
    started: AtomicBool,
    /// WebSocket frames go out as Binary (a binary hub protocol, or a raw connection that last
    /// received a binary frame) instead of Text.
    binary: AtomicBool,
    /// A raw connection (no hub protocol) mirrors the frame type it receives.
    raw: AtomicBool,
    /// Negotiate granted stateful reconnect (the client asked, the endpoint allows it).
    stateful_negotiated: AtomicBool,
    /// Stateful reconnect is on: negotiated, on WebSockets, with handshake version 2.
    stateful: AtomicBool,
    activity: Mutex<Activity>,
    /// The HTTP connection carrying the server-to-client half (the SSE response, the latest long
    /// poll), when served by [`crate::serve`]: aborted when this connection is closed as a slow
    /// consumer, so its socket is freed at once even while a write to it is stuck.
    transport_abort: Mutex<Option<crate::serve::ConnectionAbort>>,
    /// Held while a POST body is being read: one send at a time.
    pub send_lock: tokio::sync::Mutex<()>,
    /// The long poll currently waiting, cancelled by a newer poll (docs/protocol.md, "Long polling").
    pub current_poll: Mutex<Option<(u64, CancellationToken)>>,
    pub request: OnceLock<Arc<ConnectionRequest>>,
    /// The user authenticated when the connection was made (negotiate or skip-negotiation).
    pub user: OnceLock<crate::auth::User>,
    /// The heartbeat (the manager's 1 s tick, counted) at or after the transport's last write
    /// (see `wrote`).
    last_write: AtomicU32,
    /// The heartbeat at or after the application last received bytes (see `received`).
    last_received: AtomicU32,
    /// The transport wrote since the latest heartbeat, which then stamps `last_write` with its
    /// own number: no clock read per write, and a stamp is never earlier than what it records,
    /// so a timeout never fires early; it fires on the first heartbeat at least the interval
    /// after the last activity, as it did when activity was timed precisely.
    wrote: AtomicBool,
    /// The application received bytes since the latest heartbeat (as `wrote`).
    received: AtomicBool,
    /// The hub's keep-alive and client timeout, run by the manager's 1 s sweep.
    pub(crate) heartbeat: OnceLock<Heartbeat>,
    /// The client has sent a ping: the client timeout applies from now on.
    client_timeout_armed: AtomicBool,
    /// The client timeout elapsed; the hub's message loop is woken through `wake`.
    timed_out: AtomicBool,
    /// Wakes the hub's message loop: the connection was disposed, hub code asked to close it,
    /// or the client timeout elapsed.
    pub(crate) wake: Notify,
    manager: Weak<ConnectionManager>,
}

/// What the connection manager's sweep does for a hub connection every second (ASP.NET's
/// heartbeat, docs/protocol.md, "Keep-alive and timeouts"): one timer for all connections instead of one each.
pub(crate) struct Heartbeat {
    /// The Ping message in the connection's protocol; `None` where the transport keeps the
    /// connection alive itself (long polling).
    pub ping: Option<Bytes>,
    pub keep_alive_interval: Duration,
    pub client_timeout: Duration,
}

/// `interval` in heartbeats (1 s each), rounded up (a timeout never fires early).
fn heartbeats(interval: Duration) -> u64 {
    u64::try_from(interval.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

impl Connection {
    pub(crate) fn transport(&self) -> Option<TransportType> {
        self.transport.get().copied()
    }

    /// Binds the connection to `transport` on its first transport request; `false` when it is
    /// already bound to another one (docs/protocol.md, "Status codes": `Cannot change transports mid-connection`).
    ///
    /// The first binding starts the connection for the metrics (`signalr.server.active_connections`
    /// +1, the start of `signalr.server.connection.duration`), as ASP.NET's `TrySetTransport`
    /// does; under the manager's lock, so that a connection removed meanwhile is not counted.
    pub(crate) fn bind_transport(&self, transport: TransportType) -> bool {
        if let Some(bound) = self.transport.get() {
            return *bound == transport;
        }
        let manager = self.manager.upgrade();
        let map = manager.as_ref().and_then(|m| m.connections.lock().ok());
        if self.transport.set(transport).is_err() {
            return self.transport.get() == Some(&transport);
        }
        if map.is_some_and(|map| {
            map.get(&self.token)
                .is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), self))
        }) {
            self.started_at
                .store(crate::metrics::now_nanos(), Ordering::Release);
            crate::metrics::connection_started(transport);
        }
        true
    }

    /// Sends WebSocket frames as Binary from now on (a binary hub protocol).
    pub(crate) fn set_binary_frames(&self) {
        self.binary.store(true, Ordering::Release);
    }

    /// Whether WebSocket frames go out as Binary.
    pub(crate) fn binary_frames(&self) -> bool {
        self.binary.load(Ordering::Acquire)
    }

    /// Marks the connection as raw (no hub protocol).
    pub(crate) fn set_raw(&self) {
        self.raw.store(true, Ordering::Release);
    }

    /// Records the type of a received WebSocket frame; raw connections answer in kind.
    pub(crate) fn received_frame(&self, binary: bool) {
        if self.raw.load(Ordering::Acquire) {
            self.binary.store(binary, Ordering::Release);
        }
    }

    /// Records that negotiate granted stateful reconnect.
    pub(crate) fn set_stateful_negotiated(&self) {
        self.stateful_negotiated.store(true, Ordering::Release);
    }

    /// Whether negotiate granted stateful reconnect.
    pub(crate) fn stateful_negotiated(&self) -> bool {
        self.stateful_negotiated.load(Ordering::Acquire)
    }

    /// Turns stateful reconnect on (after a handshake with version 2 on a WebSocket whose
    /// negotiate granted it): ackable messages are kept, at most about `buffer_size` bytes,
    /// until the client acknowledges them, and Acks are sent on the heartbeat.
    pub(crate) fn enable_stateful(&self, protocol: HubProtocol, buffer_size: usize) {
        self.outgoing.enable_replay(protocol, buffer_size);
        self.stateful.store(true, Ordering::Release);
    }

    /// Whether stateful reconnect is on.
    pub(crate) fn is_stateful(&self) -> bool {
        self.stateful.load(Ordering::Acquire)
    }

    /// The client's Ack: it processed every message up to `id`.
    pub(crate) fn acknowledge(&self, id: u64) {
        self.outgoing.acknowledge(id);
    }

    /// The hub processed the client's ackable message `id` (it is acknowledged on the next
    /// heartbeat).
    pub(crate) fn received_ackable(&self, id: u64) {
        self.outgoing.received(id);
    }

    /// A resumed socket writes the Sequence message and the unacknowledged messages first.
    pub(crate) fn resend_unacknowledged(&self) {
        self.outgoing.resume();
    }

    /// Hands a resuming client's socket to the connection's task; `false` when stateful
    /// reconnect is not on (the socket is dropped).
    pub(crate) fn hand_over(&self, io: hyper::upgrade::Upgraded) -> bool {
        !self.is_closed() && self.outgoing.hand_over(io)
    }

    /// A socket handed over by a resuming client.
    pub(crate) fn poll_handover(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<hyper::upgrade::Upgraded> {
        self.outgoing.poll_handover(cx)
    }

    /// Marks the application as started; `true` only for the first caller.
    pub(crate) fn start(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    /// Whether the application (the hub protocol) was started.
    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub(crate) fn take_inbound(&self) -> Option<Inbound> {
        self.inbound().rx.lock().ok()?.take()
    }

    /// Hands received transport bytes to the application, waiting while the incoming queue is
    /// full (in reads or in bytes): back-pressure on the client. `false` when the connection is
    /// gone.
    pub(crate) async fn receive(&self, bytes: Bytes) -> bool {
        let len = bytes.len();
        tokio::select! {
            () = self.inbound().budget.reserve(len) => {}
            () = self.closed.cancelled() => return false,
        }
        let sent = tokio::select! {
            sent = self.inbound().tx.send(Received::Data(bytes)) => sent.is_ok(),
            () = self.closed.cancelled() => false,
        };
        if !sent {
            self.inbound().budget.release(len);
        }
        sent
    }

    /// Tells the application that the client sent a message too large for the transport.
    pub(crate) async fn receive_too_large(&self) {
        tokio::select! {
            _ = self.inbound().tx.send(Received::MessageTooLarge) => {}
            () = self.closed.cancelled() => {}
        }
    }

    /// Queues a message, waiting for room (in messages and in bytes). Used for messages a
    /// connection causes itself (its Completions, its stream items).
    pub(crate) async fn send(&self, item: Outgoing) -> Result<(), QueueError> {
        if self.is_closed() {
            return Err(QueueError::Closed);
        }
        tokio::select! {
            () = self.outgoing.push(item) => Ok(()),
            () = self.closed.cancelled() => Err(QueueError::Closed),
        }
    }

    /// Queues a message without waiting. A full queue (in messages or in bytes) closes the
    /// connection as a slow consumer.
    pub(crate) fn try_send(&self, item: Outgoing) -> Result<(), QueueError> {
        if self.is_closed() {
            return Err(QueueError::Closed);
        }
        match self.outgoing.try_push(item) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.slow_consumer()),
        }
    }

    /// The incoming queue, made on first use.
    fn inbound(&self) -> &InboundQueue {
        self.inbound.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.incoming_capacity.max(1));
            let budget = ByteBudget::new(self.incoming_bytes);
            InboundQueue {
                tx,
                rx: Mutex::new(Some(Inbound {
                    rx,
                    budget: budget.clone(),
                })),
                budget,
            }
        })
    }

    fn slow_consumer(&self) -> QueueError {
        if self.is_closed() {
            return QueueError::Closed;
        }
        tracing::warn!(connection_id = %self.id, queued_bytes = self.outgoing.queued_bytes(), "outgoing queue full: closing slow connection");
        self.dispose();
        self.abort_transport();
        QueueError::Full
    }

    /// Records the HTTP connection that now carries the server-to-client half (SSE, long poll).
    pub(crate) fn set_transport_abort(&self, abort: Option<crate::serve::ConnectionAbort>) {
        if let Ok(mut current) = self.transport_abort.lock() {
            *current = abort;
        }
    }

    /// Drops the HTTP connection of the server-to-client half at once (its socket is freed even
    /// if a response write to it is stuck).
    pub(crate) fn abort_transport(&self) {
        let abort = self.transport_abort.lock().ok().and_then(|mut a| a.take());
        if let Some(abort) = abort {
            abort.abort();
        }
    }

    /// Records that the transport wrote (or a keep-alive was queued).
    pub(crate) fn touch_write(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }

    /// Records that the application received bytes.
    pub(crate) fn touch_read(&self) {
        self.received.store(true, Ordering::Relaxed);
    }

    /// The client sent a ping: from now on the client timeout applies.
    pub(crate) fn arm_client_timeout(&self) {
        self.client_timeout_armed.store(true, Ordering::Relaxed);
    }

    /// Whether the client timeout has elapsed.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// The heartbeat's work for this connection at heartbeat number `beat` (see
    /// [`Heartbeat`]).
    fn beat(&self, beat: u32) {
        let Some(heartbeat) = self.heartbeat.get() else {
            return;
        };
        if self.wrote.swap(false, Ordering::Relaxed) {
            self.last_write.store(beat, Ordering::Relaxed);
        }
        if self.received.swap(false, Ordering::Relaxed) {
            self.last_received.store(beat, Ordering::Relaxed);
        }
        if let Some(ping) = &heartbeat.ping {
            // A stamp is the first heartbeat at or after the write, so `since_write` whole
            // seconds have passed at least; the interval's whole seconds (rounded down) then
            // give the ping on the heartbeat it had when writes were timed precisely (a 100 ms
            // interval: every heartbeat, after the previous ping's own write too).
            let since_write = beat.saturating_sub(self.last_write.load(Ordering::Relaxed));
            if u64::from(since_write) >= heartbeat.keep_alive_interval.as_secs() {
                let _ = self.try_send(Outgoing::Data(ping.clone()));
                self.last_write.store(beat, Ordering::Relaxed);
            }
        }
        if self.is_stateful() {
            self.outgoing.queue_ack();
        }
        let silent = beat.saturating_sub(self.last_received.load(Ordering::Relaxed));
        if self.client_timeout_armed.load(Ordering::Relaxed)
            && u64::from(silent) >= heartbeats(heartbeat.client_timeout)
            && !self.timed_out.swap(true, Ordering::AcqRel)
        {
            self.wake.notify_one();
        }
    }

    /// Marks a transport request as attached until the guard drops.
    pub(crate) fn begin_request(self: &Arc<Self>) -> ActiveRequest {
        self.enter_request();
        ActiveRequest(self.clone())
    }

    /// A transport request is attached (see [`begin_request`](Self::begin_request)); pair with
    /// [`leave_request`](Self::leave_request).
    pub(crate) fn enter_request(&self) {
        if let Ok(mut activity) = self.activity.lock() {
            activity.active_requests += 1;
        }
    }

    /// A transport request attached with [`enter_request`](Self::enter_request) went away.
    pub(crate) fn leave_request(&self) {
        if let Ok(mut activity) = self.activity.lock() {
            activity.active_requests = activity.active_requests.saturating_sub(1);
            activity.inactive_since = Instant::now();
        }
    }

    fn inactive_for(&self, now: Instant) -> Option<Duration> {
        let activity = self.activity.lock().ok()?;
        (activity.active_requests == 0)
            .then(|| now.saturating_duration_since(activity.inactive_since))
    }

    /// Ends the connection: removes it from the manager and wakes everything waiting on it.
    pub(crate) fn dispose(&self) {
        self.dispose_as(crate::metrics::StopStatus::NormalClosure);
    }

    /// [`dispose`](Self::dispose), recording `status` as the reason in the metrics (unless the
    /// connection's hub is shutting down: `app_shutdown`).
    fn dispose_as(&self, status: crate::metrics::StopStatus) {
        if let Some(manager) = self.manager.upgrade() {
            manager.remove(&self.token, status);
        }
        self.disposed.store(true, Ordering::Release);
        self.closed.cancel();
        // A hub's message loop waits on `wake`, not on `closed`.
        self.wake.notify_one();
    }

    /// Records the end of the connection in the metrics, once: when it is removed from its
    /// manager, or earlier when a long poll delivered the end ([`transport_ended`](Self::transport_ended)).
    /// Nothing when its transport never started (`started_at` is 0 then, and once recorded).
    fn ended(&self, status: crate::metrics::StopStatus) {
        let started = self.started_at.swap(0, Ordering::AcqRel);
        if started != 0
            && let Some(&transport) = self.transport.get()
        {
            crate::metrics::connection_ended(transport, status, crate::metrics::since(started));
        }
    }

    /// A long poll delivered the end of the outgoing queue: the connection ends for the metrics
    /// now (ASP.NET removes it at that poll), though it stays until the disconnect timeout
    /// (later polls get 204).
    pub(crate) fn transport_ended(&self) {
        let normal = crate::metrics::StopStatus::NormalClosure;
        self.ended(match self.manager.upgrade() {
            Some(manager) => manager.stop_status(normal),
            None => normal,
        });
    }

    /// Whether the connection was disposed (`closed` is cancelled or about to be). An atomic
    /// load: checked for every message queued, where `CancellationToken::is_cancelled` would
    /// take the token's lock.
    pub(crate) fn is_closed(&self) -> bool {
        self.disposed.load(Ordering::Acquire)
    }
}

/// Keeps a connection "active" (not subject to the disconnect timeout) while alive.
pub(crate) struct ActiveRequest(Arc<Connection>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.leave_request();
    }
}

/// Runs `tick` on `target` once a second, on the caller's runtime, for as long as `target` is
/// alive (the task holds only a weak reference).
pub(crate) fn every_second<T: Send + Sync + 'static>(target: &Arc<T>, tick: fn(&Arc<T>)) {
    let weak = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(target) = weak.upgrade() else {
                return;
            };
            tick(&target);
        }
    });
}

/// All connections of one endpoint, keyed by connection token.
pub(crate) struct ConnectionManager {
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    options: ConnectionOptions,
    sweeper: OnceLock<()>,
    /// Heartbeats so far (the sweep's 1 s ticks; 32 bits last 136 years, and keep the
    /// connections' two stamps one word smaller).
    beats: AtomicU32,
    /// Set by [`ConnectionManager::shut_down`].
    shutting_down: AtomicBool,
}

/// 16 cryptographically random bytes, base64url without padding (22 characters), as ASP.NET
/// makes connection ids and tokens (docs/protocol.md, "Negotiate response").
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl ConnectionManager {
    pub(crate) fn new(options: ConnectionOptions) -> Arc<Self> {
        crate::metrics::describe();
        Arc::new(ConnectionManager {
            connections: Mutex::new(HashMap::new()),
            options,
            sweeper: OnceLock::new(),
            beats: AtomicU32::new(0),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Starts the 1 s bookkeeping timer (docs/protocol.md, "Connection lifetime") on first use, inside the caller's runtime.
    fn start_sweeper(self: &Arc<Self>) {
        self.sweeper
            .get_or_init(|| every_second(self, |manager| manager.sweep()));
    }

    /// Creates a connection. With negotiate version 0 the token is the id itself (docs/protocol.md, "Negotiate response").
    pub(crate) fn create(self: &Arc<Self>, negotiate_version: u32) -> Arc<Connection> {
        self.start_sweeper();
        let id = random_id();
        let token = if negotiate_version >= 1 {
            random_id()
        } else {
            id.clone()
        };
        let outgoing = OutgoingQueue::new(
            self.options.outgoing_queue_capacity,
            self.options.outgoing_buffer_size,
        );
        let connection = Arc::new(Connection {
            id,
            token: token.clone(),
            transport: OnceLock::new(),
            started_at: AtomicU64::new(0),
            inbound: OnceLock::new(),
            incoming_capacity: self.options.incoming_queue_capacity,
            incoming_bytes: self.options.incoming_buffer_size,
            outbox: Arc::new(tokio::sync::Mutex::new(Outbox {
                queue: outgoing.clone(),
                ended: false,
            })),
            writer_gate: Gate(outgoing.clone()),
            outgoing,
            closed: CancellationToken::new(),
            disposed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            end_delivered: AtomicBool::new(false),
            binary: AtomicBool::new(false),
            raw: AtomicBool::new(false),
            stateful_negotiated: AtomicBool::new(false),
            stateful: AtomicBool::new(false),
            activity: Mutex::new(Activity {
                active_requests: 0,
                inactive_since: Instant::now(),
            }),
            transport_abort: Mutex::new(None),
            send_lock: tokio::sync::Mutex::new(()),
            current_poll: Mutex::new(None),
            request: OnceLock::new(),
            user: OnceLock::new(),
            // The next heartbeat: one at or after the connection's start.
            last_write: AtomicU32::new(self.beats.load(Ordering::Relaxed).wrapping_add(1)),
            last_received: AtomicU32::new(self.beats.load(Ordering::Relaxed).wrapping_add(1)),
            wrote: AtomicBool::new(false),
            received: AtomicBool::new(false),
            heartbeat: OnceLock::new(),
            client_timeout_armed: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            wake: Notify::new(),
            manager: Arc::downgrade(self),
        });
        if let Ok(mut map) = self.connections.lock() {
            map.insert(token, connection.clone());
        }
        connection
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Connection>> {
        self.connections.lock().ok()?.get(token).cloned()
    }

    /// Connections whose application was started and whose transport has not handed over the
    /// end of the outgoing queue yet.
    pub(crate) fn started_count(&self) -> usize {
        self.connections.lock().map_or(0, |map| {
            map.values()
                .filter(|c| c.is_started() && !c.end_delivered.load(Ordering::Acquire))
                .count()
        })
    }

    /// Removes a connection; one whose transport started ends for the metrics, with `status`
    /// (`app_shutdown` once the hub is shutting down, see [`shut_down`](Self::shut_down)).
    fn remove(&self, token: &str, status: crate::metrics::StopStatus) {
        if let Ok(mut map) = self.connections.lock()
            && let Some(connection) = map.remove(token)
        {
            connection.ended(self.stop_status(status));
        }
    }

    /// `status`, or `app_shutdown` once the hub is shutting down.
    fn stop_status(&self, status: crate::metrics::StopStatus) -> crate::metrics::StopStatus {
        if self.shutting_down.load(Ordering::Relaxed) {
            crate::metrics::StopStatus::AppShutdown
        } else {
            status
        }
    }

    /// The hub is shutting down ([`HubContext::close_all`](crate::HubContext::close_all)):
    /// connections removed from now on end as `app_shutdown` in the metrics.
    pub(crate) fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Disposes connections inactive for longer than the disconnect timeout (docs/protocol.md, "Connection lifetime"), and runs
    /// the hubs' heartbeat (keep-alive pings, client timeouts).
    fn sweep(&self) {
        let now = Instant::now();
        let beat = self.beats.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let expired: Vec<Arc<Connection>> = match self.connections.lock() {
            Ok(map) => map
                .values()
                .filter(|c| {
                    c.beat(beat);
                    c.inactive_for(now)
                        .is_some_and(|idle| idle > self.options.disconnect_timeout)
                })
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for connection in expired {
            tracing::debug!(connection_id = %connection.id, "disconnect timeout elapsed");
            connection.dispose_as(crate::metrics::StopStatus::Timeout);
        }
    }
}

impl Drop for ConnectionManager {
    /// The endpoint is gone (its router dropped): the connections still in it end for the
    /// metrics as `app_shutdown` (their tasks can no longer remove them).
    fn drop(&mut self) {
        let map = match self.connections.get_mut() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (_, connection) in map.drain() {
            connection.ended(crate::metrics::StopStatus::AppShutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn connection_request_keeps_every_header_value_in_order() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("x-custom", HeaderValue::from_static("tab\there"));
        headers.append("cookie", HeaderValue::from_static("b=2; c=3"));
        headers.append("x-empty", HeaderValue::from_static(""));
        headers.append(
            "x-obs",
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text is a valid value"),
        );
        let addr = "127.0.0.1:5000".parse().expect("an address");
        let request = ConnectionRequest::new(&headers, "a=1&b=%20x", Some(addr));
        assert_eq!(request.headers(), &headers);
        assert_eq!(request.header("x-custom"), Some("tab\there"));
        assert_eq!(request.header("x-empty"), Some(""));
        assert_eq!(request.header("x-obs"), None, "not visible ASCII");
        assert_eq!(request.cookie("c"), Some("3"));
        assert_eq!(request.query(), "a=1&b=%20x");
        assert_eq!(request.query_param("b").as_deref(), Some(" x"));
        assert_eq!(request.remote_addr(), Some(addr));
        let empty = ConnectionRequest::default();
        assert!(empty.headers().is_empty());
        assert_eq!(empty.query(), "");
    }
}
