//! Messages the hub layer sends, encoded lazily and at most once per wire format (DESIGN.md rule
//! 3): a broadcast to a thousand JSON clients encodes its invocation once.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use signalr_protocol::{HubMessage, HubProtocol};

/// A hub message with its serializations, each made on first use and at most once (ASP.NET
/// `SerializedHubMessage`): a broadcast to many connections encodes once per protocol and hands
/// the same bytes to each.
///
/// Made either from a [`HubMessage`] ([`new`](Self::new)) or from frames another server already
/// serialized ([`from_serialized`](Self::from_serialized)), which are then written to clients
/// unchanged. A frame includes its framing: the JSON text with its `0x1E` record separator, or
/// the MessagePack body with its VarInt length prefix.
pub struct SerializedHubMessage {
    message: OnceLock<Option<HubMessage>>,
    json: OnceLock<Option<Bytes>>,
    msgpack: OnceLock<Option<Bytes>>,
    classic: OnceLock<Option<Bytes>>,
}

impl fmt::Debug for SerializedHubMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerializedHubMessage")
            .field("json", &self.json.get().map(|b| b.as_ref().map(Bytes::len)))
            .field(
                "messagepack",
                &self.msgpack.get().map(|b| b.as_ref().map(Bytes::len)),
            )
            .finish_non_exhaustive()
    }
}

impl SerializedHubMessage {
    /// Wraps `message`; nothing is encoded yet.
    pub fn new(message: HubMessage) -> Arc<Self> {
        Arc::new(SerializedHubMessage {
            message: OnceLock::from(Some(message)),
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
            classic: OnceLock::new(),
        })
    }

    /// A message from frames serialized elsewhere, by protocol name (`json`, `messagepack`;
    /// other names are ignored). A protocol without a frame is made from another one's frame
    /// when a recipient needs it (decoded, then encoded); a frame that does not decode makes
    /// that recipient's copy fail (logged, not sent).
    pub fn from_serialized<N: AsRef<str>>(
        frames: impl IntoIterator<Item = (N, Bytes)>,
    ) -> Arc<Self> {
        let message = SerializedHubMessage {
            message: OnceLock::new(),
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
            classic: OnceLock::new(),
        };
        for (name, frame) in frames {
            match HubProtocol::from_name(name.as_ref()) {
                Some(HubProtocol::Json) => {
                    let _ = message.json.set(Some(frame));
                }
                Some(HubProtocol::MessagePack) => {
                    let _ = message.msgpack.set(Some(frame));
                }
                None => {}
            }
        }
        Arc::new(message)
    }

    /// The message, decoded from a frame when it was made from frames; `None` when none of them
    /// decodes.
    pub fn message(&self) -> Option<&HubMessage> {
        self.message
            .get_or_init(|| {
                for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
                    let cell = match protocol {
                        HubProtocol::Json => &self.json,
                        HubProtocol::MessagePack => &self.msgpack,
                    };
                    let Some(Some(frame)) = cell.get() else {
                        continue;
                    };
                    let mut buf = BytesMut::from(frame.as_ref());
                    match protocol.parse_message(&mut buf, None) {
                        Ok(Some(message)) => return Some(message),
                        Ok(None) | Err(_) => {
                            tracing::warn!(
                                protocol = protocol.name(),
                                "a serialized hub message does not decode"
                            );
                        }
                    }
                }
                None
            })
            .as_ref()
    }

    /// The frame in `protocol` (framing included), or `None` when a user value failed to
    /// serialize (logged once per protocol).
    pub fn serialized(&self, protocol: HubProtocol) -> Option<&Bytes> {
        let cell = match protocol {
            HubProtocol::Json => &self.json,
            HubProtocol::MessagePack => &self.msgpack,
        };
        cell.get_or_init(|| {
            let message = self.message()?;
            let mut out = BytesMut::with_capacity(HubProtocol::ENCODE_CAPACITY);
            match protocol.write_message(message, &mut out) {
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
                let Some(HubMessage::Invocation(invocation)) = self.message() else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_protocol::{Invocation, Payload};

    fn invocation() -> HubMessage {
        HubMessage::Invocation(Invocation {
            target: "ReceiveMessage".into(),
            arguments: vec![Payload::from_value("ann"), Payload::from_value(7)],
            ..Default::default()
        })
    }

    #[test]
    fn frames_from_another_server_are_kept_and_the_missing_one_is_made() {
        let made = SerializedHubMessage::new(invocation());
        let json = made.serialized(HubProtocol::Json).expect("json").clone();
        let msgpack = made
            .serialized(HubProtocol::MessagePack)
            .expect("msgpack")
            .clone();

        let received = SerializedHubMessage::from_serialized([("json", json.clone())]);
        assert_eq!(received.serialized(HubProtocol::Json), Some(&json));
        assert_eq!(
            received.serialized(HubProtocol::MessagePack),
            Some(&msgpack),
            "made from the JSON frame"
        );
        assert_eq!(
            received.encoded_classic("ChatHub").map(|b| b.to_vec()),
            Some(br#"{"H":"ChatHub","M":"ReceiveMessage","A":["ann",7]}"#.to_vec())
        );

        let received = SerializedHubMessage::from_serialized([
            ("blazorpack", json.clone()),
            ("messagepack", msgpack.clone()),
        ]);
        assert_eq!(
            received.serialized(HubProtocol::MessagePack),
            Some(&msgpack)
        );
        assert_eq!(received.serialized(HubProtocol::Json), Some(&json));
    }

    #[test]
    fn frames_that_do_not_decode_give_nothing() {
        let received =
            SerializedHubMessage::from_serialized([("json", Bytes::from_static(b"{oops\x1e"))]);
        assert!(received.message().is_none());
        assert!(received.serialized(HubProtocol::MessagePack).is_none());
        assert!(received.encoded_classic("ChatHub").is_none());
        // The frame given is still written as given.
        assert!(received.serialized(HubProtocol::Json).is_some());
    }
}
