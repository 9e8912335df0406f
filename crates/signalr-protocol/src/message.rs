//! The nine hub messages of the ASP.NET Core SignalR hub protocol (docs/protocol.md, "Message types") and the
//! protocol-neutral [`Payload`] that carries arguments, stream items and results.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Headers of an invocation message (types 1–5, docs/protocol.md, "Headers"): a string-to-string map.
/// Unknown headers are carried along and otherwise ignored.
pub type Headers = HashMap<String, String>;

/// How deeply a received MessagePack payload may nest when it is bound with serde
/// ([`Payload::deserialize`]) or transcoded to JSON: 128 levels, the limit `serde_json` applies to
/// JSON payloads.
///
/// `rmp_serde`'s own default (1024) is too deep for the recursion it bounds: a peer could send an
/// argument nested ~500 levels deep and overflow a 2 MiB thread stack (the size of Tokio's worker
/// threads) in a debug build, which aborts the whole process.
pub(crate) const MAX_PAYLOAD_DEPTH: usize = 128;

/// A serde deserializer over one MessagePack value, with the [`MAX_PAYLOAD_DEPTH`] limit.
pub(crate) fn msgpack_deserializer(
    bytes: &[u8],
) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    de
}

/// One value inside a hub message: an argument, a stream item or a completion result.
///
/// Values that arrived from the wire keep their encoded bytes and are bound lazily with serde
/// ([`Payload::deserialize`]), so a hub method pays only for the arguments it reads and in the
/// type it wants. Values a program sends are kept as a `Serialize` object and encoded by whichever
/// protocol the receiving connection speaks, so a broadcast serializes once per protocol
/// (DESIGN.md rule 3). A JSON payload written with the MessagePack protocol (or the reverse) is
/// transcoded.
#[derive(Clone)]
pub enum Payload {
    /// One complete JSON value as UTF-8 text, as received with the JSON protocol. Written to the
    /// wire as is: whoever builds one by hand must put exactly one valid JSON value in it.
    Json(Bytes),
    /// One complete MessagePack value, as received with the MessagePack protocol. Written to the
    /// wire as is: whoever builds one by hand must put exactly one valid MessagePack value in it.
    MessagePack(Bytes),
    /// A Rust value to be serialized by the protocol that writes the message.
    Value(Arc<dyn erased_serde::Serialize + Send + Sync>),
}

impl Payload {
    /// Wraps a Rust value to be sent; it is serialized when the message is encoded.
    pub fn from_value<T: Serialize + Send + Sync + 'static>(value: T) -> Self {
        Payload::Value(Arc::new(value))
    }

    /// Binds the payload to `T` with serde.
    ///
    /// JSON payloads use `serde_json`, MessagePack payloads use `rmp_serde` (structs may arrive as
    /// maps keyed by field name or as arrays). A [`Payload::Value`] is bound through a
    /// `serde_json::Value` round trip.
    ///
    /// # Errors
    /// [`PayloadError`] when the encoded value does not fit `T` (wrong type, missing field, ...).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        match self {
            Payload::Json(bytes) => {
                serde_json::from_slice(bytes).map_err(PayloadError::from_display)
            }
            Payload::MessagePack(bytes) => {
                T::deserialize(&mut msgpack_deserializer(bytes)).map_err(PayloadError::from_display)
            }
            Payload::Value(value) => {
                let json = serde_json::to_value(&**value).map_err(PayloadError::from_display)?;
                serde_json::from_value(json).map_err(PayloadError::from_display)
            }
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Json(bytes) => write!(f, "Json({})", String::from_utf8_lossy(bytes)),
            Payload::MessagePack(bytes) => write!(f, "MessagePack({bytes:02x?})"),
            Payload::Value(value) => match serde_json::to_string(&**value) {
                Ok(text) => write!(f, "Value({text})"),
                Err(_) => f.write_str("Value(<unserializable>)"),
            },
        }
    }
}

/// A payload could not be bound to the requested Rust type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

impl PayloadError {
    fn from_display(err: impl fmt::Display) -> Self {
        PayloadError(err.to_string())
    }
}

/// Type 1: a call of a method on the other side (docs/protocol.md, "Message types", "Invocation ids").
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// Headers (docs/protocol.md, "Headers").
    pub headers: Headers,
    /// `None` for a non-blocking call ("send"): the callee answers nothing.
    pub invocation_id: Option<String>,
    /// The method name.
    pub target: String,
    /// The arguments, without the upload-stream arguments (those are named in `stream_ids`).
    pub arguments: Vec<Payload>,
    /// Ids of client-to-server upload streams (docs/protocol.md, "Client-to-server streams"); empty when none.
    pub stream_ids: Vec<String>,
}

/// Type 2: one item of a stream (docs/protocol.md, "Server-to-client streams", "Client-to-server streams").
#[derive(Debug, Clone)]
pub struct StreamItem {
    /// Headers (docs/protocol.md, "Headers").
    pub headers: Headers,
    /// The invocation id of the stream (or the upload stream id).
    pub invocation_id: String,
    /// The item.
    pub item: Payload,
}

/// What a [`Completion`] reports (docs/protocol.md, "Completions").
#[derive(Debug, Clone)]
pub enum CompletionResult {
    /// The method returned nothing (JSON: no `result`; MessagePack: result kind 2).
    Void,
    /// The method returned a value, possibly `null` (JSON: `result`; MessagePack: result kind 3).
    Value(Payload),
    /// The method failed (JSON: `error`; MessagePack: result kind 1).
    Error(String),
}

/// Type 3: the end of an invocation or stream (docs/protocol.md, "Completions").
#[derive(Debug, Clone)]
pub struct Completion {
    /// Headers (docs/protocol.md, "Headers").
    pub headers: Headers,
    /// The invocation id being completed.
    pub invocation_id: String,
    /// Result, void, or error.
    pub result: CompletionResult,
}

impl Completion {
    /// A completion without result.
    pub fn void(invocation_id: impl Into<String>) -> Self {
        Completion {
            headers: Headers::new(),
            invocation_id: invocation_id.into(),
            result: CompletionResult::Void,
        }
    }

    /// A completion carrying `value`.
    pub fn with_result(invocation_id: impl Into<String>, value: Payload) -> Self {
        Completion {
            headers: Headers::new(),
            invocation_id: invocation_id.into(),
            result: CompletionResult::Value(value),
        }
    }

    /// A completion carrying an error message.
    pub fn with_error(invocation_id: impl Into<String>, error: impl Into<String>) -> Self {
        Completion {
            headers: Headers::new(),
            invocation_id: invocation_id.into(),
            result: CompletionResult::Error(error.into()),
        }
    }
}

/// Type 4: a call of a server-to-client streaming method (docs/protocol.md, "Server-to-client streams").
#[derive(Debug, Clone, Default)]
pub struct StreamInvocation {
    /// Headers (docs/protocol.md, "Headers").
    pub headers: Headers,
    /// The stream's invocation id (required).
    pub invocation_id: String,
    /// The method name.
    pub target: String,
    /// The arguments.
    pub arguments: Vec<Payload>,
    /// Ids of upload streams; empty when none.
    pub stream_ids: Vec<String>,
}

/// Type 5: the caller cancels a stream (docs/protocol.md, "Server-to-client streams").
#[derive(Debug, Clone)]
pub struct CancelInvocation {
    /// Headers (docs/protocol.md, "Headers").
    pub headers: Headers,
    /// The stream to cancel.
    pub invocation_id: String,
}

/// Type 7: the sender is closing the connection (docs/protocol.md, "Close message").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Close {
    /// Why, when the close is an error.
    pub error: Option<String>,
    /// Whether the receiver may reconnect automatically.
    pub allow_reconnect: bool,
}

/// A message of the hub protocol (docs/protocol.md, "Message types").
#[derive(Debug, Clone)]
pub enum HubMessage {
    /// Type 1.
    Invocation(Invocation),
    /// Type 2.
    StreamItem(StreamItem),
    /// Type 3.
    Completion(Completion),
    /// Type 4.
    StreamInvocation(StreamInvocation),
    /// Type 5.
    CancelInvocation(CancelInvocation),
    /// Type 6: keep-alive, needs no answer.
    Ping,
    /// Type 7.
    Close(Close),
    /// Type 8: "I have processed everything up to `sequence_id`" (stateful reconnect, docs/protocol.md, "Stateful reconnect").
    Ack {
        /// The highest processed sequence id.
        sequence_id: u64,
    },
    /// Type 9: the id of the next message to be (re)sent (stateful reconnect, docs/protocol.md, "Stateful reconnect").
    Sequence {
        /// The sequence id.
        sequence_id: u64,
    },
}

impl HubMessage {
    /// The numeric `type` of the message on the wire (1–9).
    pub fn message_type(&self) -> u8 {
        match self {
            HubMessage::Invocation(_) => 1,
            HubMessage::StreamItem(_) => 2,
            HubMessage::Completion(_) => 3,
            HubMessage::StreamInvocation(_) => 4,
            HubMessage::CancelInvocation(_) => 5,
            HubMessage::Ping => 6,
            HubMessage::Close(_) => 7,
            HubMessage::Ack { .. } => 8,
            HubMessage::Sequence { .. } => 9,
        }
    }

    /// Whether stateful reconnect numbers, keeps and acknowledges this message (ASP.NET's
    /// `HubInvocationMessage`): Invocation, StreamItem, Completion, StreamInvocation and
    /// CancelInvocation, types 1 to 5. Ping, Close, Ack and Sequence are not (docs/protocol.md,
    /// "Stateful reconnect").
    pub fn is_ackable(&self) -> bool {
        (1..=5).contains(&self.message_type())
    }
}
