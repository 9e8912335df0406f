//! Options of the classic front door and their SignalR 2.4 defaults.

use std::time::Duration;

use signalr_protocol::TransportType;

/// Options of a classic endpoint: SignalR 2.x's `GlobalHost.Configuration` and
/// `HubConfiguration`, with the same defaults.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClassicOptions {
    /// Transports accepted. Default WebSockets, Server-Sent Events and long polling (the
    /// forever-frame transport of old Internet Explorer is not served). Without WebSockets,
    /// negotiate answers `TryWebSockets: false`.
    pub transports: Vec<TransportType>,
    /// How often the server sends a keep-alive (`{}`, `data: {}`, or a space while a long poll
    /// waits). Default 10 s (`KeepAlive`); negotiate tells clients twice this as
    /// `KeepAliveTimeout`, after which they reconnect. `None` turns keep-alives off
    /// (`KeepAliveTimeout: null`).
    pub keep_alive: Option<Duration>,
    /// How long a connection lives on without a transport before it ends (its hubs'
    /// `on_disconnected` run with `stop_called() == false`). Default 30 s (`DisconnectTimeout`).
    /// Messages sent meanwhile are kept and delivered when the client reconnects.
    pub disconnect_timeout: Duration,
    /// The longest a long poll waits for messages before answering an empty envelope. Default
    /// 110 s (`ConnectionTimeout`).
    pub connection_timeout: Duration,
    /// Time a client gives a transport to deliver its init message before trying the next one,
    /// told to clients in negotiate. Default 5 s (`TransportConnectTimeout`).
    pub transport_connect_timeout: Duration,
    /// Delay long-polling clients wait between polls. Default 0 (`LongPollDelay`).
    pub long_poll_delay: Duration,
    /// Messages kept per connection for replay on reconnect; older ones are dropped. Default
    /// 1,000 (`DefaultMessageBufferSize`).
    pub message_buffer_size: usize,
    /// Bytes of messages kept per connection for replay (ours: SignalR 2.4 bounds only the
    /// count). Default 1 MiB. The oldest messages are dropped first; one message larger than
    /// this is still kept alone.
    pub message_buffer_bytes: usize,
    /// Largest message accepted from a client, in bytes: a WebSocket message (larger ones end
    /// the connection at once, as SignalR 2.4 does) or a `/send`, `/poll` or `/reconnect` body
    /// (413). Default 64 KiB (`MaxIncomingWebSocketMessageSize`).
    pub max_incoming_message_size: usize,
    /// Serve the generated JavaScript proxy at `hubs` and `js`. Default `true`
    /// (`EnableJavaScriptProxies`).
    pub enable_javascript_proxies: bool,
    /// Send error details to classic clients (`EnableDetailedErrors`). Default `false`. A
    /// [`HubError::new`](crate::HubError::new) / [`HubError::with_data`](crate::HubError::with_data)
    /// reaches the client whatever this says.
    pub enable_detailed_errors: bool,
    /// Keys of the HMAC-SHA256 that protects connection and groups tokens: the first signs, all
    /// verify (list the previous key second to rotate without breaking live connections).
    /// Default `None`: a random key per router, so tokens do not survive a restart; give every
    /// server behind a load balancer the same keys.
    pub token_keys: Option<Vec<[u8; 32]>>,
}

impl Default for ClassicOptions {
    fn default() -> Self {
        ClassicOptions {
            transports: vec![
                TransportType::WebSockets,
                TransportType::ServerSentEvents,
                TransportType::LongPolling,
            ],
            keep_alive: Some(Duration::from_secs(10)),
            disconnect_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(110),
            transport_connect_timeout: Duration::from_secs(5),
            long_poll_delay: Duration::ZERO,
            message_buffer_size: 1000,
            message_buffer_bytes: 1024 * 1024,
            max_incoming_message_size: 64 * 1024,
            enable_javascript_proxies: true,
            enable_detailed_errors: false,
            token_keys: None,
        }
    }
}
