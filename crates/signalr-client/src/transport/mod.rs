//! The three transports of the connection layer (docs/protocol.md, "Transports"): each moves an opaque byte stream
//! and reports what arrived as [`TransportEvent`]s.
//!
//! Every transport runs as background tasks and is driven through the same three handles: an
//! outgoing queue (whatever is queued when the writer wakes is sent as one WebSocket frame or one
//! POST body, as the TS client's `TransportSendQueue` does), a receiver of events, and a
//! [`Stopper`] that stops it gracefully (WebSocket close frame, long-polling DELETE).

pub(crate) mod long_polling;
pub(crate) mod sse;
pub(crate) mod websocket;

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TransportType;
use crate::error::{Error, Kind};

/// What a transport reports.
#[derive(Debug)]
pub(crate) enum TransportEvent {
    /// Bytes from the server (one WebSocket frame, one SSE event, one poll response).
    Data(Bytes),
    /// The transport ended: `None` for a clean end (WebSocket close 1000, SSE stream end,
    /// long-polling 204), else why it broke. Sent at most once, and last.
    Closed(Option<Error>),
    /// The WebSocket broke without a close frame (a reset, an end of stream, a failed write):
    /// the loss that stateful reconnect resumes from. Otherwise like `Closed(Some(..))`; sent
    /// instead of `Closed`, at most once, and last.
    Lost(Error),
}

/// Bytes to send, with an optional acknowledgement sent once they were written.
pub(crate) struct Outgoing {
    pub data: Bytes,
    pub ack: Option<oneshot::Sender<Result<(), Error>>>,
}

/// Stops a transport's tasks: gracefully with [`Stopper::stop`], abruptly when dropped.
pub(crate) struct Stopper {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Stopper {
    pub(crate) fn new(token: CancellationToken, tasks: Vec<JoinHandle<()>>) -> Self {
        Stopper { token, tasks }
    }

    /// Asks the tasks to stop (close frame, DELETE) and waits until they have.
    pub(crate) async fn stop(mut self) {
        self.token.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A started transport.
pub(crate) struct TransportConnection {
    pub kind: TransportType,
    pub sender: mpsc::UnboundedSender<Outgoing>,
    pub events: mpsc::UnboundedReceiver<TransportEvent>,
    pub stopper: Stopper,
}

impl TransportConnection {
    /// Long polling proves liveness by its poll cycle: no pings, no server timeout (docs/protocol.md, "Long polling").
    pub(crate) fn inherent_keep_alive(&self) -> bool {
        self.kind == TransportType::LongPolling
    }
}

/// What every HTTP request of one connect attempt carries.
#[derive(Clone)]
pub(crate) struct HttpContext {
    pub client: reqwest::Client,
    /// `client` without a connection pool, for a request that must go out on a new socket.
    pub fresh_client: reqwest::Client,
    pub tls: crate::tls::TlsConfig,
    /// User headers plus the client's own.
    pub headers: HeaderMap,
    /// The bearer token of this attempt (from the provider or a negotiate redirect).
    pub token: Option<String>,
    /// Text (JSON) or binary (MessagePack) data.
    pub binary: bool,
}

impl HttpContext {
    /// The headers of a request: the common ones plus `Authorization: Bearer`.
    pub(crate) fn request_headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some(token) = self.token.as_deref().filter(|t| !t.is_empty())
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(AUTHORIZATION, value);
        }
        headers
    }

    /// `url` plus `access_token=<token>`, as the TS client sends it for WebSockets and SSE
    /// (docs/protocol.md, "Authentication").
    pub(crate) fn with_access_token(&self, url: &Url) -> Url {
        let mut url = url.clone();
        if let Some(token) = self.token.as_deref().filter(|t| !t.is_empty()) {
            url.query_pairs_mut().append_pair("access_token", token);
        }
        url
    }
}

/// What [`coalesce`] joined into one write, and the item that did not fit.
pub(crate) type Batch = (
    Bytes,
    Vec<oneshot::Sender<Result<(), Error>>>,
    Option<Outgoing>,
);

/// Takes the first queued item and everything queued behind it, as long as the total stays
/// within `limit` bytes (the first item always goes, whatever its size): one write. The item that
/// would have crossed `limit` is returned, to start the next write.
pub(crate) fn coalesce(
    first: Outgoing,
    receiver: &mut mpsc::UnboundedReceiver<Outgoing>,
    limit: usize,
) -> Batch {
    let mut acks = Vec::new();
    let Outgoing { data, ack } = first;
    acks.extend(ack);
    let mut batch: Option<BytesMut> = None;
    let mut rest = None;
    while let Ok(next) = receiver.try_recv() {
        let size = batch.as_ref().map_or(data.len(), BytesMut::len);
        if size.saturating_add(next.data.len()) > limit {
            rest = Some(next);
            break;
        }
        let buffer = batch.get_or_insert_with(|| BytesMut::from(&data[..]));
        buffer.extend_from_slice(&next.data);
        acks.extend(next.ack);
    }
    (batch.map_or(data, BytesMut::freeze), acks, rest)
}

/// Sends `result` to every acknowledgement.
pub(crate) fn acknowledge(
    acks: Vec<oneshot::Sender<Result<(), Error>>>,
    result: &Result<(), Error>,
) {
    for ack in acks {
        let _ = ack.send(result.clone());
    }
}

/// The writer of the HTTP transports (docs/protocol.md, "Sending with POST"): one POST at a time, each carrying everything
/// queued when it starts.
pub(crate) async fn post_loop(
    http: HttpContext,
    url: Url,
    mut receiver: mpsc::UnboundedReceiver<Outgoing>,
    token: CancellationToken,
) {
    let content_type = if http.binary {
        "application/octet-stream"
    } else {
        "text/plain;charset=UTF-8"
    };
    loop {
        let first = tokio::select! {
            () = token.cancelled() => return,
            next = receiver.recv() => match next {
                Some(first) => first,
                None => return,
            },
        };
        let (data, acks, _) = coalesce(first, &mut receiver, usize::MAX);
        let request = http
            .client
            .post(url.clone())
            .headers(http.request_headers())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(HTTP_TIMEOUT)
            .body(data)
            .send();
        let result = tokio::select! {
            () = token.cancelled() => Err(Error::new(Kind::Closed, "The transport was stopped before the data was sent.")),
            response = request => match response {
                Ok(response) if response.status() == reqwest::StatusCode::OK => Ok(()),
                Ok(response) => {
                    let status = response.status().as_u16();
                    Err(Error::with_status(
                        Kind::Transport,
                        format!("Sending data failed: the server answered status code {status}."),
                        status,
                    ))
                }
                Err(err) => Err(http_error("Sending data failed", err)),
            },
        };
        acknowledge(acks, &result);
    }
}

/// The timeout of negotiate, send and delete requests and of each poll (TS client: 100 s,
/// docs/protocol.md, "Defaults").
pub(crate) const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(100);

/// A transport error from a failed HTTP request.
pub(crate) fn http_error(what: &str, err: reqwest::Error) -> Error {
    let message = format!("{what}: {}", error_chain(&err));
    match err.status() {
        Some(status) => Error::with_status(Kind::Transport, message, status.as_u16()),
        None => Error::with_source(Kind::Transport, message, err),
    }
}

/// `err` and its sources, joined with `: `.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_joins_queued_items_up_to_the_limit() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        for text in ["bb", "cc", "dd"] {
            let _ = sender.send(Outgoing {
                data: Bytes::from_static(text.as_bytes()),
                ack: None,
            });
        }
        let first = Outgoing {
            data: Bytes::from_static(b"aaaa"),
            ack: None,
        };
        let (data, _, rest) = coalesce(first, &mut receiver, 8);
        assert_eq!(&data[..], b"aaaabbcc");
        let rest = rest.expect("dd did not fit");
        assert_eq!(&rest.data[..], b"dd");
        // The first item goes even when it alone is over the limit.
        let (data, _, rest) = coalesce(rest, &mut receiver, 1);
        assert_eq!((&data[..], rest.is_none()), (&b"dd"[..], true));
    }
}
