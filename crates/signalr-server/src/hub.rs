//! Defining a hub: [`Hub`] and its [`HubBuilder`] (methods, connection hooks, filters, state,
//! options and authorization), and what hub methods may take and return.
//!
//! A hub method is an async function or closure `(HubCallerContext, A1, ..., An) -> R`:
//! - each parameter is a [`HubArgument`]: a client argument (any `DeserializeOwned` type), an
//!   [`UploadStream`] (client-to-server stream), application [`State`], a classic client's
//!   [`Progress`] or [`CallerState`](crate::context::CallerState);
//! - the result is an [`IntoHubResult`]: `()`, a `Serialize` value, `Result<T, HubError>`, or a
//!   stream of [`IntoStreamItem`]s;
//! - connection hooks return an [`IntoHookResult`].
//!
//! [`HubMethod`], [`HubArgument`], [`IntoHubResult`], [`IntoStreamItem`] and [`IntoHookResult`]
//! are how the builder accepts plain functions: they are implemented for every function, argument
//! and return type above, and you don't implement them yourself. [`MethodOutput`] and
//! [`InvokeError`] are what a [filter](crate::filter) sees of a call's outcome.

pub use crate::handler::{
    HubArgument, HubMethod, IntoHubResult, IntoStreamItem, InvokeError, MethodOutput, Progress,
    State, UploadStream,
};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use axum::http::{Extensions, HeaderMap};

use crate::auth::{Authenticator, AuthorizationPolicy, ConnectAuthorization, ConnectRequest, User};
use crate::clients::{HubContext, Lifetime};
use crate::connection::ConnectionRequest;
use crate::context::HubCallerContext;
use crate::error::HubError;
use crate::filter::{ConnectedFn, DisconnectedFn, Filters, HubFilter, ReconnectedFn};
use crate::handler::{ArgumentKind, ErasedMethod};
use crate::lifetime::{DefaultHubLifetimeManager, HubLifetimeManager};
use crate::options::{ConnectionOptions, HubOptions};

/// What the connection hooks ([`HubBuilder::on_connected`], [`HubBuilder::on_reconnected`],
/// [`HubBuilder::on_disconnected`]) may return: `()` or `Result<(), HubError>`.
///
/// You don't implement this: it is implemented for those two types.
pub trait IntoHookResult: Send + 'static {
    /// Converts the result.
    ///
    /// # Errors
    /// The hook's error.
    fn into_result(self) -> Result<(), HubError>;
}

impl IntoHookResult for () {
    fn into_result(self) -> Result<(), HubError> {
        Ok(())
    }
}

impl IntoHookResult for Result<(), HubError> {
    fn into_result(self) -> Result<(), HubError> {
        self
    }
}

/// One registered hub method (one overload of its name).
pub(crate) struct MethodEntry {
    /// The name as registered (overloads may differ in case).
    pub name: String,
    pub handler: ErasedMethod,
    pub streaming: bool,
    /// Parameters bound from `arguments`: the client arguments, which select the overload.
    pub value_parameters: usize,
    /// Upload-stream parameters.
    pub stream_parameters: usize,
    /// Names of the value parameters, in order, as a C# hub would declare them (`groupName`);
    /// empty when unknown (closures registered without [`HubBuilder::parameter_names`]).
    pub parameter_names: Vec<String>,
    pub policy: Option<AuthorizationPolicy>,
}

/// Why [`HubInner::resolve`] found no method for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolve {
    /// No hub method has that name (ignoring case).
    UnknownMethod,
    /// Methods of that name exist, none with `provided` client arguments; `expected` lists the
    /// argument counts registered, ascending.
    ArgumentCount {
        provided: usize,
        expected: Vec<usize>,
    },
}

pub(crate) type UserIdProvider =
    Arc<dyn Fn(&User, Option<&ConnectionRequest>) -> Option<String> + Send + Sync>;

pub(crate) struct HubInner {
    /// The hub's name: what classic clients address it by (ASP.NET `[HubName]`).
    pub name: Option<String>,
    /// Hub methods by lower-cased name; the overloads of a name sorted by argument count.
    pub methods: BTreeMap<String, Vec<Arc<MethodEntry>>>,
    /// The same overload lists by every name as registered: a call spelled as the method was
    /// registered (the usual case) is found without lower-casing its target.
    pub methods_as_registered: HashMap<String, Vec<Arc<MethodEntry>>>,
    pub options: HubOptions,
    pub connection_options: ConnectionOptions,
    pub lifetime: Arc<Lifetime>,
    pub filters: Filters,
    pub on_connected: Option<ConnectedFn>,
    pub on_reconnected: Option<ReconnectedFn>,
    pub on_disconnected: Option<DisconnectedFn>,
    pub state: Extensions,
    pub authenticator: Option<Arc<dyn Authenticator>>,
    pub policy: Option<AuthorizationPolicy>,
    pub connect_authorization: Option<ConnectAuthorization>,
    pub user_id_provider: UserIdProvider,
}

impl HubInner {
    /// Whether [`HubBuilder::authorize_connect`]'s check lets a request of `user` with `headers`
    /// and `query` (without `?`) in; true without a check. Front doors answer a refusal like a
    /// failed hub policy: 401 for an anonymous user, 403 for an authenticated one.
    pub(crate) fn allows_connect(&self, user: &User, headers: &HeaderMap, query: &str) -> bool {
        self.connect_authorization
            .as_ref()
            .is_none_or(|check| check(&ConnectRequest::new(user, headers, query)))
    }

    /// Finds the hub method a call of `target` with `arguments` client arguments runs: the name
    /// matches ignoring case, as ASP.NET does (docs/protocol.md, "Method names"), and among overloads of that name
    /// the one taking `arguments` client arguments, as classic SignalR picks them.
    pub(crate) fn resolve(
        &self,
        target: &str,
        arguments: usize,
    ) -> Result<Arc<MethodEntry>, Resolve> {
        let overloads = match self.methods_as_registered.get(target) {
            Some(overloads) => overloads,
            None => self
                .methods
                .get(&target.to_lowercase())
                .ok_or(Resolve::UnknownMethod)?,
        };
        overloads
            .iter()
            .find(|method| method.value_parameters == arguments)
            .cloned()
            .ok_or_else(|| Resolve::ArgumentCount {
                provided: arguments,
                expected: overloads.iter().map(|m| m.value_parameters).collect(),
            })
    }

    /// Every hub method name with its overloads (ascending argument count, never empty), names
    /// in lower-case order: what a generated JavaScript proxy lists.
    pub(crate) fn methods_by_name(&self) -> impl Iterator<Item = &[Arc<MethodEntry>]> {
        self.methods.values().map(Vec::as_slice)
    }
}

/// Builds a [`Hub`]: hub methods, connection hooks, filters, application state, options and
/// authorization.
#[must_use]
pub struct HubBuilder {
    name: Option<String>,
    methods: BTreeMap<String, Vec<Arc<MethodEntry>>>,
    options: HubOptions,
    connection_options: ConnectionOptions,
    filters: Vec<Arc<dyn HubFilter>>,
    on_connected: Option<ConnectedFn>,
    on_reconnected: Option<ReconnectedFn>,
    on_disconnected: Option<DisconnectedFn>,
    state: Extensions,
    authenticator: Option<Arc<dyn Authenticator>>,
    policy: Option<AuthorizationPolicy>,
    connect_authorization: Option<ConnectAuthorization>,
    user_id_provider: UserIdProvider,
    lifetime_manager: Option<MakeLifetimeManager>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("name", &self.name)
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .field("connection_options", &self.connection_options)
            .field("filters", &self.filters.len())
            .field("authenticator", &self.authenticator.is_some())
            .field("policy", &self.policy.is_some())
            .field("lifetime_manager", &self.lifetime_manager.is_some())
            .finish_non_exhaustive()
    }
}

type MakeLifetimeManager =
    Box<dyn FnOnce(Arc<DefaultHubLifetimeManager>) -> Arc<dyn HubLifetimeManager> + Send>;

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
    /// case-insensitively (docs/protocol.md, "Method names").
    ///
    /// `handler` is an `async fn(HubCallerContext, A1, ..., An) -> R` (see [`HubMethod`]):
    /// parameters are client arguments (any serde type), [`UploadStream<T>`](crate::hub::UploadStream),
    /// [`State<T>`](crate::hub::State), [`Progress<T>`](crate::hub::Progress) or
    /// [`CallerState`](crate::context::CallerState); `R` is `()`, a `Serialize` value,
    /// `Result<T, HubError>`, or a `Stream` for a streaming method.
    ///
    /// A name may be registered again with another number of client arguments (parameters bound
    /// from the call's arguments; upload streams, state, progress and caller state do not count):
    /// an overload, as classic SignalR hubs have them. A call runs the overload taking as many
    /// arguments as it brings. ASP.NET Core hubs cannot be overloaded; a Core client that calls
    /// an overloaded name with a count none takes gets `... but target expects one of 0, 1, 2.`
    /// (see [`HubOptions::enable_detailed_errors`](crate::HubOptions::enable_detailed_errors)).
    ///
    /// ```
    /// use signalr_server::{Hub, HubCallerContext, HubError};
    ///
    /// let hub = Hub::builder()
    ///     .method("Add", |_: HubCallerContext, a: i64, b: i64| async move { a + b })
    ///     // An overload: `Add(a, b, c)`.
    ///     .method("Add", |_: HubCallerContext, a: i64, b: i64, c: i64| async move { a + b + c })
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
    /// When a method with the same name (ignoring case) and the same number of client arguments
    /// is already registered: overloads must differ in their argument count, and this is a
    /// start-up error rather than a run-time surprise.
    pub fn method<Args, M: HubMethod<Args>>(self, name: &str, handler: M) -> Self {
        self.register(name, handler, None, None)
    }

    /// What `#[hub]` registers a method with: [`HubBuilder::method`] plus the names of all
    /// parameters after the caller context (the client arguments' names are kept) and the
    /// method's `#[authorize]` policy.
    #[doc(hidden)]
    pub fn __hub_method<Args, M: HubMethod<Args>>(
        self,
        name: &str,
        handler: M,
        parameter_names: &[&str],
        policy: Option<AuthorizationPolicy>,
    ) -> Self {
        self.register(name, handler, Some(parameter_names), policy)
    }

    fn register<Args, M: HubMethod<Args>>(
        mut self,
        name: &str,
        handler: M,
        parameter_names: Option<&[&str]>,
        policy: Option<AuthorizationPolicy>,
    ) -> Self {
        let kinds = M::parameter_kinds();
        let count = |kind| kinds.iter().filter(|k| **k == kind).count();
        let value_parameters = count(ArgumentKind::Value);
        let overloads = self.methods.entry(name.to_lowercase()).or_default();
        assert!(
            !overloads
                .iter()
                .any(|m| m.value_parameters == value_parameters),
            "hub method '{name}' is registered twice with {value_parameters} argument(s); \
             overloads of a hub method must differ in their number of arguments"
        );
        let parameter_names = match parameter_names {
            Some(names) if names.len() == kinds.len() => names
                .iter()
                .zip(&kinds)
                .filter(|(_, kind)| **kind == ArgumentKind::Value)
                .map(|(name, _)| (*name).to_owned())
                .collect(),
            _ => Vec::new(),
        };
        let handler_fn: ErasedMethod =
            Arc::new(move |caller, values, streams| handler.call(caller, values, streams));
        let entry = Arc::new(MethodEntry {
            name: name.to_owned(),
            handler: handler_fn,
            streaming: M::STREAMING,
            value_parameters,
            stream_parameters: count(ArgumentKind::Stream),
            parameter_names,
            policy,
        });
        let at = overloads.partition_point(|m| m.value_parameters < value_parameters);
        overloads.insert(at, entry);
        self
    }

    /// The overloads of `name` (ignoring case) that `arguments` selects: all of them, or the
    /// one taking that many client arguments.
    fn overloads_mut(
        &mut self,
        name: &str,
        arguments: Option<usize>,
        what: &str,
    ) -> impl Iterator<Item = &mut MethodEntry> {
        let overloads = self
            .methods
            .get_mut(&name.to_lowercase())
            .unwrap_or_else(|| panic!("{what}: no hub method '{name}' is registered"));
        if let Some(arguments) = arguments {
            assert!(
                overloads.iter().any(|m| m.value_parameters == arguments),
                "{what}: hub method '{name}' has no overload with {arguments} argument(s)"
            );
        }
        overloads
            .iter_mut()
            .filter(move |m| arguments.is_none_or(|n| m.value_parameters == n))
            // The builder holds the only reference until `build`.
            .filter_map(Arc::get_mut)
    }

    /// Names the client arguments of the overload of `method` taking `arguments` of them, for
    /// what lists methods with their parameters (classic SignalR's JavaScript proxy and its
    /// "Potential candidates" error detail). Methods registered with `#[hub]` have their Rust
    /// parameter names in camelCase already (`group_name` becomes `groupName`).
    ///
    /// ```
    /// use signalr_server::{Hub, HubCallerContext};
    ///
    /// let hub = Hub::builder()
    ///     .method("Send", |_: HubCallerContext, user: String, text: String| async move {})
    ///     .parameter_names("Send", 2, &["user", "text"])
    ///     .build();
    /// # drop(hub);
    /// ```
    ///
    /// # Panics
    /// When no such method or overload is registered yet, or `names` does not have `arguments`
    /// entries.
    pub fn parameter_names(mut self, method: &str, arguments: usize, names: &[&str]) -> Self {
        assert_eq!(
            names.len(),
            arguments,
            "parameter_names: {} name(s) given for {arguments} argument(s) of '{method}'",
            names.len()
        );
        for entry in self.overloads_mut(method, Some(arguments), "parameter_names") {
            entry.parameter_names = names.iter().map(|n| (*n).to_owned()).collect();
        }
        self
    }

    /// Requires `policy` for hub method `name` (ASP.NET `[Authorize]` on a method): for every
    /// overload of `name` registered so far. Callers that fail it get `Failed to invoke '<name>'
    /// because user is unauthorized`.
    ///
    /// # Panics
    /// When no method `name` is registered yet.
    pub fn authorize_method(mut self, name: &str, policy: AuthorizationPolicy) -> Self {
        for entry in self.overloads_mut(name, None, "authorize_method") {
            entry.policy = Some(policy.clone());
        }
        self
    }

    /// Requires `policy` for the whole hub (ASP.NET `[Authorize]` on the hub): negotiate and
    /// transport requests of users who fail it get 401 (anonymous) or 403 (authenticated).
    pub fn require_authorization(mut self, policy: AuthorizationPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Decides, per request, whether a client may connect to the hub (classic SignalR's
    /// `AuthorizeHubConnection`; for ASP.NET Core clients a check beside
    /// [`require_authorization`](HubBuilder::require_authorization) that can also look at
    /// headers and the query string). It runs after authentication and the hub's policy on
    /// negotiate and on every transport request of the connection (WebSocket, SSE, polls,
    /// sends, DELETE); a refused request gets 401 when the user is anonymous (with
    /// `WWW-Authenticate: Bearer`) and 403 when authenticated. A second call replaces the check.
    ///
    /// ```
    /// use signalr_server::{Hub, auth::ConnectRequest};
    ///
    /// let hub = Hub::builder()
    ///     .authorize_connect(|request: &ConnectRequest| {
    ///         request.user().is_authenticated() || request.header("x-api-key") == Some("k")
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    pub fn authorize_connect(
        mut self,
        check: impl Fn(&ConnectRequest<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.connect_authorization = Some(Arc::new(check));
        self
    }

    /// Authenticates requests: bearer tokens from `Authorization` or `access_token` become the
    /// connection's [`User`]. See [`JwtAuthenticator`](crate::auth::JwtAuthenticator) for JWTs.
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
        self.user_id_provider = Arc::new(move |user, _| provider(user));
        self
    }

    /// Like [`HubBuilder::user_id_provider`], with the HTTP request that made the connection
    /// (ASP.NET's `IUserIdProvider` sees the connection, classic's the `IRequest`): e.g. a user id
    /// from a query parameter. Connections without request data (none today) get `None`.
    pub fn user_id_from_request(
        mut self,
        provider: impl Fn(&User, &ConnectionRequest) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.user_id_provider =
            Arc::new(move |user, request| request.and_then(|request| provider(user, request)));
        self
    }

    /// Application state, handed to hub methods that take a [`State<T>`](crate::hub::State)
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
        R: IntoHookResult,
    {
        let handler = Arc::new(handler);
        self.on_connected = Some(Arc::new(move |caller| {
            let future = handler(caller);
            Box::pin(async move { future.await.into_result() })
        }));
        self
    }

    /// Runs when a classic SignalR client has come back on its connection after losing its
    /// transport (classic `OnReconnected`: the same connection id, its groups kept). Never runs
    /// for ASP.NET Core clients: their automatic reconnect is a new connection, which runs
    /// `on_connected`, and a stateful-reconnect resume runs no hook at all (the hub does not see it).
    /// An error is logged; the connection goes on.
    pub fn on_reconnected<F, Fut, R>(mut self, handler: F) -> Self
    where
        F: Fn(HubCallerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        let handler = Arc::new(handler);
        self.on_reconnected = Some(Arc::new(move |caller| {
            let future = handler(caller);
            Box::pin(async move { future.await.into_result() })
        }));
        self
    }

    /// Runs when a connection has ended (ASP.NET `OnDisconnectedAsync`), with the error that
    /// ended it or `None` for a normal close. Group memberships are already gone.
    /// [`HubCallerContext::stop_called`] tells a client that ended the connection on purpose
    /// from one that went away (classic `OnDisconnected(stopCalled)`).
    pub fn on_disconnected<F, Fut, R>(mut self, handler: F) -> Self
    where
        F: Fn(HubCallerContext, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        let handler = Arc::new(handler);
        self.on_disconnected = Some(Arc::new(move |caller, error| {
            let future = handler(caller, error);
            Box::pin(async move { future.await.into_result() })
        }));
        self
    }

    /// Installs a lifetime manager other than the in-memory default, such as a scale-out
    /// backplane (ASP.NET `AddStackExchangeRedis`). `make` receives the hub's in-memory manager
    /// of this server's connections, which the new manager delivers local messages through, and
    /// is called once, by [`build`](Self::build).
    pub fn lifetime_manager<F>(mut self, make: F) -> Self
    where
        F: FnOnce(Arc<DefaultHubLifetimeManager>) -> Arc<dyn HubLifetimeManager> + Send + 'static,
    {
        self.lifetime_manager = Some(Box::new(make));
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
        let filters: Filters = self.filters.into();
        let local = Arc::new(DefaultHubLifetimeManager::new());
        let manager = match self.lifetime_manager {
            Some(make) => make(local.clone()),
            None => local.clone(),
        };
        let client_result_timeout = self.options.client_result_timeout;
        let methods_as_registered = self
            .methods
            .values()
            .flat_map(|overloads| {
                overloads
                    .iter()
                    .map(move |method| (method.name.clone(), overloads.clone()))
            })
            .collect();
        Hub {
            inner: Arc::new(HubInner {
                name: self.name,
                methods: self.methods,
                methods_as_registered,
                options: self.options,
                connection_options: self.connection_options,
                lifetime: Arc::new(Lifetime::new(
                    manager,
                    local,
                    filters.clone(),
                    client_result_timeout,
                )),
                filters,
                on_connected: self.on_connected,
                on_reconnected: self.on_reconnected,
                on_disconnected: self.on_disconnected,
                state: self.state,
                authenticator: self.authenticator,
                policy: self.policy,
                connect_authorization: self.connect_authorization,
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
            methods: BTreeMap::new(),
            options: HubOptions::default(),
            connection_options: ConnectionOptions::default(),
            filters: Vec::new(),
            on_connected: None,
            on_reconnected: None,
            on_disconnected: None,
            state: Extensions::new(),
            authenticator: None,
            policy: None,
            connect_authorization: None,
            user_id_provider: Arc::new(|user, _| user.name_identifier()),
            lifetime_manager: None,
        }
    }

    /// The hub's name ([`HubBuilder::name`]), if it has one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The names of the registered hub methods, as registered; an overloaded name once (or once
    /// per spelling, when its overloads were registered with names differing in case).
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.inner.methods.values().flat_map(|overloads| {
            let mut names: Vec<&str> = overloads.iter().map(|m| m.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            names
        })
    }

    /// A cheap-to-clone handle for sending to this hub's clients from anywhere (ASP.NET
    /// `IHubContext`); also the hub's open-connection count
    /// ([`HubContext::connection_count`]).
    pub fn context(&self) -> HubContext {
        HubContext::new(self.inner.lifetime.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        HubCallerContext, hub,
        hub::{State, UploadStream},
    };

    fn arities(hub: &HubInner, name: &str) -> Vec<(String, usize, Vec<String>)> {
        hub.methods_by_name()
            .find(|overloads| overloads[0].name.eq_ignore_ascii_case(name))
            .map(|overloads| {
                overloads
                    .iter()
                    .map(|m| {
                        (
                            m.name.clone(),
                            m.value_parameters,
                            m.parameter_names.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn resolve_by_name_and_argument_count() {
        let hub = Hub::builder()
            .method(
                "Add",
                |_: HubCallerContext, a: i32, b: i32| async move { a + b },
            )
            .method("add", |_: HubCallerContext| async { 0 })
            .method("Add", |_: HubCallerContext, a: i32| async move { a })
            .build();
        let inner = &hub.inner;
        for arguments in 0..3 {
            let method = inner.resolve("ADD", arguments).expect("resolves");
            assert_eq!(method.value_parameters, arguments);
        }
        assert_eq!(
            inner.resolve("Add", 3).err(),
            Some(Resolve::ArgumentCount {
                provided: 3,
                expected: vec![0, 1, 2]
            })
        );
        assert_eq!(inner.resolve("Sub", 0).err(), Some(Resolve::UnknownMethod));
        assert_eq!(
            arities(inner, "add"),
            [
                ("add".to_owned(), 0, vec![]),
                ("Add".to_owned(), 1, vec![]),
                ("Add".to_owned(), 2, vec![])
            ]
        );
        let mut names: Vec<&str> = hub.method_names().collect();
        names.sort_unstable();
        assert_eq!(names, ["Add", "add"]);
    }

    #[test]
    fn parameter_names_of_closures_and_policies_per_name() {
        let hub = Hub::builder()
            .method("Send", |_: HubCallerContext, _: String, _: String| async {})
            .method("Send", |_: HubCallerContext, _: String| async {})
            .parameter_names("send", 2, &["user", "text"])
            .authorize_method("SEND", AuthorizationPolicy::authenticated())
            .method("Send", |_: HubCallerContext| async {})
            .build();
        let overloads = hub.inner.methods_by_name().next().expect("one name");
        let summary: Vec<(usize, Vec<String>, bool)> = overloads
            .iter()
            .map(|m| {
                (
                    m.value_parameters,
                    m.parameter_names.clone(),
                    m.policy.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, vec![], false),
                (1, vec![], true),
                (2, vec!["user".to_owned(), "text".to_owned()], true)
            ]
        );
    }

    #[derive(Default)]
    struct Macro;

    #[hub]
    impl Macro {
        async fn join_group(&self, _ctx: HubCallerContext, group_name: String, _user_id: u32) {
            drop(group_name);
        }

        #[hub_method(name = "JoinGroup")]
        async fn join_default(&self, _ctx: HubCallerContext, _state: State<u8>) {}

        #[authorize]
        #[hub_method(name = "JoinGroup")]
        async fn join_one(&self, _ctx: HubCallerContext, r#type: String, _s: UploadStream<i32>) {
            drop(r#type);
        }

        #[on_reconnected]
        async fn back(&self, ctx: HubCallerContext) -> Result<(), crate::HubError> {
            Err(crate::HubError::new(format!(
                "back {}",
                ctx.connection_id()
            )))
        }
    }

    #[tokio::test]
    async fn hub_macro_registers_on_reconnected() {
        let hub = Macro::hub_builder().build();
        let caller = HubCallerContext::new(
            crate::engine::tests::connection(&hub, "c7"),
            tokio_util::sync::CancellationToken::new(),
            false,
        );
        let hook = hub.inner.on_reconnected.clone().expect("registered");
        let result = hook(caller).await;
        assert_eq!(
            result.err().map(|e| e.to_string()).as_deref(),
            Some("back c7")
        );
        assert!(hub.inner.on_connected.is_none() && hub.inner.on_disconnected.is_none());
    }

    #[test]
    fn hub_macro_records_camel_case_names_and_policies_per_overload() {
        let hub = Macro::hub_builder().state(1u8).build();
        let overloads = hub.inner.methods_by_name().next().expect("one name");
        let summary: Vec<(&str, usize, Vec<String>, bool, usize)> = overloads
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.value_parameters,
                    m.parameter_names.clone(),
                    m.policy.is_some(),
                    m.stream_parameters,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("JoinGroup", 0, vec![], false, 0),
                ("JoinGroup", 1, vec!["type".to_owned()], true, 1),
                (
                    "JoinGroup",
                    2,
                    vec!["groupName".to_owned(), "userId".to_owned()],
                    false,
                    0
                ),
            ]
        );
    }
}
