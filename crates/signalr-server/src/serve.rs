//! A hardened way to serve an axum [`Router`] over HTTP/1.1: [`serve`] is a drop-in replacement
//! for `axum::serve` with the request limits Kestrel (the ASP.NET Core server) applies by default.
//!
//! ```no_run
//! use std::time::Duration;
//! use signalr_server::serve::{ServeOptions, serve};
//!
//! # async fn run(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! serve(listener, app)
//!     .options(ServeOptions::new().header_read_timeout(Duration::from_secs(10)))
//!     .with_graceful_shutdown(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await
//! # }
//! ```
//!
//! `axum::serve` sets no timeout and no header limit: a client that sends its request headers
//! one byte at a time (slowloris), or never finishes them, holds its socket for as long as it
//! likes, so enough of them exhaust the process's file descriptors; a request head may be as
//! large as hyper's read buffer (about 400 KB). [`serve`] closes such connections:
//!
//! | limit ([`ServeOptions`]) | default | Kestrel equivalent | past the limit |
//! |---|---|---|---|
//! | [`header_read_timeout`](ServeOptions::header_read_timeout) | 30 s | `RequestHeadersTimeout` (30 s) | connection closed, no response |
//! | the same timer between requests | 30 s | `KeepAliveTimeout` (130 s) | idle connection closed |
//! | [`max_request_headers_total_size`](ServeOptions::max_request_headers_total_size) | 32 KiB | `MaxRequestHeadersTotalSize` (32 KiB) | `431 Request Header Fields Too Large`, closed |
//! | [`max_request_header_count`](ServeOptions::max_request_header_count) | 100 | `MaxRequestHeaderCount` (100) | `431 Request Header Fields Too Large`, closed |
//! | [`min_request_body_data_rate`](ServeOptions::min_request_body_data_rate) | 240 B/s after 5 s | `MinRequestBodyDataRate` (240 B/s, 5 s grace) | body read fails with [`RequestBodyTooSlow`] |
//! | [`max_pending_connections`](ServeOptions::max_pending_connections) | 1,024 | none (Kestrel has only `MaxConcurrentConnections`, unlimited) | the oldest such connection is closed |
//! | [`tcp_nodelay`](ServeOptions::tcp_nodelay) | on | `NoDelay` (on) | |
//! | [`write_stall_timeout`](ServeOptions::write_stall_timeout) | 10 s | `MinResponseDataRate` (240 B/s, 5 s grace); SignalR `TransportSendTimeout` (10 s) | connection dropped |
//!
//! # Timeouts
//! The header timeout runs from the moment the server starts waiting for a request head until
//! the head is complete; trickling bytes does not extend it. hyper starts the same timer as soon
//! as a kept-alive connection has finished a response and waits for the next request, so an idle
//! keep-alive connection is closed after the header timeout too: there is no separate (longer)
//! keep-alive timeout as in Kestrel, idle connections simply last at most
//! [`header_read_timeout`](ServeOptions::header_read_timeout). Nothing limits how long a response
//! takes (long polls, Server-Sent Events and WebSockets last as long as the hub keeps them), but
//! a write the client does not take within
//! [`write_stall_timeout`](ServeOptions::write_stall_timeout) drops the connection.
//!
//! # Half-sent requests
//! A connection counts as *pending* from the moment it is accepted until the head of its first
//! request has been read. At most
//! [`max_pending_connections`](ServeOptions::max_pending_connections) are kept: accepting one more
//! closes the *oldest* pending connection. A normal client sends its request head as soon as the
//! TCP handshake completes, so its head arrives right behind the handshake and it stays pending
//! only briefly, as the newest; an attacker would have to get a whole cap's worth of connections
//! accepted in that window to push it out. The connections that grow old while pending are the
//! ones trickling or withholding their heads. A legitimate client on a very slow link may
//! be closed this way while the server is under such an attack (and only then). Connections that
//! have been served once are no longer pending; between requests they are bounded by the header
//! timeout.
//!
//! When `accept` itself fails for lack of resources (`EMFILE`, `ENFILE`, `ENOBUFS`), the oldest
//! pending connection is closed to free its descriptor and accepting resumes 1 ms later; when
//! there is no pending connection to close, after a pause that grows from 10 ms to 1 s while the
//! errors go on. So the server neither spins nor stops, and with a descriptor limit below the cap
//! the cap in effect shrinks to what the limit allows. Errors about the one connection being
//! accepted (reset or aborted by the peer) are skipped.
//!
//! # What every request carries
//! Each request's extensions hold the client's address as axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) (what the hub records as the remote
//! address) and a [`ConnectionAbort`] for its TCP connection.
//!
//! # Protocols
//! HTTP/1.0 and HTTP/1.1 with upgrades (WebSockets), on hyper's HTTP/1 connection. HTTP/2 is not
//! served: over cleartext the SignalR clients speak HTTP/1.1 (browsers use HTTP/2 only over TLS,
//! .NET's `HttpClient` only when told to), and hyper-util's HTTP/1-or-2 connection reads the first
//! bytes to tell the versions apart before hyper's header timer starts, so a connection that sends
//! nothing would never time out.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower_service::Service as _;

/// hyper's default maximum read buffer (8 KiB + 100 × 4 KiB); a head never grows past it.
const HYPER_DEFAULT_MAX_BUF_SIZE: usize = 8192 + 4096 * 100;
/// hyper's default header count (its parser keeps that many on the stack).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
/// First and last pause after an `accept` error that is not about the accepted connection.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Pause after an `accept` error that closed a pending connection (time for its task to run).
const ACCEPT_RETRY_AFTER_EVICTION: Duration = Duration::from_millis(1);
/// Minimum interval between two warnings about accept errors or evicted connections.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `app` on `listener` with the limits of [`ServeOptions::default`]; configure with
/// [`Serve::options`], stop with [`Serve::with_graceful_shutdown`], run by awaiting it (or
/// [`tokio::spawn`] its [`IntoFuture::into_future`]).
///
/// Like `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`, plus
/// the limits and the per-connection [`ConnectionAbort`] described in the [module
/// docs](mod@crate::serve).
pub fn serve(listener: TcpListener, app: Router) -> Serve {
    Serve {
        listener,
        app,
        options: ServeOptions::default(),
        signal: None,
    }
}

/// The server returned by [`serve`]: a builder until it is awaited.
///
/// Awaiting it accepts connections until the graceful-shutdown signal (forever without one) and
/// resolves to `Ok(())` once every connection has finished. Failed `accept` calls never end it
/// (see the [module docs](mod@crate::serve#half-sent-requests)); the `io::Result` output keeps
/// `fn main() -> std::io::Result<()>` code written for `axum::serve` unchanged.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve {
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Serve {
    /// Replaces the limits (default: [`ServeOptions::default`]).
    pub fn options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    /// Stops the server when `signal` completes: it stops accepting (the listening socket is
    /// closed at once), lets every connection finish the request it is serving and closes it
    /// afterwards (idle ones at once), and resolves when the last connection has closed.
    ///
    /// Connections upgraded to WebSockets are no longer HTTP connections and do not delay the
    /// shutdown; close them through the hub. Long-running responses (Server-Sent Events, long
    /// polls) do delay it until they end; bound the wait yourself (e.g. with
    /// [`tokio::time::timeout`]) if they may not.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// The address the listener is bound to (useful after binding port 0).
    ///
    /// # Errors
    /// The error of [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("options", &self.options)
            .field("graceful_shutdown", &self.signal.is_some())
            .finish_non_exhaustive()
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    /// The accept loop runs as a task of its own (aborted when this future is dropped): on a
    /// multi-thread runtime, the future `block_on` drives (`#[tokio::main]`'s) runs outside the
    /// worker threads, so every connection task it spawned would go through the runtime's
    /// shared queue, and the connections' memory would come from another thread's allocator
    /// arena than the one they live on (measured: 0.8 KiB more per idle WebSocket).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(run(self)));
            match task.await {
                Ok(result) => result,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => Err(io::Error::other(error)),
            }
        })
    }
}

/// Limits and socket options of [`serve`]. Build with [`ServeOptions::new`] (the defaults) and
/// the setters; the [module docs](mod@crate::serve) list the defaults and their Kestrel
/// counterparts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ServeOptions {
    header_read_timeout: Duration,
    max_request_headers_total_size: usize,
    max_request_header_count: usize,
    min_request_body_data_rate: Option<MinDataRate>,
    max_pending_connections: usize,
    tcp_nodelay: bool,
    write_stall_timeout: Option<Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_request_headers_total_size: 32 * 1024,
            max_request_header_count: HYPER_DEFAULT_MAX_HEADERS,
            min_request_body_data_rate: Some(MinDataRate::new(240, Duration::from_secs(5))),
            max_pending_connections: 1024,
            tcp_nodelay: true,
            write_stall_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl ServeOptions {
    /// The defaults: 30 s header timeout, 32 KiB of headers, 100 headers, 240 B/s minimum body
    /// rate after a 5 s grace period, 1,024 pending connections, `TCP_NODELAY` on.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a client may take to send a complete request head (request line and headers),
    /// counted from when the server starts waiting for it: from the accept for the first request,
    /// from the end of the previous response for the next ones, so this also bounds how long an
    /// idle keep-alive connection stays open. Past it the connection is closed without a
    /// response. Default 30 s (Kestrel `RequestHeadersTimeout`). `Duration::ZERO` closes every
    /// connection at once.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The largest request head in bytes, request line included (Kestrel counts the request line
    /// separately). A larger head is answered with `431 Request Header Fields Too Large` and the
    /// connection is closed. Default 32 KiB (Kestrel `MaxRequestHeadersTotalSize`).
    pub fn max_request_headers_total_size(mut self, bytes: usize) -> Self {
        self.max_request_headers_total_size = bytes;
        self
    }

    /// The most header fields a request may have; more are answered with
    /// `431 Request Header Fields Too Large` and the connection is closed. Default 100 (Kestrel
    /// `MaxRequestHeaderCount`; also hyper's default, which parses them without allocating).
    pub fn max_request_header_count(mut self, count: usize) -> Self {
        self.max_request_header_count = count;
        self
    }

    /// The slowest request body the server accepts, or `None` for no minimum. Default
    /// 240 bytes/s after a 5 s grace period (Kestrel `MinRequestBodyDataRate`); see
    /// [`MinDataRate`] for how it is measured and [`RequestBodyTooSlow`] for what a handler sees.
    pub fn min_request_body_data_rate(mut self, rate: Option<MinDataRate>) -> Self {
        self.min_request_body_data_rate = rate;
        self
    }

    /// How long a write to a socket may make no progress at all (the client's receive window
    /// stays full) before the connection is dropped; `None` never drops it. Default 10 s
    /// (SignalR's `TransportSendTimeout`; Kestrel bounds the same stall with
    /// `MinResponseDataRate`). It frees the socket of a client that stopped reading a long-poll
    /// response, an SSE stream or a WebSocket, whatever else the server does; an idle
    /// connection (nothing to write) is not affected.
    pub fn write_stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_stall_timeout = timeout;
        self
    }

    /// How many connections may be waiting for the head of their first request at once; when one
    /// more is accepted, the oldest of them is closed (see the [module
    /// docs](mod@crate::serve#half-sent-requests) for why normal clients keep getting through).
    /// Default 1,024; 0 is taken as 1.
    pub fn max_pending_connections(mut self, count: usize) -> Self {
        self.max_pending_connections = count.max(1);
        self
    }

    /// Whether accepted sockets get `TCP_NODELAY`, so small hub messages leave at once instead of
    /// waiting for Nagle's algorithm. Default on (Kestrel `NoDelay`).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }
}

/// A minimum data rate with a grace period, as Kestrel's `MinDataRate`: bytes per second, and
/// how long a body may stay below that rate at its start.
///
/// Only the time the application spends waiting for body data counts: the clock runs while a
/// read of the body is pending and stops while the application is busy with what it read, so a
/// slow application never makes the client look slow. The body fails once that waiting time is
/// past the grace period and the bytes received are fewer than `bytes_per_second` times the
/// waiting time (an average over the whole body, so a fast start earns time for later pauses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinDataRate {
    bytes_per_second: u64,
    grace_period: Duration,
}

impl MinDataRate {
    /// `bytes_per_second` (0 never fails) after `grace_period`.
    pub fn new(bytes_per_second: u64, grace_period: Duration) -> Self {
        Self {
            bytes_per_second,
            grace_period,
        }
    }

    /// The minimum rate in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// How long a body may be slower than the minimum at its start.
    pub fn grace_period(&self) -> Duration {
        self.grace_period
    }

    /// The waiting time `received` bytes allow: the grace period, or longer when the bytes were
    /// enough for more time at the minimum rate.
    fn allowance(&self, received: u64) -> Duration {
        let rate = self.bytes_per_second.max(1);
        let nanos = u128::from(received % rate) * 1_000_000_000 / u128::from(rate);
        // `nanos` < 10^9 because the remainder is below `rate`.
        let earned = Duration::new(received / rate, u32::try_from(nanos).unwrap_or(0));
        self.grace_period.max(earned)
    }
}

/// The error a request body yields (as a body read error: an `Err` frame, wrapped by axum's
/// [`Body`](axum::body::Body) in an [`axum::Error`] whose [`source`](StdError::source) chain
/// reaches this value) when the client sends it slower than
/// [`ServeOptions::min_request_body_data_rate`]. As in Kestrel, the rest of the body is not
/// read: the connection is closed after the response, which the application may still send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestBodyTooSlow {
    minimum: MinDataRate,
    received: u64,
    waited: Duration,
}

impl RequestBodyTooSlow {
    /// The minimum rate the body fell below.
    pub fn minimum(&self) -> MinDataRate {
        self.minimum
    }

    /// Body bytes received until the body failed.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// How long the application had been waiting for body data when the body failed.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for RequestBodyTooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body too slow: {} bytes in {:.1} s, below the minimum of {} bytes/s \
             (grace period {:.1} s)",
            self.received,
            self.waited.as_secs_f64(),
            self.minimum.bytes_per_second,
            self.minimum.grace_period.as_secs_f64(),
        )
    }
}

impl StdError for RequestBodyTooSlow {}

/// A handle on one TCP connection of [`serve`], in the extensions of every request it carries:
/// `request.extensions().get::<ConnectionAbort>()`, or the extractor
/// `Extension(abort): Extension<ConnectionAbort>`. Cheap to clone (one `Arc`).
///
/// [`abort`](Self::abort) closes the socket at once, whatever hyper is doing with it: every
/// further read or write of the connection fails with [`io::ErrorKind::ConnectionAborted`] (the
/// ones already waiting are woken), the task driving the connection drops it, and the socket is
/// closed. This frees the socket of a client that stopped reading while hyper is blocked writing
/// it a response, which ending the response body cannot do (hyper does not poll a body it cannot
/// write). It works on upgraded (WebSocket) connections too: the WebSocket's reads and writes
/// fail, and the socket closes as soon as its owner drops it on that error. A response in flight
/// on the connection is cut off, and the handler of a request being served is dropped
/// (cancelled) with the connection.
///
/// Requests served by plain `axum::serve` carry no `ConnectionAbort`, so code that may run under
/// either should take it as an `Option`.
#[derive(Clone)]
pub struct ConnectionAbort {
    inner: Arc<AbortInner>,
}

struct AbortInner {
    aborted: AtomicBool,
    /// Wakes the [`ConnectionAbort::aborted`] waiters (inline: no allocation per connection).
    notify: tokio::sync::Notify,
    read: AtomicWaker,
    write: AtomicWaker,
}

impl ConnectionAbort {
    /// A handle not tied to any connection (for tests of code that takes one); [`serve`] makes
    /// the real ones.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(AbortInner {
                aborted: AtomicBool::new(false),
                notify: tokio::sync::Notify::new(),
                read: AtomicWaker::new(),
                write: AtomicWaker::new(),
            }),
        }
    }

    /// Closes the connection now (idempotent).
    pub fn abort(&self) {
        if !self.inner.aborted.swap(true, Ordering::SeqCst) {
            self.inner.notify.notify_waiters();
            self.inner.read.wake();
            self.inner.write.wake();
        }
    }

    /// Whether [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::SeqCst)
    }

    /// Completes once [`abort`](Self::abort) has been called (at once if it was).
    pub async fn aborted(&self) {
        let notified = self.inner.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the check: an abort in between still wakes this waiter.
        notified.as_mut().enable();
        if self.is_aborted() {
            return;
        }
        notified.await;
    }
}

impl Default for ConnectionAbort {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ConnectionAbort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionAbort")
            .field("aborted", &self.is_aborted())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Accept loop
// ---------------------------------------------------------------------------------------------

/// What every connection task shares.
struct Shared {
    app: Router,
    http: http1::Builder,
    write_stall_timeout: Option<Duration>,
    body_rate: Option<MinDataRate>,
    pending: Pending,
}

async fn run(server: Serve) -> io::Result<()> {
    let Serve {
        listener,
        app,
        options,
        signal,
    } = server;
    let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
    let shared = Arc::new(Shared {
        app,
        http: http_builder(&options),
        write_stall_timeout: options.write_stall_timeout,
        body_rate: options
            .min_request_body_data_rate
            .filter(|rate| rate.bytes_per_second > 0),
        pending: Pending::new(options.max_pending_connections),
    });
    // Connections watch `shutdown` for the signal; `closed()` completes when all have ended.
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut warnings = Warnings::default();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                if options.tcp_nodelay {
                    let _ = stream.set_nodelay(true);
                }
                let abort = ConnectionAbort::new();
                let (key, evicted) = shared.pending.insert(&abort);
                if evicted > 0 {
                    warnings.evicted(evicted, shared.pending.cap);
                }
                tokio::spawn(serve_connection(
                    stream,
                    remote,
                    abort,
                    key,
                    shared.clone(),
                    shutdown_rx.clone(),
                ));
            }
            Err(error) if is_connection_error(&error) => {
                tracing::trace!(%error, "accept: connection failed before it was accepted");
            }
            Err(error) => {
                // Out of descriptors (or memory): free one held by a half-sent request, then wait
                // instead of spinning on a listener that stays readable.
                let freed = shared.pending.evict_oldest();
                // With a descriptor freed, retry as soon as its connection task has closed it;
                // otherwise back off further while the errors go on.
                let pause = if freed {
                    ACCEPT_RETRY_AFTER_EVICTION
                } else {
                    backoff
                };
                warnings.accept_error(&error, pause, freed);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut signal => break,
                }
                if !freed {
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    drop(listener);
    drop(shutdown_rx);
    let _ = shutdown.send(true);
    shutdown.closed().await;
    Ok(())
}

/// The hyper HTTP/1 settings for `options`.
fn http_builder(options: &ServeOptions) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(options.max_request_headers_total_size);
    if options.max_request_headers_total_size > HYPER_DEFAULT_MAX_BUF_SIZE {
        // The read buffer must be able to hold the largest head allowed.
        http.max_buf_size(options.max_request_headers_total_size);
    }
    if options.max_request_header_count != HYPER_DEFAULT_MAX_HEADERS {
        // Setting it makes hyper allocate the header array per request, so only when needed.
        http.max_headers(options.max_request_header_count);
    }
    http
}

/// Errors of `accept` about the one connection being accepted; the next accept may succeed.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Rate-limited warnings of the accept loop (an attack would otherwise flood the log).
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    evicted: u64,
    accept_errors: u64,
}

impl Warnings {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < WARN_INTERVAL) {
            return false;
        }
        self.last = Some(now);
        true
    }

    fn evicted(&mut self, count: u64, cap: usize) {
        self.evicted += count;
        if self.due() {
            tracing::warn!(
                closed = self.evicted,
                cap,
                "more connections than max_pending_connections are waiting for a first request \
                 head; closed the oldest (slowloris or connection flood?)"
            );
            self.evicted = 0;
        }
    }

    fn accept_error(&mut self, error: &io::Error, backoff: Duration, freed: bool) {
        self.accept_errors += 1;
        if self.due() {
            tracing::warn!(
                %error,
                errors = self.accept_errors,
                retry_in_ms = backoff.as_millis() as u64,
                closed_a_pending_connection = freed,
                "accepting a connection failed"
            );
            self.accept_errors = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pending connections (first request head not read yet)
// ---------------------------------------------------------------------------------------------

/// The connections waiting for their first request head, oldest first.
struct Pending {
    cap: usize,
    state: Mutex<PendingState>,
}

struct PendingState {
    next_key: u64,
    connections: BTreeMap<u64, ConnectionAbort>,
}

/// The key of a connection that is no longer pending.
const NOT_PENDING: u64 = u64::MAX;

impl Pending {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            state: Mutex::new(PendingState {
                next_key: 0,
                connections: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        // The state stays consistent even if a holder panicked (every update is one call).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection; returns its key and how many older ones were closed to stay
    /// within the cap.
    fn insert(&self, abort: &ConnectionAbort) -> (u64, u64) {
        let mut evicted = Vec::new();
        let key = {
            let mut state = self.lock();
            let key = state.next_key;
            state.next_key += 1;
            state.connections.insert(key, abort.clone());
            while state.connections.len() > self.cap {
                if let Some((_, oldest)) = state.connections.pop_first() {
                    evicted.push(oldest);
                }
            }
            key
        };
        for oldest in &evicted {
            oldest.abort();
        }
        (key, evicted.len() as u64)
    }

    /// Closes the oldest pending connection; whether there was one.
    fn evict_oldest(&self) -> bool {
        let oldest = self.lock().connections.pop_first();
        oldest.map(|(_, abort)| abort.abort()).is_some()
    }

    fn remove(&self, key: u64) {
        if key != NOT_PENDING {
            self.lock().connections.remove(&key);
        }
    }
}

/// A connection's place in [`Pending`], taken out by its first request or when it ends.
struct PendingKey {
    key: AtomicU64,
    shared: Arc<Shared>,
}

impl PendingKey {
    fn leave(&self) {
        let key = self.key.swap(NOT_PENDING, Ordering::AcqRel);
        self.shared.pending.remove(key);
    }
}

impl Drop for PendingKey {
    fn drop(&mut self) {
        self.leave();
    }
}

// ---------------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------------

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    abort: ConnectionAbort,
    key: u64,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pending = Arc::new(PendingKey {
        key: AtomicU64::new(key),
        shared: shared.clone(),
    });
    let io = TokioIo::new(AbortableIo {
        inner: stream,
        abort: abort.inner.clone(),
        stall_timeout: shared.write_stall_timeout,
        stall: None,
    });
    let service = ConnectionService {
        shared: shared.clone(),
        remote,
        abort: abort.clone(),
        pending: pending.clone(),
    };
    let mut connection = pin!(shared.http.serve_connection(io, service).with_upgrades());
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%remote, %error, "HTTP connection ended with an error");
                }
                break;
            }
            // Dropping the connection closes the socket even when hyper waits on a body.
            () = abort.aborted() => {
                tracing::debug!(%remote, "HTTP connection aborted");
                break;
            }
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
    pending.leave();
}

/// The hyper service of one connection: request extensions, the body-rate check, the router.
struct ConnectionService {
    shared: Arc<Shared>,
    remote: SocketAddr,
    abort: ConnectionAbort,
    pending: Arc<PendingKey>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <Router as tower_service::Service<axum::extract::Request>>::Future;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        // A head has been read: the connection is no longer a half-sent one.
        self.pending.leave();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.remote));
        parts.extensions.insert(self.abort.clone());
        let body = match self.shared.body_rate {
            Some(rate) => axum::body::Body::new(RateCheckedBody::new(body, rate)),
            None => axum::body::Body::new(body),
        };
        self.shared
            .app
            .clone()
            .call(axum::extract::Request::from_parts(parts, body))
    }
}

// ---------------------------------------------------------------------------------------------
// Abortable socket
// ---------------------------------------------------------------------------------------------

/// The socket of a connection: reads and writes fail once its [`ConnectionAbort`] fired.
struct AbortableIo {
    inner: TcpStream,
    abort: Arc<AbortInner>,
    /// See [`ServeOptions::write_stall_timeout`].
    stall_timeout: Option<Duration>,
    /// Running while a write waits for room in the socket.
    stall: Option<Pin<Box<Sleep>>>,
}

fn aborted_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection aborted by the server (ConnectionAbort)",
    )
}

impl AbortableIo {
    /// `poll` on the socket, failing once aborted; a pending poll also waits for the abort.
    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: bool,
        poll: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.abort.aborted.load(Ordering::Acquire) {
            return Poll::Ready(Err(aborted_error()));
        }
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Pending => {
                if write && self.write_stalled(cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client accepted no data within the write stall timeout",
                    )));
                }
                let waker = if write {
                    &self.abort.write
                } else {
                    &self.abort.read
                };
                waker.register(cx.waker());
                // Registered before the check: an abort in between still wakes this task.
                if self.abort.aborted.load(Ordering::SeqCst) {
                    Poll::Ready(Err(aborted_error()))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                if write {
                    self.stall = None;
                }
                ready
            }
        }
    }

    /// Starts (or polls) the stall timer of a pending write; `true` once it has expired.
    fn write_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.stall_timeout else {
            return false;
        };
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            tracing::debug!("dropping a connection whose client accepts no data");
            true
        } else {
            false
        }
    }
}

impl AsyncRead for AbortableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_with(cx, false, |io, cx| io.poll_read(cx, buf))
    }
}

impl AsyncWrite for AbortableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_with(cx, true, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_with(cx, true, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_with(cx, true, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_with(cx, true, |io, cx| io.poll_shutdown(cx))
    }
}

// ---------------------------------------------------------------------------------------------
// Minimum body data rate
// ---------------------------------------------------------------------------------------------

/// A request body that fails with [`RequestBodyTooSlow`] when the client sends it too slowly.
struct RateCheckedBody {
    inner: Incoming,
    rate: MinDataRate,
    received: u64,
    /// Waiting time of the reads that have completed.
    waited: Duration,
    /// When the current pending read started waiting.
    waiting_since: Option<Instant>,
    /// Fires when the current wait would break the minimum rate.
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl RateCheckedBody {
    fn new(inner: Incoming, rate: MinDataRate) -> Self {
        Self {
            inner,
            rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
            failed: false,
        }
    }

    fn too_slow(&mut self, now: Instant) -> BoxError {
        self.failed = true;
        self.timer = None;
        let waited = self.waited + self.waiting_since.map_or(Duration::ZERO, |s| now - s);
        Box::new(RequestBodyTooSlow {
            minimum: self.rate,
            received: self.received,
            waited,
        })
    }
}

impl HttpBody for RateCheckedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += Instant::now() - since;
                }
                if let Some(data) = frame
                    .as_ref()
                    .and_then(|f| f.as_ref().ok())
                    .and_then(Frame::data_ref)
                {
                    this.received += data.len() as u64;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = Instant::now();
                if this.waiting_since.is_none() {
                    // A new wait: arm the timer for when it would break the minimum rate.
                    this.waiting_since = Some(now);
                    let allowance = this.rate.allowance(this.received);
                    let Some(left) = allowance.checked_sub(this.waited) else {
                        return Poll::Ready(Some(Err(this.too_slow(now))));
                    };
                    match (now.checked_add(left), &mut this.timer) {
                        (Some(deadline), Some(timer)) => timer.as_mut().reset(deadline),
                        (Some(deadline), None) => {
                            this.timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
                        }
                        // So much was received that the deadline is beyond any clock.
                        (None, _) => this.timer = None,
                    }
                }
                let expired = match &mut this.timer {
                    Some(timer) => timer.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    Poll::Ready(Some(Err(this.too_slow(now))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.failed {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}
