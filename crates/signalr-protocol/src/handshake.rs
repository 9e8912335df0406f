//! The handshake that opens every hub connection (docs/protocol.md, "Handshake"). Always JSON, always ended by the
//! record separator `0x1E`, even when the hub protocol is MessagePack.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::json::{RECORD_SEPARATOR, expect_object, split_frame};

/// The client's first message: `{"protocol":"json","version":1}` (docs/protocol.md, "Handshake").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeRequest {
    /// Hub protocol name: `json` or `messagepack`.
    pub protocol: String,
    /// Protocol version; 1, or 2 when stateful reconnect was negotiated.
    pub version: u32,
}

impl HandshakeRequest {
    /// Takes the handshake request out of `buf`, leaving any bytes after its separator (hub messages
    /// sent in the same frame) in `buf`.
    ///
    /// Returns `Ok(None)` until the separator arrived. `max_size` (bytes, with the separator) bounds
    /// how long the request may be, as ASP.NET's `MaximumReceiveMessageSize` does.
    ///
    /// # Errors
    /// [`ProtocolError::MessageTooLarge`] over `max_size`; [`ProtocolError::Json`] when the request
    /// is not a JSON object with a string `protocol` and an integer `version`.
    pub fn parse(
        buf: &mut BytesMut,
        max_size: Option<usize>,
    ) -> Result<Option<Self>, ProtocolError> {
        match split_frame(buf, max_size)? {
            Some(frame) => {
                expect_object(&frame)?;
                Ok(Some(serde_json::from_slice(&frame)?))
            }
            None => Ok(None),
        }
    }

    /// Appends the request and its separator to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        // Serializing two plain fields into memory cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        out.extend_from_slice(&json);
        out.put_u8(RECORD_SEPARATOR);
    }
}

/// The server's answer: `{}` on success, `{"error":"..."}` on failure (docs/protocol.md, "Handshake").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeResponse {
    /// Why the handshake failed; `None` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    error: Option<String>,
    /// Present (even as `null`) means the peer sent a hub message, not a handshake response.
    #[serde(rename = "type", default, deserialize_with = "present")]
    kind: Option<serde::de::IgnoredAny>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde::de::IgnoredAny>, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(Some)
}

impl HandshakeResponse {
    /// The encoded success response, `{}` + separator.
    pub fn success_bytes() -> Bytes {
        Bytes::from_static(b"{}\x1e")
    }

    /// Appends the response and its separator to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        let json = serde_json::to_vec(self).unwrap_or_default();
        out.extend_from_slice(&json);
        out.put_u8(RECORD_SEPARATOR);
    }

    /// Takes the handshake response out of `buf` (client side), leaving the bytes after it.
    ///
    /// # Errors
    /// [`ProtocolError::Json`] for invalid JSON, and [`ProtocolError::Invalid`] with
    /// `Expected a handshake response from the server.` when the message has a `type` property.
    pub fn parse(buf: &mut BytesMut) -> Result<Option<Self>, ProtocolError> {
        let Some(frame) = split_frame(buf, None)? else {
            return Ok(None);
        };
        expect_object(&frame)?;
        let wire: WireResponse = serde_json::from_slice(&frame)?;
        if wire.kind.is_some() {
            return Err(ProtocolError::Invalid(
                "Expected a handshake response from the server.".into(),
            ));
        }
        Ok(Some(HandshakeResponse { error: wire.error }))
    }
}
