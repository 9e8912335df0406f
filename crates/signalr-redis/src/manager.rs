//! The Redis lifetime manager of one hub.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use signalr_protocol::{
    Completion, CompletionResult, HubMessage, HubProtocol, Invocation, Payload,
};
use signalr_server::lifetime::{
    DefaultHubLifetimeManager, HubConnectionContext, HubLifetimeManager, SerializedHubMessage,
};
use signalr_server::{
    clients::Recipients,
    error::{ClientResultError, GroupError, SendError},
};
use tokio::sync::{oneshot, watch};

use crate::protocol::{
    Ack, ChannelKind, Channels, ClientResultRoute, CompletionEnvelope, GroupAction, GroupCommand,
    InvocationEnvelope, ServerName, new_invocation_id,
};
use crate::{RedisBackplane, RedisOptions};

/// What the owner of a connection answers when it closes before its client answered a
/// client-result call relayed from another server (ASP.NET's text).
const DISCONNECTED: &str = "Connection disconnected.";

/// How long a publish waits before it tries a broken connection again.
const PUBLISH_RETRY: Duration = Duration::from_millis(100);

/// How long the subscriber waits between two attempts to reach Redis.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The lifetime manager of one hub on a Redis backplane (ASP.NET `RedisHubLifetimeManager`).
///
/// Made by [`RedisBackplane::hub`]; hub code reaches it through the hub's clients and groups.
/// See the crate docs for the channels, what goes where, and what happens while Redis is away.
pub struct RedisHubLifetimeManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisHubLifetimeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHubLifetimeManager")
            .field("hub_name", &self.inner.channels.hub_name())
            .field("server_name", &self.inner.server_name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    local: Arc<DefaultHubLifetimeManager>,
    channels: Channels,
    server_name: String,
    publisher: redis::aio::ConnectionManager,
    options: Arc<RedisOptions>,
    subscriptions: tokio::sync::Mutex<Subscriptions>,
    /// True once the start channels are subscribed (first time).
    ready: watch::Sender<bool>,
    /// Whether the subscribing connection is up now.
    subscribed: AtomicBool,
    /// Whether the last publish failed (to log a failure and the recovery once each).
    publish_failing: AtomicBool,
    next_command_id: AtomicI32,
    pending_acks: Mutex<HashMap<i32, oneshot::Sender<()>>>,
    pending_results: Mutex<HashMap<String, oneshot::Sender<CompletionResult>>>,
    /// Dropped with the manager: ends the subscriber task.
    _stop: oneshot::Sender<()>,
}

/// The channels this hub wants, and the connection that has them subscribed (none while Redis
/// is away). Changed only under its lock, so that a reconnect restores exactly what is wanted.
struct Subscriptions {
    sink: Option<redis::aio::PubSubSink>,
    /// The start channels, in ASP.NET's order.
    start: Vec<String>,
    /// Connection, user and group channels wanted now.
    wanted: HashSet<String>,
}

impl RedisHubLifetimeManager {
    pub(crate) fn start(
        backplane: &RedisBackplane,
        hub_name: &str,
        local: Arc<DefaultHubLifetimeManager>,
    ) -> Arc<dyn HubLifetimeManager> {
        let channels = Channels::new(backplane.options.channel_prefix.as_deref(), hub_name);
        let server_name = ServerName::generate().into_string();
        let start = vec![
            channels.all(),
            channels.internal_groups(),
            channels.ack(&server_name),
            channels.return_channel(&server_name),
        ];
        let (stop, stopped) = oneshot::channel();
        let inner = Arc::new(Inner {
            local,
            channels,
            server_name,
            publisher: backplane.publisher.clone(),
            options: backplane.options.clone(),
            subscriptions: tokio::sync::Mutex::new(Subscriptions {
                sink: None,
                start,
                wanted: HashSet::new(),
            }),
            ready: watch::Sender::new(false),
            subscribed: AtomicBool::new(false),
            publish_failing: AtomicBool::new(false),
            next_command_id: AtomicI32::new(1),
            pending_acks: Mutex::new(HashMap::new()),
            pending_results: Mutex::new(HashMap::new()),
            _stop: stop,
        });
        backplane.register(&inner_status(&inner));
        backplane.runtime.spawn(run_subscriber(
            Arc::downgrade(&inner),
            backplane.client.clone(),
            stopped,
        ));
        Arc::new(RedisHubLifetimeManager { inner })
    }
}

/// What [`RedisBackplane::status`] reports of a hub.
fn inner_status(inner: &Arc<Inner>) -> Weak<dyn HubStatusSource> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    weak
}

/// A hub on the backplane as [`RedisBackplane::status`] shows it.
pub(crate) trait HubStatusSource: Send + Sync {
    fn status(&self) -> crate::HubStatus;
}

impl HubStatusSource for Inner {
    fn status(&self) -> crate::HubStatus {
        crate::HubStatus {
            hub_name: self.channels.hub_name().to_owned(),
            server_name: self.server_name.clone(),
            subscribed: self.subscribed.load(Ordering::Acquire),
        }
    }
}

/// Keeps the hub's subscribing connection up: connects, subscribes what is wanted, hands every
/// message to the manager; after a loss, waits [`RECONNECT_DELAY`] and starts over. Ends when
/// the manager is dropped.
async fn run_subscriber(
    weak: Weak<Inner>,
    client: redis::Client,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut down_logged = false;
    loop {
        let Some(timeout) = weak.upgrade().map(|inner| inner.options.command_timeout) else {
            return;
        };
        let connected = tokio::select! {
            connected = tokio::time::timeout(timeout, client.get_async_pubsub()) => connected,
            _ = &mut stopped => return,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                let (sink, mut stream) = pubsub.split();
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                match inner.restore(sink).await {
                    Ok(()) => {
                        if down_logged {
                            tracing::info!(
                                hub = inner.channels.hub_name(),
                                "Redis subscriptions restored"
                            );
                        }
                        drop(inner);
                        loop {
                            let message = tokio::select! {
                                message = stream.next() => message,
                                _ = &mut stopped => return,
                            };
                            let Some(message) = message else {
                                break;
                            };
                            let Some(inner) = weak.upgrade() else {
                                return;
                            };
                            inner.on_message(&message).await;
                        }
                        let Some(inner) = weak.upgrade() else {
                            return;
                        };
                        inner.lost().await;
                        tracing::warn!(
                            hub = inner.channels.hub_name(),
                            "lost the Redis subscribing connection; reconnecting (messages published meanwhile are lost for this server)"
                        );
                        down_logged = true;
                    }
                    Err(err) => {
                        inner.lost().await;
                        if !down_logged {
                            tracing::warn!(hub = inner.channels.hub_name(), error = %err, "cannot subscribe on Redis; retrying");
                            down_logged = true;
                        }
                    }
                }
            }
            Ok(Err(err)) => {
                if !down_logged {
                    tracing::warn!(error = %err, "cannot reach Redis; retrying every second");
                    down_logged = true;
                }
            }
            Err(_) => {
                if !down_logged {
                    tracing::warn!("cannot reach Redis (timed out); retrying every second");
                    down_logged = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RECONNECT_DELAY) => {}
            _ = &mut stopped => return,
        }
    }
}

fn frames(message: &SerializedHubMessage) -> Vec<(String, Bytes)> {
    [HubProtocol::Json, HubProtocol::MessagePack]
        .into_iter()
        .filter_map(|protocol| {
            message
                .serialized(protocol)
                .map(|frame| (protocol.name().to_owned(), frame.clone()))
        })
        .collect()
}

fn encode_frame(protocol: HubProtocol, message: &HubMessage) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match protocol.write_message(message, &mut out) {
        Ok(()) => Some(out.freeze()),
        Err(err) => {
            tracing::error!(%err, "a completion failed to serialize");
            None
        }
    }
}

impl Inner {
    /// Subscribes everything wanted on a new connection: the start channels first, in order,
    /// then the rest.
    async fn restore(&self, mut sink: redis::aio::PubSubSink) -> Result<(), String> {
        let mut subscriptions = self.subscriptions.lock().await;
        let timeout = self.options.command_timeout;
        let all: Vec<String> = subscriptions
            .start
            .iter()
            .chain(subscriptions.wanted.iter())
            .cloned()
            .collect();
        for channel in all {
            match tokio::time::timeout(timeout, sink.subscribe(&channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err.to_string()),
                Err(_) => return Err("SUBSCRIBE timed out".into()),
            }
        }
        subscriptions.sink = Some(sink);
        self.subscribed.store(true, Ordering::Release);
        self.ready.send_replace(true);
        Ok(())
    }

    async fn lost(&self) {
        self.subscriptions.lock().await.sink = None;
        self.subscribed.store(false, Ordering::Release);
    }

    /// Makes `channel` subscribed (`want`) or not. While Redis is away only the wish is
    /// recorded; the reconnect applies it.
    async fn set_subscribed(&self, channel: String, want: bool) {
        let mut subscriptions = self.subscriptions.lock().await;
        let changed = if want {
            subscriptions.wanted.insert(channel.clone())
        } else {
            subscriptions.wanted.remove(&channel)
        };
        if !changed {
            return;
        }
        let timeout = self.options.command_timeout;
        if let Some(sink) = subscriptions.sink.as_mut() {
            let result = if want {
                tokio::time::timeout(timeout, sink.subscribe(&channel)).await
            } else {
                tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await
            };
            if !matches!(result, Ok(Ok(()))) {
                // The connection is failing; the reconnect restores what is wanted.
                tracing::debug!(%channel, want, "a Redis (un)subscribe failed");
            }
        }
    }

    /// Subscribes the group's channel while the group has a member on this server.
    async fn sync_group(&self, group: &str) {
        let want = self.local.has_group(group);
        self.set_subscribed(self.channels.group(group), want).await;
    }

    async fn sync_user(&self, user: &str) {
        let want = self.local.has_user(user);
        self.set_subscribed(self.channels.user(user), want).await;
    }

    /// Waits (at most the command timeout) until the start channels were subscribed once.
    async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(self.options.command_timeout, ready.wait_for(|r| *r)).await;
    }

    /// `PUBLISH`es `payload`; returns how many subscribers got it. While the connection is
    /// broken or refused, tries again every 100 ms (the connection manager reconnects meanwhile),
    /// up to the command timeout in all: a short Redis restart costs a delay, not the message
    /// (as StackExchange.Redis's backlog does for ASP.NET).
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<i64, String> {
        let timeout = self.options.command_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let attempt = async {
            loop {
                let mut connection = self.publisher.clone();
                match redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut connection)
                    .await
                {
                    Ok(receivers) => return Ok(receivers),
                    Err(err)
                        if (err.is_io_error()
                            || err.is_connection_dropped()
                            || err.is_connection_refusal())
                            && tokio::time::Instant::now() + PUBLISH_RETRY < deadline =>
                    {
                        tokio::time::sleep(PUBLISH_RETRY).await;
                    }
                    Err(err) => return Err(format!("Redis PUBLISH failed: {err}")),
                }
            }
        };
        let result = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("Redis PUBLISH timed out after {timeout:?}")),
        };
        match &result {
            Ok(_) => {
                if self.publish_failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        hub = self.channels.hub_name(),
                        "Redis publishing works again"
                    );
                }
            }
            Err(err) => {
                if !self.publish_failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(hub = self.channels.hub_name(), error = %err, "Redis publishing fails; sends to other servers fail until it is back");
                }
            }
        }
        result
    }

    async fn publish_envelope(
        &self,
        channel: &str,
        envelope: &InvocationEnvelope,
    ) -> Result<i64, String> {
        let payload = envelope.encode().map_err(|e| e.to_string())?;
        self.publish(channel, &payload).await
    }

    async fn on_message(self: &Arc<Self>, message: &redis::Msg) {
        let channel: Vec<u8> = message.get_channel().unwrap_or_default();
        let payload = Bytes::copy_from_slice(message.get_payload_bytes());
        match self.channels.classify(&channel) {
            ChannelKind::All => {
                if let Some((envelope, message)) = decode_invocation(&payload) {
                    let recipients = Recipients::AllExcept(envelope.excluded);
                    self.local.send_local(&recipients, &message).await;
                }
            }
            ChannelKind::Group(group) => {
                if let Some((envelope, message)) = decode_invocation(&payload) {
                    let recipients = Recipients::GroupExcept(group.to_owned(), envelope.excluded);
                    self.local.send_local(&recipients, &message).await;
                }
            }
            ChannelKind::User(user) => {
                if let Some((_, message)) = decode_invocation(&payload) {
                    let recipients = Recipients::Users(vec![user.to_owned()]);
                    self.local.send_local(&recipients, &message).await;
                }
            }
            ChannelKind::Connection(id) => {
                let Some((envelope, message)) = decode_invocation(&payload) else {
                    return;
                };
                let Some(connection) = self.local.connection(id) else {
                    return;
                };
                match envelope.client_result {
                    Some(route) => {
                        tokio::spawn(self.clone().relay(connection, message, route));
                    }
                    None => connection.try_send(&message),
                }
            }
            ChannelKind::InternalGroups => match GroupCommand::decode(&payload) {
                Ok(command) => {
                    if self.local.connection(&command.connection_id).is_some() {
                        tokio::spawn(self.clone().apply_group_command(command));
                    }
                }
                Err(err) => tracing::warn!(error = %err, "a malformed group command on Redis"),
            },
            ChannelKind::Ack(_) => match Ack::decode(&payload) {
                Ok(ack) => {
                    let waiter = self
                        .pending_acks
                        .lock()
                        .ok()
                        .and_then(|mut pending| pending.remove(&ack.id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(());
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "a malformed group acknowledgement on Redis")
                }
            },
            ChannelKind::Return(_) => self.on_completion(&payload),
            ChannelKind::Unknown => {
                tracing::debug!(channel = %String::from_utf8_lossy(&channel), "a message on an unexpected Redis channel");
            }
        }
    }

    /// A client's answer to a client-result call of this server, relayed by the connection's
    /// server.
    fn on_completion(&self, payload: &Bytes) {
        let envelope = match CompletionEnvelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::warn!(error = %err, "a malformed client-result answer on Redis");
                return;
            }
        };
        let Some(protocol) = HubProtocol::from_name(&envelope.protocol) else {
            tracing::warn!(protocol = %envelope.protocol, "a client-result answer in an unknown protocol");
            return;
        };
        let mut buf = BytesMut::from(envelope.frame.as_ref());
        let completion = match protocol.parse_message(&mut buf, None) {
            Ok(Some(HubMessage::Completion(completion))) => completion,
            _ => {
                tracing::warn!("a client-result answer that is not a Completion");
                return;
            }
        };
        let waiter = self
            .pending_results
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(&completion.invocation_id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(completion.result);
        }
    }

    /// Runs a client-result call another server made on a connection of this one, and publishes
    /// the client's answer (or why there is none) to the caller's return channel.
    async fn relay(
        self: Arc<Self>,
        connection: HubConnectionContext,
        message: Arc<SerializedHubMessage>,
        route: ClientResultRoute,
    ) {
        let protocol = connection.protocol().unwrap_or(HubProtocol::Json);
        let result = if !connection.supports_client_results() {
            CompletionResult::Error(ClientResultError::Unsupported.to_string())
        } else {
            let answer = connection.expect_completion(route.invocation_id.clone());
            if connection.send(message).await {
                answer
                    .await
                    .unwrap_or_else(|_| CompletionResult::Error(DISCONNECTED.into()))
            } else {
                CompletionResult::Error(DISCONNECTED.into())
            }
        };
        let completion = HubMessage::Completion(Completion {
            invocation_id: route.invocation_id,
            result,
            headers: Default::default(),
        });
        let Some(frame) = encode_frame(protocol, &completion) else {
            return;
        };
        let envelope = CompletionEnvelope {
            protocol: protocol.name().to_owned(),
            frame,
        };
        match envelope.encode() {
            Ok(payload) => {
                let channel = self.channels.prefixed(&route.return_channel);
                if let Err(err) = self.publish(&channel, &payload).await {
                    tracing::warn!(error = %err, "could not return a client result to its server");
                }
            }
            Err(err) => tracing::warn!(error = %err, "a client result too large to return"),
        }
    }

    /// Applies a group change another server asked for a connection of this one, then
    /// acknowledges it (ASP.NET acknowledges even when nothing changed).
    async fn apply_group_command(self: Arc<Self>, command: GroupCommand) {
        self.apply_local(&command.connection_id, &command.group, command.action)
            .await;
        let ack = Ack { id: command.id }.encode();
        if let Err(err) = self
            .publish(&self.channels.ack(&command.server_name), &ack)
            .await
        {
            tracing::warn!(error = %err, "could not acknowledge a group change");
        }
    }

    /// Applies a group change to a connection of this server and (un)subscribes the group's
    /// channel to match; `false`, changing nothing, when the connection is not on this server.
    async fn apply_local(&self, connection_id: &str, group: &str, action: GroupAction) -> bool {
        let here = match action {
            GroupAction::Add => self.local.add_to_group(connection_id, group),
            GroupAction::Remove => self.local.remove_from_group(connection_id, group),
        };
        if here {
            self.sync_group(group).await;
        }
        here
    }

    fn next_command_id(&self) -> i32 {
        loop {
            let id = self.next_command_id.fetch_add(1, Ordering::Relaxed);
            if id > 0 {
                return id;
            }
            // Wrapped past i32::MAX: start again at 1 (ids only need to be unique among the
            // acknowledgements still awaited).
            let _ = self.next_command_id.compare_exchange(
                id.wrapping_add(1),
                1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    async fn change_group(
        &self,
        connection_id: &str,
        group: &str,
        action: GroupAction,
    ) -> Result<(), GroupError> {
        if self.apply_local(connection_id, group, action).await {
            return Ok(());
        }
        let id = self.next_command_id();
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut pending) = self.pending_acks.lock() {
            pending.insert(id, sender);
        }
        let forget = || {
            if let Ok(mut pending) = self.pending_acks.lock() {
                pending.remove(&id);
            }
        };
        let command = GroupCommand {
            id,
            server_name: self.server_name.clone(),
            action,
            group: group.to_owned(),
            connection_id: connection_id.to_owned(),
        };
        let payload = match command.encode() {
            Ok(payload) => payload,
            Err(err) => {
                forget();
                return Err(GroupError::Backplane(err.to_string()));
            }
        };
        if let Err(err) = self
            .publish(&self.channels.internal_groups(), &payload)
            .await
        {
            forget();
            return Err(GroupError::Backplane(err));
        }
        match tokio::time::timeout(self.options.ack_timeout, receiver).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                forget();
                Err(GroupError::AckTimeout {
                    connection_id: connection_id.to_owned(),
                    group: group.to_owned(),
                })
            }
        }
    }

    async fn send(
        &self,
        recipients: &Recipients,
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), SendError> {
        // The channels to publish on; one send has one exclusion list, so one payload serves
        // them all.
        let mut channels: Vec<String> = Vec::new();
        let mut excluded: &[String] = &[];
        match recipients {
            Recipients::All => channels.push(self.channels.all()),
            Recipients::AllExcept(except) => {
                channels.push(self.channels.all());
                excluded = except;
            }
            Recipients::Connections(ids) => {
                let mut seen = HashSet::new();
                let single = ids.len() == 1;
                for id in ids {
                    if !seen.insert(id.as_str()) {
                        continue;
                    }
                    match self.local.connection(id) {
                        Some(connection) if single => {
                            connection.send(message.clone()).await;
                        }
                        Some(connection) => connection.try_send(&message),
                        None => channels.push(self.channels.connection(id)),
                    }
                }
            }
            Recipients::Groups(groups) => {
                channels.extend(groups.iter().map(|group| self.channels.group(group)));
            }
            Recipients::GroupExcept(group, except) => {
                channels.push(self.channels.group(group));
                excluded = except;
            }
            Recipients::Users(users) => {
                channels.extend(users.iter().map(|user| self.channels.user(user)));
            }
            other => {
                tracing::warn!(recipients = ?other, "recipients the Redis backplane does not know");
            }
        }
        if channels.is_empty() {
            return Ok(());
        }
        let messages = frames(&message);
        if messages.is_empty() {
            // Every serialization failed (logged); nothing to send.
            return Ok(());
        }
        let payload = InvocationEnvelope {
            excluded: excluded.to_vec(),
            messages,
            client_result: None,
        }
        .encode()
        .map_err(|e| SendError::Backplane(e.to_string()))?;
        let mut failure = None;
        for channel in channels {
            if let Err(err) = self.publish(&channel, &payload).await {
                failure.get_or_insert(err);
            }
        }
        failure.map_or(Ok(()), |err| Err(SendError::Backplane(err)))
    }

    async fn invoke(
        &self,
        connection_id: &str,
        target: String,
        arguments: Vec<Payload>,
        timeout: Duration,
    ) -> Result<CompletionResult, ClientResultError> {
        if self.local.connection(connection_id).is_some() {
            return self
                .local
                .invoke_local(connection_id, target, arguments, timeout)
                .await;
        }
        let invocation_id = new_invocation_id();
        let message = SerializedHubMessage::new(HubMessage::Invocation(Invocation {
            invocation_id: Some(invocation_id.clone()),
            target,
            arguments,
            ..Default::default()
        }));
        let envelope = InvocationEnvelope {
            excluded: Vec::new(),
            messages: frames(&message),
            client_result: Some(ClientResultRoute {
                invocation_id: invocation_id.clone(),
                return_channel: self.channels.return_channel_in_payload(&self.server_name),
            }),
        };
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut pending) = self.pending_results.lock() {
            pending.insert(invocation_id.clone(), sender);
        }
        let forget = || {
            if let Ok(mut pending) = self.pending_results.lock() {
                pending.remove(&invocation_id);
            }
        };
        let receivers = match self
            .publish_envelope(&self.channels.connection(connection_id), &envelope)
            .await
        {
            Ok(receivers) => receivers,
            Err(err) => {
                forget();
                return Err(ClientResultError::Backplane(err));
            }
        };
        if receivers == 0 {
            forget();
            return Err(ClientResultError::UnknownConnection(
                connection_id.to_owned(),
            ));
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(CompletionResult::Error(error))) if error == DISCONNECTED => {
                Err(ClientResultError::Disconnected(connection_id.to_owned()))
            }
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(ClientResultError::Disconnected(connection_id.to_owned())),
            Err(_) => {
                forget();
                Err(ClientResultError::Timeout)
            }
        }
    }
}

fn decode_invocation(payload: &Bytes) -> Option<(InvocationEnvelope, Arc<SerializedHubMessage>)> {
    match InvocationEnvelope::decode(payload) {
        Ok(mut envelope) => {
            let frames = std::mem::take(&mut envelope.messages);
            Some((envelope, SerializedHubMessage::from_serialized(frames)))
        }
        Err(err) => {
            tracing::warn!(error = %err, "a malformed hub message on Redis");
            None
        }
    }
}

impl HubLifetimeManager for RedisHubLifetimeManager {
    fn on_connected<'a>(
        &'a self,
        connection: &'a HubConnectionContext,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.wait_ready().await;
            inner.local.add(connection);
            inner
                .set_subscribed(inner.channels.connection(connection.connection_id()), true)
                .await;
            if let Some(user) = connection.user_id() {
                inner.sync_user(user).await;
            }
            Ok(())
        })
    }

    fn on_disconnected<'a>(&'a self, connection: &'a HubConnectionContext) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let groups = inner.local.remove(connection.connection_id());
            inner
                .set_subscribed(inner.channels.connection(connection.connection_id()), false)
                .await;
            for group in groups {
                inner.sync_group(&group).await;
            }
            if let Some(user) = connection.user_id() {
                inner.sync_user(user).await;
            }
        })
    }

    fn send<'a>(
        &'a self,
        recipients: &'a Recipients,
        message: Arc<SerializedHubMessage>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(self.inner.send(recipients, message))
    }

    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        Box::pin(
            self.inner
                .change_group(connection_id, group, GroupAction::Add),
        )
    }

    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        Box::pin(
            self.inner
                .change_group(connection_id, group, GroupAction::Remove),
        )
    }

    fn invoke_connection<'a>(
        &'a self,
        connection_id: &'a str,
        target: String,
        arguments: Vec<Payload>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CompletionResult, ClientResultError>> {
        Box::pin(self.inner.invoke(connection_id, target, arguments, timeout))
    }
}
