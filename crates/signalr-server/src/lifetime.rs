//! The lifetime manager (ASP.NET `HubLifetimeManager`): which connections, groups and users a hub
//! has, and getting messages to them.
//!
//! Every hub has one. The default, [`DefaultHubLifetimeManager`], keeps everything in this
//! process's memory. A scale-out backplane (such as the Redis one of the `signalr-redis` crate)
//! implements [`HubLifetimeManager`] around a [`DefaultHubLifetimeManager`] of its own: it
//! delivers to the connections of this server through it, and tells the other servers about the
//! rest. Install one with [`HubBuilder::lifetime_manager`](crate::HubBuilder::lifetime_manager).
//!
//! Hub code never calls the manager directly: [`HubClients`](crate::clients::HubClients),
//! [`GroupManager`](crate::clients::GroupManager) and client results go through it. What a manager
//! receives has already passed the hub's [`HubFilter::on_outgoing`](crate::filter::HubFilter::on_outgoing).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use signalr_protocol::{CompletionResult, HubMessage, HubProtocol, Invocation, Payload};

use crate::clients::Recipients;
use crate::context::ConnectionContext;
use crate::error::{ClientResultError, GroupError, SendError};
pub use crate::message::SerializedHubMessage;

/// Where a hub's messages go, and which connections, groups and users it has (ASP.NET
/// `HubLifetimeManager<THub>`).
///
/// The hub runtime calls [`on_connected`](Self::on_connected) when a connection completed its
/// handshake (before its handshake response is released, so that a message sent right after a
/// client's `start()` reaches it) and [`on_disconnected`](Self::on_disconnected) when it is gone;
/// hub code's sends, group changes and client results become the other calls. Every method is
/// called on the server that hosts the calling code; the connections named may live on any
/// server sharing the backplane.
///
/// Implementations must be cheap to call concurrently from many tasks, must never block the
/// caller's thread, and must bound every wait (a backplane that does not answer is an error, not
/// a hang).
pub trait HubLifetimeManager: Send + Sync + 'static {
    /// A connection of this server joined the hub. It must be reachable by every kind of send
    /// once the returned future completes.
    ///
    /// # Errors
    /// [`SendError`] when the connection cannot be made reachable; the hub then closes it with
    /// `Connection closed with an error.`, as ASP.NET does when its lifetime manager fails.
    fn on_connected<'a>(
        &'a self,
        connection: &'a HubConnectionContext,
    ) -> BoxFuture<'a, Result<(), SendError>>;

    /// A connection of this server left the hub; its group memberships end with it.
    fn on_disconnected<'a>(&'a self, connection: &'a HubConnectionContext) -> BoxFuture<'a, ()>;

    /// Sends `message` (an invocation without id) to `recipients`. Completes once the message is
    /// queued to this server's recipients and handed to the backplane, not when it is delivered.
    /// Unknown connection ids, groups and users are not errors.
    ///
    /// # Errors
    /// [`SendError::Backplane`] when the backplane could not take the message (the connections
    /// of this server may have received it).
    fn send<'a>(
        &'a self,
        recipients: &'a Recipients,
        message: Arc<SerializedHubMessage>,
    ) -> BoxFuture<'a, Result<(), SendError>>;

    /// Adds the connection `connection_id`, on any server, to `group`. Once this completes,
    /// sends to the group reach it. An unknown connection id is not an error on the default
    /// manager; a backplane cannot tell an unknown connection from a server that does not answer
    /// ([`GroupError::AckTimeout`]).
    ///
    /// # Errors
    /// [`GroupError`] when the backplane fails or no server acknowledged the change in time.
    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>>;

    /// Removes the connection `connection_id`, on any server, from `group`; see
    /// [`add_to_group`](Self::add_to_group).
    ///
    /// # Errors
    /// As [`add_to_group`](Self::add_to_group).
    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>>;

    /// Invokes the client method `target` with `arguments` on the connection `connection_id`, on
    /// any server, and waits at most `timeout` for the client's answer (a client result, ASP.NET
    /// `InvokeConnectionAsync`).
    ///
    /// # Errors
    /// [`ClientResultError::UnknownConnection`] when no server has the connection,
    /// [`ClientResultError::Disconnected`] when it closes before answering,
    /// [`ClientResultError::Timeout`], [`ClientResultError::Unsupported`] for a classic client,
    /// [`ClientResultError::Backplane`] when the backplane fails.
    fn invoke_connection<'a>(
        &'a self,
        connection_id: &'a str,
        target: String,
        arguments: Vec<Payload>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CompletionResult, ClientResultError>>;
}

/// A connection of this server as the lifetime manager sees it (ASP.NET `HubConnectionContext`):
/// its ids, its protocol, and a way to write to it. Cheap to clone.
#[derive(Clone)]
pub struct HubConnectionContext(pub(crate) Arc<ConnectionContext>);

impl fmt::Debug for HubConnectionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConnectionContext")
            .field("connection_id", &self.connection_id())
            .field("user_id", &self.user_id())
            .field("protocol", &self.protocol())
            .finish_non_exhaustive()
    }
}

impl HubConnectionContext {
    /// The connection id (ASP.NET `ConnectionId`), unique across servers.
    pub fn connection_id(&self) -> &str {
        &self.0.id
    }

    /// The user identifier that `Clients.user(...)` addresses (see
    /// [`HubBuilder::user_id_from_request`](crate::HubBuilder::user_id_from_request)), as
    /// [`HubCallerContext::user_identifier`](crate::HubCallerContext::user_identifier).
    ///
    /// `None` when the hub's user-id provider returned `None` for the connection: with the
    /// default provider, when the user has neither a name-identifier nor a `sub` claim (always
    /// for an anonymous connection).
    pub fn user_id(&self) -> Option<&str> {
        self.0.user_id.as_deref()
    }

    /// The ASP.NET Core hub protocol chosen in the handshake; `None` for a classic SignalR 2.x
    /// client (which has no hub protocol: its messages are made from the JSON form).
    pub fn protocol(&self) -> Option<HubProtocol> {
        self.0.protocol
    }

    /// Whether the client can answer invocations that expect a result (false for classic
    /// clients).
    pub fn supports_client_results(&self) -> bool {
        self.0.sink.client_results()
    }

    /// Queues `message` without waiting, as a fan-out does: a connection whose queue is full is
    /// closed as a slow consumer
    /// ([`ConnectionOptions::outgoing_buffer_size`](crate::ConnectionOptions)).
    pub fn try_send(&self, message: &Arc<SerializedHubMessage>) {
        self.0.sink.try_send(message);
    }

    /// Queues `message` sent to `groups`, as [`try_send`](Self::try_send) (classic clients use
    /// the groups when they replay missed messages after a reconnect).
    pub fn try_send_to_groups(&self, message: &Arc<SerializedHubMessage>, groups: &[String]) {
        self.0.sink.try_send_to_groups(message, groups);
    }

    /// Queues `message`, waiting for room in the connection's queue (back-pressure). Returns
    /// `false` when the connection is gone.
    pub async fn send(&self, message: Arc<SerializedHubMessage>) -> bool {
        self.0.sink.send(message).await.is_ok()
    }

    /// Registers a client result the client will answer with a Completion for `invocation_id`
    /// (an id made by another server, for a client-result invocation it relays), and returns a
    /// future of the answer. The future gives [`ClientResultError::Disconnected`] when the
    /// connection ends first; it does not time out by itself.
    ///
    /// # Errors
    /// The future's only error is [`ClientResultError::Disconnected`], as above (what the client
    /// answered, error or result, is the [`CompletionResult`]).
    pub fn expect_completion(
        &self,
        invocation_id: String,
    ) -> impl Future<Output = Result<CompletionResult, ClientResultError>> + Send + 'static {
        let receiver = self.0.register_result_with_id(invocation_id);
        let connection_id = self.0.id.clone();
        async move {
            receiver
                .await
                .map_err(|_| ClientResultError::Disconnected(connection_id))
        }
    }

    /// Completes when the connection has ended for good.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.0.closed.clone();
        async move { token.cancelled().await }
    }
}

#[derive(Default)]
struct Registry {
    connections: HashMap<String, Arc<ConnectionContext>>,
    groups: HashMap<String, HashSet<String>>,
    memberships: HashMap<String, HashSet<String>>,
    users: HashMap<String, HashSet<String>>,
}

fn sorted(groups: &HashSet<String>) -> Vec<String> {
    let mut groups: Vec<String> = groups.iter().cloned().collect();
    groups.sort();
    groups
}

/// The in-memory lifetime manager (ASP.NET `DefaultHubLifetimeManager`): the connections, groups
/// and users of one hub on this server. It is every hub's manager unless another is installed,
/// and backplanes use one to reach the connections of their own server.
///
/// Its sends never fail. Group names, user ids and connection ids are compared exactly (case
/// matters).
#[derive(Default)]
pub struct DefaultHubLifetimeManager {
    registry: RwLock<Registry>,
}

impl fmt::Debug for DefaultHubLifetimeManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultHubLifetimeManager")
            .field("connections", &self.count())
            .field("groups", &self.group_count())
            .finish()
    }
}

impl DefaultHubLifetimeManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection of this server (with its user).
    pub fn add(&self, connection: &HubConnectionContext) {
        let Ok(mut registry) = self.registry.write() else {
            return;
        };
        let id = connection.connection_id().to_owned();
        if let Some(user) = connection.user_id() {
            registry
                .users
                .entry(user.to_owned())
                .or_default()
                .insert(id.clone());
        }
        registry.connections.insert(id, connection.0.clone());
    }

    /// Forgets a connection with its group memberships; groups left empty disappear. Returns the
    /// groups it was a member of, sorted.
    pub fn remove(&self, connection_id: &str) -> Vec<String> {
        let Ok(mut registry) = self.registry.write() else {
            return Vec::new();
        };
        let Some(connection) = registry.connections.remove(connection_id) else {
            return Vec::new();
        };
        if let Some(user) = &connection.user_id
            && let Some(set) = registry.users.get_mut(user)
        {
            set.remove(connection_id);
            if set.is_empty() {
                registry.users.remove(user);
            }
        }
        let groups = registry
            .memberships
            .remove(connection_id)
            .unwrap_or_default();
        for group in &groups {
            if let Some(members) = registry.groups.get_mut(group) {
                members.remove(connection_id);
                if members.is_empty() {
                    registry.groups.remove(group);
                }
            }
        }
        sorted(&groups)
    }

    /// Connections of this server in the hub.
    pub fn count(&self) -> usize {
        self.registry
            .read()
            .map(|r| r.connections.len())
            .unwrap_or(0)
    }

    /// Groups with at least one member on this server.
    pub fn group_count(&self) -> usize {
        self.registry.read().map(|r| r.groups.len()).unwrap_or(0)
    }

    /// Whether `group` has a member on this server.
    pub fn has_group(&self, group: &str) -> bool {
        self.registry
            .read()
            .is_ok_and(|r| r.groups.contains_key(group))
    }

    /// Whether the user `user_id` has a connection on this server.
    pub fn has_user(&self, user_id: &str) -> bool {
        self.registry
            .read()
            .is_ok_and(|r| r.users.contains_key(user_id))
    }

    /// The connection with that id, when it is on this server.
    pub fn connection(&self, connection_id: &str) -> Option<HubConnectionContext> {
        self.context(connection_id).map(HubConnectionContext)
    }

    pub(crate) fn context(&self, connection_id: &str) -> Option<Arc<ConnectionContext>> {
        self.registry
            .read()
            .ok()?
            .connections
            .get(connection_id)
            .cloned()
    }

    /// Adds a connection of this server to `group`. Returns `false` when the connection is not
    /// on this server (nothing changes).
    pub fn add_to_group(&self, connection_id: &str, group: &str) -> bool {
        let Ok(mut registry) = self.registry.write() else {
            return false;
        };
        let Some(connection) = registry.connections.get(connection_id).cloned() else {
            return false;
        };
        registry
            .groups
            .entry(group.to_owned())
            .or_default()
            .insert(connection_id.to_owned());
        let groups = registry
            .memberships
            .entry(connection_id.to_owned())
            .or_default();
        if groups.insert(group.to_owned()) {
            let groups = sorted(groups);
            drop(registry);
            connection.sink.groups_changed(&groups);
        }
        true
    }

    /// Removes a connection of this server from `group`. Returns `false` when the connection is
    /// not on this server.
    pub fn remove_from_group(&self, connection_id: &str, group: &str) -> bool {
        let Ok(mut registry) = self.registry.write() else {
            return false;
        };
        if !registry.connections.contains_key(connection_id) {
            return false;
        }
        if let Some(members) = registry.groups.get_mut(group) {
            members.remove(connection_id);
            if members.is_empty() {
                registry.groups.remove(group);
            }
        }
        let Some(groups) = registry.memberships.get_mut(connection_id) else {
            return true;
        };
        if groups.remove(group) {
            let groups = sorted(groups);
            let connection = registry.connections.get(connection_id).cloned();
            drop(registry);
            if let Some(connection) = connection {
                connection.sink.groups_changed(&groups);
            }
        }
        true
    }

    /// The groups `connection_id` is a member of, sorted.
    pub fn groups_of(&self, connection_id: &str) -> Vec<String> {
        self.registry
            .read()
            .ok()
            .and_then(|r| r.memberships.get(connection_id).map(sorted))
            .unwrap_or_default()
    }

    pub(crate) fn close_all(&self, close: &signalr_protocol::Close) {
        let Ok(registry) = self.registry.read() else {
            return;
        };
        for connection in registry.connections.values() {
            connection.request_close(close.clone());
        }
    }

    fn resolve(&self, recipients: &Recipients) -> Vec<Arc<ConnectionContext>> {
        let Ok(registry) = self.registry.read() else {
            return Vec::new();
        };
        let by_id = |id: &String| registry.connections.get(id).cloned();
        match recipients {
            Recipients::All => registry.connections.values().cloned().collect(),
            Recipients::AllExcept(excluded) => registry
                .connections
                .iter()
                .filter(|(id, _)| !excluded.contains(id))
                .map(|(_, c)| c.clone())
                .collect(),
            Recipients::Connections(ids) => {
                let unique: HashSet<&String> = ids.iter().collect();
                unique.into_iter().filter_map(by_id).collect()
            }
            Recipients::Groups(groups) => {
                let members: HashSet<&String> = groups
                    .iter()
                    .filter_map(|g| registry.groups.get(g))
                    .flatten()
                    .collect();
                members.into_iter().filter_map(by_id).collect()
            }
            Recipients::GroupExcept(group, excluded) => registry
                .groups
                .get(group)
                .into_iter()
                .flatten()
                .filter(|id| !excluded.contains(id))
                .filter_map(by_id)
                .collect(),
            Recipients::Users(users) => {
                let members: HashSet<&String> = users
                    .iter()
                    .filter_map(|u| registry.users.get(u))
                    .flatten()
                    .collect();
                members.into_iter().filter_map(by_id).collect()
            }
        }
    }

    /// Queues `message` to the recipients on this server. One addressed connection
    /// (`Recipients::Connections` with one id) waits for room in its queue; a fan-out never
    /// waits (a full queue closes that connection as a slow consumer).
    pub async fn send_local(&self, recipients: &Recipients, message: &Arc<SerializedHubMessage>) {
        let targets = self.resolve(recipients);
        if let [single] = targets.as_slice()
            && matches!(recipients, Recipients::Connections(ids) if ids.len() == 1)
        {
            let _ = single.sink.send(message.clone()).await;
            return;
        }
        let groups = match recipients {
            Recipients::Groups(groups) => Some(groups.as_slice()),
            Recipients::GroupExcept(group, _) => Some(std::slice::from_ref(group)),
            _ => None,
        };
        for connection in targets {
            match groups {
                Some(groups) => connection.sink.try_send_to_groups(message, groups),
                None => connection.sink.try_send(message),
            }
        }
    }

    /// Invokes `target` on a connection of this server and waits at most `timeout` for its
    /// answer; see [`HubLifetimeManager::invoke_connection`].
    ///
    /// # Errors
    /// As [`HubLifetimeManager::invoke_connection`], except `Backplane`.
    pub async fn invoke_local(
        &self,
        connection_id: &str,
        target: String,
        arguments: Vec<Payload>,
        timeout: Duration,
    ) -> Result<CompletionResult, ClientResultError> {
        let connection = self
            .context(connection_id)
            .ok_or_else(|| ClientResultError::UnknownConnection(connection_id.to_owned()))?;
        if !connection.sink.client_results() {
            return Err(ClientResultError::Unsupported);
        }
        let (id, receiver) = connection.register_result();
        let message = HubMessage::Invocation(Invocation {
            invocation_id: Some(id.clone()),
            target,
            arguments,
            ..Default::default()
        });
        let disconnected = || ClientResultError::Disconnected(connection_id.to_owned());
        if connection
            .sink
            .send(SerializedHubMessage::new(message))
            .await
            .is_err()
        {
            connection.forget_result(&id);
            return Err(disconnected());
        }
        tokio::select! {
            result = receiver => result.map_err(|_| disconnected()),
            () = tokio::time::sleep(timeout) => {
                connection.forget_result(&id);
                Err(ClientResultError::Timeout)
            }
            () = connection.closed.cancelled() => Err(disconnected()),
        }
    }
}

impl HubLifetimeManager for DefaultHubLifetimeManager {
    fn on_connected<'a>(
        &'a self,
        connection: &'a HubConnectionContext,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        self.add(connection);
        Box::pin(std::future::ready(Ok(())))
    }

    fn on_disconnected<'a>(&'a self, connection: &'a HubConnectionContext) -> BoxFuture<'a, ()> {
        self.remove(connection.connection_id());
        Box::pin(std::future::ready(()))
    }

    fn send<'a>(
        &'a self,
        recipients: &'a Recipients,
        message: Arc<SerializedHubMessage>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            self.send_local(recipients, &message).await;
            Ok(())
        })
    }

    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        DefaultHubLifetimeManager::add_to_group(self, connection_id, group);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        DefaultHubLifetimeManager::remove_from_group(self, connection_id, group);
        Box::pin(std::future::ready(Ok(())))
    }

    fn invoke_connection<'a>(
        &'a self,
        connection_id: &'a str,
        target: String,
        arguments: Vec<Payload>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CompletionResult, ClientResultError>> {
        Box::pin(self.invoke_local(connection_id, target, arguments, timeout))
    }
}
