//! The hub protocol on one connection: handshake (docs/protocol.md, "Handshake"), message dispatch (docs/protocol.md, "Hub messages"),
//! keep-alive and client timeout (docs/protocol.md, "Keep-alive and timeouts"), and the Close message (docs/protocol.md, "Close message").

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use signalr_protocol::{
    Close, Completion, CompletionResult, HandshakeRequest, HandshakeResponse, HubMessage,
    HubProtocol, Invocation, Payload, ProtocolError, StreamInvocation, StreamItem, TransferFormat,
    TransportType,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, Heartbeat, Inbound, Outgoing, QueueError, Received};
use crate::context::{ClientSink, ConnectionContext, ConnectionInfo, Gone, HubCallerContext};
use crate::engine::{self, InvocationError};
use crate::filter::{NextConnected, NextDisconnected};
use crate::handler::MethodOutput;
use crate::hub::{HubInner, MethodEntry};
use crate::message::SerializedHubMessage;
use crate::websocket::{self, WebSocket};

/// Invocations parsed but waiting for a free slot (parallel limit); above this the connection
/// stops reading.
const MAX_QUEUED_INVOCATIONS: usize = 32;

/// What dispatching a message left to do.
enum Dispatched {
    /// Nothing (`Some`: the loop ends).
    Done(Option<Outcome>),
    /// This has to be awaited before the next message.
    Wait(BoxFuture<'static, ()>),
}

/// How the message loop ended.
enum Outcome {
    /// The transport went away or the connection was disposed: nothing more can be sent.
    TransportClosed,
    /// The client sent Close: end without sending one back.
    ClientClosed(Option<String>),
    /// The server closes: send this Close message, then close the transport.
    Close(Close),
}

/// A connection that speaks the ASP.NET Core hub protocol: messages are encoded with the
/// protocol chosen in the handshake and queued on the connection.
pub(crate) struct CoreClient {
    connection: Arc<Connection>,
    protocol: HubProtocol,
}

impl CoreClient {
    /// Encodes a message meant for this connection alone.
    fn encode(&self, message: &HubMessage) -> Option<bytes::Bytes> {
        let mut out = BytesMut::with_capacity(HubProtocol::ENCODE_CAPACITY);
        match self.protocol.write_message(message, &mut out) {
            Ok(()) => Some(out.freeze()),
            Err(err) => {
                tracing::error!(protocol = self.protocol.name(), %err, "dropping a message that failed to serialize");
                None
            }
        }
    }

    /// Queues a message for this connection, waiting for room.
    async fn send_message(&self, message: &HubMessage) -> Result<(), QueueError> {
        match self.encode(message) {
            Some(bytes) if message.is_ackable() => {
                self.connection.send(Outgoing::Ackable(bytes)).await
            }
            Some(bytes) => self.connection.send(Outgoing::Data(bytes)).await,
            None => Ok(()),
        }
    }
}

/// A message fanned out or sent to one connection from hub code (an Invocation, as a rule).
fn fanned_out(message: &SerializedHubMessage, bytes: &bytes::Bytes) -> Outgoing {
    if message.message().is_none_or(HubMessage::is_ackable) {
        Outgoing::Ackable(bytes.clone())
    } else {
        Outgoing::Data(bytes.clone())
    }
}

impl ClientSink for CoreClient {
    fn close(&self, _close: &Close) {
        // The message loop checks for the request when woken.
        self.connection.wake.notify_one();
    }

    fn try_send(&self, message: &Arc<SerializedHubMessage>) {
        if let Some(bytes) = message.serialized(self.protocol) {
            let _ = self.connection.try_send(fanned_out(message, bytes));
        }
    }

    fn send(&self, message: Arc<SerializedHubMessage>) -> BoxFuture<'_, Result<(), Gone>> {
        Box::pin(async move {
            match message.serialized(self.protocol) {
                Some(bytes) => self
                    .connection
                    .send(fanned_out(&message, bytes))
                    .await
                    .map_err(|_| Gone),
                None => Ok(()),
            }
        })
    }
}

/// Where the hub reads the client's bytes from.
pub(crate) enum HubInput {
    /// The connection's incoming queue, filled by another task (the POSTs of SSE and long
    /// polling); the transport writes from the outgoing queue on its own.
    Queue(Inbound),
    /// A WebSocket, read and written by the hub's own task.
    WebSocket(Box<WebSocket>),
}

/// What [`HubInput::next`] found.
enum Input {
    /// Bytes were appended to the buffer.
    Data,
    /// The client sent a message over the transport's limit; nothing more will be read.
    TooLarge,
    /// Nothing more will be read.
    Closed,
}

impl HubInput {
    /// Appends the client's next bytes to `buf`. With `read` false it only writes what is
    /// queued (for a WebSocket) and returns when the transport is gone. Cancel-safe.
    async fn next(&mut self, buf: &mut BytesMut, read: bool) -> Input {
        match self {
            HubInput::Queue(inbound) => {
                if !read {
                    return std::future::pending().await;
                }
                match inbound.recv().await {
                    Some(Received::Data(bytes)) => {
                        buf.extend_from_slice(&bytes);
                        Input::Data
                    }
                    Some(Received::MessageTooLarge) => Input::TooLarge,
                    None => Input::Closed,
                }
            }
            HubInput::WebSocket(socket) => match socket.next(buf, read).await {
                websocket::Input::Data { .. } => Input::Data,
                websocket::Input::TooLarge => Input::TooLarge,
                websocket::Input::Closed => Input::Closed,
            },
        }
    }

    /// Runs `work` while the WebSocket keeps writing (a send into the outgoing queue waits for
    /// room that only this task's writes make); `None` when the transport went away first.
    async fn while_writing<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut scratch = BytesMut::new();
        tokio::select! {
            biased;
            output = work => Some(output),
            _ = self.next(&mut scratch, false), if matches!(self, HubInput::WebSocket(_)) => None,
        }
    }

    /// Lets a WebSocket lost without a Close frame wait for the client to resume (stateful
    /// reconnect), or not.
    fn set_resumable(&mut self, resumable: bool) {
        if let HubInput::WebSocket(socket) = self {
            socket.set_resumable(resumable);
        }
    }

    /// Whether a resumed socket took over since the last call.
    fn take_resumed(&mut self) -> bool {
        match self {
            HubInput::WebSocket(socket) => socket.take_resumed(),
            HubInput::Queue(_) => false,
        }
    }

    /// Bytes the transport already delivered, without waiting (after the connection closed).
    fn try_next(&mut self, buf: &mut BytesMut) -> bool {
        match self {
            HubInput::Queue(inbound) => match inbound.recv().now_or_never() {
                Some(Some(Received::Data(bytes))) => {
                    buf.extend_from_slice(&bytes);
                    true
                }
                _ => false,
            },
            HubInput::WebSocket(_) => false,
        }
    }

    /// After the application ended: a WebSocket writes what is left, closes, and its
    /// connection is disposed.
    async fn finish(self, connection: &Connection) {
        if let HubInput::WebSocket(socket) = self {
            socket.finish().await;
            connection.dispose();
        }
    }
}

/// The Ping message in `protocol`, encoded once for all connections (static bytes: a clone
/// is a copy of a pointer, with no reference count).
fn ping(protocol: HubProtocol) -> bytes::Bytes {
    static PINGS: [std::sync::OnceLock<&'static [u8]>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let slot = match protocol {
        HubProtocol::Json => &PINGS[0],
        HubProtocol::MessagePack => &PINGS[1],
    };
    let bytes = slot.get_or_init(|| {
        let mut out = BytesMut::new();
        // A Ping has no payload: writing it cannot fail.
        let _ = protocol.write_message(&HubMessage::Ping, &mut out);
        Box::leak(out.to_vec().into_boxed_slice())
    });
    bytes::Bytes::from_static(bytes)
}

/// Runs the hub protocol on `connection` until it ends.
pub(crate) async fn run(hub: Arc<HubInner>, connection: Arc<Connection>, input: HubInput) {
    // The phases before and after the message loop are boxed: only the loop's state stays
    // with the connection while it lives.
    let Some((mut state, mut input, mut buf)) = Box::pin(start(hub, connection, input)).await
    else {
        return;
    };
    let outcome = state.run(&mut input, &mut buf).await;
    drop(buf);
    // Invocations still running go on as tasks (their cancellation fires in `end`), as hub
    // methods do in ASP.NET when the connection closes.
    state.running.spawn_all();
    Box::pin(end(state, input, outcome)).await;
}

/// Before the message loop: the handshake, the connection joins the hub and the connected
/// hook runs. `None` when the connection already ended (handshake failed, or the hook failed
/// and the connection was closed).
async fn start(
    hub: Arc<HubInner>,
    connection: Arc<Connection>,
    mut input: HubInput,
) -> Option<(LoopState, HubInput, BytesMut)> {
    let mut buf = BytesMut::new();
    let Some(protocol) = handshake(&hub, &connection, &mut input, &mut buf).await else {
        connection.writer_gate.open();
        let _ = input.while_writing(connection.send(Outgoing::End)).await;
        input.finish(&connection).await;
        return None;
    };
    let stateful = connection.is_stateful();
    tracing::debug!(connection_id = %connection.id, protocol = protocol.name(), stateful, "handshake complete");
    input.set_resumable(stateful);

    let core = Arc::new(CoreClient {
        connection: connection.clone(),
        protocol,
    });
    let info = ConnectionInfo {
        id: connection.id.clone(),
        sink: core.clone(),
        closed: connection.closed.clone(),
        transport: connection.transport(),
        protocol: Some(protocol),
        request: connection.request.get().cloned(),
        user: connection.user.get().cloned().unwrap_or_default(),
    };
    let context = ConnectionContext::new(info, hub.clone());
    let registered = hub.lifetime.add(context.clone()).await;
    // The handshake response is queued: let it out now that the connection is reachable.
    connection.writer_gate.open();
    let lifetime_token = connection.closed.child_token();
    let connected = match registered {
        Ok(()) => {
            let connecting = HubCallerContext::new(context.clone(), lifetime_token.clone(), true);
            let connected =
                NextConnected::new(hub.filters.clone(), hub.on_connected.clone()).run(connecting);
            input
                .while_writing(Box::pin(connected))
                .await
                .unwrap_or(Ok(()))
        }
        Err(err) => Err(crate::HubError::from(err)),
    };
    let failed = connected.err().map(|err| {
        tracing::warn!(connection_id = %connection.id, error = %err, "on_connected failed");
        Outcome::Close(Close {
            error: Some(err.build_message(
                "Connection closed with an error.".into(),
                hub.options.enable_detailed_errors,
            )),
            allow_reconnect: false,
        })
    });
    let state = LoopState {
        hub,
        context,
        core,
        protocol,
        lifetime_token,
        queued: VecDeque::new(),
        queued_bytes: 0,
        open_streams: Arc::default(),
        running: Running::default(),
        receiving: stateful.then(Box::default),
    };
    match failed {
        Some(outcome) => {
            end(state, input, outcome).await;
            None
        }
        None => Some((state, input, buf)),
    }
}

/// After the message loop: the connection leaves the hub, its transport closes (after the
/// Close message, unless the client closed or the transport is gone) and the disconnected hook
/// runs.
async fn end(state: LoopState, mut input: HubInput, outcome: Outcome) {
    let LoopState {
        hub,
        context,
        core,
        lifetime_token,
        ..
    } = state;
    let connection = core.connection.clone();
    // A socket lost from now on ends the connection: it is closing.
    input.set_resumable(false);
    context.shut_down();
    hub.lifetime.remove(&context).await;
    let disconnect_error = match outcome {
        Outcome::TransportClosed => None,
        Outcome::ClientClosed(error) => {
            context.set_stop_called();
            let _ = input.while_writing(connection.send(Outgoing::End)).await;
            error
        }
        Outcome::Close(close) => {
            let error = close.error.clone();
            let _ = input
                .while_writing(async {
                    let _ = core.send_message(&HubMessage::Close(close)).await;
                    connection.send(Outgoing::End).await
                })
                .await;
            error
        }
    };
    lifetime_token.cancel();
    let caller = HubCallerContext::new(context, lifetime_token, false);
    let disconnected = async {
        if let Err(err) = NextDisconnected::new(hub.filters.clone(), hub.on_disconnected.clone())
            .run(caller, disconnect_error)
            .await
        {
            tracing::warn!(connection_id = %connection.id, error = %err, "on_disconnected failed");
        }
    };
    // The socket closes while the disconnected hook runs.
    tokio::join!(input.finish(&connection), Box::pin(disconnected));
    tracing::debug!(connection_id = %connection.id, "hub connection ended");
}

async fn fail_handshake(connection: &Connection, error: String) -> Option<HubProtocol> {
    tracing::debug!(connection_id = %connection.id, %error, "handshake failed");
    let mut out = BytesMut::new();
    HandshakeResponse { error: Some(error) }.write(&mut out);
    let _ = connection.send(Outgoing::Data(out.freeze())).await;
    None
}

async fn handshake(
    hub: &HubInner,
    connection: &Connection,
    input: &mut HubInput,
    buf: &mut BytesMut,
) -> Option<HubProtocol> {
    let options = &hub.options;
    let deadline = tokio::time::sleep(options.handshake_timeout);
    tokio::pin!(deadline);
    let request = loop {
        match HandshakeRequest::parse(buf, options.maximum_receive_message_size) {
            Ok(Some(request)) => break request,
            Ok(None) => {}
            Err(ProtocolError::MessageTooLarge { .. }) => {
                return fail_handshake(connection, "Handshake was canceled.".into()).await;
            }
            Err(err) => {
                let mut error =
                    "An unexpected error occurred during connection handshake.".to_owned();
                if options.enable_detailed_errors {
                    error.push_str(&format!(" InvalidDataException: {err}"));
                }
                return fail_handshake(connection, error).await;
            }
        }
        tokio::select! {
            received = input.next(buf, true) => match received {
                Input::Data => {}
                Input::TooLarge => {
                    return fail_handshake(connection, "Handshake was canceled.".into()).await;
                }
                Input::Closed => return None,
            },
            () = connection.closed.cancelled() => return None,
            () = &mut deadline => {
                return fail_handshake(connection, "Handshake was canceled.".into()).await;
            }
        }
    };

    let protocol = HubProtocol::from_name(&request.protocol)
        .filter(|p| options.supported_protocols.contains(p));
    let Some(protocol) = protocol else {
        return fail_handshake(
            connection,
            format!("The protocol '{}' is not supported.", request.protocol),
        )
        .await;
    };
    if request.version > HubProtocol::VERSION {
        return fail_handshake(
            connection,
            format!(
                "The server does not support version {} of the '{}' protocol.",
                request.version,
                protocol.name()
            ),
        )
        .await;
    }
    if protocol.transfer_format() == TransferFormat::Binary
        && connection.transport() == Some(TransportType::ServerSentEvents)
    {
        return fail_handshake(
            connection,
            format!(
                "Cannot use the '{}' protocol on the current transport. The transport does not support 'Binary' transfer format.",
                protocol.name()
            ),
        )
        .await;
    }
    if protocol.transfer_format() == TransferFormat::Binary {
        connection.set_binary_frames();
    }
    // Stateful reconnect needs what negotiate granted, a WebSocket and a client that speaks
    // version 2 of the hub protocol (Ack and Sequence); otherwise it is off, as in ASP.NET.
    let stateful = connection.stateful_negotiated()
        && connection.transport() == Some(TransportType::WebSockets);
    let stateful = if stateful && request.version < 2 {
        tracing::debug!(connection_id = %connection.id, version = request.version, "the client does not support stateful reconnect (handshake version below 2): it is off");
        false
    } else {
        stateful
    };
    if stateful {
        connection.enable_stateful(protocol, options.stateful_reconnect_buffer_size);
    }
    connection
        .send(Outgoing::Data(HandshakeResponse::success_bytes()))
        .await
        .ok()?;
    Some(protocol)
}

/// The Close message for a WebSocket message over the transport's limit: the same as for a hub
/// message over the limit.
fn too_large_close(hub: &HubInner) -> Close {
    let limit = hub
        .options
        .maximum_receive_message_size
        .unwrap_or(usize::MAX);
    error_close(hub, &ProtocolError::MessageTooLarge { limit })
}

fn error_close(hub: &HubInner, err: &ProtocolError) -> Close {
    closed_with_error(hub, &format!("InvalidDataException: {err}"))
}

/// The Close message ASP.NET sends when the connection ends with an exception:
/// `Connection closed with an error.`, followed by `detail` with detailed errors, and
/// `allowReconnect` true.
fn closed_with_error(hub: &HubInner, detail: &str) -> Close {
    Close {
        error: Some(detailed(
            hub,
            "Connection closed with an error.".into(),
            detail,
        )),
        allow_reconnect: true,
    }
}

fn detailed(hub: &HubInner, generic: String, detail: &str) -> String {
    if hub.options.enable_detailed_errors {
        format!("{generic} {detail}")
    } else {
        generic
    }
}

fn failed_to_invoke(target: &str) -> String {
    format!("Failed to invoke '{target}' due to an error on the server.")
}

/// The argument counts a method takes, for the argument-count error: `2` as in ASP.NET Core, or
/// for an overloaded name (which ASP.NET Core does not have) `one of 0, 1, 2`.
fn expected_counts(expected: &[usize]) -> String {
    let counts: Vec<String> = expected.iter().map(ToString::to_string).collect();
    match counts.as_slice() {
        [one] => one.clone(),
        several => format!("one of {}", several.join(", ")),
    }
}

/// The Completion error text of an outcome, in ASP.NET Core's words (docs/protocol.md, "Completions").
fn error_text(hub: &HubInner, target: &str, err: &InvocationError) -> String {
    match err {
        InvocationError::UnknownMethod => detailed(
            hub,
            failed_to_invoke(target),
            "HubException: Method does not exist.",
        ),
        InvocationError::ArgumentCount { provided, expected } => detailed(
            hub,
            failed_to_invoke(target),
            &format!(
                "InvalidDataException: Invocation provides {provided} argument(s) but target expects {}.",
                expected_counts(expected)
            ),
        ),
        InvocationError::Unauthorized => {
            format!("Failed to invoke '{target}' because user is unauthorized")
        }
        InvocationError::StreamingMismatch {
            method_streams: true,
        } => format!(
            "The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
        ),
        InvocationError::StreamingMismatch {
            method_streams: false,
        } => format!(
            "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
        ),
        // ASP.NET throws this as a HubException inside the invocation, so the client always gets
        // it in the unexpected-error form, detailed errors or not.
        InvocationError::StreamCount { provided, expected } => format!(
            "An unexpected error occurred invoking '{target}' on the server. HubException: Client sent {provided} stream(s), Hub method expects {expected}."
        ),
        InvocationError::TooManyStreams { maximum } => format!(
            "Failed to invoke '{target}' because the connection already has the maximum number of open streams ({maximum})."
        ),
        InvocationError::DuplicateInvocationId(id) => {
            format!("Invocation ID '{id}' is already in use.")
        }
        InvocationError::Binding(detail) => detailed(hub, failed_to_invoke(target), detail),
        InvocationError::Method(err) => {
            err.invocation_message(target, hub.options.enable_detailed_errors)
        }
    }
}

/// A running invocation, as the engine reports it.
type InvocationFuture = BoxFuture<'static, Result<MethodOutput, InvocationError>>;

/// A non-streaming invocation waiting for a free slot.
struct QueuedInvocation {
    invocation_id: Option<String>,
    target: String,
    method: Arc<MethodEntry>,
    arguments: Vec<Payload>,
    streams: Vec<mpsc::Receiver<Result<Payload, String>>>,
    stream_ids: Vec<String>,
    cancellation: CancellationToken,
    /// Encoded size of the arguments.
    bytes: usize,
}

/// Bytes of an argument as received (0 for values built by the server).
fn payload_len(payload: &Payload) -> usize {
    match payload {
        Payload::Json(bytes) | Payload::MessagePack(bytes) => bytes.len(),
        Payload::Value(_) => 0,
    }
}

struct LoopState {
    hub: Arc<HubInner>,
    context: Arc<ConnectionContext>,
    core: Arc<CoreClient>,
    protocol: HubProtocol,
    /// The cancellation the connected and disconnected hooks see (`HubCallerContext::cancellation`):
    /// cancelled when the connection leaves the hub.
    lifetime_token: CancellationToken,
    queued: VecDeque<QueuedInvocation>,
    /// Argument bytes held by `queued`: reading stops at the incoming buffer size, so parsed
    /// invocations waiting for a slot hold no more than the transport's queue would.
    queued_bytes: usize,
    /// Server-to-client streams running (upload streams are counted by `context.uploads`).
    open_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Counted invocations in progress, polled by the loop itself (no task per invocation:
    /// one hand-off less on the hot path, and the loop keeps reading while they run).
    running: Running,
    /// Stateful reconnect's count of the client's messages, on connections that use it.
    receiving: Option<Box<Receiving>>,
}

/// The receiving side of stateful reconnect (docs/protocol.md, "Stateful reconnect"): the
/// client's ackable messages are counted from 1; one whose number the hub already processed is
/// a resent duplicate and is dropped; after a resume everything is ignored until the client's
/// Sequence message says where its resending starts.
struct Receiving {
    /// The number the client's next ackable message has.
    next_id: u64,
    /// The highest number processed.
    latest: u64,
    /// A socket was resumed and the client's Sequence message has not come yet.
    waiting_for_sequence: bool,
}

impl Default for Receiving {
    fn default() -> Self {
        Receiving {
            next_id: 1,
            latest: 0,
            waiting_for_sequence: false,
        }
    }
}

/// What stateful reconnect makes of a received message.
enum Admitted {
    /// Dispatch it.
    Dispatch(HubMessage),
    /// Nothing more to do (a duplicate, an Ack or Sequence, or ignored until the Sequence).
    Done,
    /// The client's Sequence message names a number past what it sent: the connection closes
    /// with this error.
    Fatal(&'static str),
}

impl Receiving {
    fn admit(&mut self, connection: &Connection, message: HubMessage) -> Admitted {
        if self.waiting_for_sequence && !matches!(message, HubMessage::Sequence { .. }) {
            return Admitted::Done;
        }
        match message {
            HubMessage::Sequence { sequence_id } => {
                self.waiting_for_sequence = false;
                if sequence_id > self.next_id {
                    return Admitted::Fatal(
                        "InvalidOperationException: Sequence ID greater than amount of messages we've received.",
                    );
                }
                self.next_id = sequence_id;
                Admitted::Done
            }
            HubMessage::Ack { sequence_id } => {
                connection.acknowledge(sequence_id);
                Admitted::Done
            }
            message if message.is_ackable() => {
                let id = self.next_id;
                self.next_id += 1;
                if id <= self.latest {
                    return Admitted::Done;
                }
                self.latest = id;
                connection.received_ackable(id);
                Admitted::Dispatch(message)
            }
            message => Admitted::Dispatch(message),
        }
    }
}

impl LoopState {
    fn connection(&self) -> &Arc<Connection> {
        &self.core.connection
    }

    /// Whether more messages may be read and parsed.
    fn can_queue(&self) -> bool {
        self.queued.len() < MAX_QUEUED_INVOCATIONS
            && self.queued_bytes < self.hub.connection_options.incoming_buffer_size
    }

    fn enqueue(&mut self, queued: QueuedInvocation) {
        self.queued_bytes += queued.bytes;
        self.queued.push_back(queued);
    }

    fn dequeue(&mut self) -> Option<QueuedInvocation> {
        let queued = self.queued.pop_front()?;
        self.queued_bytes -= queued.bytes;
        Some(queued)
    }

    /// Answers an invocation that could not run with a Completion error. The future owns what it
    /// needs (no borrow of the loop state across the await).
    fn reply_error(
        &self,
        invocation_id: Option<&str>,
        error: String,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let core = self.core.clone();
        let completion =
            invocation_id.map(|id| HubMessage::Completion(Completion::with_error(id, error)));
        async move {
            if let Some(message) = completion {
                let _ = core.send_message(&message).await;
            }
        }
    }

    async fn run(&mut self, input: &mut HubInput, buf: &mut BytesMut) -> Outcome {
        let hub = self.hub.clone();
        let options = &hub.options;
        let max_parallel = options.maximum_parallel_invocations_per_client.max(1);
        // Keep-alive pings and the client timeout run on the connection manager's 1 s sweep.
        let connection = self.connection().clone();
        connection.touch_read();
        let inherent_keep_alive = connection.transport() == Some(TransportType::LongPolling);
        let _ = connection.heartbeat.set(Heartbeat {
            ping: (!inherent_keep_alive).then(|| ping(self.protocol)),
            keep_alive_interval: options.keep_alive_interval,
            client_timeout: options.client_timeout_interval,
        });
        let mut wake = std::pin::pin!(connection.wake.notified());

        loop {
            while self.running.len() < max_parallel {
                let Some(queued) = self.dequeue() else {
                    break;
                };
                self.start_invocation(queued, true);
            }
            while self.can_queue() {
                if input.take_resumed()
                    && let Some(receiving) = &mut self.receiving
                {
                    receiving.waiting_for_sequence = true;
                }
                let message = match self
                    .protocol
                    .parse_message(buf, options.maximum_receive_message_size)
                {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(err) => {
                        tracing::debug!(connection_id = %self.connection().id, %err, "closing connection after a protocol error");
                        return Outcome::Close(error_close(&self.hub, &err));
                    }
                };
                let message = match &mut self.receiving {
                    None => message,
                    Some(receiving) => match receiving.admit(&connection, message) {
                        Admitted::Dispatch(message) => message,
                        Admitted::Done => continue,
                        Admitted::Fatal(detail) => {
                            return Outcome::Close(closed_with_error(&self.hub, detail));
                        }
                    },
                };
                if matches!(message, HubMessage::Ping) {
                    connection.arm_client_timeout();
                }
                match self.dispatch(message) {
                    Dispatched::Done(None) => {}
                    Dispatched::Done(Some(outcome)) => return outcome,
                    // It may wait for room in the outgoing queue, which a WebSocket makes on
                    // this task.
                    Dispatched::Wait(work) => {
                        if input.while_writing(work).await.is_none() {
                            return self.closed_outcome(input, buf);
                        }
                    }
                }
                if self.running.len() < max_parallel && !self.queued.is_empty() {
                    break;
                }
            }
            if self.running.len() < max_parallel && !self.queued.is_empty() {
                continue;
            }

            let read = self.can_queue();
            let drives_writes = matches!(input, HubInput::WebSocket(_));
            // One `Notify` wakes the loop for the connection's disposal, a close requested by
            // hub code and the client timeout: one waiter stays with the connection instead of
            // three, registered once and not per turn of the loop (the reasons are checked on
            // every wake-up, so none is lost).
            let mut woken = false;
            tokio::select! {
                () = self.running.next(), if !self.running.is_empty() => {}
                received = input.next(buf, read), if read || drives_writes => match received {
                    Input::Data => connection.touch_read(),
                    Input::TooLarge => return Outcome::Close(too_large_close(&self.hub)),
                    Input::Closed => return self.closed_outcome(input, buf),
                },
                () = wake.as_mut() => woken = true,
            }
            if !woken {
                continue;
            }
            wake.set(connection.wake.notified());
            if connection.is_closed() {
                return self.closed_outcome(input, buf);
            }
            if let Some(close) = self.context.take_close_request() {
                return Outcome::Close(close);
            }
            // The connection manager's heartbeat found the client silent for too long.
            if connection.timed_out() {
                tracing::debug!(connection_id = %connection.id, "client timeout elapsed");
                // As ASP.NET: the timeout is an error (an OperationCanceledException).
                return Outcome::Close(closed_with_error(
                    &self.hub,
                    "OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.",
                ));
            }
        }
    }

    /// How the loop ends when the transport has gone: a client that stops sends a Close message
    /// and closes the transport right away (`connection.stop()`), so the Close may still wait
    /// unread. What the transport delivered is scanned for it (nothing else is dispatched any
    /// more): found, it is a client close (`stop_called`); otherwise the transport was lost.
    fn closed_outcome(&self, input: &mut HubInput, buf: &mut BytesMut) -> Outcome {
        let limit = self.hub.options.maximum_receive_message_size;
        loop {
            loop {
                match self.protocol.parse_message(buf, limit) {
                    Ok(Some(HubMessage::Close(close))) => {
                        return Outcome::ClientClosed(close.error);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return Outcome::TransportClosed,
                }
            }
            if !input.try_next(buf) {
                return Outcome::TransportClosed;
            }
        }
    }

    /// Checks an invocation of `target` with `arguments` values and `streams` upload streams
    /// against the method. `Err` is the Completion error to answer with.
    fn check(
        &self,
        invocation_id: Option<&str>,
        target: &str,
        arguments: usize,
        streams: usize,
        streaming: bool,
    ) -> Result<Arc<MethodEntry>, String> {
        let uploads = self.context.uploads.lock().map_or(0, |u| u.len());
        let open_streams = self.open_streams.load(std::sync::atomic::Ordering::Acquire) + uploads;
        let call = engine::Call {
            target,
            arguments,
            streams,
            streaming,
            invocation_id,
            open_streams,
        };
        engine::check(&self.context, &call).map_err(|err| error_text(&self.hub, target, &err))
    }

    /// Registers a checked invocation's cancellation and upload streams.
    fn register(
        &self,
        method: Arc<MethodEntry>,
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Payload>,
        stream_ids: Vec<String>,
    ) -> QueuedInvocation {
        let cancellation = self.context.closed.child_token();
        if let Some(id) = &invocation_id
            && let Ok(mut invocations) = self.context.invocations.lock()
        {
            invocations.insert(id.clone(), cancellation.clone());
        }
        let mut streams = Vec::with_capacity(stream_ids.len());
        if let Ok(mut uploads) = self.context.uploads.lock() {
            for stream_id in &stream_ids {
                let (tx, rx) = mpsc::channel(self.hub.options.stream_buffer_capacity.max(1));
                uploads.insert(stream_id.clone(), tx);
                streams.push(rx);
            }
        }
        let bytes = arguments.iter().map(payload_len).sum();
        QueuedInvocation {
            invocation_id,
            target,
            method,
            arguments,
            streams,
            stream_ids,
            cancellation,
            bytes,
        }
    }

    /// Handles one message without waiting; what has to wait (a Completion error, an upload's
    /// item while its buffer is full) is handed back to be awaited.
    fn dispatch(&mut self, message: HubMessage) -> Dispatched {
        match message {
            HubMessage::Invocation(Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                ..
            }) => {
                let checked = self.check(
                    invocation_id.as_deref(),
                    &target,
                    arguments.len(),
                    stream_ids.len(),
                    false,
                );
                match checked {
                    Err(error) => {
                        return Dispatched::Wait(Box::pin(
                            self.reply_error(invocation_id.as_deref(), error),
                        ));
                    }
                    Ok(method) => {
                        let queued =
                            self.register(method, invocation_id, target, arguments, stream_ids);
                        // As in ASP.NET, methods with upload streams do not count against the
                        // parallel-invocation limit: they start at once, so their stream items
                        // can always be delivered.
                        if queued.streams.is_empty() {
                            self.enqueue(queued);
                        } else {
                            self.start_invocation(queued, false);
                        }
                    }
                }
            }
            HubMessage::StreamInvocation(StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                ..
            }) => {
                let checked = self.check(
                    Some(&invocation_id),
                    &target,
                    arguments.len(),
                    stream_ids.len(),
                    true,
                );
                match checked {
                    Err(error) => {
                        return Dispatched::Wait(Box::pin(
                            self.reply_error(Some(&invocation_id), error),
                        ));
                    }
                    Ok(method) => {
                        let queued = self.register(
                            method,
                            Some(invocation_id),
                            target,
                            arguments,
                            stream_ids,
                        );
                        self.start_stream(queued);
                    }
                }
            }
            HubMessage::CancelInvocation(cancel) => {
                let token = self
                    .context
                    .invocations
                    .lock()
                    .ok()
                    .and_then(|i| i.get(&cancel.invocation_id).cloned());
                if let Some(token) = token {
                    token.cancel();
                }
            }
            HubMessage::StreamItem(item) => {
                let sender = self
                    .context
                    .uploads
                    .lock()
                    .ok()
                    .and_then(|u| u.get(&item.invocation_id).cloned());
                if let Some(sender) = sender {
                    match sender.try_send(Ok(item.item)) {
                        // Wait while the stream's buffer is full (StreamBufferCapacity
                        // back-pressure).
                        Err(mpsc::error::TrySendError::Full(item)) => {
                            return Dispatched::Wait(Box::pin(async move {
                                let _ = sender.send(item).await;
                            }));
                        }
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
            HubMessage::Completion(completion) => {
                let upload = self
                    .context
                    .uploads
                    .lock()
                    .ok()
                    .and_then(|mut u| u.remove(&completion.invocation_id));
                if let Some(sender) = upload {
                    if let CompletionResult::Error(error) = completion.result {
                        return Dispatched::Wait(Box::pin(async move {
                            let _ = sender.send(Err(error)).await;
                        }));
                    }
                } else if !self
                    .context
                    .complete_result(&completion.invocation_id, completion.result)
                {
                    tracing::debug!(connection_id = %self.connection().id, invocation_id = %completion.invocation_id, "unexpected completion");
                }
            }
            HubMessage::Close(close) => {
                tracing::debug!(connection_id = %self.connection().id, error = ?close.error, "client sent Close");
                return Dispatched::Done(Some(Outcome::ClientClosed(close.error)));
            }
            HubMessage::Ping | HubMessage::Ack { .. } | HubMessage::Sequence { .. } => {}
        }
        Dispatched::Done(None)
    }

    fn invocation(&self, queued: QueuedInvocation) -> (InvocationFuture, QueuedParts) {
        let run = engine::invoke(
            &self.context,
            &queued.method,
            queued.arguments,
            queued.streams,
            queued.cancellation.clone(),
            engine::CallOptions::core(),
        );
        let parts = QueuedParts {
            context: self.context.clone(),
            core: self.core.clone(),
            hub: self.hub.clone(),
            invocation_id: queued.invocation_id,
            target: queued.target,
            stream_ids: queued.stream_ids,
            cancellation: queued.cancellation,
        };
        (run, parts)
    }

    /// Runs a non-streaming invocation; `counted` ones occupy a parallel-invocation slot until
    /// they finish.
    fn start_invocation(&mut self, queued: QueuedInvocation, counted: bool) {
        let (invocation, parts) = self.invocation(queued);
        let run = async move {
            let result = invocation.await;
            parts.finish();
            if let Some(id) = &parts.invocation_id {
                if !parts.context.close_requested() {
                    let completion = parts.completion(id, result);
                    let _ = parts
                        .core
                        .send_message(&HubMessage::Completion(completion))
                        .await;
                }
            } else if let Err(err) = result {
                tracing::debug!(target = %parts.target, error = ?err, "non-blocking hub method call failed");
            }
        };
        if counted {
            self.running.push(Box::pin(run));
        } else {
            tokio::spawn(run);
        }
    }

    fn start_stream(&mut self, queued: QueuedInvocation) {
        let (invocation, parts) = self.invocation(queued);
        let open_streams = OpenStream::new(&self.open_streams);
        tokio::spawn(async move {
            let _open = open_streams;
            let id = parts.invocation_id.clone().unwrap_or_default();
            let detailed_errors = parts.hub.options.enable_detailed_errors;
            let core = parts.core.clone();
            let cancellation = parts.cancellation.clone();
            // The method runs first even if a CancelInvocation is already queued (as in ASP.NET,
            // which calls the method before reading the next message).
            let result = tokio::select! {
                biased;
                result = invocation => Some(result),
                () = cancellation.cancelled() => None,
            };
            let error = match result {
                None => None,
                Some(Ok(MethodOutput::Stream(mut stream))) => loop {
                    let item = tokio::select! {
                        item = stream.next() => item,
                        () = cancellation.cancelled() => break None,
                    };
                    match item {
                        Some(Ok(item)) => {
                            let message = HubMessage::StreamItem(StreamItem {
                                headers: Default::default(),
                                invocation_id: id.clone(),
                                item,
                            });
                            tokio::select! {
                                sent = core.send_message(&message) => {
                                    if sent.is_err() { break None; }
                                }
                                () = cancellation.cancelled() => break None,
                            }
                        }
                        Some(Err(err)) => break Some(err.stream_message(detailed_errors)),
                        None => break None,
                    }
                },
                Some(Ok(_)) => None,
                Some(Err(err)) => Some(error_text(&parts.hub, &parts.target, &err)),
            };
            parts.finish();
            if !parts.context.close_requested() {
                let completion = match error {
                    Some(error) => Completion::with_error(id, error),
                    None => Completion::void(id),
                };
                let _ = core.send_message(&HubMessage::Completion(completion)).await;
            }
        });
    }
}

/// The counted invocations in progress on a connection, polled by its message loop. With the
/// default limit of one at a time there is one slot (no allocation of its own); more in parallel
/// go into a `FuturesUnordered`, made when first needed.
#[derive(Default)]
struct Running {
    one: Option<BoxFuture<'static, ()>>,
    more: Option<FuturesUnordered<BoxFuture<'static, ()>>>,
}

impl Running {
    fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, invocation: BoxFuture<'static, ()>) {
        if self.one.is_none() {
            self.one = Some(invocation);
        } else {
            self.more
                .get_or_insert_with(FuturesUnordered::new)
                .push(invocation);
        }
    }

    /// Waits until one of them finishes. Pending forever when there is none.
    async fn next(&mut self) {
        std::future::poll_fn(|cx| {
            if let Some(one) = self.one.as_mut()
                && one.as_mut().poll(cx).is_ready()
            {
                self.one = None;
                return std::task::Poll::Ready(());
            }
            if let Some(more) = self.more.as_mut()
                && let std::task::Poll::Ready(Some(())) = more.poll_next_unpin(cx)
            {
                return std::task::Poll::Ready(());
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Hands every one to a task of its own (the connection's loop has ended).
    fn spawn_all(&mut self) {
        if let Some(one) = self.one.take() {
            tokio::spawn(one);
        }
        for invocation in self.more.take().into_iter().flatten() {
            tokio::spawn(invocation);
        }
    }
}

/// Counts a running server-to-client stream until dropped.
struct OpenStream(Arc<std::sync::atomic::AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A null value, already encoded in `protocol` (no allocation).
fn null_payload(protocol: HubProtocol) -> Payload {
    match protocol {
        HubProtocol::Json => Payload::Json(bytes::Bytes::from_static(b"null")),
        HubProtocol::MessagePack => Payload::MessagePack(bytes::Bytes::from_static(&[0xc0])),
    }
}

/// What an invocation task needs after the method ran.
struct QueuedParts {
    context: Arc<ConnectionContext>,
    core: Arc<CoreClient>,
    hub: Arc<HubInner>,
    invocation_id: Option<String>,
    target: String,
    stream_ids: Vec<String>,
    cancellation: CancellationToken,
}

impl QueuedParts {
    /// Forgets the invocation's cancellation and upload streams.
    fn finish(&self) {
        if let Some(id) = &self.invocation_id
            && let Ok(mut invocations) = self.context.invocations.lock()
        {
            invocations.remove(id);
        }
        if let Ok(mut uploads) = self.context.uploads.lock() {
            for stream_id in &self.stream_ids {
                uploads.remove(stream_id);
            }
        }
        self.cancellation.cancel();
    }

    fn completion(&self, id: &str, result: Result<MethodOutput, InvocationError>) -> Completion {
        match result {
            Ok(MethodOutput::Value(value)) => Completion::with_result(id, value),
            // As ASP.NET, which completes every non-streaming invocation "with a result": a
            // method without one (void, `Task`) answers `"result":null` (MessagePack: result
            // kind 3 and nil), not a Completion without result.
            Ok(MethodOutput::Void) => Completion::with_result(id, null_payload(self.core.protocol)),
            Ok(MethodOutput::Stream(_)) => {
                Completion::with_error(id, failed_to_invoke(&self.target))
            }
            Err(err) => {
                tracing::debug!(target = %self.target, error = ?err, "hub method failed");
                Completion::with_error(id, error_text(&self.hub, &self.target, &err))
            }
        }
    }
}
