//! Hub filters: code that wraps every hub method invocation, connect and disconnect (ASP.NET
//! `IHubFilter`, classic `HubPipelineModule`). A filter can log, reject (return an error without
//! calling `next`), transform arguments or results, and handle errors (inspect and replace the
//! `Err` that `next` returns, like `OnIncomingError`).
//!
//! Implement [`HubFilter`] and add it with [`HubBuilder::filter`](crate::HubBuilder::filter).
//! Its methods get what is called ([`HubInvocation`], [`OutgoingInvocation`] for calls to
//! clients) and the rest of the pipeline ([`Next`], [`NextConnected`], [`NextReconnected`],
//! [`NextDisconnected`]). [`LoggingFilter`] is a ready-made one that logs every
//! invocation, connect and disconnect.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use signalr_protocol::Payload;
use tokio::sync::mpsc;
#[cfg(test)]
use tokio_util::sync::CancellationToken;

use crate::clients::Recipients;
use crate::context::HubCallerContext;
use crate::error::HubError;
use crate::handler::{ErasedMethod, InvokeError, MethodOutput};

/// One call of a hub method, as filters see it.
pub struct HubInvocation {
    /// The caller.
    pub caller: HubCallerContext,
    /// The hub method's name, as registered.
    pub method: String,
    /// The client's arguments, before binding; a filter may replace them.
    pub arguments: Vec<Payload>,
    pub(crate) streams: Vec<mpsc::Receiver<Result<Payload, String>>>,
    pub(crate) handler: ErasedMethod,
}

impl std::fmt::Debug for HubInvocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubInvocation")
            .field("method", &self.method)
            .field("arguments", &self.arguments)
            .finish()
    }
}

/// A client method call about to be sent, as [`HubFilter::on_outgoing`] sees it (classic
/// SignalR's `IHubOutgoingInvokerContext`): a filter may change the method name and the
/// arguments, or drop the call.
#[derive(Debug)]
pub struct OutgoingInvocation {
    /// The client method's name.
    pub method: String,
    /// The arguments (serialized later, per connection protocol).
    pub arguments: Vec<Payload>,
    pub(crate) recipients: Recipients,
    pub(crate) expects_result: bool,
}

impl OutgoingInvocation {
    /// The connections the call is addressed to.
    pub fn recipients(&self) -> &Recipients {
        &self.recipients
    }

    /// Whether the server awaits the client's result
    /// ([`SingleClientProxy::invoke`](crate::clients::SingleClientProxy::invoke), ASP.NET Core client
    /// results) rather than just sending.
    pub fn expects_result(&self) -> bool {
        self.expects_result
    }
}

pub(crate) type Filters = Arc<[Arc<dyn HubFilter>]>;
pub(crate) type ConnectedFn =
    Arc<dyn Fn(HubCallerContext) -> BoxFuture<'static, Result<(), HubError>> + Send + Sync>;
/// `on_reconnected` has the shape of `on_connected`.
pub(crate) type ReconnectedFn = ConnectedFn;
pub(crate) type DisconnectedFn = Arc<
    dyn Fn(HubCallerContext, Option<String>) -> BoxFuture<'static, Result<(), HubError>>
        + Send
        + Sync,
>;

/// The rest of the invocation pipeline: the next filter, or the hub method itself.
pub struct Next {
    filters: Filters,
    index: usize,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field(
                "filters_left",
                &self.filters.len().saturating_sub(self.index),
            )
            .finish_non_exhaustive()
    }
}

impl Next {
    pub(crate) fn new(filters: Filters) -> Self {
        Next { filters, index: 0 }
    }

    /// Runs the rest of the pipeline.
    pub fn run(
        self,
        invocation: HubInvocation,
    ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>> {
        match self.filters.get(self.index).cloned() {
            Some(filter) => filter.invoke(
                invocation,
                Next {
                    filters: self.filters,
                    index: self.index + 1,
                },
            ),
            None => {
                (invocation.handler)(invocation.caller, invocation.arguments, invocation.streams)
            }
        }
    }
}

/// The rest of the connect pipeline.
pub struct NextConnected {
    filters: Filters,
    index: usize,
    handler: Option<ConnectedFn>,
}

impl std::fmt::Debug for NextConnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextConnected")
            .field(
                "filters_left",
                &self.filters.len().saturating_sub(self.index),
            )
            .finish_non_exhaustive()
    }
}

impl NextConnected {
    pub(crate) fn new(filters: Filters, handler: Option<ConnectedFn>) -> Self {
        NextConnected {
            filters,
            index: 0,
            handler,
        }
    }

    /// Runs the rest of the pipeline (ending with the hub's `on_connected`).
    pub fn run(self, caller: HubCallerContext) -> BoxFuture<'static, Result<(), HubError>> {
        match self.filters.get(self.index).cloned() {
            Some(filter) => filter.on_connected(
                caller,
                NextConnected {
                    filters: self.filters,
                    index: self.index + 1,
                    handler: self.handler,
                },
            ),
            None => match self.handler {
                Some(handler) => handler(caller),
                None => Box::pin(async { Ok(()) }),
            },
        }
    }
}

/// The rest of the reconnect pipeline (classic clients only, see
/// [`HubBuilder::on_reconnected`](crate::HubBuilder::on_reconnected)).
pub struct NextReconnected {
    filters: Filters,
    index: usize,
    handler: Option<ReconnectedFn>,
}

impl std::fmt::Debug for NextReconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextReconnected")
            .field(
                "filters_left",
                &self.filters.len().saturating_sub(self.index),
            )
            .finish_non_exhaustive()
    }
}

impl NextReconnected {
    pub(crate) fn new(filters: Filters, handler: Option<ReconnectedFn>) -> Self {
        NextReconnected {
            filters,
            index: 0,
            handler,
        }
    }

    /// Runs the rest of the pipeline (ending with the hub's `on_reconnected`).
    pub fn run(self, caller: HubCallerContext) -> BoxFuture<'static, Result<(), HubError>> {
        match self.filters.get(self.index).cloned() {
            Some(filter) => filter.on_reconnected(
                caller,
                NextReconnected {
                    filters: self.filters,
                    index: self.index + 1,
                    handler: self.handler,
                },
            ),
            None => match self.handler {
                Some(handler) => handler(caller),
                None => Box::pin(async { Ok(()) }),
            },
        }
    }
}

/// The rest of the disconnect pipeline.
pub struct NextDisconnected {
    filters: Filters,
    index: usize,
    handler: Option<DisconnectedFn>,
}

impl std::fmt::Debug for NextDisconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextDisconnected")
            .field(
                "filters_left",
                &self.filters.len().saturating_sub(self.index),
            )
            .finish_non_exhaustive()
    }
}

impl NextDisconnected {
    pub(crate) fn new(filters: Filters, handler: Option<DisconnectedFn>) -> Self {
        NextDisconnected {
            filters,
            index: 0,
            handler,
        }
    }

    /// Runs the rest of the pipeline (ending with the hub's `on_disconnected`).
    pub fn run(
        self,
        caller: HubCallerContext,
        error: Option<String>,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        match self.filters.get(self.index).cloned() {
            Some(filter) => filter.on_disconnected(
                caller,
                error,
                NextDisconnected {
                    filters: self.filters,
                    index: self.index + 1,
                    handler: self.handler,
                },
            ),
            None => match self.handler {
                Some(handler) => handler(caller, error),
                None => Box::pin(async { Ok(()) }),
            },
        }
    }
}

/// A hub filter. Every method has a default that just calls `next`; override what you need.
/// Filters run in the order they were added, the first added outermost.
pub trait HubFilter: Send + Sync + 'static {
    /// Wraps one hub method invocation (streaming ones too: the output is then the stream).
    fn invoke(
        self: Arc<Self>,
        invocation: HubInvocation,
        next: Next,
    ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>> {
        next.run(invocation)
    }

    /// Wraps `on_connected`. An error closes the connection with
    /// `Connection closed with an error.`.
    fn on_connected(
        self: Arc<Self>,
        caller: HubCallerContext,
        next: NextConnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        next.run(caller)
    }

    /// Wraps `on_reconnected`, which runs when a classic client comes back on its connection
    /// (classic `HubPipelineModule.OnBeforeReconnect`/`OnAfterReconnect`); never for ASP.NET Core
    /// clients.
    fn on_reconnected(
        self: Arc<Self>,
        caller: HubCallerContext,
        next: NextReconnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        next.run(caller)
    }

    /// Sees every client method call before it is sent (classic SignalR
    /// `HubPipelineModule.OnBeforeOutgoing`): once per send, whatever the number of recipients,
    /// from hub methods and from a [`HubContext`](crate::HubContext) alike. It may change the
    /// method and arguments; returning `false` drops the call (nothing is sent, and an awaited
    /// client result fails with
    /// [`ClientResultError::DroppedByFilter`](crate::error::ClientResultError::DroppedByFilter)).
    /// Filters run in the order they were added; the first that returns `false` ends it. It
    /// runs on the sending task before anything is serialized: keep it quick and never block.
    fn on_outgoing(&self, invocation: &mut OutgoingInvocation) -> bool {
        let _ = invocation;
        true
    }

    /// Wraps `on_disconnected`; `error` says why the connection ended, `None` for a normal close.
    /// [`HubCallerContext::stop_called`] says whether the client ended it on purpose.
    fn on_disconnected(
        self: Arc<Self>,
        caller: HubCallerContext,
        error: Option<String>,
        next: NextDisconnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        next.run(caller, error)
    }
}

/// A filter that logs every invocation, connect and disconnect with `tracing` at `info` (errors
/// at `warn`), with the connection id, method and duration.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingFilter;

impl HubFilter for LoggingFilter {
    fn invoke(
        self: Arc<Self>,
        invocation: HubInvocation,
        next: Next,
    ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>> {
        Box::pin(async move {
            let method = invocation.method.clone();
            let connection_id = invocation.caller.connection_id().to_owned();
            let started = Instant::now();
            tracing::info!(%connection_id, %method, "invoking hub method");
            let result = next.run(invocation).await;
            let elapsed_us = started.elapsed().as_micros();
            match &result {
                Ok(_) => {
                    tracing::info!(%connection_id, %method, elapsed_us, "hub method completed")
                }
                Err(InvokeError::Binding(detail)) => {
                    tracing::warn!(%connection_id, %method, %detail, "hub method arguments did not bind")
                }
                Err(InvokeError::Method(err)) => {
                    tracing::warn!(%connection_id, %method, elapsed_us, error = %err, "hub method failed")
                }
            }
            result
        })
    }

    fn on_connected(
        self: Arc<Self>,
        caller: HubCallerContext,
        next: NextConnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        Box::pin(async move {
            tracing::info!(connection_id = %caller.connection_id(), user = ?caller.user_identifier(), transport = ?caller.transport(), "client connected");
            next.run(caller).await
        })
    }

    fn on_reconnected(
        self: Arc<Self>,
        caller: HubCallerContext,
        next: NextReconnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        Box::pin(async move {
            tracing::info!(connection_id = %caller.connection_id(), user = ?caller.user_identifier(), transport = ?caller.transport(), "client reconnected");
            next.run(caller).await
        })
    }

    fn on_disconnected(
        self: Arc<Self>,
        caller: HubCallerContext,
        error: Option<String>,
        next: NextDisconnected,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        Box::pin(async move {
            tracing::info!(connection_id = %caller.connection_id(), error = ?error, stop_called = caller.stop_called(), "client disconnected");
            next.run(caller, error).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::Hub;
    use crate::engine::tests::connection;

    /// Records `<label> before` / `<label> after` around the reconnect pipeline.
    struct Around(&'static str, Arc<Mutex<Vec<String>>>);

    impl HubFilter for Around {
        fn on_reconnected(
            self: Arc<Self>,
            caller: HubCallerContext,
            next: NextReconnected,
        ) -> BoxFuture<'static, Result<(), HubError>> {
            Box::pin(async move {
                self.1
                    .lock()
                    .expect("lock")
                    .push(format!("{} before", self.0));
                let result = next.run(caller).await;
                self.1
                    .lock()
                    .expect("lock")
                    .push(format!("{} after", self.0));
                result
            })
        }
    }

    #[tokio::test]
    async fn reconnect_pipeline_runs_filters_then_the_hook() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let hook_log = log.clone();
        let hub = Hub::builder()
            .filter(Around("outer", log.clone()))
            .filter(LoggingFilter)
            .filter(Around("inner", log.clone()))
            .on_reconnected(move |caller: HubCallerContext| {
                let log = hook_log.clone();
                async move {
                    log.lock()
                        .expect("lock")
                        .push(format!("reconnected {}", caller.connection_id()));
                    Err::<(), _>(HubError::new("hook error"))
                }
            })
            .build();
        let context = connection(&hub, "c1");
        let caller = HubCallerContext::new(context, CancellationToken::new(), false);
        let result =
            NextReconnected::new(hub.inner.filters.clone(), hub.inner.on_reconnected.clone())
                .run(caller)
                .await;
        assert_eq!(
            result.err().map(|e| e.to_string()).as_deref(),
            Some("hook error")
        );
        assert_eq!(
            *log.lock().expect("lock"),
            [
                "outer before",
                "inner before",
                "reconnected c1",
                "inner after",
                "outer after"
            ]
        );
    }

    #[tokio::test]
    async fn reconnect_pipeline_without_a_hook_is_ok() {
        let hub = Hub::builder().filter(LoggingFilter).build();
        let caller = HubCallerContext::new(connection(&hub, "c1"), CancellationToken::new(), false);
        let result = NextReconnected::new(hub.inner.filters.clone(), None)
            .run(caller)
            .await;
        assert!(result.is_ok());
    }
}
