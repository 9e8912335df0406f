//! Errors of hub methods and of calls to clients.

use std::fmt;

/// The error a hub method returns.
///
/// Two kinds, as in ASP.NET (`ErrorMessageHelper`, reference §A6.4):
/// - [`HubError::new`] is a `HubException`: its message always reaches the client, as
///   `An unexpected error occurred invoking '<method>' on the server. HubException: <message>`
///   (in a stream: `An error occurred on the server while streaming results. HubException:
///   <message>`);
/// - any other error (converted with `?` from any `std::error::Error`) is *unexpected*: the
///   client sees only `An unexpected error occurred invoking '<method>' on the server.`, followed
///   by the error's text when
///   [`HubOptions::enable_detailed_errors`](crate::HubOptions::enable_detailed_errors) is on.
pub struct HubError {
    kind: HubErrorKind,
}

enum HubErrorKind {
    Hub(String),
    Unexpected(Box<dyn std::error::Error + Send + Sync>),
}

impl HubError {
    /// An error whose `message` always reaches the client (ASP.NET `HubException`).
    pub fn new(message: impl Into<String>) -> Self {
        HubError {
            kind: HubErrorKind::Hub(message.into()),
        }
    }

    /// Whether the message is meant for the client ([`HubError::new`], a `HubException`).
    pub fn is_hub_error(&self) -> bool {
        matches!(self.kind, HubErrorKind::Hub(_))
    }

    /// `message` with this error appended as ASP.NET's `BuildErrorMessage` does: always for a
    /// `HubException`, otherwise only with detailed errors.
    pub(crate) fn build_message(&self, message: String, detailed: bool) -> String {
        match &self.kind {
            HubErrorKind::Hub(text) => format!("{message} HubException: {text}"),
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

    /// The text the client receives when this error ends a stream (reference §A6.4).
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

/// A call to a client method that expects a result (client results, reference §A6.9) failed.
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
}
