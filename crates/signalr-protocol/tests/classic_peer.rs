//! The classic codec (`signalr_protocol::classic`) against the real classic ASP.NET SignalR 2.4
//! server: `classic-peer` from `../shared/peers/` beside the project (skipped, with a message,
//! when it is not there).
//!
//! For inputs a client may send, the codec must read them as that server does (the protocol
//! version it answers, which `connectionData` and invocations it takes, the callback id it
//! echoes), and what the codec writes must be the bytes that server writes (the negotiate body,
//! hub results, envelopes, progress reports, client-method calls). The HTTP is a minimal
//! hand-written client over `std::net`, with a timeout on every read and write.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use signalr_protocol::Payload;
use signalr_protocol::classic::{
    self, CallerState, Envelope, FormFields, HubInvocation, HubResult, NegotiateResponse,
};

const TIMEOUT: Duration = Duration::from_secs(15);

/// The running `classic-peer`, killed on drop.
struct Peer {
    child: Child,
    /// `127.0.0.1:PORT`.
    address: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Starts `classic-peer --port 0` and waits for its `Listening on` line; `None` (after
    /// printing why) when the program is not there.
    fn start() -> Option<Peer> {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/classic-peer");
        if !path.is_file() {
            println!(
                "skipped: ../shared/peers not found ({} is absent), so the real classic SignalR \
                 server is not available; nothing was tested",
                path.display()
            );
            return None;
        }
        let mut child = Command::new(&path)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Forward the address, then keep draining so the peer never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("Listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let mut peer = Peer {
            child,
            address: String::new(),
        };
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("classic-peer listens within 60 s");
        peer.address = url
            .strip_prefix("http://")
            .expect("an http:// address")
            .to_owned();
        Some(peer)
    }

    /// One HTTP/1.1 request on its own connection; the whole response.
    fn request(&self, method: &str, target: &str, body: Option<&[u8]>) -> Response {
        let mut stream = TcpStream::connect(&self.address).expect("connect to classic-peer");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.address
        );
        if let Some(body) = body {
            head.push_str(
                "Content-Type: application/x-www-form-urlencoded; charset=UTF-8\r\n\
                 Content-Length: ",
            );
            head.push_str(&format!("{}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send the head");
        if let Some(body) = body {
            stream.write_all(body).expect("send the body");
        }
        let mut raw = Vec::new();
        stream
            .take(4 << 20)
            .read_to_end(&mut raw)
            .expect("read the response");
        Response::parse(&raw)
    }
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head");
        let head = std::str::from_utf8(&raw[..end]).expect("an ASCII head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        let mut body = raw[end + 4..].to_vec();
        if chunked {
            body = dechunk(&body);
        }
        Response { status, body }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end]).expect("hex").trim(),
            16,
        )
        .expect("a chunk size");
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// Percent-encodes everything but unreserved characters.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const TESTHUB: &str = r#"[{"name":"testhub"}]"#;

/// A JSON object's members as raw text.
fn members(json: &[u8]) -> BTreeMap<String, &RawValue> {
    serde_json::from_slice(json)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(json)))
}

fn written(f: impl FnOnce(&mut BytesMut)) -> String {
    let mut out = BytesMut::new();
    f(&mut out);
    String::from_utf8(out.to_vec()).expect("UTF-8")
}

#[test]
fn negotiate_and_connection_data_match_the_real_server() {
    let Some(peer) = Peer::start() else { return };
    let negotiate = |query: &str| peer.request("GET", &format!("/signalr/negotiate?{query}"), None);

    // The negotiate body, byte for byte: our serialization of what the server sent is what the
    // server sent.
    let response = negotiate(&format!(
        "clientProtocol=2.1&connectionData={}",
        enc(TESTHUB)
    ));
    assert_eq!(response.status, 200);
    let parsed: NegotiateResponse = serde_json::from_slice(&response.body).expect("parses");
    assert_eq!(parsed.to_json(), response.text());

    // The version answered for each clientProtocol.
    let versions = [
        "",
        "2",
        "2.0",
        "2.1",
        "9.9",
        "1.5",
        "1.4",
        "1.3",
        "1.1",
        "0.5",
        "abc",
        "-1",
        "1.5.0",
        "1.5.0.0",
        "1.5.0.0.0",
        " 2.1",
        "2.1 ",
        "1. 5",
        "\n1.5",
        "1.5\0",
        "\u{a0}1.5",
        "1.10",
        "01.5",
        "+1.5",
        "1.+5",
        "1.-5",
        "1.5.",
        "1..5",
        "2.0.0",
        "1.2.0",
        "1.1.9",
        "1.4.5.6",
        "2147483647.0",
        "2147483648.0",
        "1.5,2.0",
        "1\t0.5",
        "1.2+",
        "\u{ff11}.5",
    ];
    for text in versions {
        let response = negotiate(&format!(
            "clientProtocol={}&connectionData={}",
            enc(text),
            enc(TESTHUB)
        ));
        assert_eq!(response.status, 200, "clientProtocol {text:?}");
        let parsed: NegotiateResponse = serde_json::from_slice(&response.body).expect("parses");
        assert_eq!(
            parsed.protocol_version,
            classic::protocol_version(Some(text)),
            "clientProtocol {text:?}"
        );
    }
    // Absent, and repeated (one text joined with ',').
    let absent = negotiate(&format!("connectionData={}", enc(TESTHUB)));
    let parsed: NegotiateResponse = serde_json::from_slice(&absent.body).expect("parses");
    assert_eq!(parsed.protocol_version, classic::protocol_version(None));
    let query = format!(
        "clientProtocol=1.5&CLIENTPROTOCOL=1.6&connectionData={}",
        enc(TESTHUB)
    );
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let joined = classic::query_value(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        "clientProtocol",
    );
    let parsed: NegotiateResponse =
        serde_json::from_slice(&negotiate(&query).body).expect("parses");
    assert_eq!(
        parsed.protocol_version,
        classic::protocol_version(joined.as_deref())
    );

    // connectionData: taken (200) exactly when it parses to known hubs without duplicates.
    // (Left out: the real server's JSON library also reads single quotes, comments, trailing
    // commas and trailing text, which we refuse.)
    let known = ["testhub", "renamed"];
    for text in [
        r#"[{"name":"testhub"}]"#,
        r#"[{"Name":"testhub"}]"#,
        r#"[{"NAME":"TESTHUB"}]"#,
        r#"[{"name":"testhub","x":[1,{}]}]"#,
        r#" [ { "name" : "testhub" } ] "#,
        r#"[{"name":"testhub"},{"name":"renamed"}]"#,
        r#"[{"name":"testhub","name":"renamed"}]"#,
        r#"[{"n\u0061me":"test\u0068ub"}]"#,
        r#"[{"name":"testhub"},{"name":"TestHub"}]"#,
        r#"[{"name":"nosuchhub"}]"#,
        r#"[{"name":"testhub"},{"name":"nosuchhub"}]"#,
        "[]",
        "null",
        "",
        "{}",
        "[{}]",
        r#"[{"name":null}]"#,
        r#"[{"name":""}]"#,
        r#"["testhub"]"#,
        "[null]",
        r#"{"name":"testhub"}"#,
        "[[]]",
        r#""x""#,
    ] {
        let ours_ok = match classic::parse_connection_data(text) {
            Ok(names) => {
                let lower: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
                lower.iter().all(|n| known.contains(&n.as_str()))
                    && lower
                        .iter()
                        .enumerate()
                        .all(|(i, n)| !lower[..i].contains(n))
            }
            Err(_) => false,
        };
        let response = negotiate(&format!("clientProtocol=2.1&connectionData={}", enc(text)));
        let expected = if ours_ok { 200 } else { 500 };
        assert_eq!(response.status, expected, "connectionData {text}");
    }
}

/// A long-polling connection to the TestHub: its token query and the init envelope's cursor.
struct Session<'p> {
    peer: &'p Peer,
    query: String,
}

impl<'p> Session<'p> {
    fn open(peer: &'p Peer) -> (Session<'p>, Response) {
        let response = peer.request(
            "GET",
            &format!(
                "/signalr/negotiate?clientProtocol=2.1&connectionData={}",
                enc(TESTHUB)
            ),
            None,
        );
        let negotiated: NegotiateResponse =
            serde_json::from_slice(&response.body).expect("negotiate");
        let query = format!(
            "transport=longPolling&clientProtocol=2.1&connectionToken={}&connectionData={}",
            enc(&negotiated.connection_token),
            enc(TESTHUB)
        );
        let session = Session { peer, query };
        let connect = session.post("connect", b"");
        assert_eq!(connect.status, 200, "{}", connect.text());
        let start = session.get("start");
        assert_eq!(start.body, classic::STARTED_RESPONSE);
        (session, connect)
    }

    fn post(&self, action: &str, body: &[u8]) -> Response {
        self.peer.request(
            "POST",
            &format!("/signalr/{action}?{}", self.query),
            Some(body),
        )
    }

    fn get(&self, action: &str) -> Response {
        self.peer
            .request("GET", &format!("/signalr/{action}?{}", self.query), None)
    }

    fn send(&self, invocation: &str) -> Response {
        self.post("send", format!("data={}", enc(invocation)).as_bytes())
    }
}

/// The state keys a call changed, as JSON text.
type ChangedState = Option<&'static [(&'static str, &'static str)]>;

fn json(text: &str) -> Payload {
    Payload::Json(Bytes::copy_from_slice(text.as_bytes()))
}

#[test]
fn invocations_results_and_envelopes_match_the_real_server() {
    let Some(peer) = Peer::start() else { return };
    let ping = peer.request("GET", "/signalr/ping", None);
    assert_eq!(ping.body, classic::PONG_RESPONSE);

    let (session, connect) = Session::open(&peer);
    // The init envelope.
    let init = members(&connect.body);
    let cursor: String = serde_json::from_str(init["C"].get()).expect("C");
    let envelope = Envelope {
        initializing: true,
        ..Envelope::new(&cursor)
    };
    assert_eq!(
        written(|out| envelope.write::<&[u8]>(&[], out)),
        connect.text()
    );

    // Which invocations the server takes, and the id it echoes. (Left out: single quotes and
    // trailing text, which its JSON library reads and we refuse.)
    for text in [
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":0}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":"abc"}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":1.5}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":-0}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":1e2}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":1E+2}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":12345678901234567890}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":null}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"]}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":true}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":" 29 "}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":27,"I":28}"#,
        r#"{"h":"testhub","m":"Echo","a":["x"],"i":7}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":8,"X":1}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":15,"S":null}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":{"a":1}}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":[1]}"#,
        r#"{"H":"testhub","M":"Echo","A":"x","I":11}"#,
        r#"{"H":"testhub","M":"Echo","A":{"0":"x"},"I":12}"#,
        r#"{"H":"testhub","A":["x"],"I":13}"#,
        r#"{"M":"Echo","A":["x"],"I":14}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":16,"S":[]}"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":17,"S":"x"}"#,
        r#"[{"H":"testhub","M":"Echo","A":["x"],"I":25}]"#,
        r#"{"H":"testhub","M":"Echo","A":["x"],"I":26,"H":"nohub"}"#,
    ] {
        let response = session.send(text);
        match HubInvocation::parse(text.as_bytes()) {
            // An unknown hub fails the whole request.
            Ok(call) if !call.hub.eq_ignore_ascii_case("testhub") => {
                assert_eq!(response.status, 500, "{text}: {}", response.text());
            }
            Ok(call) => {
                assert_eq!(response.status, 200, "{text}: {}", response.text());
                let body = members(&response.body);
                let id: Option<String> = serde_json::from_str(body["I"].get()).expect("I");
                assert_eq!(id, call.id, "{text}");
                // The whole result, byte for byte.
                let result = HubResult::Value(call.arguments[0].clone());
                assert_eq!(
                    written(|out| classic::write_hub_result(
                        call.id.as_deref(),
                        &CallerState::new(),
                        &result,
                        out
                    )
                    .expect("writes")),
                    response.text(),
                    "{text}"
                );
            }
            Err(_) => assert_eq!(response.status, 500, "{text}: {}", response.text()),
        }
    }

    // Results: void, null, errors, hub exceptions, changed state.
    let cases: [(&str, ChangedState, HubResult); 6] = [
        (
            r#"{"H":"testhub","M":"NotifyNoArgs","A":[],"I":1}"#,
            None,
            HubResult::Void,
        ),
        (
            r#"{"H":"testhub","M":"Echo","A":[null],"I":2}"#,
            None,
            HubResult::Value(json("null")),
        ),
        (
            r#"{"H":"testhub","M":"Nope","A":[],"I":3}"#,
            None,
            HubResult::Error("There was an error invoking Hub method 'testhub.Nope'.".into()),
        ),
        (
            r#"{"H":"testhub","M":"ThrowHubException","A":["boom"],"I":4,"S":{"a":1}}"#,
            None,
            HubResult::HubError {
                message: "boom".into(),
                data: Some(json(r#"{"Code":42}"#)),
            },
        ),
        (
            r#"{"H":"testhub","M":"GetStateName","A":[],"I":5,"S":{"name":"ann","count":1}}"#,
            Some(&[("greeted", r#""hello ann""#), ("count", "2")]),
            HubResult::Value(json(r#""ann""#)),
        ),
        (
            r#"{"H":"testhub","M":"GetStateName","A":[],"I":6,"S":{"name":"ann"}}"#,
            Some(&[("greeted", r#""hello ann""#)]),
            HubResult::Error(
                "There was an error invoking Hub method 'testhub.GetStateName'.".into(),
            ),
        ),
    ];
    for (text, changed, result) in cases {
        let call = HubInvocation::parse(text.as_bytes()).expect("parses");
        let mut state = CallerState::new();
        for (key, value) in changed.unwrap_or_default() {
            state.set(*key, json(value));
        }
        let ours = written(|out| {
            classic::write_hub_result(call.id.as_deref(), &state, &result, out).expect("writes")
        });
        assert_eq!(ours, session.send(text).text(), "{text}");
    }

    // The caller-state limit: taken up to MAX_STATE_LENGTH as we measure it.
    for value in [
        format!("\"{}\"", "x".repeat(4088)),
        format!("\"{}\"", "x".repeat(4089)),
        format!("\"{}\"{}", "x".repeat(4000), " ".repeat(200)),
        format!("\"{}\"", "\\u0078".repeat(700)),
        format!("\"{}\"", "é".repeat(4080)),
        format!("\"{}\"", "é".repeat(4090)),
    ] {
        let text = format!(r#"{{"H":"testhub","M":"Echo","A":["x"],"I":0,"S":{{"k":{value}}}}}"#);
        let call = HubInvocation::parse(text.as_bytes()).expect("parses");
        let expected = if call.state.json_length() <= classic::MAX_STATE_LENGTH {
            200
        } else {
            500
        };
        assert_eq!(
            session.send(&text).status,
            expected,
            "state of {}",
            value.len()
        );
    }

    // Form bodies: the field the server reads.
    let echo = |id: u32| {
        enc(&format!(
            r#"{{"H":"testhub","M":"Echo","A":["x"],"I":{id}}}"#
        ))
    };
    for body in [
        format!("DATA={}", echo(1)),
        format!("data={}&data={}", echo(2), echo(3)),
        format!("data={}&data=", echo(4)),
        format!("data=&data={}", echo(5)),
        format!("x=1&data={}&y", echo(6)),
        "data".to_owned(),
        String::new(),
    ] {
        let response = session.post("send", body.as_bytes());
        let ours = FormFields::parse(body.as_bytes())
            .data
            .and_then(|data| HubInvocation::parse(data.as_bytes()).ok());
        match ours {
            Some(call) => {
                assert_eq!(response.status, 200, "{body}");
                let id: Option<String> =
                    serde_json::from_str(members(&response.body)["I"].get()).expect("I");
                assert_eq!(id, call.id, "{body}");
            }
            None => assert_eq!(response.status, 500, "{body}"),
        }
    }

    // Progress reports and client-method calls (NotifyNoArgs above, InvokeWithString here)
    // reach the poll in one envelope. The server orders them by its internal topics, so compare
    // the items as a set, and the envelope around the server's own items byte for byte.
    let done = session.send(r#"{"H":"testhub","M":"CountWithProgress","A":[2],"I":"p"}"#);
    assert_eq!(done.text(), r#"{"R":"done","I":"p"}"#);
    let invoked = session.send(r#"{"H":"testhub","M":"InvokeWithString","A":["hi"],"I":9}"#);
    assert_eq!(invoked.text(), r#"{"I":"9"}"#);
    let poll = session.post("poll", format!("messageId={}", enc(&cursor)).as_bytes());
    assert_eq!(poll.status, 200);
    let envelope = members(&poll.body);
    let cursor: String = serde_json::from_str(envelope["C"].get()).expect("C");
    let theirs: Vec<&RawValue> = serde_json::from_str(envelope["M"].get()).expect("M");
    let theirs: Vec<Bytes> = theirs
        .iter()
        .map(|item| Bytes::copy_from_slice(item.get().as_bytes()))
        .collect();
    let mut ours = Vec::new();
    for n in 1..=2 {
        ours.push(written(|out| {
            classic::write_progress("p", &Payload::from_value(n), out).expect("writes")
        }));
    }
    for (method, args) in [
        ("notify", vec![]),
        ("message", vec![Payload::from_value("hi")]),
    ] {
        ours.push(written(|out| {
            classic::write_client_invocation("TestHub", method, &args, None, out).expect("writes")
        }));
    }
    let mut their_text: Vec<String> = theirs
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    their_text.sort();
    ours.sort();
    assert_eq!(ours, their_text);
    assert_eq!(
        written(|out| Envelope::new(&cursor).write(&theirs, out)),
        poll.text()
    );

    // Joining a group sends a new groups token in an envelope of its own. (Over long polling the
    // real server completes JoinGroup only while a poll is waiting, so the poll goes first.)
    let poll = std::thread::scope(|scope| {
        let poll =
            scope.spawn(|| session.post("poll", format!("messageId={}", enc(&cursor)).as_bytes()));
        std::thread::sleep(Duration::from_millis(500));
        let joined = session.send(r#"{"H":"testhub","M":"JoinGroup","A":["g1"],"I":10}"#);
        assert_eq!(joined.text(), r#"{"I":"10"}"#);
        poll.join().expect("the poll")
    });
    let envelope = members(&poll.body);
    let cursor: String = serde_json::from_str(envelope["C"].get()).expect("C");
    let token: String = serde_json::from_str(envelope["G"].get()).expect("G");
    let expected = Envelope {
        groups_token: Some(&token),
        ..Envelope::new(&cursor)
    };
    assert_eq!(
        written(|out| expected.write::<&[u8]>(&[], out)),
        poll.text()
    );
    let form = FormFields::parse(
        format!("messageId={}&groupsToken={}", enc(&cursor), enc(&token)).as_bytes(),
    );
    assert_eq!(form.message_id.as_deref(), Some(cursor.as_str()));
    assert_eq!(form.groups_token.as_deref(), Some(token.as_str()));
}
