//! The invocation engine: what happens to a hub method call once a front door has parsed it,
//! whatever the wire protocol. It resolves the method, checks the call (argument count,
//! authorization, streams, invocation id), runs the filter pipeline and the method, and reports
//! a structured outcome ([`InvocationError`] or the method's [`MethodOutput`]). Each front door
//! renders outcomes in its own protocol's words: the ASP.NET Core front end
//! (`hub_connection.rs`) as Completion texts, the classic one as hub results.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use signalr_protocol::Payload;
use tokio_util::sync::CancellationToken;

use crate::caller_state::CallerState;
use crate::context::{ConnectionContext, HubCallerContext};
use crate::error::HubError;
use crate::filter::{HubInvocation, Next};
use crate::handler::{InvokeError, MethodOutput, ProgressSink, UploadReceiver};
use crate::hub::{MethodEntry, Resolve};

/// Why a call did not produce a value, in protocol-neutral terms.
#[derive(Debug)]
pub(crate) enum InvocationError {
    /// No hub method has that name.
    UnknownMethod,
    /// Methods of that name exist, none taking `provided` arguments; `expected` lists the
    /// argument counts of its overloads, ascending (one entry when it is not overloaded).
    ArgumentCount {
        provided: usize,
        expected: Vec<usize>,
    },
    /// The caller fails the method's authorization policy.
    Unauthorized,
    /// A streaming method called without streaming (`method_streams`) or the reverse.
    StreamingMismatch { method_streams: bool },
    /// The call brings another number of upload streams than the method takes.
    StreamCount { provided: usize, expected: usize },
    /// The connection already has the maximum number of open streams.
    TooManyStreams { maximum: usize },
    /// The invocation id is already used by a call in progress.
    DuplicateInvocationId(String),
    /// The arguments did not bind; the text is the detail shown with detailed errors.
    Binding(String),
    /// The method (or a filter) failed.
    Method(HubError),
}

impl From<InvokeError> for InvocationError {
    fn from(err: InvokeError) -> Self {
        match err {
            InvokeError::Binding(detail) => InvocationError::Binding(detail),
            InvokeError::Method(err) => InvocationError::Method(err),
        }
    }
}

/// A parsed call, as the engine checks it.
pub(crate) struct Call<'a> {
    pub target: &'a str,
    /// Argument values sent.
    pub arguments: usize,
    /// Upload streams sent.
    pub streams: usize,
    /// Whether the client asked for a stream of results.
    pub streaming: bool,
    pub invocation_id: Option<&'a str>,
    /// Streams the connection has open now (both directions).
    pub open_streams: usize,
}

/// Resolves and checks a call, in ASP.NET's order: the method, its argument count,
/// authorization, streaming kind, upload-stream count, the open-stream limit, the invocation id.
pub(crate) fn check(
    context: &ConnectionContext,
    call: &Call<'_>,
) -> Result<Arc<MethodEntry>, InvocationError> {
    let hub = &context.hub;
    let method = match hub.resolve(call.target, call.arguments) {
        Ok(method) => method,
        Err(Resolve::UnknownMethod) => {
            tracing::debug!(connection_id = %context.id, target = %call.target, "unknown hub method");
            return Err(InvocationError::UnknownMethod);
        }
        Err(Resolve::ArgumentCount { provided, expected }) => {
            return Err(InvocationError::ArgumentCount { provided, expected });
        }
    };
    if method
        .policy
        .as_ref()
        .is_some_and(|policy| !policy.allows(&context.user))
    {
        return Err(InvocationError::Unauthorized);
    }
    if method.streaming != call.streaming {
        return Err(InvocationError::StreamingMismatch {
            method_streams: method.streaming,
        });
    }
    if call.streams != method.stream_parameters {
        return Err(InvocationError::StreamCount {
            provided: call.streams,
            expected: method.stream_parameters,
        });
    }
    if call.streaming || call.streams > 0 {
        let maximum = hub.options.maximum_streams_per_client;
        if call.open_streams + usize::from(call.streaming) + call.streams > maximum {
            return Err(InvocationError::TooManyStreams { maximum });
        }
    }
    if let Some(id) = call.invocation_id {
        let in_use = context
            .invocations
            .lock()
            .map_or(true, |invocations| invocations.contains_key(id));
        if in_use {
            return Err(InvocationError::DuplicateInvocationId(id.to_owned()));
        }
    }
    Ok(method)
}

/// What a front door's protocol adds to a call: the caller state and where progress reports
/// go, as the method sees them ([`HubCallerContext::caller_state`],
/// [`Progress`](crate::hub::Progress)).
pub(crate) struct CallOptions {
    pub state: CallerState,
    pub progress: Option<ProgressSink>,
}

impl CallOptions {
    /// An ASP.NET Core call: inert caller state, progress reports dropped.
    pub(crate) fn core() -> Self {
        CallOptions {
            state: CallerState::inert(),
            progress: None,
        }
    }
}

/// Runs a checked call through the hub's filters and the method. `cancellation` is what the
/// method sees as [`HubCallerContext::cancellation`].
pub(crate) fn invoke(
    context: &Arc<ConnectionContext>,
    method: &MethodEntry,
    arguments: Vec<Payload>,
    streams: Vec<UploadReceiver>,
    cancellation: CancellationToken,
    options: CallOptions,
) -> BoxFuture<'static, Result<MethodOutput, InvocationError>> {
    let invocation = HubInvocation {
        caller: HubCallerContext::new(context.clone(), cancellation, false).with_options(options),
        method: method.name.clone(),
        arguments,
        streams,
        handler: method.handler.clone(),
    };
    let run = Next::new(context.hub.filters.clone()).run(invocation);
    Box::pin(async move { run.await.map_err(InvocationError::from) })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::context::{ClientSink, ConnectionInfo, Gone};
    use crate::message::SerializedHubMessage;
    use crate::{Hub, hub::Progress};

    /// A sink that drops everything.
    pub(crate) struct NullSink;

    impl ClientSink for NullSink {
        fn try_send(&self, _: &Arc<SerializedHubMessage>) {}
        fn send(&self, _: Arc<SerializedHubMessage>) -> BoxFuture<'_, Result<(), Gone>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A connection of `hub` that no front door serves (it looks like a classic client's: it has
    /// no hub protocol).
    pub(crate) fn connection(hub: &Hub, id: &str) -> Arc<ConnectionContext> {
        connection_with_protocol(hub, id, None)
    }

    /// A connection of `hub` that speaks `protocol` (`None`: a classic client).
    pub(crate) fn connection_with_protocol(
        hub: &Hub,
        id: &str,
        protocol: Option<signalr_protocol::HubProtocol>,
    ) -> Arc<ConnectionContext> {
        let info = ConnectionInfo {
            id: id.to_owned(),
            sink: Arc::new(NullSink),
            closed: CancellationToken::new(),
            transport: None,
            protocol,
            request: None,
            user: crate::auth::User::anonymous(),
        };
        ConnectionContext::new(info, hub.inner.clone())
    }

    #[tokio::test]
    async fn call_options_reach_the_method() {
        let hub = Hub::builder()
            .method(
                "Count",
                |ctx: HubCallerContext, n: u32, progress: Progress<u32>| async move {
                    let name: String = ctx.caller_state().get("name").unwrap_or_default();
                    for i in 1..=n {
                        progress.report(i);
                    }
                    ctx.caller_state().set("greeted", format!("hello {name}"));
                    "done"
                },
            )
            .build();
        let context = connection(&hub, "c1");
        let call = Call {
            target: "count",
            arguments: 1,
            streams: 0,
            streaming: false,
            invocation_id: Some("1"),
            open_streams: 0,
        };
        let method = check(&context, &call).expect("checked");
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let serde_json::Value::Object(initial) = json!({ "name": "ann" }) else {
            unreachable!()
        };
        let state = CallerState::new(initial);
        let options = CallOptions {
            state: state.clone(),
            progress: Some(Arc::new(move |payload: Payload| {
                let value: serde_json::Value = payload.deserialize().expect("json");
                sink.lock().expect("lock").push(value);
            })),
        };
        let output = invoke(
            &context,
            &method,
            vec![Payload::from_value(3)],
            Vec::new(),
            CancellationToken::new(),
            options,
        )
        .await
        .expect("runs");
        let MethodOutput::Value(result) = output else {
            panic!("a value: {output:?}");
        };
        assert_eq!(result.deserialize::<String>().ok().as_deref(), Some("done"));
        assert_eq!(
            *reports.lock().expect("lock"),
            [json!(1), json!(2), json!(3)]
        );
        assert_eq!(
            state.changes().map(serde_json::Value::Object),
            Some(json!({ "greeted": "hello ann" }))
        );
    }
    /// Runs `Add(a, b)` with JSON arguments for a caller speaking `protocol`.
    async fn add(
        protocol: Option<signalr_protocol::HubProtocol>,
        a: &'static str,
        b: &'static str,
    ) -> Result<i64, InvocationError> {
        let hub = Hub::builder()
            .method("Add", |_: HubCallerContext, a: i32, b: i32| async move {
                i64::from(a) + i64::from(b)
            })
            .build();
        let context = connection_with_protocol(&hub, "c1", protocol);
        let call = Call {
            target: "Add",
            arguments: 2,
            streams: 0,
            streaming: false,
            invocation_id: None,
            open_streams: 0,
        };
        let method = check(&context, &call)?;
        let arguments = vec![
            Payload::Json(bytes::Bytes::from_static(a.as_bytes())),
            Payload::Json(bytes::Bytes::from_static(b.as_bytes())),
        ];
        let output = invoke(
            &context,
            &method,
            arguments,
            Vec::new(),
            CancellationToken::new(),
            CallOptions::core(),
        )
        .await?;
        let MethodOutput::Value(result) = output else {
            panic!("a value: {output:?}");
        };
        Ok(result.deserialize::<i64>().expect("an integer"))
    }

    #[tokio::test]
    async fn classic_callers_bind_leniently_core_callers_strictly() {
        use signalr_protocol::HubProtocol;
        assert_eq!(add(None, r#""1""#, r#"" 2 ""#).await.ok(), Some(3));
        assert_eq!(add(None, "1", "2").await.ok(), Some(3));
        // Refused for classic callers too, as by SignalR 2.4.
        assert!(matches!(
            add(None, "1.5", "2").await,
            Err(InvocationError::Binding(_))
        ));
        assert!(matches!(
            add(None, r#""x""#, "2").await,
            Err(InvocationError::Binding(_))
        ));
        for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
            assert!(matches!(
                add(Some(protocol), r#""1""#, "2").await,
                Err(InvocationError::Binding(_))
            ));
        }
        assert_eq!(add(Some(HubProtocol::Json), "1", "2").await.ok(), Some(3));
    }
}
