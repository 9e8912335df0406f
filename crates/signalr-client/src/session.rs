//! One established hub connection (transport up, handshake done) and its receive loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use signalr_protocol::{
    CancelInvocation, Close, Completion, CompletionResult, HandshakeRequest, HandshakeResponse,
    Headers, HubMessage, HubProtocol, Invocation, Payload, StreamItem,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::ClientStream;
use crate::error::{Error, Kind, not_connected};
use crate::handlers::{HandlerRegistry, lock, run_handlers};
use crate::transport::{Outgoing, Stopper, TransportConnection, TransportEvent};

/// How long a graceful stop waits for the Close message to be written.
const CLOSE_MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);

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
    sender: mpsc::UnboundedSender<Outgoing>,
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
    ) -> Self {
        Session {
            protocol,
            connection_id,
            sender,
            pending: Mutex::new(Some(HashMap::new())),
            last_send: Mutex::new(Instant::now()),
            closed: CancellationToken::new(),
        }
    }

    fn encode(&self, message: &HubMessage) -> Result<Bytes, Error> {
        let mut out = BytesMut::new();
        self.protocol
            .write_message(message, &mut out)
            .map_err(|err| Error::with_source(Kind::Encode, err.to_string(), err))?;
        Ok(out.freeze())
    }

    fn enqueue(
        &self,
        data: Bytes,
        ack: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Result<(), Error> {
        if self.closed.is_cancelled() {
            return Err(not_connected());
        }
        *lock(&self.last_send) = Instant::now();
        self.sender
            .send(Outgoing { data, ack })
            .map_err(|_| not_connected())
    }

    /// Queues `message` without waiting for it to be written.
    pub(crate) fn send_nowait(&self, message: &HubMessage) -> Result<(), Error> {
        let data = self.encode(message)?;
        self.enqueue(data, None)
    }

    /// Queues `message`; the returned receiver completes once it was written.
    pub(crate) fn send_acked(
        &self,
        message: &HubMessage,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let data = self.encode(message)?;
        let (ack, written) = oneshot::channel();
        self.enqueue(data, Some(ack))?;
        Ok(written)
    }

    /// Sends `message` and waits until it was written.
    pub(crate) async fn send(&self, message: &HubMessage) -> Result<(), Error> {
        let written = self.send_acked(message)?;
        wait_written(written).await
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
    fn close(&self, cause: Option<&Error>) {
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
pub(crate) async fn handshake(
    transport: TransportConnection,
    protocol: HubProtocol,
    connection_id: Option<String>,
    timeouts: Timeouts,
) -> Result<Established, Error> {
    let inherent_keep_alive = transport.inherent_keep_alive();
    let TransportConnection {
        sender,
        mut events,
        stopper,
        ..
    } = transport;
    let session = Arc::new(Session::new(protocol, connection_id, sender));
    let result = async {
        let mut request = BytesMut::new();
        HandshakeRequest {
            protocol: protocol.name().to_owned(),
            version: 1,
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
}

/// Runs an established session until it ends: parses what arrives, dispatches invocations to
/// the handlers (on a task of their own, in order), completes pending calls, sends keep-alive
/// pings and enforces the server timeout. On `stop` it sends a Close message and stops the
/// transport gracefully. Pending calls fail when it ends.
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
    } = established;
    let (dispatch, invocations) = mpsc::unbounded_channel();
    tokio::spawn(dispatch_loop(handlers, session.clone(), invocations));

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
                };
            }
            Err(err) => {
                break SessionEnd {
                    error: Some(err),
                    allow_reconnect: true,
                };
            }
        }
        let ping_at = session.last_send() + timeouts.keep_alive_interval;
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                // Best effort, as the TS client: tell the server, then close the transport.
                if let Ok(written) = session.send_acked(&HubMessage::Close(Close::default())) {
                    let _ = tokio::time::timeout(CLOSE_MESSAGE_TIMEOUT, written).await;
                }
                break SessionEnd { error: None, allow_reconnect: false };
            }
            event = events.recv() => match event {
                Some(TransportEvent::Data(data)) => {
                    server_deadline = Instant::now() + timeouts.server_timeout;
                    buffer.extend_from_slice(&data);
                }
                Some(TransportEvent::Closed(error)) => {
                    break SessionEnd { error, allow_reconnect: true };
                }
                None => break SessionEnd { error: None, allow_reconnect: true },
            },
            () = tokio::time::sleep_until(server_deadline), if !inherent_keep_alive => {
                break SessionEnd {
                    error: Some(Error::new(
                        Kind::Timeout,
                        "Server timeout elapsed without receiving a message from the server.",
                    )),
                    allow_reconnect: true,
                };
            }
            () = tokio::time::sleep_until(ping_at), if !inherent_keep_alive => {
                if session.last_send().elapsed() >= timeouts.keep_alive_interval {
                    let _ = session.send_nowait(&HubMessage::Ping);
                }
            }
        }
    };
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
            if let Err(err) = session.send_nowait(&completion) {
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
