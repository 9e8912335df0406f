//! `TestHub`: the hub of ASP.NET Core SignalR's TypeScript client functional tests
//! (`src/SignalR/clients/ts/FunctionalTests/TestHub.cs`), plus a few methods of our own for groups,
//! HubException-style errors and errors in the middle of a stream.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream;
use signalr_server::{
    ConnectionOptions, Hub, HubCallerContext, HubError, HubOptions, TransportType,
    filter::{HubFilter, HubInvocation, LoggingFilter, Next},
    hub::{InvokeError, MethodOutput, UploadStream},
};

use crate::complex::{ComplexObject, CustomObject};

/// An error reported like a .NET `InvalidOperationException`: with detailed errors on (as in the
/// ASP.NET test server) the client sees `An unexpected error occurred invoking '<m>' on the
/// server. InvalidOperationException: <message>`.
#[derive(Debug, thiserror::Error)]
#[error("InvalidOperationException: {0}")]
pub struct InvalidOperation(pub String);

/// An error reported like a .NET `FormatException`.
#[derive(Debug, thiserror::Error)]
#[error("FormatException: {0}")]
pub struct FormatError(pub String);

/// `StreamThrowException` throws before it returns its stream, so ASP.NET reports the error as an
/// invocation error (`An unexpected error occurred invoking ...`), not as a streaming error. A
/// streaming hub method here cannot fail before it returns its stream, so this filter does it.
struct ThrowBeforeStreaming;

impl HubFilter for ThrowBeforeStreaming {
    fn invoke(
        self: Arc<Self>,
        invocation: HubInvocation,
        next: Next,
    ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>> {
        if invocation.method == "StreamThrowException" {
            let message = invocation
                .arguments
                .first()
                .and_then(|argument| argument.deserialize::<String>().ok());
            if let Some(message) = message {
                return Box::pin(async move {
                    Err(InvokeError::Method(InvalidOperation(message).into()))
                });
            }
        }
        next.run(invocation)
    }
}

/// A request header as ASP.NET's `Request.Headers[name]` gives it: all values joined with `,`.
pub(crate) fn header(hub: &HubCallerContext, name: &str) -> Option<String> {
    let request = hub.request()?;
    let values: Vec<&str> = request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The ASP.NET test server's hub options: detailed errors on.
pub fn hub_options() -> HubOptions {
    HubOptions {
        enable_detailed_errors: true,
        ..HubOptions::default()
    }
}

/// Builds a `TestHub` offering `transports`.
pub fn test_hub(transports: Vec<TransportType>) -> Hub {
    build(ConnectionOptions {
        transports,
        ..ConnectionOptions::default()
    })
}

/// Builds a `TestHub` on every transport that offers stateful reconnect (ASP.NET's
/// `AllowStatefulReconnects`).
pub fn stateful_test_hub() -> Hub {
    build(ConnectionOptions {
        allow_stateful_reconnects: true,
        ..ConnectionOptions::default()
    })
}

fn build(connection_options: ConnectionOptions) -> Hub {
    Hub::builder()
        .options(hub_options())
        .connection_options(connection_options)
        .filter(LoggingFilter)
        .filter(ThrowBeforeStreaming)
        .method(
            "Echo",
            |_: HubCallerContext, message: Option<String>| async move { message },
        )
        .method("GetCallerConnectionId", |hub: HubCallerContext| async move {
            hub.connection_id().to_owned()
        })
        .method("GetNumRedirects", |hub: HubCallerContext| async move {
            // ASP.NET parses `Request.Query["numRedirects"]` as text, and a missing parameter is
            // the empty string: outside /redirect the call fails with the parse error for ''.
            let value = hub
                .request()
                .and_then(|request| request.query_param("numRedirects"))
                .unwrap_or_default();
            value.parse::<i32>().map_err(|_| {
                HubError::from(FormatError(format!(
                    "The input string '{value}' was not in a correct format."
                )))
            })
        })
        .method(
            "ThrowException",
            |_: HubCallerContext, message: String| async move {
                Err::<(), _>(HubError::from(InvalidOperation(message)))
            },
        )
        .method(
            "ThrowHubException",
            |_: HubCallerContext, message: String| async move {
                Err::<(), _>(HubError::new(message))
            },
        )
        .method(
            "InvokeWithString",
            |hub: HubCallerContext, message: String| async move {
                hub.clients()
                    .client(hub.connection_id())
                    .send("Message", (message,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendCustomObject",
            |hub: HubCallerContext, custom: CustomObject| async move {
                hub.clients()
                    .client(hub.connection_id())
                    .send("CustomObject", (custom,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method("Stream", |_: HubCallerContext| async move {
            stream::iter(["a", "b", "c"])
        })
        .method("InfiniteStream", |hub: HubCallerContext| async move {
            let cancelled = hub.cancellation().clone();
            let context = hub.clone();
            tokio::spawn(async move {
                cancelled.cancelled().await;
                if let Err(err) = context
                    .clients()
                    .client(context.connection_id())
                    .send("StreamCanceled", ())
                    .await
                {
                    tracing::warn!(%err, "could not tell the client its stream was canceled");
                }
            });
            stream::pending::<String>()
        })
        .method(
            "StreamingConcat",
            |_: HubCallerContext, mut items: UploadStream<String>| async move {
                let mut text = String::new();
                while let Some(item) = items.next().await {
                    // ASP.NET completes the channel with a HubException carrying the client's error.
                    text.push_str(&item.map_err(HubError::new)?);
                }
                Ok::<_, HubError>(text)
            },
        )
        .method("EmptyStream", |_: HubCallerContext| async move {
            stream::empty::<i32>()
        })
        .method(
            "StreamThrowException",
            |_: HubCallerContext, message: String| async move {
                // Not reached: ThrowBeforeStreaming fails the invocation first.
                stream::iter([Err::<String, _>(HubError::from(InvalidOperation(message)))])
            },
        )
        .method(
            "StreamWithError",
            |_: HubCallerContext, message: String| async move {
                stream::iter([
                    Ok("a".to_owned()),
                    Ok("b".to_owned()),
                    Err(HubError::from(InvalidOperation(message))),
                ])
            },
        )
        .method(
            "GetActiveTransportName",
            |hub: HubCallerContext| async move { hub.transport().map(TransportType::name) },
        )
        .method(
            "EchoComplexObject",
            |_: HubCallerContext, value: ComplexObject| async move { value },
        )
        .method("SendComplexObject", |_: HubCallerContext| async move {
            ComplexObject::sample()
        })
        .method("GetContentTypeHeader", |hub: HubCallerContext| async move {
            // ASP.NET answers `Request.Headers["Content-Type"].ToString()`: "" when there is none
            // (GetHeader, by contrast, answers null for a missing header).
            header(&hub, "content-type").unwrap_or_default()
        })
        .method(
            "GetHeader",
            |hub: HubCallerContext, name: String| async move { header(&hub, &name) },
        )
        .method(
            "GetCookie",
            |hub: HubCallerContext, name: String| async move {
                hub.request()
                    .and_then(|request| request.cookie(&name))
                    .map(str::to_owned)
            },
        )
        .method(
            "JoinGroup",
            |hub: HubCallerContext, group: String| async move {
                hub.groups().add_to_group(hub.connection_id(), &group).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "LeaveGroup",
            |hub: HubCallerContext, group: String| async move {
                hub.groups()
                    .remove_from_group(hub.connection_id(), &group)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToGroup",
            |hub: HubCallerContext, group: String, message: String| async move {
                hub.clients()
                    .group(group.clone())
                    .send("GroupMessage", (group, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .build()
}

/// The names of the methods [`test_hub`] registers, for the index page.
pub const METHODS: &[&str] = &[
    "Echo(message)",
    "GetCallerConnectionId()",
    "GetNumRedirects()",
    "ThrowException(message)",
    "ThrowHubException(message)",
    "InvokeWithString(message) -> client Message(message)",
    "SendCustomObject({Name, Value}) -> client CustomObject(obj)",
    "Stream() -> a, b, c",
    "InfiniteStream() -> client StreamCanceled() on cancel",
    "StreamingConcat(stream of strings)",
    "EmptyStream()",
    "StreamThrowException(message)",
    "StreamWithError(message) -> a, b, error",
    "GetActiveTransportName()",
    "EchoComplexObject(obj)",
    "SendComplexObject()",
    "GetContentTypeHeader()",
    "GetHeader(name)",
    "GetCookie(name)",
    "JoinGroup(group)",
    "LeaveGroup(group)",
    "SendToGroup(group, message) -> members GroupMessage(group, message)",
];
