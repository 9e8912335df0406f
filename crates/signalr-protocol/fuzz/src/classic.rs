//! Bodies of the classic SignalR 2.x targets (`signalr_protocol::classic`).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use signalr_protocol::Payload;
use signalr_protocol::classic::{
    self, CallerState, Cursor, Envelope, FormFields, HubInvocation, HubResult, ProtocolVersion,
};

fn payload_text(payload: &Payload) -> String {
    match payload {
        Payload::Json(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => format!("{other:?}"),
    }
}

/// Everything an invocation holds, as comparable text.
pub fn describe_invocation(call: &HubInvocation) -> String {
    let args: Vec<String> = call.arguments.iter().map(payload_text).collect();
    let state: Vec<(&str, String)> = call
        .state
        .iter()
        .map(|(k, v)| (k, payload_text(v)))
        .collect();
    format!(
        "{:?} {:?} {:?} {:?} {:?}",
        call.hub, call.method, args, call.id, state
    )
}

/// A written JSON object's members as raw text. (Not `serde_json::Value`: a received number such
/// as `1e999` is valid JSON text, kept as it is, but out of `Value`'s range.)
fn object(json: &[u8]) -> BTreeMap<String, &RawValue> {
    serde_json::from_slice(json).expect("a written message is a JSON object")
}

/// The UTF-16 length of the state's JSON worked out another way: `serde_json::Value` text counted
/// with `encode_utf16` (the measure under test counts UTF-8 bytes as they are written).
fn expected_state_length(state: &CallerState) -> Option<usize> {
    let mut map = serde_json::Map::new();
    for (key, value) in state.iter() {
        let Payload::Json(bytes) = value else {
            return None;
        };
        map.insert(key.to_owned(), serde_json::from_slice(bytes).ok()?);
    }
    let text = serde_json::to_string(&serde_json::Value::Object(map)).ok()?;
    Some(text.encode_utf16().count())
}

/// Target `classic_invocation`: a hub invocation as a client sends it (a WebSocket message or the
/// `data` field of `/send`). Checks, besides "no panic":
/// * the copying and the zero-copy parse agree;
/// * every argument and state value is one valid JSON value;
/// * the invocation written back parses to the same invocation;
/// * the state's measured length agrees with an independent measure;
/// * every writer fed with what was parsed gives valid JSON echoing the callback id, or leaves
///   its output alone.
pub fn classic_invocation(data: &[u8]) {
    let parsed = HubInvocation::parse(data);
    let shared = HubInvocation::parse_bytes(Bytes::copy_from_slice(data));
    assert_eq!(parsed.is_ok(), shared.is_ok(), "the two parses disagree");
    let (Ok(call), Ok(shared)) = (parsed, shared) else {
        return;
    };
    let description = describe_invocation(&call);
    assert_eq!(describe_invocation(&shared), description);

    for payload in call
        .arguments
        .iter()
        .chain(call.state.iter().map(|(_, v)| v))
    {
        let Payload::Json(bytes) = payload else {
            panic!("a received payload is not JSON text");
        };
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .expect("a payload is one JSON value");
    }

    let mut out = BytesMut::new();
    call.write(&mut out).expect("a parsed invocation writes");
    let again = HubInvocation::parse(&out).expect("a written invocation parses");
    assert_eq!(
        describe_invocation(&again),
        description,
        "write → parse changed it"
    );

    let length = call.state.json_length();
    assert!(length >= 2);
    if let Some(expected) = expected_state_length(&call.state) {
        assert_eq!(length, expected, "state length");
    }

    let first = call.arguments.first().cloned();
    let results = [
        HubResult::Void,
        HubResult::Value(first.clone().unwrap_or_else(|| Payload::from_value(()))),
        HubResult::Error(call.method.clone()),
        HubResult::HubError {
            message: call.hub.clone(),
            data: first.clone(),
        },
    ];
    for result in &results {
        let mut out = BytesMut::new();
        classic::write_hub_result(call.id.as_deref(), &call.state, result, &mut out)
            .expect("received payloads always write");
        let value = object(&out);
        let id: Option<String> =
            serde_json::from_str(value.get("I").expect("a result has I").get()).expect("I");
        assert_eq!(id, call.id);
        assert_eq!(value.contains_key("S"), !call.state.is_empty());
        assert_eq!(
            value.contains_key("E"),
            matches!(result, HubResult::Error(_) | HubResult::HubError { .. })
        );
        if let Some(r) = value.get("R") {
            assert_ne!(r.get(), "null", "a null result is left out");
        }
    }

    let mut item = BytesMut::new();
    classic::write_client_invocation(
        &call.hub,
        &call.method,
        &call.arguments,
        Some(&call.state),
        &mut item,
    )
    .expect("received payloads always write");
    let echoed = HubInvocation::parse(&item).expect("a client invocation has the same shape");
    assert_eq!(echoed.hub, call.hub);
    assert_eq!(echoed.method, call.method);
    assert_eq!(echoed.arguments.len(), call.arguments.len());

    if let (Some(id), Some(arg)) = (&call.id, &first) {
        let mut progress = BytesMut::new();
        classic::write_progress(id, arg, &mut progress).expect("a progress report writes");
        let value = object(&progress);
        let outer: String = serde_json::from_str(value["I"].get()).expect("I");
        assert_eq!(outer, format!("P|{id}"));
        let inner = object(value["P"].get().as_bytes());
        let inner_id: String = serde_json::from_str(inner["I"].get()).expect("P.I");
        assert_eq!(&inner_id, id);
        assert_eq!(inner["D"].get(), payload_text(arg));
    }

    // The envelope nests two levels deeper than the input, beyond what serde_json re-reads, so
    // check its frame only.
    let cursor = Cursor {
        epoch: data.len() as u64,
        seq: 7,
    }
    .to_string();
    let mut frame = BytesMut::new();
    let envelope = Envelope {
        initializing: true,
        groups_token: Some(&call.method),
        ..Envelope::new(&cursor)
    };
    envelope.write(&[item.freeze()], &mut frame);
    assert!(frame.starts_with(format!("{{\"C\":\"{cursor}\",\"S\":1,\"G\":").as_bytes()));
    assert!(frame.ends_with(b"}]}"));
}

/// Target `classic_query`: text a client puts in the query string or a form body, read by every
/// classic parser: `connectionData`, `clientProtocol`, a cursor (`messageId`), and the bytes as a
/// form body. Checks, besides "no panic":
/// * accepted `connectionData` gives non-empty names that read back the same when re-encoded,
///   and agrees with an independent reading through `serde_json::Value` where that reading is
///   unambiguous;
/// * the negotiated version is within 1.2–2.0, and a version's text reads back as itself;
/// * an accepted cursor is exactly the text it writes;
/// * form fields are never empty strings.
pub fn classic_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    match classic::parse_connection_data(&text) {
        Ok(names) => {
            assert!(names.iter().all(|n| !n.is_empty()));
            let encoded: Vec<serde_json::Value> = names
                .iter()
                .map(|n| serde_json::json!({ "name": n }))
                .collect();
            let encoded = serde_json::to_string(&encoded).expect("names encode");
            assert_eq!(
                classic::parse_connection_data(&encoded).expect("re-encoded names parse"),
                names
            );
            if let Some(expected) = expected_hub_names(&text) {
                assert_eq!(Some(names), expected, "connectionData {text:?}");
            }
        }
        Err(_) => {
            if let Some(expected) = expected_hub_names(&text) {
                assert_eq!(expected, None, "connectionData {text:?} refused");
            }
        }
    }

    let version = classic::protocol_version(Some(&text));
    assert!(ProtocolVersion::MIN <= version && version <= ProtocolVersion::MAX);
    if let Some(parsed) = ProtocolVersion::parse(&text) {
        let shown = parsed.to_string();
        assert_eq!(ProtocolVersion::parse(&shown), Some(parsed));
        if (ProtocolVersion::MIN..=ProtocolVersion::MAX).contains(&parsed) {
            assert_eq!(version, parsed);
        }
    }

    if let Ok(cursor) = Cursor::parse(&text) {
        assert_eq!(cursor.to_string(), text);
    }

    let form = FormFields::parse(data);
    for field in [&form.data, &form.message_id, &form.groups_token] {
        assert!(field.as_deref() != Some(""), "an empty form value is None");
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    let joined = classic::query_value(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        "clientProtocol",
    );
    let version = classic::protocol_version(joined.as_deref());
    assert!(ProtocolVersion::MIN <= version && version <= ProtocolVersion::MAX);
}

/// `connectionData` read independently: `Some(Some(names))` when it must be accepted,
/// `Some(None)` when it must be refused, `None` when this reading cannot tell (an object with
/// `name` keys in two spellings: `Value` does not keep their order).
fn expected_hub_names(text: &str) -> Option<Option<Vec<String>>> {
    if text
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Some(Some(Vec::new()));
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Some(None);
    };
    let items = match value {
        serde_json::Value::Null => return Some(Some(Vec::new())),
        serde_json::Value::Array(items) => items,
        _ => return Some(None),
    };
    let mut names = Vec::new();
    for item in items {
        let serde_json::Value::Object(map) = item else {
            return Some(None);
        };
        let mut found = map.iter().filter(|(k, _)| k.eq_ignore_ascii_case("name"));
        let (Some((_, name)), None) = (found.next(), found.next()) else {
            // No name at all is refused; several spellings are ambiguous here.
            return if map.keys().any(|k| k.eq_ignore_ascii_case("name")) {
                None
            } else {
                Some(None)
            };
        };
        match name.as_str() {
            Some(name) if !name.is_empty() => names.push(name.to_owned()),
            _ => return Some(None),
        }
    }
    Some(Some(names))
}
