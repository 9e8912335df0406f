//! Incremental decoding (docs/protocol.md, "Framing", "Layers"): partial frames, several messages per frame,
//! the maximum message size (`MaximumReceiveMessageSize`, docs/protocol.md, "Limits") at its exact boundaries, and
//! truncated or garbage input, which must give errors and never panic.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use signalr_protocol::msgpack::write_varint;
use signalr_protocol::{
    CancelInvocation, Close, Completion, HandshakeRequest, HandshakeResponse, HubMessage,
    HubProtocol, Invocation, Payload, ProtocolError, StreamInvocation, StreamItem,
};

const PROTOCOLS: [HubProtocol; 2] = [HubProtocol::Json, HubProtocol::MessagePack];

/// One message of each of the nine types (and the Completion variants), each with at most one
/// header so that re-encoding is byte-for-byte deterministic.
fn all_messages() -> Vec<HubMessage> {
    let mut invocation = Invocation {
        invocation_id: Some("inv-1".into()),
        target: "SendMessage".into(),
        arguments: vec![
            Payload::from_value("bob"),
            Payload::from_value(serde_json::json!({"nested": [1, -2, 3.5, null, {"x": "\u{1e}"}]})),
        ],
        stream_ids: vec!["7".into()],
        ..Default::default()
    };
    invocation
        .headers
        .insert("traceparent".into(), "00-abc".into());
    let mut cancel = CancelInvocation {
        headers: Default::default(),
        invocation_id: "9".into(),
    };
    cancel.headers.insert("k".into(), "v".into());
    vec![
        HubMessage::Invocation(invocation),
        HubMessage::Invocation(Invocation {
            target: "Fire".into(),
            ..Default::default()
        }),
        HubMessage::StreamItem(StreamItem {
            headers: Default::default(),
            invocation_id: "7".into(),
            item: Payload::from_value(vec!["a", "b"]),
        }),
        HubMessage::Completion(Completion::void("7")),
        HubMessage::Completion(Completion::with_result(
            "inv-1",
            Payload::from_value(Option::<i32>::None),
        )),
        HubMessage::Completion(Completion::with_error("inv-1", "boom")),
        HubMessage::StreamInvocation(StreamInvocation {
            invocation_id: "9".into(),
            target: "Counter".into(),
            arguments: vec![
                Payload::from_value(10),
                Payload::from_value("x".repeat(300)),
            ],
            ..Default::default()
        }),
        HubMessage::CancelInvocation(cancel),
        HubMessage::Ping,
        HubMessage::Close(Close {
            error: Some("Connection closed with an error.".into()),
            allow_reconnect: true,
        }),
        HubMessage::Ack {
            sequence_id: u64::MAX,
        },
        HubMessage::Sequence { sequence_id: 1 },
    ]
}

fn encode(protocol: HubProtocol, message: &HubMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    protocol.write_message(message, &mut out).unwrap();
    out.to_vec()
}

/// A message of a type from the future (must be skipped by the decoder).
fn unknown_message(protocol: HubProtocol) -> Vec<u8> {
    match protocol {
        HubProtocol::Json => b"{\"type\":42,\"future\":{\"a\":[1,2]}}\x1e".to_vec(),
        HubProtocol::MessagePack => vec![0x04, 0x93, 0x2A, 0x80, 0xC3],
    }
}

/// All messages encoded back to back, with messages of an unknown type interleaved (those have no
/// entry in `expected`).
struct Stream {
    bytes: Vec<u8>,
    /// (end offset, encoding) for every message that must come out.
    expected: Vec<(usize, Vec<u8>)>,
}

fn stream(protocol: HubProtocol) -> Stream {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for (i, message) in all_messages().iter().enumerate() {
        if i % 4 == 0 {
            bytes.extend(unknown_message(protocol));
        }
        let encoded = encode(protocol, message);
        bytes.extend(&encoded);
        expected.push((bytes.len(), encoded));
    }
    bytes.extend(unknown_message(protocol));
    Stream { bytes, expected }
}

/// Feeds `bytes` split at `splits` (sorted offsets), draining after every piece. Returns the
/// re-encoding of every message with the offset at which it came out.
fn feed(
    protocol: HubProtocol,
    bytes: &[u8],
    splits: &[usize],
    limit: Option<usize>,
) -> Vec<(usize, Vec<u8>)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&bytes.len())) {
        buf.extend_from_slice(&bytes[start..end]);
        start = end;
        while let Some(message) = protocol.parse_message(&mut buf, limit).unwrap() {
            out.push((end, encode(protocol, &message)));
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

#[test]
fn one_byte_at_a_time() {
    for protocol in PROTOCOLS {
        let s = stream(protocol);
        let splits: Vec<usize> = (1..s.bytes.len()).collect();
        let got = feed(protocol, &s.bytes, &splits, None);
        // Every message comes out exactly once, in order, exactly when its last byte arrived.
        assert_eq!(got, s.expected, "{protocol:?}");
    }
}

#[test]
fn whole_stream_in_one_frame() {
    for protocol in PROTOCOLS {
        let s = stream(protocol);
        let got = feed(protocol, &s.bytes, &[], None);
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, e)| e).collect();
        let expected: Vec<Vec<u8>> = s.expected.into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, expected, "{protocol:?}");
    }
}

#[test]
fn several_messages_then_a_partial_one() {
    for protocol in PROTOCOLS {
        let ping = encode(protocol, &HubMessage::Ping);
        let close = encode(protocol, &HubMessage::Close(Close::default()));
        let mut bytes = ping.clone();
        bytes.extend(&ping);
        bytes.extend(&close[..close.len() - 1]);
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..2 {
            assert!(matches!(
                protocol.parse_message(&mut buf, None).unwrap(),
                Some(HubMessage::Ping)
            ));
        }
        // The partial Close stays in the buffer, untouched, until its last byte arrives.
        assert!(protocol.parse_message(&mut buf, None).unwrap().is_none());
        assert_eq!(&buf[..], &close[..close.len() - 1]);
        buf.extend_from_slice(&close[close.len() - 1..]);
        assert!(matches!(
            protocol.parse_message(&mut buf, None).unwrap(),
            Some(HubMessage::Close(_))
        ));
        assert!(buf.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_split_points(
        json in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
        msgpack in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
    ) {
        for (protocol, indices) in [(HubProtocol::Json, json), (HubProtocol::MessagePack, msgpack)] {
            let s = stream(protocol);
            let mut splits: Vec<usize> = indices.iter().map(|i| i.index(s.bytes.len())).collect();
            splits.sort_unstable();
            let got = feed(protocol, &s.bytes, &splits, None);
            // A message comes out at the first split at or after its last byte.
            let expected: Vec<(usize, Vec<u8>)> = s
                .expected
                .iter()
                .map(|(end, e)| {
                    let at = splits.iter().copied().find(|&p| p >= *end).unwrap_or(s.bytes.len());
                    (at, e.clone())
                })
                .collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn random_splits_with_a_size_limit(indices in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24)) {
        // The limit applies per message, wherever the frames are split.
        for protocol in PROTOCOLS {
            let s = stream(protocol);
            let largest = s.expected.iter().map(|(_, e)| e.len()).max().unwrap();
            let mut splits: Vec<usize> = indices.iter().map(|i| i.index(s.bytes.len())).collect();
            splits.sort_unstable();
            let got = feed(protocol, &s.bytes, &splits, Some(largest));
            prop_assert_eq!(got.len(), s.expected.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Maximum message size
// ---------------------------------------------------------------------------------------------

fn too_large(result: Result<Option<HubMessage>, ProtocolError>, limit: usize) -> bool {
    matches!(result, Err(ProtocolError::MessageTooLarge { limit: l }) if l == limit)
}

#[test]
fn json_limit_boundary() {
    // `{"type":6}` + RS: 11 bytes, separator at index 10.
    let ping = b"{\"type\":6}\x1e";
    // Separator at index limit − 1: passes, also with more data behind it.
    let mut buf = BytesMut::from(&ping[..]);
    buf.extend_from_slice(ping);
    assert!(matches!(
        HubProtocol::Json.parse_message(&mut buf, Some(11)).unwrap(),
        Some(HubMessage::Ping)
    ));
    assert!(matches!(
        HubProtocol::Json.parse_message(&mut buf, Some(11)).unwrap(),
        Some(HubMessage::Ping)
    ));
    // Separator at index limit: fails.
    let mut buf = BytesMut::from(&ping[..]);
    assert!(too_large(
        HubProtocol::Json.parse_message(&mut buf, Some(10)),
        10
    ));
    // Before the separator arrived: fails once `limit` bytes are buffered, not before.
    let mut buf = BytesMut::from(&ping[..9]);
    assert!(
        HubProtocol::Json
            .parse_message(&mut buf, Some(10))
            .unwrap()
            .is_none()
    );
    buf.extend_from_slice(&ping[9..10]);
    assert!(too_large(
        HubProtocol::Json.parse_message(&mut buf, Some(10)),
        10
    ));
    // With limit 11 the same 10 bytes wait for the separator.
    let mut buf = BytesMut::from(&ping[..10]);
    assert!(
        HubProtocol::Json
            .parse_message(&mut buf, Some(11))
            .unwrap()
            .is_none()
    );
    buf.extend_from_slice(&ping[10..]);
    assert!(matches!(
        HubProtocol::Json.parse_message(&mut buf, Some(11)).unwrap(),
        Some(HubMessage::Ping)
    ));
}

#[test]
fn limit_boundary_for_every_message() {
    for protocol in PROTOCOLS {
        let next = encode(protocol, &HubMessage::Ping);
        for message in all_messages() {
            let bytes = encode(protocol, &message);
            let size = bytes.len();

            // size == limit passes, even with the next message already buffered.
            let mut buf = BytesMut::from(&bytes[..]);
            buf.extend_from_slice(&next);
            let got = protocol
                .parse_message(&mut buf, Some(size))
                .unwrap()
                .unwrap();
            assert_eq!(encode(protocol, &got), bytes);
            assert_eq!(&buf[..], &next[..]);

            // size == limit + 1 fails, fed whole or byte by byte.
            let mut buf = BytesMut::from(&bytes[..]);
            assert!(
                too_large(protocol.parse_message(&mut buf, Some(size - 1)), size - 1),
                "{protocol:?} {message:?}"
            );

            // Fed byte by byte: the error comes as early as the protocol can know.
            let fails_at = match protocol {
                // Once `limit` bytes are buffered without a separator among them.
                HubProtocol::Json => size - 1,
                // As soon as the length prefix is complete.
                HubProtocol::MessagePack => prefix_len(size),
            };
            let mut buf = BytesMut::new();
            for (i, &b) in bytes.iter().enumerate() {
                buf.put_u8(b);
                let result = protocol.parse_message(&mut buf, Some(size - 1));
                if i + 1 < fails_at {
                    assert!(
                        matches!(result, Ok(None)),
                        "{protocol:?} byte {i}: {result:?}"
                    );
                } else {
                    assert!(too_large(result, size - 1), "{protocol:?} byte {i}");
                    break;
                }
            }
        }
    }
}

/// Length of the VarInt prefix of a MessagePack message of `total` bytes (prefix included).
fn prefix_len(total: usize) -> usize {
    (1..=5)
        .find(|&p| {
            let mut out = BytesMut::new();
            write_varint(&mut out, total - p);
            out.len() == p
        })
        .unwrap()
}

#[test]
fn msgpack_limit_boundary() {
    // A 300-byte body: 2-byte prefix (0xAC 0x02), 302 bytes in all.
    let message = HubMessage::StreamItem(StreamItem {
        headers: Default::default(),
        invocation_id: "1".into(),
        item: Payload::from_value("x".repeat(300 - 8)),
    });
    let bytes = encode(HubProtocol::MessagePack, &message);
    assert_eq!(bytes.len(), 302);
    assert_eq!(&bytes[..2], &[0xAC, 0x02]);

    // prefix + body == limit: passes once complete, waits before.
    let mut buf = BytesMut::from(&bytes[..301]);
    assert!(
        HubProtocol::MessagePack
            .parse_message(&mut buf, Some(302))
            .unwrap()
            .is_none()
    );
    buf.extend_from_slice(&bytes[301..]);
    assert!(
        HubProtocol::MessagePack
            .parse_message(&mut buf, Some(302))
            .unwrap()
            .is_some()
    );

    // limit + 1: the first prefix byte alone is not enough to know; the second is.
    let mut buf = BytesMut::from(&bytes[..1]);
    assert!(
        HubProtocol::MessagePack
            .parse_message(&mut buf, Some(301))
            .unwrap()
            .is_none()
    );
    buf.extend_from_slice(&bytes[1..2]);
    assert!(too_large(
        HubProtocol::MessagePack.parse_message(&mut buf, Some(301)),
        301
    ));
    assert_eq!(
        too_large_text(301),
        "The maximum message size of 301B was exceeded. The message size can be configured in AddHubOptions."
    );
}

fn too_large_text(limit: usize) -> String {
    ProtocolError::MessageTooLarge { limit }.to_string()
}

#[test]
fn handshake_limit_applies_before_the_separator() {
    let mut buf = BytesMut::from(&b"{\"protocol\":\"json\",\"version\":1"[..]);
    assert_eq!(buf.len(), 30);
    assert!(
        HandshakeRequest::parse(&mut buf, Some(31))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        HandshakeRequest::parse(&mut buf, Some(30)),
        Err(ProtocolError::MessageTooLarge { limit: 30 })
    ));
}

// ---------------------------------------------------------------------------------------------
// Truncated and garbage input
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_json_messages_are_errors() {
    for message in all_messages() {
        let bytes = encode(HubProtocol::Json, &message);
        let text = &bytes[..bytes.len() - 1];
        for cut in 0..text.len() {
            let mut frame = text[..cut].to_vec();
            frame.push(0x1e);
            let mut buf = BytesMut::from(&frame[..]);
            let result = HubProtocol::Json.parse_message(&mut buf, None);
            assert!(
                result.is_err(),
                "{:?} → {result:?}",
                String::from_utf8_lossy(&frame)
            );
        }
    }
}

#[test]
fn truncated_msgpack_messages_are_errors() {
    for message in all_messages() {
        let bytes = encode(HubProtocol::MessagePack, &message);
        let prefix = prefix_len(bytes.len());
        let body = &bytes[prefix..];
        for cut in 0..body.len() {
            // A frame whose length prefix is honest about the shorter body.
            let mut buf = BytesMut::new();
            write_varint(&mut buf, cut);
            buf.extend_from_slice(&body[..cut]);
            let result = HubProtocol::MessagePack.parse_message(&mut buf, None);
            assert!(result.is_err(), "{:02x?} → {result:?}", &body[..cut]);
        }
    }
}

#[test]
fn msgpack_huge_counts_fail_fast() {
    let cases: &[&[u8]] = &[
        // Message array of 2^32 − 1 elements.
        &[0xDD, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        // Headers map of 2^32 − 1 entries.
        &[0x96, 0x01, 0xDF, 0xFF, 0xFF, 0xFF, 0xFF],
        // Arguments array of 2^32 − 1 elements.
        &[
            0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0xDD, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        // Stream ids array of 2^32 − 1 elements.
        &[
            0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x90, 0xDD, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        // An argument: str32 / bin32 / ext32 / map32 / array32 announcing 4 GB.
        &[
            0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x91, 0xDB, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        &[
            0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x91, 0xC6, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        &[
            0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x91, 0xC9, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ],
        &[
            0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x91, 0xDF, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        &[
            0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x91, 0xDD, 0xFF, 0xFF, 0xFF, 0xFF,
        ],
        // Target string of 4 GB.
        &[0x96, 0x01, 0x80, 0xC0, 0xDB, 0xFF, 0xFF, 0xFF, 0xFF],
        // Reserved marker 0xC1 as an argument.
        &[0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x91, 0xC1, 0x90],
        // Invalid UTF-8 in the target.
        &[0x96, 0x01, 0x80, 0xC0, 0xA2, 0xC3, 0x28, 0x90, 0x90],
    ];
    for body in cases {
        let mut buf = BytesMut::new();
        write_varint(&mut buf, body.len());
        buf.extend_from_slice(body);
        let result = HubProtocol::MessagePack.parse_message(&mut buf, None);
        assert!(result.is_err(), "{body:02x?} → {result:?}");
    }
}

#[test]
fn deeply_nested_payloads_do_not_overflow_the_stack() {
    // Decoding skips nested values without recursion, so any depth decodes; binding and
    // transcoding recurse and are limited to 128 levels for both protocols (serde_json's limit;
    // the crate sets the same for rmp_serde, whose default of 1024 overflowed a 2 MiB stack in
    // debug builds). Run on a thread with a small (1 MiB) stack to catch unbounded recursion.
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            for depth in [100, 1_000, 100_000] {
                // MessagePack: [1, {}, nil, "m", [[[[...nil...]]]], []]
                let mut body = vec![0x96, 0x01, 0x80, 0xC0, 0xA1, b'm', 0x91];
                body.extend(std::iter::repeat_n(0x91, depth));
                body.extend([0xC0, 0x90]);
                let mut buf = BytesMut::new();
                write_varint(&mut buf, body.len());
                buf.extend_from_slice(&body);
                let message = HubProtocol::MessagePack
                    .parse_message(&mut buf, None)
                    .unwrap()
                    .unwrap();
                let HubMessage::Invocation(call) = &message else {
                    panic!("expected an invocation");
                };
                let shallow = depth <= 100;
                assert_eq!(
                    call.arguments[0].deserialize::<serde_json::Value>().is_ok(),
                    shallow,
                    "MessagePack depth {depth}"
                );
                let mut out = BytesMut::new();
                assert_eq!(
                    HubProtocol::Json.write_message(&message, &mut out).is_ok(),
                    shallow,
                    "MessagePack depth {depth} to JSON"
                );
                let mut out = BytesMut::new();
                HubProtocol::MessagePack
                    .write_message(&message, &mut out)
                    .unwrap();

                // JSON: {"type":1,"target":"m","arguments":[[[[...]]]]}
                let mut text = b"{\"type\":1,\"target\":\"m\",\"arguments\":[".to_vec();
                text.extend(std::iter::repeat_n(b'[', depth));
                text.extend(std::iter::repeat_n(b']', depth));
                text.extend(b"]}\x1e");
                let mut buf = BytesMut::from(&text[..]);
                let message = HubProtocol::Json
                    .parse_message(&mut buf, None)
                    .unwrap()
                    .unwrap();
                let HubMessage::Invocation(call) = &message else {
                    panic!("expected an invocation");
                };
                assert_eq!(
                    call.arguments[0].deserialize::<serde_json::Value>().is_ok(),
                    shallow,
                    "JSON depth {depth}"
                );
                let mut out = BytesMut::new();
                assert_eq!(
                    HubProtocol::MessagePack
                        .write_message(&message, &mut out)
                        .is_ok(),
                    shallow,
                    "JSON depth {depth} to MessagePack"
                );
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn json_garbage_is_an_error() {
    let cases: &[&[u8]] = &[
        b"\x1e",
        b"null\x1e",
        b"{\x1e",
        b"}\x1e",
        b"{\"type\":6\x1e",
        b"{\"type\":6}}\x1e",
        b"{\"type\":1e999}\x1e",
        b"{\"type\":-1.5}\x1e",
        b"{\"type\":1,\"target\":\"\xff\xfe\",\"arguments\":[]}\x1e",
        b"{\"type\":1,\"target\":\"T\",\"arguments\":[\"\xc3\x28\"]}\x1e",
        b"{\"type\":1,\"target\":\"T\",\"arguments\":[\"\x01\"]}\x1e",
        b"{\"type\":1,\"target\":\"T\",\"arguments\":[1,]}\x1e",
    ];
    for frame in cases {
        let mut buf = BytesMut::from(*frame);
        let result = HubProtocol::Json.parse_message(&mut buf, None);
        assert!(
            result.is_err(),
            "{:?} → {result:?}",
            String::from_utf8_lossy(frame)
        );
    }
}

#[test]
fn handshake_garbage_is_an_error() {
    for frame in [
        &b"\x1e"[..],
        b"[]\x1e",
        b"{\"protocol\":\"json\",\"version\":-1}\x1e",
        b"{\"protocol\":\"json\",\"version\":1.5}\x1e",
        b"{\"protocol\":\"json\",\"version\":4294967296}\x1e",
        b"\xff\x1e",
    ] {
        let mut buf = BytesMut::from(frame);
        assert!(
            HandshakeRequest::parse(&mut buf, None).is_err(),
            "{frame:?}"
        );
    }
    for frame in [
        &b"\x1e"[..],
        b"\"x\"\x1e",
        b"{\"error\":1}\x1e",
        b"{\"error\":\"x\"\x1e",
        b"\xff\x1e",
    ] {
        let mut buf = BytesMut::from(frame);
        assert!(HandshakeResponse::parse(&mut buf).is_err(), "{frame:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        limit in proptest::option::of(0usize..400),
    ) {
        for protocol in PROTOCOLS {
            let mut buf = BytesMut::from(&data[..]);
            let mut last = buf.len() + 1;
            loop {
                // Progress: every successful call consumes bytes, so the loop ends.
                prop_assert!(buf.len() < last || buf.is_empty());
                last = buf.len();
                match protocol.parse_message(&mut buf, limit) {
                    Ok(Some(message)) => {
                        let mut out = BytesMut::new();
                        let _ = HubProtocol::Json.write_message(&message, &mut out);
                        let _ = HubProtocol::MessagePack.write_message(&message, &mut out);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let mut buf = BytesMut::from(&data[..]);
        let _ = HandshakeRequest::parse(&mut buf, limit);
        let mut buf = BytesMut::from(&data[..]);
        let _ = HandshakeResponse::parse(&mut buf);
    }

    #[test]
    fn garbage_after_valid_messages_keeps_the_valid_ones(
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        // The messages before the garbage still come out, in order.
        for protocol in PROTOCOLS {
            let s = stream(protocol);
            let mut bytes = s.bytes.clone();
            bytes.extend(&garbage);
            let mut buf = BytesMut::from(&bytes[..]);
            for (_, expected) in &s.expected {
                let message = protocol.parse_message(&mut buf, None).unwrap().unwrap();
                prop_assert_eq!(&encode(protocol, &message), expected);
            }
            // Then an error, nothing, or messages made of the garbage; never a panic.
            while let Ok(Some(_)) = protocol.parse_message(&mut buf, None) {}
        }
    }
}
