//! The ASP.NET Core SignalR hub protocols without I/O: messages, the JSON and MessagePack
//! encodings, the handshake and the negotiate types.
//!
//! The crate turns bytes into [`HubMessage`]s and back, incrementally: feed whatever arrived into a
//! `BytesMut` and take complete messages out; partial frames stay in the buffer, several messages in
//! one frame come out one by one. Both the server and the client build on it. The wire format
//! is described in docs/protocol.md; comments cite its sections by name, e.g. (docs/protocol.md, "Handshake").
//!
//! The [`classic`] module holds the wire format of classic ASP.NET SignalR 2.x (the jQuery and
//! .NET 2.x clients), which the server's classic front door speaks.
//!
//! ```
//! use bytes::BytesMut;
//! use signalr_protocol::{HandshakeRequest, HubMessage, HubProtocol, Invocation, Payload};
//!
//! // A client's first frame: the handshake and an invocation, as the TS client may batch them.
//! let mut buf = BytesMut::from(
//!     &b"{\"protocol\":\"json\",\"version\":1}\x1e\
//!        {\"type\":1,\"invocationId\":\"0\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}\x1e"[..],
//! );
//! let handshake = HandshakeRequest::parse(&mut buf, Some(32 * 1024)).unwrap().unwrap();
//! let protocol = HubProtocol::from_name(&handshake.protocol).unwrap();
//!
//! let Some(HubMessage::Invocation(call)) = protocol.parse_message(&mut buf, None).unwrap() else {
//!     panic!("expected an invocation");
//! };
//! let text: String = call.arguments[0].deserialize().unwrap();
//! assert_eq!((call.target.as_str(), text.as_str()), ("Echo", "hi"));
//!
//! // Answer with MessagePack instead: the same message model, another encoding.
//! let mut out = BytesMut::new();
//! let reply = HubMessage::Invocation(Invocation {
//!     target: "ReceiveMessage".into(),
//!     arguments: vec![Payload::from_value("bob"), Payload::from_value(42)],
//!     ..Default::default()
//! });
//! HubProtocol::MessagePack.write_message(&reply, &mut out).unwrap();
//! assert_eq!(out[0] as usize, out.len() - 1); // VarInt length prefix
//! ```

#![warn(missing_debug_implementations, unreachable_pub)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

pub mod classic;
mod error;
mod handshake;
pub mod json;
mod message;
pub mod msgpack;
mod negotiate;
mod query;

use bytes::BytesMut;

pub use error::{EncodeError, ProtocolError};
pub use handshake::{HandshakeRequest, HandshakeResponse};
pub use message::{
    CancelInvocation, Close, Completion, CompletionResult, Headers, HubMessage, Invocation,
    Payload, PayloadError, StreamInvocation, StreamItem,
};
pub use negotiate::{
    AvailableTransport, NegotiateRequest, NegotiateResponse, TransferFormat, TransportType,
};
pub use query::{QueryParam, is_dotnet_true, parse_dotnet_int32};

/// A hub protocol: the encoding of [`HubMessage`]s after the handshake (docs/protocol.md, "JSON encoding", "MessagePack encoding").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubProtocol {
    /// `json`: UTF-8 JSON objects ended by `0x1E`; Text transfer format.
    Json,
    /// `messagepack`: VarInt length prefix + MessagePack array; Binary transfer format.
    MessagePack,
}

impl HubProtocol {
    /// The highest handshake `version` this implementation speaks (2 = understands Ack/Sequence,
    /// docs/protocol.md, "Handshake"). Requests with any version up to this are accepted.
    pub const VERSION: u32 = 2;

    /// Looks a protocol up by its handshake name (`json`, `messagepack`), ignoring ASCII case as
    /// ASP.NET's `DefaultHubProtocolResolver` does.
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("json") {
            Some(HubProtocol::Json)
        } else if name.eq_ignore_ascii_case("messagepack") {
            Some(HubProtocol::MessagePack)
        } else {
            None
        }
    }

    /// The handshake name.
    pub fn name(self) -> &'static str {
        match self {
            HubProtocol::Json => "json",
            HubProtocol::MessagePack => "messagepack",
        }
    }

    /// The transfer format the protocol needs from the transport.
    pub fn transfer_format(self) -> TransferFormat {
        match self {
            HubProtocol::Json => TransferFormat::Text,
            HubProtocol::MessagePack => TransferFormat::Binary,
        }
    }

    /// Takes the next complete message out of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete message (the partial bytes stay for the next
    /// call). Messages of unknown type are skipped (docs/protocol.md, "Message types"). `max_message_size` is in
    /// bytes and includes the framing (`0x1E` or the VarInt prefix); `None` means unlimited.
    ///
    /// # Errors
    /// A [`ProtocolError`] for a malformed message or one over `max_message_size`; the connection
    /// cannot continue after it, because the stream position is lost.
    pub fn parse_message(
        self,
        buf: &mut BytesMut,
        max_message_size: Option<usize>,
    ) -> Result<Option<HubMessage>, ProtocolError> {
        loop {
            let frame = match self {
                HubProtocol::Json => json::split_frame(buf, max_message_size)?,
                HubProtocol::MessagePack => msgpack::split_frame(buf, max_message_size)?,
            };
            let Some(frame) = frame else {
                return Ok(None);
            };
            let message = match self {
                HubProtocol::Json => json::parse_frame(&frame)?,
                HubProtocol::MessagePack => msgpack::parse_frame(&frame)?,
            };
            if message.is_some() {
                return Ok(message);
            }
        }
    }

    /// Bytes to reserve for encoding one message whose size is not known in advance: most hub
    /// messages (a completion, an invocation with a few short arguments) fit, so the buffer is
    /// allocated once instead of growing from empty in steps.
    pub const ENCODE_CAPACITY: usize = 128;

    /// Appends `message` with its framing to `out`.
    ///
    /// # Errors
    /// [`EncodeError`] when a user value fails to serialize; `out` is then left unchanged.
    pub fn write_message(
        self,
        message: &HubMessage,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        match self {
            HubProtocol::Json => json::write_message(message, out),
            HubProtocol::MessagePack => msgpack::write_message(message, out),
        }
    }
}

/// `std::io::Write` into a `BytesMut` by `extend_from_slice`: the encoders' many small writes
/// cost less than through `BufMut::writer`'s chunk-by-chunk `put_slice`.
pub(crate) struct Appender<'a>(pub(crate) &'a mut BytesMut);

impl std::io::Write for Appender<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
