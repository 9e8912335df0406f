//! The long-polling transport (reference §A3.5): repeated `GET`s bring server-to-client data,
//! POSTs carry client-to-server data (§A3.3), a `DELETE` ends the connection. Text and binary.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    HTTP_TIMEOUT, HttpContext, Stopper, TransportConnection, TransportEvent, http_error, post_loop,
};
use crate::Transport;
use crate::error::{Error, Kind};

/// How long the DELETE of a graceful stop may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes the first poll (which must answer 200 at once), then starts polling and the POST writer.
pub(crate) async fn start(http: &HttpContext, url: &Url) -> Result<TransportConnection, Error> {
    let response = poll_request(http, url)
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
        kind: Transport::LongPolling,
        sender,
        events,
        stopper: Stopper::new(token, vec![poller, writer]),
    })
}

/// `GET url&_=<ms>` (the TS client's cache buster).
async fn poll_request(http: &HttpContext, url: &Url) -> reqwest::Result<reqwest::Response> {
    let mut poll_url = url.clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    poll_url
        .query_pairs_mut()
        .append_pair("_", &now.to_string());
    http.client
        .get(poll_url)
        .headers(http.request_headers())
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
}

enum Poll {
    Data(bytes::Bytes),
    Empty,
    Closed(Option<Error>),
}

async fn poll_once(http: &HttpContext, url: &Url) -> Poll {
    let response = match poll_request(http, url).await {
        Ok(response) => response,
        // A poll that outlived the client's timeout is simply reissued (TS client).
        Err(err) if err.is_timeout() => return Poll::Empty,
        Err(err) => return Poll::Closed(Some(http_error("Long polling failed", err))),
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

async fn poll_loop(
    http: HttpContext,
    url: Url,
    events: mpsc::UnboundedSender<TransportEvent>,
    token: CancellationToken,
) {
    let closed = loop {
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
                    Ok(response) => tracing::debug!(status = %response.status(), "long polling DELETE"),
                    Err(err) => tracing::debug!(error = %err, "long polling DELETE failed"),
                }
                return;
            }
            poll = poll_once(&http, &url) => match poll {
                Poll::Data(data) => {
                    let _ = events.send(TransportEvent::Data(data));
                }
                Poll::Empty => {}
                Poll::Closed(error) => break error,
            },
        }
    };
    let _ = events.send(TransportEvent::Closed(closed));
}
