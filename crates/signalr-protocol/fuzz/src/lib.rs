//! Bodies of the `signalr-protocol` fuzz targets.
//!
//! Every target in `fuzz_targets/` is one line calling a function here, so the same bodies also
//! run on the stable toolchain: `tests/fuzz_smoke.rs` of the crate includes this file and feeds it
//! a few thousand generated inputs.
//!
//! Each body checks more than "does not panic":
//! * decoding a buffer whole and decoding it fed in small chunks yield the same messages and the
//!   same outcome (error or not);
//! * every decoded message re-encodes with its own protocol, and that encoding decodes back to the
//!   same message;
//! * encoding with the other protocol (which transcodes payloads) either succeeds and decodes, or
//!   fails with an `EncodeError` leaving the output buffer untouched.

use std::collections::BTreeMap;

use bytes::BytesMut;
use signalr_protocol::{
    CompletionResult, HandshakeRequest, HandshakeResponse, Headers, HubMessage, HubProtocol,
    NegotiateResponse, Payload,
};

/// Takes the fuzzer's choices off the front of `data`: an optional size limit and a chunk size
/// for incremental feeding. Returns `(max_message_size, chunk, rest)`.
///
/// Byte 0: bit 0 set = a size limit follows in bytes 1–2 (little-endian `u16`). Next byte: the
/// chunk size (0 = everything at once).
pub fn split_options(data: &[u8]) -> (Option<usize>, usize, &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return (None, 0, data);
    };
    let (limit, rest) = match rest {
        [lo, hi, tail @ ..] if flags & 1 == 1 => {
            (Some(usize::from(u16::from_le_bytes([*lo, *hi]))), tail)
        }
        _ => (None, rest),
    };
    match rest.split_first() {
        Some((&chunk, tail)) => (limit, usize::from(chunk), tail),
        None => (limit, 0, rest),
    }
}

/// A protocol-independent description of a message, with sorted headers and payload bytes, so two
/// decodings can be compared (`HubMessage` holds `HashMap`s and is not `PartialEq`).
pub fn describe(message: &HubMessage) -> String {
    fn headers(h: &Headers) -> BTreeMap<&str, &str> {
        h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
    fn payloads(p: &[Payload]) -> Vec<String> {
        p.iter().map(|p| format!("{p:?}")).collect()
    }
    match message {
        HubMessage::Invocation(m) => format!(
            "Invocation {:?} {:?} {:?} {:?} {:?}",
            headers(&m.headers),
            m.invocation_id,
            m.target,
            payloads(&m.arguments),
            m.stream_ids
        ),
        HubMessage::StreamItem(m) => format!(
            "StreamItem {:?} {:?} {:?}",
            headers(&m.headers),
            m.invocation_id,
            m.item
        ),
        HubMessage::Completion(m) => format!(
            "Completion {:?} {:?} {}",
            headers(&m.headers),
            m.invocation_id,
            match &m.result {
                CompletionResult::Void => "void".to_string(),
                CompletionResult::Value(v) => format!("value {v:?}"),
                CompletionResult::Error(e) => format!("error {e:?}"),
            }
        ),
        HubMessage::StreamInvocation(m) => format!(
            "StreamInvocation {:?} {:?} {:?} {:?} {:?}",
            headers(&m.headers),
            m.invocation_id,
            m.target,
            payloads(&m.arguments),
            m.stream_ids
        ),
        HubMessage::CancelInvocation(m) => format!(
            "CancelInvocation {:?} {:?}",
            headers(&m.headers),
            m.invocation_id
        ),
        HubMessage::Ping => "Ping".to_string(),
        HubMessage::Close(m) => format!("Close {:?} {}", m.error, m.allow_reconnect),
        HubMessage::Ack { sequence_id } => format!("Ack {sequence_id}"),
        HubMessage::Sequence { sequence_id } => format!("Sequence {sequence_id}"),
    }
}

/// Decodes `data` fed `chunk` bytes at a time (all at once for 0) until the decoder fails or the
/// input is used up. Returns the messages and whether it ended with an error.
pub fn decode_stream(
    protocol: HubProtocol,
    data: &[u8],
    max_message_size: Option<usize>,
    chunk: usize,
) -> (Vec<HubMessage>, bool) {
    let chunk = if chunk == 0 { data.len().max(1) } else { chunk };
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match protocol.parse_message(&mut buf, max_message_size) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(_) => return (messages, true),
            }
        }
    }
    (messages, false)
}

fn other(protocol: HubProtocol) -> HubProtocol {
    match protocol {
        HubProtocol::Json => HubProtocol::MessagePack,
        HubProtocol::MessagePack => HubProtocol::Json,
    }
}

/// Re-encodes a decoded message with both protocols and checks the invariants listed in the
/// crate docs.
pub fn reencode(protocol: HubProtocol, message: &HubMessage) {
    // Same protocol: payloads are copied verbatim, so encoding cannot fail, and decoding gives the
    // same message back.
    let mut out = BytesMut::new();
    protocol
        .write_message(message, &mut out)
        .expect("re-encoding a decoded message with its own protocol");
    let mut again = out.clone();
    let decoded = protocol
        .parse_message(&mut again, None)
        .expect("a re-encoded message decodes")
        .expect("a re-encoded message is complete");
    assert!(again.is_empty(), "a re-encoded message is one message");
    assert_eq!(describe(&decoded), describe(message));

    // The other protocol transcodes payloads: a value may not be representable (e.g. a map with
    // non-string keys in JSON), but then the output is left as it was.
    let target = other(protocol);
    let mut out = BytesMut::from(&b"prefix"[..]);
    match target.write_message(message, &mut out) {
        Ok(()) => {
            let mut encoded = out.split_off(6);
            let decoded = target
                .parse_message(&mut encoded, None)
                .expect("a transcoded message decodes")
                .expect("a transcoded message is complete");
            assert!(encoded.is_empty());
            assert_eq!(decoded.message_type(), message.message_type());
        }
        Err(_) => assert_eq!(&out[..], b"prefix", "a failed encode changed the output"),
    }
}

fn hub_messages(protocol: HubProtocol, data: &[u8]) {
    let (limit, chunk, data) = split_options(data);
    let (whole, whole_failed) = decode_stream(protocol, data, limit, 0);
    let (chunked, chunked_failed) = decode_stream(protocol, data, limit, chunk);
    assert_eq!(whole_failed, chunked_failed, "chunking changed the outcome");
    let whole_text: Vec<String> = whole.iter().map(describe).collect();
    let chunked_text: Vec<String> = chunked.iter().map(describe).collect();
    assert_eq!(whole_text, chunked_text, "chunking changed the messages");
    for message in &whole {
        reencode(protocol, message);
    }
}

/// Target `json_messages`: the JSON hub protocol decoder.
pub fn json_messages(data: &[u8]) {
    hub_messages(HubProtocol::Json, data);
}

/// Target `msgpack_messages`: the MessagePack hub protocol decoder.
pub fn msgpack_messages(data: &[u8]) {
    hub_messages(HubProtocol::MessagePack, data);
}

/// Target `handshake_request`: the server side of the handshake, then hub messages after it in
/// the same buffer.
pub fn handshake_request(data: &[u8]) {
    let (limit, _, data) = split_options(data);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(request)) = HandshakeRequest::parse(&mut buf, limit) {
        let mut out = BytesMut::new();
        request.write(&mut out);
        let parsed = HandshakeRequest::parse(&mut out, None)
            .expect("a written request parses")
            .expect("a written request is complete");
        assert_eq!(parsed, request);
        assert!(out.is_empty());
        // What follows is hub messages of the chosen protocol, if it is a known one.
        if let Some(protocol) = HubProtocol::from_name(&request.protocol) {
            let (messages, _) = decode_stream(protocol, &buf, limit, 0);
            for message in &messages {
                reencode(protocol, message);
            }
        }
    }
}

/// Target `handshake_response`: the client side of the handshake.
pub fn handshake_response(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(response)) = HandshakeResponse::parse(&mut buf) {
        let mut out = BytesMut::new();
        response.write(&mut out);
        let parsed = HandshakeResponse::parse(&mut out)
            .expect("a written response parses")
            .expect("a written response is complete");
        assert_eq!(parsed, response);
        assert!(out.is_empty());
    }
}

/// Target `negotiate`: the negotiate response body (client side), re-serialized.
pub fn negotiate(data: &[u8]) {
    if let Ok(response) = serde_json::from_slice::<NegotiateResponse>(data) {
        let text = serde_json::to_vec(&response).expect("a negotiate response serializes");
        let parsed: NegotiateResponse =
            serde_json::from_slice(&text).expect("a serialized negotiate response parses");
        assert_eq!(parsed, response);
    }
}
