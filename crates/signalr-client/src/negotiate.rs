//! Negotiate (docs/protocol.md, "Negotiate"): `POST {hub}/negotiate?negotiateVersion=1`, redirects (docs/protocol.md, "Redirects") and the
//! client-side checks of the response (docs/protocol.md, "Negotiate checks", "Core or classic").

use reqwest::Url;
use serde::Deserialize;
use signalr_protocol::NegotiateRequest;

use crate::error::{Error, Kind};
use crate::transport::{HTTP_TIMEOUT, HttpContext, error_chain};

/// The most negotiate redirects followed (TS client: 100).
pub(crate) const MAX_REDIRECTS: usize = 100;

/// One entry of `availableTransports`, with names kept as text so that transports this client
/// does not know are skipped rather than failing the whole response.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AvailableTransport {
    pub transport: String,
    pub transfer_formats: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    negotiate_version: Option<u32>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    connection_id: Option<String>,
    #[serde(default)]
    connection_token: Option<String>,
    #[serde(default)]
    available_transports: Option<Vec<AvailableTransport>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    use_stateful_reconnect: Option<bool>,
}

/// A successful negotiate response.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    pub connection_id: String,
    /// The `id` of transport requests: the connection token (v1), or the connection id (v0).
    pub connection_token: String,
    pub available_transports: Vec<AvailableTransport>,
    /// The client asked for stateful reconnect and the server agreed.
    pub use_stateful_reconnect: bool,
}

enum Outcome {
    Negotiated(Negotiated),
    Redirect {
        url: String,
        access_token: Option<String>,
    },
}

/// `{base}/negotiate` with the base's query plus `negotiateVersion=1` (docs/protocol.md, "Negotiate request"),
/// and `useStatefulReconnect=true` when `stateful`.
pub(crate) fn negotiate_url(base: &Url, stateful: bool) -> Url {
    let mut url = base.clone();
    let path = url.path().to_owned();
    if path.ends_with('/') {
        url.set_path(&format!("{path}negotiate"));
    } else {
        url.set_path(&format!("{path}/negotiate"));
    }
    let has_version = url
        .query_pairs()
        .any(|(key, _)| key.eq_ignore_ascii_case("negotiateVersion"));
    let request = NegotiateRequest {
        negotiate_version: 1,
        use_stateful_reconnect: stateful,
    };
    let mut pairs = url.query_pairs_mut();
    for (key, value) in request.query_pairs() {
        if key != "negotiateVersion" || !has_version {
            pairs.append_pair(key, &value);
        }
    }
    drop(pairs);
    url
}

/// `{base}` plus `id=<token>`: the URL of every transport request (docs/protocol.md, "Endpoints").
pub(crate) fn connect_url(base: &Url, connection_token: &str) -> Url {
    let mut url = base.clone();
    url.query_pairs_mut().append_pair("id", connection_token);
    url
}

fn negotiate_error(message: impl Into<String>) -> Error {
    Error::new(Kind::Negotiate, message)
}

fn failed(detail: impl std::fmt::Display) -> String {
    format!("Failed to complete negotiation with the server: {detail}")
}

async fn negotiate_once(http: &HttpContext, base: &Url, stateful: bool) -> Result<Outcome, Error> {
    http.tls.check_url(base, Kind::Negotiate)?;
    let url = negotiate_url(base, stateful);
    let response = http
        .client
        .post(url)
        .headers(http.request_headers())
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
        .map_err(|err| {
            let message = failed(error_chain(&err));
            Error::with_source(Kind::Negotiate, message, err)
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        let mut message = failed(format!(
            "Unexpected status code returned from negotiate '{status}'"
        ));
        if status == 404 {
            message.push_str(
                " Either this is not a SignalR endpoint or there is a proxy blocking the connection.",
            );
        }
        return Err(Error::with_status(Kind::Negotiate, message, status));
    }
    let body = response.bytes().await.map_err(|err| {
        let message = failed(error_chain(&err));
        Error::with_source(Kind::Negotiate, message, err)
    })?;
    parse_response(&body, stateful)
}

/// Applies the checks of docs/protocol.md, "Negotiate checks" and "Core or classic", to a negotiate response body;
/// `stateful`: whether the request asked for stateful reconnect.
fn parse_response(body: &[u8], stateful: bool) -> Result<Outcome, Error> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        Error::with_source(
            Kind::Negotiate,
            failed(format!("the response is not JSON: {err}")),
            err,
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(negotiate_error(failed("the response is not a JSON object")));
    };
    let wire: Wire = serde_json::from_value(value.clone()).map_err(|err| {
        Error::with_source(
            Kind::Negotiate,
            failed(format!("invalid negotiate response: {err}")),
            err,
        )
    })?;
    if let Some(error) = wire.error {
        return Err(negotiate_error(error));
    }
    if object.contains_key("ProtocolVersion") {
        return Err(negotiate_error(
            "Detected a connection attempt to an ASP.NET SignalR Server. This client only supports \
             connecting to an ASP.NET Core SignalR Server. See \
             https://aka.ms/signalr-core-differences for details.",
        ));
    }
    if let Some(url) = wire.url {
        return Ok(Outcome::Redirect {
            url,
            access_token: wire.access_token,
        });
    }
    let use_stateful_reconnect = wire.use_stateful_reconnect == Some(true);
    if use_stateful_reconnect && !stateful {
        return Err(negotiate_error(
            "Client didn't negotiate Stateful Reconnect but the server did.",
        ));
    }
    let connection_id = wire.connection_id.ok_or_else(|| {
        negotiate_error(failed(
            "invalid negotiate response: 'connectionId' is missing",
        ))
    })?;
    let available_transports = wire.available_transports.ok_or_else(|| {
        negotiate_error(failed(
            "invalid negotiate response: 'availableTransports' is missing",
        ))
    })?;
    let version = wire.negotiate_version.unwrap_or(0);
    let connection_token = if version >= 1 {
        wire.connection_token.ok_or_else(|| {
            negotiate_error(failed(
                "invalid negotiate response: 'connectionToken' is missing",
            ))
        })?
    } else {
        // Version 0 servers: the connection id is the token (TS client).
        connection_id.clone()
    };
    Ok(Outcome::Negotiated(Negotiated {
        connection_id,
        connection_token,
        available_transports,
        use_stateful_reconnect,
    }))
}

/// Negotiates, following redirects: each redirect replaces the URL and, when it carries one,
/// the access token of `http` for the rest of this connect attempt (docs/protocol.md, "Redirects").
///
/// Returns the final URL (later transport requests and re-negotiations use it) and the response.
/// `stateful`: ask for stateful reconnect.
pub(crate) async fn negotiate(
    http: &mut HttpContext,
    base: &Url,
    stateful: bool,
) -> Result<(Url, Negotiated), Error> {
    let mut url = base.clone();
    for _ in 0..MAX_REDIRECTS {
        match negotiate_once(http, &url, stateful).await? {
            Outcome::Negotiated(negotiated) => return Ok((url, negotiated)),
            Outcome::Redirect {
                url: target,
                access_token,
            } => {
                tracing::debug!(url = %target, "negotiate redirect");
                url = Url::parse(&target).map_err(|err| {
                    Error::with_source(
                        Kind::Negotiate,
                        format!("Negotiate redirected to an invalid URL '{target}': {err}"),
                        err,
                    )
                })?;
                if let Some(token) = access_token {
                    http.token = Some(token);
                }
            }
        }
    }
    Err(negotiate_error("Negotiate redirection limit exceeded."))
}

/// Negotiates once more against `url` (no redirects expected there): used before each further
/// transport of the fallback (docs/protocol.md, "Transport fallback").
pub(crate) async fn renegotiate(
    http: &HttpContext,
    url: &Url,
    stateful: bool,
) -> Result<Negotiated, Error> {
    match negotiate_once(http, url, stateful).await? {
        Outcome::Negotiated(negotiated) => Ok(negotiated),
        Outcome::Redirect { .. } => Err(negotiate_error(
            "Negotiate redirected again while selecting a transport.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Outcome, Error> {
        parse_response(body.as_bytes(), false)
    }

    #[test]
    fn negotiate_url_appends_path_and_version_and_keeps_the_query() {
        let base = Url::parse("http://h/chat?a=1").expect("url");
        assert_eq!(
            negotiate_url(&base, false).as_str(),
            "http://h/chat/negotiate?a=1&negotiateVersion=1"
        );
        let slash = Url::parse("http://h/chat/").expect("url");
        assert_eq!(
            negotiate_url(&slash, false).as_str(),
            "http://h/chat/negotiate?negotiateVersion=1"
        );
        let versioned = Url::parse("http://h/chat?negotiateVersion=0").expect("url");
        assert_eq!(
            negotiate_url(&versioned, false).as_str(),
            "http://h/chat/negotiate?negotiateVersion=0"
        );
        assert_eq!(
            negotiate_url(&base, true).as_str(),
            "http://h/chat/negotiate?a=1&negotiateVersion=1&useStatefulReconnect=true"
        );
        assert_eq!(
            negotiate_url(&versioned, true).as_str(),
            "http://h/chat/negotiate?negotiateVersion=0&useStatefulReconnect=true"
        );
        assert_eq!(
            connect_url(&base, "a+b").as_str(),
            "http://h/chat?a=1&id=a%2Bb"
        );
    }

    #[test]
    fn v1_response_uses_the_token_and_v0_copies_the_id() {
        let Ok(Outcome::Negotiated(v1)) = parse(
            r#"{"negotiateVersion":1,"connectionId":"id","connectionToken":"tok","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}],"extra":1}"#,
        ) else {
            panic!("expected a negotiated response")
        };
        assert_eq!(
            (v1.connection_id.as_str(), v1.connection_token.as_str()),
            ("id", "tok")
        );
        let Ok(Outcome::Negotiated(v0)) =
            parse(r#"{"connectionId":"abc","availableTransports":[]}"#)
        else {
            panic!("expected a negotiated response")
        };
        assert_eq!(v0.connection_token, "abc");
    }

    #[test]
    fn validations_of_a2_5() {
        let err = |body: &str| match parse(body) {
            Err(err) => (err.is_negotiate(), err.to_string()),
            Ok(_) => panic!("expected an error for {body}"),
        };
        assert_eq!(err(r#"{"error":"nope"}"#), (true, "nope".to_owned()));
        assert!(
            err(r#"{"ProtocolVersion":"2.0","Url":"/signalr"}"#)
                .1
                .starts_with("Detected a connection attempt to an ASP.NET SignalR Server.")
        );
        assert_eq!(
            err(r#"{"negotiateVersion":1,"connectionId":"i","availableTransports":[],"useStatefulReconnect":true,"connectionToken":"t"}"#).1,
            "Client didn't negotiate Stateful Reconnect but the server did."
        );
        assert!(
            err(r#"{"negotiateVersion":1,"connectionId":"i","availableTransports":[]}"#)
                .1
                .contains("'connectionToken' is missing")
        );
        assert!(
            err(r#"{"negotiateVersion":1,"connectionToken":"t","availableTransports":[]}"#)
                .1
                .contains("'connectionId' is missing")
        );
        assert!(
            err(r#"{"negotiateVersion":1,"connectionId":"i","connectionToken":"t"}"#)
                .1
                .contains("'availableTransports' is missing")
        );
        assert!(err(r#"{"negotiateVersion":1,"connectionId":"i","connectionToken":"t","availableTransports":[{"transport":"WebSockets"}]}"#).1.contains("transferFormats"));
        assert!(err("[1]").1.contains("not a JSON object"));
    }

    #[test]
    fn stateful_reconnect_is_on_only_when_asked_and_granted() {
        let body = r#"{"negotiateVersion":1,"connectionId":"i","connectionToken":"t","availableTransports":[],"useStatefulReconnect":true}"#;
        let Ok(Outcome::Negotiated(granted)) = parse_response(body.as_bytes(), true) else {
            panic!("expected a negotiated response")
        };
        assert!(granted.use_stateful_reconnect);
        let declined = r#"{"negotiateVersion":1,"connectionId":"i","connectionToken":"t","availableTransports":[]}"#;
        let Ok(Outcome::Negotiated(declined)) = parse_response(declined.as_bytes(), true) else {
            panic!("expected a negotiated response")
        };
        assert!(!declined.use_stateful_reconnect);
    }

    #[test]
    fn redirect_needs_no_connection_fields() {
        let Ok(Outcome::Redirect { url, access_token }) =
            parse(r#"{"url":"http://other/hub","accessToken":"t2"}"#)
        else {
            panic!("expected a redirect")
        };
        assert_eq!(
            (url.as_str(), access_token.as_deref()),
            ("http://other/hub", Some("t2"))
        );
    }
}
