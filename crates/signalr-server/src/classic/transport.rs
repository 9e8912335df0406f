//! The three classic transports over one connection's message buffer: WebSockets (one JSON
//! frame per envelope or hub result, `{}` keep-alives), Server-Sent Events (`data: initialized`,
//! then `data: <envelope>` events, `data: {}` keep-alives) and long polling (one envelope per
//! poll, a space while it waits).
//!
//! A transport request starts at a cursor and writes every buffered message after it; a newer
//! request of the same connection (a reconnect, the next poll) ends the older one.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use signalr_protocol::TransportType;
use signalr_protocol::classic::KEEP_ALIVE;
use tokio::sync::mpsc;

use super::connection::{AttachGuard, ClassicConnection};
use super::{ClassicEndpoint, JSON, bad_request, invoke, respond};

/// Longest time one WebSocket write may take before the socket is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server waits for the client's Close frame after sending its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Hub results waiting to be written to a WebSocket; the reader waits when it is full.
const RESULT_QUEUE: usize = 16;

/// Serves a `/connect`, `/reconnect` or `/poll` request. `replay` is the cursor to continue from
/// (`None`: a new connection, which starts with the init message `S:1`).
pub(crate) async fn serve(
    endpoint: Arc<ClassicEndpoint>,
    connection: Arc<ClassicConnection>,
    transport: TransportType,
    replay: Option<u64>,
    mut parts: Parts,
) -> Response {
    let init = replay.is_none();
    let after = replay.unwrap_or_else(|| connection.outbox.newest());
    match transport {
        TransportType::WebSockets => {
            let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
                return bad_request("Not a valid web socket request.");
            };
            let limit = endpoint.options.max_incoming_message_size;
            upgrade
                .max_message_size(limit)
                .max_frame_size(limit)
                .read_buffer_size(8 * 1024)
                .on_upgrade(move |socket| async move {
                    let guard = connection.attach();
                    websocket(&endpoint, &connection, guard, socket, init, after).await;
                })
                .into_response()
        }
        TransportType::ServerSentEvents => server_sent_events(&endpoint, &connection, init, after),
        TransportType::LongPolling => long_poll(&endpoint, &connection, init, after),
    }
}

/// The init message of a new connection: its cursor and `S:1` (and, on long polling, the poll
/// delay `L`).
fn init_frame(connection: &ClassicConnection, after: u64, delay: Option<u64>) -> Bytes {
    connection.outbox.empty(after, true, delay)
}

fn keep_alive_interval(endpoint: &ClassicEndpoint) -> tokio::time::Interval {
    // Without keep-alives the timer still runs, but far apart.
    let period = endpoint
        .options
        .keep_alive
        .unwrap_or(Duration::from_secs(24 * 3600));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

async fn websocket(
    endpoint: &Arc<ClassicEndpoint>,
    connection: &Arc<ClassicConnection>,
    guard: AttachGuard,
    socket: WebSocket,
    init: bool,
    mut after: u64,
) {
    let (mut sink, mut stream) = socket.split();
    let send = |frame: Bytes| {
        let text = Utf8Bytes::try_from(frame).unwrap_or_default();
        Message::Text(text)
    };
    if init {
        let frame = init_frame(connection, after, None);
        if !matches!(
            tokio::time::timeout(SEND_TIMEOUT, sink.send(send(frame))).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
    let (results_tx, mut results) = mpsc::channel::<Bytes>(RESULT_QUEUE);
    let reader_endpoint = endpoint.clone();
    let reader_connection = connection.clone();
    // Reads hub invocations and runs them one after the other; ends the socket on a binary
    // frame or a message over the limit (the TCP connection just closes, as SignalR 2.4 does).
    let mut reader = tokio::spawn(async move {
        while let Some(message) = stream.next().await {
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => return ReadEnd::PeerClosed,
                // A binary frame or a message over the limit: the TCP connection just ends.
                Ok(Message::Binary(_)) => return ReadEnd::Gone,
                Err(err) => {
                    return match read_error(err) {
                        ReadEnd::TooLarge => ReadEnd::Gone,
                        end => end,
                    };
                }
            };
            let data = Bytes::from(text);
            match invoke::invoke(&reader_endpoint, &reader_connection, data).await {
                Ok(result) => {
                    if results_tx.send(result).await.is_err() {
                        return ReadEnd::Gone;
                    }
                }
                // The real server answers nothing to a frame it cannot use, and reads on.
                Err(refused) => {
                    tracing::debug!(connection_id = %reader_connection.id, reason = refused.0, "classic WebSocket message ignored");
                }
            }
        }
        ReadEnd::Gone
    });
    let mut newest = connection.outbox.subscribe();
    // What is already buffered after the cursor (a reconnect's missed messages) goes out first.
    newest.mark_changed();
    let mut keep_alive = keep_alive_interval(endpoint);
    let mut ending = false;
    loop {
        let frame = tokio::select! {
            biased;
            () = guard.cancel.cancelled() => {
                // Replaced by a newer transport request, aborted, or the connection ended: close
                // with 1000 and wait (briefly) for the client's Close, so that the client reads
                // our Close frame before the TCP connection goes.
                let _ = tokio::time::timeout(SEND_TIMEOUT, sink.close()).await;
                let _ = tokio::time::timeout(CLOSE_WAIT, &mut reader).await;
                break;
            }
            read = &mut reader => {
                match read.unwrap_or(ReadEnd::Gone) {
                    // The client's Close frame: flushing sends the reply the library queued.
                    ReadEnd::PeerClosed => {
                        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.close()).await;
                    }
                    // Text that is not UTF-8 (1007) or a broken frame (1002).
                    ReadEnd::Violation(code) => {
                        let close = CloseFrame { code, reason: Utf8Bytes::from_static("") };
                        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(close)))).await;
                    }
                    ReadEnd::Gone | ReadEnd::TooLarge => {}
                }
                break;
            }
            changed = newest.changed() => {
                if changed.is_err() {
                    break;
                }
                match connection.outbox.batch(after, false, None) {
                    Some(batch) => {
                        after = batch.cursor;
                        ending = batch.reconnect;
                        batch.frame
                    }
                    None => continue,
                }
            }
            Some(result) = results.recv() => result,
            _ = keep_alive.tick() => Bytes::from_static(KEEP_ALIVE),
        };
        match tokio::time::timeout(SEND_TIMEOUT, sink.send(send(frame))).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        if ending {
            // The server asked the client to reconnect: end this socket so that it does.
            let _ = tokio::time::timeout(SEND_TIMEOUT, sink.close()).await;
            break;
        }
    }
    reader.abort();
    drop(guard);
}

/// One SSE event: `data: <payload>` and an empty line, with `\n` line ends as SignalR 2.4 writes.
fn sse_event(payload: &[u8]) -> Bytes {
    let mut event = BytesMut::with_capacity(payload.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(payload);
    event.extend_from_slice(b"\n\n");
    event.freeze()
}

fn server_sent_events(
    endpoint: &Arc<ClassicEndpoint>,
    connection: &Arc<ClassicConnection>,
    init: bool,
    after: u64,
) -> Response {
    struct Sse {
        guard: AttachGuard,
        connection: Arc<ClassicConnection>,
        newest: tokio::sync::watch::Receiver<u64>,
        keep_alive: tokio::time::Interval,
        after: u64,
        pending: Vec<Bytes>,
        /// The last event asked the client to reconnect: the stream ends.
        ending: bool,
    }
    let mut pending = vec![sse_event(b"initialized")];
    if init {
        pending.push(sse_event(&init_frame(connection, after, None)));
    }
    pending.reverse();
    let state = Sse {
        guard: connection.attach(),
        connection: connection.clone(),
        newest: connection.outbox.subscribe(),
        keep_alive: keep_alive_interval(endpoint),
        after,
        pending,
        ending: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(event) = state.pending.pop() {
            return Some((Ok::<_, std::io::Error>(event), state));
        }
        if state.ending {
            return None;
        }
        loop {
            if let Some(batch) = state.connection.outbox.batch(state.after, false, None) {
                state.after = batch.cursor;
                state.ending = batch.reconnect;
                return Some((Ok(sse_event(&batch.frame)), state));
            }
            tokio::select! {
                biased;
                () = state.guard.cancel.cancelled() => return None,
                changed = state.newest.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = state.keep_alive.tick() => return Some((Ok(sse_event(KEEP_ALIVE)), state)),
            }
        }
    });
    respond(
        StatusCode::OK,
        Some("text/event-stream"),
        Body::from_stream(stream),
    )
}

fn long_poll(
    endpoint: &Arc<ClassicEndpoint>,
    connection: &Arc<ClassicConnection>,
    init: bool,
    after: u64,
) -> Response {
    let delay = endpoint.options.long_poll_delay;
    let delay = (!delay.is_zero()).then(|| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    if init {
        // `/connect` answers the init message at once; the client then starts and polls.
        let frame = init_frame(connection, after, delay);
        return respond(StatusCode::OK, Some(JSON), Body::from(frame));
    }
    struct Poll {
        guard: Option<AttachGuard>,
        connection: Arc<ClassicConnection>,
        newest: tokio::sync::watch::Receiver<u64>,
        keep_alive: tokio::time::Interval,
        deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
        after: u64,
        delay: Option<u64>,
    }
    let state = Poll {
        guard: Some(connection.attach()),
        connection: connection.clone(),
        newest: connection.outbox.subscribe(),
        keep_alive: keep_alive_interval(endpoint),
        deadline: Box::pin(tokio::time::sleep(endpoint.options.connection_timeout)),
        after,
        delay,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let guard = state.guard.as_ref()?;
        loop {
            if let Some(batch) = state
                .connection
                .outbox
                .batch(state.after, false, state.delay)
            {
                state.guard = None;
                return Some((Ok::<_, std::io::Error>(batch.frame), state));
            }
            tokio::select! {
                biased;
                changed = state.newest.changed() => {
                    if changed.is_ok() {
                        continue;
                    }
                }
                () = guard.cancel.cancelled() => {}
                () = &mut state.deadline => {}
                _ = state.keep_alive.tick() => return Some((Ok(Bytes::from_static(b" ")), state)),
            }
            // Nothing came: an empty envelope with the current cursor.
            let batch = state
                .connection
                .outbox
                .empty(state.after, false, state.delay);
            state.guard = None;
            return Some((Ok(batch), state));
        }
    });
    respond(StatusCode::OK, Some(JSON), Body::from_stream(stream))
}

/// How the reading half of a WebSocket ended.
enum ReadEnd {
    /// The client sent a Close frame; the library has queued the reply, which the next flush sends.
    PeerClosed,
    /// The socket ended or failed without a Close frame.
    Gone,
    /// The client sent a message over the size limit: the application was told (a hub answers
    /// with its Close message); the WebSocket closes once that is written.
    TooLarge,
    /// The client broke the WebSocket protocol: close at once with this code.
    Violation(u16),
}

/// What a failed read means for the close handshake.
fn read_error(error: axum::Error) -> ReadEnd {
    let Ok(error) = error.into_inner().downcast::<tungstenite::Error>() else {
        return ReadEnd::Gone;
    };
    match *error {
        tungstenite::Error::Capacity(_) => ReadEnd::TooLarge,
        // 1007: text that is not UTF-8 (invalid payload data).
        tungstenite::Error::Utf8(_) => ReadEnd::Violation(1007),
        // 1002: protocol error (unmasked frame, reserved bits or opcode, bad control frame...).
        tungstenite::Error::Protocol(_) => ReadEnd::Violation(1002),
        _ => ReadEnd::Gone,
    }
}
