//! Hub invocations from classic clients (`{"H","M","A","I","S"}`) run by the invocation engine,
//! and their outcomes in classic SignalR's words: hub results `{"I","R","S"}`, `{"I","E"}` and
//! HubException results with `"H":true` and error data `D`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use signalr_protocol::Payload;
use signalr_protocol::classic::{self, HubInvocation, HubResult, MAX_STATE_LENGTH};

use super::ClassicEndpoint;
use super::connection::ClassicConnection;
use crate::caller_state::CallerState;
use crate::engine::{self, CallOptions, InvocationError};
use crate::handler::MethodOutput;

/// A request the server does not answer with a hub result: the real server fails it (HTTP 500
/// on `/send`; nothing at all on a WebSocket).
#[derive(Debug)]
pub(crate) struct Refused(pub &'static str);

/// Runs one hub invocation of `connection` and returns the hub result to send back.
pub(crate) async fn invoke(
    endpoint: &ClassicEndpoint,
    connection: &Arc<ClassicConnection>,
    data: Bytes,
) -> Result<Bytes, Refused> {
    let call = HubInvocation::parse_bytes(data).map_err(|_| Refused("malformed hub invocation"))?;
    if call.state.json_length() > MAX_STATE_LENGTH {
        return Err(Refused(
            "State has exceeded the maximum length of 4096 bytes.",
        ));
    }
    let detailed = endpoint.options.enable_detailed_errors;
    let generic = HubResult::Error(format!(
        "There was an error invoking Hub method '{}.{}'.",
        call.hub, call.method
    ));
    let subscription = if let Some(subscription) = connection.hub(&call.hub) {
        subscription
    } else {
        if connection.refused_hub(&call.hub) {
            // A hub the client named but may not use: its calls fail like any other error.
            let result = if detailed {
                let name = endpoint
                    .hub_display_name(&call.hub)
                    .unwrap_or(call.hub.as_str());
                HubResult::Error(format!(
                    "Caller is not authorized to invoke the {} method on {name}.",
                    call.method
                ))
            } else {
                generic
            };
            return Ok(render(
                call.id.as_deref(),
                &classic::CallerState::new(),
                &result,
            ));
        }
        match endpoint.unlisted_hub(connection, &call.hub) {
            Some(subscription) => subscription,
            None => return Err(Refused("unknown hub")),
        }
    };
    let context = &subscription.context;
    let check = engine::Call {
        target: &call.method,
        arguments: call.arguments.len(),
        streams: 0,
        streaming: false,
        invocation_id: None,
        open_streams: 0,
    };
    let state = CallerState::new(
        call.state
            .iter()
            .filter_map(|(key, value)| {
                value
                    .deserialize::<serde_json::Value>()
                    .ok()
                    .map(|v| (key.to_owned(), v))
            })
            .collect(),
    );
    let outcome = match engine::check(context, &check) {
        Err(err) => Err(err),
        Ok(method) => {
            let _permit = connection.invocation_permit().await;
            let progress = call.id.clone().map(|id| {
                let outbox = connection.outbox.clone();
                let sink: crate::handler::ProgressSink = Arc::new(move |value: Payload| {
                    let mut out = BytesMut::new();
                    if classic::write_progress(&id, &value, &mut out).is_ok() {
                        outbox.push_message(out.freeze());
                    }
                });
                sink
            });
            let options = CallOptions {
                state: state.clone(),
                progress,
            };
            engine::invoke(
                context,
                &method,
                call.arguments,
                Vec::new(),
                connection.closed.child_token(),
                options,
            )
            .await
        }
    };
    let result = match outcome {
        Ok(MethodOutput::Value(value)) => HubResult::Value(value),
        Ok(MethodOutput::Void) => HubResult::Void,
        // Classic SignalR has no streams: a streaming method is refused before it runs, so this
        // is a method whose stream a filter produced.
        Ok(MethodOutput::Stream(_)) => generic,
        Err(err) => {
            tracing::debug!(connection_id = %connection.id, hub = %call.hub, method = %call.method, error = ?err, "classic hub invocation failed");
            error_result(&err, &call.method, subscription.name.as_ref(), detailed)
                .unwrap_or(generic)
        }
    };
    let mut changed = classic::CallerState::new();
    if let Some(changes) = state.changes() {
        for (key, value) in changes {
            changed.set(key, Payload::from_value(value));
        }
    }
    Ok(render(call.id.as_deref(), &changed, &result))
}

/// The classic hub result of a failure: a HubException always shows its message (and data);
/// everything else shows details only with detailed errors (`None`: the generic text).
fn error_result(
    err: &InvocationError,
    method: &str,
    hub_name: &str,
    detailed: bool,
) -> Option<HubResult> {
    if let InvocationError::Method(err) = err
        && let Some(message) = err.hub_message()
    {
        return Some(HubResult::HubError {
            message: message.to_owned(),
            data: err.data().cloned().map(Payload::from_value),
        });
    }
    if !detailed {
        return None;
    }
    let text = match err {
        InvocationError::UnknownMethod => {
            format!("'{method}' method could not be resolved. No method found with that name.")
        }
        InvocationError::ArgumentCount { expected, .. } => {
            let candidates: Vec<String> = expected
                .iter()
                .map(|count| {
                    let parameters: Vec<String> = (1..=*count).map(|i| format!("arg{i}")).collect();
                    format!("{method}({})", parameters.join(", "))
                })
                .collect();
            format!(
                "'{method}' method could not be resolved. Potential candidates are: \n{}",
                candidates.join("\n")
            )
        }
        InvocationError::Unauthorized => {
            format!("Caller is not authorized to invoke the {method} method on {hub_name}.")
        }
        InvocationError::StreamingMismatch { .. } | InvocationError::StreamCount { .. } => {
            format!("'{method}' is a streaming method, which classic SignalR clients cannot call.")
        }
        InvocationError::Binding(detail) => detail.clone(),
        InvocationError::Method(err) => err.to_string(),
        InvocationError::TooManyStreams { .. } | InvocationError::DuplicateInvocationId(_) => {
            return None;
        }
    };
    Some(HubResult::Error(text))
}

fn render(id: Option<&str>, changed: &classic::CallerState, result: &HubResult) -> Bytes {
    let mut out = BytesMut::new();
    if classic::write_hub_result(id, changed, result, &mut out).is_err() {
        // The method's value failed to serialize: say so instead of sending half a result.
        out.clear();
        let error = HubResult::Error("The hub method's result could not be serialized.".into());
        let _ = classic::write_hub_result(id, &classic::CallerState::new(), &error, &mut out);
    }
    out.freeze()
}
