//! `HubConnection`: the connection's state machine, calls, handlers, events and reconnect.

use std::any::TypeId;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use signalr_protocol::{
    CompletionResult, Headers, HubMessage, Invocation, Payload, StreamInvocation,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::TransportType;
use crate::args::{Argument, ClientStream, IntoArguments};
use crate::builder::Config;
use crate::error::{Error, Kind, not_connected};
use crate::handlers::{Handler, HandlerRegistry, Subscription, erase, lock};
use crate::negotiate::{self, AvailableTransport, connect_url};
use crate::retry::RetryContext;
use crate::session::{self, Established, Pending, ResumeTarget, Session, StatefulSetup, Timeouts};
use crate::stream::HubStream;
use crate::transport::{HttpContext, TransportConnection, long_polling, sse, websocket};

/// The state of a [`HubConnection`] (the official clients' `HubConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubConnectionState {
    /// Not connected: before `start()`, after `stop()`, after a failed start, or after the
    /// connection was lost and not (or no longer) reconnecting.
    Disconnected,
    /// `start()` is negotiating, opening the transport or doing the handshake.
    Connecting,
    /// Connected: calls can be made.
    Connected,
    /// `stop()` is closing the connection.
    Disconnecting,
    /// The connection was lost and automatic reconnect is trying to get it back.
    Reconnecting,
}

impl fmt::Display for HubConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HubConnectionState::Disconnected => "Disconnected",
            HubConnectionState::Connecting => "Connecting",
            HubConnectionState::Connected => "Connected",
            HubConnectionState::Disconnecting => "Disconnecting",
            HubConnectionState::Reconnecting => "Reconnecting",
        })
    }
}

type ClosedHandler = Arc<dyn Fn(Option<Error>) + Send + Sync>;
type ReconnectingHandler = Arc<dyn Fn(Error) + Send + Sync>;
type ReconnectedHandler = Arc<dyn Fn(Option<String>) + Send + Sync>;

#[derive(Default)]
struct Events {
    closed: Vec<ClosedHandler>,
    reconnecting: Vec<ReconnectingHandler>,
    reconnected: Vec<ReconnectedHandler>,
}

/// One `start()` and everything until the connection is `Disconnected` again.
#[derive(Clone)]
struct Run {
    /// Cancelled by `stop()` (or when the last handle is dropped).
    stop: CancellationToken,
    /// Cancelled once the run is over (state `Disconnected`, closed handlers called).
    finished: CancellationToken,
}

struct StateData {
    state: HubConnectionState,
    connection_id: Option<String>,
    session: Option<Arc<Session>>,
    run: Option<Run>,
}

pub(crate) struct Inner {
    config: Config,
    state: Mutex<StateData>,
    handlers: Arc<HandlerRegistry>,
    events: Mutex<Events>,
    /// Invocation and upload-stream ids: a decimal counter from 0 (TS client, docs/protocol.md, "Invocation ids").
    next_id: AtomicU64,
}

/// The user-facing handle; when the last clone is dropped the connection is stopped.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if let Some(run) = state.run.clone() {
            if matches!(
                state.state,
                HubConnectionState::Connected | HubConnectionState::Reconnecting
            ) {
                state.state = HubConnectionState::Disconnecting;
            }
            run.stop.cancel();
        }
    }
}

/// A connection to a SignalR hub (the official clients' `HubConnection`), made with
/// [`HubConnectionBuilder`](crate::HubConnectionBuilder).
///
/// Cheap to clone (an `Arc`), `Send + Sync`: clones share one connection. When the last clone is
/// dropped a running connection is stopped (handlers that capture a clone keep it alive; call
/// [`HubConnection::stop`] to end it explicitly).
#[derive(Clone)]
pub struct HubConnection {
    handle: Arc<Handle>,
}

impl fmt::Debug for HubConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConnection")
            .field("url", &self.inner().config.base_url.as_str())
            .field("state", &self.state())
            .field("connection_id", &self.connection_id())
            .finish()
    }
}

impl HubConnection {
    pub(crate) fn from_config(config: Config) -> Self {
        HubConnection {
            handle: Arc::new(Handle {
                inner: Arc::new(Inner {
                    config,
                    state: Mutex::new(StateData {
                        state: HubConnectionState::Disconnected,
                        connection_id: None,
                        session: None,
                        run: None,
                    }),
                    handlers: Arc::default(),
                    events: Mutex::default(),
                    next_id: AtomicU64::new(0),
                }),
            }),
        }
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// The current state.
    pub fn state(&self) -> HubConnectionState {
        lock(&self.inner().state).state
    }

    /// The public connection id the server gave in negotiate (what the server's
    /// `connection_id()` / `Context.ConnectionId` returns); `None` unless connected (or resuming
    /// with stateful reconnect), and always `None` with skip-negotiation. Changes with every
    /// reconnect, except a stateful resume, which keeps the connection.
    pub fn connection_id(&self) -> Option<String> {
        lock(&self.inner().state).connection_id.clone()
    }

    /// Starts the connection: negotiate (following redirects), a transport (falling back to the
    /// next one that the server offers when one fails to start), the handshake, then a Ping.
    /// Resolves once the connection is `Connected`.
    ///
    /// A failed start is not retried, even with automatic reconnect (which only applies to
    /// connections that were established); retry in a loop yourself, as the ASP.NET docs
    /// recommend:
    ///
    /// ```no_run
    /// # async fn demo(connection: signalr_hub_client::HubConnection) {
    /// while let Err(err) = connection.start().await {
    ///     eprintln!("start failed: {err}; retrying in 5 s");
    ///     tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::is_invalid_state`] unless `Disconnected`; otherwise what failed:
    /// [`Error::is_negotiate`], [`Error::is_transport`], [`Error::is_handshake`],
    /// [`Error::is_timeout`], [`Error::is_access_token`], or [`Error::is_closed`] when `stop()` was
    /// called meanwhile.
    pub async fn start(&self) -> Result<(), Error> {
        let inner = self.inner().clone();
        let run = {
            let mut state = lock(&inner.state);
            if state.state != HubConnectionState::Disconnected {
                return Err(Error::new(
                    Kind::InvalidState,
                    "Cannot start a HubConnection that is not in the 'Disconnected' state.",
                ));
            }
            state.state = HubConnectionState::Connecting;
            let run = Run {
                stop: CancellationToken::new(),
                finished: CancellationToken::new(),
            };
            state.run = Some(run.clone());
            run
        };
        // If this future is dropped before it finishes, the connection goes back to
        // Disconnected.
        let mut guard = StartGuard {
            inner: inner.clone(),
            run: run.clone(),
            armed: true,
        };
        let connected = tokio::select! {
            biased;
            () = run.stop.cancelled() => Err(stopped_during_start()),
            result = inner.connect() => result,
        };
        match connected {
            Ok(established) => {
                let mut state = lock(&inner.state);
                if run.stop.is_cancelled() {
                    drop(state);
                    established.abandon().await;
                    return Err(stopped_during_start());
                }
                state.state = HubConnectionState::Connected;
                state.connection_id = established.session.connection_id.clone();
                state.session = Some(established.session.clone());
                drop(state);
                guard.armed = false;
                tracing::debug!(connection_id = ?self.connection_id(), "HubConnection connected");
                tokio::spawn(inner.supervise(established, run));
                Ok(())
            }
            Err(err) => {
                tracing::debug!(error = %err, "HubConnection failed to start");
                Err(err)
            }
        }
    }

    /// Stops the connection: sends a Close message, closes the transport (WebSocket close frame,
    /// long-polling DELETE) and waits until the state is `Disconnected` and the closed handlers
    /// ran. Stops a reconnect in progress and aborts a `start()` in progress. Does nothing when
    /// already `Disconnected`.
    pub async fn stop(&self) {
        let run = {
            let mut state = lock(&self.inner().state);
            if state.state == HubConnectionState::Disconnected {
                return;
            }
            if matches!(
                state.state,
                HubConnectionState::Connected | HubConnectionState::Reconnecting
            ) {
                state.state = HubConnectionState::Disconnecting;
            }
            state.run.clone()
        };
        if let Some(run) = run {
            run.stop.cancel();
            run.finished.cancelled().await;
        }
    }

    /// Registers a handler for the client method `method` (matched case-insensitively, reference
    /// docs/protocol.md, "Method names"); several handlers of one method all run, in registration order. Returns a
    /// [`Subscription`]: dropping it removes the handler.
    ///
    /// The handler takes the arguments as one value (see [`Handler`]): a tuple
    /// `|(user, text): (String, String)|`, one argument as `|(n,): (i64,)|`,
    /// `|args: serde_json::Value|` (a JSON array), a struct deriving `Deserialize`
    /// (positional), or the raw `|args: Vec<Payload>|`. It may be `async`.
    ///
    /// Its return value answers a server's client-result call (`clients().client(id).invoke`,
    /// docs/protocol.md, "Client results"): `Some(value)` / `Ok(value)` completes it with `value`, `Err(e)` with
    /// `e`'s text; `()` / `None` from every handler (or no handler at all) answers
    /// `Client didn't provide a result.`, and values from several handlers
    /// `Client provided multiple results.`.
    ///
    /// Handlers of one connection run one at a time, in the order the invocations arrived, on a
    /// task of their own: a handler may await `invoke` on the same connection. (So the result of
    /// an `invoke` can arrive before the handlers of invocations the server sent just before it
    /// have finished.)
    ///
    /// ```no_run
    /// # fn demo(connection: signalr_hub_client::HubConnection) {
    /// let _messages = connection.on("ReceiveMessage", |(user, text): (String, String)| {
    ///     println!("{user}: {text}");
    /// });
    /// connection
    ///     .on("GetAnswer", |(question,): (String,)| async move { Some(question.len() * 2) })
    ///     .detach(); // keep this one for the connection's lifetime
    /// # }
    /// ```
    pub fn on<M, H: Handler<M>>(&self, method: &str, handler: H) -> Subscription {
        let registry = &self.inner().handlers;
        let id = registry.add(method, erase(handler));
        Subscription::new(registry, method, id)
    }

    /// Removes every handler of `method` (TS `off(method)`).
    pub fn remove(&self, method: &str) {
        self.inner().handlers.remove_all(method);
    }

    /// Calls `handler` when the connection closes for good (state `Disconnected` after having
    /// been connected): with `None` after `stop()` or a clean close, with the error otherwise
    /// (including after reconnect attempts ran out). Called on a runtime thread; do async work
    /// with `tokio::spawn` (for example a restart loop).
    pub fn on_closed(&self, handler: impl Fn(Option<Error>) + Send + Sync + 'static) {
        lock(&self.inner().events).closed.push(Arc::new(handler));
    }

    /// Calls `handler` when a lost connection starts reconnecting (state `Reconnecting`), with the
    /// error that broke it. Calls fail while reconnecting. A stateful resume
    /// ([`HubConnectionBuilder::with_stateful_reconnect`](crate::HubConnectionBuilder::with_stateful_reconnect))
    /// is not a reconnect here, as in the official clients: the connection stays `Connected`
    /// and calls are buffered; `handler` runs only when the resume fails and automatic
    /// reconnect takes over.
    pub fn on_reconnecting(&self, handler: impl Fn(Error) + Send + Sync + 'static) {
        lock(&self.inner().events)
            .reconnecting
            .push(Arc::new(handler));
    }

    /// Calls `handler` when reconnecting succeeded (state `Connected` again), with the new
    /// connection id. Server-side state of the old connection (groups) is gone: rejoin here.
    /// A stateful resume does not call it (see [`on_reconnecting`](Self::on_reconnecting)).
    pub fn on_reconnected(&self, handler: impl Fn(Option<String>) + Send + Sync + 'static) {
        lock(&self.inner().events)
            .reconnected
            .push(Arc::new(handler));
    }

    /// The session calls go to: while `Connected` (during a stateful resume too: the session is
    /// kept and calls are buffered until it is back).
    fn session(&self) -> Result<Arc<Session>, Error> {
        let state = lock(&self.inner().state);
        match (&state.state, &state.session) {
            (HubConnectionState::Connected | HubConnectionState::Reconnecting, Some(session)) => {
                Ok(session.clone())
            }
            _ => Err(not_connected()),
        }
    }

    fn next_id(&self) -> String {
        self.inner()
            .next_id
            .fetch_add(1, Ordering::Relaxed)
            .to_string()
    }

    /// Splits arguments into values and upload streams (with their new ids).
    fn split(&self, arguments: impl IntoArguments) -> (Vec<Payload>, Vec<(String, ClientStream)>) {
        let mut values = Vec::new();
        let mut streams = Vec::new();
        for argument in arguments.into_arguments() {
            match argument {
                Argument::Value(payload) => values.push(payload),
                Argument::Stream(stream) => streams.push((self.next_id(), stream)),
            }
        }
        (values, streams)
    }

    /// Invokes hub method `method` and waits for its Completion (docs/protocol.md, "Message types"); the result is
    /// bound to `T` with serde. Use `T = ()` to ignore any result.
    ///
    /// `arguments` is `()`, a tuple (`("ann", "hi")`, one argument `("hi",)`), a
    /// `Vec<serde_json::Value>` or a `Vec<Payload>`; a [`ClientStream`] among them is an upload
    /// stream (docs/protocol.md, "Client-to-server streams").
    ///
    /// # Errors
    /// [`Error::is_server_error`] with the server's text when the method failed (for a
    /// `HubError::new("boom")` on a Rust server or a `HubException` on ASP.NET:
    /// `An unexpected error occurred invoking 'M' on the server. HubException: boom`);
    /// [`Error::is_decode`] when the result does not fit `T`; [`Error::is_closed`] when not
    /// connected, or at once when the connection drops before the Completion arrives (with
    /// stateful reconnect: when the connection is lost and cannot be resumed);
    /// [`Error::is_encode`] / [`Error::is_transport`] when the invocation could not be sent;
    /// [`Error::is_timeout`] when the stateful-reconnect replay buffer stayed full for the
    /// server timeout.
    pub async fn invoke<T: DeserializeOwned + 'static>(
        &self,
        method: &str,
        arguments: impl IntoArguments,
    ) -> Result<T, Error> {
        let session = self.session()?;
        let (values, streams) = self.split(arguments);
        let id = self.next_id();
        let (sender, completion) = oneshot::channel();
        session.register(id.clone(), Pending::Invoke(sender))?;
        let message = HubMessage::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: Some(id.clone()),
            target: method.to_owned(),
            arguments: values,
            stream_ids: streams.iter().map(|(id, _)| id.clone()).collect(),
        });
        let written = match session.send_acked(&message).await {
            Ok(written) => written,
            Err(err) => {
                session.remove(&id);
                return Err(err);
            }
        };
        session.launch_streams(streams);
        if let Err(err) = session::wait_written(written).await {
            session.remove(&id);
            return Err(err);
        }
        let result = completion.await.map_err(|_| {
            Error::new(
                Kind::Closed,
                "Invocation canceled due to the underlying connection being closed.",
            )
        })??;
        match result {
            CompletionResult::Error(error) => Err(Error::new(Kind::Server, error)),
            _ if TypeId::of::<T>() == TypeId::of::<()>() => decode_null(),
            CompletionResult::Value(payload) => payload.deserialize::<T>().map_err(|err| {
                Error::with_source(
                    Kind::Decode,
                    format!("The result of '{method}' could not be deserialized: {err}"),
                    err,
                )
            }),
            CompletionResult::Void => decode_null().map_err(|err: Error| {
                Error::wrap(
                    Kind::Decode,
                    format!(
                        "'{method}' returned no result, which does not fit the requested type."
                    ),
                    err,
                )
            }),
        }
    }

    /// Invokes hub method `method` without waiting for it to run (an Invocation without id: the
    /// server answers nothing, docs/protocol.md, "Invocation ids"). Resolves once the message was written to the
    /// transport; with stateful reconnect, once it is in the replay buffer (it is sent again
    /// after a loss until the server acknowledges it). Arguments as for [`HubConnection::invoke`].
    ///
    /// # Errors
    /// [`Error::is_closed`] when not connected; [`Error::is_encode`] / [`Error::is_transport`]
    /// when it could not be sent; [`Error::is_timeout`] when the stateful-reconnect replay
    /// buffer stayed full for the server timeout (nothing was sent then).
    pub async fn send(&self, method: &str, arguments: impl IntoArguments) -> Result<(), Error> {
        let session = self.session()?;
        let (values, streams) = self.split(arguments);
        let message = HubMessage::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: method.to_owned(),
            arguments: values,
            stream_ids: streams.iter().map(|(id, _)| id.clone()).collect(),
        });
        let written = session.send_acked(&message).await?;
        session.launch_streams(streams);
        session::wait_written(written).await
    }

    /// Calls streaming hub method `method` (a StreamInvocation, docs/protocol.md, "Server-to-client streams") and returns its
    /// items as a [`HubStream`], once the invocation was written. Dropping the stream early sends
    /// a CancelInvocation. Arguments as for [`HubConnection::invoke`].
    ///
    /// ```no_run
    /// # async fn demo(connection: signalr_hub_client::HubConnection) -> Result<(), signalr_hub_client::Error> {
    /// use futures_util::StreamExt;
    ///
    /// let mut counter = connection.stream::<u32>("Countdown", (10,)).await?;
    /// while let Some(item) = counter.next().await {
    ///     println!("{}", item?);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for [`HubConnection::send`]; errors of the stream itself come as its items.
    pub async fn stream<T: DeserializeOwned>(
        &self,
        method: &str,
        arguments: impl IntoArguments,
    ) -> Result<HubStream<T>, Error> {
        let session = self.session()?;
        let (values, streams) = self.split(arguments);
        let id = self.next_id();
        let (sender, items) = mpsc::unbounded_channel();
        session.register(id.clone(), Pending::Stream(sender))?;
        let message = HubMessage::StreamInvocation(StreamInvocation {
            headers: Headers::new(),
            invocation_id: id.clone(),
            target: method.to_owned(),
            arguments: values,
            stream_ids: streams.iter().map(|(id, _)| id.clone()).collect(),
        });
        let written = match session.send_acked(&message).await {
            Ok(written) => written,
            Err(err) => {
                session.remove(&id);
                return Err(err);
            }
        };
        session.launch_streams(streams);
        let stream = HubStream::new(items, Arc::downgrade(&session), id.clone());
        if let Err(err) = session::wait_written(written).await {
            session.remove(&id);
            return Err(err);
        }
        Ok(stream)
    }
}

fn decode_null<T: DeserializeOwned>() -> Result<T, Error> {
    serde_json::from_value(serde_json::Value::Null)
        .map_err(|err| Error::with_source(Kind::Decode, err.to_string(), err))
}

fn stopped_during_start() -> Error {
    Error::new(
        Kind::Closed,
        "The connection was stopped before the hub handshake could complete.",
    )
}

/// Puts the state back to `Disconnected` if `start()` ends (or is dropped) without connecting.
struct StartGuard {
    inner: Arc<Inner>,
    run: Run,
    armed: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            let mut state = lock(&self.inner.state);
            state.state = HubConnectionState::Disconnected;
            state.connection_id = None;
            state.session = None;
            state.run = None;
            drop(state);
            self.run.finished.cancel();
        }
    }
}

impl Inner {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            server_timeout: self.config.server_timeout,
            keep_alive_interval: self.config.keep_alive_interval,
            handshake_timeout: self.config.handshake_timeout,
        }
    }

    /// One connect attempt: token, negotiate, transport (with fallback), handshake.
    async fn connect(&self) -> Result<Established, Error> {
        let config = &self.config;
        let token = match &config.token_provider {
            Some(provider) => provider.access_token().await.map_err(|err| {
                let message = format!("The access token provider failed: {err}");
                Error::with_source(Kind::AccessToken, message, err)
            })?,
            None => None,
        };
        let provider_token = token.clone();
        let mut http = HttpContext {
            client: config.http.clone(),
            fresh_client: config.fresh_http.clone(),
            tls: config.tls.clone(),
            headers: config.headers.clone(),
            token,
            binary: config.protocol == signalr_protocol::HubProtocol::MessagePack,
        };
        let (transport, connection_id, stateful) = if config.skip_negotiation {
            // No connection token to resume with: stateful reconnect needs negotiate.
            (websocket::start(&http, &config.base_url).await?, None, None)
        } else {
            let asked = config.stateful_reconnect.is_some();
            let (url, negotiated) =
                negotiate::negotiate(&mut http, &config.base_url, asked).await?;
            let (transport, connection_id, resume_url) =
                self.select_transport(&http, &url, negotiated).await?;
            let stateful = match (resume_url, config.stateful_reconnect) {
                (Some(url), Some(buffer_size)) => {
                    // A token from a negotiate redirect cannot be asked for again: keep it.
                    let token_provider = config
                        .token_provider
                        .clone()
                        .filter(|_| http.token == provider_token);
                    Some(StatefulSetup {
                        buffer_size,
                        target: ResumeTarget {
                            http: http.clone(),
                            url,
                            token_provider,
                        },
                    })
                }
                _ => None,
            };
            (transport, connection_id, stateful)
        };
        if stateful.is_some() {
            tracing::debug!("stateful reconnect negotiated");
        }
        session::handshake(
            transport,
            config.protocol,
            connection_id,
            self.timeouts(),
            stateful,
        )
        .await
    }

    /// The TS client's transport choice (docs/protocol.md, "Transport fallback"): the server's transports in its order,
    /// skipping those not allowed or not able to carry the protocol's transfer format; a
    /// transport that fails to start is skipped and negotiate is repeated before the next.
    ///
    /// Returns the transport, the connection id, and when stateful reconnect was granted and
    /// the transport is WebSockets, the URL to resume at.
    async fn select_transport(
        &self,
        http: &HttpContext,
        url: &reqwest::Url,
        negotiated: negotiate::Negotiated,
    ) -> Result<(TransportConnection, Option<String>, Option<reqwest::Url>), Error> {
        let asked = self.config.stateful_reconnect.is_some();
        let format = if http.binary { "Binary" } else { "Text" };
        let mut negotiated = Some(negotiated);
        let mut failures: Vec<String> = Vec::new();
        let available = negotiated
            .as_ref()
            .map(|n| n.available_transports.clone())
            .unwrap_or_default();
        for AvailableTransport {
            transport,
            transfer_formats,
        } in available
        {
            let kind = match transport.as_str() {
                "WebSockets" => TransportType::WebSockets,
                "ServerSentEvents" => TransportType::ServerSentEvents,
                "LongPolling" => TransportType::LongPolling,
                other => {
                    failures.push(format!(
                        "{other} failed: Skipping transport '{other}' because it is not supported by this client."
                    ));
                    continue;
                }
            };
            if !self.config.transports.contains(&kind) {
                failures.push(format!(
                    "{transport} failed: '{transport}' is disabled by the client."
                ));
                continue;
            }
            if !transfer_formats.iter().any(|f| f == format) {
                failures.push(format!(
                    "{transport} failed: '{transport}' does not support {format}."
                ));
                continue;
            }
            let current = match negotiated.take() {
                Some(current) => current,
                None => negotiate::renegotiate(http, url, asked).await?,
            };
            let connect = connect_url(url, &current.connection_token);
            let started = match kind {
                TransportType::WebSockets => websocket::start(http, &connect).await,
                TransportType::ServerSentEvents => sse::start(http, &connect).await,
                TransportType::LongPolling => long_polling::start(http, &connect).await,
            };
            match started {
                Ok(connection) => {
                    let resume_url = (kind == TransportType::WebSockets
                        && current.use_stateful_reconnect)
                        .then_some(connect);
                    return Ok((connection, Some(current.connection_id), resume_url));
                }
                Err(err) => {
                    tracing::debug!(transport = %transport, error = %err, "transport failed to start");
                    failures.push(format!("{transport} failed: {err}"));
                }
            }
        }
        if failures.is_empty() {
            Err(Error::new(
                Kind::Transport,
                "None of the transports supported by the client are supported by the server.",
            ))
        } else {
            Err(Error::new(
                Kind::Transport,
                format!(
                    "Unable to connect to the server with any of the available transports. {}",
                    failures.join(" ")
                ),
            ))
        }
    }

    /// Owns an established connection until it is `Disconnected`: runs sessions, resumes a
    /// stateful session after a loss, reconnects as the retry policy says, fires the events.
    async fn supervise(self: Arc<Self>, mut established: Established, run: Run) {
        let final_error = 'run: loop {
            let end = session::run(
                established,
                self.handlers.clone(),
                self.timeouts(),
                run.stop.clone(),
            )
            .await;
            let lost_at = Instant::now();
            let mut error = end.error;
            // Stateful reconnect: the same connection on a new WebSocket. As in the official
            // clients, this happens below the hub connection: the state stays `Connected` and
            // neither reconnecting nor reconnected fires (calls are buffered meanwhile).
            let mut resumed_first = false;
            if let Some(resumable) = end.resume {
                let reason = error.clone().unwrap_or_else(|| {
                    Error::new(Kind::Transport, "WebSocket closed without a close frame.")
                });
                if run.stop.is_cancelled() {
                    resumable.session.close(None);
                    lock(&self.state).session = None;
                    break 'run None;
                }
                tracing::info!(error = %reason, "connection lost; resuming it (stateful reconnect)");
                resumed_first = true;
                let attempt = tokio::select! {
                    biased;
                    () = run.stop.cancelled() => Err(None),
                    attempt = session::resume(resumable, self.config.handshake_timeout) => {
                        attempt.map_err(Some)
                    }
                };
                match attempt {
                    Ok(resumed) => {
                        let connection_id = {
                            let state = lock(&self.state);
                            if run.stop.is_cancelled() {
                                drop(state);
                                resumed.abandon().await;
                                lock(&self.state).session = None;
                                break 'run None;
                            }
                            state.connection_id.clone()
                        };
                        tracing::info!(?connection_id, "resumed (stateful reconnect)");
                        established = resumed;
                        continue 'run;
                    }
                    Err(None) => {
                        // stop(): the resume future, and with it the session's last handle
                        // but ours, is gone.
                        let session = lock(&self.state).session.take();
                        if let Some(session) = session {
                            session.close(None);
                        }
                        break 'run None;
                    }
                    Err(Some((err, resumable))) => {
                        tracing::info!(error = %err, "stateful reconnect failed");
                        let err = Error::wrap(
                            Kind::Transport,
                            format!("The connection was lost and could not be resumed: {err}"),
                            err,
                        );
                        resumable.session.close(Some(&err));
                        error = Some(err);
                    }
                }
            }
            lock(&self.state).session = None;
            if run.stop.is_cancelled() {
                break 'run None;
            }
            let policy = match (&self.config.retry_policy, end.allow_reconnect) {
                (Some(policy), true) => policy.clone(),
                _ => break 'run error,
            };
            let reason = error
                .clone()
                .unwrap_or_else(|| Error::new(Kind::Closed, "The server closed the connection."));
            let mut context = RetryContext {
                previous_retry_count: 0,
                // Zero at the first question, as in .NET, unless a stateful resume was tried.
                elapsed: if resumed_first {
                    lost_at.elapsed()
                } else {
                    Duration::ZERO
                },
                retry_reason: reason.clone(),
            };
            let Some(mut delay) = self.next_delay(policy.as_ref(), &context) else {
                tracing::debug!("the retry policy declined to reconnect");
                break 'run error;
            };
            {
                let mut state = lock(&self.state);
                if run.stop.is_cancelled() {
                    break 'run None;
                }
                state.state = HubConnectionState::Reconnecting;
                state.connection_id = None;
            }
            tracing::info!(error = %reason, "connection lost; reconnecting");
            self.fire_reconnecting(&reason);
            established = loop {
                tracing::debug!(
                    attempt = context.previous_retry_count + 1,
                    ?delay,
                    "reconnect attempt scheduled"
                );
                tokio::select! {
                    () = run.stop.cancelled() => break 'run None,
                    () = tokio::time::sleep(delay) => {}
                }
                let attempt = tokio::select! {
                    biased;
                    () = run.stop.cancelled() => break 'run None,
                    attempt = self.connect() => attempt,
                };
                match attempt {
                    Ok(established) => break established,
                    Err(err) => {
                        tracing::info!(error = %err, "reconnect attempt failed");
                        context.previous_retry_count += 1;
                        context.elapsed = lost_at.elapsed();
                        context.retry_reason = err.clone();
                        match self.next_delay(policy.as_ref(), &context) {
                            Some(next) => delay = next,
                            None => {
                                let attempts = context.previous_retry_count;
                                break 'run Some(Error::wrap(
                                    Kind::Closed,
                                    format!(
                                        "Reconnect retries have been exhausted after {attempts} failed attempts and {} ms.",
                                        context.elapsed.as_millis()
                                    ),
                                    err,
                                ));
                            }
                        }
                    }
                }
            };
            let connection_id = {
                let mut state = lock(&self.state);
                if run.stop.is_cancelled() {
                    drop(state);
                    established.abandon().await;
                    break 'run None;
                }
                state.state = HubConnectionState::Connected;
                state.connection_id = established.session.connection_id.clone();
                state.session = Some(established.session.clone());
                state.connection_id.clone()
            };
            tracing::info!(?connection_id, "reconnected");
            self.fire_reconnected(connection_id);
        };
        {
            let mut state = lock(&self.state);
            state.state = HubConnectionState::Disconnected;
            state.connection_id = None;
            state.session = None;
            state.run = None;
        }
        tracing::debug!(error = ?final_error.as_ref().map(ToString::to_string), "HubConnection closed");
        self.fire_closed(final_error);
        run.finished.cancel();
    }

    fn next_delay(
        &self,
        policy: &dyn crate::RetryPolicy,
        context: &RetryContext,
    ) -> Option<Duration> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| policy.next_retry_delay(context))) {
            Ok(delay) => delay,
            Err(_) => {
                tracing::error!("the retry policy panicked; not reconnecting");
                None
            }
        }
    }

    fn fire_closed(&self, error: Option<Error>) {
        let handlers = lock(&self.events).closed.clone();
        for handler in handlers {
            let error = error.clone();
            if std::panic::catch_unwind(AssertUnwindSafe(|| handler(error))).is_err() {
                tracing::error!("a closed handler panicked");
            }
        }
    }

    fn fire_reconnecting(&self, error: &Error) {
        let handlers = lock(&self.events).reconnecting.clone();
        for handler in handlers {
            let error = error.clone();
            if std::panic::catch_unwind(AssertUnwindSafe(|| handler(error))).is_err() {
                tracing::error!("a reconnecting handler panicked");
            }
        }
    }

    fn fire_reconnected(&self, connection_id: Option<String>) {
        let handlers = lock(&self.events).reconnected.clone();
        for handler in handlers {
            let id = connection_id.clone();
            if std::panic::catch_unwind(AssertUnwindSafe(|| handler(id))).is_err() {
                tracing::error!("a reconnected handler panicked");
            }
        }
    }
}
