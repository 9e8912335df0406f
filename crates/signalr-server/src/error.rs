//! Errors of hub methods ([`HubError`]) and of calls to clients: [`SendError`] (a message could
//! not be sent), [`ClientResultError`] (a client result did not come), [`GroupError`] (a group
//! change failed).

use std::fmt;

use serde::Serialize;

/// The error a hub method returns.
///
/// Two kinds, as in ASP.NET (`ErrorMessageHelper`, docs/protocol.md, "Completions"):
/// - [`HubError::new`] is a `HubException`: its message always reaches the client, as
///   `An unexpected error occurred invoking '<method>' on the server. HubException: <message>`
///   (in a stream: `An error occurred on the server while streaming results. HubException:
///   <message>`);
/// - any other error (converted with `?` from any `std::error::Error`) is *unexpected*: the
///   client sees only `An unexpected error occurred invoking '<method>' on the server.`, followed
///   by the error's text when
///   [`HubOptions::enable_detailed_errors`](crate::HubOptions::enable_detailed_errors) is on.
///
/// [`HubError::with_data`] is a `HubException` that also carries a value (classic SignalR's
/// `HubException.ErrorData`): classic clients receive it next to the message (as the result's
/// `D`, readable as `error.data` in JavaScript); ASP.NET Core clients have no such field and get
/// exactly the text of [`HubError::new`].
pub struct HubError {
    kind: HubErrorKind,
}

enum HubErrorKind {
    Hub {
        message: String,
        data: Option<serde_json::Value>,
    },
    Unexpected(Box<dyn std::error::Error + Send + Sync>),
}

impl HubError {
    /// An error whose `message` always reaches the client (ASP.NET `HubException`).
    pub fn new(message: impl Into<String>) -> Self {
        HubError {
            kind: HubErrorKind::Hub {
                message: message.into(),
                data: None,
            },
        }
    }

    /// A `HubException` whose `message` always reaches the client, with `data` for classic
    /// clients (classic `HubException(message, errorData)`). `data` is serialized with serde now;
    /// if that fails the error is logged and carries no data. ASP.NET Core clients see the same
    /// text as for [`HubError::new`]; the data is not sent to them.
    ///
    /// ```
    /// use signalr_server::HubError;
    ///
    /// let err = HubError::with_data("out of stock", serde_json::json!({ "code": 7 }));
    /// assert!(err.is_hub_error());
    /// assert_eq!(err.to_string(), "out of stock");
    /// ```
    pub fn with_data(message: impl Into<String>, data: impl Serialize) -> Self {
        let data = serde_json::to_value(data)
            .inspect_err(|err| tracing::error!(%err, "HubError data failed to serialize; dropped"))
            .ok();
        HubError {
            kind: HubErrorKind::Hub {
                message: message.into(),
                data,
            },
        }
    }

    /// Whether the message is meant for the client ([`HubError::new`] or
    /// [`HubError::with_data`], a `HubException`).
    pub fn is_hub_error(&self) -> bool {
        matches!(self.kind, HubErrorKind::Hub { .. })
    }

    /// The data of a [`HubError::with_data`] error (classic `ErrorData`).
    pub(crate) fn data(&self) -> Option<&serde_json::Value> {
        match &self.kind {
            HubErrorKind::Hub { data, .. } => data.as_ref(),
            HubErrorKind::Unexpected(_) => None,
        }
    }

    /// The message of a `HubException` ([`HubError::new`], [`HubError::with_data`]): the text the
    /// client always receives. `None` for unexpected errors.
    pub(crate) fn hub_message(&self) -> Option<&str> {
        match &self.kind {
            HubErrorKind::Hub { message, .. } => Some(message),
            HubErrorKind::Unexpected(_) => None,
        }
    }

    /// `message` with this error appended as ASP.NET's `BuildErrorMessage` does: always for a
    /// `HubException`, otherwise only with detailed errors.
    pub(crate) fn build_message(&self, message: String, detailed: bool) -> String {
        match &self.kind {
            HubErrorKind::Hub { message: text, .. } => format!("{message} HubException: {text}"),
            HubErrorKind::Unexpected(err) if detailed => format!("{message} {err}"),
            HubErrorKind::Unexpected(_) => message,
        }
    }

    /// The text the client receives when this error ends an invocation of `method`.
    pub(crate) fn invocation_message(&self, method: &str, detailed: bool) -> String {
        self.build_message(
            format!("An unexpected error occurred invoking '{method}' on the server."),
            detailed,
        )
    }

    /// The text the client receives when this error ends a stream (docs/protocol.md, "Completions").
    pub(crate) fn stream_message(&self, detailed: bool) -> String {
        self.build_message(
            "An error occurred on the server while streaming results.".to_owned(),
            detailed,
        )
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
            HubErrorKind::Hub { message, .. } => f.write_str(message),
            HubErrorKind::Unexpected(err) => write!(f, "{err}"),
        }
    }
}

impl fmt::Debug for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            HubErrorKind::Hub {
                message,
                data: None,
            } => f.debug_tuple("HubError").field(message).finish(),
            HubErrorKind::Hub {
                message,
                data: Some(data),
            } => f
                .debug_tuple("HubError")
                .field(message)
                .field(data)
                .finish(),
            HubErrorKind::Unexpected(err) => {
                f.debug_tuple("HubError::Unexpected").field(err).finish()
            }
        }
    }
}

/// A call to a client method that expects a result (client results, docs/protocol.md, "Client results") failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientResultError {
    /// The client answered with an error, e.g. `Client didn't provide a result.` when it has no
    /// handler, or the text of the exception its handler threw.
    #[error("{0}")]
    Client(String),
    /// The connection closed before the client answered: `Connection '<id>' disconnected.`
    #[error("Connection '{0}' disconnected.")]
    Disconnected(String),
    /// No connection with that id is connected to this hub.
    #[error("Connection '{0}' does not exist.")]
    UnknownConnection(String),
    /// The client did not answer within
    /// [`HubOptions::client_result_timeout`](crate::HubOptions::client_result_timeout).
    #[error("The client did not return a result within the timeout.")]
    Timeout,
    /// The client's result does not bind to the requested type.
    #[error("The client's result could not be read: {0}")]
    InvalidResult(String),
    /// Client results cannot be requested while the connection is being set up:
    /// `Client results inside OnConnectedAsync Hub methods are not allowed.`
    #[error("Client results inside OnConnectedAsync Hub methods are not allowed.")]
    NotAllowedInOnConnected,
    /// The connection is a classic SignalR client, which cannot return results to the server.
    #[error("Classic SignalR clients cannot return results to the server.")]
    Unsupported,
    /// A hub filter's [`on_outgoing`](crate::filter::HubFilter::on_outgoing) dropped the call of this
    /// client method: nothing was sent.
    #[error("A hub filter dropped the call of client method '{0}'.")]
    DroppedByFilter(String),
    /// The backplane could not carry the invocation or its answer (for example, Redis is
    /// unreachable); the text says why.
    #[error("The backplane failed: {0}")]
    Backplane(String),
}

/// A send to clients failed ([`ClientProxy::send`](crate::clients::ClientProxy::send) and the other
/// sends). The in-memory lifetime manager never fails; a backplane does when it cannot take the
/// message. With `?` in a hub method it becomes an unexpected error of the invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The backplane could not take the message (for example, Redis is unreachable and the
    /// publish timed out); the text says why. Connections of this server may have received it.
    #[error("The backplane failed to send the message: {0}")]
    Backplane(String),
}

/// Adding a connection to a group or removing it failed
/// ([`GroupManager`](crate::clients::GroupManager)). The in-memory lifetime manager never fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The backplane could not take the group command; the text says why.
    #[error("The backplane failed to change the group: {0}")]
    Backplane(String),
    /// The connection is not on this server and no server acknowledged the change within the
    /// backplane's acknowledgement timeout (30 s for Redis, as ASP.NET). Nothing is rolled back:
    /// the owning server may still apply it.
    #[error(
        "No server acknowledged the change of group '{group}' for connection '{connection_id}' in time."
    )]
    AckTimeout {
        /// The connection whose membership was to change.
        connection_id: String,
        /// The group.
        group: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_data_is_a_hub_exception_with_data() {
        let err = HubError::with_data("nope", serde_json::json!({ "Code": 42 }));
        assert!(err.is_hub_error());
        assert_eq!(err.hub_message(), Some("nope"));
        assert_eq!(err.data(), Some(&serde_json::json!({ "Code": 42 })));
        // Core clients: the same text as HubError::new.
        assert_eq!(
            err.invocation_message("M", false),
            HubError::new("nope").invocation_message("M", false)
        );
    }

    #[test]
    fn plain_and_unexpected_errors_have_no_data() {
        let hub = HubError::new("text");
        assert_eq!(hub.hub_message(), Some("text"));
        assert_eq!(hub.data(), None);
        let unexpected = HubError::from(std::fmt::Error);
        assert_eq!(unexpected.hub_message(), None);
        assert_eq!(unexpected.data(), None);
    }

    #[test]
    fn data_that_fails_to_serialize_is_dropped() {
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let err = HubError::with_data("still a hub error", Bad);
        assert_eq!(err.hub_message(), Some("still a hub error"));
        assert_eq!(err.data(), None);
    }
}
