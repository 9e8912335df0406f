//! One established hub connection (transport up, handshake done) and its receive loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::Url;
use signalr_protocol::{
    CancelInvocation, Close, Completion, CompletionResult, HandshakeRequest, HandshakeResponse,
    Headers, HubMessage, HubProtocol, Invocation, Payload, StreamItem,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::ClientStream;
use crate::builder::AccessTokenProvider;
use crate::error::{Error, Kind, not_connected};
use crate::handlers::{HandlerRegistry, lock, run_handlers};
use crate::stateful::{Incoming, ReplayBuffer};
use crate::transport::{
    HttpContext, Outgoing, Stopper, TransportConnection, TransportEvent, websocket,
};

/// How long a graceful stop waits for the Close message to be written.
const CLOSE_MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often received messages are acknowledged with stateful reconnect (the .NET client's
/// timer: an Ack when something arrived since the last one).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Where a stateful-reconnect session reattaches after a loss: the WebSocket URL with the
/// connection token (`id=`), and what its request carries.
#[derive(Clone)]
pub(crate) struct ResumeTarget {
    /// The headers and token of the connect attempt that made the connection.
    pub http: HttpContext,
    /// `{hub}?id=<connectionToken>` (the final URL after negotiate redirects).
    pub url: Url,
    /// Asked again for a token before resuming; `None` keeps `http`'s token (no provider, or a
    /// token that came from a negotiate redirect).
    pub token_provider: Option<std::sync::Arc<dyn AccessTokenProvider>>,
}

/// Stateful reconnect as negotiated for one connection.
pub(crate) struct StatefulSetup {
    /// The replay buffer's bound, in bytes.
    pub buffer_size: usize,
    pub target: ResumeTarget,
}

/// The way out to the transport, and with stateful reconnect the replay buffer: one lock, so
/// that sequence ids follow the order of the wire.
struct Outbound {
    /// `None` while a stateful session is between two transports.
    sender: Option<mpsc::UnboundedSender<Outgoing>>,
    replay: Option<ReplayBuffer>,
}

/// A call waiting for the server.
pub(crate) enum Pending {
    /// `invoke`: the Completion.
    Invoke(oneshot::Sender<Result<CompletionResult, Error>>),
    /// `stream`: items, then the end (channel closed) or an error.
    Stream(mpsc::UnboundedSender<Result<Payload, Error>>),
}

/// The sending half of an established connection and its pending calls.
pub(crate) struct Session {
    pub protocol: HubProtocol,
    pub connection_id: Option<String>,
    outbound: Mutex<Outbound>,
    /// Woken when an Ack made room in the replay buffer.
    room: Notify,
    /// How long a send waits for room in the replay buffer.
    room_timeout: Duration,
    /// `Some` when stateful reconnect is on for this connection.
    resume: Option<ResumeTarget>,
    /// `None` once the session has ended: new calls fail at once.
    pending: Mutex<Option<HashMap<String, Pending>>>,
    last_send: Mutex<Instant>,
    /// Cancelled when the session ends (stops upload streams).
    pub closed: CancellationToken,
}

impl Session {
    fn new(
        protocol: HubProtocol,
        connection_id: Option<String>,
        sender: mpsc::UnboundedSender<Outgoing>,
        stateful: Option<StatefulSetup>,
        room_timeout: Duration,
    ) -> Self {
        let (replay, resume) = match stateful {
            Some(setup) => (
                Some(ReplayBuffer::new(setup.buffer_size)),
                Some(setup.target),
            ),
            None => (None, None),
        };
        Session {
            protocol,
            connection_id,
            outbound: Mutex::new(Outbound {
                sender: Some(sender),
                replay,
            }),
            room: Notify::new(),
            room_timeout,
            resume,
            pending: Mutex::new(Some(HashMap::new())),
            last_send: Mutex::new(Instant::now()),
            closed: CancellationToken::new(),
        }
    }

    /// Whether stateful reconnect is on for this connection.
    pub(crate) fn is_stateful(&self) -> bool {
        self.resume.is_some()
    }

    fn encode(&self, message: &HubMessage) -> Result<Bytes, Error> {
        let mut out = BytesMut::new();
        self.protocol
            .write_message(message, &mut out)
            .map_err(|err| Error::with_source(Kind::Encode, err.to_string(), err))?;
        Ok(out.freeze())
    }

    /// Queues a message that is not kept for replay (the handshake, Ping, Ack, Close, and every
    /// message without stateful reconnect).
    fn enqueue(
        &self,
        data: Bytes,
        ack: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Result<(), Error> {
        if self.closed.is_cancelled() {
            return Err(not_connected());
        }
        let outbound = lock(&self.outbound);
        let sender = outbound.sender.as_ref().ok_or_else(not_connected)?;
        *lock(&self.last_send) = Instant::now();
        sender
            .send(Outgoing { data, ack })
            .map_err(|_| not_connected())
    }

    /// Numbers a trackable message, keeps it for replay and writes it when a transport is
    /// attached; unless `force`, only when the replay buffer has room. Returns whether it was
    /// taken.
    fn push_tracked(&self, data: &Bytes, force: bool) -> Result<bool, Error> {
        if self.closed.is_cancelled() {
            return Err(not_connected());
        }
        let mut outbound = lock(&self.outbound);
        let Outbound { sender, replay } = &mut *outbound;
        let Some(replay) = replay.as_mut() else {
            return Err(not_connected());
        };
        if !force && !replay.has_room() {
            tracing::debug!(
                buffered = replay.buffered_bytes(),
                limit = replay.limit(),
                "stateful reconnect buffer full; waiting for an Ack"
            );
            return Ok(false);
        }
        replay.push(data.clone());
        if let Some(sender) = sender {
            // A failed write is no loss: the message is sent again after a resume.
            let _ = sender.send(Outgoing {
                data: data.clone(),
                ack: None,
            });
        }
        *lock(&self.last_send) = Instant::now();
        Ok(true)
    }

    /// [`Session::push_tracked`], waiting (at most `room_timeout`) for room in the replay
    /// buffer.
    async fn enqueue_tracked(&self, data: Bytes) -> Result<(), Error> {
        let deadline = Instant::now() + self.room_timeout;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so that an Ack in between is not missed.
            notified.as_mut().enable();
            if self.push_tracked(&data, false)? {
                return Ok(());
            }
            tokio::select! {
                () = &mut notified => {}
                () = self.closed.cancelled() => return Err(not_connected()),
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Error::new(
                        Kind::Timeout,
                        format!(
                            "The stateful reconnect buffer stayed full for {} s: the server acknowledged nothing meanwhile.",
                            self.room_timeout.as_secs_f64()
                        ),
                    ));
                }
            }
        }
    }

    /// Queues `message` without waiting for it to be written (nor, with stateful reconnect, for
    /// room in the replay buffer).
    pub(crate) fn send_nowait(&self, message: &HubMessage) -> Result<(), Error> {
        let data = self.encode(message)?;
        if self.is_stateful() && message.is_ackable() {
            return self.push_tracked(&data, true).map(|_| ());
        }
        self.enqueue(data, None)
    }

    /// Queues `message`; the returned receiver completes once it was written. With stateful
    /// reconnect a trackable message first waits for room in the replay buffer, and counts as
    /// written once it is in there (it is sent again after a loss until acknowledged).
    pub(crate) async fn send_acked(
        &self,
        message: &HubMessage,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let data = self.encode(message)?;
        let (ack, written) = oneshot::channel();
        if self.is_stateful() && message.is_ackable() {
            self.enqueue_tracked(data).await?;
            let _ = ack.send(Ok(()));
        } else {
            self.enqueue(data, Some(ack))?;
        }
        Ok(written)
    }

    /// Sends `message` and waits until it was written.
    pub(crate) async fn send(&self, message: &HubMessage) -> Result<(), Error> {
        let written = self.send_acked(message).await?;
        wait_written(written).await
    }

    /// Stateful reconnect: the transport is gone; trackable messages are only buffered until
    /// [`Session::attach`].
    fn detach(&self) {
        lock(&self.outbound).sender = None;
    }

    /// Stateful reconnect: writes Sequence and every unacknowledged message to the new
    /// transport, then sends through it.
    fn attach(&self, sender: mpsc::UnboundedSender<Outgoing>) -> Result<(), Error> {
        let mut outbound = lock(&self.outbound);
        let Some(replay) = outbound.replay.as_mut() else {
            return Err(not_connected());
        };
        let (sequence_id, messages) = replay.resend();
        tracing::debug!(
            sequence_id,
            replayed = messages.len(),
            "stateful reconnect: sending Sequence and the unacknowledged messages"
        );
        let sequence = self.encode(&HubMessage::Sequence { sequence_id })?;
        for data in std::iter::once(sequence).chain(messages) {
            sender
                .send(Outgoing { data, ack: None })
                .map_err(|_| not_connected())?;
        }
        outbound.sender = Some(sender);
        drop(outbound);
        *lock(&self.last_send) = Instant::now();
        Ok(())
    }

    /// Stateful reconnect: the replay buffer's verdict on a received message.
    fn receive(&self, message: &HubMessage) -> Result<Incoming, Error> {
        if let HubMessage::Sequence { sequence_id } = message {
            tracing::debug!(sequence_id, "stateful reconnect: Sequence from the server");
        }
        let incoming = match lock(&self.outbound).replay.as_mut() {
            Some(replay) => replay.receive(message)?,
            None => Incoming::Process,
        };
        if incoming == Incoming::Acked {
            self.room.notify_waiters();
        }
        Ok(incoming)
    }

    fn ack_due(&self) -> Option<u64> {
        lock(&self.outbound).replay.as_mut()?.ack_due()
    }

    fn awaiting_sequence(&self) -> bool {
        lock(&self.outbound)
            .replay
            .as_ref()
            .is_some_and(ReplayBuffer::awaiting_sequence)
    }

    fn last_send(&self) -> Instant {
        *lock(&self.last_send)
    }

    pub(crate) fn register(&self, id: String, pending: Pending) -> Result<(), Error> {
        match lock(&self.pending).as_mut() {
            Some(map) => {
                map.insert(id, pending);
                Ok(())
            }
            None => Err(not_connected()),
        }
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Pending> {
        lock(&self.pending).as_mut()?.remove(id)
    }

    /// Ends the session: every pending call fails with `Invocation canceled due to the
    /// underlying connection being closed.` (its source: `cause`), new calls fail at once.
    pub(crate) fn close(&self, cause: Option<&Error>) {
        self.closed.cancel();
        let Some(pending) = lock(&self.pending).take() else {
            return;
        };
        let message = "Invocation canceled due to the underlying connection being closed.";
        let error = match cause {
            Some(cause) => Error::wrap(Kind::Closed, message, cause.clone()),
            None => Error::new(Kind::Closed, message),
        };
        for (_, call) in pending {
            match call {
                Pending::Invoke(sender) => {
                    let _ = sender.send(Err(error.clone()));
                }
                Pending::Stream(sender) => {
                    let _ = sender.send(Err(error.clone()));
                }
            }
        }
    }

    /// Sends each upload stream's items and final Completion (docs/protocol.md, "Client-to-server streams"), one task per
    /// stream; they stop when the session ends.
    pub(crate) fn launch_streams(self: &Arc<Self>, streams: Vec<(String, ClientStream)>) {
        for (stream_id, stream) in streams {
            let session = self.clone();
            tokio::spawn(async move {
                let mut items = stream.items;
                let closed = session.closed.clone();
                let end = loop {
                    let item = tokio::select! {
                        () = closed.cancelled() => return,
                        item = items.next() => item,
                    };
                    match item {
                        Some(Ok(item)) => {
                            let message = HubMessage::StreamItem(StreamItem {
                                headers: Headers::new(),
                                invocation_id: stream_id.clone(),
                                item,
                            });
                            if session.send(&message).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(error)) => break Completion::with_error(stream_id, error),
                        None => break Completion::void(stream_id),
                    }
                };
                let _ = session.send(&HubMessage::Completion(end)).await;
            });
        }
    }
}

pub(crate) async fn wait_written(
    written: oneshot::Receiver<Result<(), Error>>,
) -> Result<(), Error> {
    match written.await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            Kind::Closed,
            "The connection was closed before the message was sent.",
        )),
    }
}

/// A session ready to run: the transport and the bytes that followed the handshake response.
pub(crate) struct Established {
    pub session: Arc<Session>,
    events: mpsc::UnboundedReceiver<TransportEvent>,
    stopper: Stopper,
    buffer: BytesMut,
    inherent_keep_alive: bool,
    /// The invocation queue of the handlers' task, kept across a stateful resume so that
    /// invocations stay in order; `None` until the first run starts that task.
    dispatch: Option<mpsc::UnboundedSender<Invocation>>,
}

impl Established {
    /// Tears the transport down without running the session.
    pub(crate) async fn abandon(self) {
        self.session.close(None);
        self.stopper.stop().await;
    }
}

/// Timeouts of a running session (docs/protocol.md, "Keep-alive and timeouts").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub server_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub handshake_timeout: Duration,
}

/// Sends the handshake request over `transport` and waits for the response (docs/protocol.md, "Handshake").
/// On success the session is established and, except on long polling, a first Ping is sent.
/// With `stateful` (stateful reconnect negotiated on a WebSocket) the request says version 2.
pub(crate) async fn handshake(
    transport: TransportConnection,
    protocol: HubProtocol,
    connection_id: Option<String>,
    timeouts: Timeouts,
    stateful: Option<StatefulSetup>,
) -> Result<Established, Error> {
    let inherent_keep_alive = transport.inherent_keep_alive();
    let TransportConnection {
        sender,
        mut events,
        stopper,
        ..
    } = transport;
    let version = if stateful.is_some() {
        HubProtocol::VERSION
    } else {
        1
    };
    let session = Arc::new(Session::new(
        protocol,
        connection_id,
        sender,
        stateful,
        timeouts.server_timeout,
    ));
    let result = async {
        let mut request = BytesMut::new();
        HandshakeRequest {
            protocol: protocol.name().to_owned(),
            version,
        }
        .write(&mut request);
        let written = {
            let (ack, written) = oneshot::channel();
            session.enqueue(request.freeze(), Some(ack))?;
            written
        };
        wait_written(written).await?;
        let mut buffer = BytesMut::new();
        let response = tokio::time::timeout(timeouts.handshake_timeout, async {
            loop {
                match events.recv().await {
                    Some(TransportEvent::Data(data)) => {
                        buffer.extend_from_slice(&data);
                        match HandshakeResponse::parse(&mut buffer) {
                            Ok(Some(response)) => return Ok(response),
                            Ok(None) => {}
                            Err(err) => {
                                return Err(Error::with_source(
                                    Kind::Handshake,
                                    format!("Error parsing handshake response: {err}"),
                                    err,
                                ));
                            }
                        }
                    }
                    other => {
                        let cause = match other {
                            Some(TransportEvent::Closed(cause)) => cause,
                            Some(TransportEvent::Lost(cause)) => Some(cause),
                            _ => None,
                        };
                        let message = "The underlying connection was closed before the hub handshake could complete.";
                        return Err(match cause {
                            Some(cause) => Error::wrap(Kind::Handshake, message, cause),
                            None => Error::new(Kind::Handshake, message),
                        });
                    }
                }
            }
        })
        .await
        .map_err(|_| {
            Error::new(
                Kind::Timeout,
                format!(
                    "The handshake timed out after {} ms.",
                    timeouts.handshake_timeout.as_millis()
                ),
            )
        })??;
        if let Some(error) = response.error {
            return Err(Error::new(
                Kind::Handshake,
                format!("Server returned handshake error: {error}"),
            ));
        }
        Ok(buffer)
    }
    .await;
    match result {
        Ok(buffer) => {
            if !inherent_keep_alive {
                // Arms the server's client timeout at once (docs/protocol.md, "Handshake", "Keep-alive and timeouts").
                let _ = session.send_nowait(&HubMessage::Ping);
            }
            Ok(Established {
                session,
                events,
                stopper,
                buffer,
                inherent_keep_alive,
                dispatch: None,
            })
        }
        Err(err) => {
            session.close(Some(&err));
            stopper.stop().await;
            Err(err)
        }
    }
}

/// How a session ended.
pub(crate) struct SessionEnd {
    /// Why; `None` for a clean end (stop, or the server closing without error).
    pub error: Option<Error>,
    /// Whether automatic reconnect may run (false after `stop()` or a Close message without
    /// `allowReconnect`).
    pub allow_reconnect: bool,
    /// Stateful reconnect: the WebSocket was lost ungracefully and the session is kept (pending
    /// calls alive) for [`resume`]. Whoever drops it without resuming must close the session.
    pub resume: Option<Resumable>,
}

/// A stateful session between two transports.
pub(crate) struct Resumable {
    pub session: Arc<Session>,
    dispatch: mpsc::UnboundedSender<Invocation>,
}

/// Stateful reconnect: opens a new WebSocket to the same connection (same URL and `id`, a
/// fresh token from the provider if there is one; no negotiate, no handshake) within `timeout`,
/// then sends Sequence and every unacknowledged message (docs/protocol.md, "Stateful
/// reconnect"). The session then runs again; it skips what arrives until the server's Sequence.
///
/// # Errors
/// Why the WebSocket could not be opened (for example status 404 once the server forgot the
/// connection), a timeout, or a token provider's failure; `resumable` comes back with it.
pub(crate) async fn resume(
    resumable: Resumable,
    timeout: Duration,
) -> Result<Established, (Error, Resumable)> {
    let Some(target) = resumable.session.resume.clone() else {
        return Err((not_connected(), resumable));
    };
    let attempt = async {
        let mut http = target.http.clone();
        if let Some(provider) = &target.token_provider {
            http.token = provider.access_token().await.map_err(|err| {
                let message = format!("The access token provider failed: {err}");
                Error::with_source(Kind::AccessToken, message, err)
            })?;
        }
        websocket::start(&http, &target.url).await
    };
    let transport = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(transport)) => transport,
        Ok(Err(err)) => return Err((err, resumable)),
        Err(_) => {
            let err = Error::new(
                Kind::Timeout,
                format!(
                    "The WebSocket of the stateful reconnect did not open within {} ms.",
                    timeout.as_millis()
                ),
            );
            return Err((err, resumable));
        }
    };
    let TransportConnection {
        sender,
        events,
        stopper,
        ..
    } = transport;
    if let Err(err) = resumable.session.attach(sender) {
        stopper.stop().await;
        return Err((err, resumable));
    }
    let Resumable { session, dispatch } = resumable;
    Ok(Established {
        session,
        events,
        stopper,
        buffer: BytesMut::new(),
        inherent_keep_alive: false,
        dispatch: Some(dispatch),
    })
}

/// Runs an established session until it ends: parses what arrives, dispatches invocations to
/// the handlers (on a task of their own, in order), completes pending calls, sends keep-alive
/// pings and enforces the server timeout. On `stop` it sends a Close message and stops the
/// transport gracefully. Pending calls fail when it ends, unless it is kept for a stateful
/// resume ([`SessionEnd::resume`]).
///
/// With stateful reconnect it also acknowledges what it received (every [`ACK_INTERVAL`]), skips
/// duplicates, handles the server's Ack and Sequence messages, and after a resume fails when the
/// server's Sequence does not come within the handshake timeout.
pub(crate) async fn run(
    established: Established,
    handlers: Arc<HandlerRegistry>,
    timeouts: Timeouts,
    stop: CancellationToken,
) -> SessionEnd {
    let Established {
        session,
        mut events,
        stopper,
        mut buffer,
        inherent_keep_alive,
        dispatch,
    } = established;
    let dispatch = dispatch.unwrap_or_else(|| {
        let (dispatch, invocations) = mpsc::unbounded_channel();
        tokio::spawn(dispatch_loop(handlers, session.clone(), invocations));
        dispatch
    });
    let stateful = session.is_stateful();
    let mut ack_timer = tokio::time::interval_at(Instant::now() + ACK_INTERVAL, ACK_INTERVAL);
    ack_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sequence_deadline = Instant::now() + timeouts.handshake_timeout;
    let mut lost = false;

    let mut server_deadline = Instant::now() + timeouts.server_timeout;
    let end = loop {
        match process(&session, &mut buffer, &dispatch) {
            Ok(None) => {}
            Ok(Some(close)) => {
                tracing::info!(error = ?close.error, allow_reconnect = close.allow_reconnect, "Close message received from server");
                break SessionEnd {
                    error: close.error.map(|error| {
                        Error::new(
                            Kind::ServerClose,
                            format!("Server returned an error on close: {error}"),
                        )
                    }),
                    allow_reconnect: close.allow_reconnect,
                    resume: None,
                };
            }
            Err(err) => {
                break SessionEnd {
                    error: Some(err),
                    allow_reconnect: true,
                    resume: None,
                };
            }
        }
        let ping_at = session.last_send() + timeouts.keep_alive_interval;
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                // Best effort, as the TS client: tell the server, then close the transport.
                if let Ok(written) = session.send_acked(&HubMessage::Close(Close::default())).await {
                    let _ = tokio::time::timeout(CLOSE_MESSAGE_TIMEOUT, written).await;
                }
                break SessionEnd { error: None, allow_reconnect: false, resume: None };
            }
            event = events.recv() => match event {
                Some(TransportEvent::Data(data)) => {
                    server_deadline = Instant::now() + timeouts.server_timeout;
                    buffer.extend_from_slice(&data);
                }
                Some(TransportEvent::Closed(error)) => {
                    break SessionEnd { error, allow_reconnect: true, resume: None };
                }
                Some(TransportEvent::Lost(error)) => {
                    lost = true;
                    break SessionEnd { error: Some(error), allow_reconnect: true, resume: None };
                }
                None => {
                    lost = true;
                    break SessionEnd { error: None, allow_reconnect: true, resume: None };
                }
            },
            _ = ack_timer.tick(), if stateful => {
                if session.awaiting_sequence() {
                    if Instant::now() >= sequence_deadline {
                        break SessionEnd {
                            error: Some(Error::new(
                                Kind::Timeout,
                                format!(
                                    "The server sent no Sequence message within {} ms of the stateful reconnect.",
                                    timeouts.handshake_timeout.as_millis()
                                ),
                            )),
                            allow_reconnect: true,
                            resume: None,
                        };
                    }
                } else if let Some(sequence_id) = session.ack_due() {
                    let _ = session.send_nowait(&HubMessage::Ack { sequence_id });
                }
            }
            () = tokio::time::sleep_until(server_deadline), if !inherent_keep_alive => {
                break SessionEnd {
                    error: Some(Error::new(
                        Kind::Timeout,
                        "Server timeout elapsed without receiving a message from the server.",
                    )),
                    allow_reconnect: true,
                    resume: None,
                };
            }
            () = tokio::time::sleep_until(ping_at), if !inherent_keep_alive => {
                if session.last_send().elapsed() >= timeouts.keep_alive_interval {
                    let _ = session.send_nowait(&HubMessage::Ping);
                }
            }
        }
    };
    // A resumed transport lost before the server's Sequence arrived counts as a failed resume:
    // no endless resumes against a server that accepts the WebSocket and drops it again.
    if lost && stateful && !stop.is_cancelled() && !session.awaiting_sequence() {
        // Kept for a resume: pending calls stay, sends are buffered meanwhile.
        session.detach();
        drop(stopper);
        return SessionEnd {
            resume: Some(Resumable {
                session: session.clone(),
                dispatch,
            }),
            ..end
        };
    }
    session.close(end.error.as_ref());
    drop(dispatch);
    if stop.is_cancelled() {
        // `stop()`: it returns once the Close message, the close frame or the DELETE went out.
        stopper.stop().await;
    } else {
        // Lost or closed by the server: the transport winds down in the background, so that
        // reconnecting starts at once.
        drop(stopper);
    }
    end
}

/// Handles every complete message in `buffer`; returns a received Close message.
fn process(
    session: &Session,
    buffer: &mut BytesMut,
    dispatch: &mpsc::UnboundedSender<Invocation>,
) -> Result<Option<Close>, Error> {
    loop {
        let message = session
            .protocol
            .parse_message(buffer, None)
            .map_err(|err| {
                Error::with_source(
                    Kind::Protocol,
                    format!("Invalid message from the server: {err}"),
                    err,
                )
            })?;
        let Some(message) = message else {
            return Ok(None);
        };
        if session.is_stateful() && session.receive(&message)? != Incoming::Process {
            continue;
        }
        match message {
            HubMessage::Invocation(invocation) => {
                let _ = dispatch.send(invocation);
            }
            HubMessage::StreamItem(item) => {
                let guard = lock(&session.pending);
                match guard.as_ref().and_then(|p| p.get(&item.invocation_id)) {
                    Some(Pending::Stream(sender)) => {
                        let _ = sender.send(Ok(item.item));
                    }
                    Some(Pending::Invoke(_)) => {
                        tracing::warn!(id = %item.invocation_id, "stream item for a non-streaming invocation ignored");
                    }
                    None => {
                        tracing::debug!(id = %item.invocation_id, "stream item for an unknown invocation ignored");
                    }
                }
            }
            HubMessage::Completion(completion) => match session.remove(&completion.invocation_id) {
                Some(Pending::Invoke(sender)) => {
                    let _ = sender.send(Ok(completion.result));
                }
                Some(Pending::Stream(sender)) => {
                    if let CompletionResult::Error(error) = completion.result {
                        let _ = sender.send(Err(Error::new(Kind::Server, error)));
                    }
                }
                None => {
                    tracing::debug!(id = %completion.invocation_id, "completion for an unknown invocation ignored");
                }
            },
            HubMessage::Ping => {}
            HubMessage::Close(close) => return Ok(Some(close)),
            other => {
                tracing::debug!(kind = other.message_type(), "message ignored by the client");
            }
        }
    }
}

/// Runs the handlers of each invocation, one invocation after the other, and answers those that
/// expect a result.
async fn dispatch_loop(
    handlers: Arc<HandlerRegistry>,
    session: Arc<Session>,
    mut invocations: mpsc::UnboundedReceiver<Invocation>,
) {
    while let Some(invocation) = invocations.recv().await {
        let Invocation {
            invocation_id,
            target,
            arguments,
            ..
        } = invocation;
        let answer = run_handlers(
            &target,
            handlers.snapshot(&target),
            arguments,
            invocation_id.is_some(),
        )
        .await;
        if let (Some(id), Some(result)) = (invocation_id, answer) {
            let completion = HubMessage::Completion(Completion {
                headers: Headers::new(),
                invocation_id: id,
                result,
            });
            if let Err(err) = session.send_acked(&completion).await {
                tracing::debug!(error = %err, "could not send a client result");
            }
        }
    }
}

/// Sends CancelInvocation for a stream the caller dropped (docs/protocol.md, "Server-to-client streams").
pub(crate) fn cancel_stream(session: &Session, id: &str) {
    if session.remove(id).is_some() {
        let _ = session.send_nowait(&HubMessage::CancelInvocation(CancelInvocation {
            headers: Headers::new(),
            invocation_id: id.to_owned(),
        }));
    }
}
