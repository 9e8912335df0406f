//! The client's one error type.

use std::fmt;
use std::sync::Arc;

/// A boxed error that can cross threads: the cause an [`Error`] may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, behind the `is_*` predicates of [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Builder,
    Negotiate,
    Transport,
    Handshake,
    Timeout,
    Server,
    ServerClose,
    Closed,
    Protocol,
    Decode,
    Encode,
    AccessToken,
    InvalidState,
}

struct Inner {
    kind: Kind,
    message: String,
    status: Option<u16>,
    source: Option<BoxError>,
    /// Classic hub errors: whether the server threw a `HubException` (`"H":true`), and its
    /// error data (`D`).
    hub_exception: bool,
    data: Option<serde_json::Value>,
}

/// Every failure of the client: building, connecting, invoking, streaming, and why a connection
/// closed.
///
/// The type is opaque, as `reqwest::Error` is: ask what happened with the `is_*` predicates and
/// read the text with [`Display`](fmt::Display) or [`Error::message`]. Texts are those of the
/// official clients where docs/protocol.md ("Error strings") gives one (for example
/// `Server timeout elapsed without receiving a message from the server.`), and a hub method's
/// error is exactly the server's text (`An unexpected error occurred invoking 'M' on the server.
/// HubException: ...`). `Display` shows the message only; a lower-level cause, when there is one,
/// is available from [`std::error::Error::source`].
///
/// `Error` is cheap to clone (one `Arc`): the error that closed a connection is handed to every
/// pending call and to every event handler.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

impl Error {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                status: None,
                source: None,
                hub_exception: false,
                data: None,
            }),
        }
    }

    pub(crate) fn with_source(
        kind: Kind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                status: None,
                source: Some(source.into()),
                hub_exception: false,
                data: None,
            }),
        }
    }

    pub(crate) fn with_status(kind: Kind, message: impl Into<String>, status: u16) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                status: Some(status),
                source: None,
                hub_exception: false,
                data: None,
            }),
        }
    }

    /// The same error with `cause` as its source and `kind`/`message` replaced.
    pub(crate) fn wrap(kind: Kind, message: impl Into<String>, cause: Error) -> Self {
        let status = cause.status();
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                status,
                source: Some(Box::new(cause)),
                hub_exception: false,
                data: None,
            }),
        }
    }

    /// A classic hub method's failure (`E` of a hub result): `hub_exception` when the server
    /// marked it as a `HubException` (`H`), with its error data (`D`).
    pub(crate) fn hub(
        message: impl Into<String>,
        hub_exception: bool,
        data: Option<serde_json::Value>,
    ) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind: Kind::Server,
                message: message.into(),
                status: None,
                source: None,
                hub_exception,
                data,
            }),
        }
    }

    /// Classic SignalR 2.x only: whether the server reported this hub method failure as a
    /// `HubException` (the hub result carried `"H":true`), as the .NET client's
    /// `HubException` tells it apart from other errors. Always `false` for other errors.
    pub fn is_hub_exception(&self) -> bool {
        self.inner.hub_exception
    }

    /// Classic SignalR 2.x only: the error data a hub attached to its `HubException`
    /// (`HubException.ErrorData` in .NET, `HubError::with_data` on a Rust server), as JSON;
    /// `None` when there is none or the error is not a hub error.
    pub fn error_data(&self) -> Option<&serde_json::Value> {
        self.inner.data.as_ref()
    }

    /// The error's own text, without its source (the same as `Display`).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The HTTP status code of a failed HTTP request (negotiate, a transport request), when the
    /// failure was a status code; `None` otherwise. For example 401 when the server refused the
    /// access token, 404 for a path that is not a hub.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The builder was misconfigured: a URL that is not `http(s)://` (or `ws(s)://`),
    /// skip-negotiation with a transport other than WebSockets, an unreadable PEM certificate or
    /// key, an invalid header.
    pub fn is_builder(&self) -> bool {
        self.inner.kind == Kind::Builder
    }

    /// Negotiation failed (docs/protocol.md, "Negotiate"): a non-200 status, an `error` in the response, a
    /// response that fails the checks of docs/protocol.md, "Negotiate checks", or more than 100 redirects
    /// (`Negotiate redirection limit exceeded.`).
    pub fn is_negotiate(&self) -> bool {
        self.inner.kind == Kind::Negotiate
    }

    /// A transport failed to start or broke (docs/protocol.md, "Transports"): a WebSocket error, an unexpected
    /// HTTP status of an SSE, poll or send request, or
    /// `Unable to connect to the server with any of the available transports. ...`.
    pub fn is_transport(&self) -> bool {
        self.inner.kind == Kind::Transport
    }

    /// The hub handshake failed (docs/protocol.md, "Handshake"): the server answered `{"error":...}`
    /// (`Server returned handshake error: ...`) or something that is not a handshake response.
    pub fn is_handshake(&self) -> bool {
        self.inner.kind == Kind::Handshake
    }

    /// A timeout: the server timeout (`Server timeout elapsed without receiving a message from
    /// the server.`, docs/protocol.md, "Keep-alive and timeouts") or the handshake timeout.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }

    /// The server completed an invocation or a stream with an error (a Completion with `error`,
    /// docs/protocol.md, "Completions"). [`Error::message`] is the server's text, for example
    /// `An unexpected error occurred invoking 'Fail' on the server. HubException: boom`.
    pub fn is_server_error(&self) -> bool {
        self.inner.kind == Kind::Server
    }

    /// The server closed the connection with a Close message carrying an error (docs/protocol.md, "Close message"):
    /// `Server returned an error on close: <error>`. Also counts as [`Error::is_closed`].
    pub fn is_server_close(&self) -> bool {
        self.inner.kind == Kind::ServerClose
    }

    /// The connection is closed or closing: a call made while not connected
    /// (`Cannot send data if the connection is not in the 'Connected' State.`), a call still
    /// pending when the connection dropped
    /// (`Invocation canceled due to the underlying connection being closed.`), a start aborted by
    /// `stop()`, reconnect attempts exhausted, or a server Close message ([`Error::is_server_close`]).
    pub fn is_closed(&self) -> bool {
        matches!(self.inner.kind, Kind::Closed | Kind::ServerClose)
    }

    /// The server sent bytes that are not valid hub protocol messages (docs/protocol.md, "JSON encoding", "MessagePack encoding").
    pub fn is_protocol(&self) -> bool {
        self.inner.kind == Kind::Protocol
    }

    /// A result, stream item or handler argument could not be deserialized into the requested
    /// Rust type.
    pub fn is_decode(&self) -> bool {
        self.inner.kind == Kind::Decode
    }

    /// An argument could not be serialized with the hub protocol (for example a map with
    /// non-string keys in JSON).
    pub fn is_encode(&self) -> bool {
        self.inner.kind == Kind::Encode
    }

    /// The access token provider returned an error.
    pub fn is_access_token(&self) -> bool {
        self.inner.kind == Kind::AccessToken
    }

    /// `start()` was called while the connection was not `Disconnected`
    /// (`Cannot start a HubConnection that is not in the 'Disconnected' state.`).
    pub fn is_invalid_state(&self) -> bool {
        self.inner.kind == Kind::InvalidState
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        if self.inner.hub_exception {
            d.field("hub_exception", &true);
        }
        if let Some(data) = &self.inner.data {
            d.field("data", data);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

pub(crate) fn not_connected() -> Error {
    Error::new(
        Kind::Closed,
        "Cannot send data if the connection is not in the 'Connected' State.",
    )
}
