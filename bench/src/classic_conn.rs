//! One load-generator connection speaking classic SignalR 2.x over WebSockets, to
//! `bench-server`'s `/signalr` endpoint: negotiate, the WebSocket `connect` (whose first frame
//! must be the init envelope, `"S":1`), then `start`, as the jQuery and .NET classic clients do.
//!
//! Lean like [`crate::conn::Conn`]: invocations are stamped into a pre-encoded [`Template`]
//! ([`classic_template`]), and received frames are parsed in place, serde_json borrowing the
//! payloads from the frame, so a reply costs no copy and a delivery one small `Vec` (the
//! envelope's message list).

use std::borrow::Cow;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use signalr_protocol::Payload;
use signalr_protocol::classic::{CallerState, HubInvocation, NegotiateResponse};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::conn::{Result, Stamp, Template, http_request, ws_config};

/// The hub as classic clients name it (the jQuery proxy lower-cases the first letter; names
/// match ignoring case).
pub const HUB: &str = "benchhub";
/// Where `bench-server` serves classic clients.
const MOUNT: &str = "/signalr";
/// The `connectionData` every request carries: the hubs the connection subscribes to.
const CONNECTION_DATA: &str = r#"[{"name":"benchhub"}]"#;
/// What SignalR 2.4 clients send as `clientProtocol`.
const CLIENT_PROTOCOL: &str = "2.1";
/// The largest frame accepted from the server (its frames here are a few KB).
const MAX_FRAME: usize = 1 << 20;

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What the server sends on a classic WebSocket, parsed without copying: an envelope (`C` and
/// `M`, with `S` = 1 on the init one), a hub result (`I` with `R` or `E`), or a keep-alive `{}`
/// (every field absent). Unknown keys (`G`, `T`, `L`, `H`, `D`...) are skipped.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "C", borrow, default)]
    cursor: Option<Cow<'a, str>>,
    #[serde(rename = "S", borrow, default)]
    init: Option<&'a RawValue>,
    #[serde(rename = "M", borrow, default)]
    messages: Option<Vec<ClientCall<'a>>>,
    #[serde(rename = "I", borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "R", borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(rename = "E", borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// One item of an envelope's `M`: a client-method call `{"H","M","A"}` (a progress report has
/// none of these and is skipped).
#[derive(Deserialize)]
struct ClientCall<'a> {
    #[serde(rename = "M", borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(rename = "A", borrow, default)]
    arguments: Vec<&'a RawValue>,
}

impl Incoming<'_> {
    fn is_envelope(&self) -> bool {
        self.cursor.is_some() || self.messages.is_some()
    }
}

/// The encoded `target(leading_args..., payload)` invocation of [`HUB`], as a classic client
/// sends it, with a callback id when `with_id`.
pub fn classic_template(
    target: &str,
    with_id: bool,
    leading_args: &[&str],
    payload_size: usize,
) -> Result<Template> {
    let mut arguments: Vec<Payload> = leading_args
        .iter()
        .map(|a| Payload::from_value(a.to_string()))
        .collect();
    arguments.push(Payload::from_value(Template::payload(payload_size)));
    let invocation = HubInvocation {
        hub: HUB.to_owned(),
        method: target.to_owned(),
        arguments,
        id: with_id.then(|| Template::ID_PLACEHOLDER.to_owned()),
        state: CallerState::new(),
    };
    let mut out = BytesMut::new();
    invocation.write(&mut out)?;
    Template::from_encoded(out.to_vec(), with_id)
}

/// A started classic connection.
pub struct ClassicConn {
    ws: WebSocketStream<TcpStream>,
    /// Where frames are built; [`Template::frame`] splits each frame off it.
    pub wbuf: BytesMut,
}

impl ClassicConn {
    /// Negotiates, opens the WebSocket transport, waits for the init envelope and calls `start`.
    /// The caller bounds the time.
    pub async fn connect(addr: SocketAddr) -> Result<ClassicConn> {
        let data = encode(CONNECTION_DATA);
        let body = http_request(
            addr,
            "GET",
            &format!("{MOUNT}/negotiate?clientProtocol={CLIENT_PROTOCOL}&connectionData={data}"),
        )
        .await?;
        let negotiate: NegotiateResponse = serde_json::from_slice(&body)?;
        if !negotiate.try_web_sockets {
            return Err("negotiate: the server does not offer WebSockets".into());
        }
        let query = format!(
            "transport=webSockets&clientProtocol={CLIENT_PROTOCOL}&connectionToken={}&connectionData={data}",
            encode(&negotiate.connection_token)
        );
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let config = ws_config()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}{MOUNT}/connect?{query}"),
            stream,
            Some(config),
        )
        .await?;
        let mut conn = ClassicConn {
            ws,
            wbuf: BytesMut::with_capacity(4096),
        };
        let first = conn.next_text().await?;
        let init: Incoming<'_> = serde_json::from_slice(first.as_bytes())?;
        if !(init.is_envelope() && init.init.is_some_and(|s| s.get() == "1")) {
            return Err(
                format!("connect: the first frame is not the init envelope: {first}").into(),
            );
        }
        let started = http_request(addr, "GET", &format!("{MOUNT}/start?{query}")).await?;
        #[derive(Deserialize)]
        struct Started<'a> {
            #[serde(rename = "Response", borrow)]
            response: Cow<'a, str>,
        }
        let started: Started<'_> = serde_json::from_slice(&started)?;
        if started.response != "started" {
            return Err(format!("start answered {:?}", started.response).into());
        }
        Ok(conn)
    }

    /// Sends one invocation frame (classic clients send text only).
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<()> {
        self.ws
            .send(Message::Text(Utf8Bytes::try_from(frame)?))
            .await?;
        Ok(())
    }

    /// The next text frame (each holds one whole classic message).
    async fn next_text(&mut self) -> Result<Utf8Bytes> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Binary(_))) => {
                    return Err("a binary frame on a classic connection".into());
                }
                Some(Ok(Message::Close(_))) | None => return Err("connection closed".into()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
            }
        }
    }

    /// Waits for the result of invocation `id` (envelopes and keep-alives meanwhile are
    /// skipped); returns the stamp found in its `R`.
    pub async fn reply(&mut self, id: &[u8]) -> Result<Option<Stamp>> {
        loop {
            let text = self.next_text().await?;
            let frame: Incoming<'_> = serde_json::from_slice(text.as_bytes())?;
            if frame.is_envelope() || frame.id.as_deref().map(str::as_bytes) != Some(id) {
                continue;
            }
            if let Some(error) = frame.error {
                return Err(format!("hub error: {error}").into());
            }
            return Ok(frame
                .result
                .and_then(|r| Stamp::read_json(r.get().as_bytes())));
        }
    }

    /// Invokes `method(args)` on [`HUB`] and waits for its result (used for `JoinGroup`).
    pub async fn invoke(&mut self, id: &str, method: &str, args: &[&str]) -> Result<()> {
        let invocation = HubInvocation {
            hub: HUB.to_owned(),
            method: method.to_owned(),
            arguments: args
                .iter()
                .map(|a| Payload::from_value(a.to_string()))
                .collect(),
            id: Some(id.to_owned()),
            state: CallerState::new(),
        };
        invocation.write(&mut self.wbuf)?;
        let frame = self.wbuf.split().freeze();
        self.send_frame(frame).await?;
        self.reply(id.as_bytes()).await.map(drop)
    }

    /// Reads one frame and calls `delivered` with the stamp of every `Receive` call it carries
    /// (an envelope may batch several).
    pub async fn receive(&mut self, mut delivered: impl FnMut(Stamp)) -> Result<()> {
        let text = self.next_text().await?;
        let frame: Incoming<'_> = serde_json::from_slice(text.as_bytes())?;
        for call in frame.messages.iter().flatten() {
            if call
                .method
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case("Receive"))
                && let Some(stamp) = call
                    .arguments
                    .last()
                    .and_then(|a| Stamp::read_json(a.get().as_bytes()))
            {
                delivered(stamp);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_in_place() {
        let init: Incoming<'_> =
            serde_json::from_slice(br#"{"C":"d-1A-0","S":1,"M":[]}"#).expect("init");
        assert!(init.is_envelope());
        assert_eq!(init.init.map(RawValue::get), Some("1"));

        let stamp = "00000000000000ff0000002a";
        let result = format!(r#"{{"R":"{stamp}xxxx","I":"0000002a"}}"#);
        let reply: Incoming<'_> = serde_json::from_str(&result).expect("result");
        assert!(!reply.is_envelope());
        assert_eq!(reply.id.as_deref(), Some("0000002a"));
        let read = reply
            .result
            .and_then(|r| Stamp::read_json(r.get().as_bytes()));
        assert_eq!(
            read,
            Some(Stamp {
                sent_ns: 0xff,
                seq: 0x2a
            })
        );

        let envelope = format!(
            r#"{{"C":"d-1A-7","G":"tok","M":[{{"H":"BenchHub","M":"Receive","A":["{stamp}"]}},{{"I":"P|1","P":{{"I":"1","D":2}}}}]}}"#
        );
        let frame: Incoming<'_> = serde_json::from_str(&envelope).expect("envelope");
        let calls = frame.messages.expect("M");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method.as_deref(), Some("Receive"));
        assert!(calls[1].method.is_none());

        let keep_alive: Incoming<'_> = serde_json::from_slice(b"{}").expect("keep-alive");
        assert!(!keep_alive.is_envelope() && keep_alive.id.is_none());

        let error: Incoming<'_> =
            serde_json::from_slice(br#"{"I":"1","E":"boom","H":true,"D":{"x":1}}"#).expect("error");
        assert_eq!(error.error.as_deref(), Some("boom"));
    }

    #[test]
    fn template_patches_id_and_stamp() {
        let template = classic_template("Echo", true, &[], 32).expect("template");
        let mut buf = BytesMut::new();
        let frame = template.frame(&mut buf, 0x2a);
        let call = HubInvocation::parse(&frame).expect("a classic invocation");
        assert_eq!(call.hub, HUB);
        assert_eq!(call.method, "Echo");
        assert_eq!(call.id.as_deref(), Some("0000002a"));
        let payload: String = call.arguments[0].deserialize().expect("a string");
        assert_eq!(payload.len(), 32);
        assert_eq!(Stamp::read(&call.arguments[0]).map(|s| s.seq), Some(0x2a));
    }
}
