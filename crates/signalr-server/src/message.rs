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
    classic: OnceLock<Option<Bytes>>,
}

impl SerializedMessage {
    pub(crate) fn new(message: HubMessage) -> Arc<Self> {
        Arc::new(SerializedMessage {
            message,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
            classic: OnceLock::new(),
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

    /// The classic encoding: a client-method call `{"H":hub,"M":method,"A":[...]}`, the item a
    /// classic connection puts into its envelopes. `None` for messages classic clients have no
    /// form for (only invocations without an id have one) and for values that fail to serialize.
    ///
    /// A message is sent through one hub, so `hub` is the same for every classic recipient.
    pub(crate) fn encoded_classic(&self, hub: &str) -> Option<&Bytes> {
        self.classic
            .get_or_init(|| {
                let HubMessage::Invocation(invocation) = &self.message else {
                    return None;
                };
                if invocation.invocation_id.is_some() {
                    return None;
                }
                let mut out = BytesMut::new();
                match signalr_protocol::classic::write_client_invocation(
                    hub,
                    &invocation.target,
                    &invocation.arguments,
                    None,
                    &mut out,
                ) {
                    Ok(()) => Some(out.freeze()),
                    Err(err) => {
                        tracing::error!(%err, "dropping a message that failed to serialize");
                        None
                    }
                }
            })
            .as_ref()
    }
}
