//! Classic ASP.NET SignalR 2.x on the wire (the jQuery `signalr` 2.x client and the .NET
//! `Microsoft.AspNet.SignalR.Client` 2.x), without I/O.
//!
//! Classic SignalR speaks JSON only and has two layers:
//!
//! * the **persistent-connection layer**: every server-to-client transport message is an
//!   [`Envelope`] `{"C":cursor,"M":[...]}` carrying a [`Cursor`] the client echoes back as
//!   `messageId` when it polls or reconnects, plus flags (`S` init, `T` reconnect), a new groups
//!   token `G` and a long-poll delay `L`; keep-alives are `{}` ([`KEEP_ALIVE`]).
//! * the **hub layer**: the client calls hub methods with a [`HubInvocation`]
//!   `{"H":hub,"M":method,"A":[args],"I":id,"S":{state}}`; the server answers with a hub result
//!   ([`write_hub_result`]) and calls client methods with [`write_client_invocation`] (which goes
//!   inside an envelope's `M`), as do progress reports ([`write_progress`]).
//!
//! Negotiate answers a [`NegotiateResponse`]; the protocol version in it comes from
//! [`protocol_version`]. Requests carry the subscribed hubs as `connectionData`
//! ([`parse_connection_data`]) and, in POST bodies, `data`, `messageId` and `groupsToken`
//! ([`FormFields`]).
//!
//! Everything written here is byte for byte what a real SignalR 2.4 server writes (key order,
//! omitted keys, number formats), checked against one. Parsing follows what that server accepts
//! where it matters to real clients (keys in any ASCII case, duplicate keys: the last one wins,
//! callback ids that are numbers), but is strict JSON: the real server's JSON library also takes
//! single quotes, comments and trailing text, which no client sends.
//!
//! ```
//! use bytes::BytesMut;
//! use signalr_protocol::classic::{self, CallerState, Envelope, HubInvocation, HubResult};
//! use signalr_protocol::Payload;
//!
//! let call = HubInvocation::parse(br#"{"H":"chathub","M":"Add","A":[2,3],"I":0}"#).unwrap();
//! let (a, b): (i32, i32) = (call.arguments[0].deserialize().unwrap(), call.arguments[1].deserialize().unwrap());
//!
//! let mut out = BytesMut::new();
//! let result = HubResult::Value(Payload::from_value(a + b));
//! classic::write_hub_result(call.id.as_deref(), &CallerState::new(), &result, &mut out).unwrap();
//! assert_eq!(&out[..], br#"{"R":5,"I":"0"}"#);
//!
//! // A client-method call, encoded once, then wrapped into each connection's envelope.
//! let mut item = BytesMut::new();
//! let args = [Payload::from_value("bob"), Payload::from_value("hi")];
//! classic::write_client_invocation("ChatHub", "addMessage", &args, None, &mut item).unwrap();
//! let item = item.freeze();
//! let mut frame = BytesMut::new();
//! Envelope::new("d-5A2B-7").write(&[item], &mut frame);
//! assert_eq!(
//!     &frame[..],
//!     br#"{"C":"d-5A2B-7","M":[{"H":"ChatHub","M":"addMessage","A":["bob","hi"]}]}"#
//! );
//! ```

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::io::Write;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::{EncodeError, ProtocolError};
use crate::json::write_payload;
use crate::message::Payload;
use crate::query::parse_dotnet_int32;

// ---------------------------------------------------------------------------------------------
// Fixed responses

/// The keep-alive a server sends on an idle connection: an envelope-less empty object (WebSockets
/// frame, SSE `data:` line). Clients accept it without a cursor.
pub const KEEP_ALIVE: &[u8] = b"{}";

/// The body of a successful `/start`, spaces included.
pub const STARTED_RESPONSE: &[u8] = b"{ \"Response\": \"started\" }";

/// The body of `/ping`, spaces included.
pub const PONG_RESPONSE: &[u8] = b"{ \"Response\": \"pong\" }";

/// The longest caller state a hub invocation may carry: 4096 UTF-16 code units of its compact
/// JSON (see [`CallerState::json_length`]). The real server fails the request (HTTP 500 on
/// `/send`) above it.
pub const MAX_STATE_LENGTH: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Protocol version

/// A classic protocol version, a .NET `System.Version`: two to four non-negative components.
///
/// Ordered as .NET orders versions: component by component, a missing third or fourth component
/// below any present one (`2.0` < `2.0.0`). Displayed as .NET prints it, so the negotiate
/// response echoes what the client asked for in the same form (`1.5.0` stays `1.5.0`, `01.5`
/// becomes `1.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProtocolVersion {
    major: u32,
    minor: u32,
    build: Option<u32>,
    revision: Option<u32>,
}

impl ProtocolVersion {
    /// The lowest version a 2.4 server answers: `1.2`, also the answer to a missing or
    /// unreadable `clientProtocol`.
    pub const MIN: Self = Self::new(1, 2);
    /// The highest version a 2.4 server answers: `2.0` (clients 2.4 ask for `2.1`).
    pub const MAX: Self = Self::new(2, 0);

    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        ProtocolVersion {
            major,
            minor,
            build: None,
            revision: None,
        }
    }

    /// The first component.
    pub fn major(self) -> u32 {
        self.major
    }

    /// The second component.
    pub fn minor(self) -> u32 {
        self.minor
    }

    /// Reads version text as .NET's `Version.TryParse` does: two to four components separated by
    /// `.`, each `Int32` text (ASCII white space around it, an optional sign, trailing NUL
    /// characters; see [`parse_dotnet_int32`]) that is not negative. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = [0u32; 4];
        let mut count = 0;
        for part in text.split('.') {
            if count == parts.len() {
                return None;
            }
            let value = parse_dotnet_int32(part)?;
            parts[count] = u32::try_from(value).ok()?;
            count += 1;
        }
        if count < 2 {
            return None;
        }
        Some(ProtocolVersion {
            major: parts[0],
            minor: parts[1],
            build: (count > 2).then_some(parts[2]),
            revision: (count > 3).then_some(parts[3]),
        })
    }

    fn sort_key(self) -> (u32, u32, i64, i64) {
        let opt = |c: Option<u32>| c.map_or(-1, i64::from);
        (self.major, self.minor, opt(self.build), opt(self.revision))
    }
}

impl Ord for ProtocolVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for ProtocolVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(build) = self.build {
            write!(f, ".{build}")?;
        }
        if let Some(revision) = self.revision {
            write!(f, ".{revision}")?;
        }
        Ok(())
    }
}

/// A text that is not a protocol version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a protocol version: {0:?}")]
pub struct VersionError(pub String);

impl FromStr for ProtocolVersion {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProtocolVersion::parse(text).ok_or_else(|| VersionError(text.to_owned()))
    }
}

impl Serialize for ProtocolVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProtocolVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        ProtocolVersion::parse(&text).ok_or_else(|| de::Error::custom(VersionError(text.into())))
    }
}

/// The protocol version a server answers to a client's `clientProtocol` query value: the
/// client's version clamped into [`ProtocolVersion::MIN`]`..=`[`ProtocolVersion::MAX`], and `MIN`
/// when the value is missing or is not a version (see [`ProtocolVersion::parse`]).
///
/// So `2.1` and `9.9` give `2.0`, `1.5` gives `1.5`, `2`, `abc` and `1.1` give `1.2`. Pass the
/// value as [`query_value`] reads it: a repeated `clientProtocol` is one text joined with `,`,
/// which is no version.
pub fn protocol_version(client_protocol: Option<&str>) -> ProtocolVersion {
    match client_protocol.and_then(ProtocolVersion::parse) {
        Some(version) => version.clamp(ProtocolVersion::MIN, ProtocolVersion::MAX),
        None => ProtocolVersion::MIN,
    }
}

/// One query parameter as the classic server reads it: every value whose key equals `name`
/// ignoring ASCII case, joined with `,` in query order (empty values included); `None` when the
/// key is absent. `pairs` are decoded query pairs (e.g. `form_urlencoded::parse`).
pub fn query_value<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    name: &str,
) -> Option<Cow<'a, str>> {
    let mut found: Option<Cow<'a, str>> = None;
    for (key, value) in pairs {
        if !key.eq_ignore_ascii_case(name) {
            continue;
        }
        found = Some(match found {
            None => Cow::Borrowed(value),
            Some(before) => Cow::Owned(format!("{before},{value}")),
        });
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Negotiate

/// The body of a classic `/negotiate` response.
///
/// Serializes with the real server's key names and order; seconds are JSON numbers with a
/// fraction (`20.0`), and `KeepAliveTimeout` is `null` when keep-alive is off. Unknown keys are
/// ignored when parsing (a client reading a server's answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NegotiateResponse {
    /// The endpoint's path (the request path without `/negotiate`), e.g. `/signalr`.
    pub url: String,
    /// The protected connection token the client sends back on every request.
    pub connection_token: String,
    /// The public connection id.
    pub connection_id: String,
    /// Seconds without any message after which the client reconnects (twice the keep-alive
    /// interval); `None` when keep-alive is off.
    pub keep_alive_timeout: Option<f64>,
    /// Seconds the server waits after losing a transport before the connection is gone.
    pub disconnect_timeout: f64,
    /// Seconds one long poll may last.
    pub connection_timeout: f64,
    /// Whether the client may try WebSockets.
    pub try_web_sockets: bool,
    /// The version the server speaks with this client ([`protocol_version`]).
    pub protocol_version: ProtocolVersion,
    /// Seconds a transport has to deliver the init message before the client tries another.
    pub transport_connect_timeout: f64,
    /// Seconds between two long polls.
    pub long_poll_delay: f64,
}

impl NegotiateResponse {
    /// The JSON body.
    ///
    /// # Panics
    /// Never: every field serializes (strings, numbers, a bool; non-finite numbers become
    /// `null`).
    pub fn to_json(&self) -> String {
        // Nothing here can fail to serialize: strings, numbers (non-finite ones become null) and
        // a bool, in a struct.
        serde_json::to_string(self).expect("a classic negotiate response always serializes")
    }
}

// ---------------------------------------------------------------------------------------------
// Shared parsing helpers

/// A key seed: deserializes an object key and tells which of `names` it is (ASCII case
/// ignored), or `None` for any other key. Escapes in the key are decoded first.
struct KeyIn(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyIn {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIn {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .position(|name| name.eq_ignore_ascii_case(key)))
    }
}

/// The bytes of `raw` (a value inside `frame`) as a slice of `frame`, without copying.
fn slice_of(frame: &Bytes, raw: &RawValue) -> Bytes {
    let text = raw.get().as_bytes();
    let start = text.as_ptr() as usize - frame.as_ptr() as usize;
    frame.slice(start..start + text.len())
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Fails unless the JSON text starts with `{`: serde would take an array for a map-shaped type.
fn expect_object(data: &[u8]) -> Result<(), ProtocolError> {
    match data.iter().find(|&&b| !is_json_whitespace(b)) {
        Some(b'{') => Ok(()),
        _ => Err(ProtocolError::Invalid("Expected a JSON object.".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// connectionData

/// One entry of `connectionData`: an object whose `name` key (any ASCII case, the last one wins)
/// is a string. Other keys are ignored.
struct HubEntry(String);

impl<'de> Deserialize<'de> for HubEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HubEntryVisitor)
    }
}

struct HubEntryVisitor;

impl<'de> Visitor<'de> for HubEntryVisitor {
    type Value = HubEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a hub object {\"name\":...}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HubEntry, A::Error> {
        let mut name: Option<Option<String>> = None;
        while let Some(key) = map.next_key_seed(KeyIn(&["name"]))? {
            match key {
                Some(_) => name = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match name.flatten() {
            Some(name) if !name.is_empty() => Ok(HubEntry(name)),
            Some(_) => Err(de::Error::custom("a hub name is empty")),
            None => Err(de::Error::custom("a hub has no name")),
        }
    }
}

/// Reads the `connectionData` query value: the hubs a client subscribes to,
/// `[{"name":"chathub"},{"name":"otherhub"}]`, in the order given (jQuery sends them lower-cased;
/// matching them against the registered hubs, ignoring case, and refusing duplicates is the
/// caller's job).
///
/// An empty (or all-white-space) value and `null` mean no hubs, as for the real server; so does
/// `[]`.
///
/// # Errors
/// [`ProtocolError`] when the text is not a JSON array of objects each with a non-empty string
/// `name` (the real server answers HTTP 500 to those, as to an unknown hub).
pub fn parse_connection_data(text: &str) -> Result<Vec<String>, ProtocolError> {
    if text.bytes().all(is_json_whitespace) {
        return Ok(Vec::new());
    }
    let hubs: Option<Vec<HubEntry>> = serde_json::from_str(text)?;
    Ok(hubs
        .unwrap_or_default()
        .into_iter()
        .map(|HubEntry(name)| name)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Caller state

/// The caller state of a hub invocation (`S`): an ordered map from names to JSON values.
///
/// Received values keep their JSON text ([`Payload::Json`]); values a hub sets may be any
/// payload. Keys are case-sensitive, as on the real server; setting an existing key replaces its
/// value in place.
#[derive(Debug, Clone, Default)]
pub struct CallerState {
    entries: Vec<(String, Payload)>,
}

impl CallerState {
    /// An empty state.
    pub fn new() -> Self {
        CallerState::default()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Payload> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`: in place when it exists, otherwise at the end.
    pub fn set(&mut self, key: impl Into<String>, value: Payload) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Payload> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    /// The keys and values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Payload)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The length of the state's compact JSON object, in UTF-16 code units (the unit .NET strings
    /// count in): what the real server compares with [`MAX_STATE_LENGTH`]. White space in received
    /// values is not counted and escapes count as the character they stand for, as the real server
    /// measures its own re-serialization; a key repeated inside a value counts once. A value that
    /// cannot be serialized (or a number out of `f64`'s range) counts as `usize::MAX`.
    pub fn json_length(&self) -> usize {
        let mut counter = Utf16Counter(0);
        match write_state_compact(&mut counter, self) {
            Ok(()) => counter.0,
            Err(_) => usize::MAX,
        }
    }

    /// Writes the state as a JSON object, values as they are.
    fn write_json(&self, w: &mut impl Write) -> Result<(), EncodeError> {
        let io = EncodeError::from_display;
        w.write_all(b"{").map_err(io)?;
        for (i, (key, value)) in self.entries.iter().enumerate() {
            if i > 0 {
                w.write_all(b",").map_err(io)?;
            }
            write_json_str(w, key)?;
            w.write_all(b":").map_err(io)?;
            write_payload(w, value)?;
        }
        w.write_all(b"}").map_err(io)
    }
}

/// Counts the UTF-16 code units of the UTF-8 text written to it.
struct Utf16Counter(usize);

impl Write for Utf16Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            match b {
                0x80..=0xBF => {}           // continuation byte
                0xF0..=0xFF => self.0 += 2, // a four-byte sequence is a surrogate pair
                _ => self.0 += 1,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_state_compact(w: &mut impl Write, state: &CallerState) -> Result<(), EncodeError> {
    let io = EncodeError::from_display;
    w.write_all(b"{").map_err(io)?;
    for (i, (key, value)) in state.entries.iter().enumerate() {
        if i > 0 {
            w.write_all(b",").map_err(io)?;
        }
        write_json_str(w, key)?;
        w.write_all(b":").map_err(io)?;
        match value {
            // Received text may hold white space, escapes and repeated keys in nested objects:
            // re-serialize it compactly through a `Value`, which keeps the last of repeated keys
            // as the real server's JSON objects do (key order does not change the length).
            Payload::Json(bytes) => {
                let value: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(EncodeError::from_display)?;
                serde_json::to_writer(&mut *w, &value).map_err(EncodeError::from_display)?;
            }
            other => write_payload(w, other)?,
        }
    }
    w.write_all(b"}").map_err(io)
}

struct StateVisitor<'f> {
    frame: &'f Bytes,
}

impl<'de> DeserializeSeed<'de> for StateVisitor<'_> {
    type Value = Option<CallerState>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for StateVisitor<'_> {
    type Value = Option<CallerState>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a state object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut state = CallerState::new();
        while let Some(key) = map.next_key::<String>()? {
            let raw: &'de RawValue = map.next_value()?;
            state.set(key, Payload::Json(slice_of(self.frame, raw)));
        }
        Ok(Some(state))
    }
}

// ---------------------------------------------------------------------------------------------
// Hub invocation (client to server)

/// A client's call of a hub method (`{"H","M","A","I","S"}`), the text of a WebSocket message or
/// the `data` field of `POST /send`.
#[derive(Debug, Clone)]
pub struct HubInvocation {
    /// `H`: the hub name as the client spells it (jQuery: lower-cased); match it ignoring case.
    pub hub: String,
    /// `M`: the method name as the client spells it.
    pub method: String,
    /// `A`: the arguments as received JSON ([`Payload::Json`]); empty when `A` is absent or null.
    pub arguments: Vec<Payload>,
    /// `I`: the callback id the result echoes, as text: a string as is, a number as written
    /// (`0`, `1.5`, `1e2`), `true`/`false`. `None` when absent or null: the result then carries
    /// `"I":null`.
    pub id: Option<String>,
    /// `S`: the caller state (empty when absent or null).
    pub state: CallerState,
}

const INVOCATION_KEYS: &[&str] = &["H", "M", "A", "I", "S"];

struct InvocationVisitor<'f> {
    frame: &'f Bytes,
}

impl<'de> Visitor<'de> for InvocationVisitor<'_> {
    type Value = HubInvocation;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a hub invocation object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HubInvocation, A::Error> {
        let mut hub: Option<Option<String>> = None;
        let mut method: Option<Option<String>> = None;
        let mut arguments: Option<Vec<&'de RawValue>> = None;
        let mut id: Option<&'de RawValue> = None;
        let mut state: Option<CallerState> = None;
        while let Some(key) = map.next_key_seed(KeyIn(INVOCATION_KEYS))? {
            match key {
                Some(0) => hub = Some(map.next_value()?),
                Some(1) => method = Some(map.next_value()?),
                Some(2) => arguments = map.next_value()?,
                Some(3) => id = map.next_value()?,
                Some(4) => {
                    state = map.next_value_seed(StateVisitor { frame: self.frame })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let hub = hub
            .flatten()
            .ok_or_else(|| de::Error::custom("missing hub name 'H'"))?;
        let method = method
            .flatten()
            .ok_or_else(|| de::Error::custom("missing method name 'M'"))?;
        let id = match id {
            None => None,
            Some(raw) => Some(callback_id(raw).map_err(de::Error::custom)?),
        };
        Ok(HubInvocation {
            hub,
            method,
            arguments: arguments
                .unwrap_or_default()
                .into_iter()
                .map(|raw| Payload::Json(slice_of(self.frame, raw)))
                .collect(),
            id,
            state: state.unwrap_or_default(),
        })
    }
}

/// The text of a callback id: strings unescaped, numbers and booleans as written.
fn callback_id(raw: &RawValue) -> Result<String, String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str(text).map_err(|e| e.to_string()),
        Some(b'-' | b'0'..=b'9') | Some(b't' | b'f') => Ok(text.to_owned()),
        _ => Err("the callback id 'I' must be a string, a number or a boolean".to_owned()),
    }
}

impl HubInvocation {
    /// Parses one invocation. Keys match in any ASCII case and a repeated key counts once, with
    /// its last value, as on the real server.
    ///
    /// # Errors
    /// [`ProtocolError`] when the text is not one JSON object, `H` or `M` is missing or not a
    /// string, `A` is not an array, `S` not an object, or `I` an object or array. The real server
    /// answers those with HTTP 500 on `/send` and ignores them on WebSockets.
    pub fn parse(data: &[u8]) -> Result<HubInvocation, ProtocolError> {
        Self::parse_bytes(Bytes::copy_from_slice(data))
    }

    /// [`HubInvocation::parse`] without copying: the payloads are slices of `data`.
    ///
    /// # Errors
    /// As [`HubInvocation::parse`].
    pub fn parse_bytes(data: Bytes) -> Result<HubInvocation, ProtocolError> {
        expect_object(&data)?;
        let mut de = serde_json::Deserializer::from_slice(&data);
        let invocation = de.deserialize_map(InvocationVisitor { frame: &data })?;
        de.end()?;
        Ok(invocation)
    }

    /// Appends the invocation as a client sends it (`I` as a string, `S` only when not empty).
    ///
    /// # Errors
    /// [`EncodeError`] when a payload fails to serialize; `out` is then left as it was.
    pub fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        guarded(out, |w| {
            let io = EncodeError::from_display;
            w.write_all(b"{\"H\":").map_err(io)?;
            write_json_str(w, &self.hub)?;
            w.write_all(b",\"M\":").map_err(io)?;
            write_json_str(w, &self.method)?;
            w.write_all(b",\"A\":").map_err(io)?;
            write_array(w, &self.arguments)?;
            if let Some(id) = &self.id {
                w.write_all(b",\"I\":").map_err(io)?;
                write_json_str(w, id)?;
            }
            if !self.state.is_empty() {
                w.write_all(b",\"S\":").map_err(io)?;
                self.state.write_json(w)?;
            }
            w.write_all(b"}").map_err(io)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Writers (server to client)

/// How a hub method call ended, for [`write_hub_result`].
#[derive(Debug, Clone)]
pub enum HubResult {
    /// The method returned nothing: no `R`.
    Void,
    /// The method returned a value (`R`). A value that encodes to `null` is left out, as the real
    /// server leaves null results out.
    Value(Payload),
    /// The call failed (`E`): the text the client shows.
    Error(String),
    /// The method threw a hub exception: `"H":true`, the message in `E`, optional error data in
    /// `D` (left out when absent or `null`).
    HubError {
        /// The exception's message (sent whether or not detailed errors are on).
        message: String,
        /// The exception's error data.
        data: Option<Payload>,
    },
}

/// Runs `write` against `out`, truncating `out` back to where it was when `write` fails.
fn guarded(
    out: &mut BytesMut,
    write: impl FnOnce(&mut crate::Appender<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = write(&mut crate::Appender(out));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_json_str(w: &mut impl Write, s: &str) -> Result<(), EncodeError> {
    serde_json::to_writer(w, s).map_err(EncodeError::from_display)
}

fn write_array(w: &mut impl Write, items: &[Payload]) -> Result<(), EncodeError> {
    let io = EncodeError::from_display;
    w.write_all(b"[").map_err(io)?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            w.write_all(b",").map_err(io)?;
        }
        write_payload(w, item)?;
    }
    w.write_all(b"]").map_err(io)
}

/// Writes `key` (e.g. `,"D":`) and the payload unless the payload encodes to `null`; returns
/// whether it wrote anything.
fn write_unless_null(
    w: &mut crate::Appender<'_>,
    key: &[u8],
    payload: &Payload,
) -> Result<bool, EncodeError> {
    let start = w.0.len();
    w.write_all(key).map_err(EncodeError::from_display)?;
    let value_start = w.0.len();
    write_payload(w, payload)?;
    let value = &w.0[value_start..];
    let trimmed = value.trim_ascii();
    if trimmed == b"null" {
        w.0.truncate(start);
        Ok(false)
    } else {
        Ok(true)
    }
}

/// Appends the result of a hub invocation, in the real server's key order `S`, `R`, `I`, `H`,
/// `E`, `D`: `{"S":{"count":2},"R":5,"I":"0"}`, `{"I":"1"}` (void), `{"I":"2","E":"..."}`,
/// `{"I":"4","H":true,"E":"boom","D":{"Code":42}}`.
///
/// `id` is the invocation's [`HubInvocation::id`] (`None` writes `"I":null`); `changed_state`
/// holds only the state keys the method changed (left out when empty). The real server sends
/// the result as the WebSocket message itself or as the body of `POST /send`, never inside an
/// envelope.
///
/// # Errors
/// [`EncodeError`] when a payload fails to serialize; `out` is then left as it was.
pub fn write_hub_result(
    id: Option<&str>,
    changed_state: &CallerState,
    result: &HubResult,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    guarded(out, |w| {
        let io = EncodeError::from_display;
        w.write_all(b"{").map_err(io)?;
        if !changed_state.is_empty() {
            w.write_all(b"\"S\":").map_err(io)?;
            changed_state.write_json(w)?;
            w.write_all(b",").map_err(io)?;
        }
        if let HubResult::Value(value) = result
            && write_unless_null(w, b"\"R\":", value)?
        {
            w.write_all(b",").map_err(io)?;
        }
        w.write_all(b"\"I\":").map_err(io)?;
        match id {
            Some(id) => write_json_str(w, id)?,
            None => w.write_all(b"null").map_err(io)?,
        }
        match result {
            HubResult::Void | HubResult::Value(_) => {}
            HubResult::Error(message) => {
                w.write_all(b",\"E\":").map_err(io)?;
                write_json_str(w, message)?;
            }
            HubResult::HubError { message, data } => {
                w.write_all(b",\"H\":true,\"E\":").map_err(io)?;
                write_json_str(w, message)?;
                if let Some(data) = data {
                    write_unless_null(w, b",\"D\":", data)?;
                }
            }
        }
        w.write_all(b"}").map_err(io)
    })
}

/// Appends one progress report of invocation `id`: `{"I":"P|3","P":{"I":"3","D":1}}`. It goes
/// inside an envelope's `M`, like a client-method call.
///
/// # Errors
/// [`EncodeError`] when `data` fails to serialize; `out` is then left as it was.
pub fn write_progress(id: &str, data: &Payload, out: &mut BytesMut) -> Result<(), EncodeError> {
    guarded(out, |w| {
        let io = EncodeError::from_display;
        w.write_all(b"{\"I\":").map_err(io)?;
        write_json_str(w, &format!("P|{id}"))?;
        w.write_all(b",\"P\":{\"I\":").map_err(io)?;
        write_json_str(w, id)?;
        w.write_all(b",\"D\":").map_err(io)?;
        write_payload(w, data)?;
        w.write_all(b"}}").map_err(io)
    })
}

/// Appends a call of client method `method` on hub `hub` (the hub's registered name; clients
/// match both ignoring case): `{"H":"TestHub","M":"message","A":["x"]}`, with `"S"` after `A`
/// when `state` is given (caller state sent along with a call on the caller). It goes inside an
/// envelope's `M`; a message for many connections is encoded once and wrapped by each.
///
/// # Errors
/// [`EncodeError`] when an argument fails to serialize; `out` is then left as it was.
pub fn write_client_invocation(
    hub: &str,
    method: &str,
    arguments: &[Payload],
    state: Option<&CallerState>,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    guarded(out, |w| {
        let io = EncodeError::from_display;
        w.write_all(b"{\"H\":").map_err(io)?;
        write_json_str(w, hub)?;
        w.write_all(b",\"M\":").map_err(io)?;
        write_json_str(w, method)?;
        w.write_all(b",\"A\":").map_err(io)?;
        write_array(w, arguments)?;
        if let Some(state) = state {
            w.write_all(b",\"S\":").map_err(io)?;
            state.write_json(w)?;
        }
        w.write_all(b"}").map_err(io)
    })
}

/// The persistent-connection envelope around messages sent to one connection:
/// `{"C":cursor,"S":1,"T":1,"G":token,"L":ms,"M":[...]}`, the optional keys only when set, in this
/// order (the real server's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Envelope<'a> {
    /// `C`: the cursor the client echoes as `messageId` (see [`Cursor`]).
    pub cursor: &'a str,
    /// `S:1`: the init message, the first thing a transport sends on `/connect`.
    pub initializing: bool,
    /// `T:1`: the client should reconnect (the server is shutting down).
    pub reconnect: bool,
    /// `G`: a new groups token, sent when the connection's groups changed.
    pub groups_token: Option<&'a str>,
    /// `L`: milliseconds a long-polling client waits before its next poll.
    pub long_poll_delay: Option<u64>,
}

impl<'a> Envelope<'a> {
    /// An envelope with only a cursor.
    pub fn new(cursor: &'a str) -> Self {
        Envelope {
            cursor,
            ..Default::default()
        }
    }

    /// Appends the envelope with `messages` (each one complete JSON value, already encoded, e.g.
    /// by [`write_client_invocation`]) in `M`.
    pub fn write<B: AsRef<[u8]>>(&self, messages: &[B], out: &mut BytesMut) {
        let capacity = 64 + self.cursor.len() + self.groups_token.map_or(0, str::len);
        let capacity = capacity + messages.iter().map(|m| m.as_ref().len() + 1).sum::<usize>();
        out.reserve(capacity);
        out.put_slice(b"{\"C\":");
        put_json_str(out, self.cursor);
        if self.initializing {
            out.put_slice(b",\"S\":1");
        }
        if self.reconnect {
            out.put_slice(b",\"T\":1");
        }
        if let Some(token) = self.groups_token {
            out.put_slice(b",\"G\":");
            put_json_str(out, token);
        }
        if let Some(delay) = self.long_poll_delay {
            out.put_slice(format!(",\"L\":{delay}").as_bytes());
        }
        out.put_slice(b",\"M\":[");
        for (i, message) in messages.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(message.as_ref());
        }
        out.put_slice(b"]}");
    }
}

fn put_json_str(out: &mut BytesMut, s: &str) {
    // Writing a string into memory cannot fail.
    let _ = serde_json::to_writer(out.writer(), s);
}

// ---------------------------------------------------------------------------------------------
// Cursor

/// A message cursor of this server, sent as the envelope's `C` and returned by clients as
/// `messageId`: `d-<epoch>-<seq>` with the server's epoch in upper-case hex and a sequence number
/// in decimal, e.g. `d-5F3A9C01-42`.
///
/// The epoch tells cursors of this server run apart from those of an earlier run (or another
/// server); the sequence number counts the messages of one connection. Clients treat the text as
/// opaque. It has the look of the real server's cursors (they start with `d-` too) but not their
/// content (per-topic positions such as `d-BC1A113-B,0|C,1`), which [`Cursor::parse`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor {
    /// Which server run made the cursor.
    pub epoch: u64,
    /// The position in the connection's messages.
    pub seq: u64,
}

/// A `messageId` that is not a cursor of ours: a foreign, garbled or truncated one. The server
/// then treats the request as having no cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor of this server")]
pub struct CursorError;

impl Cursor {
    /// Reads a cursor. Only the exact text [`Display`](fmt::Display) writes is accepted (upper-case
    /// hex without leading zeros, decimal without leading zeros, nothing around it).
    ///
    /// # Errors
    /// [`CursorError`] for any other text.
    pub fn parse(text: &str) -> Result<Cursor, CursorError> {
        // "d-" + 16 hex digits + "-" + 20 decimal digits at most.
        if text.len() > 39 {
            return Err(CursorError);
        }
        let rest = text.strip_prefix("d-").ok_or(CursorError)?;
        let (epoch, seq) = rest.split_once('-').ok_or(CursorError)?;
        let is_hex =
            |s: &str| !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
        let is_dec = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !is_hex(epoch) || !is_dec(seq) {
            return Err(CursorError);
        }
        let cursor = Cursor {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| CursorError)?,
            seq: seq.parse().map_err(|_| CursorError)?,
        };
        // Leading zeros (and nothing else, after the checks above) make a different text.
        if cursor.to_string() != text {
            return Err(CursorError);
        }
        Ok(cursor)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d-{:X}-{}", self.epoch, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Cursor::parse(text)
    }
}

// ---------------------------------------------------------------------------------------------
// Form bodies

/// The fields of an `application/x-www-form-urlencoded` classic POST body: `data` (`/send`),
/// `messageId` and `groupsToken` (long-polling `/poll`, `/connect`, `/reconnect`).
///
/// Keys match ignoring ASCII case; of a repeated key the first value counts; an empty value is
/// `None` (as the real server reads them: `data=X&data=Y` sends `X`, `data=&data=X` fails).
/// Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormFields {
    /// `data`: the message (for hubs a [`HubInvocation`]).
    pub data: Option<String>,
    /// `messageId`: the last cursor the client received.
    pub message_id: Option<String>,
    /// `groupsToken`: the last groups token the client received.
    pub groups_token: Option<String>,
}

impl FormFields {
    /// Reads a form body (also usable on a query string: `GET /send?data=...`).
    pub fn parse(body: &[u8]) -> FormFields {
        let mut fields = FormFields::default();
        let mut seen = [false; 3];
        for (key, value) in form_urlencoded::parse(body) {
            let index = ["data", "messageId", "groupsToken"]
                .iter()
                .position(|name| key.eq_ignore_ascii_case(name));
            let Some(index) = index else { continue };
            if std::mem::replace(&mut seen[index], true) {
                continue;
            }
            let value = (!value.is_empty()).then(|| value.into_owned());
            match index {
                0 => fields.data = value,
                1 => fields.message_id = value,
                _ => fields.groups_token = value,
            }
        }
        fields
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn text(payload: &Payload) -> String {
        match payload {
            Payload::Json(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        }
    }

    fn written(f: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>) -> String {
        let mut out = BytesMut::new();
        f(&mut out).expect("encodes");
        String::from_utf8(out.to_vec()).expect("UTF-8")
    }

    // --- protocol version -----------------------------------------------------------------

    #[test]
    fn protocol_version_clamps_like_the_real_server() {
        // Every pair below was answered so by a real SignalR 2.4 server.
        let cases: &[(Option<&str>, &str)] = &[
            (None, "1.2"),
            (Some(""), "1.2"),
            (Some("2"), "1.2"),
            (Some("2.0"), "2.0"),
            (Some("2.1"), "2.0"),
            (Some("9.9"), "2.0"),
            (Some("1.5"), "1.5"),
            (Some("1.4"), "1.4"),
            (Some("1.3"), "1.3"),
            (Some("1.2"), "1.2"),
            (Some("1.1"), "1.2"),
            (Some("0.5"), "1.2"),
            (Some("1"), "1.2"),
            (Some("-1"), "1.2"),
            (Some("abc"), "1.2"),
            (Some("1.5.0"), "1.5.0"),
            (Some("1.5.0.0"), "1.5.0.0"),
            (Some("1.5.0.0.0"), "1.2"),
            (Some(" 2.1"), "2.0"),
            (Some("2.1 "), "2.0"),
            (Some(" 1.5 "), "1.5"),
            (Some("1. 5"), "1.5"),
            (Some("1 .5"), "1.5"),
            (Some("\n1.5"), "1.5"),
            (Some("\u{b}1.5"), "1.5"),
            (Some("1.5\0"), "1.5"),
            (Some("1.5\0\0"), "1.5"),
            (Some("\u{a0}1.5"), "1.2"),
            (Some("1.5\u{a0}"), "1.2"),
            (Some("\u{ff11}.5"), "1.2"),
            (Some("1\t0.5"), "1.2"),
            (Some("1.10"), "1.10"),
            (Some("1.99"), "1.99"),
            (Some("01.5"), "1.5"),
            (Some("1.05"), "1.5"),
            (Some("0002.0000"), "2.0"),
            (Some("+1.5"), "1.5"),
            (Some("1.+5"), "1.5"),
            (Some("1.-5"), "1.2"),
            (Some("1.-0"), "1.2"),
            (Some("-0.5"), "1.2"),
            (Some("1.5a"), "1.2"),
            (Some("1.2+"), "1.2"),
            (Some("1.5."), "1.2"),
            (Some(".1.5"), "1.2"),
            (Some("1..5"), "1.2"),
            (Some("2.-1"), "1.2"),
            (Some("1.5.-1"), "1.2"),
            (Some("2.0.0"), "2.0"),
            (Some("2.0.0.0"), "2.0"),
            (Some("2.0.1"), "2.0"),
            (Some("2.0.0.1"), "2.0"),
            (Some("1.2.0"), "1.2.0"),
            (Some("1.1.9"), "1.2"),
            (Some("1.1.99999"), "1.2"),
            (Some("1.4.5.6"), "1.4.5.6"),
            (Some("1.3.9999.2147483647"), "1.3.9999.2147483647"),
            (Some("2147483647.0"), "2.0"),
            (Some("2147483648.0"), "1.2"),
            (Some("99999999999.0"), "1.2"),
            (Some("1.2147483648"), "1.2"),
            (Some("1.5,2.0"), "1.2"),
            (Some(",1.5"), "1.2"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                protocol_version(*input).to_string(),
                *expected,
                "clientProtocol {input:?}"
            );
        }
    }

    #[test]
    fn versions_order_like_dotnet() {
        let v = |s: &str| ProtocolVersion::parse(s).expect("a version");
        assert!(v("2.0") < v("2.0.0"));
        assert!(v("2.0.0") < v("2.0.0.0"));
        assert!(v("1.10") > v("1.9"));
        assert!(v("1.4") >= ProtocolVersion::new(1, 4));
        assert_eq!(v("01.05"), ProtocolVersion::new(1, 5));
        assert_eq!(ProtocolVersion::MAX.to_string(), "2.0");
        assert_eq!(
            "1.5".parse::<ProtocolVersion>(),
            Ok(ProtocolVersion::new(1, 5))
        );
        assert!("1".parse::<ProtocolVersion>().is_err());
    }

    #[test]
    fn query_value_joins_repeated_keys() {
        let pairs = [
            ("clientProtocol", "1.5"),
            ("x", "y"),
            ("CLIENTPROTOCOL", "1.6"),
        ];
        assert_eq!(
            query_value(pairs, "clientprotocol").as_deref(),
            Some("1.5,1.6")
        );
        assert_eq!(query_value([("a", "")], "A").as_deref(), Some(""));
        assert_eq!(
            query_value([("a", ""), ("a", "1.5")], "a").as_deref(),
            Some(",1.5")
        );
        assert_eq!(query_value([("a", "1")], "b"), None);
        // A repeated clientProtocol is no version, so 1.2 (as the real server answers).
        assert_eq!(
            protocol_version(query_value(pairs, "clientProtocol").as_deref()),
            ProtocolVersion::MIN
        );
    }

    // --- negotiate ------------------------------------------------------------------------

    fn negotiate_sample() -> NegotiateResponse {
        NegotiateResponse {
            url: "/signalr".into(),
            connection_token: "a+b/c=".into(),
            connection_id: "a579f3c4-ea36-40a0-a85c-bea4335400fd".into(),
            keep_alive_timeout: Some(20.0),
            disconnect_timeout: 30.0,
            connection_timeout: 110.0,
            try_web_sockets: true,
            protocol_version: protocol_version(Some("2.1")),
            transport_connect_timeout: 5.0,
            long_poll_delay: 0.0,
        }
    }

    #[test]
    fn negotiate_response_is_byte_exact() {
        assert_eq!(
            negotiate_sample().to_json(),
            r#"{"Url":"/signalr","ConnectionToken":"a+b/c=","ConnectionId":"a579f3c4-ea36-40a0-a85c-bea4335400fd","KeepAliveTimeout":20.0,"DisconnectTimeout":30.0,"ConnectionTimeout":110.0,"TryWebSockets":true,"ProtocolVersion":"2.0","TransportConnectTimeout":5.0,"LongPollDelay":0.0}"#
        );
        let off = NegotiateResponse {
            keep_alive_timeout: None,
            try_web_sockets: false,
            protocol_version: protocol_version(Some("1.5")),
            disconnect_timeout: 7.5,
            ..negotiate_sample()
        };
        assert_eq!(
            off.to_json(),
            r#"{"Url":"/signalr","ConnectionToken":"a+b/c=","ConnectionId":"a579f3c4-ea36-40a0-a85c-bea4335400fd","KeepAliveTimeout":null,"DisconnectTimeout":7.5,"ConnectionTimeout":110.0,"TryWebSockets":false,"ProtocolVersion":"1.5","TransportConnectTimeout":5.0,"LongPollDelay":0.0}"#
        );
    }

    #[test]
    fn negotiate_response_parses_a_real_answer() {
        let real = r#"{"Url":"/signalr","ConnectionToken":"HZoy+/=","ConnectionId":"a579f3c4-ea36-40a0-a85c-bea4335400fd","KeepAliveTimeout":20.0,"DisconnectTimeout":30.0,"ConnectionTimeout":110.0,"TryWebSockets":false,"ProtocolVersion":"2.0","TransportConnectTimeout":5.0,"LongPollDelay":0.0,"Extra":1}"#;
        let parsed: NegotiateResponse = serde_json::from_str(real).expect("parses");
        assert_eq!(parsed.protocol_version, ProtocolVersion::MAX);
        assert_eq!(parsed.keep_alive_timeout, Some(20.0));
        assert_eq!(parsed.connection_token, "HZoy+/=");
        assert!(!parsed.try_web_sockets);
    }

    // --- connectionData -------------------------------------------------------------------

    #[test]
    fn connection_data_lists_hub_names() {
        let ok: &[(&str, &[&str])] = &[
            (r#"[{"name":"chathub"}]"#, &["chathub"]),
            (r#"[{"Name":"testhub"}]"#, &["testhub"]),
            (r#"[{"NAME":"TESTHUB"}]"#, &["TESTHUB"]),
            (r#"[{"name":"testhub","x":[1,{}]}]"#, &["testhub"]),
            (r#" [ { "name" : "testhub" } ] "#, &["testhub"]),
            (r#"[{"name":"a"},{"name":"b"}]"#, &["a", "b"]),
            // Duplicates are the caller's to refuse; the last "name" key wins.
            (r#"[{"name":"a"},{"name":"a"}]"#, &["a", "a"]),
            (r#"[{"name":"testhub","name":"renamed"}]"#, &["renamed"]),
            (r#"[{"n\u0061me":"test\u0068ub"}]"#, &["testhub"]),
            ("[]", &[]),
            ("null", &[]),
            ("", &[]),
            ("  ", &[]),
        ];
        for (text, expected) in ok {
            assert_eq!(
                parse_connection_data(text).expect(text),
                expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_connection_data_is_an_error() {
        for text in [
            "{}",
            "[{}]",
            r#"[{"name":null}]"#,
            r#"[{"name":1}]"#,
            r#"[{"name":true}]"#,
            r#"[{"name":""}]"#,
            r#"["testhub"]"#,
            "[null]",
            r#"[{"name":"a"},null]"#,
            r#"{"name":"testhub"}"#,
            "[[]]",
            r#""x""#,
            r#"[{"name":"testhub"}] x"#,
            r#"[{"name":"testhub"},]"#,
            "[{'name':'testhub'}]",
            r#"[{"name":"testhub""#,
            "x",
        ] {
            assert!(parse_connection_data(text).is_err(), "{text} parsed");
        }
    }

    // --- hub invocation -------------------------------------------------------------------

    #[test]
    fn invocation_parses_every_field() {
        let call = HubInvocation::parse(
            br#"{"H":"chathub","M":"Send","A":["bob",{"x":[1, 2]},null],"I":0,"S":{"room":"a","n":1}}"#,
        )
        .expect("parses");
        assert_eq!(call.hub, "chathub");
        assert_eq!(call.method, "Send");
        let args: Vec<String> = call.arguments.iter().map(text).collect();
        assert_eq!(args, [r#""bob""#, r#"{"x":[1, 2]}"#, "null"]);
        assert_eq!(call.id.as_deref(), Some("0"));
        let state: Vec<(&str, String)> = call.state.iter().map(|(k, v)| (k, text(v))).collect();
        assert_eq!(
            state,
            [("room", r#""a""#.to_string()), ("n", "1".to_string())]
        );
    }

    #[test]
    fn callback_ids_are_kept_as_the_result_echoes_them() {
        // The real server's answers: the id text as written, booleans too, null when absent.
        let cases: &[(&str, Option<&str>)] = &[
            ("0", Some("0")),
            (r#""abc""#, Some("abc")),
            (r#""""#, Some("")),
            (r#"" 29 ""#, Some(" 29 ")),
            (r#""a\"b""#, Some("a\"b")),
            ("1.5", Some("1.5")),
            ("-1", Some("-1")),
            ("-0", Some("-0")),
            ("1e2", Some("1e2")),
            ("1E+2", Some("1E+2")),
            ("1.0", Some("1.0")),
            ("0.000001", Some("0.000001")),
            ("12345678901234567890", Some("12345678901234567890")),
            ("true", Some("true")),
            ("false", Some("false")),
            ("null", None),
        ];
        for (raw, expected) in cases {
            let text = format!(r#"{{"H":"h","M":"m","A":[],"I":{raw}}}"#);
            let call = HubInvocation::parse(text.as_bytes()).expect(&text);
            assert_eq!(call.id.as_deref(), *expected, "{text}");
        }
        let call = HubInvocation::parse(br#"{"H":"h","M":"m","A":[]}"#).expect("parses");
        assert_eq!(call.id, None);
    }

    #[test]
    fn invocation_keys_ignore_case_and_the_last_duplicate_wins() {
        let call =
            HubInvocation::parse(br#"{"h":"testhub","m":"Echo","a":["x"],"i":7,"X":1,"s":{}}"#)
                .expect("parses");
        assert_eq!(
            (call.hub.as_str(), call.method.as_str()),
            ("testhub", "Echo")
        );
        assert_eq!(call.id.as_deref(), Some("7"));
        assert_eq!(call.arguments.len(), 1);

        let call =
            HubInvocation::parse(br#"{"H":"a","M":"m","I":27,"I":28,"H":"b"}"#).expect("parses");
        assert_eq!((call.hub.as_str(), call.id.as_deref()), ("b", Some("28")));

        // State keys are case-sensitive; a repeated one keeps its place with the last value.
        let call = HubInvocation::parse(
            br#"{"H":"h","M":"m","S":{"count":1,"name":"bob","Name":"x","name":"ann"}}"#,
        )
        .expect("parses");
        let state: Vec<(&str, String)> = call.state.iter().map(|(k, v)| (k, text(v))).collect();
        assert_eq!(
            state,
            [
                ("count", "1".to_string()),
                ("name", r#""ann""#.to_string()),
                ("Name", r#""x""#.to_string())
            ]
        );
    }

    #[test]
    fn absent_or_null_arguments_and_state_are_empty() {
        for text in [
            r#"{"H":"h","M":"m"}"#,
            r#"{"H":"h","M":"m","A":null,"S":null}"#,
            r#"{"H":"h","M":"m","A":[],"S":{}}"#,
        ] {
            let call = HubInvocation::parse(text.as_bytes()).expect(text);
            assert!(call.arguments.is_empty() && call.state.is_empty(), "{text}");
        }
    }

    #[test]
    fn malformed_invocations_are_errors() {
        for text in [
            "",
            "   ",
            "not json",
            "[]",
            r#"[{"H":"h","M":"m"}]"#,
            r#"{"M":"Echo","A":["x"],"I":14}"#,
            r#"{"H":"testhub","A":["x"],"I":13}"#,
            r#"{"H":null,"M":"m"}"#,
            r#"{"H":1,"M":"Echo"}"#,
            r#"{"H":"h","M":["m"]}"#,
            r#"{"H":"h","M":"m","A":"x"}"#,
            r#"{"H":"h","M":"m","A":{"0":"x"}}"#,
            r#"{"H":"h","M":"m","I":{"a":1}}"#,
            r#"{"H":"h","M":"m","I":[1]}"#,
            r#"{"H":"h","M":"m","S":[]}"#,
            r#"{"H":"h","M":"m","S":"x"}"#,
            r#"{"H":"h","M":"m"} x"#,
            r#"{"H":"h","M":"m""#,
            "{'H':'h','M':'m'}",
        ] {
            assert!(
                HubInvocation::parse(text.as_bytes()).is_err(),
                "{text} parsed"
            );
        }
    }

    #[test]
    fn invocation_writes_and_parses_back() {
        let call = HubInvocation::parse(
            br#"{"H":"chathub","M":"Send","A":["a", 1],"I":1e2,"S":{"k":[true]}}"#,
        )
        .expect("parses");
        let written = written(|out| call.write(out));
        assert_eq!(
            written,
            r#"{"H":"chathub","M":"Send","A":["a",1],"I":"1e2","S":{"k":[true]}}"#
        );
        let again = HubInvocation::parse(written.as_bytes()).expect("parses back");
        assert_eq!(again.id.as_deref(), Some("1e2"));
    }

    #[test]
    fn state_length_counts_the_compact_form_in_utf16_units() {
        // {"k":"xx..."} is 8 + n characters; the real server took 4096 and refused 4097.
        let with = |value: String| {
            let text = format!(r#"{{"H":"h","M":"m","S":{{"k":{value}}}}}"#);
            HubInvocation::parse(text.as_bytes()).expect("parses").state
        };
        assert_eq!(
            with(format!("\"{}\"", "x".repeat(4088))).json_length(),
            4096
        );
        assert_eq!(
            with(format!("\"{}\"", "x".repeat(4089))).json_length(),
            4097
        );
        // White space and escapes in the received text do not count; non-ASCII counts per
        // UTF-16 unit, not per byte.
        assert_eq!(with(format!("\"{}\"   ", "x".repeat(10))).json_length(), 18);
        assert_eq!(
            with(format!("\"{}\"", "\\u0078".repeat(700))).json_length(),
            708
        );
        assert_eq!(
            with(format!("\"{}\"", "é".repeat(4080))).json_length(),
            4088
        );
        assert_eq!(with("\"\u{1F600}\"".to_string()).json_length(), 10);
        assert_eq!(with("[1, 2,\n3]".to_string()).json_length(), 13);
        // {"k":{"n":"x"}}: the repeated key inside the value counts once, with its last value.
        assert_eq!(
            with(r#"{"n":"long value","n":"x"}"#.to_string()).json_length(),
            15
        );
        assert_eq!(with("1e999".to_string()).json_length(), usize::MAX);
        assert_eq!(CallerState::new().json_length(), 2);
    }

    // --- writers --------------------------------------------------------------------------

    fn state(pairs: &[(&str, &str)]) -> CallerState {
        let mut state = CallerState::new();
        for (k, v) in pairs {
            state.set(*k, Payload::Json(Bytes::copy_from_slice(v.as_bytes())));
        }
        state
    }

    #[test]
    fn hub_results_are_byte_exact() {
        let none = CallerState::new();
        let r = |id, st: &CallerState, result: HubResult| {
            written(|out| write_hub_result(id, st, &result, out))
        };
        assert_eq!(
            r(
                Some("0"),
                &state(&[("seen", "5")]),
                HubResult::Value(Payload::from_value(5))
            ),
            r#"{"S":{"seen":5},"R":5,"I":"0"}"#
        );
        assert_eq!(
            r(
                Some("2"),
                &state(&[("greeted", r#""hello ann""#), ("count", "2")]),
                HubResult::Value(Payload::from_value("ann"))
            ),
            r#"{"S":{"greeted":"hello ann","count":2},"R":"ann","I":"2"}"#
        );
        assert_eq!(r(Some("1"), &none, HubResult::Void), r#"{"I":"1"}"#);
        assert_eq!(
            r(None, &none, HubResult::Value(Payload::from_value("x"))),
            r#"{"R":"x","I":null}"#
        );
        // A null result is left out, as void.
        assert_eq!(
            r(Some("0"), &none, HubResult::Value(Payload::from_value(()))),
            r#"{"I":"0"}"#
        );
        assert_eq!(
            r(
                Some("0"),
                &none,
                HubResult::Value(Payload::Json(Bytes::from_static(b"null")))
            ),
            r#"{"I":"0"}"#
        );
        assert_eq!(
            r(
                Some("6"),
                &none,
                HubResult::Error("There was an error invoking Hub method 'testhub.Nope'.".into())
            ),
            r#"{"I":"6","E":"There was an error invoking Hub method 'testhub.Nope'."}"#
        );
        assert_eq!(
            r(
                Some("20"),
                &state(&[("greeted", r#""hello ""#)]),
                HubResult::Error("boom".into())
            ),
            r#"{"S":{"greeted":"hello "},"I":"20","E":"boom"}"#
        );
        assert_eq!(
            r(
                Some("4"),
                &none,
                HubResult::HubError {
                    message: "boom".into(),
                    data: Some(Payload::from_value(serde_json::json!({"Code": 42}))),
                }
            ),
            r#"{"I":"4","H":true,"E":"boom","D":{"Code":42}}"#
        );
        assert_eq!(
            r(
                Some("4"),
                &none,
                HubResult::HubError {
                    message: "boom".into(),
                    data: None
                }
            ),
            r#"{"I":"4","H":true,"E":"boom"}"#
        );
        assert_eq!(
            r(
                Some("4"),
                &none,
                HubResult::HubError {
                    message: "b\"o\no".into(),
                    data: Some(Payload::from_value(()))
                }
            ),
            r#"{"I":"4","H":true,"E":"b\"o\no"}"#
        );
    }

    #[test]
    fn a_failed_encode_leaves_the_output_alone() {
        use std::collections::HashMap;
        let mut bad = HashMap::new();
        bad.insert(vec![1u8], 1); // JSON object keys must be strings
        let mut out = BytesMut::from(&b"before"[..]);
        let result = HubResult::Value(Payload::from_value(bad.clone()));
        assert!(write_hub_result(Some("1"), &CallerState::new(), &result, &mut out).is_err());
        assert_eq!(&out[..], b"before");
        let args = [Payload::from_value(1), Payload::from_value(bad)];
        assert!(write_client_invocation("H", "m", &args, None, &mut out).is_err());
        assert_eq!(&out[..], b"before");
    }

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Stock {
        symbol: &'static str,
        price: f64,
    }

    #[test]
    fn progress_and_client_invocations_are_byte_exact() {
        assert_eq!(
            written(|out| write_progress("3", &Payload::from_value(1), out)),
            r#"{"I":"P|3","P":{"I":"3","D":1}}"#
        );
        let args = [Payload::from_value("x")];
        assert_eq!(
            written(|out| write_client_invocation("TestHub", "message", &args, None, out)),
            r#"{"H":"TestHub","M":"message","A":["x"]}"#
        );
        assert_eq!(
            written(|out| write_client_invocation("TestHub", "notify", &[], None, out)),
            r#"{"H":"TestHub","M":"notify","A":[]}"#
        );
        let many = [
            Payload::from_value(1),
            Payload::from_value("two"),
            Payload::from_value(3.5),
            Payload::from_value(true),
            Payload::from_value([4, 5]),
            Payload::from_value(Stock {
                symbol: "MSFT",
                price: 12.34,
            }),
            Payload::from_value("seven"),
        ];
        assert_eq!(
            written(|out| write_client_invocation("TestHub", "manyArgs", &many, None, out)),
            r#"{"H":"TestHub","M":"manyArgs","A":[1,"two",3.5,true,[4,5],{"Symbol":"MSFT","Price":12.34},"seven"]}"#
        );
        let st = state(&[("count", "1")]);
        assert_eq!(
            written(|out| write_client_invocation("ChatHub", "addMessage", &args, Some(&st), out)),
            r#"{"H":"ChatHub","M":"addMessage","A":["x"],"S":{"count":1}}"#
        );
    }

    #[test]
    fn envelopes_are_byte_exact() {
        let env = |e: Envelope<'_>, items: &[&[u8]]| {
            let mut out = BytesMut::new();
            e.write(items, &mut out);
            String::from_utf8(out.to_vec()).expect("UTF-8")
        };
        let init = Envelope {
            initializing: true,
            ..Envelope::new("d-C1C51420-a,6|h,0|i,1")
        };
        assert_eq!(
            env(init, &[]),
            r#"{"C":"d-C1C51420-a,6|h,0|i,1","S":1,"M":[]}"#
        );
        let groups = Envelope {
            groups_token: Some("NGNk+/="),
            ..Envelope::new("d-BC1A113-B,0|C,1|D,5|E,0")
        };
        assert_eq!(
            env(groups, &[]),
            r#"{"C":"d-BC1A113-B,0|C,1|D,5|E,0","G":"NGNk+/=","M":[]}"#
        );
        assert_eq!(
            env(
                Envelope::new("d-1-2"),
                &[
                    br#"{"I":"P|3","P":{"I":"3","D":1}}"#,
                    br#"{"H":"TestHub","M":"notify","A":[]}"#
                ]
            ),
            r#"{"C":"d-1-2","M":[{"I":"P|3","P":{"I":"3","D":1}},{"H":"TestHub","M":"notify","A":[]}]}"#
        );
        let all = Envelope {
            cursor: "d-1-2",
            initializing: true,
            reconnect: true,
            groups_token: Some("g"),
            long_poll_delay: Some(250),
        };
        assert_eq!(
            env(all, &[b"1"]),
            r#"{"C":"d-1-2","S":1,"T":1,"G":"g","L":250,"M":[1]}"#
        );
    }

    #[test]
    fn fixed_responses_are_exact() {
        assert_eq!(KEEP_ALIVE, b"{}");
        assert_eq!(STARTED_RESPONSE, br#"{ "Response": "started" }"#);
        assert_eq!(PONG_RESPONSE, br#"{ "Response": "pong" }"#);
    }

    // --- cursor ---------------------------------------------------------------------------

    #[test]
    fn cursors_round_trip() {
        for (epoch, seq) in [(0, 0), (0x5F3A9C01, 42), (u64::MAX, u64::MAX), (1, 0)] {
            let cursor = Cursor { epoch, seq };
            let text = cursor.to_string();
            assert!(text.starts_with("d-"));
            assert_eq!(Cursor::parse(&text), Ok(cursor), "{text}");
        }
        assert_eq!(
            Cursor {
                epoch: 0xBC1A113,
                seq: 7
            }
            .to_string(),
            "d-BC1A113-7"
        );
    }

    #[test]
    fn foreign_and_garbled_cursors_are_refused() {
        for text in [
            "",
            "d-",
            "d--",
            "d-1-",
            "d--1",
            "d-BC1A113-B,0|C,0|D,1",
            "d-C1C51420-a,6|h,0|i,1",
            "d-BC1A113-B",
            "d-bc1a113-1",
            "d-01-1",
            "d-1-01",
            "d-1-1 ",
            " d-1-1",
            "D-1-1",
            "x-1-1",
            "d-1-1-1",
            "d-1-+1",
            "d-1-18446744073709551616",
            "d-10000000000000000-1",
            "d-FFFFFFFFFFFFFFFF-184467440737095516150",
            "d-1-١",
        ] {
            assert_eq!(Cursor::parse(text), Err(CursorError), "{text:?}");
        }
    }

    // --- forms ----------------------------------------------------------------------------

    #[test]
    fn form_fields_read_like_the_real_server() {
        let form = FormFields::parse(
            b"messageId=d-C1C51420-a%2C7%7Ch%2C0%7Ci%2C1&groupsToken=a%2Bb%2F%3D",
        );
        assert_eq!(form.message_id.as_deref(), Some("d-C1C51420-a,7|h,0|i,1"));
        assert_eq!(form.groups_token.as_deref(), Some("a+b/="));
        assert_eq!(form.data, None);

        let form = FormFields::parse(
            b"data=%7B%22H%22%3A%22chathub%22%2C%22M%22%3A%22Send%22%2C%22A%22%3A%5B%22a+b%22%5D%2C%22I%22%3A1%7D",
        );
        assert_eq!(
            form.data.as_deref(),
            Some(r#"{"H":"chathub","M":"Send","A":["a b"],"I":1}"#)
        );
        // Key case, repeated keys (the first counts), empty values, other fields.
        assert_eq!(FormFields::parse(b"DATA=x").data.as_deref(), Some("x"));
        assert_eq!(
            FormFields::parse(b"data=x&data=y").data.as_deref(),
            Some("x")
        );
        assert_eq!(
            FormFields::parse(b"data=x&data=").data.as_deref(),
            Some("x")
        );
        assert_eq!(FormFields::parse(b"data=&data=x").data, None);
        assert_eq!(
            FormFields::parse(b"x=1&data=y&z").data.as_deref(),
            Some("y")
        );
        assert_eq!(FormFields::parse(b"data").data, None);
        assert_eq!(FormFields::parse(b"").data, None);
        assert_eq!(
            FormFields::parse(b"messageid=&groupstoken=%zz")
                .groups_token
                .as_deref(),
            Some("%zz")
        );
        assert_eq!(
            FormFields::parse(b"messageid=&groupstoken=").message_id,
            None
        );
    }
}
