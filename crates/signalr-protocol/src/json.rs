//! The JSON hub protocol (`"json"`, Text transfer format; docs/protocol.md, "Text framing", "JSON encoding").
//!
//! Every message is one UTF-8 JSON object followed by the record separator `0x1E`. Properties may
//! come in any order; unknown properties are skipped; unknown message types are ignored.

use std::collections::HashMap;
use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::{EncodeError, ProtocolError};
use crate::message::{
    CancelInvocation, Close, Completion, CompletionResult, HubMessage, Invocation, Payload,
    StreamInvocation, StreamItem, msgpack_deserializer,
};

/// The record separator that ends every JSON message and every handshake message.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Takes one complete frame (the bytes before the next record separator) out of `buf`.
///
/// Returns `Ok(None)` when `buf` holds no complete frame yet. `max_message_size` (bytes, counting
/// the separator) is enforced as ASP.NET does: a frame whose separator is not within the first
/// `max_message_size` bytes is an error, even before the rest has arrived.
pub(crate) fn split_frame(
    buf: &mut BytesMut,
    max_message_size: Option<usize>,
) -> Result<Option<Bytes>, ProtocolError> {
    let window = match max_message_size {
        Some(limit) => &buf[..buf.len().min(limit)],
        None => &buf[..],
    };
    match window.iter().position(|&b| b == RECORD_SEPARATOR) {
        Some(pos) => {
            let frame = buf.split_to(pos + 1).freeze();
            Ok(Some(frame.slice(..pos)))
        }
        None => match max_message_size {
            Some(limit) if !buf.is_empty() && buf.len() >= limit => {
                Err(ProtocolError::MessageTooLarge { limit })
            }
            _ => Ok(None),
        },
    }
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(rename = "type")]
    kind: i64,
    #[serde(rename = "invocationId", default)]
    invocation_id: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(borrow, default)]
    arguments: Option<Vec<&'a RawValue>>,
    #[serde(rename = "streamIds", default)]
    stream_ids: Option<Vec<String>>,
    #[serde(default)]
    headers: Option<HashMap<String, String>>,
    #[serde(borrow, default, deserialize_with = "present")]
    item: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<String>,
    #[serde(rename = "allowReconnect", default)]
    allow_reconnect: Option<bool>,
    #[serde(rename = "sequenceId", default)]
    sequence_id: Option<u64>,
}

/// Keeps `null` as a present raw value, so that `"result": null` differs from an absent `result`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn raw_payload(frame: &Bytes, raw: &RawValue) -> Payload {
    let text = raw.get().as_bytes();
    let start = text.as_ptr() as usize - frame.as_ptr() as usize;
    Payload::Json(frame.slice(start..start + text.len()))
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, ProtocolError> {
    value.ok_or_else(|| ProtocolError::Invalid(format!("Missing required property '{name}'.")))
}

/// Fails unless `frame` holds a JSON object: serde would also accept an array for a struct, which
/// ASP.NET does not.
pub(crate) fn expect_object(frame: &[u8]) -> Result<(), ProtocolError> {
    match frame.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ProtocolError::Invalid("Expected a JSON object.".into())),
    }
}

/// Parses one JSON frame (without its record separator). `Ok(None)` for an unknown message type,
/// which is ignored (docs/protocol.md, "Message types").
pub(crate) fn parse_frame(frame: &Bytes) -> Result<Option<HubMessage>, ProtocolError> {
    expect_object(frame)?;
    let wire: WireMessage<'_> = serde_json::from_slice(frame)?;
    let headers = wire.headers.unwrap_or_default();
    let arguments = |args: Option<Vec<&RawValue>>| -> Result<Vec<Payload>, ProtocolError> {
        Ok(required(args, "arguments")?
            .into_iter()
            .map(|raw| raw_payload(frame, raw))
            .collect())
    };
    let message = match wire.kind {
        1 => HubMessage::Invocation(Invocation {
            headers,
            invocation_id: wire.invocation_id,
            target: required(wire.target, "target")?,
            arguments: arguments(wire.arguments)?,
            stream_ids: wire.stream_ids.unwrap_or_default(),
        }),
        2 => HubMessage::StreamItem(StreamItem {
            headers,
            invocation_id: required(wire.invocation_id, "invocationId")?,
            item: raw_payload(frame, required(wire.item, "item")?),
        }),
        3 => {
            let result = match (wire.result, wire.error) {
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::Invalid(
                        "The 'error' and 'result' properties are mutually exclusive.".into(),
                    ));
                }
                (Some(raw), None) => CompletionResult::Value(raw_payload(frame, raw)),
                (None, Some(error)) => CompletionResult::Error(error),
                (None, None) => CompletionResult::Void,
            };
            HubMessage::Completion(Completion {
                headers,
                invocation_id: required(wire.invocation_id, "invocationId")?,
                result,
            })
        }
        4 => HubMessage::StreamInvocation(StreamInvocation {
            headers,
            invocation_id: required(wire.invocation_id, "invocationId")?,
            target: required(wire.target, "target")?,
            arguments: arguments(wire.arguments)?,
            stream_ids: wire.stream_ids.unwrap_or_default(),
        }),
        5 => HubMessage::CancelInvocation(CancelInvocation {
            headers,
            invocation_id: required(wire.invocation_id, "invocationId")?,
        }),
        6 => HubMessage::Ping,
        7 => HubMessage::Close(Close {
            error: wire.error,
            allow_reconnect: wire.allow_reconnect.unwrap_or(false),
        }),
        8 => HubMessage::Ack {
            sequence_id: required(wire.sequence_id, "sequenceId")?,
        },
        9 => HubMessage::Sequence {
            sequence_id: required(wire.sequence_id, "sequenceId")?,
        },
        _ => return Ok(None),
    };
    Ok(Some(message))
}

fn write_json_str(w: &mut impl Write, s: &str) -> Result<(), EncodeError> {
    serde_json::to_writer(w, s).map_err(EncodeError::from_display)
}

pub(crate) fn write_payload(w: &mut impl Write, payload: &Payload) -> Result<(), EncodeError> {
    match payload {
        Payload::Json(bytes) => w.write_all(bytes).map_err(EncodeError::from_display),
        Payload::MessagePack(bytes) => {
            let mut de = msgpack_deserializer(bytes);
            let mut ser = serde_json::Serializer::new(w);
            serde_transcode::transcode(&mut de, &mut ser).map_err(EncodeError::from_display)
        }
        Payload::Value(value) => {
            let mut ser = serde_json::Serializer::new(w);
            erased_serde::serialize(&**value, &mut ser).map_err(EncodeError::from_display)
        }
    }
}

fn write_headers(w: &mut impl Write, headers: &HashMap<String, String>) -> Result<(), EncodeError> {
    if headers.is_empty() {
        return Ok(());
    }
    w.write_all(b",\"headers\":")
        .map_err(EncodeError::from_display)?;
    serde_json::to_writer(w, headers).map_err(EncodeError::from_display)
}

fn write_call(
    w: &mut impl Write,
    kind: u8,
    invocation_id: Option<&str>,
    target: &str,
    arguments: &[Payload],
    stream_ids: &[String],
    headers: &HashMap<String, String>,
) -> Result<(), EncodeError> {
    let io = EncodeError::from_display;
    write!(w, "{{\"type\":{kind}").map_err(io)?;
    write_headers(w, headers)?;
    if let Some(id) = invocation_id {
        w.write_all(b",\"invocationId\":").map_err(io)?;
        write_json_str(w, id)?;
    }
    w.write_all(b",\"target\":").map_err(io)?;
    write_json_str(w, target)?;
    w.write_all(b",\"arguments\":[").map_err(io)?;
    for (i, arg) in arguments.iter().enumerate() {
        if i > 0 {
            w.write_all(b",").map_err(io)?;
        }
        write_payload(w, arg)?;
    }
    w.write_all(b"]").map_err(io)?;
    if !stream_ids.is_empty() {
        w.write_all(b",\"streamIds\":").map_err(io)?;
        serde_json::to_writer(&mut *w, stream_ids).map_err(EncodeError::from_display)?;
    }
    w.write_all(b"}").map_err(io)
}

/// Appends `message` and its record separator to `out`. On error `out` is left as it was.
pub(crate) fn write_message(message: &HubMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
    let start = out.len();
    let result = write_message_inner(message, &mut crate::Appender(out));
    match result {
        Ok(()) => {
            out.put_u8(RECORD_SEPARATOR);
            Ok(())
        }
        Err(err) => {
            out.truncate(start);
            Err(err)
        }
    }
}

fn write_message_inner(message: &HubMessage, w: &mut impl Write) -> Result<(), EncodeError> {
    let io = EncodeError::from_display;
    match message {
        HubMessage::Invocation(m) => write_call(
            w,
            1,
            m.invocation_id.as_deref(),
            &m.target,
            &m.arguments,
            &m.stream_ids,
            &m.headers,
        ),
        HubMessage::StreamInvocation(m) => write_call(
            w,
            4,
            Some(&m.invocation_id),
            &m.target,
            &m.arguments,
            &m.stream_ids,
            &m.headers,
        ),
        HubMessage::StreamItem(m) => {
            w.write_all(b"{\"type\":2").map_err(io)?;
            write_headers(w, &m.headers)?;
            w.write_all(b",\"invocationId\":").map_err(io)?;
            write_json_str(w, &m.invocation_id)?;
            w.write_all(b",\"item\":").map_err(io)?;
            write_payload(w, &m.item)?;
            w.write_all(b"}").map_err(io)
        }
        HubMessage::Completion(m) => {
            w.write_all(b"{\"type\":3").map_err(io)?;
            write_headers(w, &m.headers)?;
            w.write_all(b",\"invocationId\":").map_err(io)?;
            write_json_str(w, &m.invocation_id)?;
            match &m.result {
                CompletionResult::Void => {}
                CompletionResult::Value(value) => {
                    w.write_all(b",\"result\":").map_err(io)?;
                    write_payload(w, value)?;
                }
                CompletionResult::Error(error) => {
                    w.write_all(b",\"error\":").map_err(io)?;
                    write_json_str(w, error)?;
                }
            }
            w.write_all(b"}").map_err(io)
        }
        HubMessage::CancelInvocation(m) => {
            w.write_all(b"{\"type\":5").map_err(io)?;
            write_headers(w, &m.headers)?;
            w.write_all(b",\"invocationId\":").map_err(io)?;
            write_json_str(w, &m.invocation_id)?;
            w.write_all(b"}").map_err(io)
        }
        HubMessage::Ping => w.write_all(b"{\"type\":6}").map_err(io),
        HubMessage::Close(m) => {
            w.write_all(b"{\"type\":7").map_err(io)?;
            if let Some(error) = &m.error {
                w.write_all(b",\"error\":").map_err(io)?;
                write_json_str(w, error)?;
            }
            if m.allow_reconnect {
                w.write_all(b",\"allowReconnect\":true").map_err(io)?;
            }
            w.write_all(b"}").map_err(io)
        }
        HubMessage::Ack { sequence_id } => {
            write!(w, "{{\"type\":8,\"sequenceId\":{sequence_id}}}").map_err(io)
        }
        HubMessage::Sequence { sequence_id } => {
            write!(w, "{{\"type\":9,\"sequenceId\":{sequence_id}}}").map_err(io)
        }
    }
}
