//! Inputs ASP.NET rejects that serde alone would accept.

use bytes::BytesMut;
use signalr_protocol::{HandshakeRequest, HandshakeResponse, HubProtocol, ProtocolError};

#[test]
fn json_message_must_be_an_object() {
    let mut buf = BytesMut::from(&b"[6]\x1e"[..]);
    let err = HubProtocol::Json
        .parse_message(&mut buf, None)
        .expect_err("an array is not a message");
    assert!(
        matches!(err, ProtocolError::Invalid(ref m) if m == "Expected a JSON object."),
        "{err:?}"
    );
}

#[test]
fn handshake_request_must_be_an_object() {
    let mut buf = BytesMut::from(&b"[\"json\",1]\x1e"[..]);
    assert!(HandshakeRequest::parse(&mut buf, None).is_err());
}

#[test]
fn handshake_response_with_null_type_is_a_hub_message() {
    let mut buf = BytesMut::from(&b"{\"type\":null}\x1e"[..]);
    let err = HandshakeResponse::parse(&mut buf).expect_err("a type property means a hub message");
    assert_eq!(
        err.to_string(),
        "Expected a handshake response from the server."
    );
}

#[test]
fn zero_limit_on_empty_buffer_needs_more_data() {
    let mut buf = BytesMut::new();
    assert!(matches!(
        HubProtocol::Json.parse_message(&mut buf, Some(0)),
        Ok(None)
    ));
}

#[test]
fn negotiate_request_from_query() {
    use signalr_protocol::NegotiateRequest;
    let parse = |q: &[(&'static str, &'static str)], min| {
        NegotiateRequest::from_query(q.iter().copied(), min)
    };
    assert_eq!(parse(&[], 0).map(|r| r.negotiate_version), Ok(0));
    assert_eq!(
        parse(&[("NegotiateVersion", "7")], 0).map(|r| r.negotiate_version),
        Ok(1)
    );
    assert_eq!(
        parse(&[("negotiateVersion", "2147483648")], 0),
        Err("The client requested a non-integer protocol version.".to_owned())
    );
    assert_eq!(
        parse(&[], 1),
        Err(
            "The client requested version '0', but the server does not support this version."
                .to_owned()
        )
    );
    let request = parse(
        &[("negotiateVersion", "1"), ("useStatefulReconnect", "true")],
        0,
    )
    .expect("valid");
    assert!(request.use_stateful_reconnect);
    assert_eq!(
        request.query_pairs(),
        vec![
            ("negotiateVersion", "1".to_owned()),
            ("useStatefulReconnect", "true".to_owned())
        ]
    );
}
