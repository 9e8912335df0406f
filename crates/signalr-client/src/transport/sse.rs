//! The Server-Sent Events transport (docs/protocol.md, "Server-Sent Events"): a `GET` with `Accept: text/event-stream`
//! carries server-to-client data as SSE events; client-to-server data goes in POSTs (docs/protocol.md, "Sending with POST").
//! Text only: JSON, never MessagePack.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    HTTP_TIMEOUT, HttpContext, Stopper, TransportConnection, TransportEvent, http_error, post_loop,
};
use crate::TransportType;
use crate::error::{Error, Kind};

/// Opens the event stream at `url` (the connect URL with `id`) and starts the POST writer.
pub(crate) async fn start(http: &HttpContext, url: &Url) -> Result<TransportConnection, Error> {
    let request = http
        .client
        .get(http.with_access_token(url))
        .headers(http.request_headers())
        .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
        .send();
    // The response headers must come within the HTTP timeout; the body then streams for as long
    // as the connection lives.
    let response = tokio::time::timeout(HTTP_TIMEOUT, request)
        .await
        .map_err(|_| {
            Error::new(
                Kind::Transport,
                format!(
                    "Server-Sent Events failed to connect: no answer within {} s.",
                    HTTP_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|err| http_error("Server-Sent Events failed to connect", err))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Error::with_status(
            Kind::Transport,
            format!(
                "Server-Sent Events failed to connect: the server answered status code {status}."
            ),
            status,
        ));
    }
    tracing::debug!(url = %url, "Server-Sent Events connected");

    let (sender, outgoing) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let reader = tokio::spawn(read_events(
        response.bytes_stream().boxed(),
        events_tx,
        token.clone(),
    ));
    let writer = tokio::spawn(post_loop(
        http.clone(),
        url.clone(),
        outgoing,
        token.clone(),
    ));
    Ok(TransportConnection {
        kind: TransportType::ServerSentEvents,
        sender,
        events,
        stopper: Stopper::new(token, vec![reader, writer]),
    })
}

async fn read_events(
    mut body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    events: mpsc::UnboundedSender<TransportEvent>,
    token: CancellationToken,
) {
    let mut parser = SseParser::default();
    let closed = loop {
        tokio::select! {
            () = token.cancelled() => return,
            chunk = body.next() => match chunk {
                Some(Ok(chunk)) => {
                    for data in parser.feed(&chunk) {
                        let _ = events.send(TransportEvent::Data(data));
                    }
                }
                Some(Err(err)) => break Some(http_error("Server-Sent Events stream failed", err)),
                // EventSource reports no reason for a server-side close (TS: close without error).
                None => break None,
            },
        }
    };
    let _ = events.send(TransportEvent::Closed(closed));
}

/// An incremental parser of the `text/event-stream` format (WHATWG HTML, "Server-sent events"):
/// lines end with CRLF, LF or CR; `data:` lines of one event are joined with `\n`; an empty line
/// dispatches the event; comments (`:`) and other fields (`event`, `id`, `retry`) are ignored.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The current, incomplete line.
    line: BytesMut,
    /// The data of the event being built.
    data: BytesMut,
    /// Whether the event has at least one `data` field.
    has_data: bool,
    /// The previous chunk ended with CR: a leading LF of the next one belongs to it.
    after_cr: bool,
    /// The byte-order mark at the start of the stream has been dealt with.
    started: bool,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Vec<Bytes> {
        let out = Vec::new();
        if !self.started && !chunk.is_empty() {
            // A UTF-8 BOM may start the stream; it is ignored.
            let bom = b"\xEF\xBB\xBF";
            let have = self.line.len() + chunk.len();
            if have < bom.len() && bom.starts_with(&[&self.line[..], chunk].concat()) {
                self.line.extend_from_slice(chunk);
                return out;
            }
            self.started = true;
            let mut joined = std::mem::take(&mut self.line).to_vec();
            joined.extend_from_slice(chunk);
            let start = if joined.starts_with(bom) {
                bom.len()
            } else {
                0
            };
            let joined = joined[start..].to_vec();
            return self.feed_lines(&joined, out);
        }
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        self.feed_lines(chunk, out)
    }

    fn feed_lines(&mut self, chunk: &[u8], mut out: Vec<Bytes>) -> Vec<Bytes> {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let ending = rest[pos];
            rest = &rest[pos + 1..];
            if ending == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(data) = self.process_line(&line) {
                out.push(data);
            }
        }
        self.line.extend_from_slice(rest);
        out
    }

    fn process_line(&mut self, line: &[u8]) -> Option<Bytes> {
        if line.is_empty() {
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.data).freeze());
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.extend_from_slice(b"\n");
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        chunks
            .iter()
            .flat_map(|chunk| parser.feed(chunk))
            .map(|b| String::from_utf8(b.to_vec()).expect("utf-8"))
            .collect()
    }

    #[test]
    fn parses_the_servers_format() {
        // What an ASP.NET (and our) server writes: a comment, then one event per batch.
        assert_eq!(
            events(&[b":\r\n", b"data: {\"type\":6}\x1e\r\n\r\n"]),
            vec!["{\"type\":6}\x1e"]
        );
    }

    #[test]
    fn joins_multiple_data_lines_with_newlines() {
        assert_eq!(
            events(&[b"data: a\ndata:b\ndata:  c\n\n"]),
            vec!["a\nb\n c"]
        );
    }

    #[test]
    fn handles_every_line_ending_and_split_chunks() {
        assert_eq!(
            events(&[
                b"data: one\r",
                b"\n\r",
                b"\ndata: two\r\r",
                b"da",
                b"ta: thr",
                b"ee\n\n"
            ]),
            vec!["one", "two", "three"]
        );
    }

    #[test]
    fn ignores_comments_other_fields_and_empty_events() {
        assert_eq!(
            events(&[b": hello\nevent: x\nid: 1\nretry: 5\n\n\ndata\n\n"]),
            vec![""]
        );
    }

    #[test]
    fn skips_a_leading_bom_even_when_split() {
        assert_eq!(events(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]), vec!["x"]);
        assert_eq!(events(&[b"data: y\n\n"]), vec!["y"]);
    }

    #[test]
    fn keeps_partial_events_until_complete() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: par").is_empty());
        assert!(parser.feed(b"tial\r\n").is_empty());
        assert_eq!(
            parser.feed(b"\r\n"),
            vec![bytes::Bytes::from_static(b"partial")]
        );
    }
}
