//! Raw connections without the hub protocol (ASP.NET `ConnectionHandler` /
//! `MapConnectionHandler`): negotiate and the three transports carry opaque bytes between the
//! client (e.g. the TS client's `HttpConnection`) and a handler function.
//!
//! Mount [`connection_router`] and handle each [`RawConnection`].

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use signalr_protocol::TransportType;

use crate::connection::{Connection, ConnectionRequest, Inbound, Outgoing, Received};
use crate::dispatcher::{Application, Endpoint};
use crate::options::ConnectionOptions;

pub(crate) type RawHandler = Arc<dyn Fn(RawConnection) -> BoxFuture<'static, ()> + Send + Sync>;

/// One raw connection: the bytes the client sends, and a way to send bytes back. The connection
/// closes when the handler returns or the client goes away.
pub struct RawConnection {
    connection: Arc<Connection>,
    inbound: Inbound,
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("connection_id", &self.connection.id)
            .finish()
    }
}

impl RawConnection {
    pub(crate) fn new(connection: Arc<Connection>, inbound: Inbound) -> Self {
        RawConnection {
            connection,
            inbound,
        }
    }

    /// The public connection id.
    pub fn connection_id(&self) -> &str {
        &self.connection.id
    }

    /// The transport in use.
    pub fn transport(&self) -> Option<TransportType> {
        self.connection.transport()
    }

    /// The HTTP request that opened the transport.
    pub fn request(&self) -> Option<&ConnectionRequest> {
        self.connection.request.get().map(|r| &**r)
    }

    /// The next chunk of bytes from the client, as one transport read delivered it (a WebSocket
    /// message or a chunk of a POST body; boundaries carry no meaning). `None` when the client is
    /// gone, or sent a WebSocket message larger than
    /// [`ConnectionOptions::incoming_buffer_size`] (the WebSocket then closes with 1009).
    pub async fn receive(&mut self) -> Option<Bytes> {
        tokio::select! {
            received = self.inbound.recv() => match received? {
                Received::Data(bytes) => Some(bytes),
                Received::MessageTooLarge => None,
            },
            () = self.connection.closed.cancelled() => None,
        }
    }

    /// Queues bytes for the client, waiting for room in the outgoing queue. On WebSockets they
    /// go out as a text frame unless the client's last frame was binary (or they are not UTF-8).
    /// `false` when the connection is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        self.connection.send(Outgoing::Data(data)).await.is_ok()
    }
}

/// An axum `Router` serving raw connections at `/negotiate` and `/` (nest it at any path, like
/// [`Hub::router`](crate::Hub::router)), calling `handler` once per connection.
///
/// ```
/// use signalr_server::{ConnectionOptions, raw::{RawConnection, connection_router}};
///
/// // An echo endpoint, like ASP.NET's `EchoConnectionHandler`.
/// let echo = connection_router(ConnectionOptions::default(), |mut connection: RawConnection| async move {
///     while let Some(data) = connection.receive().await {
///         if !connection.send(data).await {
///             break;
///         }
///     }
/// });
/// let app: axum::Router = axum::Router::new().nest("/echo", echo);
/// # drop(app);
/// ```
pub fn connection_router<F, Fut>(options: ConnectionOptions, handler: F) -> axum::Router
where
    F: Fn(RawConnection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler: RawHandler = Arc::new(move |connection| Box::pin(handler(connection)));
    let endpoint = Endpoint {
        manager: crate::connection::ConnectionManager::new(options.clone()),
        websocket_message_limit: options.incoming_buffer_size.max(1),
        options,
        authenticator: None,
        policy: None,
        application: Application::Raw(handler),
    };
    crate::dispatcher::router(Arc::new(endpoint))
}
