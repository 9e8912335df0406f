//! The HTTP side of an endpoint (docs/protocol.md, "Endpoints", "Negotiate", "Transports"): `POST {hub}/negotiate` and the transports on
//! `{hub}` itself, with ASP.NET's status codes and bodies (docs/protocol.md, "Status codes").

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use signalr_protocol::{
    AvailableTransport, NegotiateRequest, NegotiateResponse, QueryParam, TransferFormat,
    TransportType,
};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthRequest, User, bearer_token};
use crate::auth::{Authenticator, AuthorizationPolicy};
use crate::connection::{Connection, ConnectionManager, ConnectionRequest, Inbound, Outbox};
use crate::hub::HubInner;
use crate::hub_connection::{self, HubInput};
use crate::options::ConnectionOptions;
use crate::raw::{RawConnection, RawHandler};
use crate::serve::ConnectionAbort;
use crate::websocket::{self, WebSocket};

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
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub websocket_message_limit: usize,
}

impl Endpoint {
    pub(crate) fn for_hub(hub: Arc<HubInner>) -> Self {
        let manager = ConnectionManager::new(hub.connection_options.clone());
        hub.lifetime.register_endpoint(&manager);
        Endpoint {
            options: hub.connection_options.clone(),
            authenticator: hub.authenticator.clone(),
            policy: hub.policy.clone(),
            manager,
            // Twice the hub message limit: clients coalesce messages sent at once into one
            // WebSocket message (see HubOptions::maximum_receive_message_size).
            websocket_message_limit: hub
                .options
                .maximum_receive_message_size
                .map_or(usize::MAX, |max| max.saturating_mul(2)),
            application: Application::Hub(hub),
        }
    }
}

type Params = Query<Vec<(String, String)>>;

/// A query parameter as ASP.NET reads it (docs/protocol.md, "Endpoints", see [`QueryParam`]): keys match ignoring ASCII
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

/// 401 with a `WWW-Authenticate` challenge.
fn unauthorized(challenge: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
    )
        .into_response()
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

    /// Records the connection's request and user and marks its application as started;
    /// `false` when it already was (only the first transport request starts it).
    ///
    /// As in ASP.NET, the connection's user is the user of this transport request.
    fn begin(connection: &Connection, request: ConnectionRequest, user: User) -> bool {
        let _ = connection.request.set(Arc::new(request));
        let _ = connection.user.set(user);
        connection.start()
    }

    /// Runs a raw connection's handler on a task of its own; its end closes the connection.
    fn spawn_raw(handler: &RawHandler, connection: &Arc<Connection>, inbound: Inbound) {
        connection.set_raw();
        connection.writer_gate.open();
        let future = handler(RawConnection::new(connection.clone(), inbound));
        let connection = connection.clone();
        tokio::spawn(async move {
            future.await;
            let _ = connection.send(crate::connection::Outgoing::End).await;
        });
    }

    /// Starts the application on the connection's first SSE or long-polling request, on a task
    /// of its own (WebSockets run theirs on the socket's task: [`run_websocket`]).
    fn start_application(
        &self,
        connection: &Arc<Connection>,
        request: ConnectionRequest,
        user: User,
    ) {
        if !Self::begin(connection, request, user) {
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
                    HubInput::Queue(inbound),
                ));
            }
            Application::Raw(handler) => Self::spawn_raw(handler, connection, inbound),
        }
    }

    /// Authenticates the request and applies the hub's authorization policy and connect check
    /// (`HubBuilder::authorize_connect`): 401 for invalid credentials or an anonymous user they
    /// refuse (with `WWW-Authenticate: Bearer`, and `error="invalid_token"` for rejected
    /// credentials, as ASP.NET's JWT handler answers), 403 for an authenticated one.
    ///
    /// `query_token`: whether the `access_token` query parameter counts. Only the requests a
    /// browser cannot put an `Authorization` header on (the WebSocket upgrade and the
    /// Server-Sent-Events GET) may carry the token in the URL; elsewhere it is ignored, so a
    /// token leaked in a URL cannot be replayed on negotiate, sends, polls or DELETE.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        params: &Params,
        query_token: bool,
    ) -> Result<User, Response> {
        self.check_origin(headers)
            .map_err(IntoResponse::into_response)?;
        let user = match &self.authenticator {
            None => User::anonymous(),
            Some(authenticator) => {
                let request = AuthRequest {
                    token: bearer_token(headers, query_token.then_some(params.as_slice())),
                    headers,
                };
                match authenticator.authenticate(request).await {
                    Ok(user) => user.unwrap_or_default(),
                    Err(err) => {
                        tracing::debug!(%err, "authentication failed");
                        return Err(unauthorized(r#"Bearer error="invalid_token""#));
                    }
                }
            }
        };
        let refused = |user: &User| {
            if user.is_authenticated() {
                StatusCode::FORBIDDEN.into_response()
            } else {
                unauthorized("Bearer")
            }
        };
        if self
            .policy
            .as_ref()
            .is_some_and(|policy| !policy.allows(&user))
        {
            return Err(refused(&user));
        }
        // The hub's connect-authorization check (HubBuilder::authorize_connect), refused like
        // the policy.
        if let Application::Hub(hub) = &self.application
            && hub.connect_authorization.is_some()
        {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish();
            if !hub.allows_connect(&user, headers, &query) {
                tracing::debug!("connect authorization refused the request");
                return Err(refused(&user));
            }
        }
        Ok(user)
    }

    /// Refuses (403) a request whose `Origin` header is not among
    /// [`ConnectionOptions::allowed_origins`] (when that list is not empty). Requests without
    /// `Origin` (non-browser clients) pass, as in ASP.NET's `WebSocketOptions.AllowedOrigins`.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), StatusCode> {
        let allowed = &self.options.allowed_origins;
        if allowed.is_empty() {
            return Ok(());
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default();
        if allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return Ok(());
        }
        tracing::debug!(%origin, "request from an origin that is not allowed");
        Err(StatusCode::FORBIDDEN)
    }

    /// Refuses (403) a request on `connection` made by another user than the one the connection
    /// belongs to. Stricter than ASP.NET, which goes on with the connection's first user and
    /// only logs a warning.
    fn check_user(&self, connection: &Connection, user: &User) -> Result<(), StatusCode> {
        match connection.user.get() {
            Some(owner) if !owner.same_identity(user) => {
                tracing::warn!(connection_id = %connection.id, "request by another user than the connection's: refused");
                Err(StatusCode::FORBIDDEN)
            }
            _ => Ok(()),
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
    /// 400 `Connection ID required` or 404 `No Connection with that ID` (docs/protocol.md, "Status codes").
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

/// `POST {hub}/negotiate` (docs/protocol.md, "Negotiate").
async fn negotiate(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    // The connection's user comes from its first transport request (see start_application);
    // here only the hub's authorization policy is applied.
    if let Err(response) = endpoint.authorize(&headers, &params, false).await {
        return response;
    }
    let minimum = endpoint.options.minimum_negotiate_version;
    let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let (version, stateful) = match NegotiateRequest::from_query(pairs, minimum) {
        Ok(request) => (
            request.negotiate_version,
            // Hubs only: the hub protocol's Ack and Sequence messages carry it.
            request.use_stateful_reconnect
                && endpoint.options.allow_stateful_reconnects
                && matches!(endpoint.application, Application::Hub(_)),
        ),
        Err(error) => return axum::Json(NegotiateResponse::error(error)).into_response(),
    };
    let connection = endpoint.manager.create(version);
    if stateful {
        connection.set_stateful_negotiated();
    }
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
        use_stateful_reconnect: stateful,
        ..Default::default()
    })
    .into_response()
}

/// The request data kept for the hub's caller context, copied out of the request: the values
/// hyper parses share the HTTP connection's read buffer (8 KiB), which a clone kept for the
/// connection's lifetime would keep alive.
pub(crate) fn connection_request(parts: &axum::http::request::Parts) -> ConnectionRequest {
    ConnectionRequest::new(
        &parts.headers,
        parts.uri.query().unwrap_or_default(),
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
    )
}

/// `GET {hub}`: WebSocket upgrade, SSE (`Accept: text/event-stream`) or a long poll (docs/protocol.md, "Endpoints").
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
    let wants_sse = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    // Browsers cannot set headers on WebSockets and EventSource: only these may carry the token
    // in the query (docs/protocol.md, "Authentication").
    let user = match endpoint
        .authorize(&parts.headers, &params, is_upgrade || wants_sse)
        .await
    {
        Ok(user) => user,
        Err(response) => return response,
    };
    if is_upgrade {
        if !endpoint.enabled(TransportType::WebSockets) {
            return transport_disabled(TransportType::WebSockets);
        }
        let accepted = match websocket::accept(&mut parts) {
            Ok(accepted) => accepted,
            Err(rejection) => return rejection.into_response(),
        };
        // Without `id` the client skipped negotiation: the connection is made here (docs/protocol.md, "WebSockets").
        let connection = match endpoint.lookup(&params) {
            Ok(connection) => connection,
            Err(LookupError::MissingId) => endpoint.manager.create(1),
            Err(error) => return error.into_response(),
        };
        let info = connection_request(&parts);
        return websocket(endpoint, connection, accepted, info, user);
    }

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
    if let Err(status) = endpoint.check_user(&connection, &user) {
        return status.into_response();
    }
    // The HTTP connection that now carries the server-to-client half (SSE, this poll).
    connection.set_transport_abort(parts.extensions.get::<ConnectionAbort>().cloned());
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
    accepted: websocket::Accepted,
    request: ConnectionRequest,
    user: User,
) -> Response {
    if !connection.bind_transport(TransportType::WebSockets) {
        return text(StatusCode::BAD_REQUEST, CHANGE_TRANSPORT);
    }
    if connection.is_stateful() {
        return resume_websocket(&endpoint, connection, accepted, &user);
    }
    let Ok(outbox) = connection.outbox.clone().try_lock_owned() else {
        return StatusCode::CONFLICT.into_response();
    };
    let (response, upgrade) = accepted.into_parts();
    tokio::spawn(run_websocket(Box::new(WebSocketStart {
        endpoint,
        connection,
        upgrade,
        outbox,
        request,
        user,
    })));
    response
}

/// A WebSocket for a connection that uses stateful reconnect (docs/protocol.md, "Stateful
/// reconnect"): the client resumes after losing its socket, with the same token and no new
/// handshake. The new socket replaces the connection's current one, also when the server has
/// not seen that one fail yet (ASP.NET 10 ends the connection then, and answers 404). 403 when
/// another user than the connection's makes the request.
fn resume_websocket(
    endpoint: &Endpoint,
    connection: Arc<Connection>,
    accepted: websocket::Accepted,
    user: &User,
) -> Response {
    if let Err(status) = endpoint.check_user(&connection, user) {
        return status.into_response();
    }
    let (response, upgrade) = accepted.into_parts();
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await
            && !connection.hand_over(upgraded)
        {
            tracing::debug!(connection_id = %connection.id, "resumed WebSocket arrived after the connection ended");
        }
    });
    response
}

/// What a WebSocket connection's task needs until its application starts, in one allocation:
/// an async task keeps what it captured for its whole life, so the task captures this box
/// alone and frees it when the application starts.
struct WebSocketStart {
    endpoint: Arc<Endpoint>,
    connection: Arc<Connection>,
    upgrade: hyper::upgrade::OnUpgrade,
    outbox: tokio::sync::OwnedMutexGuard<Outbox>,
    request: ConnectionRequest,
    user: User,
}

/// How a WebSocket connection's task goes on once the socket is handed over.
enum WebSocketApplication {
    /// The hub protocol reads and writes the socket on this task.
    Hub(Arc<HubInner>, HubInput),
    /// A raw connection's handler runs on a task of its own; this one moves its messages
    /// between the socket and the connection's queues (boxed: raw connections are rare, and
    /// the task keeps the size of a hub's).
    Raw(BoxFuture<'static, ()>),
}

impl WebSocketStart {
    /// Records the request and user, starts the application and wraps the socket; `None` when
    /// the application already started.
    fn start(self, upgraded: hyper::upgrade::Upgraded) -> Option<WebSocketApplication> {
        let WebSocketStart {
            endpoint,
            connection,
            outbox,
            request,
            user,
            ..
        } = self;
        if !Endpoint::begin(&connection, request, user) {
            return None;
        }
        let limit = endpoint.websocket_message_limit;
        match &endpoint.application {
            Application::Hub(hub) => {
                let socket = WebSocket::new(
                    upgraded,
                    false,
                    connection.clone(),
                    outbox,
                    limit,
                    &endpoint.options,
                );
                Some(WebSocketApplication::Hub(
                    hub.clone(),
                    HubInput::WebSocket(Box::new(socket)),
                ))
            }
            Application::Raw(handler) => {
                let inbound = connection.take_inbound()?;
                Endpoint::spawn_raw(handler, &connection, inbound);
                let socket = WebSocket::new(
                    upgraded,
                    true,
                    connection.clone(),
                    outbox,
                    limit,
                    &endpoint.options,
                );
                Some(WebSocketApplication::Raw(Box::pin(async move {
                    pump_raw(&connection, socket).await;
                })))
            }
        }
    }
}

/// A WebSocket connection's task: waits for hyper to hand over the socket, then runs the
/// application and the socket until both end.
async fn run_websocket(mut start: Box<WebSocketStart>) {
    let connection = start.connection.clone();
    let upgraded = (&mut start.upgrade).await.ok();
    let application = upgraded.and_then(|upgraded| start.start(upgraded));
    if let Some(application) = application {
        match application {
            WebSocketApplication::Hub(hub, input) => {
                hub_connection::run(hub, connection.clone(), input).await;
            }
            WebSocketApplication::Raw(pump) => pump.await,
        }
    }
    connection.dispose();
}

/// Moves a raw connection's messages from the socket into its incoming queue (one message per
/// WebSocket message) while the socket writes what the handler queues, until the socket closes.
async fn pump_raw(connection: &Arc<Connection>, mut socket: WebSocket) {
    let mut buf = bytes::BytesMut::new();
    let mut scratch = bytes::BytesMut::new();
    let mut reading = true;
    'read: loop {
        let input = tokio::select! {
            input = socket.next(&mut buf, reading) => input,
            () = connection.closed.cancelled() => break,
        };
        match input {
            websocket::Input::Data { .. } => {
                let mut taken = 0;
                for (end, _binary) in socket.take_message_ends() {
                    let message = buf.split_to(end - taken).freeze();
                    taken = end;
                    let delivered = tokio::select! {
                        biased;
                        delivered = connection.receive(message) => delivered,
                        _ = socket.next(&mut scratch, false) => false,
                    };
                    if !delivered {
                        break 'read;
                    }
                }
            }
            websocket::Input::TooLarge => {
                reading = false;
                tokio::select! {
                    biased;
                    () = connection.receive_too_large() => {}
                    _ = socket.next(&mut scratch, false) => break,
                }
            }
            websocket::Input::Closed => break,
        }
    }
    socket.finish().await;
}

/// Removes the connection when an SSE response body is dropped (client gone or stream ended).
struct DisposeOnDrop(Arc<Connection>);

impl Drop for DisposeOnDrop {
    fn drop(&mut self) {
        self.0.dispose();
    }
}

/// Formats `payload` as one SSE event (docs/protocol.md, "Server-Sent Events"): a `data:` line per `\n`-separated line, trailing
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
            let batch = tokio::select! {
                batch = state.outbox.next_batch() => batch?,
                () = state.connection.closed.cancelled() => return None,
            };
            if batch.end && batch.data.is_empty() {
                return None;
            }
            if batch.data.is_empty() {
                continue;
            }
            state.connection.touch_write();
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

/// One long-polling GET (docs/protocol.md, "Long polling").
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
    if let Ok(mut current) = connection.current_poll.lock()
        && let Some((_, previous)) = current.replace((poll_id, mine.clone()))
    {
        previous.cancel();
    }
    let response = async {
        let mut outbox = tokio::select! {
            outbox = connection.outbox.lock() => outbox,
            () = mine.cancelled() => return poll_response(StatusCode::NO_CONTENT, Bytes::new()),
            () = connection.closed.cancelled() => return poll_response(StatusCode::NO_CONTENT, Bytes::new()),
        };
        tokio::select! {
            batch = outbox.next_batch() => {
                if batch.as_ref().is_none_or(|batch| batch.end) {
                    // The application ended and this poll takes the last of what it wrote.
                    connection.end_delivered.store(true, Ordering::Release);
                    connection.transport_ended();
                }
                match batch {
                    Some(batch) if !batch.data.is_empty() => {
                        connection.touch_write();
                        poll_response(StatusCode::OK, batch.data.clone())
                    }
                    _ => poll_response(StatusCode::NO_CONTENT, Bytes::new()),
                }
            }
            () = tokio::time::sleep(endpoint.options.long_polling_timeout) => {
                poll_response(StatusCode::OK, Bytes::new())
            }
            () = mine.cancelled() => poll_response(StatusCode::NO_CONTENT, Bytes::new()),
            () = connection.closed.cancelled() => poll_response(StatusCode::NO_CONTENT, Bytes::new()),
        }
    }
    .await;
    if let Ok(mut current) = connection.current_poll.lock()
        && current.as_ref().is_some_and(|(id, _)| *id == poll_id)
    {
        *current = None;
    }
    response
}

/// `POST {hub}?id=`: client-to-server data for SSE and long polling (docs/protocol.md, "Sending with POST").
///
/// The body is streamed into the connection's incoming queue chunk by chunk as the hub takes
/// it (never more than [`ConnectionOptions::incoming_buffer_size`] plus one chunk is held), one
/// POST at a time per connection: a concurrent one waits for the previous one to be read.
async fn send(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(params) = Params::try_from_uri(&parts.uri) else {
        return text(StatusCode::BAD_REQUEST, ID_REQUIRED);
    };
    let user = match endpoint.authorize(&parts.headers, &params, false).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let connection = match endpoint.lookup(&params) {
        Ok(connection) => connection,
        Err(error) => return error.into_response(),
    };
    if let Err(status) = endpoint.check_user(&connection, &user) {
        return status.into_response();
    }
    if connection.transport() == Some(TransportType::WebSockets) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST requests are not allowed for WebSocket connections.",
        );
    }
    // A second POST waits for the first, as in ASP.NET (no 409); a stalled body is cut by the
    // serving recipe's minimum data rate.
    let _sending = tokio::select! {
        guard = connection.send_lock.lock() => guard,
        () = connection.closed.cancelled() => return text(StatusCode::NOT_FOUND, NO_CONNECTION),
    };
    let mut body = body.into_data_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            // The body could not be read (client gone, too slow, malformed).
            return text(StatusCode::BAD_REQUEST, "");
        };
        if !chunk.is_empty() && !connection.receive(chunk).await {
            return text(StatusCode::NOT_FOUND, NO_CONNECTION);
        }
    }
    text(StatusCode::OK, "")
}

/// `DELETE {hub}?id=`: ends a long-polling connection (docs/protocol.md, "Long polling"); answers 202.
async fn terminate(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let user = match endpoint.authorize(&headers, &params, false).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let connection = match endpoint.lookup(&params) {
        Ok(connection) => connection,
        Err(error) => return error.into_response(),
    };
    if let Err(status) = endpoint.check_user(&connection, &user) {
        return status.into_response();
    }
    if connection.transport() != Some(TransportType::LongPolling) {
        return text(
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint.",
        );
    }
    // A DELETE is the client stopping on purpose (on_disconnected's stop_called).
    if let Application::Hub(hub) = &endpoint.application
        && let Some(context) = hub.lifetime.connection(&connection.id)
    {
        context.set_stop_called();
    }
    connection.dispose();
    text(StatusCode::ACCEPTED, "")
}
