//! The MessagePack hub protocol (`"messagepack"`, Binary transfer format; docs/protocol.md, "Binary framing", "MessagePack encoding").
//!
//! Every message is `VarInt(length)` followed by `length` bytes holding one MessagePack array whose
//! first element is the message type (layouts in docs/protocol.md, "MessagePack encoding").

use std::collections::HashMap;
use std::io::Write;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rmp::Marker;

use crate::error::{EncodeError, ProtocolError};
use crate::message::{
    CancelInvocation, Close, Completion, CompletionResult, HubMessage, Invocation, Payload,
    StreamInvocation, StreamItem,
};

const RESULT_ERROR: u64 = 1;
const RESULT_VOID: u64 = 2;
const RESULT_VALUE: u64 = 3;

/// Largest payload a VarInt prefix may announce (2^31 − 1, docs/protocol.md, "Binary framing").
const MAX_LENGTH: u64 = i32::MAX as u64;

/// Reads a VarInt length prefix. `Ok(None)` when more bytes are needed.
/// Returns `(length, prefix_size)`.
///
/// # Errors
/// [`ProtocolError::LengthPrefixTooLarge`] when the prefix is longer than 5 bytes or announces
/// more than 2^31 − 1 bytes.
pub fn read_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
    let mut length: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(5) {
        if i == 4 && byte > 0x07 {
            return Err(ProtocolError::LengthPrefixTooLarge);
        }
        length |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if length > MAX_LENGTH {
                return Err(ProtocolError::LengthPrefixTooLarge);
            }
            return Ok(Some((length as usize, i + 1)));
        }
    }
    // Five bytes with the continuation bit still set would already have failed above.
    Ok(None)
}

/// Appends the VarInt encoding of `length` (docs/protocol.md, "Binary framing"): 1 to 10
/// bytes (at most 5 for a length the protocol accepts), to a `BytesMut`, a `Vec<u8>` or a slice.
pub fn write_varint(out: &mut impl BufMut, mut length: usize) {
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Takes one complete message body out of `buf` (the prefix is consumed and dropped).
pub(crate) fn split_frame(
    buf: &mut BytesMut,
    max_message_size: Option<usize>,
) -> Result<Option<Bytes>, ProtocolError> {
    let Some((length, prefix)) = read_varint(buf)? else {
        return Ok(None);
    };
    if let Some(limit) = max_message_size
        && prefix + length > limit
    {
        return Err(ProtocolError::MessageTooLarge { limit });
    }
    if buf.len() < prefix + length {
        return Ok(None);
    }
    buf.advance(prefix);
    Ok(Some(buf.split_to(length).freeze()))
}

fn malformed(what: impl Into<String>) -> ProtocolError {
    ProtocolError::MessagePack(what.into())
}

/// A cursor over one message body.
struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.frame[self.pos..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let frame: &'a [u8] = self.frame;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= frame.len())
            .ok_or_else(|| malformed("unexpected end of message"))?;
        let slice = &frame[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn marker(&mut self) -> Result<Marker, ProtocolError> {
        Ok(Marker::from_u8(self.take(1)?[0]))
    }

    fn peek_marker(&self) -> Result<Marker, ProtocolError> {
        self.rest()
            .first()
            .map(|&b| Marker::from_u8(b))
            .ok_or_else(|| malformed("unexpected end of message"))
    }

    fn be(&mut self, n: usize) -> Result<u64, ProtocolError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn array_len(&mut self) -> Result<u64, ProtocolError> {
        match self.marker()? {
            Marker::FixArray(n) => Ok(u64::from(n)),
            Marker::Array16 => self.be(2),
            Marker::Array32 => self.be(4),
            other => Err(malformed(format!("expected an array, found {other:?}"))),
        }
    }

    fn map_len(&mut self) -> Result<u64, ProtocolError> {
        match self.marker()? {
            Marker::FixMap(n) => Ok(u64::from(n)),
            Marker::Map16 => self.be(2),
            Marker::Map32 => self.be(4),
            other => Err(malformed(format!("expected a map, found {other:?}"))),
        }
    }

    /// Any integer width; negative values are rejected where a count or kind is expected.
    fn uint(&mut self) -> Result<u64, ProtocolError> {
        let value: i128 = match self.marker()? {
            Marker::FixPos(n) => n.into(),
            Marker::FixNeg(n) => n.into(),
            Marker::U8 => self.be(1)?.into(),
            Marker::U16 => self.be(2)?.into(),
            Marker::U32 => self.be(4)?.into(),
            Marker::U64 => self.be(8)?.into(),
            Marker::I8 => (self.be(1)? as u8 as i8).into(),
            Marker::I16 => (self.be(2)? as u16 as i16).into(),
            Marker::I32 => (self.be(4)? as u32 as i32).into(),
            Marker::I64 => (self.be(8)? as i64).into(),
            other => return Err(malformed(format!("expected an integer, found {other:?}"))),
        };
        u64::try_from(value).map_err(|_| malformed("expected a non-negative integer"))
    }

    fn str_len(&mut self, marker: Marker) -> Result<Option<usize>, ProtocolError> {
        Ok(Some(match marker {
            Marker::FixStr(n) => n.into(),
            Marker::Str8 => self.be(1)? as usize,
            Marker::Str16 => self.be(2)? as usize,
            Marker::Str32 => self.be(4)? as usize,
            _ => return Ok(None),
        }))
    }

    fn string(&mut self) -> Result<String, ProtocolError> {
        let marker = self.marker()?;
        let len = self
            .str_len(marker)?
            .ok_or_else(|| malformed(format!("expected a string, found {marker:?}")))?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("string is not valid UTF-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, ProtocolError> {
        if self.peek_marker()? == Marker::Null {
            self.pos += 1;
            return Ok(None);
        }
        self.string().map(Some)
    }

    fn bool(&mut self) -> Result<bool, ProtocolError> {
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False => Ok(false),
            other => Err(malformed(format!("expected a boolean, found {other:?}"))),
        }
    }

    /// Skips one complete value without recursion and returns it as a payload.
    fn value(&mut self) -> Result<Payload, ProtocolError> {
        let start = self.pos;
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let marker = self.marker()?;
            let skip: u64 = match marker {
                Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null => 0,
                Marker::True | Marker::False => 0,
                Marker::U8 | Marker::I8 => 1,
                Marker::U16 | Marker::I16 => 2,
                Marker::U32 | Marker::I32 | Marker::F32 => 4,
                Marker::U64 | Marker::I64 | Marker::F64 => 8,
                Marker::FixStr(n) => n.into(),
                Marker::Str8 | Marker::Bin8 => self.be(1)?,
                Marker::Str16 | Marker::Bin16 => self.be(2)?,
                Marker::Str32 | Marker::Bin32 => self.be(4)?,
                Marker::FixArray(n) => {
                    pending += u64::from(n);
                    0
                }
                Marker::Array16 => {
                    pending += self.be(2)?;
                    0
                }
                Marker::Array32 => {
                    pending += self.be(4)?;
                    0
                }
                Marker::FixMap(n) => {
                    pending += 2 * u64::from(n);
                    0
                }
                Marker::Map16 => {
                    pending += 2 * self.be(2)?;
                    0
                }
                Marker::Map32 => {
                    pending += 2 * self.be(4)?;
                    0
                }
                Marker::FixExt1 => 2,
                Marker::FixExt2 => 3,
                Marker::FixExt4 => 5,
                Marker::FixExt8 => 9,
                Marker::FixExt16 => 17,
                Marker::Ext8 => self.be(1)? + 1,
                Marker::Ext16 => self.be(2)? + 1,
                Marker::Ext32 => self.be(4)? + 1,
                Marker::Reserved => return Err(malformed("reserved MessagePack marker 0xc1")),
            };
            // Every pending element needs at least one byte, so a huge count fails quickly.
            if pending > (self.frame.len() - self.pos) as u64 {
                return Err(malformed("unexpected end of message"));
            }
            self.take(usize::try_from(skip).map_err(|_| malformed("value too long"))?)?;
        }
        Ok(Payload::MessagePack(self.frame.slice(start..self.pos)))
    }

    fn headers(&mut self) -> Result<HashMap<String, String>, ProtocolError> {
        let count = self.map_len()?;
        if count > self.rest().len() as u64 {
            return Err(malformed("unexpected end of message"));
        }
        let mut headers = HashMap::with_capacity(count as usize);
        for _ in 0..count {
            let key = self.string()?;
            let value = self.string()?;
            headers.insert(key, value);
        }
        Ok(headers)
    }

    fn values(&mut self) -> Result<Vec<Payload>, ProtocolError> {
        let count = self.array_len()?;
        if count > self.rest().len() as u64 {
            return Err(malformed("unexpected end of message"));
        }
        (0..count).map(|_| self.value()).collect()
    }

    fn strings(&mut self) -> Result<Vec<String>, ProtocolError> {
        let count = self.array_len()?;
        if count > self.rest().len() as u64 {
            return Err(malformed("unexpected end of message"));
        }
        (0..count).map(|_| self.string()).collect()
    }
}

fn need(len: u64, min: u64, name: &str) -> Result<(), ProtocolError> {
    if len < min {
        return Err(malformed(format!(
            "{name} message has {len} element(s), expected at least {min}"
        )));
    }
    Ok(())
}

/// Parses one MessagePack message body. `Ok(None)` for an unknown message type.
pub(crate) fn parse_frame(frame: &Bytes) -> Result<Option<HubMessage>, ProtocolError> {
    let mut r = Reader { frame, pos: 0 };
    let len = r.array_len()?;
    need(len, 1, "a")?;
    let kind = r.uint()?;
    let message = match kind {
        1 => {
            need(len, 5, "Invocation")?;
            let headers = r.headers()?;
            let invocation_id = r.opt_string()?.filter(|id| !id.is_empty());
            let target = r.string()?;
            let arguments = r.values()?;
            let stream_ids = if len >= 6 { r.strings()? } else { Vec::new() };
            HubMessage::Invocation(Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            })
        }
        2 => {
            need(len, 4, "StreamItem")?;
            HubMessage::StreamItem(StreamItem {
                headers: r.headers()?,
                invocation_id: r.string()?,
                item: r.value()?,
            })
        }
        3 => {
            need(len, 4, "Completion")?;
            let headers = r.headers()?;
            let invocation_id = r.string()?;
            let result = match r.uint()? {
                RESULT_ERROR => {
                    need(len, 5, "Completion")?;
                    CompletionResult::Error(r.string()?)
                }
                RESULT_VOID => CompletionResult::Void,
                RESULT_VALUE => {
                    need(len, 5, "Completion")?;
                    CompletionResult::Value(r.value()?)
                }
                other => return Err(malformed(format!("invalid result kind {other}"))),
            };
            HubMessage::Completion(Completion {
                headers,
                invocation_id,
                result,
            })
        }
        4 => {
            need(len, 5, "StreamInvocation")?;
            let headers = r.headers()?;
            let invocation_id = r.string()?;
            let target = r.string()?;
            let arguments = r.values()?;
            let stream_ids = if len >= 6 { r.strings()? } else { Vec::new() };
            HubMessage::StreamInvocation(StreamInvocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            })
        }
        5 => {
            need(len, 3, "CancelInvocation")?;
            HubMessage::CancelInvocation(CancelInvocation {
                headers: r.headers()?,
                invocation_id: r.string()?,
            })
        }
        6 => HubMessage::Ping,
        7 => {
            need(len, 2, "Close")?;
            let error = r.opt_string()?;
            let allow_reconnect = if len >= 3 { r.bool()? } else { false };
            HubMessage::Close(Close {
                error,
                allow_reconnect,
            })
        }
        8 => {
            need(len, 2, "Ack")?;
            HubMessage::Ack {
                sequence_id: r.uint()?,
            }
        }
        9 => {
            need(len, 2, "Sequence")?;
            HubMessage::Sequence {
                sequence_id: r.uint()?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(message))
}

fn enc(err: impl std::fmt::Display) -> EncodeError {
    EncodeError::from_display(err)
}

fn write_str(w: &mut impl Write, s: &str) -> Result<(), EncodeError> {
    rmp::encode::write_str(w, s).map_err(enc)
}

fn write_headers(w: &mut impl Write, headers: &HashMap<String, String>) -> Result<(), EncodeError> {
    rmp::encode::write_map_len(w, headers.len() as u32).map_err(enc)?;
    for (key, value) in headers {
        write_str(w, key)?;
        write_str(w, value)?;
    }
    Ok(())
}

pub(crate) fn write_payload(w: &mut impl Write, payload: &Payload) -> Result<(), EncodeError> {
    match payload {
        Payload::MessagePack(bytes) => {
            w.write_all(bytes).map_err(enc)?;
            Ok(())
        }
        Payload::Json(bytes) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let mut ser = rmp_serde::Serializer::new(&mut *w).with_struct_map();
            serde_transcode::transcode(&mut de, &mut ser).map_err(enc)
        }
        Payload::Value(value) => {
            let mut ser = rmp_serde::Serializer::new(&mut *w).with_struct_map();
            erased_serde::serialize(&**value, &mut ser).map_err(enc)
        }
    }
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
    rmp::encode::write_array_len(w, 6).map_err(enc)?;
    rmp::encode::write_uint(w, kind.into()).map_err(enc)?;
    write_headers(w, headers)?;
    match invocation_id {
        Some(id) => write_str(w, id)?,
        None => rmp::encode::write_nil(w).map_err(enc)?,
    }
    write_str(w, target)?;
    rmp::encode::write_array_len(w, arguments.len() as u32).map_err(enc)?;
    for arg in arguments {
        write_payload(w, arg)?;
    }
    rmp::encode::write_array_len(w, stream_ids.len() as u32).map_err(enc)?;
    for id in stream_ids {
        write_str(w, id)?;
    }
    Ok(())
}

fn write_body(message: &HubMessage, w: &mut impl Write) -> Result<(), EncodeError> {
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
            rmp::encode::write_array_len(w, 4).map_err(enc)?;
            rmp::encode::write_uint(w, 2).map_err(enc)?;
            write_headers(w, &m.headers)?;
            write_str(w, &m.invocation_id)?;
            write_payload(w, &m.item)
        }
        HubMessage::Completion(m) => {
            let len = if matches!(m.result, CompletionResult::Void) {
                4
            } else {
                5
            };
            rmp::encode::write_array_len(w, len).map_err(enc)?;
            rmp::encode::write_uint(w, 3).map_err(enc)?;
            write_headers(w, &m.headers)?;
            write_str(w, &m.invocation_id)?;
            match &m.result {
                CompletionResult::Error(error) => {
                    rmp::encode::write_uint(w, RESULT_ERROR).map_err(enc)?;
                    write_str(w, error)
                }
                CompletionResult::Void => {
                    rmp::encode::write_uint(w, RESULT_VOID).map_err(enc)?;
                    Ok(())
                }
                CompletionResult::Value(value) => {
                    rmp::encode::write_uint(w, RESULT_VALUE).map_err(enc)?;
                    write_payload(w, value)
                }
            }
        }
        HubMessage::CancelInvocation(m) => {
            rmp::encode::write_array_len(w, 3).map_err(enc)?;
            rmp::encode::write_uint(w, 5).map_err(enc)?;
            write_headers(w, &m.headers)?;
            write_str(w, &m.invocation_id)
        }
        HubMessage::Ping => {
            rmp::encode::write_array_len(w, 1).map_err(enc)?;
            rmp::encode::write_uint(w, 6).map_err(enc)?;
            Ok(())
        }
        HubMessage::Close(m) => {
            rmp::encode::write_array_len(w, 3).map_err(enc)?;
            rmp::encode::write_uint(w, 7).map_err(enc)?;
            match &m.error {
                Some(error) => write_str(w, error)?,
                None => rmp::encode::write_nil(w).map_err(enc)?,
            }
            rmp::encode::write_bool(w, m.allow_reconnect).map_err(enc)
        }
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            rmp::encode::write_array_len(w, 2).map_err(enc)?;
            rmp::encode::write_uint(w, message.message_type().into()).map_err(enc)?;
            rmp::encode::write_uint(w, *sequence_id).map_err(enc)?;
            Ok(())
        }
    }
}

/// Appends `message` with its VarInt length prefix to `out`. On error `out` is left as it was.
///
/// The body is encoded straight into `out` behind a one-byte prefix (the prefix of every body
/// under 128 bytes); a longer body is moved up by the prefix's extra bytes once it is written.
pub(crate) fn write_message(message: &HubMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u8(0);
    if let Err(err) = write_body(message, &mut crate::Appender(out)) {
        out.truncate(start);
        return Err(err);
    }
    let body_len = out.len() - start - 1;
    if body_len < 0x80 {
        out[start] = body_len as u8;
        return Ok(());
    }
    // On the stack: 10 bytes hold the VarInt of any usize.
    let mut prefix = [0u8; 10];
    let mut free = &mut prefix[..];
    write_varint(&mut free, body_len);
    let prefix_len = 10 - free.len();
    let extra = prefix_len - 1;
    let end = out.len();
    out.resize(end + extra, 0);
    out.copy_within(start + 1..end, start + 1 + extra);
    out[start..start + prefix_len].copy_from_slice(&prefix[..prefix_len]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Invocation;

    fn invocation(text_len: usize) -> HubMessage {
        HubMessage::Invocation(Invocation {
            invocation_id: Some("7".to_owned()),
            target: "Echo".to_owned(),
            arguments: vec![Payload::from_value("x".repeat(text_len))],
            ..Default::default()
        })
    }

    /// Bodies of 1, 2 and 3 prefix bytes, written after bytes already in the buffer, read back
    /// whole: the body written in place is moved up by the longer prefixes.
    #[test]
    fn bodies_of_every_prefix_length_round_trip_after_other_bytes() {
        for text_len in [10, 120, 200, 20_000] {
            let message = invocation(text_len);
            let mut out = BytesMut::from(&b"ab"[..]);
            write_message(&message, &mut out).expect("encodes");
            let mut reference = Vec::new();
            write_body(&message, &mut reference).expect("encodes");
            assert_eq!(&out[..2], b"ab");
            let mut rest = out.split_off(2);
            let (len, prefix) = read_varint(&rest).expect("prefix").expect("complete");
            assert_eq!(len, reference.len(), "text of {text_len}");
            assert_eq!(prefix + len, rest.len());
            assert_eq!(&rest[prefix..], &reference[..]);
            let frame = split_frame(&mut rest, None).expect("frame").expect("whole");
            let parsed = parse_frame(&frame).expect("parses").expect("a message");
            let mut again = Vec::new();
            write_body(&parsed, &mut again).expect("encodes");
            assert_eq!(again, reference);
        }
    }

    /// A value that fails to serialize leaves the buffer as it was.
    #[test]
    fn a_failed_encode_leaves_the_buffer_unchanged() {
        struct Fails;
        impl serde::Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let message = HubMessage::Invocation(Invocation {
            target: "Echo".to_owned(),
            arguments: vec![Payload::from_value(Fails)],
            ..Default::default()
        });
        let mut out = BytesMut::from(&b"ab"[..]);
        assert!(write_message(&message, &mut out).is_err());
        assert_eq!(&out[..], b"ab");
    }
}
