//! One classic connection: its message buffer with cursors (the persistent-connection layer's
//! replay on reconnect), the hubs it subscribed to, and which transport request serves it now.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use signalr_protocol::classic::{Cursor, Envelope};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::token::TokenProtector;
use crate::context::{ClientSink, ConnectionContext, Gone};
use crate::hub::HubInner;
use crate::message::SerializedHubMessage;

/// What the buffer holds: a message for the envelope's `M`, a new groups token (`G`), or the
/// server's request that the client reconnect (`T`).
enum Entry {
    Message(Bytes),
    /// A message sent to groups (`<Hub>.<group>` names): left out of a replay when the
    /// connection reconnects without those groups, as SignalR 2.4 replays per group.
    GroupMessage(Bytes, Box<[String]>),
    Groups(Arc<str>),
    Reconnect,
}

impl Entry {
    fn len(&self) -> usize {
        match self {
            Entry::Message(bytes) | Entry::GroupMessage(bytes, _) => bytes.len(),
            Entry::Groups(token) => token.len(),
            Entry::Reconnect => 0,
        }
    }
}

/// The messages of one connection, numbered from 1, the newest kept up to a count and a byte
/// bound (the oldest are dropped first): a reconnecting client gets what it missed from here.
struct Buffer {
    entries: VecDeque<(u64, Entry)>,
    /// Sequence number of the newest entry (0: none yet).
    last: u64,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Buffer {
    fn push(&mut self, entry: Entry) -> u64 {
        self.last += 1;
        self.bytes += entry.len();
        self.entries.push_back((self.last, entry));
        while self.entries.len() > self.max_messages.max(1)
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            if let Some((_, old)) = self.entries.pop_front() {
                self.bytes -= old.len();
            }
        }
        self.last
    }
}

/// What a transport writes next: the messages after a cursor, in one envelope.
pub(crate) struct Batch {
    /// The envelope's bytes.
    pub frame: Bytes,
    /// The cursor it carries: where the next batch starts.
    pub cursor: u64,
    /// It asks the client to reconnect (`T:1`): the transport request ends after writing it, so
    /// that clients which ignore `T` on streaming transports reconnect too.
    pub reconnect: bool,
}

/// The server-to-client half of a classic connection, shared by its hub sinks and transports.
pub(crate) struct Outbox {
    pub connection_id: String,
    epoch: u64,
    buffer: Mutex<Buffer>,
    /// The newest sequence number, watched by the transport writing to the client.
    newest: watch::Sender<u64>,
    /// Group memberships per hub (by hub name), for the groups token.
    groups: Mutex<BTreeMap<String, BTreeSet<String>>>,
    tokens: Arc<TokenProtector>,
    /// Set when hub code closed the connection without reconnect: the endpoint ends it.
    closed_by_server: AtomicBool,
}

impl Outbox {
    pub(crate) fn new(
        connection_id: String,
        epoch: u64,
        max_messages: usize,
        max_bytes: usize,
        tokens: Arc<TokenProtector>,
    ) -> Arc<Self> {
        Arc::new(Outbox {
            connection_id,
            epoch,
            buffer: Mutex::new(Buffer {
                entries: VecDeque::new(),
                last: 0,
                bytes: 0,
                max_messages,
                max_bytes,
            }),
            newest: watch::channel(0).0,
            groups: Mutex::new(BTreeMap::new()),
            tokens,
            closed_by_server: AtomicBool::new(false),
        })
    }

    fn push(&self, entry: Entry) {
        let Ok(mut buffer) = self.buffer.lock() else {
            return;
        };
        let seq = buffer.push(entry);
        drop(buffer);
        self.newest.send_replace(seq);
    }

    /// Queues one encoded message (a client-method call or a progress report).
    pub(crate) fn push_message(&self, message: Bytes) {
        self.push(Entry::Message(message));
    }

    /// Hub code closed the connection (`HubCallerContext::close`, `HubContext::close_all`): with
    /// `allow_reconnect` the client is told to reconnect (`T:1`); without, the connection ends.
    fn close(&self, allow_reconnect: bool) {
        if allow_reconnect {
            self.push(Entry::Reconnect);
        } else {
            self.closed_by_server.store(true, Ordering::Release);
        }
    }

    /// Whether hub code closed the connection for good.
    pub(crate) fn closed_by_server(&self) -> bool {
        self.closed_by_server.load(Ordering::Acquire)
    }

    /// Queues one encoded message sent to `groups` (`<Hub>.<group>` names).
    fn push_group_message(&self, message: Bytes, groups: Box<[String]>) {
        self.push(Entry::GroupMessage(message, groups));
    }

    /// Forgets the group messages after `after` sent only to groups for which `member` is false:
    /// a reconnect replays only what reached the groups the connection is in now.
    pub(crate) fn forget_group_messages(&self, after: u64, member: impl Fn(&str) -> bool) {
        let Ok(mut buffer) = self.buffer.lock() else {
            return;
        };
        let mut freed = 0;
        buffer.entries.retain(|(seq, entry)| match entry {
            Entry::GroupMessage(bytes, groups)
                if *seq > after && !groups.iter().any(|g| member(g)) =>
            {
                freed += bytes.len();
                false
            }
            _ => true,
        });
        buffer.bytes -= freed;
    }

    /// Forgets the groups tokens queued after `after`: a reconnect sets the connection's groups
    /// from the token the client brought, and SignalR 2.4 sends no new token for that.
    pub(crate) fn forget_groups_tokens(&self, after: u64) {
        let Ok(mut buffer) = self.buffer.lock() else {
            return;
        };
        let mut freed = 0;
        buffer.entries.retain(|(seq, entry)| match entry {
            Entry::Groups(token) if *seq > after => {
                freed += token.len();
                false
            }
            _ => true,
        });
        buffer.bytes -= freed;
    }

    /// The newest sequence number.
    pub(crate) fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    /// Watches for new messages.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// The cursor text for `seq`.
    pub(crate) fn cursor(&self, seq: u64) -> String {
        Cursor {
            epoch: self.epoch,
            seq,
        }
        .to_string()
    }

    /// Reads a client's `messageId`: `None` when it is not a cursor of this connection's server
    /// run or points past what was sent (the request is then treated as having no cursor).
    pub(crate) fn parse_cursor(&self, message_id: &str) -> Option<u64> {
        let cursor = Cursor::parse(message_id).ok()?;
        (cursor.epoch == self.epoch && cursor.seq <= self.newest()).then_some(cursor.seq)
    }

    /// The messages after `after`, in one envelope with `init` (`S:1`) and the long-poll delay
    /// `L` in milliseconds; `None` when there are none and `init` is off.
    pub(crate) fn batch(&self, after: u64, init: bool, delay: Option<u64>) -> Option<Batch> {
        let buffer = self.buffer.lock().ok()?;
        let mut messages: Vec<&Bytes> = Vec::new();
        let mut groups = None;
        let mut reconnect = false;
        for (_, entry) in buffer.entries.iter().filter(|(seq, _)| *seq > after) {
            match entry {
                Entry::Message(bytes) | Entry::GroupMessage(bytes, _) => messages.push(bytes),
                Entry::Groups(token) => groups = Some(token.clone()),
                Entry::Reconnect => reconnect = true,
            }
        }
        let cursor = buffer.last.max(after);
        if messages.is_empty() && groups.is_none() && !reconnect && !init {
            return None;
        }
        let text = self.cursor(cursor);
        let envelope = Envelope {
            initializing: init,
            reconnect,
            groups_token: groups.as_deref(),
            long_poll_delay: delay,
            ..Envelope::new(&text)
        };
        let mut out = BytesMut::new();
        envelope.write(&messages, &mut out);
        Some(Batch {
            frame: out.freeze(),
            cursor,
            reconnect,
        })
    }

    /// An envelope without messages at the cursor `after`: the init message (`init`, `S:1`) or
    /// the answer of a long poll that waited in vain; `delay` is the long-poll delay `L`.
    pub(crate) fn empty(&self, after: u64, init: bool, delay: Option<u64>) -> Bytes {
        let text = self.cursor(after);
        let mut out = BytesMut::new();
        Envelope {
            initializing: init,
            long_poll_delay: delay,
            ..Envelope::new(&text)
        }
        .write::<&[u8]>(&[], &mut out);
        out.freeze()
    }

    /// Records the groups of this connection in `hub` and queues the new groups token.
    fn set_groups(&self, hub: &str, groups: &[String]) {
        let token = {
            let Ok(mut all) = self.groups.lock() else {
                return;
            };
            all.insert(hub.to_owned(), groups.iter().cloned().collect());
            let names: Vec<String> = all
                .iter()
                .flat_map(|(hub, groups)| groups.iter().map(move |g| format!("{hub}.{g}")))
                .collect();
            self.tokens.protect_groups(&self.connection_id, &names)
        };
        self.push(Entry::Groups(token.into()));
    }
}

/// How a hub reaches a classic connection: client-method calls become items of the connection's
/// envelopes, `{"H":"<hub>","M":"<method>","A":[...]}`.
pub(crate) struct ClassicClient {
    pub outbox: Arc<Outbox>,
    pub hub_name: Arc<str>,
}

impl ClientSink for ClassicClient {
    fn try_send(&self, message: &Arc<SerializedHubMessage>) {
        if let Some(bytes) = message.encoded_classic(&self.hub_name) {
            self.outbox.push_message(bytes.clone());
        }
    }

    fn send(&self, message: Arc<SerializedHubMessage>) -> BoxFuture<'_, Result<(), Gone>> {
        // The buffer never waits: it drops its oldest messages instead.
        self.try_send(&message);
        Box::pin(std::future::ready(Ok(())))
    }

    fn try_send_to_groups(&self, message: &Arc<SerializedHubMessage>, groups: &[String]) {
        if let Some(bytes) = message.encoded_classic(&self.hub_name) {
            let groups = groups
                .iter()
                .map(|g| format!("{}.{g}", self.hub_name))
                .collect();
            self.outbox.push_group_message(bytes.clone(), groups);
        }
    }

    fn groups_changed(&self, groups: &[String]) {
        self.outbox.set_groups(&self.hub_name, groups);
    }

    fn client_results(&self) -> bool {
        false
    }

    fn close(&self, close: &signalr_protocol::Close) {
        self.outbox.close(close.allow_reconnect);
    }
}

/// One subscribed hub of a connection.
pub(crate) struct Subscription {
    /// The hub's name as registered (what client-method calls carry in `H`).
    pub name: Arc<str>,
    pub hub: Arc<HubInner>,
    pub context: Arc<ConnectionContext>,
}

/// The transport request serving a connection now.
struct Attachment {
    id: u64,
    /// Cancelled to end that request (a newer one took over, or the connection ended).
    cancel: CancellationToken,
}

struct TransportState {
    current: Option<Attachment>,
    /// Since when no transport request has been attached (the disconnect timeout counts from
    /// here).
    detached_since: Instant,
}

/// A classic connection.
pub(crate) struct ClassicConnection {
    pub id: String,
    pub outbox: Arc<Outbox>,
    pub hubs: Vec<Arc<Subscription>>,
    /// Hubs the client calls without having named them in `connectionData`: they run its calls
    /// but send it nothing (it is not among their clients), as in SignalR 2.4.
    unlisted: Mutex<Vec<Arc<Subscription>>>,
    /// Hubs the client named that its user may not use: their calls fail.
    refused: Vec<String>,
    /// Cancelled when the connection has ended for good.
    pub closed: CancellationToken,
    /// Hub invocations of this connection that may run at once.
    invocations: Arc<Semaphore>,
    state: Mutex<TransportState>,
    next_attachment: AtomicU64,
    started: AtomicBool,
    /// Whether the disconnect pipeline ran (it runs once).
    ended: AtomicBool,
}

/// Keeps a transport request attached until dropped.
pub(crate) struct AttachGuard {
    connection: Arc<ClassicConnection>,
    id: u64,
    pub cancel: CancellationToken,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.connection.state.lock()
            && state.current.as_ref().is_some_and(|a| a.id == self.id)
        {
            state.current = None;
            state.detached_since = Instant::now();
        }
    }
}

impl ClassicConnection {
    pub(crate) fn new(
        id: String,
        outbox: Arc<Outbox>,
        hubs: Vec<Arc<Subscription>>,
        refused: Vec<String>,
        closed: CancellationToken,
        parallel_invocations: usize,
    ) -> Arc<Self> {
        Arc::new(ClassicConnection {
            id,
            outbox,
            hubs,
            unlisted: Mutex::new(Vec::new()),
            refused,
            closed,
            invocations: Arc::new(Semaphore::new(parallel_invocations.max(1))),
            state: Mutex::new(TransportState {
                current: None,
                detached_since: Instant::now(),
            }),
            next_attachment: AtomicU64::new(1),
            started: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        })
    }

    /// Attaches a transport request, ending the one attached before (a reconnect or a new poll
    /// replaces it).
    pub(crate) fn attach(self: &Arc<Self>) -> AttachGuard {
        let id = self.next_attachment.fetch_add(1, Ordering::Relaxed);
        let cancel = self.closed.child_token();
        if let Ok(mut state) = self.state.lock()
            && let Some(previous) = state.current.replace(Attachment {
                id,
                cancel: cancel.clone(),
            })
        {
            previous.cancel.cancel();
        }
        AttachGuard {
            connection: self.clone(),
            id,
            cancel,
        }
    }

    /// Ends the attached transport request, if any (abort, shutdown).
    pub(crate) fn detach(&self) {
        if let Ok(mut state) = self.state.lock()
            && let Some(current) = state.current.take()
        {
            current.cancel.cancel();
            state.detached_since = Instant::now();
        }
    }

    /// How long no transport request has been attached (`None` while one is).
    pub(crate) fn detached_for(&self, now: Instant) -> Option<std::time::Duration> {
        let state = self.state.lock().ok()?;
        state
            .current
            .is_none()
            .then(|| now.saturating_duration_since(state.detached_since))
    }

    /// Marks the connection started (`/start`); `true` only the first time.
    pub(crate) fn start(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    /// Whether `/start` was called (or the connection was made by a reconnect).
    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Waits for a free invocation slot (the hub's parallel-invocation limit).
    pub(crate) async fn invocation_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.invocations.clone().acquire_owned().await.ok()
    }

    /// Whether the client named hub `name` but may not use it.
    pub(crate) fn refused_hub(&self, name: &str) -> bool {
        self.refused.iter().any(|r| r.eq_ignore_ascii_case(name))
    }

    /// Marks the connection ended; `true` only the first time.
    pub(crate) fn end(&self) -> bool {
        !self.ended.swap(true, Ordering::AcqRel)
    }

    /// The subscribed hub named `name` (case-insensitive).
    pub(crate) fn hub(&self, name: &str) -> Option<Arc<Subscription>> {
        self.hubs
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// The unlisted hub named `name`, made by `make` on first use.
    pub(crate) fn unlisted_hub(
        &self,
        name: &str,
        make: impl FnOnce() -> Option<Arc<Subscription>>,
    ) -> Option<Arc<Subscription>> {
        let mut unlisted = self.unlisted.lock().ok()?;
        if let Some(found) = unlisted.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
            return Some(found.clone());
        }
        let made = make()?;
        unlisted.push(made.clone());
        Some(made)
    }

    /// The contexts of the unlisted hubs used so far.
    pub(crate) fn unlisted_hubs(&self) -> Vec<Arc<Subscription>> {
        self.unlisted.lock().map(|u| u.clone()).unwrap_or_default()
    }
}
