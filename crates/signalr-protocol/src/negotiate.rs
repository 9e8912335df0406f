//! The body of `POST {hub}/negotiate` (docs/protocol.md, "Negotiate").

use serde::{Deserialize, Serialize};

use crate::query::{find_two, is_dotnet_true, parse_dotnet_int32};

/// A transport of the connection layer (docs/protocol.md, "Transports"); serialized with its ASP.NET name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportType {
    /// `WebSockets` (full duplex).
    WebSockets,
    /// `ServerSentEvents` (server to client) plus HTTP POST.
    ServerSentEvents,
    /// `LongPolling` (server to client) plus HTTP POST.
    LongPolling,
}

impl TransportType {
    /// The ASP.NET name, as in negotiate responses.
    pub fn name(self) -> &'static str {
        match self {
            TransportType::WebSockets => "WebSockets",
            TransportType::ServerSentEvents => "ServerSentEvents",
            TransportType::LongPolling => "LongPolling",
        }
    }
}

/// How a transport frames data: `Text` (UTF-8 only) or `Binary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferFormat {
    /// UTF-8 text: every transport carries it.
    Text,
    /// Arbitrary bytes: WebSockets and long polling only.
    Binary,
}

/// One entry of `availableTransports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTransport {
    /// The transport.
    pub transport: TransportType,
    /// The formats it carries (SSE: `Text` only).
    pub transfer_formats: Vec<TransferFormat>,
}

/// A negotiate response: success (v0 or v1), redirect (docs/protocol.md, "Redirects") or error (docs/protocol.md, "Negotiate versions").
///
/// Fields serialize in the order the .NET server writes them; absent optional fields are omitted,
/// and unknown fields are ignored when parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateResponse {
    /// `true` only when the server allows stateful reconnect and the client asked for it (docs/protocol.md, "Stateful reconnect").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_stateful_reconnect: bool,
    /// 0 or 1 (the version the server chose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiate_version: Option<u32>,
    /// Redirect target (docs/protocol.md, "Redirects").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Access token to use with `url` (docs/protocol.md, "Redirects").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The public connection id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// The secret connection token (version 1 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_token: Option<String>,
    /// The transports the client may use, in preference order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_transports: Option<Vec<AvailableTransport>>,
    /// A negotiate failure; still sent with HTTP 200 (docs/protocol.md, "Negotiate versions").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NegotiateResponse {
    /// An error response: `{"error":"..."}`.
    pub fn error(message: impl Into<String>) -> Self {
        NegotiateResponse {
            error: Some(message.into()),
            ..Default::default()
        }
    }
}

/// The query of `POST {hub}/negotiate` (docs/protocol.md, "Negotiate request"): the body is empty, everything is in
/// the query string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NegotiateRequest {
    /// `negotiateVersion`: 0 when absent; official clients send 1.
    pub negotiate_version: u32,
    /// `useStatefulReconnect=true` (docs/protocol.md, "Stateful reconnect").
    pub use_stateful_reconnect: bool,
}

impl NegotiateRequest {
    /// The highest negotiate version there is (docs/protocol.md, "Negotiate versions"); higher requests are answered with it.
    pub const MAX_VERSION: u32 = 1;

    /// Reads the request from decoded query pairs (e.g. `form_urlencoded::parse` of the query
    /// string), the way ASP.NET Core's negotiate does (docs/protocol.md, "Negotiate versions"); see [`QueryParam`](crate::QueryParam) for how keys
    /// and repeated keys are read:
    ///
    /// * `negotiateVersion`: absent = 0; otherwise its text (repeated values joined with `,`)
    ///   must be `Int32` text as [`parse_dotnet_int32`] reads it (white space around it is fine,
    ///   `1,1` is not); a version above [`Self::MAX_VERSION`] becomes it, one below
    ///   `minimum_version` is refused. (As in ASP.NET, a `minimum_version` above
    ///   [`Self::MAX_VERSION`] refuses lower versions but still answers with the maximum.)
    /// * `useStatefulReconnect`: set when its text is `true` for [`is_dotnet_true`].
    ///
    /// # Errors
    /// The text ASP.NET sends in the `error` property of an HTTP 200 response (docs/protocol.md, "Negotiate versions"):
    /// `The client requested a non-integer protocol version.` when the version text is not an
    /// Int32, and `The client requested version 'N', but the server does not support this
    /// version.` below `minimum_version` (an absent version counts as 0).
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        minimum_version: u32,
    ) -> Result<Self, String> {
        let (version, stateful) = find_two(pairs, "negotiateVersion", "useStatefulReconnect");
        let requested: i64 = match version.value() {
            None => 0,
            Some(text) => parse_dotnet_int32(&text)
                .ok_or_else(|| "The client requested a non-integer protocol version.".to_owned())?
                .into(),
        };
        if requested < i64::from(minimum_version) {
            return Err(format!(
                "The client requested version '{requested}', but the server does not support this version."
            ));
        }
        Ok(NegotiateRequest {
            negotiate_version: requested.clamp(0, i64::from(Self::MAX_VERSION)) as u32,
            use_stateful_reconnect: stateful.value().is_some_and(|text| is_dotnet_true(&text)),
        })
    }

    /// The query pairs a client sends, e.g. `negotiateVersion=1`.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("negotiateVersion", self.negotiate_version.to_string())];
        if self.use_stateful_reconnect {
            pairs.push(("useStatefulReconnect", "true".to_owned()));
        }
        pairs
    }
}
