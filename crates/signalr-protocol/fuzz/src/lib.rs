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

pub mod classic;

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::BytesMut;
use signalr_protocol::{
    CompletionResult, HandshakeRequest, HandshakeResponse, Headers, HubMessage, HubProtocol,
    NegotiateRequest, NegotiateResponse, Payload, QueryParam,
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

/// The server's lookup of one query parameter (`id` of transport requests) as the dispatcher
/// does it: `None` when ASP.NET would answer "Connection ID required" (absent, or a single
/// empty value), otherwise the text the connection is looked up by.
pub fn server_lookup<'a>(pairs: &'a [(String, String)], name: &str) -> Option<Cow<'a, str>> {
    let param = QueryParam::find(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), name);
    if param.is_null_or_empty() {
        return None;
    }
    param.value()
}

/// An independent reading of one parameter, for comparison: all values whose lower-cased key is
/// `lower_name`, then ASP.NET's `StringValues` text (non-empty values joined with `,`).
fn expected_text(pairs: &[(String, String)], lower_name: &str) -> (usize, Option<String>) {
    let values: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase() == lower_name)
        .map(|(_, v)| v.as_str())
        .collect();
    let text = (!values.is_empty()).then(|| {
        let kept: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
        kept.join(",")
    });
    (values.len(), text)
}

/// An independent byte-level reading of .NET `int.TryParse` text: `[ws]* [+-]? digit+ [ws]* NUL*`
/// with ASCII white space, in `i32` range.
fn expected_int32(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let white = |c: u8| matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
    let mut i = 0;
    while i < b.len() && white(b[i]) {
        i += 1;
    }
    let mut sign = 1i64;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        sign = if b[i] == b'-' { -1 } else { 1 };
        i += 1;
    }
    let digits_start = i;
    let mut value = 0i64;
    while i < b.len() && b[i].is_ascii_digit() {
        value = (value * 10 + i64::from(b[i] - b'0')).min(1 << 40);
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    while i < b.len() && white(b[i]) {
        i += 1;
    }
    while i < b.len() && b[i] == 0 {
        i += 1;
    }
    let value = sign * value;
    (i == b.len() && i64::from(i32::MIN) <= value && value <= i64::from(i32::MAX)).then_some(value)
}

const NON_INTEGER: &str = "The client requested a non-integer protocol version.";

fn negotiate_from(pairs: &[(String, String)], minimum: u32) -> Result<NegotiateRequest, String> {
    NegotiateRequest::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), minimum)
}

/// Target `negotiate_query`: the query string of `POST {hub}/negotiate` and of the transport
/// requests, as the server reads them.
///
/// Byte 0 is the server's minimum negotiate version (0–255, so minimums above the highest version
/// are explored too); the rest is the raw query string, decoded with `form_urlencoded` like the
/// server's query extractor does. Checks, besides "no panic":
/// * `NegotiateRequest::from_query` gives exactly the outcome of an independent reading of
///   ASP.NET's rules (repeated keys joined with `,`, `int.TryParse` / `bool.TryParse` syntax);
/// * an `Ok` version is at most `MAX_VERSION`, at least the minimum (when the minimum is a
///   version there is), and is the input's version clamped to the maximum;
/// * key case does not matter (upper-casing every key gives the same outcome);
/// * the request's own `query_pairs`, encoded and decoded again, give the same request back;
/// * the server's `id` lookup matches the independent reading too (missing only for an absent or
///   single empty `id`), and ignores key case.
pub fn negotiate_query(data: &[u8]) {
    let Some((&minimum, query)) = data.split_first() else {
        return;
    };
    let minimum = u32::from(minimum);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    let max = NegotiateRequest::MAX_VERSION;

    let outcome = negotiate_from(&pairs, minimum);

    // The same outcome, worked out independently.
    let (_, version_text) = expected_text(&pairs, "negotiateversion");
    let (_, stateful_text) = expected_text(&pairs, "usestatefulreconnect");
    let expected = match version_text.as_deref().map(expected_int32) {
        Some(None) => Err(NON_INTEGER.to_owned()),
        requested => {
            let requested = requested.flatten().unwrap_or(0);
            if requested < i64::from(minimum) {
                Err(format!(
                    "The client requested version '{requested}', but the server does not support this version."
                ))
            } else {
                let stateful = stateful_text.is_some_and(|t| {
                    t.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                        .eq_ignore_ascii_case("true")
                });
                Ok(NegotiateRequest {
                    negotiate_version: requested.min(i64::from(max)) as u32,
                    use_stateful_reconnect: stateful,
                })
            }
        }
    };
    assert_eq!(
        outcome,
        expected,
        "query {:?}",
        String::from_utf8_lossy(query)
    );

    if let Ok(request) = &outcome {
        let version = request.negotiate_version;
        assert!(version <= max, "version {version} above the maximum");
        if minimum <= max {
            assert!(
                version >= minimum,
                "version {version} below the minimum {minimum}"
            );
        }
        // What a client sends for this request reads back as the same request.
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in request.query_pairs() {
            query.append_pair(key, &value);
        }
        let query = query.finish();
        let again: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            negotiate_from(&again, minimum.min(version)).as_ref(),
            Ok(request)
        );
    }

    // Keys match case-insensitively: upper-casing them changes nothing.
    let upper: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect();
    assert_eq!(
        negotiate_from(&upper, minimum),
        outcome,
        "key case changed the outcome"
    );

    // The server's connection lookup by `id`.
    let found = server_lookup(&pairs, "id");
    let (count, text) = expected_text(&pairs, "id");
    let single_empty = count == 1 && text.as_deref() == Some("");
    match &found {
        None => assert!(count == 0 || single_empty, "id {text:?} taken as missing"),
        Some(key) => {
            assert!(count > 0 && !single_empty);
            assert_eq!(Some(key.as_ref()), text.as_deref());
        }
    }
    assert_eq!(
        server_lookup(&upper, "id"),
        found,
        "key case changed the id lookup"
    );
}
