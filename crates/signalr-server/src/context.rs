//! What a hub method knows about its caller: [`HubCallerContext`] (ASP.NET `HubCallerContext`:
//! connection id, user, transport, items, the clients and groups), the HTTP request the
//! connection started with ([`ConnectionRequest`]), and a classic client's per-call
//! [`CallerState`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::Extensions;
use futures_util::future::BoxFuture;
use signalr_protocol::{Close, CompletionResult, HubProtocol, Payload, TransportType};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth::User;
pub use crate::caller_state::CallerState;
use crate::clients::{GroupManager, HubCallerClients};
pub use crate::connection::ConnectionRequest;
use crate::engine::CallOptions;
use crate::handler::ProgressSink;
use crate::hub::HubInner;
use crate::message::SerializedHubMessage;

/// The connection is gone: nothing more can be sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

/// Where the messages of one connection go: the front door (protocol) that serves it encodes
/// them in its own format and queues them for its transport.
pub(crate) trait ClientSink: Send + Sync + 'static {
    /// Queues `message` without waiting (fan-out). What happens when the connection cannot take
    /// it (a full queue) is the front door's slow-consumer policy.
    fn try_send(&self, message: &Arc<SerializedHubMessage>);

    /// Queues `message`, waiting for room in the connection's queue (back-pressure).
    fn send(&self, message: Arc<SerializedHubMessage>) -> BoxFuture<'_, Result<(), Gone>>;

    /// Queues `message` sent to `groups` (fan-out, like [`ClientSink::try_send`]). A front door
    /// that replays missed messages on reconnect uses the groups to leave out what was sent to
    /// groups the connection no longer belongs to.
    fn try_send_to_groups(&self, message: &Arc<SerializedHubMessage>, _groups: &[String]) {
        self.try_send(message);
    }

    /// The connection's groups in this hub changed; `groups` is the new set, sorted.
    fn groups_changed(&self, _groups: &[String]) {}

    /// Hub code asked to close the connection: the front door picks the request up with
    /// [`ConnectionContext::take_close_request`] (it is recorded before this is called).
    fn close(&self, _close: &Close) {}

    /// Whether the client can answer invocations that expect a result (client results).
    fn client_results(&self) -> bool {
        true
    }
}

/// What a front door knows about a connection when it hands it to the hub.
pub(crate) struct ConnectionInfo {
    /// The public connection id.
    pub id: String,
    pub sink: Arc<dyn ClientSink>,
    /// Cancelled when the connection has ended for good.
    pub closed: CancellationToken,
    pub transport: Option<TransportType>,
    /// The Core hub protocol chosen in the handshake; `None` for classic clients.
    pub protocol: Option<HubProtocol>,
    pub request: Option<Arc<ConnectionRequest>>,
    pub user: User,
}

/// The hub-side state of one connection, shared by its front door and its invocations. It knows
/// no wire protocol.
pub(crate) struct ConnectionContext {
    pub id: String,
    pub sink: Arc<dyn ClientSink>,
    /// Cancelled when the connection has ended for good.
    pub closed: CancellationToken,
    pub transport: Option<TransportType>,
    pub protocol: Option<HubProtocol>,
    pub request: Option<Arc<ConnectionRequest>>,
    pub hub: Arc<HubInner>,
    pub user: User,
    pub user_id: Option<String>,
    /// A close requested by hub code, picked up by the front door.
    pub close_request: Mutex<Option<Close>>,
    /// Set when the client ended the connection on purpose (see `set_stop_called`).
    stop_called: AtomicBool,
    items: Mutex<Extensions>,
    /// Client results awaited by the server, by invocation id (`s1`, `s2`, ...).
    pending_results: Mutex<HashMap<String, oneshot::Sender<CompletionResult>>>,
    next_result_id: AtomicU64,
    /// Cancellation of running invocations and streams, by invocation id.
    pub invocations: Mutex<HashMap<String, CancellationToken>>,
    /// Upload streams being received, by stream id.
    pub uploads: Mutex<HashMap<String, mpsc::Sender<Result<Payload, String>>>>,
}

impl ConnectionContext {
    pub(crate) fn new(info: ConnectionInfo, hub: Arc<HubInner>) -> Arc<Self> {
        let user_id = (hub.user_id_provider)(&info.user, info.request.as_deref());
        Arc::new(ConnectionContext {
            id: info.id,
            sink: info.sink,
            closed: info.closed,
            transport: info.transport,
            protocol: info.protocol,
            request: info.request,
            hub,
            user: info.user,
            user_id,
            close_request: Mutex::new(None),
            stop_called: AtomicBool::new(false),
            items: Mutex::new(Extensions::new()),
            pending_results: Mutex::new(HashMap::new()),
            next_result_id: AtomicU64::new(1),
            invocations: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn request_close(&self, close: Close) {
        if let Ok(mut slot) = self.close_request.lock() {
            slot.get_or_insert(close.clone());
        }
        self.sink.close(&close);
    }

    pub(crate) fn take_close_request(&self) -> Option<Close> {
        self.close_request.lock().ok()?.take()
    }

    pub(crate) fn close_requested(&self) -> bool {
        self.close_request
            .lock()
            .map(|c| c.is_some())
            .unwrap_or(false)
    }

    /// Records that the client ended the connection on purpose (a Core Close message from the
    /// client, a long-polling DELETE, a classic `/abort`), for
    /// [`HubCallerContext::stop_called`]. Front doors call it before the disconnect pipeline.
    pub(crate) fn set_stop_called(&self) {
        self.stop_called.store(true, Ordering::Release);
    }

    /// Registers a client result to await; returns its invocation id.
    pub(crate) fn register_result(&self) -> (String, oneshot::Receiver<CompletionResult>) {
        let id = format!("s{}", self.next_result_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending_results.lock() {
            pending.insert(id.clone(), tx);
        }
        (id, rx)
    }

    /// Registers a client result to await under an id chosen by someone else (a backplane
    /// relaying another server's invocation).
    pub(crate) fn register_result_with_id(
        &self,
        id: String,
    ) -> oneshot::Receiver<CompletionResult> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending_results.lock() {
            pending.insert(id, tx);
        }
        rx
    }

    pub(crate) fn forget_result(&self, id: &str) {
        if let Ok(mut pending) = self.pending_results.lock() {
            pending.remove(id);
        }
    }

    /// Routes a Completion from the client to the awaited client result; `false` if none.
    pub(crate) fn complete_result(&self, id: &str, result: CompletionResult) -> bool {
        let sender = self
            .pending_results
            .lock()
            .ok()
            .and_then(|mut p| p.remove(id));
        match sender {
            Some(sender) => {
                let _ = sender.send(result);
                true
            }
            None => false,
        }
    }

    /// Ends everything still running for the connection.
    pub(crate) fn shut_down(&self) {
        if let Ok(mut invocations) = self.invocations.lock() {
            for (_, token) in invocations.drain() {
                token.cancel();
            }
        }
        if let Ok(mut uploads) = self.uploads.lock() {
            uploads.clear();
        }
        if let Ok(mut pending) = self.pending_results.lock() {
            pending.clear();
        }
    }
}

/// The caller of a hub method (ASP.NET `HubCallerContext` plus the hub's `Clients` and `Groups`).
///
/// Cheap to clone. It stays usable after the call: sends to a closed connection are ignored.
#[derive(Clone)]
pub struct HubCallerContext {
    pub(crate) connection: Arc<ConnectionContext>,
    pub(crate) cancellation: CancellationToken,
    pub(crate) connecting: bool,
    /// The call's caller state (inert outside classic calls).
    pub(crate) state: CallerState,
    /// Where the call's progress reports go (none outside classic calls).
    pub(crate) progress: Option<ProgressSink>,
}

impl std::fmt::Debug for HubCallerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCallerContext")
            .field("connection_id", &self.connection_id())
            .field("user_identifier", &self.user_identifier())
            .finish()
    }
}

impl HubCallerContext {
    pub(crate) fn new(
        connection: Arc<ConnectionContext>,
        cancellation: CancellationToken,
        connecting: bool,
    ) -> Self {
        HubCallerContext {
            connection,
            cancellation,
            connecting,
            state: CallerState::inert(),
            progress: None,
        }
    }

    /// The context of a call made with `options` (its caller state and progress sink).
    pub(crate) fn with_options(mut self, options: CallOptions) -> Self {
        self.state = options.state;
        self.progress = options.progress;
        self
    }

    /// The caller's public connection id (the negotiate `connectionId`).
    pub fn connection_id(&self) -> &str {
        self.connection.id()
    }

    /// The caller's user (anonymous without authentication).
    pub fn user(&self) -> &User {
        &self.connection.user
    }

    /// The user identifier that `Clients.user(id)` addresses, from the hub's user-id provider
    /// (default: [`User::name_identifier`]), computed once when the connection is handed to the
    /// hub.
    ///
    /// `None` when that provider returned `None` for the connection: with the default one, when
    /// the user has neither a name-identifier claim nor a `sub` claim (so always for an anonymous
    /// user, e.g. without an [`authenticator`](crate::HubBuilder::authenticator)); with
    /// [`HubBuilder::user_id_provider`](crate::HubBuilder::user_id_provider) or
    /// [`HubBuilder::user_id_from_request`](crate::HubBuilder::user_id_from_request), whenever
    /// the provider returns `None`. A connection with `None` is reached by no `clients().user(id)`.
    pub fn user_identifier(&self) -> Option<&str> {
        self.connection.user_id.as_deref()
    }

    /// The transport the caller is connected with: the one its first transport request bound it
    /// to (ASP.NET Core clients), or the one of the request that made the connection (classic
    /// clients).
    ///
    /// Never `None` for connections this crate serves: the hub only sees a connection after a
    /// transport request (an ASP.NET Core connection once its handshake arrived over that
    /// transport, a classic one at its `/connect`), so the transport is known by then. The
    /// `Option` leaves room for connections carried by no HTTP transport.
    pub fn transport(&self) -> Option<TransportType> {
        self.connection.transport
    }

    /// The hub protocol the caller chose in the handshake (`json` or `messagepack`).
    ///
    /// `None` exactly for a classic SignalR client (ASP.NET SignalR 2.x), which has no handshake
    /// and no hub protocol; always `Some` for an ASP.NET Core client.
    pub fn protocol(&self) -> Option<HubProtocol> {
        self.connection.protocol
    }

    /// Headers, query string and remote address of the HTTP request that started the connection:
    /// for ASP.NET Core clients the first transport request (the WebSocket upgrade, the SSE
    /// request or the first long poll; not the negotiate, not later polls, not a stateful
    /// reconnect's new WebSocket), for classic clients the request that made the connection
    /// (usually `/connect`).
    ///
    /// Never `None` for connections this crate serves, for the same reason as
    /// [`transport`](Self::transport): the request is recorded before the hub sees the connection.
    pub fn request(&self) -> Option<&ConnectionRequest> {
        self.connection.request.as_deref()
    }

    /// The clients of this hub, relative to the caller.
    pub fn clients(&self) -> HubCallerClients {
        HubCallerClients::new(self.connection.hub.lifetime.clone(), self.clone())
    }

    /// Group membership of this hub's connections.
    pub fn groups(&self) -> GroupManager {
        GroupManager::new(self.connection.hub.lifetime.clone())
    }

    /// Stores a per-connection value (ASP.NET `Context.Items`), one per type; returns the
    /// previous one.
    ///
    /// `None` when the connection held no value of type `T` before; also when an earlier panic
    /// while the item store was locked poisoned it, in which case `value` is not stored.
    pub fn insert_item<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.connection.items.lock().ok()?.insert(value)
    }

    /// A per-connection value stored with [`HubCallerContext::insert_item`].
    ///
    /// `None` when no value of type `T` was stored on this connection (items are per connection
    /// and per hub: a classic connection's hubs each have their own), or when the item store is
    /// poisoned (see [`insert_item`](Self::insert_item)).
    pub fn item<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.connection.items.lock().ok()?.get::<T>().cloned()
    }

    /// The application state of type `T` registered with
    /// [`HubBuilder::state`](crate::HubBuilder::state).
    ///
    /// `None` when no state of type `T` was registered on this hub.
    pub fn state<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.connection.hub.state.get::<T>().cloned()
    }

    /// The caller state of this call (classic SignalR `Clients.Caller.<name>`): what a classic
    /// client sent with the call; changes go back with the result. Inert for ASP.NET Core
    /// clients and in connection hooks (reads find nothing, writes are dropped); see
    /// [`CallerState`].
    pub fn caller_state(&self) -> &CallerState {
        &self.state
    }

    /// Cancelled when the client cancels this invocation (CancelInvocation, docs/protocol.md, "Server-to-client streams") or
    /// the connection closes. In `on_connected`/`on_disconnected` it is the connection's.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancellation
    }

    /// In `on_disconnected`: whether the client ended the connection on purpose (classic
    /// `OnDisconnected(stopCalled)`) rather than going away or being closed by the server.
    /// ASP.NET Core clients stop on purpose with a Close message (`connection.stop()` on
    /// WebSockets and SSE) or, on long polling, a `DELETE`; classic clients with `/abort`. False
    /// while the connection is open.
    pub fn stop_called(&self) -> bool {
        self.connection.stop_called.load(Ordering::Acquire)
    }

    /// Closes the caller's connection: sends a Close message with `error` (`None` for a normal
    /// close) and `allow_reconnect` (docs/protocol.md, "Close message"), then closes the transport. The invocation
    /// in progress gets no Completion.
    pub fn close(&self, error: Option<String>, allow_reconnect: bool) {
        self.connection.request_close(Close {
            error,
            allow_reconnect,
        });
    }

    /// Ends the connection without error and without reconnect (ASP.NET `Context.Abort()`).
    pub fn abort(&self) {
        self.close(None, false);
    }

    /// The remote address of the [`request`](Self::request) that started the connection, when
    /// the server records it: [`serve`](crate::serve()) always does; with `axum::serve`, pass
    /// `app.into_make_service_with_connect_info::<SocketAddr>()`.
    ///
    /// `None` when the request carried no `axum::extract::ConnectInfo<SocketAddr>` (served
    /// without connect info), or when there is no [`request`](Self::request).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.request().and_then(ConnectionRequest::remote_addr)
    }
}
