//! The backplane's wire format without I/O: channel names and the MessagePack envelopes published
//! on them, as ASP.NET Core's StackExchange.Redis backplane (`RedisHubLifetimeManager`) writes
//! and reads them.
//!
//! # Channels
//!
//! Every hub type has its own set of channels, named after the hub's full .NET type name
//! (`Namespace.Type`, e.g. `Peer.ChatHub`), written `{H}` below. An optional channel prefix `{P}`
//! (the StackExchange.Redis `ChannelPrefix` setting) is prepended to every channel name on the wire
//! with no separator; all servers sharing a Redis must use the same prefix bytes. Group names,
//! user ids and connection ids are inserted as they are (no escaping, case kept).
//!
//! | Channel | Payload | Used for |
//! |---|---|---|
//! | `{P}{H}:all` | [`InvocationEnvelope`] | all connections (minus the excluded ones) |
//! | `{P}{H}:group:{group}` | [`InvocationEnvelope`] | the members of a group |
//! | `{P}{H}:user:{user id}` | [`InvocationEnvelope`] | every connection of a user |
//! | `{P}{H}:connection:{connection id}` | [`InvocationEnvelope`] | one connection, also client-result calls |
//! | `{P}{H}:internal:groups` | [`GroupCommand`] | group add/remove for a connection on another server |
//! | `{P}{H}:internal:ack:{server name}` | [`Ack`] | the owner applied a group command |
//! | `{P}{H}:internal:return:{server name}` | [`CompletionEnvelope`] | a client answered a client-result call |
//!
//! [`Channels`] builds these names and classifies incoming ones ([`Channels::classify`]).
//!
//! # Envelopes
//!
//! Each payload is a single MessagePack value with no type tag (the channel says what it is):
//!
//! ```text
//! InvocationEnvelope = [ excluded: [str...], messages: { str protocol: bin frame } ]
//!                    | [ excluded, messages, invocation id: str, return channel: str ]
//! GroupCommand       = [ id: int, server name: str, action: int (1 add, 2 remove), group: str,
//!                        connection id: str ]
//! Ack                = [ id: int ]
//! CompletionEnvelope = [ protocol: str, frame: bin ]
//! ```
//!
//! A *frame* is one complete hub message in the named hub protocol's encoding, framing included
//! (the JSON text and its `0x1E` terminator, or the MessagePack VarInt length prefix and body), so
//! a receiving server writes it to its client connection as it is.
//!
//! The encoders write the shortest MessagePack form of every length and integer, as the ASP.NET
//! Core servers do, so our payloads are byte-for-byte what they publish. The decoders accept any
//! width of integers, strings, binaries, arrays and maps, ignore extra trailing array elements
//! (room for future fields), reject bytes after the value, never panic and never allocate more
//! than the input's size, whatever the input.
//!
//! Decoders do not bound the payload size themselves: the caller bounds what it reads from Redis.

use std::convert::Infallible;
use std::fmt;
use std::io::Read;
use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;
use rmp::Marker;
use rmp::encode::{ByteBuf, ValueWriteError};

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

/// The channel names of one hub type, with the channel prefix applied.
///
/// Built from the prefix and the hub's full .NET type name; every method returns the exact
/// channel name to `SUBSCRIBE`/`PUBLISH`, as a UTF-8 string.
///
/// ```
/// use signalr_redis::protocol::{ChannelKind, Channels};
///
/// let channels = Channels::new(Some("App"), "Peer.ChatHub");
/// assert_eq!(channels.all(), "AppPeer.ChatHub:all");
/// assert_eq!(channels.group("room1"), "AppPeer.ChatHub:group:room1");
/// assert_eq!(
///     channels.classify(b"AppPeer.ChatHub:user:bob"),
///     ChannelKind::User("bob")
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// The prefix bytes; empty for none.
    prefix: String,
    /// `{hub name}:`, the start of every unprefixed channel name.
    hub_base: String,
}

impl Channels {
    /// Channels of the hub whose full .NET type name is `hub_name` (e.g. `Peer.ChatHub`), with the
    /// channel `prefix` (`None` or `Some("")` for none) prepended to every name.
    pub fn new(prefix: Option<&str>, hub_name: &str) -> Self {
        Channels {
            prefix: prefix.unwrap_or_default().to_owned(),
            hub_base: format!("{hub_name}:"),
        }
    }

    /// The channel prefix; empty when there is none.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hub's full type name the channels are named after.
    pub fn hub_name(&self) -> &str {
        self.hub_base.strip_suffix(':').unwrap_or(&self.hub_base)
    }

    /// `{P}{H}:{rest}`.
    fn channel(&self, rest: &[&str]) -> String {
        let len =
            self.prefix.len() + self.hub_base.len() + rest.iter().map(|s| s.len()).sum::<usize>();
        let mut name = String::with_capacity(len);
        name.push_str(&self.prefix);
        name.push_str(&self.hub_base);
        for part in rest {
            name.push_str(part);
        }
        name
    }

    /// `{P}{H}:all`: messages for every connection of the hub. Every server subscribes to it.
    pub fn all(&self) -> String {
        self.channel(&["all"])
    }

    /// `{P}{H}:group:{group}`: messages for the members of `group` (case-sensitive, as is).
    pub fn group(&self, group: &str) -> String {
        self.channel(&["group:", group])
    }

    /// `{P}{H}:user:{user_id}`: messages for every connection of a user.
    pub fn user(&self, user_id: &str) -> String {
        self.channel(&["user:", user_id])
    }

    /// `{P}{H}:connection:{connection_id}`: messages for one connection, subscribed by the server
    /// that owns it. Client-result calls come here too.
    pub fn connection(&self, connection_id: &str) -> String {
        self.channel(&["connection:", connection_id])
    }

    /// `{P}{H}:internal:groups`: [`GroupCommand`]s. Every server subscribes to it.
    pub fn internal_groups(&self) -> String {
        self.channel(&["internal:groups"])
    }

    /// `{P}{H}:internal:ack:{server_name}`: [`Ack`]s for the group commands `server_name` sent.
    /// The owner of the connection publishes to the channel of the command's
    /// [`GroupCommand::server_name`].
    pub fn ack(&self, server_name: &str) -> String {
        self.channel(&["internal:ack:", server_name])
    }

    /// `{P}{H}:internal:return:{server_name}`: [`CompletionEnvelope`]s answering the client-result
    /// calls `server_name` made. This is the name to subscribe to; inside an invocation envelope
    /// the return channel is written without the prefix ([`Channels::return_channel_in_payload`]).
    pub fn return_channel(&self, server_name: &str) -> String {
        self.channel(&["internal:return:", server_name])
    }

    /// `{H}:internal:return:{server_name}`, *without* the prefix: the return channel as written in
    /// [`ClientResultRoute::return_channel`]. The server that publishes the answer adds its own
    /// prefix ([`Channels::prefixed`]).
    pub fn return_channel_in_payload(&self, server_name: &str) -> String {
        let mut name = self.return_channel(server_name);
        name.drain(..self.prefix.len());
        name
    }

    /// `{P}{channel}`: the wire name of an unprefixed channel name, such as the return channel
    /// found in a client-result invocation.
    pub fn prefixed(&self, channel: &str) -> String {
        let mut name = String::with_capacity(self.prefix.len() + channel.len());
        name.push_str(&self.prefix);
        name.push_str(channel);
        name
    }

    /// Says which of this hub's channels the (prefixed) wire name `channel` is, with the group,
    /// user, connection id or server name it names.
    ///
    /// Anything else is [`ChannelKind::Unknown`]: another prefix or hub, an unknown suffix, or a
    /// name that is not UTF-8.
    pub fn classify<'a>(&self, channel: &'a [u8]) -> ChannelKind<'a> {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return ChannelKind::Unknown;
        };
        let Some(rest) = channel
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(self.hub_base.as_str()))
        else {
            return ChannelKind::Unknown;
        };
        if rest == "all" {
            ChannelKind::All
        } else if rest == "internal:groups" {
            ChannelKind::InternalGroups
        } else if let Some(server) = rest.strip_prefix("internal:ack:") {
            ChannelKind::Ack(server)
        } else if let Some(server) = rest.strip_prefix("internal:return:") {
            ChannelKind::Return(server)
        } else if let Some(group) = rest.strip_prefix("group:") {
            ChannelKind::Group(group)
        } else if let Some(user) = rest.strip_prefix("user:") {
            ChannelKind::User(user)
        } else if let Some(id) = rest.strip_prefix("connection:") {
            ChannelKind::Connection(id)
        } else {
            ChannelKind::Unknown
        }
    }
}

/// Which channel of a hub a wire channel name is ([`Channels::classify`]); the payload type
/// follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind<'a> {
    /// `{H}:all`: an [`InvocationEnvelope`].
    All,
    /// `{H}:group:{0}`: an [`InvocationEnvelope`] for group `{0}`.
    Group(&'a str),
    /// `{H}:user:{0}`: an [`InvocationEnvelope`] for user `{0}`.
    User(&'a str),
    /// `{H}:connection:{0}`: an [`InvocationEnvelope`] for connection `{0}`.
    Connection(&'a str),
    /// `{H}:internal:groups`: a [`GroupCommand`].
    InternalGroups,
    /// `{H}:internal:ack:{0}`: an [`Ack`] for server `{0}`.
    Ack(&'a str),
    /// `{H}:internal:return:{0}`: a [`CompletionEnvelope`] for server `{0}`.
    Return(&'a str),
    /// Not one of this hub's channels.
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Server names and invocation ids
// ---------------------------------------------------------------------------------------------

/// The name a server's backplane goes by: `{machine name}_{32 lowercase hex digits}`, e.g.
/// `web1_0f3c…`. Other servers treat it as opaque; it names the server's ack and return channels
/// and is carried in its group commands and client-result calls.
///
/// ASP.NET Core makes one per hub type per process, new at every start; do the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

/// The longest machine-name part of a [`ServerName`], in bytes.
const MAX_MACHINE_NAME: usize = 63;

impl ServerName {
    /// A new unique name for this machine: its host name (from `/etc/hostname`, else the
    /// `HOSTNAME` environment variable, else `rust`), sanitised as in
    /// [`ServerName::with_machine_name`], `_`, then 128 random bits as 32 lowercase hex digits.
    pub fn generate() -> Self {
        Self::with_machine_name(&machine_name().unwrap_or_default())
    }

    /// A new unique name with `machine` as the machine-name part.
    ///
    /// Only ASCII letters, digits, `-`, `.` and `_` of `machine` are kept (so the name holds no
    /// whitespace and none of the Redis pattern characters `*?[]\`), cut to 63 bytes; `rust` when
    /// nothing is left.
    pub fn with_machine_name(machine: &str) -> Self {
        let mut name: String = machine
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .take(MAX_MACHINE_NAME)
            .collect();
        if name.is_empty() {
            name.push_str("rust");
        }
        let suffix: u128 = rand::random();
        ServerName(format!("{name}_{suffix:032x}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ServerName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<ServerName> for String {
    fn from(name: ServerName) -> Self {
        name.0
    }
}

/// The host name, if one can be found: the first line of `/etc/hostname` (at most 256 bytes read),
/// else `$HOSTNAME`.
fn machine_name() -> Option<String> {
    let from_file = std::fs::File::open("/etc/hostname").ok().and_then(|file| {
        let mut bytes = Vec::new();
        file.take(256).read_to_end(&mut bytes).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let line = text.lines().next().unwrap_or_default().trim();
        (!line.is_empty()).then(|| line.to_owned())
    });
    from_file.or_else(|| {
        std::env::var("HOSTNAME")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
    })
}

/// A new invocation id for a client-result call made through the backplane: 16 random bytes in
/// standard Base64 (`A–Z a–z 0–9 + /`) without the `==` padding, so always 22 characters, e.g.
/// `pL4706asqUGOvBmtB+kzJQ`.
///
/// The id goes into the invocation's frames and [`ClientResultRoute::invocation_id`]; it must be
/// unique among the calls the server has pending, which 128 random bits make it.
pub fn new_invocation_id() -> String {
    let bytes: [u8; 16] = rand::random();
    STANDARD_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Envelopes
// ---------------------------------------------------------------------------------------------

/// A hub message for connections on other servers, published on the `all`, `group`, `user` and
/// `connection` channels.
///
/// Wire form: `[excluded, messages]`, or `[excluded, messages, invocation id, return channel]` for
/// a client-result call ([`InvocationEnvelope::client_result`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationEnvelope {
    /// Connection ids that must not get the message (AllExcept, Others, GroupExcept...), compared
    /// by exact string equality. Receivers apply it on `all` and `group` channels only; it is
    /// written as an array even when empty.
    pub excluded: Vec<String>,
    /// The message once per hub protocol, in order: protocol name (`json`, `messagepack`, matched
    /// by exact name) to the complete framed message in that protocol. Publish one entry per
    /// protocol a receiving connection may use; ASP.NET Core servers publish `json` then
    /// `messagepack`.
    pub messages: Vec<(String, Bytes)>,
    /// For a client-result call (an invocation with an id sent to one connection on another
    /// server), where the answer goes; `None` for a plain send.
    pub client_result: Option<ClientResultRoute>,
}

/// Where the owner of a connection sends the answer to a client-result call
/// ([`InvocationEnvelope::client_result`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResultRoute {
    /// The invocation id, the same as in every frame of the envelope ([`new_invocation_id`]).
    pub invocation_id: String,
    /// The caller's return channel *without* the channel prefix
    /// ([`Channels::return_channel_in_payload`]); the answering server publishes the
    /// [`CompletionEnvelope`] to it with its prefix added ([`Channels::prefixed`]).
    pub return_channel: String,
}

impl InvocationEnvelope {
    /// The frame for `protocol` (exact, case-sensitive name): the first entry of
    /// [`InvocationEnvelope::messages`] with that name.
    pub fn message(&self, protocol: &str) -> Option<&Bytes> {
        self.messages
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, frame)| frame)
    }

    /// Whether `connection_id` is in [`InvocationEnvelope::excluded`].
    pub fn is_excluded(&self, connection_id: &str) -> bool {
        self.excluded.iter().any(|id| id == connection_id)
    }

    /// The MessagePack payload to publish.
    ///
    /// # Errors
    /// [`EncodeError::TooLong`] when a string, frame or list is longer than MessagePack can say
    /// (2³² − 1 bytes or elements).
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let size = 16
            + self.excluded.iter().map(|id| id.len() + 5).sum::<usize>()
            + self
                .messages
                .iter()
                .map(|(name, frame)| name.len() + frame.len() + 10)
                .sum::<usize>()
            + self.client_result.as_ref().map_or(0, |route| {
                route.invocation_id.len() + route.return_channel.len() + 10
            });
        let mut w = Writer::with_capacity(size);
        w.array_len(
            if self.client_result.is_some() { 4 } else { 2 },
            "invocation envelope",
        )?;
        w.array_len(self.excluded.len(), "excluded connection ids")?;
        for id in &self.excluded {
            w.str(id, "excluded connection id")?;
        }
        w.map_len(self.messages.len(), "messages")?;
        for (protocol, frame) in &self.messages {
            w.str(protocol, "protocol name")?;
            w.bin(frame, "frame")?;
        }
        if let Some(route) = &self.client_result {
            w.str(&route.invocation_id, "invocation id")?;
            w.str(&route.return_channel, "return channel")?;
        }
        Ok(w.finish())
    }

    /// Reads a payload from an `all`, `group`, `user` or `connection` channel. The frames are
    /// slices of `payload` (no copy).
    ///
    /// Besides the shortest forms, this accepts a nil excluded list (as empty), frames written as
    /// MessagePack strings (the old "raw" type) and extra elements after the fourth.
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not exactly one such envelope: truncated, a wrong type,
    /// an array of other than 2 or at least 4 elements, text that is not UTF-8, or trailing bytes.
    pub fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        const WHAT: &str = "invocation envelope";
        let mut r = Reader::new(payload);
        let len = r.array_len(WHAT)?;
        if len < 2 || len == 3 {
            return Err(DecodeError::ArrayLength {
                what: WHAT,
                found: len,
                expected: "2, or 4 or more",
            });
        }
        let excluded = if r.peek() == Some(0xc0) {
            r.pos += 1;
            Vec::new()
        } else {
            let count = r.array_len("excluded connection ids")?;
            let mut excluded = Vec::with_capacity(count.min(r.remaining()));
            for _ in 0..count {
                excluded.push(r.str("excluded connection id")?.to_owned());
            }
            excluded
        };
        let count = r.map_len("messages")?;
        let mut messages = Vec::with_capacity(count.min(r.remaining() / 2));
        for _ in 0..count {
            let protocol = r.str("protocol name")?.to_owned();
            let frame = payload.slice(r.bin("frame")?);
            messages.push((protocol, frame));
        }
        let client_result = if len >= 4 {
            Some(ClientResultRoute {
                invocation_id: r.str("invocation id")?.to_owned(),
                return_channel: r.str("return channel")?.to_owned(),
            })
        } else {
            None
        };
        r.skip_values(len - if len >= 4 { 4 } else { 2 }, WHAT)?;
        r.finish()?;
        Ok(InvocationEnvelope {
            excluded,
            messages,
            client_result,
        })
    }
}

/// Whether a [`GroupCommand`] adds or removes (wire codes 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GroupAction {
    /// Add the connection to the group (code 1).
    Add = 1,
    /// Remove the connection from the group (code 2).
    Remove = 2,
}

impl GroupAction {
    /// The wire code: 1 for add, 2 for remove.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The action with wire code `code`; `None` for anything but 1 and 2.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(GroupAction::Add),
            2 => Some(GroupAction::Remove),
            _ => None,
        }
    }
}

/// A request to add a connection to a group or remove it, published on `internal:groups` by the
/// server whose code asked, when the connection is not local to it.
///
/// Every server receives it; only the owner of the connection acts, then publishes an [`Ack`]
/// with the same id to the `internal:ack` channel of [`GroupCommand::server_name`].
///
/// Wire form: `[id, server name, action, group, connection id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommand {
    /// The sender's id for this command, echoed by the [`Ack`]. ASP.NET Core counts from 1 per
    /// server name; ids need only be unique among the sender's pending commands. The range is
    /// .NET's `int`, which is what an ASP.NET Core server can read.
    pub id: i32,
    /// The sender's [`ServerName`]: the ack goes to its `internal:ack` channel.
    pub server_name: String,
    /// Add or remove.
    pub action: GroupAction,
    /// The group name, as is (case-sensitive).
    pub group: String,
    /// The connection to add or remove.
    pub connection_id: String,
}

impl GroupCommand {
    /// The MessagePack payload to publish.
    ///
    /// # Errors
    /// [`EncodeError::TooLong`] when a string is 2³² bytes or longer.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut w = Writer::with_capacity(
            24 + self.server_name.len() + self.group.len() + self.connection_id.len(),
        );
        w.array_len(5, "group command")?;
        w.int(self.id.into());
        w.str(&self.server_name, "server name")?;
        w.int(self.action.code().into());
        w.str(&self.group, "group")?;
        w.str(&self.connection_id, "connection id")?;
        Ok(w.finish())
    }

    /// Reads a payload from the `internal:groups` channel; extra elements after the fifth are
    /// ignored.
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not exactly one such command: truncated, a wrong type,
    /// fewer than 5 elements, an id outside .NET's `int`, an action other than 1 or 2, text that
    /// is not UTF-8, or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "group command";
        let mut r = Reader::new(payload);
        let len = r.array_len(WHAT)?;
        if len < 5 {
            return Err(DecodeError::ArrayLength {
                what: WHAT,
                found: len,
                expected: "5 or more",
            });
        }
        let id = r.i32("group command id")?;
        let server_name = r.str("server name")?.to_owned();
        let offset = r.pos;
        let code = r.int("group action")?;
        let action =
            GroupAction::from_code(code).ok_or(DecodeError::UnknownGroupAction { code, offset })?;
        let group = r.str("group")?.to_owned();
        let connection_id = r.str("connection id")?.to_owned();
        r.skip_values(len - 5, WHAT)?;
        r.finish()?;
        Ok(GroupCommand {
            id,
            server_name,
            action,
            group,
            connection_id,
        })
    }
}

/// The owner's answer to a [`GroupCommand`], published on the `internal:ack` channel of the
/// command's sender once the command is applied (also when it changed nothing).
///
/// Wire form: `[id]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The [`GroupCommand::id`] being acknowledged.
    pub id: i32,
}

impl Ack {
    /// The MessagePack payload to publish (2 bytes for ids up to 127, at most 6).
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(6);
        // An array of one element is always a fixarray.
        w.array_len_small(1);
        w.int(self.id.into());
        w.finish()
    }

    /// Reads a payload from an `internal:ack` channel; extra elements after the first are
    /// ignored.
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not exactly one ack: truncated, a wrong type, an empty
    /// array, an id outside .NET's `int`, or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "ack";
        let mut r = Reader::new(payload);
        let len = r.array_len(WHAT)?;
        if len < 1 {
            return Err(DecodeError::ArrayLength {
                what: WHAT,
                found: len,
                expected: "1 or more",
            });
        }
        let id = r.i32("ack id")?;
        r.skip_values(len - 1, WHAT)?;
        r.finish()?;
        Ok(Ack { id })
    }
}

/// The answer to a client-result call, published by the connection's owner on the caller's
/// `internal:return` channel: the client's Completion message, once, in the protocol the client
/// speaks.
///
/// Wire form: `[protocol, frame]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionEnvelope {
    /// The hub protocol name of the frame (`json`, `messagepack`).
    pub protocol: String,
    /// The complete framed Completion message in that protocol.
    pub frame: Bytes,
}

impl CompletionEnvelope {
    /// The MessagePack payload to publish.
    ///
    /// # Errors
    /// [`EncodeError::TooLong`] when the protocol name or the frame is 2³² bytes or longer.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut w = Writer::with_capacity(16 + self.protocol.len() + self.frame.len());
        w.array_len_small(2);
        w.str(&self.protocol, "protocol name")?;
        w.bin(&self.frame, "frame")?;
        Ok(w.finish())
    }

    /// Reads a payload from an `internal:return` channel. The frame is a slice of `payload` (no
    /// copy). A frame written as a MessagePack string (the old "raw" type) and extra elements
    /// after the second are accepted.
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not exactly one such envelope: truncated, a wrong type,
    /// fewer than 2 elements, text that is not UTF-8, or trailing bytes.
    pub fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        const WHAT: &str = "completion envelope";
        let mut r = Reader::new(payload);
        let len = r.array_len(WHAT)?;
        if len < 2 {
            return Err(DecodeError::ArrayLength {
                what: WHAT,
                found: len,
                expected: "2 or more",
            });
        }
        let protocol = r.str("protocol name")?.to_owned();
        let frame = payload.slice(r.bin("frame")?);
        r.skip_values(len - 2, WHAT)?;
        r.finish()?;
        Ok(CompletionEnvelope { protocol, frame })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An envelope could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string, binary or list is longer than a MessagePack length can say (2³² − 1).
    #[error("{what} is too long for MessagePack: {len} (the limit is 4294967295)")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length, in bytes for strings and frames, in elements for lists.
        len: usize,
    },
}

/// A payload is not a valid envelope. Offsets are byte positions in the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends inside a value, or a declared length is longer than what is left.
    #[error("{what}: the payload ends at byte {offset}, {needed} more byte(s) needed")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Where the missing bytes would start (the payload's length).
        offset: usize,
        /// How many more bytes the value needs, at least.
        needed: usize,
    },
    /// A value of another MessagePack type than the field needs.
    #[error("{what}: expected {expected}, found marker byte 0x{marker:02x} at byte {offset}")]
    WrongType {
        /// The field being read.
        what: &'static str,
        /// The type(s) the field may have.
        expected: &'static str,
        /// The MessagePack marker byte found.
        marker: u8,
        /// The marker's position.
        offset: usize,
    },
    /// An envelope array with a number of elements its kind does not allow.
    #[error("{what}: an array of {found} element(s), expected {expected}")]
    ArrayLength {
        /// The envelope.
        what: &'static str,
        /// The element count found.
        found: usize,
        /// The counts allowed.
        expected: &'static str,
    },
    /// An integer that does not fit the field (ids are .NET `int`s).
    #[error("{what}: integer out of range at byte {offset}")]
    IntegerOutOfRange {
        /// The field being read.
        what: &'static str,
        /// The integer's marker position.
        offset: usize,
    },
    /// A string that is not valid UTF-8.
    #[error("{what}: the string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// The string's marker position.
        offset: usize,
    },
    /// A group command whose action is neither 1 (add) nor 2 (remove).
    #[error("group command: unknown action {code} at byte {offset} (1 = add, 2 = remove)")]
    UnknownGroupAction {
        /// The action code found.
        code: i64,
        /// Its position.
        offset: usize,
    },
    /// Bytes after the envelope's value.
    #[error("{count} byte(s) after the envelope, from byte {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// MessagePack writing and reading
// ---------------------------------------------------------------------------------------------

/// Unwraps the result of an rmp write into a [`ByteBuf`], which cannot fail.
fn written<T>(result: Result<T, ValueWriteError<Infallible>>) -> T {
    match result {
        Ok(value) => value,
        Err(
            ValueWriteError::InvalidMarkerWrite(never) | ValueWriteError::InvalidDataWrite(never),
        ) => match never {},
    }
}

/// `len` as a MessagePack length, or [`EncodeError::TooLong`].
fn wire_len(len: usize, what: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLong { what, len })
}

/// Writes MessagePack values in their shortest forms (rmp picks them).
struct Writer {
    buf: ByteBuf,
}

impl Writer {
    fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: ByteBuf::with_capacity(capacity),
        }
    }

    fn array_len(&mut self, len: usize, what: &'static str) -> Result<(), EncodeError> {
        written(rmp::encode::write_array_len(
            &mut self.buf,
            wire_len(len, what)?,
        ));
        Ok(())
    }

    fn array_len_small(&mut self, len: u8) {
        written(rmp::encode::write_array_len(&mut self.buf, len.into()));
    }

    fn map_len(&mut self, len: usize, what: &'static str) -> Result<(), EncodeError> {
        written(rmp::encode::write_map_len(
            &mut self.buf,
            wire_len(len, what)?,
        ));
        Ok(())
    }

    fn str(&mut self, value: &str, what: &'static str) -> Result<(), EncodeError> {
        wire_len(value.len(), what)?;
        written(rmp::encode::write_str(&mut self.buf, value));
        Ok(())
    }

    fn bin(&mut self, value: &[u8], what: &'static str) -> Result<(), EncodeError> {
        wire_len(value.len(), what)?;
        written(rmp::encode::write_bin(&mut self.buf, value));
        Ok(())
    }

    /// Shortest form; non-negative values use the unsigned forms (`cc b4` for 180), as .NET does.
    fn int(&mut self, value: i64) {
        written(rmp::encode::write_sint(&mut self.buf, value));
    }

    fn finish(self) -> Bytes {
        Bytes::from(self.buf.into_vec())
    }
}

/// Reads MessagePack values from a payload, checking every length against what is left.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn truncated(&self, what: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            what,
            offset: self.buf.len(),
            needed,
        }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(self.truncated(what, n - remaining));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// The range of the next `n` bytes in the payload.
    fn take_range(&mut self, n: usize, what: &'static str) -> Result<Range<usize>, DecodeError> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(start..start + n)
    }

    /// A big-endian unsigned integer of `n` (1, 2, 4 or 8) bytes.
    fn be(&mut self, n: usize, what: &'static str) -> Result<u64, DecodeError> {
        Ok(self
            .take(n, what)?
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)))
    }

    /// A length of `n` bytes, as a `usize`.
    fn be_len(&mut self, n: usize, what: &'static str) -> Result<usize, DecodeError> {
        // A length that does not fit a usize cannot fit in memory either: `take` reports it.
        let value = self.be(n, what)?;
        Ok(usize::try_from(value).unwrap_or(usize::MAX))
    }

    /// The marker byte and its position.
    fn marker(&mut self, what: &'static str) -> Result<(Marker, u8, usize), DecodeError> {
        let offset = self.pos;
        let byte = self.take(1, what)?[0];
        Ok((Marker::from_u8(byte), byte, offset))
    }

    fn wrong_type(
        what: &'static str,
        expected: &'static str,
        marker: u8,
        offset: usize,
    ) -> DecodeError {
        DecodeError::WrongType {
            what,
            expected,
            marker,
            offset,
        }
    }

    fn array_len(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        match self.marker(what)? {
            (Marker::FixArray(n), _, _) => Ok(n.into()),
            (Marker::Array16, _, _) => self.be_len(2, what),
            (Marker::Array32, _, _) => self.be_len(4, what),
            (_, byte, offset) => Err(Self::wrong_type(what, "an array", byte, offset)),
        }
    }

    fn map_len(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        match self.marker(what)? {
            (Marker::FixMap(n), _, _) => Ok(n.into()),
            (Marker::Map16, _, _) => self.be_len(2, what),
            (Marker::Map32, _, _) => self.be_len(4, what),
            (_, byte, offset) => Err(Self::wrong_type(what, "a map", byte, offset)),
        }
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let (len, offset) = match self.marker(what)? {
            (Marker::FixStr(n), _, offset) => (n.into(), offset),
            (Marker::Str8, _, offset) => (self.be_len(1, what)?, offset),
            (Marker::Str16, _, offset) => (self.be_len(2, what)?, offset),
            (Marker::Str32, _, offset) => (self.be_len(4, what)?, offset),
            (_, byte, offset) => return Err(Self::wrong_type(what, "a string", byte, offset)),
        };
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what, offset })
    }

    /// A binary (or, as older writers did, a string) value: its range in the payload.
    fn bin(&mut self, what: &'static str) -> Result<Range<usize>, DecodeError> {
        let len = match self.marker(what)? {
            (Marker::Bin8 | Marker::Str8, _, _) => self.be_len(1, what)?,
            (Marker::Bin16 | Marker::Str16, _, _) => self.be_len(2, what)?,
            (Marker::Bin32 | Marker::Str32, _, _) => self.be_len(4, what)?,
            (Marker::FixStr(n), _, _) => n.into(),
            (_, byte, offset) => return Err(Self::wrong_type(what, "a binary", byte, offset)),
        };
        self.take_range(len, what)
    }

    /// Any integer form, as an `i64` (a uint64 above `i64::MAX` is out of range).
    fn int(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let (marker, byte, offset) = self.marker(what)?;
        let out_of_range = DecodeError::IntegerOutOfRange { what, offset };
        Ok(match marker {
            Marker::FixPos(n) => n.into(),
            Marker::FixNeg(n) => n.into(),
            Marker::U8 => self.be(1, what)? as i64,
            Marker::U16 => self.be(2, what)? as i64,
            Marker::U32 => self.be(4, what)? as i64,
            Marker::U64 => i64::try_from(self.be(8, what)?).map_err(|_| out_of_range)?,
            // Sign-extend from the value's width.
            Marker::I8 => i64::from(self.be(1, what)? as u8 as i8),
            Marker::I16 => i64::from(self.be(2, what)? as u16 as i16),
            Marker::I32 => i64::from(self.be(4, what)? as u32 as i32),
            Marker::I64 => self.be(8, what)? as i64,
            _ => return Err(Self::wrong_type(what, "an integer", byte, offset)),
        })
    }

    /// An integer that fits .NET's `int`.
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        let offset = self.pos;
        let value = self.int(what)?;
        i32::try_from(value).map_err(|_| DecodeError::IntegerOutOfRange { what, offset })
    }

    /// Skips `count` complete values of any type, without recursion (nesting depth costs
    /// nothing) and without allocating.
    fn skip_values(&mut self, count: usize, what: &'static str) -> Result<(), DecodeError> {
        // Values still to skip. Each takes at least one byte, so more than what is left is a
        // truncation; checking that after every step also keeps the counter small.
        let mut pending = count as u64;
        while pending > 0 {
            if pending > self.remaining() as u64 {
                let needed = pending - self.remaining() as u64;
                return Err(self.truncated(what, usize::try_from(needed).unwrap_or(usize::MAX)));
            }
            pending -= 1;
            let (marker, byte, offset) = self.marker(what)?;
            let skip = match marker {
                Marker::FixPos(_)
                | Marker::FixNeg(_)
                | Marker::Null
                | Marker::True
                | Marker::False => 0,
                Marker::U8 | Marker::I8 => 1,
                Marker::U16 | Marker::I16 => 2,
                Marker::U32 | Marker::I32 | Marker::F32 => 4,
                Marker::U64 | Marker::I64 | Marker::F64 => 8,
                Marker::FixStr(n) => n.into(),
                Marker::Str8 | Marker::Bin8 => self.be_len(1, what)?,
                Marker::Str16 | Marker::Bin16 => self.be_len(2, what)?,
                Marker::Str32 | Marker::Bin32 => self.be_len(4, what)?,
                // Type byte + data.
                Marker::FixExt1 => 2,
                Marker::FixExt2 => 3,
                Marker::FixExt4 => 5,
                Marker::FixExt8 => 9,
                Marker::FixExt16 => 17,
                Marker::Ext8 => 1 + self.be_len(1, what)?,
                Marker::Ext16 => 1 + self.be_len(2, what)?,
                Marker::Ext32 => 1 + self.be_len(4, what)?,
                Marker::FixArray(n) => {
                    pending += u64::from(n);
                    0
                }
                Marker::Array16 => {
                    pending += self.be(2, what)?;
                    0
                }
                Marker::Array32 => {
                    pending += self.be(4, what)?;
                    0
                }
                Marker::FixMap(n) => {
                    pending += 2 * u64::from(n);
                    0
                }
                Marker::Map16 => {
                    pending += 2 * self.be(2, what)?;
                    0
                }
                Marker::Map32 => {
                    pending += 2 * self.be(4, what)?;
                    0
                }
                Marker::Reserved => {
                    return Err(Self::wrong_type(what, "a MessagePack value", byte, offset));
                }
            };
            self.take(skip, what)?;
        }
        Ok(())
    }

    /// Checks that the whole payload was read.
    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                offset: self.pos,
                count,
            }),
        }
    }
}
