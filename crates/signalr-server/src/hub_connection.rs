//! The hub protocol on one connection: handshake (reference §A5), message dispatch (§A6),
//! keep-alive and client timeout (§A9), and the Close message (§A6.8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use signalr_protocol::{
    Close, Completion, HandshakeRequest, HandshakeResponse, HubMessage, HubProtocol, ProtocolError,
    TransferFormat, TransportType,
};
use tokio::sync::mpsc;

use crate::connection::{Connection, Outgoing, SerializedMessage};
use crate::hub::{ConnectionSignals, HubCallerContext, HubInner, InvokeError};

/// How the message loop ended.
enum Outcome {
    /// The transport went away or the connection was disposed: nothing more can be sent.
    TransportClosed,
    /// The client sent Close: end without sending one back.
    ClientClosed,
    /// The server closes: send this Close message, then close the transport.
    Close(Close),
}

/// Runs the hub protocol on `connection` until it ends, then removes it from the hub.
pub(crate) async fn run(
    hub: Arc<HubInner>,
    connection: Arc<Connection>,
    mut inbound: mpsc::Receiver<Bytes>,
) {
    let mut buf = BytesMut::new();
    let Some(protocol) = handshake(&hub, &connection, &mut inbound, &mut buf).await else {
        let _ = connection.send(Outgoing::End).await;
        return;
    };
    tracing::debug!(connection_id = %connection.id, protocol = protocol.name(), "handshake complete");

    let signals = Arc::new(ConnectionSignals::default());
    hub.lifetime.add(connection.clone());
    let outcome = message_loop(
        &hub,
        &connection,
        &signals,
        protocol,
        &mut inbound,
        &mut buf,
    )
    .await;
    hub.lifetime.remove(&connection.id);

    match outcome {
        Outcome::TransportClosed => {}
        Outcome::ClientClosed => {
            let _ = connection.send(Outgoing::End).await;
        }
        Outcome::Close(close) => {
            let message = SerializedMessage::new(HubMessage::Close(close));
            let _ = connection.send(Outgoing::Message(message)).await;
            let _ = connection.send(Outgoing::End).await;
        }
    }
    tracing::debug!(connection_id = %connection.id, "hub connection ended");
}

async fn fail_handshake(connection: &Connection, error: String) -> Option<HubProtocol> {
    tracing::debug!(connection_id = %connection.id, %error, "handshake failed");
    let mut out = BytesMut::new();
    HandshakeResponse { error: Some(error) }.write(&mut out);
    let _ = connection.send(Outgoing::Raw(out.freeze())).await;
    None
}

async fn handshake(
    hub: &HubInner,
    connection: &Connection,
    inbound: &mut mpsc::Receiver<Bytes>,
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
            bytes = inbound.recv() => match bytes {
                Some(bytes) => buf.extend_from_slice(&bytes),
                None => return None,
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
    connection.set_protocol(protocol);
    connection
        .send(Outgoing::Raw(HandshakeResponse::success_bytes()))
        .await
        .ok()?;
    Some(protocol)
}

/// What one received message asks the loop to do.
enum Step {
    Continue,
    Invoke(BoxFuture<'static, Option<HubMessage>>),
    End(Outcome),
}

fn error_close(hub: &HubInner, err: &ProtocolError) -> Close {
    let mut error = "Connection closed with an error.".to_owned();
    if hub.options.enable_detailed_errors {
        error.push_str(&format!(" InvalidDataException: {err}"));
    }
    Close {
        error: Some(error),
        allow_reconnect: true,
    }
}

async fn message_loop(
    hub: &Arc<HubInner>,
    connection: &Arc<Connection>,
    signals: &Arc<ConnectionSignals>,
    protocol: HubProtocol,
    inbound: &mut mpsc::Receiver<Bytes>,
    buf: &mut BytesMut,
) -> Outcome {
    let options = &hub.options;
    let inherent_keep_alive = connection.transport() == Some(TransportType::LongPolling);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_received = Instant::now();
    let mut client_timeout_armed = false;
    let mut in_flight: Option<BoxFuture<'static, Option<HubMessage>>> = None;

    loop {
        // Dispatch what is buffered; one invocation at a time
        // (MaximumParallelInvocationsPerClient = 1, reference §A11).
        while in_flight.is_none() {
            let message = match protocol.parse_message(buf, options.maximum_receive_message_size) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(connection_id = %connection.id, %err, "closing connection after a protocol error");
                    return Outcome::Close(error_close(hub, &err));
                }
            };
            if matches!(message, HubMessage::Ping) {
                client_timeout_armed = true;
            }
            match dispatch(hub, connection, signals, message) {
                Step::Continue => {}
                Step::Invoke(future) => in_flight = Some(future),
                Step::End(outcome) => return outcome,
            }
        }

        tokio::select! {
            () = connection.closed.cancelled() => return Outcome::TransportClosed,
            () = signals.notify.notified() => {
                let close = signals.close.lock().ok().and_then(|mut c| c.take());
                if let Some(close) = close {
                    return Outcome::Close(close);
                }
            }
            reply = async { in_flight.as_mut().expect("guarded by the select condition").await }, if in_flight.is_some() => {
                in_flight = None;
                last_received = Instant::now();
                // A method that closed its own connection gets no Completion.
                let close = signals.close.lock().ok().and_then(|mut c| c.take());
                if let Some(close) = close {
                    return Outcome::Close(close);
                }
                if let Some(reply) = reply {
                    let _ = connection.send(Outgoing::Message(SerializedMessage::new(reply))).await;
                }
            }
            bytes = inbound.recv(), if in_flight.is_none() => match bytes {
                Some(bytes) => {
                    last_received = Instant::now();
                    buf.extend_from_slice(&bytes);
                }
                None => return Outcome::TransportClosed,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if !inherent_keep_alive {
                    let idle = connection.last_write_elapsed(now);
                    if idle >= options.keep_alive_interval {
                        let ping = SerializedMessage::new(HubMessage::Ping);
                        let _ = connection.try_send(Outgoing::Message(ping));
                        connection.touch_write(now);
                    }
                }
                if client_timeout_armed
                    && in_flight.is_none()
                    && now.duration_since(last_received) > options.client_timeout_interval
                {
                    tracing::debug!(connection_id = %connection.id, "client timeout elapsed");
                    return Outcome::Close(Close { error: None, allow_reconnect: true });
                }
            }
        }
    }
}

fn detailed(hub: &HubInner, generic: String, detail: &str) -> String {
    if hub.options.enable_detailed_errors {
        format!("{generic} {detail}")
    } else {
        generic
    }
}

fn dispatch(
    hub: &Arc<HubInner>,
    connection: &Arc<Connection>,
    signals: &Arc<ConnectionSignals>,
    message: HubMessage,
) -> Step {
    match message {
        HubMessage::Invocation(invocation) => {
            let target = invocation.target;
            let id = invocation.invocation_id;
            let fail = |error: String| match &id {
                Some(id) => Step::Invoke(
                    futures_util::future::ready(Some(HubMessage::Completion(
                        Completion::with_error(id.clone(), error),
                    )))
                    .boxed(),
                ),
                None => Step::Continue,
            };
            let Some(method) = hub.method(&target) else {
                tracing::debug!(connection_id = %connection.id, %target, "unknown hub method");
                return fail(detailed(
                    hub,
                    format!("Failed to invoke '{target}' due to an error on the server."),
                    "HubException: Method does not exist.",
                ));
            };
            if !invocation.stream_ids.is_empty() {
                return fail(format!(
                    "Client sent {} stream(s), Hub method expects 0.",
                    invocation.stream_ids.len()
                ));
            }
            let caller = HubCallerContext {
                connection: connection.clone(),
                hub: hub.clone(),
                signals: signals.clone(),
            };
            let call = (method.handler)(caller, invocation.arguments);
            let hub = hub.clone();
            Step::Invoke(
                async move {
                    let result = call.await;
                    let Some(id) = id else {
                        if let Err(InvokeError::Method(err)) = &result {
                            tracing::debug!(%target, %err, "hub method failed (non-blocking call)");
                        }
                        return None;
                    };
                    let detailed_errors = hub.options.enable_detailed_errors;
                    let completion = match result {
                        Ok(Some(value)) => Completion::with_result(id, value),
                        Ok(None) => Completion::void(id),
                        Err(InvokeError::Binding(detail)) => Completion::with_error(
                            id,
                            detailed(
                                &hub,
                                format!(
                                    "Failed to invoke '{target}' due to an error on the server."
                                ),
                                &detail,
                            ),
                        ),
                        Err(InvokeError::Method(err)) => {
                            tracing::debug!(%target, %err, "hub method failed");
                            Completion::with_error(id, err.client_message(&target, detailed_errors))
                        }
                    };
                    Some(HubMessage::Completion(completion))
                }
                .boxed(),
            )
        }
        HubMessage::StreamInvocation(invocation) => {
            let target = invocation.target;
            let error = if hub.method(&target).is_some() {
                format!(
                    "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
                )
            } else {
                detailed(
                    hub,
                    format!("Failed to invoke '{target}' due to an error on the server."),
                    "HubException: Method does not exist.",
                )
            };
            let completion = Completion::with_error(invocation.invocation_id, error);
            Step::Invoke(
                futures_util::future::ready(Some(HubMessage::Completion(completion))).boxed(),
            )
        }
        HubMessage::Close(close) => {
            tracing::debug!(connection_id = %connection.id, error = ?close.error, "client sent Close");
            Step::End(Outcome::ClientClosed)
        }
        HubMessage::Ping
        | HubMessage::Ack { .. }
        | HubMessage::Sequence { .. }
        | HubMessage::CancelInvocation(_)
        | HubMessage::StreamItem(_)
        | HubMessage::Completion(_) => Step::Continue,
    }
}
