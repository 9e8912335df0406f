//! What a classic SignalR 2.x server sends a client, parsed without I/O (docs/protocol.md,
//! "Classic client"): the negotiate response (or a redirect), persistent-connection envelopes,
//! hub results, progress reports and client-method invocations.
//!
//! The server's own writers live in `signalr_protocol::classic`; this is the client's reading
//! side. Nothing here panics on any input: a message that does not parse is an `Err` or is
//! ignored by the caller.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{Error, Kind};

/// The protocol version the client asks for (`clientProtocol`), as the .NET and jQuery 2.4
/// clients do: 2.1 means "I apply the query string of a negotiate redirect".
pub(crate) const CLIENT_PROTOCOL: &str = "2.1";

/// The longest wait taken from a server's negotiate response: bigger values (or negative,
/// infinite, NaN ones) are clamped, so a hostile answer cannot make a timer overflow.
const MAX_SERVER_SECONDS: f64 = 24.0 * 3600.0;

/// The fields of a negotiate response the client uses.
#[derive(Debug, Clone)]
pub(crate) struct Negotiation {
    pub connection_token: String,
    pub connection_id: String,
    /// `None`: keep-alive is off on the server.
    pub keep_alive_timeout: Option<Duration>,
    pub disconnect_timeout: Duration,
    pub connection_timeout: Duration,
    pub try_web_sockets: bool,
    #[allow(dead_code)] // kept for logging
    pub protocol_version: String,
    pub transport_connect_timeout: Duration,
    pub long_poll_delay: Duration,
}

/// What negotiate answered.
#[derive(Debug)]
pub(crate) enum NegotiateReply {
    Connection(Negotiation),
    /// Protocol 2.0: negotiate again at `url`, with this bearer token (Azure SignalR Service).
    Redirect {
        url: String,
        access_token: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNegotiate {
    connection_token: Option<String>,
    connection_id: Option<String>,
    keep_alive_timeout: Option<f64>,
    disconnect_timeout: Option<f64>,
    connection_timeout: Option<f64>,
    try_web_sockets: Option<bool>,
    protocol_version: Option<String>,
    transport_connect_timeout: Option<f64>,
    long_poll_delay: Option<f64>,
    redirect_url: Option<String>,
    access_token: Option<String>,
    error: Option<String>,
    // The ASP.NET Core negotiate shape, to say so instead of failing obscurely.
    #[serde(rename = "availableTransports")]
    available_transports: Option<Value>,
    #[serde(rename = "negotiateVersion")]
    negotiate_version: Option<Value>,
}

fn seconds(value: Option<f64>, default: f64) -> Duration {
    let value = value.unwrap_or(default);
    let value = if value.is_finite() {
        value.clamp(0.0, MAX_SERVER_SECONDS)
    } else {
        default
    };
    Duration::from_secs_f64(value)
}

fn negotiate_error(message: impl Into<String>) -> Error {
    Error::new(Kind::Negotiate, message)
}

/// Whether the .NET 2.4 client accepts this server protocol version: 1.4 to 2.1.
fn supported_version(version: &str) -> bool {
    let mut parts = version.split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return false;
    };
    matches!((major, minor), (1, 4..) | (2, 0..=1))
}

/// Reads a negotiate response body.
///
/// # Errors
/// A negotiate error for a body that is not JSON, an `Error` answer, an ASP.NET Core server,
/// a missing token or id, or a protocol version outside 1.4–2.1 (the .NET client's message:
/// `You are using a version of the client that isn't compatible with the server. Client
/// version 2.1, server version X.`).
pub(crate) fn parse_negotiate(body: &[u8]) -> Result<NegotiateReply, Error> {
    let raw: RawNegotiate = serde_json::from_slice(body).map_err(|err| {
        Error::with_source(
            Kind::Negotiate,
            format!("The negotiate response is not a classic SignalR negotiate response: {err}"),
            err,
        )
    })?;
    if raw.available_transports.is_some() || raw.negotiate_version.is_some() {
        return Err(negotiate_error(
            "The server is an ASP.NET Core SignalR server: this classic (SignalR 2.x) client \
             cannot connect to it; use HubConnectionBuilder instead.",
        ));
    }
    if let Some(error) = raw.error {
        return Err(negotiate_error(error));
    }
    if let Some(url) = raw.redirect_url {
        return Ok(NegotiateReply::Redirect {
            url,
            access_token: raw.access_token,
        });
    }
    let version = raw.protocol_version.unwrap_or_default();
    if !supported_version(&version) {
        return Err(negotiate_error(format!(
            "You are using a version of the client that isn't compatible with the server. \
             Client version {CLIENT_PROTOCOL}, server version {version}."
        )));
    }
    let (Some(connection_token), Some(connection_id)) = (raw.connection_token, raw.connection_id)
    else {
        return Err(negotiate_error(
            "The negotiate response has no ConnectionToken or ConnectionId.",
        ));
    };
    Ok(NegotiateReply::Connection(Negotiation {
        connection_token,
        connection_id,
        keep_alive_timeout: raw.keep_alive_timeout.map(|s| seconds(Some(s), 20.0)),
        disconnect_timeout: seconds(raw.disconnect_timeout, 30.0),
        connection_timeout: seconds(raw.connection_timeout, 110.0),
        try_web_sockets: raw.try_web_sockets.unwrap_or(false),
        protocol_version: version,
        transport_connect_timeout: seconds(raw.transport_connect_timeout, 5.0),
        long_poll_delay: seconds(raw.long_poll_delay, 0.0),
    }))
}

/// One JSON object from the server: an envelope, a hub result or progress report, or a keep-alive.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ServerMessage {
    /// Envelope: cursor.
    #[serde(rename = "C")]
    pub cursor: Option<String>,
    /// Envelope: init flag (`S:1`). In a hub result `S` is caller state instead; see
    /// [`ServerMessage::state`].
    #[serde(rename = "S")]
    pub s: Option<Box<RawValue>>,
    /// Envelope: the server asks for a reconnect.
    #[serde(rename = "T")]
    pub t: Option<Value>,
    /// Envelope: a new groups token.
    #[serde(rename = "G")]
    pub groups_token: Option<String>,
    /// Envelope: the messages.
    #[serde(rename = "M")]
    pub messages: Option<Vec<Box<RawValue>>>,
    /// Envelope: a fatal error.
    #[serde(rename = "E")]
    pub error: Option<Value>,
    /// Hub result: the callback id.
    #[serde(rename = "I")]
    pub id: Option<Value>,
    /// Hub result: the value.
    #[serde(rename = "R")]
    pub result: Option<Box<RawValue>>,
    /// Hub result: a `HubException`.
    #[serde(rename = "H")]
    pub hub_exception: Option<Value>,
    /// Hub result: error data.
    #[serde(rename = "D")]
    pub data: Option<Value>,
    /// Progress: `{I, D}`.
    #[serde(rename = "P")]
    pub progress: Option<Progress>,
}

/// A progress report's body.
#[derive(Debug, Deserialize)]
pub(crate) struct Progress {
    #[serde(rename = "I")]
    pub id: Option<Value>,
    #[serde(rename = "D")]
    pub data: Option<Box<RawValue>>,
}

/// A client-method call inside an envelope's `M`.
#[derive(Debug, Deserialize)]
pub(crate) struct ClientInvocation {
    #[serde(rename = "H")]
    pub hub: String,
    #[serde(rename = "M")]
    pub method: String,
    #[serde(rename = "A", default)]
    pub arguments: Option<Vec<Box<RawValue>>>,
    #[serde(rename = "S", default)]
    pub state: Option<serde_json::Map<String, Value>>,
}

/// A callback id as text: strings as they are, numbers as written.
pub(crate) fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// How a hub method call ended, read from a hub result.
#[derive(Debug)]
pub(crate) enum CallOutcome {
    /// `R` (absent: `null`).
    Value(Box<RawValue>),
    Failed(Error),
}

impl ServerMessage {
    /// Parses one object.
    ///
    /// # Errors
    /// A protocol error when the text is not a JSON object of the expected shape.
    pub(crate) fn parse(text: &[u8]) -> Result<ServerMessage, Error> {
        serde_json::from_slice(text).map_err(|err| {
            Error::with_source(
                Kind::Protocol,
                format!("The server sent a message that is not classic SignalR JSON: {err}"),
                err,
            )
        })
    }

    /// A keep-alive `{}` (or any object without a known key).
    pub(crate) fn is_keep_alive(&self) -> bool {
        self.cursor.is_none()
            && self.messages.is_none()
            && self.id.is_none()
            && self.s.is_none()
            && self.t.is_none()
            && self.groups_token.is_none()
            && self.progress.is_none()
            && self.error.is_none()
    }

    /// An envelope's init flag: `"S":1`.
    pub(crate) fn is_init(&self) -> bool {
        self.id.is_none() && self.s.as_deref().is_some_and(|s| s.get() == "1")
    }

    /// An envelope's reconnect flag: `"T":1`.
    pub(crate) fn asks_reconnect(&self) -> bool {
        self.t.as_ref().is_some_and(|t| t == &Value::from(1))
    }

    /// A hub result's caller-state changes (`S` of an object with `I`).
    pub(crate) fn state(&self) -> Option<serde_json::Map<String, Value>> {
        let raw = self.s.as_deref()?;
        serde_json::from_str(raw.get()).ok()
    }

    /// A hub result's outcome, for the invocation named `method` of `hub`.
    pub(crate) fn outcome(&self) -> CallOutcome {
        match &self.error {
            Some(error) => {
                let message = match error {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let hub_exception = self
                    .hub_exception
                    .as_ref()
                    .is_some_and(|h| h == &Value::Bool(true));
                CallOutcome::Failed(Error::hub(message, hub_exception, self.data.clone()))
            }
            None => CallOutcome::Value(match &self.result {
                Some(raw) => raw.clone(),
                None => null(),
            }),
        }
    }
}

/// A JSON `null` as a raw value.
pub(crate) fn null() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_24_negotiate_response() {
        let body = br#"{"Url":"/signalr","ConnectionToken":"a+b/c=","ConnectionId":"6f1d","KeepAliveTimeout":20.0,"DisconnectTimeout":30.0,"ConnectionTimeout":110.0,"TryWebSockets":true,"ProtocolVersion":"2.0","TransportConnectTimeout":5.0,"LongPollDelay":0.0}"#;
        let NegotiateReply::Connection(n) = parse_negotiate(body).expect("parses") else {
            panic!("not a connection");
        };
        assert_eq!(n.connection_token, "a+b/c=");
        assert_eq!(n.keep_alive_timeout, Some(Duration::from_secs(20)));
        assert_eq!(n.disconnect_timeout, Duration::from_secs(30));
        assert!(n.try_web_sockets);
        let body = br#"{"Url":"/signalr","ConnectionToken":"t","ConnectionId":"i","KeepAliveTimeout":null,"DisconnectTimeout":-3,"ConnectionTimeout":1e300,"TryWebSockets":false,"ProtocolVersion":"1.5","TransportConnectTimeout":5.0,"LongPollDelay":0.0}"#;
        let NegotiateReply::Connection(n) = parse_negotiate(body).expect("parses") else {
            panic!("not a connection");
        };
        assert_eq!(n.keep_alive_timeout, None);
        assert_eq!(n.disconnect_timeout, Duration::ZERO);
        assert_eq!(n.connection_timeout, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn refuses_what_it_cannot_speak() {
        for (body, text) in [
            (
                &br#"{"ProtocolVersion":"1.2","ConnectionToken":"t","ConnectionId":"i"}"#[..],
                "server version 1.2",
            ),
            (br#"{"ProtocolVersion":"2.0","Error":"no way"}"#, "no way"),
            (
                br#"{"negotiateVersion":1,"connectionId":"x","availableTransports":[]}"#,
                "ASP.NET Core",
            ),
            (br#"{"ProtocolVersion":"2.0"}"#, "ConnectionToken"),
            (b"<html>", "not a classic"),
            (b"[1]", "not a classic"),
        ] {
            let err = parse_negotiate(body).expect_err("refused");
            assert!(err.is_negotiate(), "{err}");
            assert!(
                err.to_string().contains(text),
                "{err} should contain {text}"
            );
        }
        let reply = parse_negotiate(br#"{"ProtocolVersion":"2.0","RedirectUrl":"http://x/signalr?a=b","AccessToken":"jwt"}"#).expect("redirect");
        assert!(
            matches!(reply, NegotiateReply::Redirect { url, access_token: Some(t) } if url == "http://x/signalr?a=b" && t == "jwt")
        );
    }

    #[test]
    fn reads_envelopes_results_and_keep_alives() {
        let m = ServerMessage::parse(br#"{"C":"d-1,0|A,1","S":1,"M":[]}"#).expect("init");
        assert!(m.is_init() && !m.is_keep_alive());
        assert!(ServerMessage::parse(b"{}").expect("ka").is_keep_alive());
        let m = ServerMessage::parse(br#"{"S":{"seen":5},"R":5,"I":"0"}"#).expect("result");
        assert!(!m.is_init());
        assert_eq!(m.state().expect("state")["seen"], 5);
        assert!(matches!(m.outcome(), CallOutcome::Value(v) if v.get() == "5"));
        let m = ServerMessage::parse(br#"{"I":"1","E":"boom","H":true,"D":{"Code":42}}"#)
            .expect("error");
        let CallOutcome::Failed(err) = m.outcome() else {
            panic!("not an error")
        };
        assert!(err.is_server_error() && err.is_hub_exception());
        assert_eq!(err.error_data(), Some(&serde_json::json!({"Code": 42})));
        assert!(
            matches!(ServerMessage::parse(br#"{"I":"2"}"#).expect("void").outcome(), CallOutcome::Value(v) if v.get() == "null")
        );
        assert!(
            ServerMessage::parse(br#"{"T":1,"C":"x"}"#)
                .expect("t")
                .asks_reconnect()
        );
        for bad in [&b"not json"[..], b"[]", b"1", br#"{"M":7}"#, br#"{"C":1}"#] {
            assert!(ServerMessage::parse(bad).is_err(), "{bad:?}");
        }
    }
}
