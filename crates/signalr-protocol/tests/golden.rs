//! Golden byte tests: the worked examples of ASP.NET's HubProtocol.md and the wire rules of docs/protocol.md
//! ("Negotiate response", "Framing", "Handshake", "Hub messages", "JSON encoding", "MessagePack encoding", "Wire traces"),
//! encoded and decoded byte for byte.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use signalr_protocol::msgpack::{read_varint, write_varint};
use signalr_protocol::{
    AvailableTransport, Close, Completion, CompletionResult, HandshakeRequest, HandshakeResponse,
    HubMessage, HubProtocol, Invocation, NegotiateResponse, Payload, ProtocolError, TransferFormat,
    TransportType,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `VarInt(body.len())` followed by `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out.to_vec()
}

fn encode(protocol: HubProtocol, message: &HubMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    protocol
        .write_message(message, &mut out)
        .expect("message encodes");
    out.to_vec()
}

/// Decodes exactly one message from `bytes` and checks nothing is left over.
fn decode_one(protocol: HubProtocol, bytes: &[u8]) -> HubMessage {
    let mut buf = BytesMut::from(bytes);
    let message = protocol
        .parse_message(&mut buf, None)
        .expect("message decodes")
        .expect("a complete message");
    assert!(buf.is_empty(), "left over: {:02x?}", &buf[..]);
    message
}

/// Decodes every message in `bytes`.
fn decode_all(protocol: HubProtocol, bytes: &[u8]) -> Vec<HubMessage> {
    let mut buf = BytesMut::from(bytes);
    let mut messages = Vec::new();
    while let Some(message) = protocol
        .parse_message(&mut buf, None)
        .expect("message decodes")
    {
        messages.push(message);
    }
    assert!(buf.is_empty(), "left over: {:02x?}", &buf[..]);
    messages
}

fn decode_err(protocol: HubProtocol, bytes: &[u8]) -> ProtocolError {
    let mut buf = BytesMut::from(bytes);
    match protocol.parse_message(&mut buf, None) {
        Err(err) => err,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

fn xyz_invocation() -> HubMessage {
    HubMessage::Invocation(Invocation {
        invocation_id: Some("xyz".into()),
        target: "method".into(),
        arguments: vec![Payload::from_value(42)],
        ..Default::default()
    })
}

// The MessagePack worked examples of ASP.NET's HubProtocol.md (bodies, without the VarInt prefix).
const MP_INVOCATION: &[u8] = &[
    0x96, 0x01, 0x80, 0xA3, 0x78, 0x79, 0x7A, 0xA6, 0x6D, 0x65, 0x74, 0x68, 0x6F, 0x64, 0x91, 0x2A,
    0x90,
];
const MP_INVOCATION_5: &[u8] = &[
    0x95, 0x01, 0x80, 0xA3, 0x78, 0x79, 0x7A, 0xA6, 0x6D, 0x65, 0x74, 0x68, 0x6F, 0x64, 0x91, 0x2A,
];
const MP_VOID_COMPLETION: &[u8] = &[0x94, 0x03, 0x80, 0xA3, 0x78, 0x79, 0x7A, 0x02];
const MP_RESULT_COMPLETION: &[u8] = &[0x95, 0x03, 0x80, 0xA3, 0x78, 0x79, 0x7A, 0x03, 0x2A];
const MP_ACK_36: &[u8] = &[0x92, 0x08, 0xCC, 0x24];
const MP_CLOSE_XYZ_RECONNECT: &[u8] = &[0x93, 0x07, 0xA3, 0x78, 0x79, 0x7A, 0xC3];
const MP_CLOSE_2: &[u8] = &[0x92, 0x07, 0xC0];
const MP_PING: &[u8] = &[0x91, 0x06];

// ---------------------------------------------------------------------------------------------
// MessagePack (docs/protocol.md, "MessagePack encoding")
// ---------------------------------------------------------------------------------------------

#[test]
fn msgpack_invocation_encodes_to_the_worked_example() {
    let bytes = encode(HubProtocol::MessagePack, &xyz_invocation());
    // 17 body bytes → prefix 0x11.
    assert_eq!(bytes[0], 0x11);
    assert_eq!(bytes, framed(MP_INVOCATION));
}

#[test]
fn msgpack_invocation_decodes_with_six_elements() {
    let HubMessage::Invocation(call) = decode_one(HubProtocol::MessagePack, &framed(MP_INVOCATION))
    else {
        panic!("expected an invocation");
    };
    assert!(call.headers.is_empty());
    assert_eq!(call.invocation_id.as_deref(), Some("xyz"));
    assert_eq!(call.target, "method");
    assert_eq!(call.arguments.len(), 1);
    assert_eq!(call.arguments[0].deserialize::<i32>().unwrap(), 42);
    // The argument keeps its MessagePack bytes.
    match &call.arguments[0] {
        Payload::MessagePack(raw) => assert_eq!(&raw[..], &[0x2A]),
        other => panic!("expected a MessagePack payload, got {other:?}"),
    }
    assert!(call.stream_ids.is_empty());
}

#[test]
fn msgpack_invocation_decodes_with_five_elements() {
    let HubMessage::Invocation(call) =
        decode_one(HubProtocol::MessagePack, &framed(MP_INVOCATION_5))
    else {
        panic!("expected an invocation");
    };
    assert_eq!(call.invocation_id.as_deref(), Some("xyz"));
    assert_eq!(call.target, "method");
    assert_eq!(call.arguments[0].deserialize::<i64>().unwrap(), 42);
    assert!(call.stream_ids.is_empty());
}

#[test]
fn msgpack_invocation_with_stream_ids_and_headers() {
    // [1, {"a":"b"}, nil, "m", [], ["3","4"]]
    let body = [
        0x96, 0x01, 0x81, 0xA1, b'a', 0xA1, b'b', 0xC0, 0xA1, b'm', 0x90, 0x92, 0xA1, b'3', 0xA1,
        b'4',
    ];
    let HubMessage::Invocation(call) = decode_one(HubProtocol::MessagePack, &framed(&body)) else {
        panic!("expected an invocation");
    };
    assert_eq!(call.headers.get("a").map(String::as_str), Some("b"));
    assert_eq!(call.invocation_id, None);
    assert!(call.arguments.is_empty());
    assert_eq!(call.stream_ids, vec!["3".to_string(), "4".to_string()]);
    // And the encoder writes exactly that again.
    assert_eq!(
        encode(HubProtocol::MessagePack, &HubMessage::Invocation(call)),
        framed(&body)
    );
}

#[test]
fn msgpack_non_blocking_invocation_writes_nil_id() {
    let message = HubMessage::Invocation(Invocation {
        target: "m".into(),
        ..Default::default()
    });
    let body = [0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x90, 0x90];
    assert_eq!(encode(HubProtocol::MessagePack, &message), framed(&body));
}

#[test]
fn msgpack_empty_invocation_id_means_none() {
    // docs/protocol.md, "Invocation ids": an empty string id is normalised to "none" in MessagePack.
    let body = [0x96, 0x01, 0x80, 0xA0, 0xA1, b'm', 0x90, 0x90];
    let HubMessage::Invocation(call) = decode_one(HubProtocol::MessagePack, &framed(&body)) else {
        panic!("expected an invocation");
    };
    assert_eq!(call.invocation_id, None);
}

#[test]
fn msgpack_void_completion() {
    let message = HubMessage::Completion(Completion::void("xyz"));
    assert_eq!(
        encode(HubProtocol::MessagePack, &message),
        framed(MP_VOID_COMPLETION)
    );
    let HubMessage::Completion(done) =
        decode_one(HubProtocol::MessagePack, &framed(MP_VOID_COMPLETION))
    else {
        panic!("expected a completion");
    };
    assert_eq!(done.invocation_id, "xyz");
    assert!(done.headers.is_empty());
    assert!(matches!(done.result, CompletionResult::Void));
}

#[test]
fn msgpack_result_completion() {
    let message = HubMessage::Completion(Completion::with_result("xyz", Payload::from_value(42)));
    assert_eq!(
        encode(HubProtocol::MessagePack, &message),
        framed(MP_RESULT_COMPLETION)
    );
    let HubMessage::Completion(done) =
        decode_one(HubProtocol::MessagePack, &framed(MP_RESULT_COMPLETION))
    else {
        panic!("expected a completion");
    };
    assert_eq!(done.invocation_id, "xyz");
    let CompletionResult::Value(value) = done.result else {
        panic!("expected a result");
    };
    assert_eq!(value.deserialize::<u8>().unwrap(), 42);
}

#[test]
fn msgpack_error_completion() {
    // [3, {}, "xyz", 1, "boom"]
    let body = [
        0x95, 0x03, 0x80, 0xA3, b'x', b'y', b'z', 0x01, 0xA4, b'b', b'o', b'o', b'm',
    ];
    let message = HubMessage::Completion(Completion::with_error("xyz", "boom"));
    assert_eq!(encode(HubProtocol::MessagePack, &message), framed(&body));
    let HubMessage::Completion(done) = decode_one(HubProtocol::MessagePack, &framed(&body)) else {
        panic!("expected a completion");
    };
    assert!(matches!(done.result, CompletionResult::Error(e) if e == "boom"));
}

#[test]
fn msgpack_completion_with_nil_result_is_a_value() {
    // [3, {}, "xyz", 3, nil]: a non-void null (docs/protocol.md, "Completions"), distinct from void.
    let body = [0x95, 0x03, 0x80, 0xA3, b'x', b'y', b'z', 0x03, 0xC0];
    let HubMessage::Completion(done) = decode_one(HubProtocol::MessagePack, &framed(&body)) else {
        panic!("expected a completion");
    };
    let CompletionResult::Value(value) = done.result else {
        panic!("expected a result");
    };
    assert_eq!(value.deserialize::<Option<i32>>().unwrap(), None);
}

#[test]
fn msgpack_completion_with_bad_result_kind_is_an_error() {
    let body = [0x95, 0x03, 0x80, 0xA3, b'x', b'y', b'z', 0x04, 0xC0];
    decode_err(HubProtocol::MessagePack, &framed(&body));
    // Result kind 3 without the 5th element.
    let body = [0x94, 0x03, 0x80, 0xA3, b'x', b'y', b'z', 0x03];
    decode_err(HubProtocol::MessagePack, &framed(&body));
}

#[test]
fn msgpack_ack_accepts_any_integer_width() {
    // The worked example uses uint8 (0xCC); any integer width is valid (docs/protocol.md, "MessagePack encoding").
    let HubMessage::Ack { sequence_id } = decode_one(HubProtocol::MessagePack, &framed(MP_ACK_36))
    else {
        panic!("expected an ack");
    };
    assert_eq!(sequence_id, 36);
    for body in [
        &[0x92, 0x08, 0x24][..],
        &[0x92, 0x08, 0xCD, 0x00, 0x24],
        &[0x92, 0x08, 0xCE, 0x00, 0x00, 0x00, 0x24],
        &[0x92, 0x08, 0xCF, 0, 0, 0, 0, 0, 0, 0, 0x24],
        &[0x92, 0x08, 0xD0, 0x24],
        &[0x92, 0x08, 0xD3, 0, 0, 0, 0, 0, 0, 0, 0x24],
    ] {
        let HubMessage::Ack { sequence_id } = decode_one(HubProtocol::MessagePack, &framed(body))
        else {
            panic!("expected an ack");
        };
        assert_eq!(sequence_id, 36, "{body:02x?}");
    }
    // sequenceId is read as 64-bit.
    let HubMessage::Sequence { sequence_id } = decode_one(
        HubProtocol::MessagePack,
        &framed(&[
            0x92, 0x09, 0xCF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]),
    ) else {
        panic!("expected a sequence");
    };
    assert_eq!(sequence_id, u64::MAX);
    // A negative sequence id is not a valid id.
    decode_err(HubProtocol::MessagePack, &framed(&[0x92, 0x08, 0xFF]));
}

#[test]
fn msgpack_ack_encodes_compactly() {
    // Our encoder writes the smallest width (as MessagePack-CSharp does): 36 is a positive fixint.
    // The 0xCC form of the worked example is equally valid and decodes above.
    let bytes = encode(
        HubProtocol::MessagePack,
        &HubMessage::Ack { sequence_id: 36 },
    );
    assert_eq!(bytes, framed(&[0x92, 0x08, 0x24]));
    let bytes = encode(
        HubProtocol::MessagePack,
        &HubMessage::Sequence { sequence_id: 200 },
    );
    assert_eq!(bytes, framed(&[0x92, 0x09, 0xCC, 0xC8]));
}

#[test]
fn msgpack_close() {
    let message = HubMessage::Close(Close {
        error: Some("xyz".into()),
        allow_reconnect: true,
    });
    assert_eq!(
        encode(HubProtocol::MessagePack, &message),
        framed(MP_CLOSE_XYZ_RECONNECT)
    );
    let HubMessage::Close(close) =
        decode_one(HubProtocol::MessagePack, &framed(MP_CLOSE_XYZ_RECONNECT))
    else {
        panic!("expected a close");
    };
    assert_eq!(
        close,
        Close {
            error: Some("xyz".into()),
            allow_reconnect: true
        }
    );
    // The server always writes 3 elements (docs/protocol.md, "Close message").
    assert_eq!(
        encode(
            HubProtocol::MessagePack,
            &HubMessage::Close(Close::default())
        ),
        framed(&[0x93, 0x07, 0xC0, 0xC2])
    );
}

#[test]
fn msgpack_close_with_two_elements() {
    // The TS client writes [7, nil] (docs/protocol.md, "Close message").
    let HubMessage::Close(close) = decode_one(HubProtocol::MessagePack, &framed(MP_CLOSE_2)) else {
        panic!("expected a close");
    };
    assert_eq!(close, Close::default());
}

#[test]
fn msgpack_ping() {
    assert_eq!(
        encode(HubProtocol::MessagePack, &HubMessage::Ping),
        framed(MP_PING)
    );
    assert_eq!(framed(MP_PING), vec![0x02, 0x91, 0x06]);
    assert!(matches!(
        decode_one(HubProtocol::MessagePack, &framed(MP_PING)),
        HubMessage::Ping
    ));
}

#[test]
fn msgpack_stream_item_and_cancel() {
    // [2, {}, "1", "x"] and [5, {}, "1"]
    let item = [0x94, 0x02, 0x80, 0xA1, b'1', 0xA1, b'x'];
    let cancel = [0x93, 0x05, 0x80, 0xA1, b'1'];
    let mut bytes = framed(&item);
    bytes.extend(framed(&cancel));
    let messages = decode_all(HubProtocol::MessagePack, &bytes);
    let [HubMessage::StreamItem(si), HubMessage::CancelInvocation(ci)] = &messages[..] else {
        panic!("unexpected {messages:?}");
    };
    assert_eq!(si.invocation_id, "1");
    assert_eq!(si.item.deserialize::<String>().unwrap(), "x");
    assert_eq!(ci.invocation_id, "1");
    let mut out = Vec::new();
    for message in &messages {
        out.extend(encode(HubProtocol::MessagePack, message));
    }
    assert_eq!(out, bytes);
}

#[test]
fn msgpack_stream_invocation() {
    // [4, {}, "7", "Counter", [10, 500], []]
    let body = [
        0x96, 0x04, 0x80, 0xA1, b'7', 0xA7, b'C', b'o', b'u', b'n', b't', b'e', b'r', 0x92, 0x0A,
        0xCD, 0x01, 0xF4, 0x90,
    ];
    let HubMessage::StreamInvocation(call) = decode_one(HubProtocol::MessagePack, &framed(&body))
    else {
        panic!("expected a stream invocation");
    };
    assert_eq!(call.invocation_id, "7");
    assert_eq!(call.target, "Counter");
    assert_eq!(call.arguments[0].deserialize::<i32>().unwrap(), 10);
    assert_eq!(call.arguments[1].deserialize::<i32>().unwrap(), 500);
    assert_eq!(
        encode(
            HubProtocol::MessagePack,
            &HubMessage::StreamInvocation(call)
        ),
        framed(&body)
    );
}

#[test]
fn msgpack_unknown_type_is_skipped() {
    let mut bytes = framed(&[0x92, 0x63, 0xC0]); // [99, nil]
    bytes.extend(framed(MP_PING));
    let messages = decode_all(HubProtocol::MessagePack, &bytes);
    assert!(matches!(&messages[..], [HubMessage::Ping]));
}

#[test]
fn msgpack_rejects_a_non_array_message() {
    decode_err(HubProtocol::MessagePack, &framed(&[0x06]));
    decode_err(HubProtocol::MessagePack, &framed(&[0x90])); // [] has no type
    decode_err(HubProtocol::MessagePack, &framed(&[0x91, 0xA1, b'1'])); // type not an int
}

// ---------------------------------------------------------------------------------------------
// VarInt (docs/protocol.md, "Binary framing")
// ---------------------------------------------------------------------------------------------

#[test]
fn varint_examples() {
    assert_eq!(read_varint(&[0x35]).unwrap(), Some((53, 1)));
    assert_eq!(read_varint(&[0x80, 0x29]).unwrap(), Some((5248, 2)));
    // Trailing bytes after the prefix are not part of it.
    assert_eq!(read_varint(&[0x35, 0xFF, 0xFF]).unwrap(), Some((53, 1)));

    let mut out = BytesMut::new();
    write_varint(&mut out, 11);
    assert_eq!(&out[..], &[0x0B]);
    let mut out = BytesMut::new();
    write_varint(&mut out, 5248);
    assert_eq!(&out[..], &[0x80, 0x29]);
}

#[test]
fn varint_round_trips_at_group_boundaries() {
    for (value, size) in [
        (0usize, 1usize),
        (127, 1),
        (128, 2),
        (16_383, 2),
        (16_384, 3),
        (2_097_151, 3),
        (2_097_152, 4),
        (268_435_455, 4),
        (268_435_456, 5),
        (i32::MAX as usize, 5),
    ] {
        let mut out = BytesMut::new();
        write_varint(&mut out, value);
        assert_eq!(out.len(), size, "{value}");
        assert_eq!(read_varint(&out).unwrap(), Some((value, size)), "{value}");
    }
    let mut out = BytesMut::new();
    write_varint(&mut out, i32::MAX as usize);
    assert_eq!(&out[..], &[0xFF, 0xFF, 0xFF, 0xFF, 0x07]);
}

#[test]
fn varint_incomplete_prefix_needs_more_data() {
    assert_eq!(read_varint(&[]).unwrap(), None);
    assert_eq!(read_varint(&[0x80]).unwrap(), None);
    assert_eq!(read_varint(&[0xFF, 0xFF, 0xFF, 0xFF]).unwrap(), None);

    // Through the protocol: nothing is consumed while the prefix or the body is incomplete.
    for partial in [&[0x80][..], &[0x80, 0x29], &[0x02, 0x91]] {
        let mut buf = BytesMut::from(partial);
        assert!(
            HubProtocol::MessagePack
                .parse_message(&mut buf, None)
                .unwrap()
                .is_none()
        );
        assert_eq!(&buf[..], partial);
    }
}

#[test]
fn varint_over_two_gigabytes_is_an_error() {
    // The 5th byte may hold at most 7 (2^31 − 1).
    for prefix in [
        &[0x80, 0x80, 0x80, 0x80, 0x08][..],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        // Continuation bit on the 5th byte: a 6-byte prefix is never valid.
        &[0x80, 0x80, 0x80, 0x80, 0x80],
        &[0x80, 0x80, 0x80, 0x80, 0x81, 0x00],
    ] {
        assert!(
            matches!(
                read_varint(prefix),
                Err(ProtocolError::LengthPrefixTooLarge)
            ),
            "{prefix:02x?}"
        );
        let err = decode_err(HubProtocol::MessagePack, prefix);
        assert!(
            matches!(err, ProtocolError::LengthPrefixTooLarge),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "Messages over 2GB in size are not supported."
        );
    }
}

// ---------------------------------------------------------------------------------------------
// JSON (docs/protocol.md, "JSON encoding", "Wire traces")
// ---------------------------------------------------------------------------------------------

#[test]
fn json_trace_messages_decode() {
    let trace = b"{\"type\":6}\x1e\
        {\"type\":1,\"invocationId\":\"0\",\"target\":\"SendMessage\",\"arguments\":[\"bob\",\"hi\"]}\x1e\
        {\"type\":3,\"invocationId\":\"0\"}\x1e\
        {\"type\":7}\x1e";
    let messages = decode_all(HubProtocol::Json, trace);
    assert_eq!(messages.len(), 4);
    assert!(matches!(messages[0], HubMessage::Ping));
    let HubMessage::Invocation(call) = &messages[1] else {
        panic!("expected an invocation");
    };
    assert_eq!(call.invocation_id.as_deref(), Some("0"));
    assert_eq!(call.target, "SendMessage");
    let args: Vec<String> = call
        .arguments
        .iter()
        .map(|a| a.deserialize().unwrap())
        .collect();
    assert_eq!(args, ["bob", "hi"]);
    assert!(call.stream_ids.is_empty());
    assert!(call.headers.is_empty());
    let HubMessage::Completion(done) = &messages[2] else {
        panic!("expected a completion");
    };
    assert_eq!(done.invocation_id, "0");
    assert!(matches!(done.result, CompletionResult::Void));
    assert!(matches!(&messages[3], HubMessage::Close(c) if *c == Close::default()));
}

#[test]
fn json_trace_messages_encode() {
    // The server's frame in the WebSockets trace of docs/protocol.md, "Wire traces": an invocation without id and a void completion.
    let reply = HubMessage::Invocation(Invocation {
        target: "ReceiveMessage".into(),
        arguments: vec![Payload::from_value("bob"), Payload::from_value("hi")],
        ..Default::default()
    });
    let mut out = BytesMut::new();
    HubProtocol::Json.write_message(&reply, &mut out).unwrap();
    HubProtocol::Json
        .write_message(&HubMessage::Completion(Completion::void("0")), &mut out)
        .unwrap();
    assert_eq!(
        &out[..],
        &b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"bob\",\"hi\"]}\x1e\
           {\"type\":3,\"invocationId\":\"0\"}\x1e"[..]
    );
    assert_eq!(
        encode(HubProtocol::Json, &HubMessage::Ping),
        b"{\"type\":6}\x1e"
    );
    assert_eq!(
        encode(HubProtocol::Json, &HubMessage::Close(Close::default())),
        b"{\"type\":7}\x1e"
    );
    let call = HubMessage::Invocation(Invocation {
        invocation_id: Some("0".into()),
        target: "SendMessage".into(),
        arguments: vec![Payload::from_value("bob"), Payload::from_value("hi")],
        ..Default::default()
    });
    assert_eq!(
        encode(HubProtocol::Json, &call),
        b"{\"type\":1,\"invocationId\":\"0\",\"target\":\"SendMessage\",\"arguments\":[\"bob\",\"hi\"]}\x1e"
    );
}

#[test]
fn json_properties_in_any_order() {
    let frame = b"{\"arguments\":[\"bob\",\"hi\"],\"target\":\"SendMessage\",\
        \"invocationId\":\"0\",\"streamIds\":[\"1\"],\"headers\":{\"k\":\"v\"},\"type\":1}\x1e";
    let HubMessage::Invocation(call) = decode_one(HubProtocol::Json, frame) else {
        panic!("expected an invocation");
    };
    assert_eq!(call.invocation_id.as_deref(), Some("0"));
    assert_eq!(call.target, "SendMessage");
    assert_eq!(call.arguments[1].deserialize::<String>().unwrap(), "hi");
    assert_eq!(call.stream_ids, ["1"]);
    assert_eq!(call.headers.get("k").map(String::as_str), Some("v"));

    let frame = b"{\"result\":{\"a\":[1,2]},\"invocationId\":\"9\",\"type\":3}\x1e";
    let HubMessage::Completion(done) = decode_one(HubProtocol::Json, frame) else {
        panic!("expected a completion");
    };
    let CompletionResult::Value(value) = done.result else {
        panic!("expected a result");
    };
    assert_eq!(
        value.deserialize::<serde_json::Value>().unwrap(),
        serde_json::json!({"a": [1, 2]})
    );
}

#[test]
fn json_unknown_properties_are_skipped() {
    let frame = b"{\"type\":1,\"extra\":{\"nested\":[1,{\"type\":9}],\"s\":\"\\u001e\"},\
        \"target\":\"T\",\"more\":null,\"arguments\":[]}\x1e";
    let HubMessage::Invocation(call) = decode_one(HubProtocol::Json, frame) else {
        panic!("expected an invocation");
    };
    assert_eq!(call.target, "T");
    assert!(call.arguments.is_empty());
    assert_eq!(call.invocation_id, None);

    // Whitespace between tokens is fine too.
    let frame = b" { \"type\" : 6 , \"x\" : [ ] } \x1e";
    assert!(matches!(
        decode_one(HubProtocol::Json, frame),
        HubMessage::Ping
    ));
}

#[test]
fn json_argument_payloads_keep_their_text() {
    let frame =
        b"{\"type\":1,\"target\":\"T\",\"arguments\":[ {\"b\": 1} ,[true,null],\"\\u00e9\"]}\x1e";
    let HubMessage::Invocation(call) = decode_one(HubProtocol::Json, frame) else {
        panic!("expected an invocation");
    };
    let texts: Vec<&[u8]> = call
        .arguments
        .iter()
        .map(|p| match p {
            Payload::Json(raw) => &raw[..],
            other => panic!("expected a JSON payload, got {other:?}"),
        })
        .collect();
    assert_eq!(texts, [&b"{\"b\": 1}"[..], b"[true,null]", b"\"\\u00e9\""]);
    assert_eq!(call.arguments[2].deserialize::<String>().unwrap(), "é");
}

#[test]
fn json_numbers_bind_exactly() {
    // The shortest round-trip text of a double (what .NET and JS write) must parse back to the
    // same double, also after transcoding to MessagePack. serde_json's default float parser is
    // off by one ULP on this one; the crate enables `float_roundtrip`.
    let expected = -6.447872854208868e176_f64;
    let frame = b"{\"type\":1,\"target\":\"T\",\"arguments\":[-6.447872854208868e+176]}\x1e";
    let message = decode_one(HubProtocol::Json, frame);
    let HubMessage::Invocation(call) = &message else {
        panic!("expected an invocation");
    };
    assert_eq!(
        call.arguments[0].deserialize::<f64>().unwrap().to_bits(),
        expected.to_bits()
    );
    let HubMessage::Invocation(call) = decode_one(
        HubProtocol::MessagePack,
        &encode(HubProtocol::MessagePack, &message),
    ) else {
        panic!("expected an invocation");
    };
    let Payload::MessagePack(raw) = &call.arguments[0] else {
        panic!("expected a MessagePack payload");
    };
    let mut f64_bytes = vec![0xCB];
    f64_bytes.extend(expected.to_bits().to_be_bytes());
    assert_eq!(&raw[..], &f64_bytes[..]);
}

#[test]
fn json_null_result_is_a_value_and_absent_result_is_void() {
    let HubMessage::Completion(done) = decode_one(
        HubProtocol::Json,
        b"{\"type\":3,\"invocationId\":\"1\",\"result\":null}\x1e",
    ) else {
        panic!("expected a completion");
    };
    let CompletionResult::Value(value) = done.result else {
        panic!("\"result\":null must be a value, got {:?}", done.result);
    };
    assert_eq!(value.deserialize::<Option<i32>>().unwrap(), None);

    let HubMessage::Completion(done) = decode_one(
        HubProtocol::Json,
        b"{\"type\":3,\"invocationId\":\"1\"}\x1e",
    ) else {
        panic!("expected a completion");
    };
    assert!(matches!(done.result, CompletionResult::Void));

    // And the encoder writes them apart.
    let null = HubMessage::Completion(Completion::with_result(
        "1",
        Payload::from_value(Option::<i32>::None),
    ));
    assert_eq!(
        encode(HubProtocol::Json, &null),
        b"{\"type\":3,\"invocationId\":\"1\",\"result\":null}\x1e"
    );
    assert_eq!(
        encode(
            HubProtocol::Json,
            &HubMessage::Completion(Completion::void("1"))
        ),
        b"{\"type\":3,\"invocationId\":\"1\"}\x1e"
    );
}

#[test]
fn json_error_completion() {
    let HubMessage::Completion(done) = decode_one(
        HubProtocol::Json,
        b"{\"type\":3,\"invocationId\":\"1\",\"error\":\"boom\"}\x1e",
    ) else {
        panic!("expected a completion");
    };
    assert!(matches!(done.result, CompletionResult::Error(e) if e == "boom"));
    assert_eq!(
        encode(
            HubProtocol::Json,
            &HubMessage::Completion(Completion::with_error("1", "boom"))
        ),
        b"{\"type\":3,\"invocationId\":\"1\",\"error\":\"boom\"}\x1e"
    );
}

#[test]
fn json_result_and_error_together_is_an_error() {
    for frame in [
        &b"{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"x\"}\x1e"[..],
        b"{\"type\":3,\"error\":\"x\",\"invocationId\":\"1\",\"result\":null}\x1e",
    ] {
        let err = decode_err(HubProtocol::Json, frame);
        assert_eq!(
            err.to_string(),
            "The 'error' and 'result' properties are mutually exclusive."
        );
    }
}

#[test]
fn json_unknown_type_is_skipped() {
    let bytes = b"{\"type\":99,\"whatever\":[1]}\x1e{\"type\":6}\x1e";
    let mut buf = BytesMut::from(&bytes[..]);
    let first = HubProtocol::Json.parse_message(&mut buf, None).unwrap();
    assert!(matches!(first, Some(HubMessage::Ping)), "{first:?}");
    assert!(buf.is_empty());

    // An unknown message alone yields nothing but is consumed.
    let mut buf = BytesMut::from(&b"{\"type\":99}\x1e"[..]);
    assert!(
        HubProtocol::Json
            .parse_message(&mut buf, None)
            .unwrap()
            .is_none()
    );
    assert!(buf.is_empty());
}

#[test]
fn json_close_writes_allow_reconnect_only_when_true() {
    let cases = [
        (Close::default(), &b"{\"type\":7}\x1e"[..]),
        (
            Close {
                error: None,
                allow_reconnect: true,
            },
            b"{\"type\":7,\"allowReconnect\":true}\x1e",
        ),
        (
            Close {
                error: Some("Connection closed with an error.".into()),
                allow_reconnect: false,
            },
            b"{\"type\":7,\"error\":\"Connection closed with an error.\"}\x1e",
        ),
        (
            Close {
                error: Some("x".into()),
                allow_reconnect: true,
            },
            b"{\"type\":7,\"error\":\"x\",\"allowReconnect\":true}\x1e",
        ),
    ];
    for (close, expected) in cases {
        let bytes = encode(HubProtocol::Json, &HubMessage::Close(close.clone()));
        assert_eq!(bytes, expected);
        let HubMessage::Close(decoded) = decode_one(HubProtocol::Json, &bytes) else {
            panic!("expected a close");
        };
        assert_eq!(decoded, close);
    }
    // An explicit false is accepted.
    let HubMessage::Close(decoded) = decode_one(
        HubProtocol::Json,
        b"{\"type\":7,\"allowReconnect\":false}\x1e",
    ) else {
        panic!("expected a close");
    };
    assert!(!decoded.allow_reconnect);
}

#[test]
fn json_ack_and_sequence() {
    assert_eq!(
        encode(HubProtocol::Json, &HubMessage::Ack { sequence_id: 36 }),
        b"{\"type\":8,\"sequenceId\":36}\x1e"
    );
    assert_eq!(
        encode(HubProtocol::Json, &HubMessage::Sequence { sequence_id: 1 }),
        b"{\"type\":9,\"sequenceId\":1}\x1e"
    );
    let messages = decode_all(
        HubProtocol::Json,
        b"{\"sequenceId\":36,\"type\":8}\x1e{\"type\":9,\"sequenceId\":18446744073709551615}\x1e",
    );
    assert!(matches!(
        messages[..],
        [
            HubMessage::Ack { sequence_id: 36 },
            HubMessage::Sequence {
                sequence_id: u64::MAX
            }
        ]
    ));
    decode_err(HubProtocol::Json, b"{\"type\":8}\x1e");
    decode_err(HubProtocol::Json, b"{\"type\":8,\"sequenceId\":\"1\"}\x1e");
}

#[test]
fn json_stream_messages() {
    let bytes =
        b"{\"type\":4,\"invocationId\":\"2\",\"target\":\"Counter\",\"arguments\":[10,500]}\x1e\
        {\"type\":2,\"invocationId\":\"2\",\"item\":null}\x1e\
        {\"type\":5,\"invocationId\":\"2\"}\x1e";
    let messages = decode_all(HubProtocol::Json, bytes);
    let [
        HubMessage::StreamInvocation(call),
        HubMessage::StreamItem(item),
        HubMessage::CancelInvocation(cancel),
    ] = &messages[..]
    else {
        panic!("unexpected {messages:?}");
    };
    assert_eq!(call.invocation_id, "2");
    assert_eq!(call.arguments[1].deserialize::<u32>().unwrap(), 500);
    // `"item": null` is a present (null) item.
    assert_eq!(item.item.deserialize::<Option<u8>>().unwrap(), None);
    assert_eq!(cancel.invocation_id, "2");
    // Our encoder reproduces the same bytes.
    let mut out = Vec::new();
    for m in &messages {
        out.extend(encode(HubProtocol::Json, m));
    }
    assert_eq!(out, bytes);
}

#[test]
fn json_missing_required_properties_are_errors() {
    for frame in [
        &b"{\"target\":\"T\",\"arguments\":[]}\x1e"[..], // no type
        b"{\"type\":\"1\",\"target\":\"T\",\"arguments\":[]}\x1e", // type not a number
        b"{\"type\":1,\"arguments\":[]}\x1e",            // no target
        b"{\"type\":1,\"target\":\"T\"}\x1e",            // no arguments
        b"{\"type\":1,\"target\":\"T\",\"arguments\":{}}\x1e", // arguments not an array
        b"{\"type\":2,\"invocationId\":\"1\"}\x1e",      // no item
        b"{\"type\":2,\"item\":1}\x1e",                  // no invocationId
        b"{\"type\":3}\x1e",                             // no invocationId
        b"{\"type\":4,\"target\":\"T\",\"arguments\":[]}\x1e", // stream invocation without id
        b"{\"type\":5}\x1e",                             // no invocationId
        b"{\"type\":1,\"invocationId\":1,\"target\":\"T\",\"arguments\":[]}\x1e", // numeric id
        b"{\"type\":1,\"target\":\"T\",\"arguments\":[],\"headers\":{\"a\":1}}\x1e",
        b"[1]\x1e",
        b"\x1e",
        b"{\"type\":6}x\x1e",
    ] {
        decode_err(HubProtocol::Json, frame);
    }
}

#[test]
fn json_headers_are_written_only_when_present() {
    let mut call = Invocation {
        target: "T".into(),
        ..Default::default()
    };
    call.headers.insert("k".into(), "v".into());
    let bytes = encode(HubProtocol::Json, &HubMessage::Invocation(call));
    assert_eq!(
        bytes,
        b"{\"type\":1,\"headers\":{\"k\":\"v\"},\"target\":\"T\",\"arguments\":[]}\x1e"
    );
    let HubMessage::Invocation(decoded) = decode_one(HubProtocol::Json, &bytes) else {
        panic!("expected an invocation");
    };
    assert_eq!(decoded.headers.get("k").map(String::as_str), Some("v"));
}

// ---------------------------------------------------------------------------------------------
// Handshake (docs/protocol.md, "Handshake")
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_request_leaves_following_messagepack_bytes() {
    let mut bytes = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec();
    bytes.extend(framed(MP_PING));
    bytes.extend(framed(MP_INVOCATION));
    let mut buf = BytesMut::from(&bytes[..]);
    let request = HandshakeRequest::parse(&mut buf, Some(32 * 1024))
        .unwrap()
        .unwrap();
    assert_eq!(
        request,
        HandshakeRequest {
            protocol: "messagepack".into(),
            version: 1
        }
    );
    let mut rest = framed(MP_PING);
    rest.extend(framed(MP_INVOCATION));
    assert_eq!(&buf[..], &rest[..]);
    let protocol = HubProtocol::from_name(&request.protocol).unwrap();
    assert_eq!(protocol, HubProtocol::MessagePack);
    assert_eq!(protocol.transfer_format(), TransferFormat::Binary);
    assert!(matches!(
        protocol.parse_message(&mut buf, None).unwrap(),
        Some(HubMessage::Ping)
    ));
    assert!(matches!(
        protocol.parse_message(&mut buf, None).unwrap(),
        Some(HubMessage::Invocation(_))
    ));
    assert!(buf.is_empty());
}

#[test]
fn handshake_request_wire_format() {
    let mut out = BytesMut::new();
    HandshakeRequest {
        protocol: "json".into(),
        version: 1,
    }
    .write(&mut out);
    assert_eq!(&out[..], b"{\"protocol\":\"json\",\"version\":1}\x1e");

    // Extra fields are ignored, order is free.
    let mut buf = BytesMut::from(&b"{\"version\":2,\"x\":[1],\"protocol\":\"json\"}\x1e"[..]);
    let request = HandshakeRequest::parse(&mut buf, None).unwrap().unwrap();
    assert_eq!((request.protocol.as_str(), request.version), ("json", 2));

    // Incomplete: nothing is consumed.
    let mut buf = BytesMut::from(&b"{\"protocol\":\"json\""[..]);
    assert!(HandshakeRequest::parse(&mut buf, None).unwrap().is_none());
    assert_eq!(buf.len(), 18);

    // Both fields are required.
    for bad in [
        &b"{\"protocol\":\"json\"}\x1e"[..],
        b"{\"version\":1}\x1e",
        b"{\"protocol\":1,\"version\":1}\x1e",
        b"{\"protocol\":\"json\",\"version\":\"1\"}\x1e",
        b"not json\x1e",
    ] {
        let mut buf = BytesMut::from(bad);
        assert!(HandshakeRequest::parse(&mut buf, None).is_err(), "{bad:?}");
    }
}

#[test]
fn handshake_request_size_limit() {
    let request = b"{\"protocol\":\"json\",\"version\":1}\x1e"; // 32 bytes
    assert_eq!(request.len(), 32);
    let mut buf = BytesMut::from(&request[..]);
    assert!(
        HandshakeRequest::parse(&mut buf, Some(32))
            .unwrap()
            .is_some()
    );
    let mut buf = BytesMut::from(&request[..]);
    assert!(matches!(
        HandshakeRequest::parse(&mut buf, Some(31)),
        Err(ProtocolError::MessageTooLarge { limit: 31 })
    ));
}

#[test]
fn handshake_response_success_and_error() {
    assert_eq!(&HandshakeResponse::success_bytes()[..], b"{}\x1e");
    let mut out = BytesMut::new();
    HandshakeResponse::default().write(&mut out);
    assert_eq!(&out[..], b"{}\x1e");
    let mut out = BytesMut::new();
    HandshakeResponse {
        error: Some("x".into()),
    }
    .write(&mut out);
    assert_eq!(&out[..], b"{\"error\":\"x\"}\x1e");

    let mut buf = BytesMut::from(&b"{}\x1e"[..]);
    assert_eq!(
        HandshakeResponse::parse(&mut buf).unwrap(),
        Some(HandshakeResponse { error: None })
    );
    let mut buf = BytesMut::from(&b"{\"error\":\"x\"}\x1e"[..]);
    assert_eq!(
        HandshakeResponse::parse(&mut buf).unwrap(),
        Some(HandshakeResponse {
            error: Some("x".into())
        })
    );
    // minorVersion of old previews is ignored.
    let mut buf = BytesMut::from(&b"{\"minorVersion\":1}\x1e"[..]);
    assert_eq!(
        HandshakeResponse::parse(&mut buf).unwrap(),
        Some(HandshakeResponse { error: None })
    );
    // Partial: wait.
    let mut buf = BytesMut::from(&b"{}"[..]);
    assert_eq!(HandshakeResponse::parse(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], b"{}");
}

#[test]
fn handshake_response_leaves_following_hub_messages() {
    let mut buf = BytesMut::from(&b"{}\x1e{\"type\":6}\x1e"[..]);
    assert!(HandshakeResponse::parse(&mut buf).unwrap().is_some());
    assert_eq!(&buf[..], b"{\"type\":6}\x1e");
    assert!(matches!(
        HubProtocol::Json.parse_message(&mut buf, None).unwrap(),
        Some(HubMessage::Ping)
    ));
}

#[test]
fn handshake_response_with_type_is_rejected() {
    for frame in [
        &b"{\"type\":6}\x1e"[..],
        b"{\"type\":1,\"target\":\"T\",\"arguments\":[]}\x1e",
        b"{\"error\":\"x\",\"type\":\"whatever\"}\x1e",
    ] {
        let mut buf = BytesMut::from(frame);
        let err = HandshakeResponse::parse(&mut buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Expected a handshake response from the server.",
            "{frame:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Negotiate (docs/protocol.md, "Negotiate response")
// ---------------------------------------------------------------------------------------------

fn all_transports() -> Vec<AvailableTransport> {
    vec![
        AvailableTransport {
            transport: TransportType::WebSockets,
            transfer_formats: vec![TransferFormat::Text, TransferFormat::Binary],
        },
        AvailableTransport {
            transport: TransportType::ServerSentEvents,
            transfer_formats: vec![TransferFormat::Text],
        },
        AvailableTransport {
            transport: TransportType::LongPolling,
            transfer_formats: vec![TransferFormat::Text, TransferFormat::Binary],
        },
    ]
}

const TRANSPORTS_JSON: &str = "[{\"transport\":\"WebSockets\",\"transferFormats\":[\"Text\",\"Binary\"]},\
{\"transport\":\"ServerSentEvents\",\"transferFormats\":[\"Text\"]},\
{\"transport\":\"LongPolling\",\"transferFormats\":[\"Text\",\"Binary\"]}]";

#[test]
fn negotiate_v1_with_token() {
    let response = NegotiateResponse {
        negotiate_version: Some(1),
        connection_id: Some("A".into()),
        connection_token: Some("TKN".into()),
        available_transports: Some(all_transports()),
        ..Default::default()
    };
    let text = serde_json::to_string(&response).unwrap();
    assert_eq!(
        text,
        format!(
            "{{\"negotiateVersion\":1,\"connectionId\":\"A\",\"connectionToken\":\"TKN\",\
             \"availableTransports\":{TRANSPORTS_JSON}}}"
        )
    );
    assert_eq!(
        serde_json::from_str::<NegotiateResponse>(&text).unwrap(),
        response
    );
}

#[test]
fn negotiate_v0_without_token() {
    let response = NegotiateResponse {
        negotiate_version: Some(0),
        connection_id: Some("A".into()),
        available_transports: Some(all_transports()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&response).unwrap(),
        format!(
            "{{\"negotiateVersion\":0,\"connectionId\":\"A\",\"availableTransports\":{TRANSPORTS_JSON}}}"
        )
    );
}

#[test]
fn negotiate_full_field_order() {
    // useStatefulReconnect (only when true), negotiateVersion, url?, accessToken?, connectionId,
    // connectionToken, availableTransports.
    let response = NegotiateResponse {
        use_stateful_reconnect: true,
        negotiate_version: Some(1),
        url: Some("https://other/chat".into()),
        access_token: Some("tok".into()),
        connection_id: Some("A".into()),
        connection_token: Some("TKN".into()),
        available_transports: Some(vec![]),
        error: None,
    };
    assert_eq!(
        serde_json::to_string(&response).unwrap(),
        "{\"useStatefulReconnect\":true,\"negotiateVersion\":1,\"url\":\"https://other/chat\",\
         \"accessToken\":\"tok\",\"connectionId\":\"A\",\"connectionToken\":\"TKN\",\
         \"availableTransports\":[]}"
    );
    // Redirect (docs/protocol.md, "Redirects").
    let redirect = NegotiateResponse {
        url: Some("https://other/chat".into()),
        access_token: Some("tok".into()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&redirect).unwrap(),
        "{\"url\":\"https://other/chat\",\"accessToken\":\"tok\"}"
    );
}

#[test]
fn negotiate_error_only_body() {
    let response = NegotiateResponse::error(
        "The client requested version '0', but the server does not support this version.",
    );
    assert_eq!(
        serde_json::to_string(&response).unwrap(),
        "{\"error\":\"The client requested version '0', but the server does not support this version.\"}"
    );
}

#[test]
fn negotiate_parsing_ignores_unknown_fields() {
    let text = "{\"negotiateVersion\":1,\"futureField\":{\"x\":[1,2]},\"connectionId\":\"A\",\
        \"connectionToken\":\"TKN\",\"availableTransports\":[{\"transport\":\"LongPolling\",\
        \"transferFormats\":[\"Text\"],\"extra\":true}],\"another\":null}";
    let response: NegotiateResponse = serde_json::from_str(text).unwrap();
    assert_eq!(response.negotiate_version, Some(1));
    assert_eq!(response.connection_id.as_deref(), Some("A"));
    assert_eq!(response.connection_token.as_deref(), Some("TKN"));
    assert!(!response.use_stateful_reconnect);
    assert_eq!(
        response.available_transports,
        Some(vec![AvailableTransport {
            transport: TransportType::LongPolling,
            transfer_formats: vec![TransferFormat::Text],
        }])
    );
    let response: NegotiateResponse = serde_json::from_str("{\"error\":\"nope\",\"x\":1}").unwrap();
    assert_eq!(response, NegotiateResponse::error("nope"));
    let response: NegotiateResponse =
        serde_json::from_str("{\"useStatefulReconnect\":true}").unwrap();
    assert!(response.use_stateful_reconnect);
}

#[test]
fn transport_names() {
    assert_eq!(TransportType::WebSockets.name(), "WebSockets");
    assert_eq!(TransportType::ServerSentEvents.name(), "ServerSentEvents");
    assert_eq!(TransportType::LongPolling.name(), "LongPolling");
    assert_eq!(HubProtocol::from_name("json"), Some(HubProtocol::Json));
    // Names are matched ignoring ASCII case, like ASP.NET's DefaultHubProtocolResolver.
    assert_eq!(HubProtocol::from_name("JSON"), Some(HubProtocol::Json));
    assert_eq!(
        HubProtocol::from_name("MessagePack"),
        Some(HubProtocol::MessagePack)
    );
    assert_eq!(HubProtocol::from_name("blazorpack"), None);
    assert_eq!(HubProtocol::from_name("json "), None);
    assert_eq!(HubProtocol::Json.name(), "json");
    assert_eq!(HubProtocol::MessagePack.name(), "messagepack");
}
