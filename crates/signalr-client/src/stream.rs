//! `HubStream`: the items of a server-to-client stream (docs/protocol.md, "Server-to-client streams").

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use signalr_protocol::Payload;
use tokio::sync::mpsc;

use crate::error::{Error, Kind};
use crate::session::{Session, cancel_stream};

/// The items of a streaming hub method, from [`HubConnection::stream`](crate::HubConnection::stream).
///
/// Yields `Ok(item)` per StreamItem, bound to `T` with serde (an item that does not fit `T`
/// yields an [`Error::is_decode`] error and the stream goes on), and ends after the server's
/// Completion. A Completion with an error yields one [`Error::is_server_error`] error, a lost
/// connection one [`Error::is_closed`] error; the stream ends after either.
///
/// Dropping the stream before it ended cancels it: the client sends a CancelInvocation and the
/// server's method sees its cancellation.
#[must_use = "a stream does nothing unless polled; dropping it cancels the server's stream"]
pub struct HubStream<T> {
    receiver: mpsc::UnboundedReceiver<Result<Payload, Error>>,
    session: Weak<Session>,
    invocation_id: String,
    done: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> HubStream<T> {
    pub(crate) fn new(
        receiver: mpsc::UnboundedReceiver<Result<Payload, Error>>,
        session: Weak<Session>,
        invocation_id: String,
    ) -> Self {
        HubStream {
            receiver,
            session,
            invocation_id,
            done: false,
            _item: PhantomData,
        }
    }

    /// The stream's invocation id on the wire.
    pub fn invocation_id(&self) -> &str {
        &self.invocation_id
    }
}

impl<T> std::fmt::Debug for HubStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStream")
            .field("invocation_id", &self.invocation_id)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: DeserializeOwned> Stream for HubStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(Ok(payload))) => {
                Poll::Ready(Some(payload.deserialize::<T>().map_err(|err| {
                    Error::with_source(
                        Kind::Decode,
                        format!("A stream item could not be deserialized: {err}"),
                        err,
                    )
                })))
            }
            Poll::Ready(Some(Err(err))) => {
                self.done = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for HubStream<T> {
    fn drop(&mut self) {
        if !self.done
            && let Some(session) = self.session.upgrade()
        {
            cancel_stream(&session, &self.invocation_id);
        }
    }
}
