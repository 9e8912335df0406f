//! The hub runtime: hub methods registered by name, argument binding with serde, results and
//! errors as ASP.NET reports them (reference §A6.3, §A6.4), and the caller's view of the clients.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use signalr_protocol::{Close, HubMessage, HubProtocol, Invocation, Payload, TransportType};
use tokio::sync::Notify;

use crate::connection::{Connection, ConnectionRequest, Outgoing, SerializedMessage};
use crate::options::{ConnectionOptions, HubOptions};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The error a hub method returns.
///
/// Two kinds, as in ASP.NET: [`HubError::new`] is a `HubException`, whose message always reaches
/// the client verbatim in the Completion's `error`; any other error (converted with `?` from any
/// `std::error::Error`) is *unexpected*, and the client sees only
/// `An unexpected error occurred invoking '<method>' on the server.` unless
/// [`HubOptions::enable_detailed_errors`] is on (reference §A6.4).
pub struct HubError {
    kind: HubErrorKind,
}

enum HubErrorKind {
    Hub(String),
    Unexpected(Box<dyn std::error::Error + Send + Sync>),
}

impl HubError {
    /// An error whose `message` is sent to the client as is (ASP.NET `HubException`).
    pub fn new(message: impl Into<String>) -> Self {
        HubError {
            kind: HubErrorKind::Hub(message.into()),
        }
    }

    /// The text the client receives for a failure of hub method `method`.
    pub(crate) fn client_message(&self, method: &str, detailed: bool) -> String {
        match &self.kind {
            HubErrorKind::Hub(message) => message.clone(),
            HubErrorKind::Unexpected(err) => {
                let generic =
                    format!("An unexpected error occurred invoking '{method}' on the server.");
                if detailed {
                    format!("{generic} {err}")
                } else {
                    generic
                }
            }
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HubError {
    fn from(err: E) -> Self {
        HubError {
            kind: HubErrorKind::Unexpected(Box::new(err)),
        }
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            HubErrorKind::Hub(message) => f.write_str(message),
            HubErrorKind::Unexpected(err) => write!(f, "{err}"),
        }
    }
}

impl fmt::Debug for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            HubErrorKind::Hub(message) => f.debug_tuple("HubError").field(message).finish(),
            HubErrorKind::Unexpected(err) => {
                f.debug_tuple("HubError::Unexpected").field(err).finish()
            }
        }
    }
}

/// What a hub method's future may return: `()` (the Completion carries no result), any
/// `Serialize` value (the Completion's `result`), or `Result<T, HubError>`.
///
/// `Marker` only tells the two implementations apart; it is inferred.
pub trait IntoHubResult<Marker> {
    /// `Ok(None)` for void, `Ok(Some(_))` for a value.
    ///
    /// # Errors
    /// The method's [`HubError`].
    fn into_hub_result(self) -> Result<Option<Payload>, HubError>;
}

fn value_or_void<T: Serialize + Send + Sync + 'static>(value: T) -> Option<Payload> {
    (TypeId::of::<T>() != TypeId::of::<()>()).then(|| Payload::from_value(value))
}

/// Markers for [`IntoHubResult`]; never named by users.
#[doc(hidden)]
pub mod markers {
    /// The method returns a plain value.
    pub enum Value {}
    /// The method returns `Result<T, HubError>`.
    pub enum Fallible {}
}

impl<T: Serialize + Send + Sync + 'static> IntoHubResult<markers::Value> for T {
    fn into_hub_result(self) -> Result<Option<Payload>, HubError> {
        Ok(value_or_void(self))
    }
}

impl<T: Serialize + Send + Sync + 'static> IntoHubResult<markers::Fallible>
    for Result<T, HubError>
{
    fn into_hub_result(self) -> Result<Option<Payload>, HubError> {
        self.map(value_or_void)
    }
}

/// Why an invocation failed before or while running the hub method (internal to
/// [`HubMethod`]).
#[doc(hidden)]
pub enum InvokeError {
    /// The arguments did not bind; the detail is shown only with detailed errors.
    Binding(String),
    /// The method returned an error.
    Method(HubError),
}

/// A hub method after type erasure: takes the caller and the raw arguments.
pub(crate) type ErasedMethod = Arc<
    dyn Fn(HubCallerContext, Vec<Payload>) -> BoxFuture<Result<Option<Payload>, InvokeError>>
        + Send
        + Sync,
>;

/// A function usable as a hub method: `async fn(HubCallerContext, A1, ..., An) -> R` with up to 8
/// arguments, each any `serde::de::DeserializeOwned` type, and `R:` [`IntoHubResult`].
///
/// Arguments are bound from JSON or MessagePack with serde; a count or type mismatch answers the
/// ASP.NET binding error `Failed to invoke '<m>' due to an error on the server.` (reference §A6.4).
pub trait HubMethod<Args>: Clone + Send + Sync + 'static {
    /// Binds `arguments` and runs the method.
    #[doc(hidden)]
    fn call(
        &self,
        caller: HubCallerContext,
        arguments: Vec<Payload>,
    ) -> BoxFuture<Result<Option<Payload>, InvokeError>>;
}

macro_rules! impl_hub_method {
    ($count:expr $(, $arg:ident)*) => {
        impl<F, Fut, R, M $(, $arg)*> HubMethod<(M, $($arg,)*)> for F
        where
            F: Fn(HubCallerContext $(, $arg)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoHubResult<M>,
            $($arg: DeserializeOwned + Send + 'static,)*
        {
            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn call(&self, caller: HubCallerContext, arguments: Vec<Payload>) -> BoxFuture<Result<Option<Payload>, InvokeError>> {
                if arguments.len() != $count {
                    let detail = format!(
                        "InvalidDataException: Invocation provides {} argument(s) but target expects {}.",
                        arguments.len(),
                        $count
                    );
                    return Box::pin(async move { Err(InvokeError::Binding(detail)) });
                }
                let mut iter = arguments.iter();
                $(
                    let $arg: $arg = match iter.next().map(|p| p.deserialize::<$arg>()) {
                        Some(Ok(value)) => value,
                        Some(Err(err)) => {
                            tracing::debug!(%err, "hub method argument failed to bind");
                            return Box::pin(async move {
                                Err(InvokeError::Binding(
                                    "InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.".into(),
                                ))
                            });
                        }
                        None => unreachable!("argument count checked above"),
                    };
                )*
                let future = (self)(caller $(, $arg)*);
                Box::pin(async move { future.await.into_hub_result().map_err(InvokeError::Method) })
            }
        }
    };
}

impl_hub_method!(0);
impl_hub_method!(1, A1);
impl_hub_method!(2, A1, A2);
impl_hub_method!(3, A1, A2, A3);
impl_hub_method!(4, A1, A2, A3, A4);
impl_hub_method!(5, A1, A2, A3, A4, A5);
impl_hub_method!(6, A1, A2, A3, A4, A5, A6);
impl_hub_method!(7, A1, A2, A3, A4, A5, A6, A7);
impl_hub_method!(8, A1, A2, A3, A4, A5, A6, A7, A8);

/// Arguments of a client method call: `()`, a tuple of up to 8 `Serialize` values, or a
/// `Vec<Payload>`.
pub trait IntoArguments {
    /// The arguments as payloads, serialized later by each connection's protocol.
    fn into_arguments(self) -> Vec<Payload>;
}

impl IntoArguments for Vec<Payload> {
    fn into_arguments(self) -> Vec<Payload> {
        self
    }
}

macro_rules! impl_into_arguments {
    ($($arg:ident),*) => {
        impl<$($arg: Serialize + Send + Sync + 'static),*> IntoArguments for ($($arg,)*) {
            #[allow(non_snake_case)]
            fn into_arguments(self) -> Vec<Payload> {
                let ($($arg,)*) = self;
                vec![$(Payload::from_value($arg)),*]
            }
        }
    };
}

impl IntoArguments for () {
    fn into_arguments(self) -> Vec<Payload> {
        Vec::new()
    }
}
impl_into_arguments!(A1);
impl_into_arguments!(A1, A2);
impl_into_arguments!(A1, A2, A3);
impl_into_arguments!(A1, A2, A3, A4);
impl_into_arguments!(A1, A2, A3, A4, A5);
impl_into_arguments!(A1, A2, A3, A4, A5, A6);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7, A8);

/// The connections of one hub on this server (the in-memory lifetime manager).
#[derive(Default)]
pub(crate) struct LocalLifetime {
    connections: RwLock<HashMap<String, Arc<Connection>>>,
}

/// Which connections a [`ClientProxy`] reaches.
#[derive(Debug, Clone)]
enum Recipients {
    All,
    AllExcept(String),
    Connection(String),
}

impl LocalLifetime {
    pub(crate) fn add(&self, connection: Arc<Connection>) {
        if let Ok(mut map) = self.connections.write() {
            map.insert(connection.id.clone(), connection);
        }
    }

    pub(crate) fn remove(&self, connection_id: &str) {
        if let Ok(mut map) = self.connections.write() {
            map.remove(connection_id);
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.connections.read().map(|map| map.len()).unwrap_or(0)
    }

    async fn send(&self, recipients: &Recipients, message: HubMessage) {
        let message = SerializedMessage::new(message);
        match recipients {
            Recipients::Connection(id) => {
                let connection = self
                    .connections
                    .read()
                    .ok()
                    .and_then(|map| map.get(id).cloned());
                if let Some(connection) = connection {
                    let _ = connection.send(Outgoing::Message(message)).await;
                }
            }
            Recipients::All | Recipients::AllExcept(_) => {
                let except = match recipients {
                    Recipients::AllExcept(id) => Some(id.as_str()),
                    _ => None,
                };
                let Ok(map) = self.connections.read() else {
                    return;
                };
                for connection in map.values() {
                    if Some(connection.id.as_str()) != except {
                        let _ = connection.try_send(Outgoing::Message(message.clone()));
                    }
                }
            }
        }
    }
}

/// A set of clients to call methods on; get one from [`HubCallerClients`].
#[derive(Clone)]
#[must_use]
pub struct ClientProxy {
    lifetime: Arc<LocalLifetime>,
    recipients: Recipients,
}

impl ClientProxy {
    /// Calls `method` on every client of the set, without expecting an answer
    /// (an Invocation without id, reference §A6.2).
    ///
    /// The message is serialized at most once per protocol and queued to each connection. The
    /// future completes when the message is **queued**, not when it is delivered. A single
    /// recipient waits for room in its queue; a fan-out never waits: a connection whose queue is
    /// full is closed as a slow consumer ([`ConnectionOptions::outgoing_queue_capacity`]). An
    /// unknown connection id is ignored, as in ASP.NET. A value that fails to serialize is logged
    /// and not sent.
    pub async fn send(&self, method: &str, arguments: impl IntoArguments) {
        let message = HubMessage::Invocation(Invocation {
            target: method.to_owned(),
            arguments: arguments.into_arguments(),
            ..Default::default()
        });
        self.lifetime.send(&self.recipients, message).await;
    }
}

/// The clients as seen from a hub method: ASP.NET `IHubCallerClients`.
#[derive(Clone)]
pub struct HubCallerClients {
    lifetime: Arc<LocalLifetime>,
    caller_id: String,
}

impl HubCallerClients {
    fn proxy(&self, recipients: Recipients) -> ClientProxy {
        ClientProxy {
            lifetime: self.lifetime.clone(),
            recipients,
        }
    }

    /// Every connection of the hub, the caller included.
    pub fn all(&self) -> ClientProxy {
        self.proxy(Recipients::All)
    }

    /// The connection that made the call.
    pub fn caller(&self) -> ClientProxy {
        self.proxy(Recipients::Connection(self.caller_id.clone()))
    }

    /// Every connection except the caller.
    pub fn others(&self) -> ClientProxy {
        self.proxy(Recipients::AllExcept(self.caller_id.clone()))
    }

    /// One connection, by connection id.
    pub fn client(&self, connection_id: impl Into<String>) -> ClientProxy {
        self.proxy(Recipients::Connection(connection_id.into()))
    }
}

/// Per-connection signals from hub code to the connection's hub loop.
#[derive(Default)]
pub(crate) struct ConnectionSignals {
    pub close: Mutex<Option<Close>>,
    pub notify: Notify,
}

/// The caller of a hub method: ASP.NET `HubCallerContext` plus `Clients`.
///
/// Cheap to clone; valid for the duration of the call and after (sends to a closed connection
/// are ignored).
#[derive(Clone)]
pub struct HubCallerContext {
    pub(crate) connection: Arc<Connection>,
    pub(crate) hub: Arc<HubInner>,
    pub(crate) signals: Arc<ConnectionSignals>,
}

impl HubCallerContext {
    /// The caller's public connection id (the negotiate `connectionId`).
    pub fn connection_id(&self) -> &str {
        &self.connection.id
    }

    /// The transport the caller is connected with.
    pub fn transport(&self) -> Option<TransportType> {
        self.connection.transport()
    }

    /// The hub protocol the caller chose in the handshake.
    pub fn protocol(&self) -> Option<HubProtocol> {
        self.connection.protocol()
    }

    /// Headers and query string of the HTTP request that opened the transport.
    pub fn request(&self) -> Option<&ConnectionRequest> {
        self.connection.request.get()
    }

    /// The clients of this hub, relative to the caller.
    pub fn clients(&self) -> HubCallerClients {
        HubCallerClients {
            lifetime: self.hub.lifetime.clone(),
            caller_id: self.connection.id.clone(),
        }
    }

    /// Closes the caller's connection: sends a Close message with `error` (`None` for a normal
    /// close) and `allow_reconnect` (reference §A6.8), then closes the transport. The invocation
    /// in progress is abandoned and gets no Completion.
    pub fn close(&self, error: Option<String>, allow_reconnect: bool) {
        if let Ok(mut close) = self.signals.close.lock() {
            *close = Some(Close {
                error,
                allow_reconnect,
            });
        }
        self.signals.notify.notify_one();
    }

    /// Ends the connection without reconnect and without error, like ASP.NET `Context.Abort()`.
    pub fn abort(&self) {
        self.close(None, false);
    }
}

pub(crate) struct MethodEntry {
    pub name: String,
    pub handler: ErasedMethod,
}

pub(crate) struct HubInner {
    pub methods: HashMap<String, MethodEntry>,
    pub options: HubOptions,
    pub connection_options: ConnectionOptions,
    pub lifetime: Arc<LocalLifetime>,
}

impl HubInner {
    /// Looks a hub method up case-insensitively, as ASP.NET does (reference §A6.3).
    pub(crate) fn method(&self, target: &str) -> Option<&MethodEntry> {
        self.methods.get(&target.to_lowercase())
    }
}

/// Builds a [`Hub`]: registers hub methods and sets options.
#[must_use]
pub struct HubBuilder {
    methods: HashMap<String, MethodEntry>,
    options: HubOptions,
    connection_options: ConnectionOptions,
}

impl HubBuilder {
    /// Registers `handler` as hub method `name`. Clients call it by that name, matched
    /// case-insensitively (reference §A6.3).
    ///
    /// ```
    /// use signalr_server::{Hub, HubCallerContext, HubError};
    ///
    /// let hub = Hub::builder()
    ///     .method("Add", |_: HubCallerContext, a: i64, b: i64| async move { a + b })
    ///     .method("Fail", |_: HubCallerContext| async move {
    ///         Err::<(), _>(HubError::new("this text reaches the client"))
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    ///
    /// # Panics
    /// When a method with the same name (ignoring case) is already registered: overloads are not
    /// allowed, and this is a start-up error rather than a run-time surprise.
    pub fn method<Args, M: HubMethod<Args>>(mut self, name: &str, handler: M) -> Self {
        let key = name.to_lowercase();
        assert!(
            !self.methods.contains_key(&key),
            "hub method '{name}' is registered twice; SignalR hub methods cannot be overloaded"
        );
        let handler: ErasedMethod =
            Arc::new(move |caller, arguments| handler.call(caller, arguments));
        self.methods.insert(
            key,
            MethodEntry {
                name: name.to_owned(),
                handler,
            },
        );
        self
    }

    /// Sets the hub options (timeouts, message size limit, detailed errors, protocols).
    pub fn options(mut self, options: HubOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the connection options (transports, disconnect timeout, poll timeout, queues).
    pub fn connection_options(mut self, options: ConnectionOptions) -> Self {
        self.connection_options = options;
        self
    }

    /// Finishes the hub.
    pub fn build(self) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                methods: self.methods,
                options: self.options,
                connection_options: self.connection_options,
                lifetime: Arc::default(),
            }),
        }
    }
}

/// A hub: its methods and options. Mount it with [`Hub::router`].
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl Hub {
    /// Starts a hub definition.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            methods: HashMap::new(),
            options: HubOptions::default(),
            connection_options: ConnectionOptions::default(),
        }
    }

    /// The names of the registered hub methods, as registered.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.inner.methods.values().map(|m| m.name.as_str())
    }

    /// Number of connections that completed the handshake and are still open.
    pub fn connection_count(&self) -> usize {
        self.inner.lifetime.count()
    }
}
