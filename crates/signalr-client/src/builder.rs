//! `HubConnectionBuilder`: everything a connection is configured with.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use signalr_protocol::HubProtocol;

use crate::TransportType;
use crate::connection::HubConnection;
use crate::error::{BoxError, Error, Kind};
use crate::retry::{DefaultRetryPolicy, RetryPolicy};
use crate::tls::{TlsBackend, TlsConfig, TlsOptions};

/// What an access token provider's future may resolve to: a token (`String`, `&'static str`),
/// `Option<String>` (`None` = send no token), or a `Result` of either whose error becomes an
/// [`Error::is_access_token`] error of the connect attempt.
///
/// You don't implement this: it is implemented for those types.
pub trait IntoAccessToken: Send + 'static {
    /// Converts the provider's answer.
    ///
    /// # Errors
    /// The provider's own error.
    fn into_access_token(self) -> Result<Option<String>, BoxError>;
}

impl IntoAccessToken for String {
    fn into_access_token(self) -> Result<Option<String>, BoxError> {
        Ok(Some(self))
    }
}

impl IntoAccessToken for &'static str {
    fn into_access_token(self) -> Result<Option<String>, BoxError> {
        Ok(Some(self.to_owned()))
    }
}

impl IntoAccessToken for Option<String> {
    fn into_access_token(self) -> Result<Option<String>, BoxError> {
        Ok(self)
    }
}

impl<E: Into<BoxError> + Send + 'static> IntoAccessToken for Result<String, E> {
    fn into_access_token(self) -> Result<Option<String>, BoxError> {
        self.map(Some).map_err(Into::into)
    }
}

impl<E: Into<BoxError> + Send + 'static> IntoAccessToken for Result<Option<String>, E> {
    fn into_access_token(self) -> Result<Option<String>, BoxError> {
        self.map_err(Into::into)
    }
}

/// Supplies the bearer token of each (re)connect: an async closure `Fn() -> impl Future<Output =
/// impl IntoAccessToken>`.
pub trait AccessTokenProvider: Send + Sync + 'static {
    /// Fetches a token.
    fn access_token(&self) -> BoxFuture<'static, Result<Option<String>, BoxError>>;
}

impl<F, Fut> AccessTokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoAccessToken,
{
    fn access_token(&self) -> BoxFuture<'static, Result<Option<String>, BoxError>> {
        let future = self();
        Box::pin(async move { future.await.into_access_token() })
    }
}

/// The configuration a built connection uses.
pub(crate) struct Config {
    pub base_url: Url,
    pub protocol: HubProtocol,
    pub transports: Vec<TransportType>,
    pub skip_negotiation: bool,
    pub headers: HeaderMap,
    pub token_provider: Option<Arc<dyn AccessTokenProvider>>,
    pub http: reqwest::Client,
    /// The same HTTP client without a connection pool: every request opens a new socket.
    pub fresh_http: reqwest::Client,
    pub tls: TlsConfig,
    pub server_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub handshake_timeout: Duration,
    pub retry_policy: Option<Arc<dyn RetryPolicy>>,
    /// The replay buffer's bound in bytes when stateful reconnect is asked for, else `None`.
    pub stateful_reconnect: Option<usize>,
}

/// Configures and builds a [`HubConnection`] (the official clients' `HubConnectionBuilder`).
///
/// ```
/// use std::time::Duration;
/// use signalr_hub_client::{HubConnectionBuilder, HubProtocol, TransportType};
///
/// let connection = HubConnectionBuilder::new()
///     .with_url("https://example.com/chat")
///     .with_protocol(HubProtocol::MessagePack)
///     .with_transports([TransportType::WebSockets, TransportType::LongPolling])
///     .with_header("X-Tenant", "blue")
///     .with_access_token_provider(|| async { "my-jwt".to_owned() })
///     .server_timeout(Duration::from_secs(60))
///     .with_automatic_reconnect()
///     .build()?;
/// # Ok::<(), signalr_hub_client::Error>(())
/// ```
#[must_use]
pub struct HubConnectionBuilder {
    url: Option<String>,
    protocol: HubProtocol,
    transports: Vec<TransportType>,
    skip_negotiation: bool,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    token_provider: Option<Arc<dyn AccessTokenProvider>>,
    tls: TlsOptions,
    server_timeout: Duration,
    keep_alive_interval: Duration,
    handshake_timeout: Duration,
    retry_policy: Option<Arc<dyn RetryPolicy>>,
    stateful_reconnect: bool,
    stateful_buffer_size: usize,
}

impl Default for HubConnectionBuilder {
    fn default() -> Self {
        HubConnectionBuilder::new()
    }
}

impl std::fmt::Debug for HubConnectionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConnectionBuilder")
            .field("url", &self.url)
            .field("protocol", &self.protocol)
            .field("transports", &self.transports)
            .field("skip_negotiation", &self.skip_negotiation)
            .field("server_timeout", &self.server_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("automatic_reconnect", &self.retry_policy.is_some())
            .field("stateful_reconnect", &self.stateful_reconnect)
            .field("stateful_buffer_size", &self.stateful_buffer_size)
            .field("tls_backend", &self.tls.backend)
            .finish_non_exhaustive()
    }
}

/// The official fallback order (docs/protocol.md, "Transport fallback").
const ALL_TRANSPORTS: [TransportType; 3] = [
    TransportType::WebSockets,
    TransportType::ServerSentEvents,
    TransportType::LongPolling,
];

impl HubConnectionBuilder {
    /// A builder with the defaults of the official clients (docs/protocol.md, "Defaults"): JSON, every
    /// transport, negotiate, server timeout 30 s, keep-alive 15 s, handshake timeout 15 s, no
    /// automatic reconnect.
    pub fn new() -> Self {
        HubConnectionBuilder {
            url: None,
            protocol: HubProtocol::Json,
            transports: ALL_TRANSPORTS.to_vec(),
            skip_negotiation: false,
            headers: Vec::new(),
            query: Vec::new(),
            token_provider: None,
            tls: TlsOptions::default(),
            server_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(15),
            retry_policy: None,
            stateful_reconnect: false,
            stateful_buffer_size: crate::stateful::DEFAULT_BUFFER_SIZE,
        }
    }

    /// The hub's URL, e.g. `http://127.0.0.1:5000/chat` (`http`, `https`; `ws`/`wss` are read as
    /// `http`/`https`). Its query string is kept on every request. Required.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The hub protocol (docs/protocol.md, "JSON encoding", "MessagePack encoding"): [`HubProtocol::Json`] (default) or
    /// [`HubProtocol::MessagePack`]. MessagePack needs a binary transport (WebSockets or long
    /// polling); Server-Sent Events are skipped for it.
    pub fn with_protocol(mut self, protocol: HubProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Allows only `transport`.
    pub fn with_transport(mut self, transport: TransportType) -> Self {
        self.transports = vec![transport];
        self
    }

    /// Allows these transports (default: all three). The order of the server's negotiate
    /// response decides which is tried first; one that fails to start is skipped and negotiate
    /// is repeated before the next (docs/protocol.md, "Transport fallback").
    pub fn with_transports(mut self, transports: impl IntoIterator<Item = TransportType>) -> Self {
        self.transports = transports.into_iter().collect();
        self
    }

    /// Connects the WebSocket directly, without negotiate (docs/protocol.md, "Transport fallback"). Only valid with
    /// exactly [`TransportType::WebSockets`] allowed; [`HubConnectionBuilder::build`] fails otherwise.
    /// The connection then has no connection id.
    pub fn skip_negotiation(mut self, skip: bool) -> Self {
        self.skip_negotiation = skip;
        self
    }

    /// Adds a header to every HTTP request (negotiate, WebSocket upgrade, SSE, polls, POSTs,
    /// DELETE). An invalid name or value fails [`HubConnectionBuilder::build`].
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a query parameter to the hub URL (so to every request).
    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Supplies a bearer token, fetched once per start and per reconnect attempt. It is sent as
    /// `Authorization: Bearer <token>` on every request and, for WebSockets and Server-Sent
    /// Events, also as the `access_token` query parameter (as the TS client does, reference
    /// docs/protocol.md, "Authentication"). A negotiate redirect that carries an `accessToken` replaces it for the rest of that
    /// attempt (docs/protocol.md, "Redirects").
    ///
    /// ```
    /// # let builder = signalr_hub_client::HubConnectionBuilder::new();
    /// let builder = builder.with_access_token_provider(|| async {
    ///     // e.g. fetch or refresh a JWT here
    ///     Ok::<_, std::io::Error>("eyJhbGciOi...".to_owned())
    /// });
    /// # drop(builder);
    /// ```
    pub fn with_access_token_provider(mut self, provider: impl AccessTokenProvider) -> Self {
        self.token_provider = Some(Arc::new(provider));
        self
    }

    /// Presents a client certificate (mutual TLS) to `https`/`wss` servers: `cert_chain_pem` holds
    /// the certificate and its intermediates (PEM `CERTIFICATE` blocks), `key_pem` its private key
    /// in PEM: PKCS#8 (`BEGIN PRIVATE KEY`) with either backend; PKCS#1 (`BEGIN RSA PRIVATE KEY`)
    /// and SEC1 (`BEGIN EC PRIVATE KEY`) with rustls only, native-tls refuses them (convert with
    /// `openssl pkcs8 -topk8 -nocrypt`). Read by [`HubConnectionBuilder::build`], which fails when
    /// either does not parse or the backend refuses them (crate docs, "TLS").
    pub fn with_client_certificate(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.identity = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// Trusts the certificate(s) as roots, besides the backend's own (Mozilla's roots with
    /// rustls, the system's with native-tls): for servers with a private CA or a self-signed
    /// certificate. `certificate` is PEM (one or more `CERTIFICATE` blocks) or one DER
    /// certificate; may be called several times. [`HubConnectionBuilder::build`] fails when it
    /// does not parse.
    pub fn with_root_certificate(mut self, certificate: impl Into<Vec<u8>>) -> Self {
        self.tls.roots.push(certificate.into());
        self
    }

    /// The TLS library of `https`/`wss` requests when both the `rustls` and `native-tls` features
    /// are on (default: `TlsBackend::Rustls`; with one feature, that one; crate docs, "TLS").
    pub fn tls_backend(mut self, backend: TlsBackend) -> Self {
        self.tls.backend = Some(backend);
        self
    }

    /// The connection closes with `Server timeout elapsed without receiving a message from the
    /// server.` when nothing arrived for this long (default 30 s; docs/protocol.md, "Keep-alive and timeouts"). Keep it at least
    /// twice the server's keep-alive interval. Not used on long polling.
    pub fn server_timeout(mut self, timeout: Duration) -> Self {
        self.server_timeout = timeout;
        self
    }

    /// A Ping is sent when nothing was sent for this long (default 15 s; docs/protocol.md, "Keep-alive and timeouts"). Not
    /// used on long polling.
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = interval;
        self
    }

    /// How long the server has to answer the handshake (default 15 s; docs/protocol.md, "Handshake").
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Reconnects automatically when an established connection is lost, waiting 0, 2, 10 and 30
    /// seconds before the four attempts, then gives up ([`DefaultRetryPolicy`]).
    pub fn with_automatic_reconnect(self) -> Self {
        self.with_retry_policy(DefaultRetryPolicy::default())
    }

    /// Reconnects automatically with these delays, one per attempt, then gives up.
    pub fn with_automatic_reconnect_delays(self, delays: Vec<Duration>) -> Self {
        self.with_retry_policy(DefaultRetryPolicy::new(delays))
    }

    /// Reconnects automatically as `policy` decides.
    pub fn with_retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.retry_policy = Some(Arc::new(policy));
        self
    }

    /// Asks for stateful reconnect (ASP.NET Core 8+, the official clients'
    /// `WithStatefulReconnect()` / `withStatefulReconnect()`; docs/protocol.md, "Stateful
    /// reconnect"). Negotiate then carries `useStatefulReconnect=true`; when the server answers
    /// `"useStatefulReconnect": true` (its hub allows it: ASP.NET `AllowStatefulReconnects`) and
    /// the transport is WebSockets, the handshake is sent with version 2 and the feature is on
    /// for that connection. On other transports, with [`HubConnectionBuilder::skip_negotiation`]
    /// (no connection token), or when the server declines, the connection works as without it.
    ///
    /// When the feature is on:
    /// - Every Invocation, StreamItem, Completion, StreamInvocation and CancelInvocation sent is
    ///   kept (encoded) until the server acknowledges it, within
    ///   [`HubConnectionBuilder::stateful_reconnect_buffer_size`] bytes (100,000 by default).
    ///   When more is buffered, [`HubConnection::send`], [`HubConnection::invoke`],
    ///   [`HubConnection::stream`], upload-stream items and client results wait for an Ack; a
    ///   wait that lasts longer than [`HubConnectionBuilder::server_timeout`] fails the call with
    ///   an [`Error::is_timeout`] error. `send` resolves once the message is in that buffer.
    /// - The client acknowledges what it received about once a second.
    /// - When the WebSocket breaks without a close frame or Close message (a network loss), the
    ///   connection opens one new WebSocket to the same connection (same `id`, no negotiate, no
    ///   handshake) within [`HubConnectionBuilder::handshake_timeout`]; both sides then send
    ///   again what the other did not acknowledge, duplicates are dropped, and the connection
    ///   goes on with the same connection id. As in the official clients the state stays
    ///   `Connected` and no reconnecting/reconnected event runs. Pending calls, streams and
    ///   server-side state (groups) survive; calls made meanwhile are buffered.
    /// - When that fails (for example the server's disconnect timeout, 15 s, has passed and it
    ///   answers 404), the pending calls fail and the connection goes on as without the feature:
    ///   automatic reconnect if configured (new negotiate, new connection id), else
    ///   `Disconnected`.
    /// - A graceful end (a close frame, a Close message, `stop()`) and a server timeout are not
    ///   resumed, as with the .NET client.
    pub fn with_stateful_reconnect(mut self) -> Self {
        self.stateful_reconnect = true;
        self
    }

    /// The bound of the stateful-reconnect replay buffer in bytes (default 100,000, the official
    /// clients' `StatefulReconnectBufferSize` / `bufferSize`): once the unacknowledged messages
    /// exceed it, further sends wait for the server's Ack. Used only with
    /// [`HubConnectionBuilder::with_stateful_reconnect`], which it does not turn on by itself.
    /// With 0 every message waits until all earlier ones were acknowledged (about one a second).
    pub fn stateful_reconnect_buffer_size(mut self, bytes: usize) -> Self {
        self.stateful_buffer_size = bytes;
        self
    }

    /// Builds the connection (not started: call [`HubConnection::start`]). Needs no runtime.
    ///
    /// # Errors
    /// An [`Error::is_builder`] error when no URL was given or it is not `http(s)`/`ws(s)`, when
    /// negotiation is skipped with a transport other than WebSockets (`Negotiation can only be
    /// skipped when using the WebSocket transport directly.`), when no transport is allowed, for
    /// an invalid header, or a certificate or key that does not parse or that the TLS backend
    /// refuses.
    pub fn build(self) -> Result<HubConnection, Error> {
        let builder_error = |message: String| Error::new(Kind::Builder, message);
        let text = self
            .url
            .ok_or_else(|| builder_error("A hub URL is required: call with_url().".to_owned()))?;
        let mut url = Url::parse(&text).map_err(|err| {
            Error::with_source(
                Kind::Builder,
                format!("Invalid hub URL '{text}': {err}"),
                err,
            )
        })?;
        let scheme = match url.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            other => {
                return Err(builder_error(format!(
                    "Invalid hub URL '{text}': the scheme '{other}' is not http(s) or ws(s)."
                )));
            }
        };
        if url.scheme() != scheme {
            // `Url::set_scheme` refuses ws -> http; rebuild the URL instead.
            let rest = &text[text.find(':').unwrap_or(0)..];
            url = Url::parse(&format!("{scheme}{rest}")).map_err(|err| {
                Error::with_source(
                    Kind::Builder,
                    format!("Invalid hub URL '{text}': {err}"),
                    err,
                )
            })?;
        }
        url.set_fragment(None);
        if !self.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &self.query {
                pairs.append_pair(name, value);
            }
        }

        let mut transports = Vec::new();
        for transport in self.transports {
            if !transports.contains(&transport) {
                transports.push(transport);
            }
        }
        if transports.is_empty() {
            return Err(builder_error("No transport is allowed.".to_owned()));
        }
        if self.skip_negotiation && transports != [TransportType::WebSockets] {
            return Err(builder_error(
                "Negotiation can only be skipped when using the WebSocket transport directly."
                    .to_owned(),
            ));
        }

        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("signalr-hub-client/", env!("CARGO_PKG_VERSION"))),
        );
        // Cookie-authenticated servers answer 401 instead of redirecting to a login page.
        headers.insert(
            HeaderName::from_static("x-requested-with"),
            HeaderValue::from_static("XMLHttpRequest"),
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
        let http = tls.http_client(true)?;
        let fresh_http = tls.http_client(false)?;

        Ok(HubConnection::from_config(Config {
            base_url: url,
            protocol: self.protocol,
            transports,
            skip_negotiation: self.skip_negotiation,
            headers,
            token_provider: self.token_provider,
            http,
            fresh_http,
            tls,
            server_timeout: self.server_timeout,
            keep_alive_interval: self.keep_alive_interval,
            handshake_timeout: self.handshake_timeout,
            retry_policy: self.retry_policy,
            stateful_reconnect: self.stateful_reconnect.then_some(self.stateful_buffer_size),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors() {
        let err = HubConnectionBuilder::new().build().expect_err("no url");
        assert!(err.is_builder());
        let err = HubConnectionBuilder::new()
            .with_url("ftp://x/hub")
            .build()
            .expect_err("bad scheme");
        assert!(err.is_builder(), "{err}");
        let err = HubConnectionBuilder::new()
            .with_url("http://x/hub")
            .skip_negotiation(true)
            .build()
            .expect_err("skip with all transports");
        assert_eq!(
            err.to_string(),
            "Negotiation can only be skipped when using the WebSocket transport directly."
        );
        let err = HubConnectionBuilder::new()
            .with_url("http://x/hub")
            .with_header("bad header", "v")
            .build()
            .expect_err("bad header");
        assert!(err.is_builder());
        let err = HubConnectionBuilder::new()
            .with_url("http://x/hub")
            .with_client_certificate("not pem", "not pem")
            .build()
            .expect_err("bad certificate");
        assert!(err.is_builder(), "{err}");
        HubConnectionBuilder::new()
            .with_url("ws://x/hub")
            .with_transport(TransportType::WebSockets)
            .skip_negotiation(true)
            .build()
            .expect("skip negotiation with WebSockets only");
    }
}
