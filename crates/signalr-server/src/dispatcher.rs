//! The HTTP side of an endpoint (reference §A1–§A3): `POST {hub}/negotiate` and the transports on
//! `{hub}` itself, with ASP.NET's status codes and bodies (§A3.1).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use signalr_protocol::{
    AvailableTransport, NegotiateRequest, NegotiateResponse, QueryParam, TransferFormat,
    TransportType,
};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthRequest, User, bearer_token};
use crate::auth::{Authenticator, AuthorizationPolicy};
use crate::connection::{Connection, ConnectionManager, ConnectionRequest, Outbox};
use crate::hub::HubInner;
use crate::hub_connection;
use crate::options::ConnectionOptions;
use crate::raw::{RawConnection, RawHandler};

/// What runs on the connections of an endpoint.
pub(crate) enum Application {
    /// The hub protocol and a hub.
    Hub(Arc<HubInner>),
    /// A raw connection handler (no hub protocol).
    Raw(RawHandler),
}

/// Shared state of one mounted endpoint.
pub(crate) struct Endpoint {
    pub application: Application,
    pub options: ConnectionOptions,
    pub authenticator: Option<Arc<dyn Authenticator>>,
    pub policy: Option<AuthorizationPolicy>,
    pub manager: Arc<ConnectionManager>,
}

impl Endpoint {
    pub(crate) fn for_hub(hub: Arc<HubInner>) -> Self {
        Endpoint {
            options: hub.connection_options.clone(),
            authenticator: hub.authenticator.clone(),
            policy: hub.policy.clone(),
            manager: ConnectionManager::new(hub.connection_options.clone()),
            application: Application::Hub(hub),
        }
    }
}

type Params = Query<Vec<(String, String)>>;

/// A query parameter as ASP.NET reads it (§A1, see [`QueryParam`]): keys match ignoring ASCII
/// case, repeated values are joined with `,` (empty ones left out, so `id=&id=T` is `T` and
/// `id=T&id=T` is `T,T`). `None` when absent or a single empty value (ASP.NET
/// `StringValues.IsNullOrEmpty`); two empty values are the empty text.
fn param<'a>(params: &'a Params, name: &str) -> Option<Cow<'a, str>> {
    let param = QueryParam::find(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), name);
    if param.is_null_or_empty() {
        None
    } else {
        param.value()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

fn transport_disabled(transport: TransportType) -> Response {
    let body = format!(
        "{} transport not supported by this end point type",
        transport.name()
    );
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        body,
    )
        .into_response()
}

const NO_CONNECTION: &str = "No Connection with that ID";
const ID_REQUIRED: &str = "Connection ID required";
const CHANGE_TRANSPORT: &str = "Cannot change transports mid-connection";

pub(crate) fn router(endpoint: Arc<Endpoint>) -> Router {
    Router::new()
        .route("/negotiate", post(negotiate))
        .route("/", get(receive).post(send).delete(terminate))
        .with_state(endpoint)
}

impl Endpoint {
    fn enabled(&self, transport: TransportType) -> bool {
        self.options.transports.contains(&transport)
    }

    /// Starts the application on the connection's first transport request.
    ///
    /// As in ASP.NET, the connection's user is the user of this transport request.
    fn start_application(
        &self,
        connection: &Arc<Connection>,
        request: ConnectionRequest,
        user: User,
    ) {
        let _ = connection.request.set(request);
        let _ = connection.user.set(user);
        if !connection.start() {
            return;
        }
        let Some(inbound) = connection.take_inbound() else {
            return;
        };
        match &self.application {
            Application::Hub(hub) => {
                tokio::spawn(hub_connection::run(
                    hub.clone(),
                    connection.clone(),
                    inbound,
                ));
            }
            Application::Raw(handler) => {
                connection.set_raw();
                let future = handler(RawConnection::new(connection.clone(), inbound));
                let connection = connection.clone();
                tokio::spawn(async move {
                    future.await;
                    let _ = connection.send(crate::connection::Outgoing::End).await;
                });
            }
        }
    }

    /// Authenticates the request and applies the hub's authorization policy: 401 for invalid
    /// credentials or an anonymous user the policy refuses, 403 for an authenticated one.
    async fn authorize(&self, headers: &HeaderMap, params: &Params) -> Result<User, Response> {
        let user = match &self.authenticator {
            None => User::anonymous(),
            Some(authenticator) => {
                let request = AuthRequest {
                    token: bearer_token(headers, params),
                    headers,
                };
                match authenticator.authenticate(request).await {
                    Ok(user) => user.unwrap_or_default(),
                    Err(err) => {
                        tracing::debug!(%err, "authentication failed");
                        return Err(StatusCode::UNAUTHORIZED.into_response());
                    }
                }
            }
        };
        match &self.policy {
            Some(policy) if !policy.allows(&user) => Err(if user.is_authenticated() {
                StatusCode::FORBIDDEN.into_response()
            } else {
                StatusCode::UNAUTHORIZED.into_response()
            }),
            _ => Ok(user),
        }
    }

    /// Looks the `id` query parameter up.
    fn lookup(&self, params: &Params) -> Result<Arc<Connection>, LookupError> {
        let token = param(params, "id").ok_or(LookupError::MissingId)?;
        self.manager.get(&token).ok_or(LookupError::UnknownId)
    }
}

/// Why a request's `id` names no connection.
enum LookupError {
    MissingId,
    UnknownId,
}

impl IntoResponse for LookupError {
    /// 400 `Connection ID required` or 404 `No Connection with that ID` (§A3.1).
    fn into_response(self) -> Response {
        match self {
            LookupError::MissingId => text(StatusCode::BAD_REQUEST, ID_REQUIRED),
            LookupError::UnknownId => text(StatusCode::NOT_FOUND, NO_CONNECTION),
        }
    }
}

fn transfer_formats(transport: TransportType) -> Vec<TransferFormat> {
    match transport {
        TransportType::ServerSentEvents => vec![TransferFormat::Text],
        _ => vec![TransferFormat::Text, TransferFormat::Binary],
    }
}

/// `POST {hub}/negotiate` (§A2).
async fn negotiate(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    // The connection's user comes from its first transport request (see start_application);
    // here only the hub's authorization policy is applied.
    if let Err(response) = endpoint.authorize(&headers, &params).await {
        return response;
    }
    let minimum = endpoint.options.minimum_negotiate_version;
    let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let version = match NegotiateRequest::from_query(pairs, minimum) {
        Ok(request) => request.negotiate_version,
        Err(error) => return axum::Json(NegotiateResponse::error(error)).into_response(),
    };
    let connection = endpoint.manager.create(version);
    let transports = endpoint
        .options
        .transports
        .iter()
        .map(|&transport| AvailableTransport {
            transport,
            transfer_formats: transfer_formats(transport),
        })
        .collect();
    axum::Json(NegotiateResponse {
        negotiate_version: Some(version),
        connection_id: Some(connection.id.clone()),
        connection_token: (version >= 1).then(|| connection.token.clone()),
        available_transports: Some(transports),
        ..Default::default()
    })
    .into_response()
}

/// The request data kept for the hub's caller context.
fn connection_request(parts: &axum::http::request::Parts) -> ConnectionRequest {
    ConnectionRequest {
        headers: parts.headers.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        remote_addr: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    }
}

/// `GET {hub}`: WebSocket upgrade, SSE (`Accept: text/event-stream`) or a long poll (§A1).
async fn receive(
    State(endpoint): State<Arc<Endpoint>>,
    params: Params,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let user = match endpoint.authorize(&parts.headers, &params).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    if is_upgrade {
        if !endpoint.enabled(TransportType::WebSockets) {
            return transport_disabled(TransportType::WebSockets);
        }
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        // Without `id` the client skipped negotiation: the connection is made here (§A3.2).
        let connection = match endpoint.lookup(&params) {
            Ok(connection) => connection,
            Err(LookupError::MissingId) => endpoint.manager.create(1),
            Err(error) => return error.into_response(),
        };
        let info = connection_request(&parts);
        return websocket(endpoint, connection, upgrade, info, user);
    }

    let wants_sse = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let transport = if wants_sse {
        TransportType::ServerSentEvents
    } else {
        TransportType::LongPolling
    };
    // As in ASP.NET, the `id` is checked before whether the transport is enabled.
    let connection = match endpoint.lookup(&params) {
        Ok(connection) => connection,
        Err(error) => return error.into_response(),
    };
    if !endpoint.enabled(transport) {
        return transport_disabled(transport);
    }
    if !connection.bind_transport(transport) {
        return text(StatusCode::BAD_REQUEST, CHANGE_TRANSPORT);
    }
    match transport {
        TransportType::ServerSentEvents => {
            let info = connection_request(&parts);
            server_sent_events(&endpoint, connection, info, user)
        }
        _ => {
            // Only the first poll starts the application; later polls need no request data.
            let start = (!connection.is_started()).then(|| (connection_request(&parts), user));
            long_poll(&endpoint, connection, start).await
        }
    }
}

fn websocket(
    endpoint: Arc<Endpoint>,
    connection: Arc<Connection>,
    upgrade: WebSocketUpgrade,
    info: ConnectionRequest,
    user: User,
) -> Response {
    if !connection.bind_transport(TransportType::WebSockets) {
        return text(StatusCode::BAD_REQUEST, CHANGE_TRANSPORT);
    }
    let Ok(outbox) = connection.outbox.clone().try_lock_owned() else {
        return StatusCode::CONFLICT.into_response();
    };
    let upgrade = upgrade.read_buffer_size(endpoint.options.websocket_read_buffer_size.max(1024));
    upgrade.on_upgrade(move |socket| async move {
        let _active = connection.begin_request();
        endpoint.start_application(&connection, info, user);
        run_websocket(&connection, outbox, socket).await;
        connection.dispose();
    })
}

async fn run_websocket(
    connection: &Arc<Connection>,
    mut outbox: tokio::sync::OwnedMutexGuard<Outbox>,
    socket: WebSocket,
) {
    let (mut sink, mut stream) = socket.split();
    // The reader runs as its own task: in one `select!` with the writer, every writer wake-up
    // would poll the socket for reading too (a wasted read per outgoing batch).
    let reader_connection = connection.clone();
    let mut reader = tokio::spawn(async move {
        let connection = reader_connection;
        while let Some(Ok(message)) = stream.next().await {
            let bytes = match message {
                Message::Text(text) => {
                    connection.received_frame(false);
                    Bytes::from(text)
                }
                Message::Binary(bytes) => {
                    connection.received_frame(true);
                    bytes
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if !connection.receive(bytes).await {
                break;
            }
        }
    });
    let writer = async {
        while let Some(batch) = outbox.next_batch(connection.protocol_cell()).await {
            if !batch.data.is_empty() {
                let frame = if connection.binary_frames() {
                    Message::Binary(batch.data)
                } else {
                    match Utf8Bytes::try_from(batch.data.clone()) {
                        Ok(text) => Message::Text(text),
                        // Only raw connections can produce non-UTF-8 data in text mode.
                        Err(_) => Message::Binary(batch.data),
                    }
                };
                if sink.send(frame).await.is_err() {
                    return;
                }
                connection.touch_write(std::time::Instant::now());
            }
            if batch.end {
                let close = CloseFrame {
                    code: axum::extract::ws::close_code::NORMAL,
                    reason: Utf8Bytes::from_static(""),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
                return;
            }
        }
    };
    tokio::select! {
        _ = &mut reader => {}
        () = writer => {}
        () = connection.closed.cancelled() => {}
    }
    reader.abort();
}

/// Removes the connection when an SSE response body is dropped (client gone or stream ended).
struct DisposeOnDrop(Arc<Connection>);

impl Drop for DisposeOnDrop {
    fn drop(&mut self) {
        self.0.dispose();
    }
}

/// Formats `payload` as one SSE event (§A3.4): a `data:` line per `\n`-separated line, trailing
/// `\r` removed, ended by an empty line.
fn sse_event(payload: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(line);
        event.extend_from_slice(b"\r\n");
    }
    event.extend_from_slice(b"\r\n");
    Bytes::from(event)
}

fn server_sent_events(
    endpoint: &Endpoint,
    connection: Arc<Connection>,
    info: ConnectionRequest,
    user: User,
) -> Response {
    let Ok(outbox) = connection.outbox.clone().try_lock_owned() else {
        return StatusCode::CONFLICT.into_response();
    };
    let active = connection.begin_request();
    endpoint.start_application(&connection, info, user);
    struct SseState {
        outbox: tokio::sync::OwnedMutexGuard<Outbox>,
        connection: Arc<Connection>,
        _active: crate::connection::ActiveRequest,
        _dispose: DisposeOnDrop,
        first: bool,
    }
    let state = SseState {
        outbox,
        _dispose: DisposeOnDrop(connection.clone()),
        connection,
        _active: active,
        first: true,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if state.first {
            state.first = false;
            return Some((Ok::<_, std::io::Error>(Bytes::from_static(b":\r\n")), state));
        }
        loop {
            let connection = state.connection.clone();
            let batch = tokio::select! {
                batch = state.outbox.next_batch(connection.protocol_cell()) => batch?,
                () = state.connection.closed.cancelled() => return None,
            };
            if batch.end && batch.data.is_empty() {
                return None;
            }
            if batch.data.is_empty() {
                continue;
            }
            state.connection.touch_write(std::time::Instant::now());
            return Some((Ok(sse_event(&batch.data)), state));
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache,no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn poll_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if status == StatusCode::OK {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    response
}

/// One long-polling GET (§A3.5).
async fn long_poll(
    endpoint: &Endpoint,
    connection: Arc<Connection>,
    start: Option<(ConnectionRequest, User)>,
) -> Response {
    let _active = connection.begin_request();
    if let Some((info, user)) = start {
        // The first poll starts the application and returns at once.
        endpoint.start_application(&connection, info, user);
        return poll_response(StatusCode::OK, Bytes::new());
    }
    static POLLS: AtomicU64 = AtomicU64::new(0);
    let poll_id = POLLS.fetch_add(1, Ordering::Relaxed);
    let mine = CancellationToken::new();
    if let Ok(mut current) = connection.current_poll.lock() {
        if let Some((_, previous)) = current.replace((poll_id, mine.clone())) {
            previous.cancel();
        }
    }
    let response = async {
        let mut outbox = tokio::select! {
            outbox = connection.outbox.lock() => outbox,
            () = mine.cancelled() => return poll_response(StatusCode::NO_CONTENT, Bytes::new()),
            () = connection.closed.cancelled() => return poll_response(StatusCode::NO_CONTENT, Bytes::new()),
        };
        tokio::select! {
            batch = outbox.next_batch(connection.protocol_cell()) => match batch {
                Some(batch) if !batch.data.is_empty() => {
                    connection.touch_write(std::time::Instant::now());
                    poll_response(StatusCode::OK, batch.data)
                }
                _ => poll_response(StatusCode::NO_CONTENT, Bytes::new()),
            },
            () = tokio::time::sleep(endpoint.options.long_polling_timeout) => {
                poll_response(StatusCode::OK, Bytes::new())
            }
            () = mine.cancelled() => poll_response(StatusCode::NO_CONTENT, Bytes::new()),
            () = connection.closed.cancelled() => poll_response(StatusCode::NO_CONTENT, Bytes::new()),
        }
    }
    .await;
    if let Ok(mut current) = connection.current_poll.lock() {
        if current.as_ref().is_some_and(|(id, _)| *id == poll_id) {
            *current = None;
        }
    }
    response
}

/// `POST {hub}?id=`: client-to-server data for SSE and long polling (§A3.3).
async fn send(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    params: Params,
    body: Bytes,
) -> Response {
    if let Err(response) = endpoint.authorize(&headers, &params).await {
        return response;
    }
    let connection = match endpoint.lookup(&params) {
        Ok(connection) => connection,
        Err(error) => return error.into_response(),
    };
    if connection.transport() == Some(TransportType::WebSockets) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST requests are not allowed for WebSocket connections.",
        );
    }
    if !connection.receive(body).await {
        return text(StatusCode::NOT_FOUND, NO_CONNECTION);
    }
    text(StatusCode::OK, "")
}

/// `DELETE {hub}?id=`: ends a long-polling connection (§A3.5); answers 202.
async fn terminate(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    if let Err(response) = endpoint.authorize(&headers, &params).await {
        return response;
    }
    let connection = match endpoint.lookup(&params) {
        Ok(connection) => connection,
        Err(error) => return error.into_response(),
    };
    if connection.transport() != Some(TransportType::LongPolling) {
        return text(
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint.",
        );
    }
    connection.dispose();
    text(StatusCode::ACCEPTED, "")
}
