//! Defining a hub: its methods, lifetime hooks, filters, state, options and authorization.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::http::Extensions;

use crate::auth::{Authenticator, AuthorizationPolicy, User};
use crate::clients::{HubContext, LocalLifetime};
use crate::context::HubCallerContext;
use crate::error::HubError;
use crate::filter::{ConnectedFn, DisconnectedFn, Filters, HubFilter};
use crate::handler::{ArgumentKind, ErasedMethod, HubMethod};
use crate::options::{ConnectionOptions, HubOptions};

/// What `on_connected` / `on_disconnected` may return: `()` or `Result<(), HubError>`.
pub trait IntoLifetimeResult: Send + 'static {
    /// Converts the result.
    ///
    /// # Errors
    /// The hook's error.
    fn into_result(self) -> Result<(), HubError>;
}

impl IntoLifetimeResult for () {
    fn into_result(self) -> Result<(), HubError> {
        Ok(())
    }
}

impl IntoLifetimeResult for Result<(), HubError> {
    fn into_result(self) -> Result<(), HubError> {
        self
    }
}

pub(crate) struct MethodEntry {
    pub name: String,
    pub handler: ErasedMethod,
    pub streaming: bool,
    /// Parameters bound from `arguments`.
    pub value_parameters: usize,
    /// Upload-stream parameters.
    pub stream_parameters: usize,
    pub policy: Option<AuthorizationPolicy>,
}

pub(crate) type UserIdProvider = Arc<dyn Fn(&User) -> Option<String> + Send + Sync>;

pub(crate) struct HubInner {
    /// The hub's name: what classic clients address it by (ASP.NET `[HubName]`).
    pub name: Option<String>,
    pub methods: HashMap<String, Arc<MethodEntry>>,
    pub options: HubOptions,
    pub connection_options: ConnectionOptions,
    pub lifetime: Arc<LocalLifetime>,
    pub filters: Filters,
    pub on_connected: Option<ConnectedFn>,
    pub on_disconnected: Option<DisconnectedFn>,
    pub state: Extensions,
    pub authenticator: Option<Arc<dyn Authenticator>>,
    pub policy: Option<AuthorizationPolicy>,
    pub user_id_provider: UserIdProvider,
}

impl HubInner {
    /// Looks a hub method up case-insensitively, as ASP.NET does (reference §A6.3).
    pub(crate) fn method(&self, target: &str) -> Option<&Arc<MethodEntry>> {
        self.methods.get(&target.to_lowercase())
    }
}

/// Builds a [`Hub`]: hub methods, lifetime hooks, filters, application state, options and
/// authorization.
#[must_use]
pub struct HubBuilder {
    name: Option<String>,
    methods: HashMap<String, Arc<MethodEntry>>,
    options: HubOptions,
    connection_options: ConnectionOptions,
    filters: Vec<Arc<dyn HubFilter>>,
    on_connected: Option<ConnectedFn>,
    on_disconnected: Option<DisconnectedFn>,
    state: Extensions,
    authenticator: Option<Arc<dyn Authenticator>>,
    policy: Option<AuthorizationPolicy>,
    user_id_provider: UserIdProvider,
}

impl HubBuilder {
    /// Names the hub. Classic SignalR clients address hubs by name (`connectionData`, `H`), and
    /// client-method calls carry it; it is the name of the .NET hub class (or its `[HubName]`)
    /// that those clients were written against, e.g. `ChatHub`. The generated JavaScript proxy
    /// calls it `chatHub` (first letter lower-cased). Core clients do not see it: they reach a
    /// hub by its URL.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Registers `handler` as hub method `name`. Clients call it by that name, matched
    /// case-insensitively (reference §A6.3).
    ///
    /// `handler` is an `async fn(HubCallerContext, A1, ..., An) -> R` (see [`HubMethod`]):
    /// parameters are client arguments (any serde type), [`UploadStream<T>`](crate::UploadStream)
    /// or [`State<T>`](crate::State); `R` is `()`, a `Serialize` value, `Result<T, HubError>`, or
    /// a `Stream` for a streaming method.
    ///
    /// ```
    /// use signalr_server::{Hub, HubCallerContext, HubError};
    ///
    /// let hub = Hub::builder()
    ///     .method("Add", |_: HubCallerContext, a: i64, b: i64| async move { a + b })
    ///     .method("Fail", |_: HubCallerContext| async move {
    ///         Err::<(), _>(HubError::new("this text reaches the client, after ASP.NET's prefix"))
    ///     })
    ///     .method("Count", |_: HubCallerContext, to: u32| async move {
    ///         futures_util::stream::iter(1..=to)
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    ///
    /// # Panics
    /// When a method with the same name (ignoring case) is already registered: hub methods cannot
    /// be overloaded, and this is a start-up error rather than a run-time surprise.
    pub fn method<Args, M: HubMethod<Args>>(mut self, name: &str, handler: M) -> Self {
        let key = name.to_lowercase();
        assert!(
            !self.methods.contains_key(&key),
            "hub method '{name}' is registered twice; SignalR hub methods cannot be overloaded"
        );
        let kinds = M::parameter_kinds();
        let count = |kind| kinds.iter().filter(|k| **k == kind).count();
        let handler_fn: ErasedMethod =
            Arc::new(move |caller, values, streams| handler.call(caller, values, streams));
        self.methods.insert(
            key,
            Arc::new(MethodEntry {
                name: name.to_owned(),
                handler: handler_fn,
                streaming: M::STREAMING,
                value_parameters: count(ArgumentKind::Value),
                stream_parameters: count(ArgumentKind::Stream),
                policy: None,
            }),
        );
        self
    }

    /// Requires `policy` for hub method `name` (ASP.NET `[Authorize]` on a method). Callers that
    /// fail it get `Failed to invoke '<name>' because user is unauthorized`.
    ///
    /// # Panics
    /// When no method `name` is registered yet.
    pub fn authorize_method(mut self, name: &str, policy: AuthorizationPolicy) -> Self {
        let entry = self
            .methods
            .get_mut(&name.to_lowercase())
            .unwrap_or_else(|| panic!("authorize_method: no hub method '{name}' is registered"));
        if let Some(entry) = Arc::get_mut(entry) {
            entry.policy = Some(policy);
        }
        self
    }

    /// Requires `policy` for the whole hub (ASP.NET `[Authorize]` on the hub): negotiate and
    /// transport requests of users who fail it get 401 (anonymous) or 403 (authenticated).
    pub fn require_authorization(mut self, policy: AuthorizationPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Authenticates requests: bearer tokens from `Authorization` or `access_token` become the
    /// connection's [`User`]. See [`JwtAuthenticator`](crate::JwtAuthenticator) for JWTs.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// How a connection's user identifier (for `clients().user(id)`) is derived from its user.
    /// Default: [`User::name_identifier`] (ASP.NET `DefaultUserIdProvider`).
    pub fn user_id_provider(
        mut self,
        provider: impl Fn(&User) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.user_id_provider = Arc::new(provider);
        self
    }

    /// Application state, handed to hub methods that take a [`State<T>`](crate::State)
    /// parameter and available from [`HubCallerContext::state`]. One value per type.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        self.state.insert(state);
        self
    }

    /// Adds a filter around every invocation, connect and disconnect; the first added runs
    /// outermost.
    pub fn filter(mut self, filter: impl HubFilter) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Runs when a connection has completed the handshake, before its messages are processed
    /// (ASP.NET `OnConnectedAsync`). An error closes the connection with an error. Client results
    /// cannot be awaited here.
    pub fn on_connected<F, Fut, R>(mut self, handler: F) -> Self
    where
        F: Fn(HubCallerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoLifetimeResult,
    {
        let handler = Arc::new(handler);
        self.on_connected = Some(Arc::new(move |caller| {
            let future = handler(caller);
            Box::pin(async move { future.await.into_result() })
        }));
        self
    }

    /// Runs when a connection has ended (ASP.NET `OnDisconnectedAsync`), with the error that
    /// ended it or `None` for a normal close. Group memberships are already gone.
    pub fn on_disconnected<F, Fut, R>(mut self, handler: F) -> Self
    where
        F: Fn(HubCallerContext, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoLifetimeResult,
    {
        let handler = Arc::new(handler);
        self.on_disconnected = Some(Arc::new(move |caller, error| {
            let future = handler(caller, error);
            Box::pin(async move { future.await.into_result() })
        }));
        self
    }

    /// Sets the hub options (timeouts, limits, detailed errors, protocols).
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
                name: self.name,
                methods: self.methods,
                options: self.options,
                connection_options: self.connection_options,
                lifetime: Arc::default(),
                filters: self.filters.into(),
                on_connected: self.on_connected,
                on_disconnected: self.on_disconnected,
                state: self.state,
                authenticator: self.authenticator,
                policy: self.policy,
                user_id_provider: self.user_id_provider,
            }),
        }
    }
}

/// A hub: its methods and options. Mount it with [`Hub::router`]; send from outside hub
/// methods with [`Hub::context`].
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("methods", &self.inner.methods.len())
            .finish()
    }
}

impl Hub {
    /// Starts a hub definition.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            name: None,
            methods: HashMap::new(),
            options: HubOptions::default(),
            connection_options: ConnectionOptions::default(),
            filters: Vec::new(),
            on_connected: None,
            on_disconnected: None,
            state: Extensions::new(),
            authenticator: None,
            policy: None,
            user_id_provider: Arc::new(User::name_identifier),
        }
    }

    /// The hub's name ([`HubBuilder::name`]), if it has one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The names of the registered hub methods, as registered.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.inner.methods.values().map(|m| m.name.as_str())
    }

    /// Connections that completed the handshake and are open.
    pub fn connection_count(&self) -> usize {
        self.inner.lifetime.count()
    }

    /// A cheap-to-clone handle for sending to this hub's clients from anywhere (ASP.NET
    /// `IHubContext`).
    pub fn context(&self) -> HubContext {
        HubContext::new(self.inner.lifetime.clone())
    }
}
