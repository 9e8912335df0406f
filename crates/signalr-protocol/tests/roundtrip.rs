//! Property tests: every message of the nine types, with arbitrary ids, targets, headers and
//! nested JSON-like payloads, survives encode → decode with both protocols, and survives
//! transcoding from one protocol to the other (JSON-decoded payloads written with MessagePack and
//! the reverse).

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::Value;
use signalr_protocol::msgpack::read_varint;
use signalr_protocol::{
    CancelInvocation, Close, Completion, CompletionResult, Headers, HubMessage, HubProtocol,
    Invocation, Payload, StreamInvocation, StreamItem,
};

const CASES: u32 = 256;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// JSON-like values, at most 4 levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    json_value().prop_map(Payload::from_value)
}

fn payloads() -> impl Strategy<Value = Vec<Payload>> {
    proptest::collection::vec(payload(), 0..4)
}

fn headers() -> impl Strategy<Value = Headers> {
    proptest::collection::hash_map(any::<String>(), any::<String>(), 0..3)
}

fn strings() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(any::<String>(), 0..3)
}

fn message() -> impl Strategy<Value = HubMessage> {
    prop_oneof![
        (
            headers(),
            proptest::option::of(any::<String>()),
            any::<String>(),
            payloads(),
            strings()
        )
            .prop_map(|(headers, invocation_id, target, arguments, stream_ids)| {
                HubMessage::Invocation(Invocation {
                    headers,
                    invocation_id,
                    target,
                    arguments,
                    stream_ids,
                })
            }),
        (headers(), any::<String>(), payload()).prop_map(|(headers, invocation_id, item)| {
            HubMessage::StreamItem(StreamItem {
                headers,
                invocation_id,
                item,
            })
        }),
        (
            headers(),
            any::<String>(),
            prop_oneof![
                Just(CompletionResult::Void),
                payload().prop_map(CompletionResult::Value),
                any::<String>().prop_map(CompletionResult::Error),
            ]
        )
            .prop_map(|(headers, invocation_id, result)| {
                HubMessage::Completion(Completion {
                    headers,
                    invocation_id,
                    result,
                })
            }),
        (
            headers(),
            any::<String>(),
            any::<String>(),
            payloads(),
            strings()
        )
            .prop_map(|(headers, invocation_id, target, arguments, stream_ids)| {
                HubMessage::StreamInvocation(StreamInvocation {
                    headers,
                    invocation_id,
                    target,
                    arguments,
                    stream_ids,
                })
            }),
        (headers(), any::<String>()).prop_map(|(headers, invocation_id)| {
            HubMessage::CancelInvocation(CancelInvocation {
                headers,
                invocation_id,
            })
        }),
        Just(HubMessage::Ping),
        (proptest::option::of(any::<String>()), any::<bool>()).prop_map(
            |(error, allow_reconnect)| HubMessage::Close(Close {
                error,
                allow_reconnect
            })
        ),
        any::<u64>().prop_map(|sequence_id| HubMessage::Ack { sequence_id }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Sequence { sequence_id }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

fn value(payload: &Payload) -> Value {
    payload
        .deserialize::<Value>()
        .unwrap_or_else(|e| panic!("payload {payload:?} does not bind: {e}"))
}

fn values(payloads: &[Payload]) -> Vec<Value> {
    payloads.iter().map(value).collect()
}

/// Asserts `decoded` carries what `original` did. `via_msgpack`: the message went through the
/// MessagePack protocol, which reads an empty Invocation id as none (docs/protocol.md, "Invocation ids").
fn assert_same(original: &HubMessage, decoded: &HubMessage, via_msgpack: bool) {
    match (original, decoded) {
        (HubMessage::Invocation(a), HubMessage::Invocation(b)) => {
            let expected_id = match &a.invocation_id {
                Some(id) if id.is_empty() && via_msgpack => None,
                other => other.clone(),
            };
            assert_eq!(b.invocation_id, expected_id);
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.target, b.target);
            assert_eq!(values(&a.arguments), values(&b.arguments));
            assert_eq!(a.stream_ids, b.stream_ids);
        }
        (HubMessage::StreamItem(a), HubMessage::StreamItem(b)) => {
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.invocation_id, b.invocation_id);
            assert_eq!(value(&a.item), value(&b.item));
        }
        (HubMessage::Completion(a), HubMessage::Completion(b)) => {
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.invocation_id, b.invocation_id);
            match (&a.result, &b.result) {
                (CompletionResult::Void, CompletionResult::Void) => {}
                (CompletionResult::Value(x), CompletionResult::Value(y)) => {
                    assert_eq!(value(x), value(y));
                }
                (CompletionResult::Error(x), CompletionResult::Error(y)) => assert_eq!(x, y),
                (x, y) => panic!("result {x:?} came back as {y:?}"),
            }
        }
        (HubMessage::StreamInvocation(a), HubMessage::StreamInvocation(b)) => {
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.invocation_id, b.invocation_id);
            assert_eq!(a.target, b.target);
            assert_eq!(values(&a.arguments), values(&b.arguments));
            assert_eq!(a.stream_ids, b.stream_ids);
        }
        (HubMessage::CancelInvocation(a), HubMessage::CancelInvocation(b)) => {
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.invocation_id, b.invocation_id);
        }
        (HubMessage::Ping, HubMessage::Ping) => {}
        (HubMessage::Close(a), HubMessage::Close(b)) => assert_eq!(a, b),
        (HubMessage::Ack { sequence_id: a }, HubMessage::Ack { sequence_id: b })
        | (HubMessage::Sequence { sequence_id: a }, HubMessage::Sequence { sequence_id: b }) => {
            assert_eq!(a, b);
        }
        (a, b) => panic!("{a:?} came back as {b:?}"),
    }
}

fn encode(protocol: HubProtocol, message: &HubMessage) -> BytesMut {
    let mut out = BytesMut::new();
    protocol
        .write_message(message, &mut out)
        .unwrap_or_else(|e| panic!("{protocol:?} cannot encode {message:?}: {e}"));
    out
}

fn decode_one(protocol: HubProtocol, mut bytes: BytesMut) -> HubMessage {
    let message = protocol.parse_message(&mut bytes, None).unwrap().unwrap();
    assert!(bytes.is_empty());
    message
}

fn check_framing(protocol: HubProtocol, bytes: &[u8]) {
    match protocol {
        // Exactly one separator, at the end: strings with U+001E are escaped.
        HubProtocol::Json => {
            assert_eq!(bytes.iter().filter(|&&b| b == 0x1e).count(), 1);
            assert_eq!(bytes.last(), Some(&0x1e));
        }
        // The prefix announces the rest.
        HubProtocol::MessagePack => {
            let (length, prefix) = read_varint(bytes).unwrap().unwrap();
            assert_eq!(prefix + length, bytes.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn json_round_trip(original in message()) {
        let bytes = encode(HubProtocol::Json, &original);
        check_framing(HubProtocol::Json, &bytes);
        let decoded = decode_one(HubProtocol::Json, bytes);
        assert_same(&original, &decoded, false);
    }

    #[test]
    fn msgpack_round_trip(original in message()) {
        let bytes = encode(HubProtocol::MessagePack, &original);
        check_framing(HubProtocol::MessagePack, &bytes);
        let decoded = decode_one(HubProtocol::MessagePack, bytes);
        assert_same(&original, &decoded, true);
    }

    #[test]
    fn streams_of_messages_round_trip(
        originals in proptest::collection::vec(message(), 0..8),
    ) {
        for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
            let mut buf = BytesMut::new();
            for m in &originals {
                protocol.write_message(m, &mut buf).unwrap();
            }
            for original in &originals {
                let decoded = protocol.parse_message(&mut buf, None).unwrap().unwrap();
                assert_same(original, &decoded, protocol == HubProtocol::MessagePack);
            }
            prop_assert!(protocol.parse_message(&mut buf, None).unwrap().is_none());
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn json_decoded_written_as_msgpack(original in message()) {
        // JSON payloads (raw JSON text) are transcoded to MessagePack.
        let from_json = decode_one(HubProtocol::Json, encode(HubProtocol::Json, &original));
        let bytes = encode(HubProtocol::MessagePack, &from_json);
        check_framing(HubProtocol::MessagePack, &bytes);
        let decoded = decode_one(HubProtocol::MessagePack, bytes);
        assert_same(&original, &decoded, true);
        // And back to JSON once more.
        let again = decode_one(HubProtocol::Json, encode(HubProtocol::Json, &decoded));
        assert_same(&original, &again, true);
    }

    #[test]
    fn msgpack_decoded_written_as_json(original in message()) {
        // MessagePack payloads (raw MessagePack bytes) are transcoded to JSON.
        let from_msgpack =
            decode_one(HubProtocol::MessagePack, encode(HubProtocol::MessagePack, &original));
        let bytes = encode(HubProtocol::Json, &from_msgpack);
        check_framing(HubProtocol::Json, &bytes);
        let decoded = decode_one(HubProtocol::Json, bytes);
        assert_same(&original, &decoded, true);
        let again =
            decode_one(HubProtocol::MessagePack, encode(HubProtocol::MessagePack, &decoded));
        assert_same(&original, &again, true);
    }

    #[test]
    fn payload_values_survive_both_protocols(v in json_value()) {
        // The payload alone, as a completion result, through every protocol path.
        let original = HubMessage::Completion(Completion::with_result("1", Payload::from_value(v.clone())));
        for first in [HubProtocol::Json, HubProtocol::MessagePack] {
            for second in [HubProtocol::Json, HubProtocol::MessagePack] {
                let once = decode_one(first, encode(first, &original));
                let twice = decode_one(second, encode(second, &once));
                let HubMessage::Completion(Completion { result: CompletionResult::Value(p), .. }) = twice else {
                    panic!("expected a completion with a result");
                };
                prop_assert_eq!(value(&p), v.clone(), "{:?} then {:?}", first, second);
            }
        }
    }
}

#[test]
fn empty_invocation_id_is_kept_by_json_and_dropped_by_msgpack() {
    let original = HubMessage::Invocation(Invocation {
        invocation_id: Some(String::new()),
        target: "T".into(),
        ..Default::default()
    });
    let HubMessage::Invocation(json) =
        decode_one(HubProtocol::Json, encode(HubProtocol::Json, &original))
    else {
        panic!("expected an invocation");
    };
    assert_eq!(json.invocation_id.as_deref(), Some(""));
    let HubMessage::Invocation(msgpack) = decode_one(
        HubProtocol::MessagePack,
        encode(HubProtocol::MessagePack, &original),
    ) else {
        panic!("expected an invocation");
    };
    assert_eq!(msgpack.invocation_id, None);
}

#[test]
fn special_payload_values_transcode() {
    // Edge values that often break transcoders.
    for v in [
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(-1),
        serde_json::json!(0.1),
        serde_json::json!(-0.0),
        serde_json::json!(1e300),
        serde_json::json!(5e-324),
        serde_json::json!(""),
        serde_json::json!("\u{1e}\u{0}\"\\\u{10FFFF}"),
        serde_json::json!({"": {"": []}}),
        serde_json::json!([[], {}, [null]]),
    ] {
        let original = HubMessage::StreamItem(StreamItem {
            headers: Headers::new(),
            invocation_id: "1".into(),
            item: Payload::from_value(v.clone()),
        });
        for (first, second) in [
            (HubProtocol::Json, HubProtocol::MessagePack),
            (HubProtocol::MessagePack, HubProtocol::Json),
        ] {
            let once = decode_one(first, encode(first, &original));
            let twice = decode_one(second, encode(second, &once));
            let HubMessage::StreamItem(item) = twice else {
                panic!("expected a stream item");
            };
            assert_eq!(value(&item.item), v, "{first:?} then {second:?}");
        }
    }
}
