//! The classic ASP.NET SignalR 2.x client: [`ClassicHubConnection`] and its [`HubProxy`]s, the
//! Rust counterpart of the .NET `Microsoft.AspNet.SignalR.Client` `HubConnection`
//! (docs/protocol.md, "Classic client").
//!
//! ```
//! use signalr_hub_client::classic::{ClassicHubConnection, ConnectionState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = demo_server().await;
//! // `url` is a server root ("http://127.0.0.1:5000/", `/signalr` is added) or the endpoint itself.
//! let connection = ClassicHubConnection::builder(url).with_query("user", "ann").build()?;
//! let stock_ticker = connection.create_hub_proxy("StockTickerHub"); // before start
//!
//! let (tx, mut prices) = tokio::sync::mpsc::unbounded_channel();
//! let _subscription = stock_ticker.on("updateStockPrice", move |(symbol, price): (String, f64)| {
//!     let _ = tx.send(format!("{symbol} {price}"));
//! });
//! connection.start().await?;
//! assert_eq!(connection.state(), ConnectionState::Connected);
//!
//! stock_ticker.set_state("userName", "ann");
//! let greeting: String = stock_ticker.invoke("Hello", ("MSFT",)).await?;
//! assert_eq!(greeting, "hello ann");
//! assert_eq!(prices.recv().await.as_deref(), Some("MSFT 12.5"));
//! assert_eq!(stock_ticker.get_state("greeted"), Some(serde_json::json!(true))); // set by the hub
//!
//! connection.stop().await;
//! # Ok(())
//! # }
//! # async fn demo_server() -> String {
//! #     use signalr_server::{Hub, HubCallerContext, HubError, classic_router};
//! #     let hub = Hub::builder()
//! #         .name("StockTickerHub")
//! #         .method("Hello", |hub: HubCallerContext, symbol: String| async move {
//! #             let name: String = hub.caller_state().get("userName").unwrap_or_default();
//! #             hub.caller_state().set("greeted", true);
//! #             hub.clients().caller().send("updateStockPrice", (symbol, 12.5)).await?;
//! #             Ok::<_, HubError>(format!("hello {name}"))
//! #         })
//! #         .build();
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let url = format!("http://{}/", listener.local_addr().unwrap());
//! #     let app = axum::Router::new().nest("/signalr", classic_router([&hub]));
//! #     tokio::spawn(async move { axum::serve(listener, app).await });
//! #     url
//! # }
//! ```
//!
//! # What it does (and which .NET behaviour it follows)
//!
//! - Negotiate with `clientProtocol=2.1`; server versions 1.4 to 2.1 are accepted, as by the
//!   .NET client 2.4. A protocol 2.0 redirect (`RedirectUrl` + `AccessToken`, Azure SignalR
//!   Service) is followed up to 100 times; the redirect's query string then replaces the
//!   application's, and its token is sent as `Authorization: Bearer` (and `access_token` on
//!   WebSockets and Server-Sent Events).
//! - Transports: [`ClassicTransport::Auto`] (WebSockets when `TryWebSockets`, then Server-Sent
//!   Events, then long polling; a transport that does not deliver the init message within the
//!   server's `TransportConnectTimeout` is given up for the next) or one of them forced.
//! - `/start` after the init message; `/abort` on [`ClassicHubConnection::stop`].
//! - Hub proxies created before start are sent as `connectionData`; several per connection.
//! - [`HubProxy::invoke`], [`HubProxy::invoke_void`], [`HubProxy::invoke_with_progress`];
//!   caller state ([`HubProxy::set_state`], [`HubProxy::get_state`]) sent with every call and
//!   merged from results and from client-method calls, as the .NET proxy's indexer is.
//! - Hub errors are [`Error::is_server_error`]; [`Error::is_hub_exception`] and
//!   [`Error::error_data`] tell a `HubException` and its `ErrorData`.
//! - Events: [`ClassicHubConnection::on_received`], `on_state_changed`, `on_closed`,
//!   `on_error`, `on_reconnecting`, `on_reconnected`, `on_connection_slow`.
//! - Keep-alive monitoring on WebSockets and Server-Sent Events: nothing received for two
//!   thirds of the server's `KeepAliveTimeout` raises `ConnectionSlow`; for all of it the
//!   transport counts as lost.
//! - The classic reconnect: a lost transport (or `T:1` from the server) fails pending calls,
//!   goes `Reconnecting`, and every 2 s tries `/reconnect` with the last cursor (`messageId`)
//!   and groups token on the same transport, keeping the connection id; the server replays
//!   what was missed and rejoins the groups. When the reconnect window (DisconnectTimeout +
//!   KeepAliveTimeout, 50 s on SignalR 2.4) has passed, or the server refuses the connection
//!   (4xx), it goes `Disconnected` (`Error`, then `Closed`). A long poll cut before its answer
//!   is first sent again on a new socket, without a reconnect.
//!
//! Not done: the `/ping` keep-alive of ASP.NET sessions, forever frame and JSONP (not
//! transports a non-browser client needs), client-side trace levels (use `tracing` filters).
//!
//! Logging goes through `tracing` (target `signalr_hub_client`); no subscriber is installed.

mod transport;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use signalr_protocol::Payload;
use signalr_protocol::classic::{CallerState, HubInvocation};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::transport::{ClassicLink, Cursors, Endpoint, lock};
use self::wire::{CallOutcome, ClientInvocation, NegotiateReply, Negotiation, ServerMessage};
use crate::args::{Argument, IntoArguments};
use crate::error::{Error, Kind};
use crate::handlers::{Handler, HandlerRegistry, Subscription, erase, run_handlers};
use crate::tls::{TlsBackend, TlsConfig, TlsOptions};
use crate::transport::{HttpContext, Outgoing, TransportEvent};

pub use self::transport::ClassicTransport;

/// The state of a [`ClassicHubConnection`] (the .NET client's `ConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// `start()` is negotiating and connecting the transport.
    Connecting,
    /// Started: calls can be made.
    Connected,
    /// The transport was lost; the client is reconnecting with `/reconnect`.
    Reconnecting,
    /// Not started, stopped, or lost.
    Disconnected,
}

/// A state change, as the .NET client's `StateChange` (`OldState`, `NewState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// The state before.
    pub old_state: ConnectionState,
    /// The state now.
    pub new_state: ConnectionState,
}

/// The most negotiate redirects followed, as the .NET and jQuery clients allow.
const MAX_REDIRECTS: usize = 100;

/// How long `/negotiate`, `/start` and `/abort` may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The wait before each reconnect attempt (the .NET `ReconnectDelay`).
const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// How long [`ClassicHubConnection::stop`] waits for `/abort`.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Configures a [`ClassicHubConnection`]: the .NET `HubConnection` constructor
/// (`url`, `queryString`, `useDefaultUrl`) and its properties (`Headers`, certificates).
#[must_use]
pub struct ClassicHubConnectionBuilder {
    url: String,
    use_default_path: bool,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    access_token: Option<String>,
    tls: TlsOptions,
    transport: ClassicTransport,
    transport_connect_timeout: Duration,
}

impl std::fmt::Debug for ClassicHubConnectionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassicHubConnectionBuilder")
            .field("url", &self.url)
            .field("use_default_path", &self.use_default_path)
            .field("transport", &self.transport)
            .field("tls_backend", &self.tls.backend)
            .finish_non_exhaustive()
    }
}

impl ClassicHubConnectionBuilder {
    /// The server's URL: a site root such as `http://127.0.0.1:5000/` (`/signalr` is appended,
    /// as by the .NET client's default `useDefaultUrl: true`) or the endpoint itself
    /// (`http://127.0.0.1:5000/signalr`, which is kept as it is; the .NET client would ask for
    /// `/signalr/signalr`). `ws(s)` schemes are read as `http(s)`. A query string in the URL
    /// goes on every request, like [`ClassicHubConnectionBuilder::with_query`].
    pub fn new(url: impl Into<String>) -> Self {
        ClassicHubConnectionBuilder {
            url: url.into(),
            use_default_path: true,
            query: Vec::new(),
            headers: Vec::new(),
            access_token: None,
            tls: TlsOptions::default(),
            transport: ClassicTransport::Auto,
            transport_connect_timeout: Duration::ZERO,
        }
    }

    /// `false`: the URL is the endpoint, `/signalr` is never appended (the .NET
    /// `useDefaultUrl: false`, for a hub mapped elsewhere). Default `true`.
    pub fn use_default_path(mut self, use_default_path: bool) -> Self {
        self.use_default_path = use_default_path;
        self
    }

    /// Adds a query parameter to every request (the .NET `queryString`), e.g. the `user` a
    /// server reads.
    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Adds a header to every HTTP request and to the WebSocket upgrade (the .NET
    /// `connection.Headers.Add`). An invalid name or value fails
    /// [`ClassicHubConnectionBuilder::build`].
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A bearer token sent as `Authorization: Bearer` on every request (and `access_token` on
    /// WebSockets and Server-Sent Events). A negotiate redirect's `AccessToken` replaces it.
    pub fn with_access_token(mut self, token: impl Into<String>) -> Self {
        self.access_token = Some(token.into());
        self
    }

    /// Presents a client certificate (mutual TLS; the .NET `AddClientCertificate`):
    /// `cert_chain_pem` holds the certificate and its intermediates, `key_pem` its private key
    /// (PEM; PKCS#8 with either TLS backend, PKCS#1 and SEC1 with rustls only), as
    /// [`HubConnectionBuilder::with_client_certificate`](crate::HubConnectionBuilder::with_client_certificate).
    pub fn with_client_certificate(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.identity = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// Trusts the certificate(s) (PEM, or one DER certificate) as roots, besides the TLS
    /// backend's own, as
    /// [`HubConnectionBuilder::with_root_certificate`](crate::HubConnectionBuilder::with_root_certificate).
    pub fn with_root_certificate(mut self, certificate: impl Into<Vec<u8>>) -> Self {
        self.tls.roots.push(certificate.into());
        self
    }

    /// The TLS library when both TLS features are on, as
    /// [`HubConnectionBuilder::tls_backend`](crate::HubConnectionBuilder::tls_backend).
    pub fn tls_backend(mut self, backend: TlsBackend) -> Self {
        self.tls.backend = Some(backend);
        self
    }

    /// The transport (default [`ClassicTransport::Auto`]); the .NET
    /// `connection.Start(new LongPollingTransport())`.
    pub fn with_transport(mut self, transport: ClassicTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Time added to the server's `TransportConnectTimeout` (5 s by default on SignalR 2.4)
    /// for a transport to deliver its init message (the .NET `TransportConnectTimeout`
    /// property; default zero).
    pub fn transport_connect_timeout(mut self, extra: Duration) -> Self {
        self.transport_connect_timeout = extra;
        self
    }

    /// Builds the connection (not started). Needs no runtime.
    ///
    /// # Errors
    /// An [`Error::is_builder`] error for a URL that is not `http(s)`/`ws(s)`, an invalid
    /// header, or a certificate or key that does not parse or that the TLS backend refuses.
    pub fn build(self) -> Result<ClassicHubConnection, Error> {
        let builder_error = |message: String| Error::new(Kind::Builder, message);
        let text = self.url;
        let mut url = Url::parse(&text).map_err(|err| {
            Error::with_source(Kind::Builder, format!("Invalid URL '{text}': {err}"), err)
        })?;
        let scheme = match url.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            other => {
                return Err(builder_error(format!(
                    "Invalid URL '{text}': the scheme '{other}' is not http(s) or ws(s)."
                )));
            }
        };
        if url.scheme() != scheme {
            let rest = &text[text.find(':').unwrap_or(0)..];
            url = Url::parse(&format!("{scheme}{rest}")).map_err(|err| {
                Error::with_source(Kind::Builder, format!("Invalid URL '{text}': {err}"), err)
            })?;
        }
        url.set_fragment(None);
        let mut query: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        query.extend(self.query);
        url.set_query(None);
        let mut path = url.path().to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        if self.use_default_path && !path.to_ascii_lowercase().ends_with("/signalr/") {
            path.push_str("signalr/");
        }
        url.set_path(&path);

        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!(
                "signalr-hub-client/",
                env!("CARGO_PKG_VERSION"),
                " (classic)"
            )),
        );
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|err| {
                Error::with_source(
                    Kind::Builder,
                    format!("Invalid header name '{name}': {err}"),
                    err,
                )
            })?;
            let value = HeaderValue::from_str(value).map_err(|err| {
                Error::with_source(
                    Kind::Builder,
                    format!("Invalid value of header '{name}': {err}"),
                    err,
                )
            })?;
            headers.append(name, value);
        }
        let tls = TlsConfig::new(&self.tls)?;
        let http = HttpContext {
            client: tls.http_client(true)?,
            fresh_client: tls.http_client(false)?,
            tls,
            headers,
            token: self.access_token,
            binary: false,
        };
        Ok(ClassicHubConnection {
            shared: Arc::new(Shared {
                base: url,
                query,
                http,
                transport: self.transport,
                transport_connect_timeout: self.transport_connect_timeout,
                proxies: Mutex::new(Vec::new()),
                run: Mutex::new(Run {
                    state: ConnectionState::Disconnected,
                    generation: 0,
                    session: None,
                    stop: None,
                }),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                events: Events::default(),
            }),
        })
    }
}

type Callback<T> = Arc<dyn Fn(T) + Send + Sync>;
type TextCallback = Arc<dyn Fn(&str) + Send + Sync>;
type ErrorCallback = Arc<dyn Fn(&Error) + Send + Sync>;
type ProgressCallback = Arc<dyn Fn(&RawValue) + Send + Sync>;

#[derive(Default)]
struct Events {
    received_owned: Mutex<Vec<TextCallback>>,
    reconnecting: Mutex<Vec<Callback<()>>>,
    reconnected: Mutex<Vec<Callback<()>>>,
    slow: Mutex<Vec<Callback<()>>>,
    state_changed: Mutex<Vec<Callback<StateChange>>>,
    closed: Mutex<Vec<Callback<()>>>,
    error: Mutex<Vec<ErrorCallback>>,
}

struct Run {
    state: ConnectionState,
    /// Counts starts, so that a stale task never acts on a newer connection.
    generation: u64,
    session: Option<Arc<Session>>,
    /// Cancels a start in progress and the session's tasks.
    stop: Option<CancellationToken>,
}

struct Session {
    generation: u64,
    endpoint: Endpoint,
    negotiation: Negotiation,
    kind: ClassicTransport,
    ws_sender: Option<tokio::sync::mpsc::UnboundedSender<Outgoing>>,
    #[allow(dead_code)]
    cursors: Arc<Mutex<Cursors>>,
    stopper: Mutex<Option<crate::transport::Stopper>>,
}

struct Pending {
    proxy: Arc<ProxyShared>,
    result: oneshot::Sender<Result<Box<RawValue>, Error>>,
    progress: Option<ProgressCallback>,
}

struct Shared {
    /// The endpoint, with a trailing `/`, without query.
    base: Url,
    query: Vec<(String, String)>,
    http: HttpContext,
    transport: ClassicTransport,
    transport_connect_timeout: Duration,
    proxies: Mutex<Vec<Arc<ProxyShared>>>,
    run: Mutex<Run>,
    pending: Mutex<HashMap<String, Pending>>,
    next_id: AtomicU64,
    events: Events,
}

struct ProxyShared {
    name: String,
    handlers: Arc<HandlerRegistry>,
    state: Mutex<serde_json::Map<String, serde_json::Value>>,
}

/// A connection to a classic ASP.NET SignalR 2.x endpoint (the .NET client's
/// `HubConnection`). Cheap to clone: clones share the connection.
///
/// Create hub proxies with [`ClassicHubConnection::create_hub_proxy`] before
/// [`ClassicHubConnection::start`]; see the [module documentation](self) for an example.
#[derive(Clone)]
pub struct ClassicHubConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClassicHubConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassicHubConnection")
            .field("url", &self.shared.base.as_str())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl ClassicHubConnection {
    /// A builder for the server at `url`; see [`ClassicHubConnectionBuilder::new`].
    pub fn builder(url: impl Into<String>) -> ClassicHubConnectionBuilder {
        ClassicHubConnectionBuilder::new(url)
    }

    /// A connection with the defaults (automatic transport, no query or headers).
    ///
    /// # Errors
    /// As [`ClassicHubConnectionBuilder::build`].
    pub fn new(url: impl Into<String>) -> Result<ClassicHubConnection, Error> {
        ClassicHubConnectionBuilder::new(url).build()
    }

    /// The endpoint URL every request goes to (with a trailing `/`), e.g.
    /// `http://127.0.0.1:5000/signalr/`.
    pub fn url(&self) -> &str {
        self.shared.base.as_str()
    }

    /// The proxy of hub `name` (the .NET `CreateHubProxy`): hub names match ignoring case, and
    /// asking twice gives the same proxy. Create every proxy before [`start`](Self::start): the
    /// hubs are named in the connection's `connectionData`, and a proxy created later is not
    /// subscribed (its calls fail on the server and its client methods are never called).
    pub fn create_hub_proxy(&self, name: &str) -> HubProxy {
        let mut proxies = lock(&self.shared.proxies);
        if let Some(existing) = proxies.iter().find(|p| p.name.eq_ignore_ascii_case(name)) {
            return HubProxy {
                connection: self.clone(),
                shared: existing.clone(),
            };
        }
        if lock(&self.shared.run).state != ConnectionState::Disconnected {
            tracing::warn!(
                hub = name,
                "a hub proxy created after start is not subscribed until the next start"
            );
        }
        let shared = Arc::new(ProxyShared {
            name: name.to_owned(),
            handlers: Arc::default(),
            state: Mutex::new(serde_json::Map::new()),
        });
        proxies.push(shared.clone());
        HubProxy {
            connection: self.clone(),
            shared,
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        lock(&self.shared.run).state
    }

    /// The connection id from negotiate (the server's `Context.ConnectionId`) while started;
    /// `None` before.
    pub fn connection_id(&self) -> Option<String> {
        lock(&self.shared.run)
            .session
            .as_ref()
            .map(|s| s.negotiation.connection_id.clone())
    }

    /// The transport in use while started (never [`ClassicTransport::Auto`]).
    pub fn transport(&self) -> Option<ClassicTransport> {
        lock(&self.shared.run).session.as_ref().map(|s| s.kind)
    }

    /// Runs `handler` with the JSON text of every message the server sends (each client-method
    /// call, progress report and hub result), after the hub dispatch: the .NET `Received`
    /// event.
    pub fn on_received(&self, handler: impl Fn(&str) + Send + Sync + 'static) {
        lock(&self.shared.events.received_owned).push(Arc::new(handler));
    }

    /// Runs `handler` when the transport was lost and the client starts reconnecting: the .NET
    /// `Reconnecting` event. Pending calls have then failed with `Connection started
    /// reconnecting before invocation result was received.`
    pub fn on_reconnecting(&self, handler: impl Fn() + Send + Sync + 'static) {
        lock(&self.shared.events.reconnecting).push(Arc::new(move |()| handler()));
    }

    /// Runs `handler` when a reconnect succeeded (same connection id; the server replayed what
    /// was missed): the .NET `Reconnected` event.
    pub fn on_reconnected(&self, handler: impl Fn() + Send + Sync + 'static) {
        lock(&self.shared.events.reconnected).push(Arc::new(move |()| handler()));
    }

    /// Runs `handler` when nothing (not even a keep-alive) arrived for two thirds of the
    /// server's `KeepAliveTimeout` (13.3 s of SignalR 2.4's 20 s): the .NET `ConnectionSlow`
    /// event. Once per silence; WebSockets and Server-Sent Events only (long polling has no
    /// keep-alive monitoring, as in .NET).
    pub fn on_connection_slow(&self, handler: impl Fn() + Send + Sync + 'static) {
        lock(&self.shared.events.slow).push(Arc::new(move |()| handler()));
    }

    /// Runs `handler` on every state change: the .NET `StateChanged` event.
    pub fn on_state_changed(&self, handler: impl Fn(StateChange) + Send + Sync + 'static) {
        lock(&self.shared.events.state_changed).push(Arc::new(handler));
    }

    /// Runs `handler` when the connection ends (stopped, lost, or a failed start): the .NET
    /// `Closed` event.
    pub fn on_closed(&self, handler: impl Fn() + Send + Sync + 'static) {
        lock(&self.shared.events.closed).push(Arc::new(move |()| handler()));
    }

    /// Runs `handler` with every connection-level error (a lost transport, a message that does
    /// not parse, a failed start): the .NET `Error` event.
    pub fn on_error(&self, handler: impl Fn(&Error) + Send + Sync + 'static) {
        lock(&self.shared.events.error).push(Arc::new(handler));
    }

    /// Starts the connection: negotiate (following redirects), open the transport (each of
    /// [`ClassicTransport::Auto`]'s in turn until one delivers the init message), then
    /// `/start`. `Disconnected -> Connecting -> Connected`.
    ///
    /// # Errors
    /// [`Error::is_invalid_state`] when not `Disconnected`; [`Error::is_negotiate`] (status,
    /// body, incompatible protocol version, redirect limit); [`Error::is_transport`] when no
    /// transport connected or `/start` failed; [`Error::is_closed`] when
    /// [`stop`](Self::stop) was called meanwhile. The connection is then `Disconnected`, and
    /// `on_error` and `on_closed` have run.
    pub async fn start(&self) -> Result<(), Error> {
        let (generation, stop) = {
            let mut run = lock(&self.shared.run);
            if run.state != ConnectionState::Disconnected {
                return Err(Error::new(
                    Kind::InvalidState,
                    "Cannot start a connection that is not in the 'Disconnected' state.",
                ));
            }
            run.state = ConnectionState::Connecting;
            run.generation += 1;
            let stop = CancellationToken::new();
            run.stop = Some(stop.clone());
            (run.generation, stop)
        };
        self.shared
            .state_changed(ConnectionState::Disconnected, ConnectionState::Connecting);
        let attempt = tokio::select! {
            () = stop.cancelled() => Err(Error::new(Kind::Closed, "The connection was stopped before it was established.")),
            result = self.shared.clone().connect(generation, stop.clone()) => result,
        };
        match attempt {
            Ok(session) => {
                let started = {
                    let mut run = lock(&self.shared.run);
                    if run.generation == generation && run.state == ConnectionState::Connecting {
                        run.state = ConnectionState::Connected;
                        run.session = Some(session.clone());
                        true
                    } else {
                        false
                    }
                };
                if started {
                    tracing::debug!(id = %session.negotiation.connection_id, transport = %session.kind, "classic connection started");
                    self.shared
                        .state_changed(ConnectionState::Connecting, ConnectionState::Connected);
                    Ok(())
                } else {
                    session.shutdown().await;
                    Err(Error::new(
                        Kind::Closed,
                        "The connection was stopped before it was established.",
                    ))
                }
            }
            Err(err) => {
                let owned = {
                    let mut run = lock(&self.shared.run);
                    if run.generation == generation && run.state == ConnectionState::Connecting {
                        run.state = ConnectionState::Disconnected;
                        run.stop = None;
                        true
                    } else {
                        false
                    }
                };
                if owned {
                    self.shared.emit_error(&err);
                    self.shared
                        .state_changed(ConnectionState::Connecting, ConnectionState::Disconnected);
                    self.shared.emit_closed();
                }
                Err(err)
            }
        }
    }

    /// Stops the connection: closes the transport, sends `/abort` (the server then runs
    /// `OnDisconnected` with `stopCalled`), fails every pending call with `Connection was
    /// disconnected before invocation result was received.`, then `on_closed`. Waits at most
    /// 5 s for `/abort`. Does nothing when already `Disconnected`.
    pub async fn stop(&self) {
        let (session, old) = {
            let mut run = lock(&self.shared.run);
            let old = run.state;
            if old == ConnectionState::Disconnected {
                return;
            }
            run.state = ConnectionState::Disconnected;
            run.generation += 1;
            if let Some(stop) = run.stop.take() {
                stop.cancel();
            }
            (run.session.take(), old)
        };
        if let Some(session) = &session {
            session.shutdown().await;
            transport::abort(
                &session.endpoint,
                session.kind,
                &session.negotiation.connection_token,
                ABORT_TIMEOUT,
            )
            .await;
        }
        self.shared.fail_pending(&Error::new(
            Kind::Closed,
            "Connection was disconnected before invocation result was received.",
        ));
        self.shared
            .state_changed(old, ConnectionState::Disconnected);
        self.shared.emit_closed();
    }
}

impl Session {
    async fn shutdown(&self) {
        let stopper = lock(&self.stopper).take();
        if let Some(stopper) = stopper {
            stopper.stop().await;
        }
    }
}

impl Shared {
    fn state_changed(&self, old: ConnectionState, new: ConnectionState) {
        if old == new {
            return;
        }
        let handlers = lock(&self.events.state_changed).clone();
        for handler in handlers {
            handler(StateChange {
                old_state: old,
                new_state: new,
            });
        }
    }

    fn emit_simple(&self, handlers: &Mutex<Vec<Callback<()>>>) {
        let handlers = lock(handlers).clone();
        for handler in handlers {
            handler(());
        }
    }

    fn emit_slow(&self) {
        self.emit_simple(&self.events.slow);
    }

    fn emit_closed(&self) {
        let handlers = lock(&self.events.closed).clone();
        for handler in handlers {
            handler(());
        }
    }

    fn emit_error(&self, err: &Error) {
        let handlers = lock(&self.events.error).clone();
        for handler in handlers {
            handler(err);
        }
    }

    fn emit_received(&self, text: &str) {
        let handlers = lock(&self.events.received_owned).clone();
        for handler in handlers {
            handler(text);
        }
    }

    fn fail_pending(&self, err: &Error) {
        let pending: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for call in pending {
            let _ = call.result.send(Err(err.clone()));
        }
    }

    fn connection_data(&self) -> String {
        let hubs: Vec<serde_json::Value> = lock(&self.proxies)
            .iter()
            .map(|p| serde_json::json!({ "name": p.name.to_lowercase() }))
            .collect();
        serde_json::Value::Array(hubs).to_string()
    }

    fn proxy(&self, hub: &str) -> Option<Arc<ProxyShared>> {
        lock(&self.proxies)
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(hub))
            .cloned()
    }

    /// Negotiate (with redirects), then each transport until one delivers its init message, then
    /// `/start`.
    async fn connect(
        self: Arc<Self>,
        generation: u64,
        stop: CancellationToken,
    ) -> Result<Arc<Session>, Error> {
        let mut endpoint = Endpoint {
            base: self.base.clone(),
            query: self.query.clone(),
            connection_data: self.connection_data(),
            http: self.http.clone(),
        };
        let negotiation = negotiate(&mut endpoint).await?;
        let kinds: Vec<ClassicTransport> = match self.transport {
            ClassicTransport::Auto => {
                let mut kinds = Vec::new();
                if negotiation.try_web_sockets {
                    kinds.push(ClassicTransport::WebSockets);
                }
                kinds.push(ClassicTransport::ServerSentEvents);
                kinds.push(ClassicTransport::LongPolling);
                kinds
            }
            forced => vec![forced],
        };
        let mut connect_timeout =
            negotiation.transport_connect_timeout + self.transport_connect_timeout;
        if connect_timeout.is_zero() {
            connect_timeout = Duration::from_secs(5);
        }
        let mut last_error = None;
        for kind in kinds {
            match self
                .clone()
                .open_transport(
                    &endpoint,
                    &negotiation,
                    kind,
                    generation,
                    &stop,
                    connect_timeout,
                )
                .await
            {
                Ok(session) => {
                    let started = self.start_request(&session).await;
                    return match started {
                        Ok(()) => Ok(session),
                        Err(err) => {
                            session.shutdown().await;
                            Err(err)
                        }
                    };
                }
                Err(err) => {
                    tracing::debug!(transport = %kind, error = %err, "classic transport failed to connect");
                    last_error = Some(err);
                }
            }
        }
        let err = last_error.unwrap_or_else(|| Error::new(Kind::Transport, "No transport."));
        if self.transport == ClassicTransport::Auto {
            Err(Error::wrap(
                Kind::Transport,
                format!(
                    "No transport could be initialized successfully. Try specifying a different transport or none at all for auto initialization. ({err})"
                ),
                err,
            ))
        } else {
            Err(err)
        }
    }

    /// Opens one transport and waits for the init message (`S:1`).
    async fn open_transport(
        self: Arc<Self>,
        endpoint: &Endpoint,
        negotiation: &Negotiation,
        kind: ClassicTransport,
        generation: u64,
        stop: &CancellationToken,
        connect_timeout: Duration,
    ) -> Result<Arc<Session>, Error> {
        let cursors = Arc::new(Mutex::new(Cursors::default()));
        let opening = transport::open(
            endpoint,
            kind,
            &negotiation.connection_token,
            &cursors,
            false,
            negotiation.connection_timeout,
            negotiation.long_poll_delay,
        );
        let link: ClassicLink = tokio::time::timeout(
            connect_timeout.max(Duration::from_secs(1)) + crate::transport::HTTP_TIMEOUT,
            opening,
        )
        .await
        .map_err(|_| {
            Error::new(
                Kind::Transport,
                format!("The {kind} transport did not connect in time."),
            )
        })??;
        let ClassicLink {
            kind,
            ws_sender,
            events,
            stopper,
        } = link;
        let session = Arc::new(Session {
            generation,
            endpoint: endpoint.clone(),
            negotiation: negotiation.clone(),
            kind,
            ws_sender,
            cursors: cursors.clone(),
            stopper: Mutex::new(Some(stopper)),
        });
        let (init_tx, init_rx) = oneshot::channel();
        tokio::spawn(self.clone().receive_loop(
            session.clone(),
            events,
            cursors,
            Some(init_tx),
            stop.clone(),
        ));
        match tokio::time::timeout(connect_timeout, init_rx).await {
            Ok(Ok(())) => Ok(session),
            Ok(Err(_)) => {
                session.shutdown().await;
                Err(Error::new(
                    Kind::Transport,
                    format!("The {kind} transport closed before the server's init message."),
                ))
            }
            Err(_) => {
                session.shutdown().await;
                Err(Error::new(
                    Kind::Transport,
                    format!(
                        "Transport timed out trying to connect: the {kind} transport delivered no init message within {} ms.",
                        connect_timeout.as_millis()
                    ),
                ))
            }
        }
    }

    /// `GET /start`; the answer must be `{"Response":"started"}`.
    async fn start_request(&self, session: &Session) -> Result<(), Error> {
        let url = session.endpoint.url(
            "start",
            Some(session.kind.name()),
            Some(&session.negotiation.connection_token),
        );
        let body = session
            .endpoint
            .get(url, REQUEST_TIMEOUT, "The start request failed")
            .await?;
        let started = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("Response")
                    .and_then(|r| r.as_str())
                    .map(|r| r == "started")
            })
            .unwrap_or(false);
        if started {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Transport,
                format!(
                    "The start request failed: the server answered '{}' instead of 'started'.",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            ))
        }
    }

    /// Reads the transport's events until it closes, watching the keep-alive (WebSockets and
    /// Server-Sent Events; the .NET client's `HeartbeatMonitor`): nothing received for two
    /// thirds of `KeepAliveTimeout` raises `ConnectionSlow` once; for the whole timeout the
    /// transport counts as lost.
    async fn receive_loop(
        self: Arc<Self>,
        session: Arc<Session>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<TransportEvent>,
        cursors: Arc<Mutex<Cursors>>,
        mut init: Option<oneshot::Sender<()>>,
        stop: CancellationToken,
    ) {
        let keep_alive = session
            .negotiation
            .keep_alive_timeout
            .filter(|t| !t.is_zero() && session.kind != ClassicTransport::LongPolling);
        let mut last = tokio::time::Instant::now();
        let mut warned = false;
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let closed = loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = events.recv() => event,
                _ = ticker.tick(), if keep_alive.is_some() && init.is_none() => {
                    let timeout = keep_alive.unwrap_or_default();
                    let idle = last.elapsed();
                    if idle >= timeout {
                        break Some(Error::new(
                            Kind::Timeout,
                            format!("The server sent nothing, not even a keep-alive, for {} s.", timeout.as_secs_f64()),
                        ));
                    }
                    if !warned && idle >= timeout * 2 / 3 {
                        warned = true;
                        tracing::debug!("classic connection slow: no keep-alive for 2/3 of the timeout");
                        self.emit_slow();
                    }
                    continue;
                }
            };
            match event {
                Some(TransportEvent::Data(data)) => {
                    last = tokio::time::Instant::now();
                    warned = false;
                    let message = match ServerMessage::parse(&data) {
                        Ok(message) => message,
                        Err(err) => {
                            tracing::warn!(error = %err, "ignoring a message from the server");
                            self.emit_error(&err);
                            continue;
                        }
                    };
                    lock(&cursors).update(&message);
                    if message.is_init()
                        && let Some(init) = init.take()
                    {
                        let _ = init.send(());
                    }
                    let reconnect = message.asks_reconnect();
                    self.handle(&data, message).await;
                    if reconnect && init.is_none() {
                        break Some(Error::new(
                            Kind::Transport,
                            "The server asked the client to reconnect.",
                        ));
                    }
                }
                Some(TransportEvent::Closed(err)) => break err,
                Some(TransportEvent::Lost(err)) => break Some(err),
                None => break None,
            }
        };
        if init.is_some() {
            // Still starting: `open_transport` sees the closed init channel.
            return;
        }
        let err = closed
            .unwrap_or_else(|| Error::new(Kind::Transport, "The server closed the connection."));
        self.connection_lost(session, cursors, err).await;
    }

    /// The transport of `session` broke: `Reconnecting`, then `/reconnect` with the cursor and
    /// groups token every 2 s (the .NET `ReconnectDelay`) until one opens (`Reconnected`, same
    /// connection id, missed messages replayed) or the reconnect window (disconnect timeout +
    /// keep-alive timeout) has passed (`Disconnected`, `Closed`).
    fn connection_lost(
        self: Arc<Self>,
        session: Arc<Session>,
        cursors: Arc<Mutex<Cursors>>,
        err: Error,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let stop = {
                let mut run = lock(&self.run);
                let current = run
                    .session
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &session));
                if !current || run.state != ConnectionState::Connected {
                    return;
                }
                run.state = ConnectionState::Reconnecting;
                run.session = None;
                run.stop.clone().unwrap_or_default()
            };
            tracing::debug!(error = %err, "classic connection lost; reconnecting");
            session.shutdown().await;
            self.emit_error(&err);
            self.fail_pending(&Error::wrap(
                Kind::Closed,
                "Connection started reconnecting before invocation result was received.",
                err.clone(),
            ));
            self.state_changed(ConnectionState::Connected, ConnectionState::Reconnecting);
            self.emit_simple(&self.events.reconnecting);
            let window = session.negotiation.disconnect_timeout
                + session.negotiation.keep_alive_timeout.unwrap_or_default();
            let deadline = tokio::time::Instant::now() + window;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                let opening = transport::open(
                    &session.endpoint,
                    session.kind,
                    &session.negotiation.connection_token,
                    &cursors,
                    true,
                    session.negotiation.connection_timeout,
                    session.negotiation.long_poll_delay,
                );
                let opened = tokio::select! {
                    () = stop.cancelled() => return,
                    opened = tokio::time::timeout(remaining, opening) => opened,
                };
                match opened {
                    Ok(Ok(link)) => {
                        let ClassicLink {
                            kind,
                            ws_sender,
                            events,
                            stopper,
                        } = link;
                        let renewed = Arc::new(Session {
                            generation: session.generation,
                            endpoint: session.endpoint.clone(),
                            negotiation: session.negotiation.clone(),
                            kind,
                            ws_sender,
                            cursors: cursors.clone(),
                            stopper: Mutex::new(Some(stopper)),
                        });
                        let resumed = {
                            let mut run = lock(&self.run);
                            if run.generation == session.generation
                                && run.state == ConnectionState::Reconnecting
                            {
                                run.state = ConnectionState::Connected;
                                run.session = Some(renewed.clone());
                                true
                            } else {
                                false
                            }
                        };
                        if !resumed {
                            renewed.shutdown().await;
                            return;
                        }
                        tokio::spawn(
                            self.clone()
                                .receive_loop(renewed, events, cursors, None, stop),
                        );
                        tracing::debug!(id = %session.negotiation.connection_id, "classic connection reconnected");
                        self.state_changed(
                            ConnectionState::Reconnecting,
                            ConnectionState::Connected,
                        );
                        self.emit_simple(&self.events.reconnected);
                        return;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "classic reconnect attempt failed");
                        // The server no longer knows the connection: no point in trying again.
                        if matches!(err.status(), Some(400..=499)) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let gone = {
                let mut run = lock(&self.run);
                if run.generation != session.generation
                    || run.state != ConnectionState::Reconnecting
                {
                    false
                } else {
                    run.state = ConnectionState::Disconnected;
                    if let Some(stop) = run.stop.take() {
                        stop.cancel();
                    }
                    true
                }
            };
            if gone {
                let err = Error::new(
                    Kind::Closed,
                    format!(
                        "Couldn't reconnect within the configured timeout of {} ms, disconnecting.",
                        window.as_millis()
                    ),
                );
                self.emit_error(&err);
                transport::abort(
                    &session.endpoint,
                    session.kind,
                    &session.negotiation.connection_token,
                    ABORT_TIMEOUT,
                )
                .await;
                self.state_changed(ConnectionState::Reconnecting, ConnectionState::Disconnected);
                self.emit_closed();
            }
        })
    }

    /// Dispatches one object from the server: a hub result or progress report, or an envelope
    /// whose messages are client-method calls and progress reports.
    async fn handle(&self, text: &[u8], message: ServerMessage) {
        if message.is_keep_alive() {
            return;
        }
        if message.id.is_some() || message.progress.is_some() {
            self.hub_response(&message);
            self.emit_received(&String::from_utf8_lossy(text));
            return;
        }
        if let Some(error) = &message.error {
            let err = Error::new(Kind::Protocol, format!("The server sent an error: {error}"));
            self.emit_error(&err);
        }
        if message.asks_reconnect() {
            tracing::debug!("the server asked for a reconnect (T:1)");
        }
        for item in message.messages.into_iter().flatten() {
            let raw = item.get();
            match ServerMessage::parse(raw.as_bytes()) {
                Ok(inner) if inner.id.is_some() || inner.progress.is_some() => {
                    self.hub_response(&inner);
                }
                _ => match serde_json::from_str::<ClientInvocation>(raw) {
                    Ok(invocation) => self.client_invocation(invocation).await,
                    Err(err) => {
                        tracing::debug!(error = %err, "a message that is no hub message; only Received sees it");
                    }
                },
            }
            self.emit_received(raw);
        }
    }

    /// A hub result (`I`) or a progress report (`P`).
    fn hub_response(&self, message: &ServerMessage) {
        if let Some(progress) = &message.progress {
            let Some(id) = progress.id.as_ref().and_then(wire::id_text) else {
                return;
            };
            let callback = lock(&self.pending)
                .get(&id)
                .and_then(|p| p.progress.clone());
            if let Some(callback) = callback {
                let data = progress.data.clone().unwrap_or_else(wire::null);
                callback(&data);
            }
            return;
        }
        let Some(id) = message.id.as_ref().and_then(wire::id_text) else {
            return;
        };
        let Some(pending) = lock(&self.pending).remove(&id) else {
            tracing::debug!(id, "a hub result for no pending call");
            return;
        };
        if let Some(state) = message.state() {
            lock(&pending.proxy.state).extend(state);
        }
        let outcome = match message.outcome() {
            CallOutcome::Value(value) => Ok(value),
            CallOutcome::Failed(err) => Err(err),
        };
        let _ = pending.result.send(outcome);
    }

    async fn client_invocation(&self, invocation: ClientInvocation) {
        let Some(proxy) = self.proxy(&invocation.hub) else {
            tracing::debug!(hub = %invocation.hub, "a client-method call for a hub without a proxy");
            return;
        };
        if let Some(state) = invocation.state {
            lock(&proxy.state).extend(state);
        }
        let arguments: Vec<Payload> = invocation
            .arguments
            .unwrap_or_default()
            .into_iter()
            .map(|raw| Payload::Json(Bytes::from(String::from(Box::<str>::from(raw)))))
            .collect();
        let handlers = proxy.handlers.snapshot(&invocation.method);
        if handlers.is_empty() {
            tracing::debug!(hub = %proxy.name, method = %invocation.method, "no handler for this client method");
            return;
        }
        let _ = run_handlers(&invocation.method, handlers, arguments, false).await;
    }

    fn current_session(&self) -> Result<Arc<Session>, Error> {
        let run = lock(&self.run);
        match (&run.session, run.state) {
            (Some(session), ConnectionState::Connected) => Ok(session.clone()),
            _ => Err(Error::new(
                Kind::Closed,
                "Data cannot be sent because the connection is in the disconnected state. Call start before sending any data.",
            )),
        }
    }

    /// Sends one invocation and waits for its result.
    async fn invoke(
        &self,
        proxy: &Arc<ProxyShared>,
        method: &str,
        arguments: Vec<Argument>,
        progress: Option<ProgressCallback>,
    ) -> Result<Box<RawValue>, Error> {
        let session = self.current_session()?;
        let mut payloads = Vec::with_capacity(arguments.len());
        for argument in arguments {
            match argument {
                Argument::Value(payload) => payloads.push(payload),
                Argument::Stream(_) => {
                    return Err(Error::new(
                        Kind::Encode,
                        "Classic SignalR has no client-to-server streams.",
                    ));
                }
            }
        }
        let mut state = CallerState::new();
        for (key, value) in lock(&proxy.state).iter() {
            state.set(key.clone(), Payload::Json(Bytes::from(value.to_string())));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let invocation = HubInvocation {
            hub: proxy.name.clone(),
            method: method.to_owned(),
            arguments: payloads,
            id: Some(id.clone()),
            state,
        };
        let mut out = BytesMut::new();
        invocation.write(&mut out).map_err(|err| {
            Error::with_source(
                Kind::Encode,
                format!("Cannot serialize the arguments of '{method}': {err}"),
                err,
            )
        })?;
        let data = out.freeze();
        let (result_tx, result_rx) = oneshot::channel();
        lock(&self.pending).insert(
            id.clone(),
            Pending {
                proxy: proxy.clone(),
                result: result_tx,
                progress,
            },
        );
        let sent = self.send(&session, data).await;
        match sent {
            Ok(None) => {}
            Ok(Some(body)) => {
                // Server-Sent Events and long polling: the result is the /send response.
                match ServerMessage::parse(&body) {
                    Ok(message) if message.id.is_some() => {
                        self.hub_response(&message);
                        self.emit_received(&String::from_utf8_lossy(&body));
                    }
                    Ok(_) | Err(_) => {
                        if let Some(pending) = lock(&self.pending).remove(&id) {
                            let _ = pending.result.send(Err(Error::new(
                                Kind::Protocol,
                                format!(
                                    "The server answered the invocation of '{method}' with something that is not a hub result."
                                ),
                            )));
                        }
                    }
                }
            }
            Err(err) => {
                lock(&self.pending).remove(&id);
                return Err(err);
            }
        }
        match result_rx.await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                Kind::Closed,
                "Connection was disconnected before invocation result was received.",
            )),
        }
    }

    /// Sends bytes: a WebSocket frame (`Ok(None)`), or `POST /send` (`Ok(Some(body))`).
    async fn send(&self, session: &Session, data: Bytes) -> Result<Option<Bytes>, Error> {
        match &session.ws_sender {
            Some(sender) => {
                let (ack_tx, ack_rx) = oneshot::channel();
                sender
                    .send(Outgoing {
                        data,
                        ack: Some(ack_tx),
                    })
                    .map_err(|_| crate::error::not_connected())?;
                match ack_rx.await {
                    Ok(result) => result.map(|()| None),
                    Err(_) => Err(crate::error::not_connected()),
                }
            }
            None => {
                let text = String::from_utf8_lossy(&data).into_owned();
                transport::post_send(
                    &session.endpoint,
                    session.kind,
                    &session.negotiation.connection_token,
                    &text,
                )
                .await
                .map(Some)
            }
        }
    }
}

/// Negotiates, following redirects: `endpoint` is updated to the last redirect's URL, query
/// and token.
async fn negotiate(endpoint: &mut Endpoint) -> Result<Negotiation, Error> {
    for _ in 0..=MAX_REDIRECTS {
        endpoint
            .http
            .tls
            .check_url(&endpoint.base, Kind::Negotiate)?;
        let url = endpoint.url("negotiate", None, None);
        let body = endpoint
            .get(url, REQUEST_TIMEOUT, "Negotiate failed")
            .await
            .map_err(|err| Error::wrap(Kind::Negotiate, err.message().to_owned(), err))?;
        match wire::parse_negotiate(&body)? {
            NegotiateReply::Connection(negotiation) => return Ok(negotiation),
            NegotiateReply::Redirect { url, access_token } => {
                let mut redirect = Url::parse(&url).map_err(|err| {
                    Error::with_source(
                        Kind::Negotiate,
                        format!("The negotiate redirect URL '{url}' is invalid: {err}"),
                        err,
                    )
                })?;
                if !matches!(redirect.scheme(), "http" | "https") {
                    return Err(Error::new(
                        Kind::Negotiate,
                        format!("The negotiate redirect URL '{url}' is not http(s)."),
                    ));
                }
                endpoint.query = redirect
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                redirect.set_query(None);
                redirect.set_fragment(None);
                if !redirect.path().ends_with('/') {
                    let path = format!("{}/", redirect.path());
                    redirect.set_path(&path);
                }
                endpoint.base = redirect;
                if let Some(token) = access_token {
                    endpoint.http.token = Some(token);
                }
                tracing::debug!(url = %endpoint.base, "negotiate redirected");
            }
        }
    }
    Err(Error::new(
        Kind::Negotiate,
        "Negotiate redirection limit exceeded.",
    ))
}

/// The client side of one hub (the .NET `IHubProxy`), from
/// [`ClassicHubConnection::create_hub_proxy`]. Cheap to clone.
#[derive(Clone)]
pub struct HubProxy {
    connection: ClassicHubConnection,
    shared: Arc<ProxyShared>,
}

impl std::fmt::Debug for HubProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubProxy")
            .field("hub", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl HubProxy {
    /// The hub name, as given to `create_hub_proxy`.
    pub fn hub_name(&self) -> &str {
        &self.shared.name
    }

    /// The connection the proxy belongs to.
    pub fn connection(&self) -> &ClassicHubConnection {
        &self.connection
    }

    /// Handles the client method `method` (the .NET `proxy.On<T>(...)`): typed
    /// (`|(symbol, price): (String, f64)|`) or dynamic (`|args: Vec<Payload>|`,
    /// `|args: serde_json::Value|` for all arguments as a JSON array), sync or async; see
    /// [`Handler`]. Names match ignoring case. Handlers run in the order the messages arrive,
    /// one at a time; their return values are ignored (classic servers take no client results).
    /// Dropping the [`Subscription`] removes the handler (the .NET `IDisposable`).
    pub fn on<M, H: Handler<M>>(&self, method: &str, handler: H) -> Subscription {
        let id = self.shared.handlers.add(method, erase(handler));
        Subscription::new(&self.shared.handlers, method, id)
    }

    /// Removes every handler of `method`.
    pub fn remove_handlers(&self, method: &str) {
        self.shared.handlers.remove_all(method);
    }

    /// Calls hub method `method` and binds its result to `T` (the .NET `Invoke<T>`); a void
    /// method's result is `null` (bind it to `()` or `Option<T>`). Arguments are a tuple of
    /// `Serialize` values (`("x",)`, `(1, 2)`) or a `Vec<serde_json::Value>`. The proxy's
    /// caller state goes with the call, and the state the hub changed is merged back before
    /// this returns. Waits for as long as the connection lives.
    ///
    /// # Errors
    /// [`Error::is_server_error`] when the hub failed (the server's text; with
    /// [`Error::is_hub_exception`] and [`Error::error_data`] for a `HubException`);
    /// [`Error::is_closed`] when not connected or the connection ended first;
    /// [`Error::is_decode`] when the result does not fit `T`; [`Error::is_encode`] for an
    /// argument that does not serialize; [`Error::is_transport`] when sending failed.
    pub async fn invoke<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl IntoArguments,
    ) -> Result<T, Error> {
        let raw = self
            .connection
            .shared
            .invoke(&self.shared, method, args.into_arguments(), None)
            .await?;
        decode(method, &raw)
    }

    /// Calls hub method `method` and ignores its result (the .NET `Invoke`).
    ///
    /// # Errors
    /// As [`HubProxy::invoke`], without decoding.
    pub async fn invoke_void(&self, method: &str, args: impl IntoArguments) -> Result<(), Error> {
        self.connection
            .shared
            .invoke(&self.shared, method, args.into_arguments(), None)
            .await
            .map(drop)
    }

    /// Calls a hub method that reports progress (an `IProgress<P>` parameter on the server,
    /// `Progress<P>` on a Rust server; the .NET `Invoke<T, TProgress>`): `on_progress` runs with
    /// each report, in order, until the result arrives. A report that does not bind to `P` is
    /// skipped (logged).
    ///
    /// # Errors
    /// As [`HubProxy::invoke`].
    pub async fn invoke_with_progress<T, P>(
        &self,
        method: &str,
        args: impl IntoArguments,
        on_progress: impl Fn(P) + Send + Sync + 'static,
    ) -> Result<T, Error>
    where
        T: DeserializeOwned,
        P: DeserializeOwned,
    {
        let owned_method = method.to_owned();
        let callback: ProgressCallback = Arc::new(
            move |raw: &RawValue| match serde_json::from_str::<P>(raw.get()) {
                Ok(value) => on_progress(value),
                Err(err) => {
                    tracing::warn!(method = %owned_method, error = %err, "a progress report that does not bind");
                }
            },
        );
        let raw = self
            .connection
            .shared
            .invoke(&self.shared, method, args.into_arguments(), Some(callback))
            .await?;
        decode(method, &raw)
    }

    /// A caller-state value (the .NET `proxy["name"]`): what was set, or what the hub set.
    pub fn get_state(&self, key: &str) -> Option<serde_json::Value> {
        lock(&self.shared.state).get(key).cloned()
    }

    /// Sets a caller-state value, sent with every later call (the .NET
    /// `proxy["name"] = value`). A value that does not serialize to JSON is stored as `null`.
    pub fn set_state(&self, key: impl Into<String>, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        lock(&self.shared.state).insert(key.into(), value);
    }

    /// Removes a caller-state value.
    pub fn remove_state(&self, key: &str) -> Option<serde_json::Value> {
        lock(&self.shared.state).remove(key)
    }
}

fn decode<T: DeserializeOwned>(method: &str, raw: &RawValue) -> Result<T, Error> {
    serde_json::from_str(raw.get()).map_err(|err| {
        Error::with_source(
            Kind::Decode,
            format!("The result of '{method}' does not fit the requested type: {err}"),
            err,
        )
    })
}
