//! Calling client methods: the proxies hub code uses (ASP.NET `Clients.*` and `Groups`).
//!
//! - [`HubCallerClients`] (from [`HubCallerContext::clients`](crate::HubCallerContext::clients))
//!   and [`HubClients`] (from [`HubContext::clients`], outside hub methods) select recipients:
//!   all, the caller, others, a connection, a group, a user. Each selection is a
//!   [`ClientProxy`] (or a [`SingleClientProxy`], which can also wait for a client result).
//! - [`GroupManager`] adds connections to groups and removes them.
//! - [`HubContext`] reaches a hub's clients from anywhere (a background task, an HTTP handler).
//! - [`ClientSender`] is what `#[hub_client]` traits are implemented for; [`IntoArguments`] is
//!   what a call's arguments may be (a tuple of `Serialize` values, `()`, a `Vec` of payloads).
//!   You don't implement either.
//! - [`Recipients`] tells a [filter](crate::filter) who a call is addressed to.
//!
//! Every call passes the filters' `on_outgoing`, then the hub's lifetime manager
//! ([`crate::lifetime`]) delivers it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use signalr_protocol::{CompletionResult, HubMessage, Invocation, Payload};

use crate::connection::ConnectionManager;
use crate::context::{ConnectionContext, HubCallerContext};
use crate::error::{ClientResultError, GroupError, SendError};
use crate::filter::{Filters, OutgoingInvocation};
pub use crate::handler::IntoArguments;
use crate::lifetime::{DefaultHubLifetimeManager, HubConnectionContext, HubLifetimeManager};
use crate::message::SerializedHubMessage;

/// Which connections a client method call is addressed to (what [`HubClients`] and
/// [`HubCallerClients`] select), as [`OutgoingInvocation::recipients`] shows it to filters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recipients {
    /// Every connection of the hub ([`HubClients::all`]).
    All,
    /// Every connection except these connection ids ([`HubClients::all_except`],
    /// [`HubCallerClients::others`]).
    AllExcept(Vec<String>),
    /// These connection ids ([`HubClients::client`], [`HubClients::clients`],
    /// [`HubCallerClients::caller`]).
    Connections(Vec<String>),
    /// The members of any of these groups ([`HubClients::group`], [`HubClients::groups`]).
    Groups(Vec<String>),
    /// The members of a group except these connection ids ([`HubClients::group_except`],
    /// [`HubCallerClients::others_in_group`]).
    GroupExcept(String, Vec<String>),
    /// The connections of these user identifiers ([`HubClients::user`], [`HubClients::users`]).
    Users(Vec<String>),
}

/// A hub's lifetime manager with what the hub layer adds around it: the filters' `on_outgoing`,
/// the local connections, the transports of its endpoints.
pub(crate) struct Lifetime {
    manager: Arc<dyn HubLifetimeManager>,
    pub(crate) local: Arc<DefaultHubLifetimeManager>,
    /// The hub's filters, for [`HubFilter::on_outgoing`](crate::filter::HubFilter::on_outgoing).
    filters: Filters,
    client_result_timeout: Duration,
    /// The connection tables of the hub's mounted endpoints (one per `Hub::router()`), for
    /// [`HubContext::open_transport_count`].
    endpoints: Mutex<Vec<Weak<ConnectionManager>>>,
}

impl Lifetime {
    pub(crate) fn new(
        manager: Arc<dyn HubLifetimeManager>,
        local: Arc<DefaultHubLifetimeManager>,
        filters: Filters,
        client_result_timeout: Duration,
    ) -> Self {
        Lifetime {
            manager,
            local,
            filters,
            client_result_timeout,
            endpoints: Mutex::default(),
        }
    }

    /// Counts the started connections of `endpoint` in [`HubContext::open_transport_count`].
    pub(crate) fn register_endpoint(&self, endpoint: &Arc<ConnectionManager>) {
        if let Ok(mut endpoints) = self.endpoints.lock() {
            endpoints.retain(|weak| weak.strong_count() > 0);
            endpoints.push(Arc::downgrade(endpoint));
        }
    }

    fn open_transports(&self) -> usize {
        self.endpoints.lock().map_or(0, |endpoints| {
            endpoints
                .iter()
                .filter_map(Weak::upgrade)
                .map(|manager| manager.started_count())
                .sum()
        })
    }

    /// Runs the filters' `on_outgoing` on a call of `method` about to be sent to `recipients`:
    /// the (possibly changed) method and arguments, or `None` when a filter dropped it.
    fn outgoing(
        &self,
        recipients: &Recipients,
        method: &str,
        arguments: Vec<Payload>,
        expects_result: bool,
    ) -> Option<(String, Vec<Payload>)> {
        if self.filters.is_empty() {
            return Some((method.to_owned(), arguments));
        }
        let mut invocation = OutgoingInvocation {
            method: method.to_owned(),
            arguments,
            recipients: recipients.clone(),
            expects_result,
        };
        for filter in self.filters.iter() {
            if !filter.on_outgoing(&mut invocation) {
                tracing::debug!(method = %invocation.method, "a hub filter dropped a client method call");
                return None;
            }
        }
        Some((invocation.method, invocation.arguments))
    }

    /// Sends a call of `method` (no answer expected) to `recipients`, after the filters'
    /// `on_outgoing`.
    async fn send_invocation(
        &self,
        recipients: &Recipients,
        method: &str,
        arguments: Vec<Payload>,
    ) -> Result<(), SendError> {
        let Some((method, arguments)) = self.outgoing(recipients, method, arguments, false) else {
            return Ok(());
        };
        let message = HubMessage::Invocation(Invocation {
            target: method,
            arguments,
            ..Default::default()
        });
        self.manager
            .send(recipients, SerializedHubMessage::new(message))
            .await
    }

    /// A connection of this server joined the hub (see [`HubLifetimeManager::on_connected`]).
    pub(crate) async fn add(&self, connection: Arc<ConnectionContext>) -> Result<(), SendError> {
        self.manager
            .on_connected(&HubConnectionContext(connection))
            .await
    }

    /// A connection of this server left the hub.
    pub(crate) async fn remove(&self, connection: &Arc<ConnectionContext>) {
        self.manager
            .on_disconnected(&HubConnectionContext(connection.clone()))
            .await;
    }

    pub(crate) fn count(&self) -> usize {
        self.local.count()
    }

    pub(crate) fn group_count(&self) -> usize {
        self.local.group_count()
    }

    pub(crate) async fn add_to_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), GroupError> {
        self.manager.add_to_group(connection_id, group).await
    }

    pub(crate) async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), GroupError> {
        self.manager.remove_from_group(connection_id, group).await
    }

    /// The groups `connection_id` (a connection of this server) is a member of, sorted.
    pub(crate) fn groups_of(&self, connection_id: &str) -> Vec<String> {
        self.local.groups_of(connection_id)
    }

    fn close_all(&self, close: &signalr_protocol::Close) {
        // The graceful-shutdown step: the connections that end from now on end as
        // `app_shutdown` in the metrics (crate::metrics).
        if let Ok(endpoints) = self.endpoints.lock() {
            for manager in endpoints.iter().filter_map(Weak::upgrade) {
                manager.shut_down();
            }
        }
        self.local.close_all(close);
    }

    /// The connection with that id, when it is connected to this hub on this server.
    pub(crate) fn connection(&self, connection_id: &str) -> Option<Arc<ConnectionContext>> {
        self.local.context(connection_id)
    }
}

/// Sends client method calls; implemented by [`ClientProxy`] and [`SingleClientProxy`], and what
/// typed client traits generated by `#[hub_client]` build on.
///
/// You don't implement this: use the proxies, or a `#[hub_client]` trait, which is implemented
/// for every `ClientSender`.
pub trait ClientSender: Send + Sync {
    /// Calls `method` with `arguments` on the proxy's clients (no answer expected).
    ///
    /// # Errors
    /// [`SendError`] when the hub's lifetime manager (a backplane) could not take the message.
    fn send_payloads(
        &self,
        method: &str,
        arguments: Vec<Payload>,
    ) -> BoxFuture<'_, Result<(), SendError>>;
}

/// A set of clients to call methods on (ASP.NET `IClientProxy`).
#[derive(Clone)]
#[must_use]
pub struct ClientProxy {
    lifetime: Arc<Lifetime>,
    recipients: Recipients,
}

impl std::fmt::Debug for ClientProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientProxy")
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

impl ClientProxy {
    /// Calls `method` on every client of the set without expecting an answer (an Invocation
    /// without id, docs/protocol.md, "Invocation ids"). Takes `()`, a tuple of up to 12 `Serialize` values, or a
    /// `Vec<Payload>`.
    ///
    /// The message is serialized at most once per protocol and queued to each connection. The
    /// future completes when the message is **queued**, not when it is delivered. One addressed
    /// connection (`client(id)`) waits for room in its queue; a fan-out never waits: a connection
    /// whose queue is full is closed as a slow consumer
    /// ([`ConnectionOptions::outgoing_queue_capacity`](crate::ConnectionOptions)). Unknown
    /// connection ids, groups and users are ignored, as in ASP.NET. A value that fails to
    /// serialize is logged and not sent.
    ///
    /// The hub's filters see the call first ([`HubFilter::on_outgoing`](crate::filter::HubFilter::on_outgoing));
    /// a call a filter drops is not an error. With a backplane, the message also goes to the
    /// other servers, which deliver it to their connections.
    ///
    /// # Errors
    /// [`SendError::Backplane`] when the hub's lifetime manager is a backplane that could not
    /// take the message (never with the default, in-memory one).
    pub async fn send(&self, method: &str, arguments: impl IntoArguments) -> Result<(), SendError> {
        self.lifetime
            .send_invocation(&self.recipients, method, arguments.into_arguments())
            .await
    }
}

impl ClientSender for ClientProxy {
    fn send_payloads(
        &self,
        method: &str,
        arguments: Vec<Payload>,
    ) -> BoxFuture<'_, Result<(), SendError>> {
        let method = method.to_owned();
        Box::pin(async move {
            self.lifetime
                .send_invocation(&self.recipients, &method, arguments)
                .await
        })
    }
}

/// One client (ASP.NET `ISingleClientProxy`): send to it, or invoke a method on it and await its
/// result (client results, docs/protocol.md, "Client results").
#[derive(Clone)]
#[must_use]
pub struct SingleClientProxy {
    lifetime: Arc<Lifetime>,
    connection_id: String,
    /// Set when the caller is inside `on_connected`, where client results are refused.
    connecting: bool,
}

impl std::fmt::Debug for SingleClientProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleClientProxy")
            .field("connection_id", &self.connection_id)
            .field("connecting", &self.connecting)
            .finish_non_exhaustive()
    }
}

impl SingleClientProxy {
    /// The connection this proxy addresses.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// Calls `method` without expecting an answer; see [`ClientProxy::send`].
    ///
    /// # Errors
    /// As [`ClientProxy::send`].
    pub async fn send(&self, method: &str, arguments: impl IntoArguments) -> Result<(), SendError> {
        let recipients = Recipients::Connections(vec![self.connection_id.clone()]);
        self.lifetime
            .send_invocation(&recipients, method, arguments.into_arguments())
            .await
    }

    /// Invokes `method` on the client and waits for its result, bound to `T` with serde.
    ///
    /// Waits at most [`HubOptions::client_result_timeout`](crate::HubOptions) (30 s by default).
    ///
    /// # Errors
    /// [`ClientResultError::Client`] with the client's error text (`Client didn't provide a
    /// result.` when it has no handler); [`ClientResultError::Disconnected`] when the connection
    /// closes first; [`ClientResultError::UnknownConnection`]; [`ClientResultError::Timeout`];
    /// [`ClientResultError::InvalidResult`] when the result does not bind to `T` (a void result
    /// binds as `null`); [`ClientResultError::NotAllowedInOnConnected`];
    /// [`ClientResultError::DroppedByFilter`] when a hub filter's
    /// [`on_outgoing`](crate::filter::HubFilter::on_outgoing) dropped the call; [`ClientResultError::Unsupported`] for a classic client.
    pub async fn invoke<T: DeserializeOwned>(
        &self,
        method: &str,
        arguments: impl IntoArguments,
    ) -> Result<T, ClientResultError> {
        if self.connecting {
            return Err(ClientResultError::NotAllowedInOnConnected);
        }
        let recipients = Recipients::Connections(vec![self.connection_id.clone()]);
        let Some((method, arguments)) =
            self.lifetime
                .outgoing(&recipients, method, arguments.into_arguments(), true)
        else {
            return Err(ClientResultError::DroppedByFilter(method.to_owned()));
        };
        let result = self
            .lifetime
            .manager
            .invoke_connection(
                &self.connection_id,
                method,
                arguments,
                self.lifetime.client_result_timeout,
            )
            .await?;
        match result {
            CompletionResult::Error(error) => Err(ClientResultError::Client(error)),
            CompletionResult::Value(payload) => payload
                .deserialize()
                .map_err(|e| ClientResultError::InvalidResult(e.to_string())),
            CompletionResult::Void => serde_json::from_value(serde_json::Value::Null)
                .map_err(|e| ClientResultError::InvalidResult(e.to_string())),
        }
    }
}

impl ClientSender for SingleClientProxy {
    fn send_payloads(
        &self,
        method: &str,
        arguments: Vec<Payload>,
    ) -> BoxFuture<'_, Result<(), SendError>> {
        let recipients = Recipients::Connections(vec![self.connection_id.clone()]);
        let method = method.to_owned();
        Box::pin(async move {
            self.lifetime
                .send_invocation(&recipients, &method, arguments)
                .await
        })
    }
}

/// The clients of a hub, from outside any hub method (ASP.NET `IHubClients`).
#[derive(Clone)]
pub struct HubClients {
    lifetime: Arc<Lifetime>,
}

impl std::fmt::Debug for HubClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClients")
            .field("connections", &self.lifetime.count())
            .field("groups", &self.lifetime.group_count())
            .finish_non_exhaustive()
    }
}

impl HubClients {
    pub(crate) fn new(lifetime: Arc<Lifetime>) -> Self {
        HubClients { lifetime }
    }

    fn proxy(&self, recipients: Recipients) -> ClientProxy {
        ClientProxy {
            lifetime: self.lifetime.clone(),
            recipients,
        }
    }

    fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
        items.into_iter().map(Into::into).collect()
    }

    /// Every connection of the hub.
    pub fn all(&self) -> ClientProxy {
        self.proxy(Recipients::All)
    }

    /// Every connection except the listed connection ids.
    pub fn all_except<S: Into<String>>(
        &self,
        connection_ids: impl IntoIterator<Item = S>,
    ) -> ClientProxy {
        self.proxy(Recipients::AllExcept(Self::strings(connection_ids)))
    }

    /// One connection, by connection id; also for client results.
    pub fn client(&self, connection_id: impl Into<String>) -> SingleClientProxy {
        SingleClientProxy {
            lifetime: self.lifetime.clone(),
            connection_id: connection_id.into(),
            connecting: false,
        }
    }

    /// The listed connections.
    pub fn clients<S: Into<String>>(
        &self,
        connection_ids: impl IntoIterator<Item = S>,
    ) -> ClientProxy {
        self.proxy(Recipients::Connections(Self::strings(connection_ids)))
    }

    /// The members of a group.
    pub fn group(&self, group: impl Into<String>) -> ClientProxy {
        self.proxy(Recipients::Groups(vec![group.into()]))
    }

    /// The members of any of the groups (each connection once).
    pub fn groups<S: Into<String>>(&self, groups: impl IntoIterator<Item = S>) -> ClientProxy {
        self.proxy(Recipients::Groups(Self::strings(groups)))
    }

    /// The members of a group except the listed connection ids.
    pub fn group_except<S: Into<String>>(
        &self,
        group: impl Into<String>,
        connection_ids: impl IntoIterator<Item = S>,
    ) -> ClientProxy {
        self.proxy(Recipients::GroupExcept(
            group.into(),
            Self::strings(connection_ids),
        ))
    }

    /// Every connection of a user (by user identifier).
    pub fn user(&self, user_id: impl Into<String>) -> ClientProxy {
        self.proxy(Recipients::Users(vec![user_id.into()]))
    }

    /// Every connection of the listed users.
    pub fn users<S: Into<String>>(&self, user_ids: impl IntoIterator<Item = S>) -> ClientProxy {
        self.proxy(Recipients::Users(Self::strings(user_ids)))
    }
}

/// The clients as seen from a hub method (ASP.NET `IHubCallerClients`): everything of
/// [`HubClients`] plus the caller-relative sets.
#[derive(Clone)]
pub struct HubCallerClients {
    clients: HubClients,
    caller: HubCallerContext,
}

impl std::fmt::Debug for HubCallerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCallerClients")
            .field("caller", &self.caller.connection_id())
            .field("clients", &self.clients)
            .finish()
    }
}

impl std::ops::Deref for HubCallerClients {
    type Target = HubClients;
    fn deref(&self) -> &HubClients {
        &self.clients
    }
}

impl HubCallerClients {
    pub(crate) fn new(lifetime: Arc<Lifetime>, caller: HubCallerContext) -> Self {
        HubCallerClients {
            clients: HubClients::new(lifetime),
            caller,
        }
    }

    /// The connection that made the call; also for client results. Inside `on_connected`,
    /// `invoke` is refused as in ASP.NET.
    pub fn caller(&self) -> SingleClientProxy {
        SingleClientProxy {
            lifetime: self.clients.lifetime.clone(),
            connection_id: self.caller.connection_id().to_owned(),
            connecting: self.caller.connecting,
        }
    }

    /// Every connection except the caller.
    pub fn others(&self) -> ClientProxy {
        self.clients.all_except([self.caller.connection_id()])
    }

    /// The members of a group except the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> ClientProxy {
        self.clients
            .group_except(group, [self.caller.connection_id()])
    }
}

/// Adds connections to groups and removes them (ASP.NET `IGroupManager`). A group exists while it
/// has members; memberships end with the connection. Groups belong to one hub.
#[derive(Clone)]
pub struct GroupManager {
    lifetime: Arc<Lifetime>,
}

impl std::fmt::Debug for GroupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupManager")
            .field("connections", &self.lifetime.count())
            .field("groups", &self.lifetime.group_count())
            .finish_non_exhaustive()
    }
}

impl GroupManager {
    pub(crate) fn new(lifetime: Arc<Lifetime>) -> Self {
        GroupManager { lifetime }
    }

    /// Adds a connection to a group. Once this returns, sends to the group reach it. Unknown
    /// connection ids are ignored by the default lifetime manager. With a backplane the
    /// connection may be on another server, which acknowledges the change.
    ///
    /// # Errors
    /// [`GroupError`] from a backplane: it failed, or no server acknowledged the change in time
    /// (never with the default, in-memory manager).
    pub async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), GroupError> {
        self.lifetime.add_to_group(connection_id, group).await
    }

    /// Removes a connection from a group; see [`add_to_group`](Self::add_to_group).
    ///
    /// # Errors
    /// As [`add_to_group`](Self::add_to_group).
    pub async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), GroupError> {
        self.lifetime.remove_from_group(connection_id, group).await
    }
}

/// A handle for sending to a hub's clients from outside hub methods (ASP.NET `IHubContext`):
/// background tasks, HTTP handlers. Cheap to clone; messages sent through one handle, one after
/// the other, reach each connection in that order.
#[derive(Clone)]
pub struct HubContext {
    lifetime: Arc<Lifetime>,
}

impl std::fmt::Debug for HubContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubContext")
            .field("connections", &self.lifetime.count())
            .field("groups", &self.lifetime.group_count())
            .finish_non_exhaustive()
    }
}

impl HubContext {
    pub(crate) fn new(lifetime: Arc<Lifetime>) -> Self {
        HubContext { lifetime }
    }

    /// The hub's clients.
    pub fn clients(&self) -> HubClients {
        HubClients::new(self.lifetime.clone())
    }

    /// The hub's groups.
    pub fn groups(&self) -> GroupManager {
        GroupManager::new(self.lifetime.clone())
    }

    /// Connections of this server that completed the handshake and are open (with a backplane,
    /// the other servers' connections are not counted).
    pub fn connection_count(&self) -> usize {
        self.lifetime.count()
    }

    /// ASP.NET Core connections of the hub (on every `Hub::router()` it is mounted with) whose
    /// transport is still open: started and not yet ended. A connection leaves
    /// [`connection_count`](Self::connection_count) when the hub lets it go, but its transport
    /// may still have to deliver the last messages, such as the Close message of
    /// [`close_all`](Self::close_all): a WebSocket or SSE response ends once they are written, a
    /// long-polling connection counts until a poll has taken them (its response is then in flight,
    /// which a graceful HTTP shutdown lets finish). For a
    /// graceful shutdown, wait until this is 0 before stopping the HTTP server, so that no client
    /// loses its Close message to a closed socket.
    pub fn open_transport_count(&self) -> usize {
        self.lifetime.open_transports()
    }

    /// Groups with at least one member on this server.
    pub fn group_count(&self) -> usize {
        self.lifetime.group_count()
    }

    /// Closes every connection of the hub: each gets a Close message (docs/protocol.md, "Close message") with
    /// `error` and `allow_reconnect`, then its transport closes. For graceful shutdown, call this
    /// before stopping the HTTP server (`allow_reconnect: true` lets clients with automatic
    /// reconnect come back to a restarted server). Returns at once; the closes are queued.
    pub fn close_all(&self, error: Option<String>, allow_reconnect: bool) {
        self.lifetime.close_all(&signalr_protocol::Close {
            error,
            allow_reconnect,
        });
    }
}
