//! The WebSocket transport (docs/protocol.md, "WebSockets"): full duplex; JSON in text frames, MessagePack in
//! binary frames. Incoming frames of either kind are taken as bytes (some servers send JSON in
//! binary frames).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::{
    HTTP_TIMEOUT, HttpContext, Stopper, TransportConnection, TransportEvent, acknowledge, coalesce,
    error_chain,
};
use crate::TransportType;
use crate::error::{Error, Kind};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a graceful stop waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most bytes of queued messages joined into one WebSocket frame (a single larger message
/// still goes alone). Keeps a burst, such as the replay after a stateful reconnect (up to the
/// 100,000-byte buffer), within what servers take in one WebSocket message (our server: twice
/// its 32 KiB hub message limit).
const MAX_FRAME: usize = 32 * 1024;

/// Opens the WebSocket at `url` (an `http(s)` URL; the scheme becomes `ws(s)`), with the access
/// token both as `Authorization: Bearer` and as the `access_token` query parameter.
pub(crate) async fn start(http: &HttpContext, url: &Url) -> Result<TransportConnection, Error> {
    http.tls.check_url(url, Kind::Transport)?;
    let mut ws_url = http.with_access_token(url);
    let scheme = if ws_url.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    if ws_url.set_scheme(scheme).is_err() {
        return Err(Error::new(
            Kind::Transport,
            format!("Cannot make a WebSocket URL of '{url}'."),
        ));
    }
    let mut request = ws_url.as_str().into_client_request().map_err(|err| {
        Error::with_source(
            Kind::Transport,
            format!("Invalid WebSocket request: {err}"),
            err,
        )
    })?;
    for (name, value) in &http.request_headers() {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        Some(http.tls.websocket_connector(scheme == "wss")),
    );
    // Without TLS only `ws` URLs get here (`check_url`).
    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (socket, _response) = tokio::time::timeout(HTTP_TIMEOUT, connect)
        .await
        .map_err(|_| {
            Error::new(
                Kind::Transport,
                format!(
                    "WebSocket failed to connect: no answer within {} s.",
                    HTTP_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(connect_error)?;
    tracing::debug!(url = %url, "WebSocket connected");

    let (sender, outgoing) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let task = tokio::spawn(run(socket, outgoing, events_tx, token.clone(), http.binary));
    Ok(TransportConnection {
        kind: TransportType::WebSockets,
        sender,
        events,
        stopper: Stopper::new(token, vec![task]),
    })
}

fn connect_error(err: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match err {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            Error::with_status(
                Kind::Transport,
                format!("WebSocket failed to connect: the server answered status code {status}."),
                status,
            )
        }
        other => Error::with_source(
            Kind::Transport,
            format!("WebSocket failed to connect: {}", error_chain(&other)),
            other,
        ),
    }
}

async fn run(
    mut socket: Socket,
    mut outgoing: mpsc::UnboundedReceiver<super::Outgoing>,
    events: mpsc::UnboundedSender<TransportEvent>,
    token: CancellationToken,
    binary: bool,
) {
    let closed = 'run: loop {
        tokio::select! {
            biased;
            () = token.cancelled() => {
                close(&mut socket).await;
                return;
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let _ = events.send(TransportEvent::Data(text.into()));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = events.send(TransportEvent::Data(bytes));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        None => TransportEvent::Closed(None),
                        Some(frame) if frame.code == CloseCode::Normal => TransportEvent::Closed(None),
                        Some(frame) => {
                            let reason = if frame.reason.is_empty() {
                                "no reason given".to_owned()
                            } else {
                                frame.reason.as_str().to_owned()
                            };
                            TransportEvent::Closed(Some(Error::new(
                                Kind::Transport,
                                format!(
                                    "WebSocket closed with status code: {} ({reason}).",
                                    u16::from(frame.code)
                                ),
                            )))
                        }
                    };
                }
                Some(Err(err)) => {
                    break TransportEvent::Lost(Error::with_source(
                        Kind::Transport,
                        format!("WebSocket closed with an error: {}", error_chain(&err)),
                        err,
                    ));
                }
                None => {
                    break TransportEvent::Lost(Error::new(
                        Kind::Transport,
                        "WebSocket closed without a close frame.",
                    ));
                }
            },
            next = outgoing.recv() => {
                let Some(mut first) = next else {
                    close(&mut socket).await;
                    return;
                };
                loop {
                    let (data, acks, rest) = coalesce(first, &mut outgoing, MAX_FRAME);
                    let frame = if binary {
                        Message::Binary(data)
                    } else {
                        match Utf8Bytes::try_from(data.clone()) {
                            Ok(text) => Message::Text(text),
                            Err(_) => Message::Binary(data),
                        }
                    };
                    let result = socket.send(frame).await.map_err(|err| {
                        Error::with_source(
                            Kind::Transport,
                            format!("WebSocket send failed: {}", error_chain(&err)),
                            err,
                        )
                    });
                    acknowledge(acks, &result);
                    if let Err(err) = result {
                        break 'run TransportEvent::Lost(err);
                    }
                    match rest {
                        Some(next) => first = next,
                        None => break,
                    }
                }
            }
        }
    };
    match &closed {
        TransportEvent::Closed(Some(err)) => tracing::debug!(error = %err, "WebSocket closed"),
        TransportEvent::Lost(err) => tracing::debug!(error = %err, "WebSocket lost"),
        _ => {}
    }
    let _ = events.send(closed);
}

/// Sends a normal close frame and waits briefly for the server's.
async fn close(socket: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: Utf8Bytes::from_static(""),
        };
        if socket.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}
