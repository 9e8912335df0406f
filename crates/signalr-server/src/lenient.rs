//! Lenient argument binding for classic SignalR 2.x callers.
//!
//! A SignalR 2.4 server binds hub-method arguments with JSON.NET, which converts between JSON
//! scalars where ASP.NET Core's System.Text.Json (and serde) refuse: `Add("1", "2")` is 3, a
//! number passed for a string parameter becomes its text, property names match ignoring case.
//! jQuery pages send form values as strings and rely on this, so classic callers get the same
//! conversions here; ASP.NET Core callers keep strict serde binding.
//!
//! [`Lenient`] is a serde [`Deserializer`] over a [`serde_json::Value`] that converts when the
//! type being bound asks for a number, a bool or a string, at any depth (sequence elements, map
//! keys and values, struct fields, enum contents, options). What it converts, and what it
//! refuses, is what a SignalR 2.4.1 server (JSON.NET 13) was seen to do; the bool and enum rules
//! follow JSON.NET's reader, as the test hub has no such parameter to check them on:
//!
//! | wanted | accepted besides its own JSON type | refused |
//! |---|---|---|
//! | integers | a string of ASCII digits with an optional sign, blanks around it (`" -12 "`), trailing NULs | a JSON number with a fraction or exponent (even `2.0`), strings `"1.0"`, `"1e2"`, `"1,000"`, `"0x10"`, `""`; bools; out of range |
//! | floats | a string in .NET's `Number` style (`" 1,234.5 "`, `"12.5-"`, `".5"`) or a plain exponent form (`"1e2"`, `"-1.5E+3"`) | `"NaN"`, `"Infinity"`, `"abc"`, `""`, bools, values beyond `f64` |
//! | bool | `"true"` / `"false"` in any case with blanks around; a number (non-zero is `true`) | other strings, `""` |
//! | string, char | a number (its .NET text: `5` → `"5"`, `2e0` → `"2.0"`, `1e20` → `"1E+20"`), a bool (`"true"`) | objects, arrays |
//! | struct | keys that match a field ignoring case (`{"name": …}` for `Name`); the last key for a field wins | a JSON array (serde alone would take one) |
//! | enum | a variant name ignoring case | numbers |
//!
//! `null` binds to `Option` (`None`) and `()` only, as in serde; a missing struct field is an error
//! unless it is an `Option` or has `#[serde(default)]` (JSON.NET would leave the field's default).

use serde::de::DeserializeOwned;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde_json::{Map, Number, Value};
use signalr_protocol::Payload;

type Error = serde_json::Error;

/// Binds a classic caller's argument leniently.
///
/// JSON payloads (what classic clients send) are parsed with `serde_json`, which keeps its nesting
/// limit (128 levels), then bound through [`Lenient`]. A value the server built is bound through
/// its JSON form; a MessagePack payload (never a classic client's) is bound strictly.
///
/// # Errors
/// serde's message when the value does not convert to `T`.
pub(crate) fn from_payload<T: DeserializeOwned>(payload: &Payload) -> Result<T, String> {
    let value = match payload {
        Payload::Json(bytes) => {
            serde_json::from_slice::<Value>(bytes).map_err(|err| err.to_string())?
        }
        Payload::Value(_) => payload
            .deserialize::<Value>()
            .map_err(|err| err.to_string())?,
        Payload::MessagePack(_) => return payload.deserialize::<T>().map_err(|err| err.0),
    };
    from_value(value).map_err(|err| err.to_string())
}

/// Binds `value` to `T` with the classic conversions.
///
/// # Errors
/// serde's error when the value does not convert.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    T::deserialize(Lenient(value))
}

/// A serde deserializer over one JSON value that converts scalars as JSON.NET does (module docs).
pub(crate) struct Lenient(pub(crate) Value);

/// What `value` is, for serde's error messages.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Unexpected::Unsigned(u)
            } else if let Some(i) = n.as_i64() {
                Unexpected::Signed(i)
            } else {
                Unexpected::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

fn invalid_type<'de, V: Visitor<'de>>(value: &Value, visitor: &V) -> Error {
    de::Error::invalid_type(unexpected(value), visitor)
}

/// Hands a JSON number to `visitor` in its own kind (unsigned, signed or float).
fn visit_number<'de, V: Visitor<'de>>(n: &Number, visitor: V) -> Result<V::Value, Error> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

impl Lenient {
    /// Any integer type: JSON integers as they are, strings that parse as .NET integers.
    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0 {
            Value::Number(n) if n.is_u64() || n.is_i64() => visit_number(n, visitor),
            Value::String(s) => match parse_integer(s) {
                Some((false, magnitude)) => match u64::try_from(magnitude) {
                    Ok(u) => visitor.visit_u64(u),
                    Err(_) => visitor.visit_u128(magnitude),
                },
                Some((true, magnitude)) => match 0i128.checked_sub_unsigned(magnitude) {
                    Some(negative) => match i64::try_from(negative) {
                        Ok(i) => visitor.visit_i64(i),
                        Err(_) => visitor.visit_i128(negative),
                    },
                    None => Err(de::Error::invalid_value(Unexpected::Str(s), &visitor)),
                },
                None => Err(de::Error::invalid_value(Unexpected::Str(s), &visitor)),
            },
            other => Err(invalid_type(other, &visitor)),
        }
    }

    /// `f32` and `f64`: JSON numbers, strings that parse as .NET decimals.
    fn float<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0 {
            Value::Number(n) => visit_number(n, visitor),
            Value::String(s) => match parse_decimal(s) {
                Some(f) => visitor.visit_f64(f),
                None => Err(de::Error::invalid_value(Unexpected::Str(s), &visitor)),
            },
            other => Err(invalid_type(other, &visitor)),
        }
    }

    /// Strings and chars: strings, and the text of numbers and bools.
    fn text<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            Value::Number(n) => visitor.visit_string(number_text(&n)),
            Value::Bool(b) => visitor.visit_str(if b { "true" } else { "false" }),
            other => Err(invalid_type(&other, &visitor)),
        }
    }
}

macro_rules! integer_methods {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.integer(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Lenient {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => visit_number(&n, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(map) => visitor.visit_map(Entries::new(map.into_iter().collect())),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0 {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => visitor.visit_bool(n.as_f64().is_some_and(|f| f != 0.0)),
            Value::String(s) => match parse_bool(s) {
                Some(b) => visitor.visit_bool(b),
                None => Err(de::Error::invalid_value(Unexpected::Str(s), &visitor)),
            },
            other => Err(invalid_type(other, &visitor)),
        }
    }

    integer_methods!(
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.float(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.float(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.text(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.text(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.text(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, visitor),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            value => visitor.visit_some(Lenient(value)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name.starts_with("$serde_json::") {
            // serde_json's own types (a `RawValue` parameter) take the value as it is.
            return self.0.deserialize_newtype_struct(name, visitor);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visit_array(items, visitor),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries::new(map.into_iter().collect())),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries::new(match_fields(map, fields))),
            // JSON.NET binds a class from an object only; serde_json would take an array too.
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (variant, content) = match self.0 {
            Value::String(name) => (name, None),
            Value::Object(map) if map.len() == 1 => match map.into_iter().next() {
                Some((name, content)) => (name, Some(content)),
                None => return Err(de::Error::invalid_length(0, &"a map with one key")),
            },
            other => return Err(invalid_type(&other, &visitor)),
        };
        let variant = match closest_name(&variant, variants) {
            Some(declared) => declared.to_owned(),
            None => variant,
        };
        visitor.visit_enum(Variant { variant, content })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        drop(self);
        visitor.visit_unit()
    }
}

/// Visits the elements of an array, each bound leniently; elements left over are an error.
fn visit_array<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let len = items.len();
    let mut seq = Elements(items.into_iter());
    let value = visitor.visit_seq(&mut seq)?;
    if seq.0.len() == 0 {
        Ok(value)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in array"))
    }
}

struct Elements(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Elements {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some(value) => seed.deserialize(Lenient(value)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The entries of an object; keys are bound leniently too (a `HashMap<u32, _>` takes `{"1": …}`).
struct Entries {
    entries: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl Entries {
    fn new(entries: Vec<(String, Value)>) -> Self {
        Entries {
            entries: entries.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(Lenient(Value::String(key))).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Lenient(value)),
            None => Err(de::Error::custom(
                "a map value was asked for before its key",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum variant and its content (`None` for a variant given as a bare string).
struct Variant {
    variant: String,
    content: Option<Value>,
}

impl<'de> EnumAccess<'de> for Variant {
    type Error = Error;
    type Variant = VariantContent;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((variant, VariantContent(self.content)))
    }
}

struct VariantContent(Option<Value>);

impl<'de> VariantAccess<'de> for VariantContent {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            None | Some(Value::Null) => Ok(()),
            Some(other) => Err(de::Error::invalid_type(unexpected(&other), &"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.0 {
            Some(value) => seed.deserialize(Lenient(value)),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Some(Value::Array(items)) => visit_array(items, visitor),
            Some(other) => Err(invalid_type(&other, &visitor)),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Some(Value::Object(map)) => visitor.visit_map(Entries::new(match_fields(map, fields))),
            Some(other) => Err(invalid_type(&other, &visitor)),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"struct variant",
            )),
        }
    }
}

/// Whether two names are equal ignoring case (.NET's ordinal ignore-case comparison, closely
/// enough: per-character lower-casing).
fn same_ignoring_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// The declared name `name` stands for: itself when declared, else the first declared name equal
/// to it ignoring case.
fn closest_name(name: &str, declared: &'static [&'static str]) -> Option<&'static str> {
    declared
        .iter()
        .find(|d| **d == name)
        .or_else(|| declared.iter().find(|d| same_ignoring_case(d, name)))
        .copied()
}

/// Renames the keys of `map` that match a field ignoring case to the field's name. Several keys
/// for one field (`{"name": "x", "Name": "y"}`) leave the last one, as JSON.NET's assignments do;
/// keys that match no field are kept as they are.
fn match_fields(map: Map<String, Value>, fields: &'static [&'static str]) -> Vec<(String, Value)> {
    let mut entries: Vec<(String, Value)> = Vec::with_capacity(map.len());
    // Where each field's entry is in `entries`, once it has one.
    let mut slots: Vec<Option<usize>> = vec![None; fields.len()];
    for (key, value) in map {
        let field = fields
            .iter()
            .position(|f| *f == key)
            .or_else(|| fields.iter().position(|f| same_ignoring_case(f, &key)));
        match field {
            Some(index) => match slots[index] {
                Some(at) => entries[at].1 = value,
                None => {
                    slots[index] = Some(entries.len());
                    entries.push((fields[index].to_owned(), value));
                }
            },
            None => entries.push((key, value)),
        }
    }
    entries
}

/// What .NET's number parsing counts as white space around a number.
fn is_dotnet_white(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r')
}

/// `s` without the NUL characters at its end, which .NET's number parsing ignores.
fn without_trailing_nuls(s: &str) -> &str {
    s.trim_end_matches('\0')
}

/// A string as .NET parses an integer (`NumberStyles.Integer`): blanks, an optional sign, ASCII
/// digits, blanks, then nothing but NULs. Returns (negative, magnitude); `None` when it is no such
/// integer or the magnitude does not fit 128 bits.
fn parse_integer(s: &str) -> Option<(bool, u128)> {
    let s = without_trailing_nuls(s).trim_matches(is_dotnet_white);
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut magnitude: u128 = 0;
    for b in digits.bytes() {
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u128::from(b - b'0'))?;
    }
    Some((negative, magnitude))
}

/// A string as JSON.NET parses a decimal: first in .NET's `NumberStyles.Number` (blanks, a leading
/// or a trailing sign, digits with `,` group separators, a `.` fraction), then, failing that, as
/// a plain JSON-like number with an exponent (`-1.5e3`, no blanks, no `+` in front). `None` when
/// it is neither, or the value is beyond `f64`.
fn parse_decimal(s: &str) -> Option<f64> {
    let value = parse_number_style(s).or_else(|| parse_exponent_form(s))?;
    value.is_finite().then_some(value)
}

fn parse_number_style(s: &str) -> Option<f64> {
    let s = without_trailing_nuls(s).trim_matches(is_dotnet_white);
    let (mut negative, mut body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let leading_sign = body.len() != s.len();
    if !leading_sign {
        if let Some(rest) = body.strip_suffix('-') {
            negative = true;
            body = rest.trim_end_matches(is_dotnet_white);
        } else if let Some(rest) = body.strip_suffix('+') {
            body = rest.trim_end_matches(is_dotnet_white);
        }
    }
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    // The whole part: a digit first, then digits and group separators.
    let whole_ok = match whole.as_bytes().first() {
        None => true,
        Some(first) => {
            first.is_ascii_digit() && whole.bytes().all(|b| b.is_ascii_digit() || b == b',')
        }
    };
    let fraction = fraction.unwrap_or("");
    if !whole_ok || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = whole.chars().filter(|c| *c != ',').collect();
    if digits.is_empty() && fraction.is_empty() {
        return None;
    }
    let text = format!(
        "{}{}.{}",
        if negative { "-" } else { "" },
        if digits.is_empty() { "0" } else { &digits },
        if fraction.is_empty() { "0" } else { fraction }
    );
    text.parse().ok()
}

fn parse_exponent_form(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let whole = digits(i);
    if whole == 0 {
        return None;
    }
    i += whole;
    if bytes.get(i) == Some(&b'.') {
        let fraction = digits(i + 1);
        if fraction == 0 {
            return None;
        }
        i += 1 + fraction;
    }
    let mantissa_end = i;
    if !matches!(bytes.get(i), Some(b'e' | b'E')) {
        return None;
    }
    i += 1;
    let signed = matches!(bytes.get(i), Some(b'+' | b'-'));
    let exponent_start = i;
    i += usize::from(signed);
    let exponent = digits(i);
    // JSON.NET takes a signed exponent without digits (`1e+` is 1), but not a bare `1e`.
    if exponent == 0 && !signed {
        return None;
    }
    i += exponent;
    if i != bytes.len() {
        return None;
    }
    let text = if exponent == 0 {
        s[..mantissa_end].to_owned()
    } else {
        format!("{}e{}", &s[..mantissa_end], &s[exponent_start..])
    };
    text.parse().ok()
}

/// A string as `bool.TryParse` reads it: `true` or `false` in any case, with white space and NULs
/// around it.
fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The text a JSON number has when JSON.NET hands it to a string parameter: integers as they are,
/// floats in .NET's shortest round-trip form with `.0` when they would look integral (`2.0`,
/// `1E+20`, `1.5E-05`).
fn number_text(n: &Number) -> String {
    if let Some(u) = n.as_u64() {
        u.to_string()
    } else if let Some(i) = n.as_i64() {
        i.to_string()
    } else {
        dotnet_double_text(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// `value` as JSON.NET writes a double: .NET's shortest round-trip digits, in scientific notation
/// (`1.5E+17`, `1E-05`, two exponent digits at least) when the decimal point would fall more
/// than 17 digits right or more than 3 zeros left of the first digit, and `.0` appended to an
/// integral fixed-point form.
fn dotnet_double_text(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, as .NET does.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Digits before the decimal point (negative: zeros after it before the first digit).
    let point = exponent + 1;
    let mut out = String::new();
    if value.is_sign_negative() {
        out.push('-');
    }
    if !(-3..=17).contains(&point) {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push_str(&format!(
            "E{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        ));
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let point = point as usize;
        if point >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Every expectation marked "2.4" is what the real SignalR 2.4.1 server (JSON.NET 13.0.3)
    //! answered for the same argument of its TestHub (`Add(int, int)`, `Echo(string)`,
    //! `EchoObject({Name: string, Value: int})`, `UpdateStockPrice({Symbol, Price: decimal})`,
    //! `SendToGroups(string[], string)`).

    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn bind<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
        from_value(value)
    }

    #[track_caller]
    fn binds<T: DeserializeOwned + PartialEq + Debug>(value: Value, expected: T) {
        match bind::<T>(value.clone()) {
            Ok(bound) => assert_eq!(bound, expected, "{value}"),
            Err(err) => panic!("{value} should bind to {expected:?}: {err}"),
        }
    }

    #[track_caller]
    fn refuses<T: DeserializeOwned + Debug>(value: Value) {
        if let Ok(bound) = bind::<T>(value.clone()) {
            panic!("{value} should not bind, got {bound:?}");
        }
    }

    #[test]
    fn strings_bind_to_integers_as_dotnet_parses_them() {
        // 2.4: Add("1","2") = 3, and so on.
        for (text, n) in [
            ("1", 1),
            (" 1 ", 1),
            ("+1", 1),
            ("-1", -1),
            ("\t1\n", 1),
            ("\u{b}1", 1),
            ("1 ", 1),
            ("1\0", 1),
            ("1\0\0", 1),
            ("1 \0", 1),
            ("01", 1),
            ("00000000000000000000001", 1),
            ("-2147483648", i32::MIN),
            ("2147483647", i32::MAX),
        ] {
            binds::<i32>(json!(text), n);
        }
        binds::<i32>(json!(2_147_483_647), i32::MAX);
        binds::<i32>(json!(-5), -5);
    }

    #[test]
    fn integers_refuse_what_dotnet_refuses() {
        // 2.4: "Could not convert string to integer", "Input string '1.5' is not a valid
        // integer", "JSON integer ... is too large or small for an Int32", "Error converting
        // value {null}", "Unexpected character encountered".
        for text in [
            "1.0",
            "1e2",
            "0x10",
            "1,000",
            "",
            " ",
            "\u{661}",
            "\u{a0}1",
            "- 1",
            "\u{0}1",
            "1\0 ",
            "--1",
            "+-1",
            "+",
            "-",
            "1-",
            "(1)",
            "true",
            "abc",
            "2147483648",
            "3000000000",
        ] {
            refuses::<i32>(json!(text));
        }
        for value in [
            json!(null),
            json!(true),
            json!(false),
            json!(1.5),
            json!(-1.0),
            // An integral float is refused too: JSON.NET reads `2.0` (and `2e0`) as a float.
            json!(2.0),
            serde_json::from_str("2e0").expect("json"),
            json!(3_000_000_000u64),
            json!({}),
            json!([1]),
        ] {
            refuses::<i32>(value);
        }
    }

    #[test]
    fn every_integer_type_converts_within_its_range() {
        binds::<u8>(json!("255"), 255);
        refuses::<u8>(json!("256"));
        refuses::<u32>(json!("-1"));
        binds::<i64>(json!("-9223372036854775808"), i64::MIN);
        binds::<u64>(json!("18446744073709551615"), u64::MAX);
        refuses::<u64>(json!("18446744073709551616"));
        binds::<u128>(json!("18446744073709551616"), 1u128 << 64);
        binds::<i128>(json!("-170141183460469231731687303715884105728"), i128::MIN);
        refuses::<i128>(json!("-170141183460469231731687303715884105729"));
        refuses::<u128>(json!("340282366920938463463374607431768211456"));
        binds::<i16>(json!(" -7 "), -7);
        binds::<usize>(json!("12"), 12);
    }

    #[test]
    fn numbers_and_bools_bind_to_strings_with_their_dotnet_text() {
        // 2.4: Echo(x) for each x.
        for (json_text, text) in [
            ("5", "5"),
            ("-5", "-5"),
            ("1.5", "1.5"),
            ("1.50", "1.5"),
            ("2e0", "2.0"),
            ("1e2", "100.0"),
            ("1E+2", "100.0"),
            ("100.0", "100.0"),
            ("1e14", "100000000000000.0"),
            ("1e15", "1000000000000000.0"),
            ("1e16", "10000000000000000.0"),
            ("12345678901234567.0", "12345678901234568.0"),
            ("1234567890123456.0", "1234567890123456.0"),
            ("123456789012345.6", "123456789012345.6"),
            ("1e17", "1E+17"),
            ("1.5e17", "1.5E+17"),
            ("1.0e20", "1E+20"),
            ("99999999999999999999.0", "1E+20"),
            ("1e21", "1E+21"),
            ("123456789012345678", "123456789012345678"),
            ("12345678901234567890", "12345678901234567890"),
            ("0.1", "0.1"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("123456789.123456789", "123456789.12345679"),
            ("0.0001", "0.0001"),
            ("0.00012", "0.00012"),
            ("0.000123", "0.000123"),
            ("0.00001", "1E-05"),
            ("0.000012", "1.2E-05"),
            ("1.5e-5", "1.5E-05"),
            ("1e-7", "1E-07"),
            ("1.25e300", "1.25E+300"),
            ("1.7976931348623157e308", "1.7976931348623157E+308"),
            ("5e-324", "5E-324"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("-1.5e-7", "-1.5E-07"),
            ("true", "true"),
            ("false", "false"),
            ("\"\"", ""),
            ("\" x \"", " x "),
        ] {
            let value: Value = serde_json::from_str(json_text).expect("json");
            binds::<String>(value, text.to_owned());
        }
        binds::<char>(json!(7), '7');
        binds::<Option<String>>(json!(5), Some("5".to_owned()));
        binds::<Option<String>>(json!(null), None);
    }

    #[test]
    fn strings_refuse_objects_and_arrays() {
        // 2.4: "Unexpected character encountered while parsing value: {" (and `[`).
        refuses::<String>(json!({"a": 1}));
        refuses::<String>(json!([]));
        refuses::<String>(json!([1]));
        // 2.4 binds null to a string parameter as null; a Rust `String` has no null.
        refuses::<String>(json!(null));
        refuses::<char>(json!(12));
    }

    #[test]
    fn strings_bind_to_floats_as_dotnet_parses_decimals() {
        // 2.4: UpdateStockPrice({Symbol, Price: x}) returned Price + 1.
        for (text, n) in [
            ("12.5", 12.5),
            (" 12.5 ", 12.5),
            ("+12.5", 12.5),
            ("-12.5", -12.5),
            ("12.5-", -12.5),
            ("5 -", -5.0),
            (" 5- ", -5.0),
            ("5-  ", -5.0),
            ("1,234.5", 1234.5),
            ("1,000.5-", -1000.5),
            ("1,2,3", 123.0),
            ("1,,2", 12.0),
            ("5,", 5.0),
            ("5,5", 55.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("-0", -0.0),
            ("12.5\0", 12.5),
            ("5\0", 5.0),
            ("5 \0", 5.0),
            ("5-\0", -5.0),
            ("1e2", 100.0),
            ("1E2", 100.0),
            ("1E+2", 100.0),
            ("1e02", 100.0),
            ("1.5e3", 1500.0),
            ("1.5E+2", 150.0),
            ("1e-2", 0.01),
            ("1e-02", 0.01),
            ("-1e2", -100.0),
            ("0e0", 0.0),
            // JSON.NET's own exponent reader takes a sign without digits.
            ("1e+", 1.0),
        ] {
            binds::<f64>(json!(text), n);
        }
        binds::<f64>(json!(5), 5.0);
        binds::<f64>(json!(1.5), 1.5);
        binds::<f32>(json!("2.5"), 2.5);
    }

    #[test]
    fn floats_refuse_what_dotnet_refuses() {
        // 2.4: "Could not convert string to decimal", "Error converting value {null} to type
        // 'System.Decimal'", "Unexpected character encountered".
        for text in [
            "abc",
            "",
            " ",
            "NaN",
            "Infinity",
            "-Infinity",
            "(5)",
            "$5",
            "0x5",
            ",5",
            ".",
            "1.2.3",
            "1.5,0",
            "- 5",
            "  -  5",
            "-5-",
            "+5-",
            "--5",
            "\u{0}5",
            "\u{661}",
            " 1e2 ",
            "1e2 ",
            " 1e2",
            "1e2\0",
            "1,000e2",
            "+1e2",
            "1e2-",
            "1.e2",
            ".5e1",
            "1e",
            "e2",
            "1e2.5",
            "1e1000",
        ] {
            refuses::<f64>(json!(text));
        }
        for value in [json!(null), json!(true), json!({}), json!([1])] {
            refuses::<f64>(value);
        }
    }

    #[test]
    fn bools_take_true_false_strings_and_numbers() {
        // JSON.NET's boolean reader (not checked against the TestHub, which has no bool
        // parameter): `bool.TryParse` for strings, non-zero for numbers.
        for (value, b) in [
            (json!("true"), true),
            (json!("False"), false),
            (json!(" TRUE "), true),
            (json!("true\0"), true),
            (json!(1), true),
            (json!(0), false),
            (json!(-3), true),
            (json!(2.5), true),
            (json!(0.0), false),
            (json!(false), false),
        ] {
            binds::<bool>(value, b);
        }
        for value in [
            json!("1"),
            json!("yes"),
            json!(""),
            json!(null),
            json!({}),
            json!([]),
        ] {
            refuses::<bool>(value);
        }
    }

    /// The TestHub's `CustomObject`, with the defaults a .NET class has for missing fields.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct CustomObject {
        name: Option<String>,
        #[serde(default)]
        value: i32,
    }

    fn object(name: Option<&str>, value: i32) -> CustomObject {
        CustomObject {
            name: name.map(str::to_owned),
            value,
        }
    }

    #[test]
    fn struct_fields_match_ignoring_case_and_convert() {
        // 2.4: EchoObject(x).
        binds(json!({"Name": "a", "Value": 1}), object(Some("a"), 1));
        binds(json!({"name": "a", "value": "2"}), object(Some("a"), 2));
        binds(json!({"NAME": 5, "VALUE": 3}), object(Some("5"), 3));
        binds(json!({"nAmE": "q", "vAlUe": "7"}), object(Some("q"), 7));
        binds(json!({"Name": true}), object(Some("true"), 0));
        binds(json!({}), object(None, 0));
        binds(json!({"Value": 1}), object(None, 1));
        binds(json!({"Name": null, "Value": 1}), object(None, 1));
        binds(
            json!({"Name": "a", "Value": 1, "Extra": [1]}),
            object(Some("a"), 1),
        );
        binds(json!({"Na me": "q"}), object(None, 0));
        // Two keys for one field: the last one wins, exact spelling or not.
        binds(
            json!({"name": "x", "Name": "y", "Value": 1}),
            object(Some("y"), 1),
        );
        binds(
            json!({"Name": "y", "name": "x", "Value": 1}),
            object(Some("x"), 1),
        );
        binds::<Option<CustomObject>>(json!(null), None);
    }

    #[test]
    fn structs_refuse_non_objects_and_bad_fields() {
        for value in [
            json!({"Name": {"a": 1}, "Value": 1}),
            json!({"Name": "a", "Value": null}),
            json!({"Name": "a", "Value": "1.5"}),
            json!({"Name": "a", "Value": 1.0}),
            // 2.4: "Cannot deserialize the current JSON array ... into type 'CustomObject'".
            json!(["a", 1]),
            json!("str"),
            json!(5),
            json!(null),
        ] {
            refuses::<CustomObject>(value);
        }
    }

    #[test]
    fn a_struct_whose_name_differs_only_in_case_keeps_exact_matches() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Both {
            a: u8,
            #[serde(rename = "A")]
            upper: u8,
        }
        binds(json!({"A": "2", "a": "1"}), Both { a: 1, upper: 2 });
    }

    #[test]
    fn sequence_elements_convert_but_a_bare_value_is_no_sequence() {
        // 2.4: SendToGroups(x, "m").
        binds(json!(["a", "b"]), vec!["a".to_owned(), "b".to_owned()]);
        binds(
            json!([1, true, null]),
            vec![Some("1".to_owned()), Some("true".to_owned()), None],
        );
        binds(json!(["1", 2, " 3 "]), vec![1u32, 2, 3]);
        for value in [
            json!("a"),
            json!(5),
            json!(null),
            json!({"0": "a"}),
            json!([{"a": 1}]),
            json!([[1]]),
        ] {
            refuses::<Vec<String>>(value);
        }
    }

    #[test]
    fn tuples_maps_and_newtypes_convert_inside() {
        binds(json!(["1", 2]), (1i32, "2".to_owned()));
        refuses::<(i32, String)>(json!([1]));
        refuses::<(i32, String)>(json!([1, "a", 3]));
        binds(
            json!({"1": 5, " 2 ": "6"}),
            BTreeMap::from([(1u32, "5".to_owned()), (2, "6".to_owned())]),
        );
        #[derive(Debug, PartialEq, Deserialize)]
        struct Id(u32);
        binds(json!("7"), Id(7));
        binds(json!(["7", 8]), vec![Id(7), Id(8)]);
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Shape {
        Dot,
        Circle {
            #[serde(rename = "Radius")]
            radius: f64,
        },
        Pair(u8, String),
        Boxed(u16),
    }

    #[test]
    fn enums_match_variant_names_ignoring_case_and_convert_their_contents() {
        binds(json!("Dot"), Shape::Dot);
        binds(json!("dot"), Shape::Dot);
        binds(
            json!({"circle": {"radius": "2.5"}}),
            Shape::Circle { radius: 2.5 },
        );
        binds(json!({"Pair": ["1", 2]}), Shape::Pair(1, "2".to_owned()));
        binds(json!({"BOXED": "9"}), Shape::Boxed(9));
        for value in [
            json!(0),
            json!("Square"),
            json!({"Dot": 1}),
            json!({"Circle": 1}),
            json!({"Dot": null, "Pair": [1, "a"]}),
            json!(["Dot"]),
        ] {
            refuses::<Shape>(value);
        }
    }

    #[test]
    fn untyped_values_pass_unchanged() {
        let value = json!({"a": "1", "b": [1.5, null, true], "c": {"d": -2}});
        binds(value.clone(), value);
        let raw: Box<serde_json::value::RawValue> =
            bind(json!({"a": [1, "2"]})).expect("raw value");
        assert_eq!(raw.get(), r#"{"a":[1,"2"]}"#);
        binds(json!(null), ());
        refuses::<()>(json!(0));
    }

    #[test]
    fn payloads_bind_from_their_json_text() {
        let payload = Payload::Json(bytes::Bytes::from_static(br#"" 41 ""#));
        assert_eq!(from_payload::<u64>(&payload), Ok(41));
        let built = Payload::from_value("12");
        assert_eq!(from_payload::<u8>(&built), Ok(12));
        let broken = Payload::Json(bytes::Bytes::from_static(b"[1,"));
        assert!(from_payload::<Vec<u8>>(&broken).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_by_the_parser_not_the_stack() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let payload = Payload::Json(bytes::Bytes::from(deep));
        assert!(from_payload::<Value>(&payload).is_err());
        // Within serde_json's limit of 128 levels everything binds.
        let nested = format!("{}\"1\"{}", "[".repeat(120), "]".repeat(120));
        let payload = Payload::Json(bytes::Bytes::from(nested));
        assert!(from_payload::<Value>(&payload).is_ok());
    }

    /// Binds many generated values to many types: nothing panics, whatever binds or not.
    #[test]
    fn arbitrary_values_never_panic() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const STRINGS: &[&str] = &[
            "",
            "1",
            "-1",
            " 1,2.5- ",
            "1e+",
            "1e309",
            "true",
            "\0",
            "ǅ",
            "Name",
            "value",
            "x",
            "18446744073709551616",
            "-170141183460469231731687303715884105729",
            "٣",
            ".",
        ];
        fn generate(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            let pick = next() % if depth > 4 { 5 } else { 7 };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(next().is_multiple_of(2)),
                2 => json!(next() as i64),
                3 => json!(f64::from_bits(next()) % 1e6),
                4 => json!(STRINGS[(next() % STRINGS.len() as u64) as usize]),
                5 => Value::Array((0..next() % 4).map(|_| generate(next, depth + 1)).collect()),
                _ => Value::Object(
                    (0..next() % 4)
                        .map(|_| {
                            let key = STRINGS[(next() % STRINGS.len() as u64) as usize].to_owned();
                            (key, generate(next, depth + 1))
                        })
                        .collect(),
                ),
            }
        }
        for _ in 0..3_000 {
            let value = generate(&mut next, 0);
            let _ = bind::<i8>(value.clone());
            let _ = bind::<u128>(value.clone());
            let _ = bind::<f32>(value.clone());
            let _ = bind::<bool>(value.clone());
            let _ = bind::<String>(value.clone());
            let _ = bind::<char>(value.clone());
            let _ = bind::<Vec<Option<i64>>>(value.clone());
            let _ = bind::<BTreeMap<i32, Vec<String>>>(value.clone());
            let _ = bind::<CustomObject>(value.clone());
            let _ = bind::<Shape>(value.clone());
            let _ = bind::<(u8, Option<f64>, String)>(value.clone());
            let _ = bind::<Value>(value);
        }
    }

    #[test]
    fn dotnet_double_text_of_non_finite_values() {
        assert_eq!(dotnet_double_text(f64::NAN), "NaN");
        assert_eq!(dotnet_double_text(f64::INFINITY), "Infinity");
        assert_eq!(dotnet_double_text(f64::NEG_INFINITY), "-Infinity");
    }
}
