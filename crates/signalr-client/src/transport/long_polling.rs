//! The long-polling transport (docs/protocol.md, "Long polling"): repeated `GET`s bring server-to-client data,
//! POSTs carry client-to-server data (docs/protocol.md, "Sending with POST"), a `DELETE` ends the connection. Text and binary.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    HTTP_TIMEOUT, HttpContext, Stopper, TransportConnection, TransportEvent, http_error, post_loop,
};
use crate::TransportType;
use crate::error::{Error, Kind};

/// How long the DELETE of a graceful stop may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes the first poll (which must answer 200 at once), then starts polling and the POST writer.
pub(crate) async fn start(http: &HttpContext, url: &Url) -> Result<TransportConnection, Error> {
    let response = poll_request(&http.client, http, url)
        .await
        .map_err(|err| http_error("Long polling failed to connect", err))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Error::with_status(
            Kind::Transport,
            format!("Long polling failed to connect: unexpected response code: {status}."),
            status,
        ));
    }
    tracing::debug!(url = %url, "long polling connected");

    let (sender, outgoing) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let poller = tokio::spawn(poll_loop(
        http.clone(),
        url.clone(),
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
        kind: TransportType::LongPolling,
        sender,
        events,
        stopper: Stopper::new(token, vec![poller, writer]),
    })
}

/// `GET url&_=<ms>` (the TS client's cache buster) with `client`, one of `http`'s two clients.
async fn poll_request(
    client: &reqwest::Client,
    http: &HttpContext,
    url: &Url,
) -> reqwest::Result<reqwest::Response> {
    let mut poll_url = url.clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    poll_url
        .query_pairs_mut()
        .append_pair("_", &now.to_string());
    client
        .get(poll_url)
        .headers(http.request_headers())
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
}

enum Poll {
    Data(bytes::Bytes),
    Empty,
    /// The request failed on an open socket before any response arrived (reset, closed).
    Broken(Error),
    Closed(Option<Error>),
}

async fn poll_once(client: &reqwest::Client, http: &HttpContext, url: &Url) -> Poll {
    let response = match poll_request(client, http, url).await {
        Ok(response) => response,
        // A poll that outlived the client's timeout is simply reissued (TS client).
        Err(err) if err.is_timeout() => return Poll::Empty,
        // No socket to the server at all (refused, unreachable): the server is gone.
        Err(err) if err.is_connect() => {
            return Poll::Closed(Some(http_error("Long polling failed", err)));
        }
        Err(err) => return Poll::Broken(http_error("Long polling failed", err)),
    };
    match response.status() {
        StatusCode::NO_CONTENT => Poll::Closed(None),
        StatusCode::OK => match response.bytes().await {
            Ok(body) if body.is_empty() => Poll::Empty,
            Ok(body) => Poll::Data(body),
            Err(err) if err.is_timeout() => Poll::Empty,
            Err(err) => Poll::Closed(Some(http_error("Long polling failed", err))),
        },
        other => {
            let status = other.as_u16();
            Poll::Closed(Some(Error::with_status(
                Kind::Transport,
                format!("Long polling failed: unexpected response code: {status}."),
                status,
            )))
        }
    }
}

/// Polls until the server ends the connection (204), a poll fails, or the transport is stopped.
///
/// A poll whose socket breaks before the response (the network dropped the TCP connection, a
/// proxy cut it, the pool handed out a socket that died while idle) is no disconnect: the
/// logical connection lives on the server, so the poll is reissued at once on a new socket (the
/// pool-less client), as the .NET client's HTTP stack retries a request that failed on a reused
/// connection before any response. The transport fails when that poll on a new socket fails too,
/// when no socket can be opened at all (the server is unreachable), or when a response breaks
/// while its body is read (the server counts that data as delivered: it cannot be asked for
/// again).
async fn poll_loop(
    http: HttpContext,
    url: Url,
    events: mpsc::UnboundedSender<TransportEvent>,
    token: CancellationToken,
) {
    // Whether the last poll broke, so that this one goes out on a new socket.
    let mut broke = false;
    let closed = loop {
        let client = if broke {
            &http.fresh_client
        } else {
            &http.client
        };
        tokio::select! {
            () = token.cancelled() => {
                // Stop: the pending poll is dropped (aborted), then DELETE ends the connection;
                // 404 (already gone) is fine.
                let delete = http
                    .client
                    .delete(url.clone())
                    .headers(http.request_headers())
                    .timeout(DELETE_TIMEOUT)
                    .send();
                match delete.await {
                    Ok(response) => tracing::debug!(%url, status = %response.status(), "long polling DELETE"),
                    Err(err) => tracing::debug!(error = %err, "long polling DELETE failed"),
                }
                return;
            }
            poll = poll_once(client, &http, &url) => match poll {
                Poll::Data(data) => {
                    broke = false;
                    let _ = events.send(TransportEvent::Data(data));
                }
                Poll::Empty => broke = false,
                Poll::Broken(error) if !broke => {
                    tracing::debug!(%error, "long poll broke before a response; polling again on a new socket");
                    broke = true;
                }
                Poll::Broken(error) => break Some(error),
                Poll::Closed(error) => break error,
            },
        }
    };
    let _ = events.send(TransportEvent::Closed(closed));
}
