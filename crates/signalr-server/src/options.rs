//! Server options and their ASP.NET defaults (docs/protocol.md, "Defaults"): [`HubOptions`]
//! (the hub protocol: message sizes, keep-alive, timeouts, streams) and [`ConnectionOptions`]
//! (the connection layer: transports, buffers, origins).

use std::time::Duration;

use signalr_protocol::{HubProtocol, TransportType};

/// Options of the hub layer: ASP.NET `HubOptions` (docs/protocol.md, "Defaults").
#[derive(Debug, Clone)]
#[must_use]
pub struct HubOptions {
    /// Time the client has to send its handshake after the transport is up. Default 15 s
    /// (`HandshakeTimeout`, docs/protocol.md, "Handshake"). On expiry the server answers `Handshake was canceled.`.
    pub handshake_timeout: Duration,
    /// The server sends a Ping when it has written nothing for this long. Default 15 s
    /// (`KeepAliveInterval`, docs/protocol.md, "Keep-alive and timeouts"). Not used on long polling.
    pub keep_alive_interval: Duration,
    /// The server closes a connection from which nothing arrived for this long. Default 30 s
    /// (`ClientTimeoutInterval`, docs/protocol.md, "Keep-alive and timeouts"); armed by the client's first Ping, as in ASP.NET.
    pub client_timeout_interval: Duration,
    /// Largest hub message accepted from a client, in bytes, framing included; `None` = unlimited.
    /// Default 32 KiB (`MaximumReceiveMessageSize`, docs/protocol.md, "Limits"). A larger message closes the connection
    /// with `Connection closed with an error.`.
    ///
    /// On WebSockets it also bounds each WebSocket message (and frame) at twice this size: the
    /// official clients put several hub messages sent at once into one WebSocket message, and
    /// ASP.NET, which reads frames as a byte stream, accepts that. A larger WebSocket message gets
    /// the same Close message, then WebSocket close code 1000, as ASP.NET closes after it.
    pub maximum_receive_message_size: Option<usize>,
    /// Send exception details to clients (`EnableDetailedErrors`, docs/protocol.md, "Completions"). Default `false`.
    pub enable_detailed_errors: bool,
    /// Hub protocols clients may choose in the handshake. Default JSON and MessagePack.
    pub supported_protocols: Vec<HubProtocol>,
    /// Items buffered per client-to-server stream before the connection stops reading. Default 10
    /// (`StreamBufferCapacity`, docs/protocol.md, "Client-to-server streams").
    pub stream_buffer_capacity: usize,
    /// Hub method invocations of one client that may run at once; further ones wait in order.
    /// Default 1 (`MaximumParallelInvocationsPerClient`, docs/protocol.md, "Limits"). Streaming methods do not count.
    pub maximum_parallel_invocations_per_client: usize,
    /// Server-to-client streams and client-to-server (upload) streams one connection may have
    /// open at once. Default 1,024 (ours: ASP.NET has no such limit). An invocation that would
    /// open more is answered with the Completion error `Failed to invoke '<method>' because the
    /// connection already has the maximum number of open streams (<n>).`.
    pub maximum_streams_per_client: usize,
    /// How long the server waits for a client result (docs/protocol.md, "Client results"). Default 30 s. ASP.NET waits until
    /// the call's cancellation token fires; a bound keeps a silent client from holding a hub
    /// method forever.
    pub client_result_timeout: Duration,
    /// Bytes of sent messages a stateful-reconnect connection keeps until the client
    /// acknowledges them (docs/protocol.md, "Stateful reconnect"). Default 100,000
    /// (`StatefulReconnectBufferSize`). When they reach it, the connection writes nothing more
    /// until an Ack comes: further messages wait in its outgoing queue, and when that fills too
    /// the [slow-consumer policy](ConnectionOptions::outgoing_queue_capacity) applies (ASP.NET
    /// makes the hub's sends wait instead).
    pub stateful_reconnect_buffer_size: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            handshake_timeout: Duration::from_secs(15),
            keep_alive_interval: Duration::from_secs(15),
            client_timeout_interval: Duration::from_secs(30),
            maximum_receive_message_size: Some(32 * 1024),
            enable_detailed_errors: false,
            supported_protocols: vec![HubProtocol::Json, HubProtocol::MessagePack],
            stream_buffer_capacity: 10,
            maximum_parallel_invocations_per_client: 1,
            maximum_streams_per_client: 1024,
            client_result_timeout: Duration::from_secs(30),
            stateful_reconnect_buffer_size: 100_000,
        }
    }
}

/// Options of the connection layer: ASP.NET `HttpConnectionDispatcherOptions` (docs/protocol.md, "Defaults").
#[derive(Debug, Clone)]
#[must_use]
pub struct ConnectionOptions {
    /// Transports offered by negotiate and accepted on the endpoint, in preference order.
    /// Default: WebSockets, ServerSentEvents, LongPolling.
    pub transports: Vec<TransportType>,
    /// A connection with no transport request attached for this long is disposed. Default 15 s
    /// (`DisconnectTimeout`, docs/protocol.md, "Connection lifetime").
    pub disconnect_timeout: Duration,
    /// How long a long-polling request waits for data before answering an empty 200. Default 90 s
    /// (`LongPolling.PollTimeout`, docs/protocol.md, "Long polling").
    pub long_polling_timeout: Duration,
    /// Lowest negotiate version accepted. Default 0 (`MinimumProtocolVersion`, docs/protocol.md, "Negotiate versions"), as in
    /// ASP.NET.
    ///
    /// **Risk of the default**: with version 0 the connection token *is* the public connection
    /// id, so anyone who learns a connection id (hub methods that pass ids around, logs, group
    /// listings) can send and receive as that connection. Every current official client speaks
    /// version 1; set this to 1 unless you must serve pre-3.0 clients.
    pub minimum_negotiate_version: u32,
    /// Origins (`scheme://host[:port]`, compared case-insensitively; `"*"` = any) whose pages
    /// may use this endpoint. Empty (the default) allows every origin, as ASP.NET does.
    ///
    /// **Risk of the default**: WebSocket upgrades are not subject to CORS, so any web page a
    /// user visits can open a WebSocket to this endpoint with the user's cookies. When hubs
    /// authenticate by cookie, list your sites here. A request whose `Origin` header is not
    /// listed gets 403 (negotiate, the WebSocket upgrade and every other transport request);
    /// requests without `Origin` (non-browser clients) are not affected. This is ASP.NET's
    /// `WebSocketOptions.AllowedOrigins`, applied to all of the endpoint's requests.
    pub allowed_origins: Vec<String>,
    /// Capacity of each connection's outgoing queue, in messages. Default 1024. The queue is
    /// also bounded in bytes by [`outgoing_buffer_size`](Self::outgoing_buffer_size); it is full
    /// when either bound is reached.
    ///
    /// **Slow-consumer policy**: when a message fanned out to many connections (all, others, a
    /// group, users) finds a connection's queue full, that connection is closed as a slow
    /// consumer instead of stalling the others (its transport response ends and its socket is
    /// released); the caller's own Completions and stream items, and a send to one addressed
    /// connection, wait for room instead (back-pressure).
    pub outgoing_queue_capacity: usize,
    /// High-water mark of each connection's outgoing queue, in bytes of encoded messages not yet
    /// written to the transport. Default 128 KiB (ASP.NET's two 64 KiB pipes, application and
    /// transport, `ApplicationMaxBufferSize` + `TransportMaxBufferSize`, docs/protocol.md, "Connection lifetime"). A message is
    /// queued while fewer bytes than this are waiting, so one message larger than the limit
    /// still goes out; at most this plus one message is held.
    pub outgoing_buffer_size: usize,
    /// Capacity of each connection's incoming queue, in transport reads (WebSocket messages,
    /// chunks of POST bodies). Default 32. When full, the transport stops reading: back-pressure
    /// on the client.
    pub incoming_queue_capacity: usize,
    /// High-water mark of each connection's incoming queue, in bytes received but not yet taken
    /// by the hub (or raw handler). Default 64 KiB (ASP.NET `TransportMaxBufferSize`, docs/protocol.md, "Connection lifetime"). At
    /// or above it the transport stops reading (WebSockets) or waits before reading the next
    /// chunk of a POST body. For raw connections it is also the largest WebSocket message
    /// accepted (hub connections follow [`HubOptions::maximum_receive_message_size`]).
    pub incoming_buffer_size: usize,
    /// How long the server waits for the client's WebSocket Close frame after sending its own,
    /// before dropping the TCP connection. Default 5 s (ASP.NET `WebSockets.CloseTimeout`).
    pub websocket_close_timeout: Duration,
    /// Longest time one WebSocket write may take before the connection is closed and its socket
    /// released. Default 10 s (ASP.NET `TransportSendTimeout`, docs/protocol.md, "Connection lifetime"): a client that stops
    /// reading is caught by this even when nothing else is sent to it. SSE and long-polling
    /// responses are written by the HTTP server; with [`crate::serve()`] its
    /// [`write_stall_timeout`](crate::serve::ServeOptions::write_stall_timeout) (also 10 s) does
    /// the same for them.
    pub transport_send_timeout: Duration,
    /// Size of each WebSocket's read buffer, in bytes. Default 8 KiB (tungstenite's own default
    /// is 128 KiB, which it zero-fills before every read and keeps per connection: at 10,000
    /// idle connections that is 1.3 GB). Larger messages are read in several chunks.
    pub websocket_read_buffer_size: usize,
    /// Offer stateful reconnect to clients that ask for it in negotiate
    /// (`useStatefulReconnect=true`; docs/protocol.md, "Stateful reconnect"). Default `false`
    /// (`AllowStatefulReconnects`). On a WebSocket whose handshake has version 2, a socket lost
    /// without a Close frame does not end the connection: for
    /// [`disconnect_timeout`](Self::disconnect_timeout) the client may open a new WebSocket with the same token, and
    /// both sides resend what the other has not acknowledged; the hub sees no disconnect. The
    /// size of what is kept for resending is [`HubOptions::stateful_reconnect_buffer_size`].
    pub allow_stateful_reconnects: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            transports: vec![
                TransportType::WebSockets,
                TransportType::ServerSentEvents,
                TransportType::LongPolling,
            ],
            disconnect_timeout: Duration::from_secs(15),
            long_polling_timeout: Duration::from_secs(90),
            minimum_negotiate_version: 0,
            allowed_origins: Vec::new(),
            outgoing_queue_capacity: 1024,
            outgoing_buffer_size: 128 * 1024,
            incoming_queue_capacity: 32,
            incoming_buffer_size: 64 * 1024,
            websocket_close_timeout: Duration::from_secs(5),
            transport_send_timeout: Duration::from_secs(10),
            websocket_read_buffer_size: 8 * 1024,
            allow_stateful_reconnects: false,
        }
    }
}
