//! The classic transports (docs/protocol.md, "Classic client"): WebSockets (the Core client's
//! WebSocket transport, on classic URLs), Server-Sent Events and long polling with their
//! classic request shapes (`/connect`, `/poll`, `/reconnect`, `/send` as a form POST, `/abort`).
//!
//! Each transport reports what the server sent as [`TransportEvent`]s: one JSON object per
//! event (an envelope, a hub result on WebSockets, or a keep-alive).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::wire::{CLIENT_PROTOCOL, ServerMessage};
use crate::error::{Error, Kind};
use crate::transport::sse::SseParser;
use crate::transport::{HttpContext, Outgoing, Stopper, TransportEvent, http_error, websocket};

/// A classic transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClassicTransport {
    /// WebSockets when the server allows them (`TryWebSockets`), then Server-Sent Events, then
    /// long polling: the .NET client's `AutoTransport`.
    Auto,
    /// `webSockets`.
    WebSockets,
    /// `serverSentEvents`.
    ServerSentEvents,
    /// `longPolling`.
    LongPolling,
}

impl ClassicTransport {
    /// The `transport` query value (`webSockets`, `serverSentEvents`, `longPolling`); `auto`
    /// for [`ClassicTransport::Auto`], which never goes on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ClassicTransport::Auto => "auto",
            ClassicTransport::WebSockets => "webSockets",
            ClassicTransport::ServerSentEvents => "serverSentEvents",
            ClassicTransport::LongPolling => "longPolling",
        }
    }
}

impl std::fmt::Display for ClassicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The latest cursor (`C`) and groups token (`G`) of a connection, echoed on `/poll` and
/// `/reconnect`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cursors {
    pub message_id: Option<String>,
    pub groups_token: Option<String>,
}

impl Cursors {
    /// Takes the `C` and `G` of an envelope.
    pub(crate) fn update(&mut self, message: &ServerMessage) {
        if message.id.is_some() {
            return;
        }
        if let Some(cursor) = &message.cursor {
            self.message_id = Some(cursor.clone());
        }
        if let Some(token) = &message.groups_token {
            self.groups_token = Some(token.clone());
        }
    }
}

/// Everything that builds the URLs of one connection.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The endpoint with a trailing `/`, e.g. `http://host/signalr/`.
    pub base: Url,
    /// The application's query string (or, after a redirect, the redirect's).
    pub query: Vec<(String, String)>,
    /// `connectionData`: the hubs, as JSON.
    pub connection_data: String,
    pub http: HttpContext,
}

impl Endpoint {
    /// `base + action` with the common query: `clientProtocol`, `transport`, `connectionData`,
    /// `connectionToken` (when known) and the application's parameters.
    pub(crate) fn url(&self, action: &str, transport: Option<&str>, token: Option<&str>) -> Url {
        let mut url = self.base.join(action).unwrap_or_else(|_| self.base.clone());
        {
            let mut pairs = url.query_pairs_mut();
            pairs.clear();
            pairs.append_pair("clientProtocol", CLIENT_PROTOCOL);
            if let Some(transport) = transport {
                pairs.append_pair("transport", transport);
            }
            pairs.append_pair("connectionData", &self.connection_data);
            if let Some(token) = token {
                pairs.append_pair("connectionToken", token);
            }
            for (name, value) in &self.query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    /// A form POST (`application/x-www-form-urlencoded; charset=UTF-8`) with a timeout; the body
    /// of a 200 answer, else a transport error naming `what`.
    pub(crate) async fn post_form(
        &self,
        client: &reqwest::Client,
        url: Url,
        fields: &[(&str, &str)],
        timeout: Duration,
        what: &str,
    ) -> Result<Bytes, Error> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = client
            .post(url)
            .headers(self.http.request_headers())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
            )
            .timeout(timeout)
            .body(body)
            .send();
        let response = request.await.map_err(|err| http_error(what, err))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(Error::with_status(
                Kind::Transport,
                format!("{what}: the server answered status code {status}."),
                status,
            ));
        }
        read_body(response, MAX_RESPONSE_BYTES, what).await
    }

    /// A GET with a timeout; the body of a 200 answer.
    pub(crate) async fn get(
        &self,
        url: Url,
        timeout: Duration,
        what: &str,
    ) -> Result<Bytes, Error> {
        let response = self
            .http
            .client
            .get(url)
            .headers(self.http.request_headers())
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| http_error(what, err))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(Error::with_status(
                Kind::Transport,
                format!("{what}: the server answered status code {status}."),
                status,
            ));
        }
        read_body(response, MAX_RESPONSE_BYTES, what).await
    }
}

/// The largest HTTP response body read (a poll, a `/send` result, negotiate): 16 MiB. A
/// bigger one fails the request instead of growing memory without bound.
pub(crate) const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The largest Server-Sent Event kept while it is incomplete: 16 MiB.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Reads a response body of at most `limit` bytes.
pub(crate) async fn read_body(
    response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Bytes, Error> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| http_error(what, err))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::new(
                Kind::Protocol,
                format!("{what}: the response is longer than {limit} bytes."),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// A connected classic transport.
pub(crate) struct ClassicLink {
    pub kind: ClassicTransport,
    /// WebSockets: the socket's outgoing queue. Server-Sent Events and long polling send with
    /// `POST /send` instead.
    pub ws_sender: Option<mpsc::UnboundedSender<Outgoing>>,
    pub events: mpsc::UnboundedReceiver<TransportEvent>,
    pub stopper: Stopper,
}

/// Opens `kind` (not [`ClassicTransport::Auto`]) with `/connect`, or with `/reconnect` and the
/// cursors when `reconnect` is set. Returns as soon as the transport is open; the init
/// message arrives as an event.
pub(crate) async fn open(
    endpoint: &Endpoint,
    kind: ClassicTransport,
    token: &str,
    cursors: &Arc<Mutex<Cursors>>,
    reconnect: bool,
    connection_timeout: Duration,
    long_poll_delay: Duration,
) -> Result<ClassicLink, Error> {
    let action = if reconnect { "reconnect" } else { "connect" };
    match kind {
        ClassicTransport::WebSockets | ClassicTransport::Auto => {
            let mut url = endpoint.url(action, Some("webSockets"), Some(token));
            if reconnect {
                append_cursors(&mut url, &lock(cursors));
            }
            let connection = websocket::start(&endpoint.http, &url).await?;
            Ok(ClassicLink {
                kind: ClassicTransport::WebSockets,
                ws_sender: Some(connection.sender),
                events: connection.events,
                stopper: connection.stopper,
            })
        }
        ClassicTransport::ServerSentEvents => {
            let mut url = endpoint.url(action, Some("serverSentEvents"), Some(token));
            if reconnect {
                append_cursors(&mut url, &lock(cursors));
            }
            sse(endpoint, url).await
        }
        ClassicTransport::LongPolling => {
            let (events_tx, events) = mpsc::unbounded_channel();
            let stop = CancellationToken::new();
            let (opened_tx, opened_rx) = oneshot::channel();
            let task = tokio::spawn(long_poll(LongPoll {
                endpoint: endpoint.clone(),
                token: token.to_owned(),
                cursors: cursors.clone(),
                reconnect,
                poll_timeout: connection_timeout + Duration::from_secs(10),
                delay: long_poll_delay,
                events: events_tx,
                stop: stop.clone(),
                opened: Some(opened_tx),
            }));
            let stopper = Stopper::new(stop, vec![task]);
            match opened_rx.await {
                Ok(Ok(())) => Ok(ClassicLink {
                    kind: ClassicTransport::LongPolling,
                    ws_sender: None,
                    events,
                    stopper,
                }),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(Error::new(
                    Kind::Transport,
                    "Long polling failed to connect.",
                )),
            }
        }
    }
}

fn append_cursors(url: &mut Url, cursors: &Cursors) {
    let mut pairs = url.query_pairs_mut();
    if let Some(id) = &cursors.message_id {
        pairs.append_pair("messageId", id);
    }
    if let Some(token) = &cursors.groups_token {
        pairs.append_pair("groupsToken", token);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn sse(endpoint: &Endpoint, url: Url) -> Result<ClassicLink, Error> {
    let http = &endpoint.http;
    let request = http
        .client
        .get(http.with_access_token(&url))
        .headers(http.request_headers())
        .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
        .send();
    let response = tokio::time::timeout(crate::transport::HTTP_TIMEOUT, request)
        .await
        .map_err(|_| {
            Error::new(
                Kind::Transport,
                "Server-Sent Events failed to connect: no answer in time.",
            )
        })?
        .map_err(|err| http_error("Server-Sent Events failed to connect", err))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Error::with_status(
            Kind::Transport,
            format!(
                "Server-Sent Events failed to connect: the server answered status code {status}."
            ),
            status,
        ));
    }
    tracing::debug!(url = %url, "classic Server-Sent Events connected");
    let (events_tx, events) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let mut body = response.bytes_stream().boxed();
    let reader = tokio::spawn(async move {
        let mut parser = SseParser::default();
        let mut pending = 0usize;
        let closed = loop {
            tokio::select! {
                () = token.cancelled() => return,
                chunk = body.next() => match chunk {
                    Some(Ok(chunk)) => {
                        pending += chunk.len();
                        let events_done = parser.feed(&chunk);
                        if !events_done.is_empty() {
                            pending = 0;
                        }
                        if pending > MAX_EVENT_BYTES {
                            break Some(Error::new(Kind::Protocol, "A Server-Sent Event is too long."));
                        }
                        for data in events_done {
                            // `data: initialized` opens the stream; clients ignore it.
                            if &data[..] != b"initialized" {
                                let _ = events_tx.send(TransportEvent::Data(data));
                            }
                        }
                    }
                    Some(Err(err)) => break Some(http_error("Server-Sent Events stream failed", err)),
                    None => break Some(Error::new(Kind::Transport, "The Server-Sent Events stream ended.")),
                },
            }
        };
        let _ = events_tx.send(TransportEvent::Closed(closed));
    });
    Ok(ClassicLink {
        kind: ClassicTransport::ServerSentEvents,
        ws_sender: None,
        events,
        stopper: Stopper::new(stop, vec![reader]),
    })
}

struct LongPoll {
    endpoint: Endpoint,
    token: String,
    cursors: Arc<Mutex<Cursors>>,
    reconnect: bool,
    poll_timeout: Duration,
    delay: Duration,
    events: mpsc::UnboundedSender<TransportEvent>,
    stop: CancellationToken,
    opened: Option<oneshot::Sender<Result<(), Error>>>,
}

/// One long-polling request: `/connect`, `/reconnect` or `/poll`, with the cursors in the form.
async fn poll_request(
    lp: &LongPoll,
    action: &str,
    client: &reqwest::Client,
) -> Result<Bytes, Error> {
    let url = lp
        .endpoint
        .url(action, Some("longPolling"), Some(&lp.token));
    let cursors = lock(&lp.cursors).clone();
    let mut fields: Vec<(&str, &str)> = Vec::new();
    if action != "connect" {
        if let Some(id) = &cursors.message_id {
            fields.push(("messageId", id));
        }
        if let Some(token) = &cursors.groups_token {
            fields.push(("groupsToken", token));
        }
    }
    lp.endpoint
        .post_form(client, url, &fields, lp.poll_timeout, "Long polling failed")
        .await
}

/// Delivers one poll's body: the leading spaces (the server's keep-alives while it waited) are
/// dropped; the envelope's cursors are taken before the next poll.
fn deliver(lp: &LongPoll, body: &Bytes) {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else { return };
    let data = body.slice(start..);
    if let Ok(message) = ServerMessage::parse(&data) {
        lock(&lp.cursors).update(&message);
    }
    let _ = lp.events.send(TransportEvent::Data(data));
}

/// The long-polling loop: the first request (`/connect` or `/reconnect`) opens the transport;
/// then `/poll` after each response (waiting the long-poll delay, or `L`). A poll whose socket
/// broke before any answer is sent again once on a new socket, as the Core transport does;
/// a second failure ends the transport.
async fn long_poll(mut lp: LongPoll) {
    let first = if lp.reconnect { "reconnect" } else { "connect" };
    let opened = tokio::select! {
        () = lp.stop.cancelled() => return,
        result = poll_request(&lp, first, &lp.endpoint.http.client) => result,
    };
    match opened {
        Ok(body) => {
            if let Some(opened) = lp.opened.take() {
                let _ = opened.send(Ok(()));
            }
            deliver(&lp, &body);
        }
        Err(err) => {
            if let Some(opened) = lp.opened.take() {
                let _ = opened.send(Err(err));
            }
            return;
        }
    }
    let mut broke = false;
    let closed = loop {
        if !lp.delay.is_zero() {
            tokio::select! {
                () = lp.stop.cancelled() => return,
                () = tokio::time::sleep(lp.delay) => {}
            }
        }
        let client = if broke {
            &lp.endpoint.http.fresh_client
        } else {
            &lp.endpoint.http.client
        };
        let result = tokio::select! {
            () = lp.stop.cancelled() => return,
            result = poll_request(&lp, "poll", client) => result,
        };
        match result {
            Ok(body) => {
                broke = false;
                deliver(&lp, &body);
            }
            Err(err) if !broke && err.status().is_none() => {
                tracing::debug!(error = %err, "long poll broke; polling again on a new socket");
                broke = true;
            }
            Err(err) => break err,
        }
    };
    let _ = lp.events.send(TransportEvent::Closed(Some(closed)));
}

/// `POST /send` (Server-Sent Events, long polling): the invocation in the form field `data`;
/// returns the response body, the hub result.
pub(crate) async fn post_send(
    endpoint: &Endpoint,
    kind: ClassicTransport,
    token: &str,
    data: &str,
) -> Result<Bytes, Error> {
    let url = endpoint.url("send", Some(kind.name()), Some(token));
    endpoint
        .post_form(
            &endpoint.http.client,
            url,
            &[("data", data)],
            crate::transport::HTTP_TIMEOUT,
            "Sending data failed",
        )
        .await
}

/// `POST /abort`: tells the server the client stopped (OnDisconnected with stopCalled). Errors
/// are logged only: the connection is over either way.
pub(crate) async fn abort(
    endpoint: &Endpoint,
    kind: ClassicTransport,
    token: &str,
    timeout: Duration,
) {
    let url = endpoint.url("abort", Some(kind.name()), Some(token));
    match endpoint
        .post_form(&endpoint.http.client, url, &[], timeout, "Abort failed")
        .await
    {
        Ok(_) => tracing::debug!("classic /abort sent"),
        Err(err) => tracing::debug!(error = %err, "classic /abort failed"),
    }
}
