//! Stable-toolchain smoke run of the fuzz targets in `fuzz/` (classic ones included): the same target bodies
//! (`fuzz/src/lib.rs`, included here as a module) over a few thousand inputs from proptest, both
//! random bytes and random mutations of valid streams. `cargo fuzz run` (nightly) explores far
//! more; this keeps the bodies compiling and catches shallow bugs in every `cargo test`.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use signalr_protocol::{
    Close, Completion, HubMessage, HubProtocol, Invocation, Payload, StreamInvocation, StreamItem,
};

const CASES: u32 = 2000;

fn sample_messages() -> Vec<HubMessage> {
    let mut with_headers = Invocation {
        invocation_id: Some("1".into()),
        target: "Send".into(),
        arguments: vec![
            Payload::from_value("bob"),
            Payload::from_value(
                serde_json::json!({"a": [1, 2.5, null, true], "b": {"c": "\u{1e}"}}),
            ),
            Payload::from_value(-7),
        ],
        stream_ids: vec!["2".into()],
        ..Default::default()
    };
    with_headers.headers.insert("trace".into(), "x".into());
    vec![
        HubMessage::Ping,
        HubMessage::Invocation(with_headers),
        HubMessage::StreamItem(StreamItem {
            headers: Default::default(),
            invocation_id: "2".into(),
            item: Payload::from_value(vec![1u64, u64::MAX]),
        }),
        HubMessage::Completion(Completion::void("2")),
        HubMessage::StreamInvocation(StreamInvocation {
            invocation_id: "3".into(),
            target: "Counter".into(),
            arguments: vec![Payload::from_value(10), Payload::from_value(500)],
            ..Default::default()
        }),
        HubMessage::Completion(Completion::with_result(
            "1",
            Payload::from_value(Option::<u8>::None),
        )),
        HubMessage::Completion(Completion::with_error("3", "boom")),
        HubMessage::Ack { sequence_id: 36 },
        HubMessage::Sequence {
            sequence_id: 1 << 40,
        },
        HubMessage::Close(Close {
            error: Some("Connection closed with an error.".into()),
            allow_reconnect: true,
        }),
    ]
}

fn encoded(protocol: HubProtocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    for message in sample_messages() {
        protocol
            .write_message(&message, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    out.to_vec()
}

/// Valid inputs per target (without the option bytes of `bodies::split_options`).
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let json = encoded(HubProtocol::Json);
    let msgpack = encoded(HubProtocol::MessagePack);
    let with_handshake = |name: &str, rest: &[u8]| {
        let mut v = format!("{{\"protocol\":\"{name}\",\"version\":1}}\x1e").into_bytes();
        v.extend_from_slice(rest);
        v
    };
    match target {
        "json" => vec![
            json,
            b"{\"type\":99,\"x\":[{}]}\x1e{\"arguments\":[],\"target\":\"T\",\"type\":1}\x1e".to_vec(),
        ],
        "msgpack" => vec![msgpack, vec![0x03, 0x92, 0x63, 0xC0, 0x02, 0x91, 0x06]],
        "handshake_request" => vec![
            with_handshake("json", &json),
            with_handshake("messagepack", &msgpack),
        ],
        "handshake_response" => vec![
            b"{}\x1e{\"type\":6}\x1e".to_vec(),
            b"{\"error\":\"x\"}\x1e".to_vec(),
            b"{\"type\":6}\x1e".to_vec(),
        ],
        "negotiate" => vec![
            b"{\"negotiateVersion\":1,\"connectionId\":\"A\",\"connectionToken\":\"T\",\
              \"availableTransports\":[{\"transport\":\"WebSockets\",\"transferFormats\":[\"Text\",\"Binary\"]}]}"
                .to_vec(),
            b"{\"useStatefulReconnect\":true,\"url\":\"u\",\"accessToken\":\"t\",\"error\":\"e\"}".to_vec(),
        ],
        // Byte 0: the server's minimum version; then a raw query string.
        "negotiate_query" => vec![
            b"\x00negotiateVersion=1".to_vec(),
            b"\x01negotiateVersion=1&useStatefulReconnect=true&id=abc".to_vec(),
            b"\x00NegotiateVersion=%201%00&negotiateVersion=&ID=&id=T".to_vec(),
            b"\x02negotiateVersion=-1&negotiateVersion=5&useStatefulReconnect=%C2%A0TRUE".to_vec(),
        ],
        "classic_invocation" => vec![
            br#"{"H":"chathub","M":"Send","A":["bob","hi"],"I":0}"#.to_vec(),
            br#"{"H":"testhub","M":"GetStateName","A":[],"I":"18","S":{"name":"ann","count":1,"z":[1,2.5e3]}}"#.to_vec(),
            br#"{"h":"testhub","m":"Echo","a":[{"x":null}],"i":1e2,"X":[{}],"s":null}"#.to_vec(),
            br#"{"H":"a","M":"m","I":27,"I":true,"H":"b","S":{"k":"\u00e9\ud83d\ude00","k":" "}}"#.to_vec(),
            // Numbers out of f64's range are valid JSON text (found by libFuzzer in the harness).
            br#"{"H":"h","M":"S","A":[7E867,-1e999],"I":2,"S":{"k":1e999}}"#.to_vec(),
            // A key repeated inside a state value counts once in the state's length (libFuzzer).
            br#"{"H":"h","M":"m","S":{"k":{"n":"long value","n":"x"},"n":[{"a":1,"a":{}}]}}"#.to_vec(),
        ],
        "classic_query" => vec![
            br#"[{"name":"chathub"},{"Name":"otherhub","x":[1]}]"#.to_vec(),
            br#"[{"NAME":"a","name":"b"}]"#.to_vec(),
            b"2.1".to_vec(),
            b" 1.5.0.0\0".to_vec(),
            b"d-5F3A9C01-42".to_vec(),
            b"data=%7B%22H%22%3A1%7D&messageId=d-1-2&groupsToken=a%2Bb&clientProtocol=1.5".to_vec(),
        ],
        other => panic!("unknown target {other}"),
    }
}

/// Option bytes understood by `bodies::split_options`.
fn options() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), 0u16..600, any::<u8>()).prop_map(|(limited, limit, chunk)| {
        let mut v = Vec::new();
        if limited {
            v.push(1);
            v.extend_from_slice(&limit.to_le_bytes());
        } else {
            v.push(0);
        }
        v.push(chunk % 16);
        v
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index, usize),
    Truncate(Index),
    Duplicate(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<Index>(),
            prop_oneof![
                Just(0x1e_u8),
                Just(0x00),
                Just(0xff),
                Just(0xc1),
                Just(b'"'),
                Just(b'{'),
                Just(0x80),
                Just(0xdd),
                any::<u8>()
            ]
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn mutate(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if data.is_empty() {
            break;
        }
        let len = data.len();
        match m {
            Mutation::Flip(i, b) => data[i.index(len)] ^= b,
            Mutation::Set(i, b) => data[i.index(len)] = *b,
            Mutation::Insert(i, b) => data.insert(i.index(len + 1), *b),
            Mutation::Remove(i, n) => {
                let start = i.index(len);
                data.drain(start..(start + n).min(len));
            }
            Mutation::Truncate(i) => data.truncate(i.index(len)),
            Mutation::Duplicate(a, b) => {
                let (mut a, mut b) = (a.index(len), b.index(len));
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                let copy = data[a..b].to_vec();
                data.splice(b..b, copy);
            }
        }
    }
    data
}

/// An input for `target`: option bytes (when the target reads them), then either random bytes or
/// a mutated seed.
fn input(target: &'static str, with_options: bool) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    let mutated = (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..6),
    )
        .prop_map(|(seed, ms)| mutate(seed, &ms));
    let random = proptest::collection::vec(any::<u8>(), 0..200);
    (options(), prop_oneof![1 => random, 3 => mutated]).prop_map(move |(mut opts, body)| {
        if !with_options {
            opts.clear();
        }
        opts.extend(body);
        opts
    })
}

/// A negotiate query built from the pieces that matter: the parameter names in several cases
/// (and near misses), values at the edges of .NET's `int.TryParse` / `bool.TryParse` syntax,
/// percent-encoded or not, repeated keys; byte 0 is the minimum version.
fn negotiate_query_input() -> impl Strategy<Value = Vec<u8>> {
    let key = proptest::sample::select(vec![
        "negotiateVersion",
        "NEGOTIATEVERSION",
        "negotiateversion",
        "negotiateVer%C5%BFion",
        "negotiate%56ersion",
        "useStatefulReconnect",
        "USESTATEFULRECONNECT",
        "id",
        "ID",
        "Id",
        "idx",
        "",
    ]);
    let value = proptest::sample::select(vec![
        "",
        "0",
        "1",
        "2",
        "-1",
        "+1",
        "%2B1",
        "%2B%2B1",
        "-0",
        "01",
        "%201",
        "1%20",
        "%0A1%0D",
        "1%00",
        "1%00%20",
        "%001",
        "2147483647",
        "2147483648",
        "-2147483648",
        "-2147483649",
        "1,1",
        "x",
        "%C2%A01",
        "true",
        "TRUE",
        "%00true%20",
        "%C2%A0true",
        "true,true",
        "T",
        "a%2Bb",
        "%FF",
        "%zz",
    ]);
    let pair = (key, value, any::<bool>()).prop_map(|(k, v, bare)| {
        if bare && v.is_empty() {
            k.to_owned()
        } else {
            format!("{k}={v}")
        }
    });
    (0u8..4, proptest::collection::vec(pair, 0..6)).prop_map(|(minimum, pairs)| {
        let mut v = vec![minimum];
        v.extend_from_slice(pairs.join("&").as_bytes());
        v
    })
}

/// A classic hub invocation built from the pieces that matter: the keys in several cases (and
/// unknown ones), values of every JSON type, repeated keys.
fn classic_invocation_input() -> impl Strategy<Value = Vec<u8>> {
    let key = proptest::sample::select(vec![
        "H", "h", "M", "m", "A", "a", "I", "i", "S", "s", "X", "\\u0048", "",
    ]);
    let value = proptest::sample::select(vec![
        "\"testhub\"",
        "\"Echo\"",
        "\"\"",
        "\"a\\\"b\\u00e9\"",
        "0",
        "-0",
        "1.5e3",
        "12345678901234567890",
        "true",
        "false",
        "null",
        "[]",
        "[1,\"x\",null,{\"k\":[true]}]",
        "[ 1 , 2 ]",
        "{}",
        "{\"name\":\"ann\",\"count\":1}",
        "{\"k\":1,\"k\":2,\"K\":\"\\ud83d\\ude00\"}",
        "{\"a\":{\"b\":[[]]}}",
    ]);
    let pair = (key, value).prop_map(|(k, v)| format!("\"{k}\":{v}"));
    proptest::collection::vec(pair, 0..8).prop_map(|pairs| {
        let mut text = String::from("{\"H\":\"h\",\"M\":\"m\"");
        for pair in pairs {
            text.push(',');
            text.push_str(&pair);
        }
        text.push('}');
        text.into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn classic_invocation(data in prop_oneof![
        1 => input("classic_invocation", false),
        2 => classic_invocation_input(),
    ]) {
        bodies::classic::classic_invocation(&data);
    }

    #[test]
    fn classic_query(data in input("classic_query", false)) {
        bodies::classic::classic_query(&data);
    }

    #[test]
    fn negotiate_query(data in prop_oneof![
        1 => input("negotiate_query", false),
        3 => negotiate_query_input(),
    ]) {
        bodies::negotiate_query(&data);
    }

    #[test]
    fn json_messages(data in input("json", true)) {
        bodies::json_messages(&data);
    }

    #[test]
    fn msgpack_messages(data in input("msgpack", true)) {
        bodies::msgpack_messages(&data);
    }

    #[test]
    fn handshake_request(data in input("handshake_request", true)) {
        bodies::handshake_request(&data);
    }

    #[test]
    fn handshake_response(data in input("handshake_response", false)) {
        bodies::handshake_response(&data);
    }

    #[test]
    fn negotiate(data in input("negotiate", false)) {
        bodies::negotiate(&data);
    }
}

#[test]
fn seeds_decode_cleanly() {
    // The unmutated seeds are valid: every message comes out, no error, with and without chunking.
    for (protocol, seed) in [
        (HubProtocol::Json, &seeds("json")[0]),
        (HubProtocol::MessagePack, &seeds("msgpack")[0]),
    ] {
        for chunk in [0, 1, 3, 7] {
            let (messages, failed) = bodies::decode_stream(protocol, seed, None, chunk);
            assert!(!failed, "{protocol:?} chunk {chunk}");
            assert_eq!(messages.len(), sample_messages().len());
            for message in &messages {
                bodies::reencode(protocol, message);
            }
        }
    }
}

#[test]
fn classic_seeds_are_accepted() {
    // The invocation seeds parse (so the mutations start from valid input), and so do the
    // connectionData seeds.
    for seed in seeds("classic_invocation") {
        signalr_protocol::classic::HubInvocation::parse(&seed)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&seed)));
        bodies::classic::classic_invocation(&seed);
    }
    for seed in &seeds("classic_query")[..2] {
        let text = std::str::from_utf8(seed).expect("UTF-8");
        assert!(
            signalr_protocol::classic::parse_connection_data(text).is_ok(),
            "{text}"
        );
    }
    for seed in seeds("classic_query") {
        bodies::classic::classic_query(&seed);
    }
}
