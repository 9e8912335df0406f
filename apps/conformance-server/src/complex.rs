//! The typed objects of the test hub, with the wire shapes the ASP.NET Core functional-test server
//! gives them: PascalCase property names in both protocols (the test server turns JSON camel-casing
//! off), `byte[]` as base64 text in JSON and as `bin` in MessagePack, `DateTime` as ISO 8601 text in
//! JSON and as the MessagePack timestamp extension (type -1), `Guid` as text in both.
//!
//! The protocol is told apart with serde's `is_human_readable`: `serde_json` is human readable,
//! `rmp_serde` is not.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// `CustomObject` of `SendCustomObject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomObject {
    /// `Name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `Value`.
    #[serde(default)]
    pub value: i32,
}

/// `ComplexObject` of `EchoComplexObject` and `SendComplexObject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComplexObject {
    /// `String`.
    #[serde(default)]
    pub string: Option<String>,
    /// `IntArray`.
    #[serde(default)]
    pub int_array: Option<Vec<i32>>,
    /// `ByteArray`.
    #[serde(default)]
    pub byte_array: Option<ByteArray>,
    /// `Guid`.
    pub guid: Guid,
    /// `DateTime`.
    pub date_time: DateTime,
}

impl ComplexObject {
    /// The object `SendComplexObject` returns.
    pub fn sample() -> Self {
        ComplexObject {
            string: Some("hello world".to_owned()),
            int_array: Some(vec![1, 2, 3]),
            byte_array: Some(ByteArray(vec![1, 2, 3])),
            guid: Guid("00010203-0405-0607-0706-050403020100".to_owned()),
            // 2000-01-01T00:00:00Z
            date_time: DateTime {
                seconds: 946_684_800,
                nanos: 0,
            },
        }
    }
}

/// A `byte[]`: base64 text in JSON, `bin` in MessagePack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteArray(pub Vec<u8>);

impl Serialize for ByteArray {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&BASE64.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteArray {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BytesVisitor).map(ByteArray)
    }
}

/// Reads bytes from `bin`, from base64 text, or from an array of numbers.
struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("binary data, base64 text or an array of bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        BASE64.decode(v).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

/// A `Guid`: text in the "D" format (`00010203-0405-0607-0706-050403020100`), lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guid(pub String);

impl Guid {
    fn parse(text: &str) -> Option<Guid> {
        let text = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        let groups: Vec<&str> = text.split('-').collect();
        let lengths = [8, 4, 4, 4, 12];
        let valid = groups.len() == lengths.len()
            && groups
                .iter()
                .zip(lengths)
                .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
        valid.then(|| Guid(text.to_ascii_lowercase()))
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Guid::parse(&text).ok_or_else(|| de::Error::custom(format!("not a GUID: {text}")))
    }
}

/// A UTC `DateTime`: `2000-01-01T00:00:00Z` in JSON, the timestamp extension (type -1) in
/// MessagePack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

/// The MessagePack extension type of timestamps.
const TIMESTAMP_EXT: i8 = -1;
/// The newtype name `rmp_serde` reads and writes MessagePack extensions through.
const RMP_EXT_STRUCT: &str = "_ExtStruct";

impl DateTime {
    /// Formats as .NET does a UTC `DateTime`: fraction digits only when needed (up to 7).
    fn to_iso8601(self) -> String {
        let days = self.seconds.div_euclid(86_400);
        let secs = self.seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let mut text = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        );
        if self.nanos != 0 {
            let fraction = format!("{:07}", self.nanos / 100);
            text.push('.');
            text.push_str(fraction.trim_end_matches('0'));
        }
        text.push('Z');
        text
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fffffff][Z|±HH:MM]` (no offset = UTC).
    fn parse_iso8601(text: &str) -> Option<DateTime> {
        let (date, time) = text.split_once(['T', ' '])?;
        let mut date_parts = date.splitn(3, '-');
        let year: i64 = date_parts.next()?.parse().ok()?;
        let month: u32 = date_parts.next()?.parse().ok()?;
        let day: u32 = date_parts.next()?.parse().ok()?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return None;
        }
        let (clock, offset_seconds) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else if let Some(index) = time.rfind(['+', '-']) {
            let (clock, offset) = time.split_at(index);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = offset[1..].split_once(':')?;
            let hours: i64 = hours.parse().ok()?;
            let minutes: i64 = minutes.parse().ok()?;
            (clock, sign * (hours * 3600 + minutes * 60))
        } else {
            (time, 0)
        };
        let (hms, fraction) = match clock.split_once('.') {
            Some((hms, fraction)) => (hms, Some(fraction)),
            None => (clock, None),
        };
        let mut hms_parts = hms.splitn(3, ':');
        let hour: i64 = hms_parts.next()?.parse().ok()?;
        let minute: i64 = hms_parts.next()?.parse().ok()?;
        let second: i64 = hms_parts.next().unwrap_or("0").parse().ok()?;
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let nanos = match fraction {
            Some(digits) if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) => {
                let digits = &digits[..digits.len().min(9)];
                let value: u32 = digits.parse().ok()?;
                value * 10u32.pow(9 - u32::try_from(digits.len()).ok()?)
            }
            Some(_) => return None,
            None => 0,
        };
        let seconds =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
                - offset_seconds;
        Some(DateTime { seconds, nanos })
    }

    /// The timestamp extension's data: 32-bit, 64-bit or 96-bit form, the smallest that fits.
    fn to_timestamp_ext(self) -> Vec<u8> {
        match u32::try_from(self.seconds) {
            Ok(seconds) if self.nanos == 0 => seconds.to_be_bytes().to_vec(),
            _ if (0..1 << 34).contains(&self.seconds) => {
                let seconds = u64::try_from(self.seconds).unwrap_or_default();
                ((u64::from(self.nanos) << 34) | seconds)
                    .to_be_bytes()
                    .to_vec()
            }
            _ => {
                let mut data = self.nanos.to_be_bytes().to_vec();
                data.extend_from_slice(&self.seconds.to_be_bytes());
                data
            }
        }
    }

    fn from_timestamp_ext(data: &[u8]) -> Option<DateTime> {
        match data.len() {
            4 => Some(DateTime {
                seconds: i64::from(u32::from_be_bytes(data.try_into().ok()?)),
                nanos: 0,
            }),
            8 => {
                let value = u64::from_be_bytes(data.try_into().ok()?);
                Some(DateTime {
                    seconds: i64::try_from(value & ((1 << 34) - 1)).ok()?,
                    nanos: u32::try_from(value >> 34).ok()?,
                })
            }
            12 => Some(DateTime {
                nanos: u32::from_be_bytes(data[..4].try_into().ok()?),
                seconds: i64::from_be_bytes(data[4..].try_into().ok()?),
            }),
            _ => None,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Bytes written with `serialize_bytes` (the data of a MessagePack extension).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// The data of a MessagePack extension read through `rmp_serde`.
struct ExtData(Vec<u8>);

impl<'de> Deserialize<'de> for ExtData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BytesVisitor).map(ExtData)
    }
}

impl Serialize for DateTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_iso8601())
        } else {
            let data = self.to_timestamp_ext();
            serializer.serialize_newtype_struct(RMP_EXT_STRUCT, &(TIMESTAMP_EXT, RawBytes(&data)))
        }
    }
}

impl<'de> Deserialize<'de> for DateTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DateTimeVisitor)
    }
}

struct DateTimeVisitor;

impl<'de> Visitor<'de> for DateTimeVisitor {
    type Value = DateTime;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ISO 8601 date and time or a MessagePack timestamp")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        DateTime::parse_iso8601(v).ok_or_else(|| E::custom(format!("not a date and time: {v}")))
    }

    /// `rmp_serde` hands a MessagePack extension over as a newtype holding `(type, data)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        let (kind, ExtData(data)) = <(i8, ExtData)>::deserialize(deserializer)?;
        if kind != TIMESTAMP_EXT {
            return Err(de::Error::custom(format!(
                "MessagePack extension type {kind} is not a timestamp"
            )));
        }
        DateTime::from_timestamp_ext(&data)
            .ok_or_else(|| de::Error::custom("malformed MessagePack timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_round_trips() {
        for (text, seconds) in [
            ("2000-01-01T00:00:00Z", 946_684_800),
            ("2002-04-01T10:20:15Z", 1_017_656_415),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59Z", -1),
        ] {
            let parsed = DateTime::parse_iso8601(text).expect(text);
            assert_eq!(parsed.seconds, seconds, "{text}");
            assert_eq!(parsed.to_iso8601(), text);
        }
        let with_offset = DateTime::parse_iso8601("2002-04-01T12:20:15.5+02:00").expect("offset");
        assert_eq!(with_offset.to_iso8601(), "2002-04-01T10:20:15.5Z");
    }

    #[test]
    fn timestamps_round_trip() {
        for value in [
            DateTime {
                seconds: 946_684_800,
                nanos: 0,
            },
            DateTime {
                seconds: 946_684_800,
                nanos: 123_000_000,
            },
            DateTime {
                seconds: -5,
                nanos: 7,
            },
        ] {
            assert_eq!(
                DateTime::from_timestamp_ext(&value.to_timestamp_ext()),
                Some(value)
            );
        }
    }

    #[test]
    fn guids_are_validated() {
        assert!(Guid::parse("00010203-0405-0607-0706-050403020100").is_some());
        assert_eq!(
            Guid::parse("{ABCDEF03-0405-0607-0706-050403020100}").map(|g| g.0),
            Some("abcdef03-0405-0607-0706-050403020100".to_owned())
        );
        assert!(Guid::parse("not-a-guid").is_none());
    }

    #[test]
    fn complex_object_json_shape() {
        let json = serde_json::to_value(ComplexObject::sample()).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "String": "hello world",
                "IntArray": [1, 2, 3],
                "ByteArray": "AQID",
                "Guid": "00010203-0405-0607-0706-050403020100",
                "DateTime": "2000-01-01T00:00:00Z",
            })
        );
        let back: ComplexObject = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, ComplexObject::sample());
    }

    #[test]
    fn complex_object_messagepack_shape() {
        let mut bytes = Vec::new();
        let mut serializer = rmp_serde::Serializer::new(&mut bytes).with_struct_map();
        ComplexObject::sample()
            .serialize(&mut serializer)
            .expect("serialize");
        // ByteArray as bin 8 of 3 bytes, DateTime as fixext 4 of type -1.
        assert!(bytes.windows(5).any(|w| w == [0xc4, 3, 1, 2, 3]));
        let timestamp = 946_684_800u32.to_be_bytes();
        assert!(
            bytes
                .windows(6)
                .any(|w| w[..2] == [0xd6, 0xff] && w[2..] == timestamp)
        );
        let back: ComplexObject = rmp_serde::from_slice(&bytes).expect("deserialize");
        assert_eq!(back, ComplexObject::sample());
    }
}
