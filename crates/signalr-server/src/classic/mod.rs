//! The classic ASP.NET SignalR 2.x front door: the jQuery `signalr` 2.x client and the .NET
//! `Microsoft.AspNet.SignalR.Client` 2.x call the same hubs as ASP.NET Core clients.
//!
//! Mount it with [`classic_router`] (usually at `/signalr`). The endpoints are those of a
//! SignalR 2.4 server (`negotiate`, `connect`, `reconnect`, `start`, `send`, `poll`, `abort`,
//! `ping`, and the generated JavaScript proxy at `hubs` and `js`), recognised by the last path
//! segment ignoring case, with its status codes and bodies. See `docs/classic.md` in the
//! repository for the wire format and the differences from SignalR 2.4 we keep on purpose.

mod connection;
mod invoke;
mod options;
pub(crate) mod proxy;
pub(crate) mod token;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use signalr_protocol::TransportType;
use signalr_protocol::classic::{self, NegotiateResponse};
use tokio_util::sync::CancellationToken;

pub use options::ClassicOptions;

use crate::auth::{AuthRequest, User, bearer_token};
use crate::connection::ConnectionRequest;
use crate::context::{ConnectionContext, ConnectionInfo, HubCallerContext};
use crate::dispatcher::connection_request;
use crate::filter::{NextConnected, NextDisconnected, NextReconnected};
use crate::hub::{Hub, HubInner};
use connection::{ClassicClient, ClassicConnection, Outbox, Subscription};
use token::TokenProtector;

/// One registered hub of a classic endpoint.
struct RegisteredHub {
    name: Arc<str>,
    hub: Arc<HubInner>,
}

/// Shared state of one mounted classic endpoint.
pub(crate) struct ClassicEndpoint {
    hubs: Vec<RegisteredHub>,
    pub(crate) options: ClassicOptions,
    tokens: Arc<TokenProtector>,
    /// Distinguishes this server run's cursors from those of earlier runs.
    epoch: u64,
    connections: Mutex<HashMap<String, Arc<ClassicConnection>>>,
    sweeper: OnceLock<()>,
}

/// The axum [`Router`] serving `hubs` to classic SignalR 2.x clients, with
/// [`ClassicOptions::default`]. Nest it where classic clients expect it, usually `/signalr`:
///
/// ```
/// use signalr_server::{Hub, HubCallerContext, HubError, classic_router};
///
/// let chat = Hub::builder()
///     .name("ChatHub")
///     .method("Send", |caller: HubCallerContext, name: String, message: String| async move {
///         caller.clients().all().send("addMessage", (name, message)).await?;
///         Ok::<_, HubError>(())
///     })
///     .build();
/// // Core clients at /chat, jQuery and .NET classic clients at /signalr, one hub.
/// let app: axum::Router = axum::Router::new()
///     .nest("/chat", chat.router())
///     .nest("/signalr", classic_router([&chat]));
/// # drop(app);
/// ```
///
/// Core and classic clients of a hub are one set of connections, groups and users: a Core
/// client's `clients().all()` reaches the classic clients too, and
/// [`Hub::context`](crate::Hub::context) reaches both.
///
/// # Panics
/// When a hub has no name ([`HubBuilder::name`](crate::HubBuilder::name)) or two hubs have the
/// same name ignoring case: classic clients address hubs by name.
pub fn classic_router<'a>(hubs: impl IntoIterator<Item = &'a Hub>) -> Router {
    classic_router_with(ClassicOptions::default(), hubs)
}

/// [`classic_router`] with options.
///
/// # Panics
/// As [`classic_router`].
pub fn classic_router_with<'a>(
    options: ClassicOptions,
    hubs: impl IntoIterator<Item = &'a Hub>,
) -> Router {
    let mut registered: Vec<RegisteredHub> = Vec::new();
    for hub in hubs {
        let name = hub
            .inner
            .name
            .clone()
            .expect("classic_router: every hub needs a name (HubBuilder::name), classic clients address hubs by name");
        assert!(
            !registered
                .iter()
                .any(|r| r.name.eq_ignore_ascii_case(&name)),
            "classic_router: two hubs are named '{name}' (names are compared ignoring case)"
        );
        registered.push(RegisteredHub {
            name: name.into(),
            hub: hub.inner.clone(),
        });
    }
    let tokens = Arc::new(match options.token_keys.as_deref() {
        Some([current, previous @ ..]) => {
            TokenProtector::with_keys(*current, previous.iter().copied())
        }
        _ => TokenProtector::new(),
    });
    let endpoint = Arc::new(ClassicEndpoint {
        hubs: registered,
        options,
        tokens,
        epoch: u64::from(rand::random::<u32>()),
        connections: Mutex::new(HashMap::new()),
        sweeper: OnceLock::new(),
    });
    Router::new().fallback(handle).with_state(endpoint)
}

/// The query of a request, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(uri: &axum::http::Uri) -> Self {
        Query(
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// A parameter as the classic server reads it (key ignoring case, repeats joined with `,`).
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        classic::query_value(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())), name)
            .map(|v| v.into_owned())
    }
}

/// Responses, with the header every classic response carries.
pub(crate) fn respond(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Body,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

pub(crate) const JSON: &str = "application/json; charset=UTF-8";

fn json(body: impl Into<Body>) -> Response {
    respond(StatusCode::OK, Some(JSON), body.into())
}

/// 400 with a text body and no content type, as SignalR 2.4 answers protocol errors.
fn bad_request(text: &'static str) -> Response {
    respond(StatusCode::BAD_REQUEST, None, Body::from(text))
}

/// The real server's answer to a request it cannot make sense of (an unknown hub, malformed
/// data): 500 with an empty body.
pub(crate) fn server_error() -> Response {
    respond(StatusCode::INTERNAL_SERVER_ERROR, None, Body::empty())
}

/// A refused request: its status code with an empty body, as SignalR 2.4 answers them.
struct Refusal(StatusCode);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        respond(self.0, None, Body::empty())
    }
}

const UNKNOWN_TRANSPORT: &str = "Protocol error: Unknown transport.";
const MISSING_TOKEN: &str = "Protocol error: Missing connection token.";
const BAD_TOKEN: &str = "The ConnectionId is in the incorrect format.";
const USER_CHANGED: &str = "Unrecognized user identity. The user identity cannot change during an active SignalR connection.";

/// Every classic request: routed by its last path segment, ignoring case.
async fn handle(
    State(endpoint): State<Arc<ClassicEndpoint>>,
    OriginalUri(original): OriginalUri,
    request: Request,
) -> Response {
    let action = request
        .uri()
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut response = endpoint.route(&action, original, request).await;
    // SignalR 2.4 marks every answer it writes itself; its 500s come from the host, unmarked.
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        response.headers_mut().insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// What a transport request asks for, checked.
pub(crate) struct Checked {
    pub transport: TransportType,
    pub connection_id: String,
    pub user: User,
    pub hubs: Vec<usize>,
    /// Hubs the client named that the user may not use.
    pub refused: Vec<String>,
}

impl ClassicEndpoint {
    async fn route(
        self: &Arc<Self>,
        action: &str,
        original: axum::http::Uri,
        request: Request,
    ) -> Response {
        let query = Query::parse(request.uri());
        match action {
            "negotiate" => self.negotiate(&original, request.headers(), &query).await,
            "ping" => json(classic::PONG_RESPONSE),
            "hubs" | "js" if self.options.enable_javascript_proxies => {
                self.proxy(&original, &query)
            }
            "connect" | "reconnect" | "start" | "send" | "abort" => {
                self.transport_request(action, request, query).await
            }
            // Like SignalR 2.4, any other action is a poll.
            _ => self.transport_request("poll", request, query).await,
        }
    }

    fn start_sweeper(self: &Arc<Self>) {
        self.sweeper
            .get_or_init(|| crate::connection::every_second(self, |endpoint| endpoint.sweep()));
    }

    /// Ends connections that have had no transport for longer than the disconnect timeout, and
    /// those hub code closed.
    fn sweep(self: &Arc<Self>) {
        let now = Instant::now();
        let timeout = self.options.disconnect_timeout;
        let expired: Vec<Arc<ClassicConnection>> = match self.connections.lock() {
            Ok(map) => map
                .values()
                .filter(|c| {
                    c.outbox.closed_by_server()
                        || c.detached_for(now).is_some_and(|idle| idle > timeout)
                })
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for connection in expired {
            tracing::debug!(connection_id = %connection.id, "classic connection ends (disconnect timeout or closed by the hub)");
            // Each on its own task: a slow on_disconnected does not hold up the others.
            let endpoint = self.clone();
            tokio::spawn(async move { endpoint.end(&connection, false).await });
        }
    }

    /// The registered hub named `name` (ignoring case).
    fn hub_index(&self, name: &str) -> Option<usize> {
        self.hubs
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(name))
    }

    /// The registered name of hub `name` (ignoring case).
    pub(crate) fn hub_display_name(&self, name: &str) -> Option<&str> {
        self.hub_index(name).map(|i| self.hubs[i].name.as_ref())
    }

    /// Authenticates a request with the first of the hubs that has an authenticator.
    async fn authenticate(
        &self,
        hubs: &[usize],
        headers: &HeaderMap,
        query: &Query,
    ) -> Result<User, Response> {
        let authenticator = hubs
            .iter()
            .copied()
            .chain(0..self.hubs.len())
            .find_map(|i| self.hubs[i].hub.authenticator.clone());
        let Some(authenticator) = authenticator else {
            return Ok(User::anonymous());
        };
        let request = AuthRequest {
            token: bearer_token(headers, Some(&query.0)),
            headers,
        };
        match authenticator.authenticate(request).await {
            Ok(user) => Ok(user.unwrap_or_default()),
            Err(err) => {
                tracing::debug!(%err, "classic authentication failed");
                Err(respond(StatusCode::UNAUTHORIZED, None, Body::empty()))
            }
        }
    }

    /// Reads `connectionData`: the registered hubs named (500 for a malformed list, an unknown
    /// hub or a duplicate, as the real server).
    fn requested_hubs(&self, query: &Query) -> Result<Vec<usize>, Refusal> {
        let text = query.get("connectionData").unwrap_or_default();
        let names = classic::parse_connection_data(&text)
            .map_err(|_| Refusal(StatusCode::INTERNAL_SERVER_ERROR))?;
        let mut hubs = Vec::with_capacity(names.len());
        for name in names {
            let index = self.hub_index(&name).ok_or_else(|| {
                tracing::debug!(hub = %name, "classic request names an unknown hub");
                Refusal(StatusCode::INTERNAL_SERVER_ERROR)
            })?;
            if hubs.contains(&index) {
                return Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR));
            }
            hubs.push(index);
        }
        Ok(hubs)
    }

    /// Splits `hubs` into those `user` may connect to and the names of the others; refuses the
    /// request (401 anonymous, 403 authenticated) when it names hubs and may use none of them.
    fn authorize(
        &self,
        hubs: &[usize],
        user: &User,
        headers: &HeaderMap,
        query: &str,
    ) -> Result<(Vec<usize>, Vec<String>), Refusal> {
        let (allowed, refused): (Vec<usize>, Vec<usize>) = hubs.iter().partition(|&&i| {
            let hub = &self.hubs[i].hub;
            hub.policy.as_ref().is_none_or(|p| p.allows(user))
                && hub.allows_connect(user, headers, query)
        });
        if !hubs.is_empty() && allowed.is_empty() {
            let status = if user.is_authenticated() {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            return Err(Refusal(status));
        }
        let refused = refused
            .iter()
            .map(|&i| self.hubs[i].name.to_string())
            .collect();
        Ok((allowed, refused))
    }

    /// `GET /negotiate`.
    async fn negotiate(
        self: &Arc<Self>,
        original: &axum::http::Uri,
        headers: &HeaderMap,
        query: &Query,
    ) -> Response {
        let hubs = match self.requested_hubs(query).map_err(Refusal::into_response) {
            Ok(hubs) => hubs,
            Err(response) => return response,
        };
        let user = match self.authenticate(&hubs, headers, query).await {
            Ok(user) => user,
            Err(response) => return response,
        };
        let raw_query = original.query().unwrap_or_default();
        if let Err(response) = self
            .authorize(&hubs, &user, headers, raw_query)
            .map_err(Refusal::into_response)
        {
            return response;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let url = original.path().trim_end_matches('/');
        let url = url.strip_suffix("/negotiate").unwrap_or(url);
        let options = &self.options;
        let transports = &options.transports;
        let response = NegotiateResponse {
            url: url.to_owned(),
            connection_token: self.tokens.protect_connection_token(&id, &user_name(&user)),
            connection_id: id,
            keep_alive_timeout: options.keep_alive.map(|k| (k * 2).as_secs_f64()),
            disconnect_timeout: options.disconnect_timeout.as_secs_f64(),
            connection_timeout: options.connection_timeout.as_secs_f64(),
            try_web_sockets: transports.contains(&TransportType::WebSockets),
            protocol_version: classic::protocol_version(query.get("clientProtocol").as_deref()),
            transport_connect_timeout: options.transport_connect_timeout.as_secs_f64(),
            long_poll_delay: options.long_poll_delay.as_secs_f64(),
        };
        json(response.to_json())
    }

    /// `GET /hubs` and `/js`: the generated JavaScript proxy.
    fn proxy(&self, original: &axum::http::Uri, query: &Query) -> Response {
        if query.get("connectionData").is_some() {
            return server_error();
        }
        let path = original.path().trim_end_matches('/');
        let service_url = path.rsplit_once('/').map_or("", |(base, _)| base);
        let hubs: Vec<proxy::ProxyHub> = self
            .hubs
            .iter()
            .map(|h| proxy::ProxyHub {
                name: h.name.to_string(),
                methods: proxy_methods(&h.hub),
            })
            .collect();
        respond(
            StatusCode::OK,
            Some("application/javascript; charset=UTF-8"),
            Body::from(proxy::generate(&hubs, service_url)),
        )
    }

    /// Checks the parameters every transport request carries: the transport, the connection
    /// token and its user, the hubs.
    async fn check(
        &self,
        headers: &HeaderMap,
        query: &Query,
        raw_query: &str,
    ) -> Result<Checked, Response> {
        let transport = match query
            .get("transport")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("websockets") => TransportType::WebSockets,
            Some("serversentevents") => TransportType::ServerSentEvents,
            Some("longpolling") => TransportType::LongPolling,
            _ => return Err(bad_request(UNKNOWN_TRANSPORT)),
        };
        if !self.options.transports.contains(&transport) {
            return Err(bad_request(UNKNOWN_TRANSPORT));
        }
        let Some(token) = query.get("connectionToken").filter(|t| !t.is_empty()) else {
            return Err(bad_request(MISSING_TOKEN));
        };
        let Some(token) = self.tokens.unprotect_connection_token(&token) else {
            return Err(bad_request(BAD_TOKEN));
        };
        let (connection_id, token_user) = (token.connection_id, token.user);
        let hubs = self.requested_hubs(query).map_err(Refusal::into_response)?;
        let user = self.authenticate(&hubs, headers, query).await?;
        if token_user != user_name(&user) {
            return Err(respond(
                StatusCode::FORBIDDEN,
                Some("text/plain"),
                Body::from(USER_CHANGED),
            ));
        }
        let (hubs, refused) = self
            .authorize(&hubs, &user, headers, raw_query)
            .map_err(Refusal::into_response)?;
        Ok(Checked {
            transport,
            connection_id,
            user,
            hubs,
            refused,
        })
    }

    async fn transport_request(
        self: &Arc<Self>,
        action: &str,
        request: Request,
        query: Query,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let raw_query = parts.uri.query().unwrap_or_default().to_owned();
        let checked = match self.check(&parts.headers, &query, &raw_query).await {
            Ok(checked) => checked,
            Err(response) => return response,
        };
        match action {
            "abort" => {
                if let Some(connection) = self.connection(&checked.connection_id) {
                    self.end(&connection, true).await;
                }
                respond(StatusCode::OK, Some("text/plain"), Body::empty())
            }
            "start" => {
                let connection = self.connection_or_create(&checked, &parts).await;
                self.start(&connection).await
            }
            "send" if checked.transport == TransportType::WebSockets => {
                // A WebSocket connection sends over its socket; this is no upgrade.
                bad_request("Not a valid web socket request.")
            }
            "send" => {
                let connection = self.connection_or_create(&checked, &parts).await;
                let form = match read_form(body, self.options.max_incoming_message_size).await {
                    Ok(form) => form,
                    Err(response) => return response,
                };
                let data = form.data.or_else(|| query.get("data"));
                let Some(data) = data else {
                    return server_error();
                };
                match invoke::invoke(self, &connection, Bytes::from(data)).await {
                    Ok(result) => json(result),
                    Err(refused) => {
                        tracing::debug!(connection_id = %connection.id, reason = refused.0, "classic send refused");
                        server_error()
                    }
                }
            }
            "connect" | "reconnect" | "poll" => {
                let reconnect = action != "connect";
                let form = if parts.method == Method::POST {
                    match read_form(body, self.options.max_incoming_message_size).await {
                        Ok(form) => form,
                        Err(response) => return response,
                    }
                } else {
                    classic::FormFields::default()
                };
                let message_id = form.message_id.or_else(|| query.get("messageId"));
                let groups_token = form.groups_token.or_else(|| query.get("groupsToken"));
                let connection = match self.connection(&checked.connection_id) {
                    Some(connection) => connection,
                    // Made by a reconnect (the server forgot it): it counts as started, the
                    // client will not call /start again.
                    None => {
                        self.create(&checked, connection_request(&parts), action == "reconnect")
                            .await
                    }
                };
                let replay = if reconnect || action == "poll" {
                    Some(
                        message_id
                            .as_deref()
                            .and_then(|m| connection.outbox.parse_cursor(m))
                            .unwrap_or_else(|| connection.outbox.newest()),
                    )
                } else {
                    None
                };
                if action == "reconnect" {
                    let before = connection.outbox.newest();
                    self.rejoin_groups(&connection, groups_token.as_deref())
                        .await;
                    connection.outbox.forget_groups_tokens(before);
                    if let Some(cursor) = replay {
                        let member: std::collections::HashSet<String> = connection
                            .hubs
                            .iter()
                            .flat_map(|s| {
                                s.hub
                                    .lifetime
                                    .groups_of(&connection.id)
                                    .into_iter()
                                    .map(move |g| format!("{}.{g}", s.name))
                            })
                            .collect();
                        connection
                            .outbox
                            .forget_group_messages(cursor, |g| member.contains(g));
                    }
                    self.reconnected(&connection).await;
                }
                transport::serve(self.clone(), connection, checked.transport, replay, parts).await
            }
            _ => respond(StatusCode::NOT_FOUND, None, Body::empty()),
        }
    }

    /// The connection of a checked request, made now if this is its first request (SignalR 2.4
    /// answers `/start`, `/send` and `/poll` before any `/connect`).
    async fn connection_or_create(
        self: &Arc<Self>,
        checked: &Checked,
        parts: &axum::http::request::Parts,
    ) -> Arc<ClassicConnection> {
        match self.connection(&checked.connection_id) {
            Some(connection) => connection,
            None => self.create(checked, connection_request(parts), false).await,
        }
    }

    pub(crate) fn connection(&self, id: &str) -> Option<Arc<ClassicConnection>> {
        self.connections.lock().ok()?.get(id).cloned()
    }

    /// Makes the connection on its first `/connect` (or a `/reconnect` after the server forgot
    /// it): one hub context per subscribed hub, registered with the hub's clients at once so
    /// that messages sent before `/start` are kept for the client.
    async fn create(
        self: &Arc<Self>,
        checked: &Checked,
        request: ConnectionRequest,
        started: bool,
    ) -> Arc<ClassicConnection> {
        self.start_sweeper();
        let request = Arc::new(request);
        let outbox = Outbox::new(
            checked.connection_id.clone(),
            self.epoch,
            self.options.message_buffer_size,
            self.options.message_buffer_bytes,
            self.tokens.clone(),
        );
        let closed = CancellationToken::new();
        let mut subscriptions = Vec::with_capacity(checked.hubs.len());
        for &index in &checked.hubs {
            let registered = &self.hubs[index];
            let sink = Arc::new(ClassicClient {
                outbox: outbox.clone(),
                hub_name: registered.name.clone(),
            });
            let info = ConnectionInfo {
                id: checked.connection_id.clone(),
                sink,
                closed: closed.clone(),
                transport: Some(checked.transport),
                protocol: None,
                request: Some(request.clone()),
                user: checked.user.clone(),
            };
            let context = ConnectionContext::new(info, registered.hub.clone());
            subscriptions.push(Arc::new(Subscription {
                name: registered.name.clone(),
                hub: registered.hub.clone(),
                context,
            }));
        }
        let parallel = checked.hubs.first().map_or(1, |&i| {
            self.hubs[i]
                .hub
                .options
                .maximum_parallel_invocations_per_client
        });
        let connection = ClassicConnection::new(
            checked.connection_id.clone(),
            outbox,
            subscriptions,
            checked.refused.clone(),
            closed,
            parallel,
        );
        if started {
            connection.start();
        }
        let previous = self
            .connections
            .lock()
            .ok()
            .and_then(|mut map| map.insert(connection.id.clone(), connection.clone()));
        if let Some(previous) = previous {
            previous.detach();
        }
        for subscription in &connection.hubs {
            if let Err(err) = subscription
                .hub
                .lifetime
                .add(subscription.context.clone())
                .await
            {
                tracing::warn!(connection_id = %connection.id, hub = %subscription.name, error = %err, "the hub's lifetime manager could not register a classic connection");
            }
        }
        tracing::debug!(connection_id = %connection.id, hubs = connection.hubs.len(), "classic connection made");
        connection
    }

    /// A context for a registered hub the client calls without having named it in
    /// `connectionData`; `None` for an unknown hub or one its user may not use.
    pub(crate) fn unlisted_hub(
        &self,
        connection: &ClassicConnection,
        name: &str,
    ) -> Option<Arc<Subscription>> {
        let registered = &self.hubs[self.hub_index(name)?];
        let template = connection.hubs.first()?.context.clone();
        if !registered
            .hub
            .policy
            .as_ref()
            .is_none_or(|p| p.allows(&template.user))
        {
            return None;
        }
        connection.unlisted_hub(name, || {
            let sink = Arc::new(ClassicClient {
                outbox: connection.outbox.clone(),
                hub_name: registered.name.clone(),
            });
            let info = ConnectionInfo {
                id: connection.id.clone(),
                sink,
                closed: connection.closed.clone(),
                transport: template.transport,
                protocol: None,
                request: template.request.clone(),
                user: template.user.clone(),
            };
            Some(Arc::new(Subscription {
                name: registered.name.clone(),
                hub: registered.hub.clone(),
                context: ConnectionContext::new(info, registered.hub.clone()),
            }))
        })
    }

    /// `/start`: runs each subscribed hub's `on_connected`, once.
    async fn start(&self, connection: &Arc<ClassicConnection>) -> Response {
        if connection.start() {
            for subscription in &connection.hubs {
                let caller = HubCallerContext::new(
                    subscription.context.clone(),
                    connection.closed.child_token(),
                    true,
                );
                let hub = &subscription.hub;
                let connected = NextConnected::new(hub.filters.clone(), hub.on_connected.clone())
                    .run(caller)
                    .await;
                if let Err(err) = connected {
                    tracing::warn!(connection_id = %connection.id, hub = %subscription.name, error = %err, "on_connected failed");
                    return server_error();
                }
            }
        }
        json(classic::STARTED_RESPONSE)
    }

    /// `/reconnect`: each subscribed hub's `on_reconnected`.
    async fn reconnected(&self, connection: &Arc<ClassicConnection>) {
        for subscription in &connection.hubs {
            let caller = HubCallerContext::new(
                subscription.context.clone(),
                connection.closed.child_token(),
                false,
            );
            let hub = &subscription.hub;
            if let Err(err) = NextReconnected::new(hub.filters.clone(), hub.on_reconnected.clone())
                .run(caller)
                .await
            {
                tracing::warn!(connection_id = %connection.id, hub = %subscription.name, error = %err, "on_reconnected failed");
            }
        }
    }

    /// Puts the connection in exactly the groups of its groups token (none without a valid
    /// one), as the real server does on reconnect.
    async fn rejoin_groups(&self, connection: &ClassicConnection, groups_token: Option<&str>) {
        let names = groups_token
            .and_then(|token| self.tokens.unprotect_groups(token))
            .filter(|token| token.connection_id == connection.id)
            .map(|token| token.groups)
            .unwrap_or_default();
        for subscription in &connection.hubs {
            let prefix = format!("{}.", subscription.name);
            let wanted: Vec<&str> = names
                .iter()
                .filter_map(|n| n.strip_prefix(&prefix))
                .collect();
            let lifetime = &subscription.hub.lifetime;
            let groups = lifetime.groups_of(&connection.id);
            for group in &groups {
                if !wanted.contains(&group.as_str())
                    && let Err(err) = lifetime.remove_from_group(&connection.id, group).await
                {
                    tracing::warn!(connection_id = %connection.id, %group, error = %err, "leaving a group on reconnect failed");
                }
            }
            for group in wanted {
                if !groups.iter().any(|g| g == group)
                    && let Err(err) = lifetime.add_to_group(&connection.id, group).await
                {
                    tracing::warn!(connection_id = %connection.id, %group, error = %err, "rejoining a group on reconnect failed");
                }
            }
        }
    }

    /// Ends a connection for good: its hubs forget it and run `on_disconnected` (with
    /// `stop_called` when the client asked, `/abort`).
    pub(crate) async fn end(&self, connection: &Arc<ClassicConnection>, stop_called: bool) {
        if !connection.end() {
            return;
        }
        if let Ok(mut map) = self.connections.lock()
            && map
                .get(&connection.id)
                .is_some_and(|c| Arc::ptr_eq(c, connection))
        {
            map.remove(&connection.id);
        }
        connection.detach();
        connection.closed.cancel();
        for subscription in &connection.hubs {
            subscription.context.shut_down();
            subscription
                .hub
                .lifetime
                .remove(&subscription.context)
                .await;
        }
        for subscription in connection.unlisted_hubs() {
            subscription.context.shut_down();
        }
        if !connection.is_started() {
            return;
        }
        for subscription in &connection.hubs {
            if stop_called {
                subscription.context.set_stop_called();
            }
            let caller = HubCallerContext::new(
                subscription.context.clone(),
                connection.closed.clone(),
                false,
            );
            let hub = &subscription.hub;
            if let Err(err) =
                NextDisconnected::new(hub.filters.clone(), hub.on_disconnected.clone())
                    .run(caller, None)
                    .await
            {
                tracing::warn!(connection_id = %connection.id, hub = %subscription.name, error = %err, "on_disconnected failed");
            }
        }
        tracing::debug!(connection_id = %connection.id, stop_called, "classic connection ended");
    }
}

/// The hub's methods as the JavaScript proxy shows them: every overload, with its parameter
/// names (the progress parameter is not one: the client does not pass it).
fn proxy_methods(hub: &HubInner) -> Vec<proxy::ProxyMethod> {
    hub.methods_by_name()
        .flatten()
        .filter(|method| !method.streaming)
        .map(|method| proxy::ProxyMethod {
            name: method.name.clone(),
            parameters: method.parameter_names.clone(),
        })
        .collect()
}

/// The user name a connection token binds (empty when anonymous), as the real server's token
/// carries `Identity.Name`.
fn user_name(user: &User) -> String {
    user.name().unwrap_or_default()
}

/// Reads an `application/x-www-form-urlencoded` body of at most `limit` bytes.
async fn read_form(body: Body, limit: usize) -> Result<classic::FormFields, Response> {
    let mut stream = body.into_data_stream();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| respond(StatusCode::BAD_REQUEST, None, Body::empty()))?;
        if data.len() + chunk.len() > limit {
            return Err(respond(StatusCode::PAYLOAD_TOO_LARGE, None, Body::empty()));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(classic::FormFields::parse(&data))
}
