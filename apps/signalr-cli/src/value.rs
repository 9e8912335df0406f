//! Values the hub sends (results, stream items, arguments of incoming calls) read into
//! `serde_json::Value`, whichever protocol carried them.
//!
//! JSON payloads map one to one. MessagePack has more: binary data becomes a base64 string (what
//! the JSON protocol carries for a .NET `byte[]`), a timestamp extension (type -1, a .NET
//! `DateTime`) an ISO 8601 UTC string, any other extension `[type, "base64"]`, a map key that is
//! not a string its JSON text, and a number JSON cannot hold (NaN, infinities, integers beyond 64
//! bits) a string.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use signalr_hub_client::Payload;

/// Any value, read through `deserialize_any`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyValue(pub Value);

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor).map(AnyValue)
    }
}

/// One received payload as JSON; a payload that cannot be read becomes a string saying so.
pub fn payload_to_json(payload: &Payload) -> Value {
    match payload.deserialize::<AnyValue>() {
        Ok(AnyValue(value)) => value,
        Err(err) => Value::String(format!("<unreadable value: {err}>")),
    }
}

struct AnyVisitor;

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number)
}

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::String(BASE64.encode(v)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    /// `rmp_serde` hands a MessagePack extension over as a newtype holding `(type, data)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        let Extension(kind, data) = Extension::deserialize(deserializer)?;
        if kind == -1
            && let Some(text) = timestamp(&data)
        {
            return Ok(Value::String(text));
        }
        Ok(Value::Array(vec![
            Value::from(kind),
            Value::String(BASE64.encode(&data)),
        ]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(AnyValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some((AnyValue(key), AnyValue(value))) = map.next_entry()? {
            let key = match key {
                Value::String(text) => text,
                other => other.to_string(),
            };
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A MessagePack extension: its type and its data.
struct Extension(i8, Vec<u8>);

impl<'de> Deserialize<'de> for Extension {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExtensionVisitor;
        impl<'de> Visitor<'de> for ExtensionVisitor {
            type Value = Extension;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MessagePack extension (type, data)")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Extension, A::Error> {
                let kind: i8 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let Data(data) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                Ok(Extension(kind, data))
            }
        }
        deserializer.deserialize_tuple(2, ExtensionVisitor)
    }
}

/// The data of an extension: bytes.
struct Data(Vec<u8>);

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor;
        impl<'de> Visitor<'de> for DataVisitor {
            type Value = Data;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Data, E> {
                Ok(Data(v.to_vec()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data, A::Error> {
                let mut bytes = Vec::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Data(bytes))
            }
        }
        deserializer.deserialize_bytes(DataVisitor)
    }
}

/// The MessagePack timestamp extension (4, 8 or 12 bytes) as `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z`.
fn timestamp(data: &[u8]) -> Option<String> {
    let (seconds, nanos): (i64, u32) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let value = u64::from_be_bytes(data.try_into().ok()?);
            ((value & 0x3_ffff_ffff) as i64, (value >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..].try_into().ok()?),
            u32::from_be_bytes(data[..4].try_into().ok()?),
        ),
        _ => return None,
    };
    if nanos >= 1_000_000_000 {
        return None;
    }
    let days = seconds.div_euclid(86_400);
    let time = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        time / 3600,
        time / 60 % 60,
        time % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Some(text)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-written MessagePack, so the test needs no encoder.
    fn msgpack(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn read(bytes: &[u8]) -> Value {
        Payload::MessagePack(bytes.to_vec().into())
            .deserialize::<AnyValue>()
            .expect("decode")
            .0
    }

    #[test]
    fn json_payloads_map_one_to_one() {
        let payload = Payload::Json(r#"{"a":[1,-2,3.5,"x",null,true]}"#.as_bytes().to_vec().into());
        assert_eq!(
            payload_to_json(&payload),
            serde_json::json!({"a": [1, -2, 3.5, "x", null, true]})
        );
    }

    #[test]
    fn messagepack_binary_extensions_and_keys() {
        // bin8 of 3 bytes
        assert_eq!(read(&[0xc4, 3, 1, 2, 3]), Value::String("AQID".into()));
        // fixmap {1: "a"}
        assert_eq!(
            read(&[0x81, 0x01, 0xa1, b'a']),
            serde_json::json!({"1": "a"})
        );
        // fixext4, type -1, 946684800 seconds = 2000-01-01T00:00:00Z
        let seconds = 946_684_800u32.to_be_bytes();
        assert_eq!(
            read(&msgpack(&[&[0xd6, 0xff], &seconds])),
            Value::String("2000-01-01T00:00:00Z".into())
        );
        // fixext8 timestamp with 500 ms
        let value: u64 = (500_000_000u64 << 34) | 946_684_800;
        assert_eq!(
            read(&msgpack(&[&[0xd7, 0xff], &value.to_be_bytes()])),
            Value::String("2000-01-01T00:00:00.5Z".into())
        );
        // fixext1 of another type
        assert_eq!(read(&[0xd4, 0x05, 0x07]), serde_json::json!([5, "Bw=="]));
        // float64 NaN
        let nan = f64::NAN.to_be_bytes();
        assert_eq!(
            read(&msgpack(&[&[0xcb], &nan])),
            Value::String("NaN".into())
        );
    }

    #[test]
    fn dates_before_1970_and_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(timestamp(&(-1i64).to_be_bytes()), None);
        let mut twelve = 0u32.to_be_bytes().to_vec();
        twelve.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(timestamp(&twelve).as_deref(), Some("1969-12-31T23:59:59Z"));
    }
}
