//! Errors of the hub protocols.

/// A peer sent bytes that are not a valid hub message, or a message over the size limit.
///
/// Every variant ends the connection: the server answers with a Close message
/// (`Connection closed with an error.`, docs/protocol.md, "Close message") and closes the transport.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A message (with its framing) is larger than the configured maximum
    /// (ASP.NET `MaximumReceiveMessageSize`, docs/protocol.md, "Limits"). The text is ASP.NET's.
    #[error(
        "The maximum message size of {limit}B was exceeded. The message size can be configured in AddHubOptions."
    )]
    MessageTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The text is not valid JSON, or a JSON message misses a required property or has one of the
    /// wrong type (docs/protocol.md, "JSON encoding").
    #[error("invalid JSON hub message: {0}")]
    Json(#[from] serde_json::Error),
    /// A MessagePack message is malformed (docs/protocol.md, "MessagePack encoding").
    #[error("invalid MessagePack hub message: {0}")]
    MessagePack(String),
    /// The VarInt length prefix is longer than 5 bytes or announces more than 2 GB (docs/protocol.md, "Binary framing").
    #[error("Messages over 2GB in size are not supported.")]
    LengthPrefixTooLarge,
    /// A message is structurally valid but breaks a rule of the protocol (e.g. both `result` and
    /// `error` in one Completion).
    #[error("{0}")]
    Invalid(String),
}

/// A message could not be encoded, because a user value failed to serialize with the protocol
/// (for example a map with non-string keys in JSON).
#[derive(Debug, thiserror::Error)]
#[error("failed to serialize a hub message: {0}")]
pub struct EncodeError(pub String);

impl EncodeError {
    pub(crate) fn from_display(err: impl std::fmt::Display) -> Self {
        EncodeError(err.to_string())
    }
}
