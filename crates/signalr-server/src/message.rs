//! Messages the hub layer sends, encoded lazily and at most once per wire format (DESIGN.md rule
//! 3): a broadcast to a thousand JSON clients encodes its invocation once.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use signalr_protocol::{HubMessage, HubProtocol};

/// A hub message with its encodings, made on first use and at most once per protocol.
pub(crate) struct SerializedMessage {
    message: HubMessage,
    json: OnceLock<Option<Bytes>>,
    msgpack: OnceLock<Option<Bytes>>,
}

impl SerializedMessage {
    pub(crate) fn new(message: HubMessage) -> Arc<Self> {
        Arc::new(SerializedMessage {
            message,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        })
    }

    /// The bytes in `protocol` (framing included), or `None` when a user value failed to
    /// serialize (logged once per protocol).
    pub(crate) fn encoded(&self, protocol: HubProtocol) -> Option<&Bytes> {
        let cell = match protocol {
            HubProtocol::Json => &self.json,
            HubProtocol::MessagePack => &self.msgpack,
        };
        cell.get_or_init(|| {
            let mut out = BytesMut::new();
            match protocol.write_message(&self.message, &mut out) {
                Ok(()) => Some(out.freeze()),
                Err(err) => {
                    tracing::error!(protocol = protocol.name(), %err, "dropping a message that failed to serialize");
                    None
                }
            }
        })
        .as_ref()
    }
}
