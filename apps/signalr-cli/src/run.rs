//! The commands: connect, then invoke, send, stream, listen or read lines.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use signalr_hub_client::classic::{ClassicHubConnection, HubProxy};
use signalr_hub_client::{Error, HubConnection, HubConnectionBuilder, Payload, Subscription};
use tokio::sync::mpsc;

use crate::cli::{Cli, Command, Options, TransportArg};
use crate::input::{Line, parse_arguments, parse_line};
use crate::output::{Closed, Output};
use crate::value::{AnyValue, payload_to_json};

/// Exit code: success.
pub const SUCCESS: u8 = 0;
/// Exit code: the hub completed the call with an error.
pub const HUB_ERROR: u8 = 1;
/// Exit code: bad usage (clap's own code for its errors).
pub const USAGE: u8 = 2;
/// Exit code: the connection could not be made or was lost.
pub const CONNECTION: u8 = 3;
/// Exit code: a timeout elapsed.
pub const TIMEOUT: u8 = 4;

/// Why a command failed: its exit code and what to tell the user.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// The text for stderr.
    pub message: String,
    /// The error data of a classic hub error (a `HubException`'s `ErrorData`).
    pub data: Option<Value>,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The `kind` of a `--json` error object.
    pub fn kind(&self) -> &'static str {
        match self.code {
            HUB_ERROR => "hub",
            USAGE => "usage",
            TIMEOUT => "timeout",
            _ => "connection",
        }
    }

    /// A failed call: the server's error (1), a timeout of the client (4), anything else is the
    /// connection's (3).
    fn of_call(err: &Error) -> Self {
        if err.is_server_error() {
            Failure {
                data: err.error_data().cloned(),
                ..Failure::new(HUB_ERROR, err.message())
            }
        } else if err.is_timeout() {
            Failure::new(TIMEOUT, describe(err))
        } else if err.is_encode() {
            Failure::new(USAGE, describe(err))
        } else {
            Failure::new(CONNECTION, describe(err))
        }
    }
}

/// An error's text followed by the texts of its sources that add something.
fn describe(err: &Error) -> String {
    let mut text = err.message().to_owned();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// What the connection's handlers report to the command.
enum Event {
    /// The server called a client method.
    Invocation(String, Vec<Value>),
    /// The connection closed (not by us).
    Closed(Option<Error>),
}

/// Waits for `future` at most `seconds` (0: forever).
async fn within<F: Future>(
    seconds: u64,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    if seconds == 0 {
        Ok(future.await)
    } else {
        tokio::time::timeout(Duration::from_secs(seconds), future).await
    }
}

/// How long `stop()` may take before the command exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The connection of a command: ASP.NET Core SignalR, or classic SignalR 2.x through one hub's
/// proxy.
enum Client {
    Core(HubConnection),
    Classic(ClassicHubConnection, HubProxy),
}

impl Client {
    /// Invokes `method` and waits for its result.
    async fn invoke(&self, method: &str, arguments: Vec<Value>) -> Result<AnyValue, Error> {
        match self {
            Client::Core(connection) => connection.invoke::<AnyValue>(method, arguments).await,
            Client::Classic(_, proxy) => proxy.invoke::<AnyValue>(method, arguments).await,
        }
    }

    /// Sends `method` without a result: fire and forget on Core; classic has no such message,
    /// so this waits for the call to complete.
    async fn send(&self, method: &str, arguments: Vec<Value>) -> Result<(), Error> {
        match self {
            Client::Core(connection) => connection.send(method, arguments).await,
            Client::Classic(_, proxy) => proxy.invoke_void(method, arguments).await,
        }
    }

    fn connection_id(&self) -> Option<String> {
        match self {
            Client::Core(connection) => connection.connection_id(),
            Client::Classic(connection, _) => connection.connection_id(),
        }
    }

    async fn start(&self) -> Result<(), Error> {
        match self {
            Client::Core(connection) => connection.start().await,
            Client::Classic(connection, _) => connection.start().await,
        }
    }

    async fn stop(&self) {
        match self {
            Client::Core(connection) => {
                let _ = connection.stop().await;
            }
            Client::Classic(connection, _) => connection.stop().await,
        }
    }
}

/// A started connection, its handlers and what they report.
struct Connected {
    client: Client,
    events: mpsc::UnboundedReceiver<Event>,
    _subscriptions: Vec<Subscription>,
}

impl Connected {
    async fn stop(self) {
        let _ = tokio::time::timeout(STOP_GRACE, self.client.stop()).await;
    }
}

/// Builds the Core connection and subscribes to `methods`.
fn core_client(
    options: &Options,
    url: &str,
    methods: &[String],
    sender: &mpsc::UnboundedSender<Event>,
) -> Result<(Client, Vec<Subscription>), Failure> {
    let mut builder = HubConnectionBuilder::new()
        .with_url(url)
        .with_protocol(options.protocol.into())
        .skip_negotiation(options.skip_negotiation);
    if let Some(transport) = options.transport.and_then(TransportArg::core) {
        builder = builder.with_transport(transport);
    }
    for (name, value) in &options.headers {
        builder = builder.with_header(name, value);
    }
    if let Some(token) = options.token.clone() {
        builder = builder.with_access_token_provider(move || {
            let token = token.clone();
            async move { token }
        });
    }
    let connection = builder
        .build()
        .map_err(|err| Failure::new(USAGE, describe(&err)))?;
    let subscriptions = methods
        .iter()
        .map(|method| {
            let sender = sender.clone();
            let target = method.clone();
            connection.on(method, move |arguments: Vec<Payload>| {
                let arguments = arguments.iter().map(payload_to_json).collect();
                let _ = sender.send(Event::Invocation(target.clone(), arguments));
            })
        })
        .collect();
    let sender = sender.clone();
    connection.on_closed(move |error| {
        let _ = sender.send(Event::Closed(error));
    });
    Ok((Client::Core(connection), subscriptions))
}

/// What `--classic` cannot do: MessagePack, skipping negotiate, a missing `--hub`.
fn classic_usage(options: &Options) -> Result<&str, Failure> {
    if options.protocol.is_messagepack() {
        return Err(Failure::new(
            USAGE,
            "--classic speaks JSON only: classic SignalR 2.x has no MessagePack protocol",
        ));
    }
    if options.skip_negotiation {
        return Err(Failure::new(
            USAGE,
            "--skip-negotiation is not for --classic: classic SignalR 2.x always negotiates",
        ));
    }
    options.hub.as_deref().ok_or_else(|| {
        Failure::new(
            USAGE,
            "--classic needs --hub NAME: the classic hub to call, e.g. --hub TestHub",
        )
    })
}

/// Builds the classic connection with a proxy of `--hub` and subscribes to `methods`.
fn classic_client(
    options: &Options,
    url: &str,
    methods: &[String],
    sender: &mpsc::UnboundedSender<Event>,
    out: Output,
) -> Result<(Client, Vec<Subscription>), Failure> {
    let hub = classic_usage(options)?;
    let mut builder = ClassicHubConnection::builder(url);
    if let Some(transport) = options.transport {
        builder = builder.with_transport(transport.classic());
    }
    for (name, value) in &options.headers {
        builder = builder.with_header(name, value);
    }
    if let Some(token) = &options.token {
        builder = builder.with_access_token(token);
    }
    let connection = builder
        .build()
        .map_err(|err| Failure::new(USAGE, describe(&err)))?;
    let proxy = connection.create_hub_proxy(hub);
    let subscriptions = methods
        .iter()
        .map(|method| {
            let sender = sender.clone();
            let target = method.clone();
            proxy.on(method, move |arguments: Vec<Payload>| {
                let arguments = arguments.iter().map(payload_to_json).collect();
                let _ = sender.send(Event::Invocation(target.clone(), arguments));
            })
        })
        .collect();
    // The classic `Closed` event carries no error: the last `Error` event is its reason.
    let last_error = std::sync::Arc::new(std::sync::Mutex::new(None::<Error>));
    let remember = last_error.clone();
    connection.on_error(move |error| {
        if let Ok(mut last) = remember.lock() {
            *last = Some(error.clone());
        }
    });
    let sender = sender.clone();
    connection.on_closed(move || {
        let error = last_error.lock().ok().and_then(|mut last| last.take());
        let _ = sender.send(Event::Closed(error));
    });
    connection.on_reconnecting(move || out.status("connection lost, reconnecting"));
    connection.on_reconnected(move || out.status("reconnected"));
    Ok((Client::Classic(connection, proxy), subscriptions))
}

/// Builds the connection, subscribes to `methods` and starts it.
async fn open(
    options: &Options,
    url: &str,
    methods: &[String],
    out: Output,
) -> Result<Connected, Failure> {
    let (sender, events) = mpsc::unbounded_channel();
    let (client, subscriptions) = if options.classic {
        classic_client(options, url, methods, &sender, out)?
    } else {
        core_client(options, url, methods, &sender)?
    };
    drop(sender);

    out.status(&format!("connecting to {url}"));
    match within(options.timeout, client.start()).await {
        Err(_) => Err(Failure::new(
            TIMEOUT,
            format!("could not connect to {url} within {} s", options.timeout),
        )),
        Ok(Err(err)) if err.is_timeout() => Err(Failure::new(
            TIMEOUT,
            format!("could not connect to {url}: {}", describe(&err)),
        )),
        Ok(Err(err)) => Err(Failure::new(
            CONNECTION,
            format!("could not connect to {url}: {}", describe(&err)),
        )),
        Ok(Ok(())) => {
            let id = client.connection_id().unwrap_or_else(|| "none".to_owned());
            out.status(&format!("connected (connection id {id})"));
            Ok(Connected {
                client,
                events,
                _subscriptions: subscriptions,
            })
        }
    }
}

/// The failure of a connection that closed under the command.
fn closed(error: Option<Error>) -> Failure {
    match error {
        Some(err) => Failure::new(
            CONNECTION,
            format!("the connection closed: {}", describe(&err)),
        ),
        None => Failure::new(CONNECTION, "the server closed the connection"),
    }
}

/// Runs the command; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    let out = Output {
        json: cli.options.json,
        quiet: cli.options.quiet,
    };
    match command(&cli, out).await {
        Ok(()) => SUCCESS,
        Err(failure) => {
            out.error(&failure);
            failure.code
        }
    }
}

async fn command(cli: &Cli, out: Output) -> Result<(), Failure> {
    let options = &cli.options;
    match &cli.command {
        Command::Invoke {
            url,
            method,
            arguments,
            args,
        } => {
            let arguments =
                parse_arguments(arguments, args.as_deref()).map_err(|m| Failure::new(USAGE, m))?;
            let connected = open(options, url, &[], out).await?;
            let outcome = invoke(&connected.client, options.timeout, method, arguments).await;
            if let Ok(value) = &outcome {
                let _ = out.result(value);
            }
            connected.stop().await;
            outcome.map(|_| ())
        }
        Command::Send {
            url,
            method,
            arguments,
            args,
        } => {
            let arguments =
                parse_arguments(arguments, args.as_deref()).map_err(|m| Failure::new(USAGE, m))?;
            let connected = open(options, url, &[], out).await?;
            let sent = within(options.timeout, connected.client.send(method, arguments)).await;
            connected.stop().await;
            match sent {
                Err(_) => Err(Failure::new(
                    TIMEOUT,
                    format!("could not send within {} s", options.timeout),
                )),
                Ok(Err(err)) => Err(Failure::of_call(&err)),
                Ok(Ok(())) => {
                    out.status("sent");
                    Ok(())
                }
            }
        }
        Command::Stream {
            url,
            method,
            arguments,
            args,
        } => {
            if options.classic {
                return Err(Failure::new(
                    USAGE,
                    "stream is not for --classic: classic SignalR 2.x has no streaming hub \
                     methods (call the method with invoke)",
                ));
            }
            let arguments =
                parse_arguments(arguments, args.as_deref()).map_err(|m| Failure::new(USAGE, m))?;
            let connected = open(options, url, &[], out).await?;
            let Client::Core(connection) = &connected.client else {
                unreachable!("a Core connection without --classic");
            };
            let outcome = stream(connection, options.timeout, method, arguments, out).await;
            connected.stop().await;
            outcome
        }
        Command::Listen {
            url,
            methods,
            count,
        } => {
            let mut connected = open(options, url, methods, out).await?;
            let mut interrupt = Interrupt::new();
            out.status(&format!(
                "listening for {} (Ctrl-C to stop)",
                methods.join(", ")
            ));
            let outcome = listen(&mut connected.events, *count, &mut interrupt, out).await;
            connected.stop().await;
            outcome
        }
        Command::Connect { url, on } => {
            let mut connected = open(options, url, on, out).await?;
            let mut interrupt = Interrupt::new();
            if on.is_empty() {
                out.status(
                    "calls from the server are not printed: name client methods with --on METHOD",
                );
            } else {
                out.status(&format!("printing calls of {}", on.join(", ")));
            }
            out.status("type `Method arg1 arg2 …` (arguments in JSON) or `exit`");
            let outcome = interactive(
                &connected.client,
                &mut connected.events,
                options.timeout,
                &mut interrupt,
                out,
            )
            .await;
            connected.stop().await;
            outcome
        }
    }
}

/// Invokes `method` and waits for its result.
async fn invoke(
    client: &Client,
    timeout: u64,
    method: &str,
    arguments: Vec<Value>,
) -> Result<Value, Failure> {
    match within(timeout, client.invoke(method, arguments)).await {
        Err(_) => Err(Failure::new(
            TIMEOUT,
            format!("no result from '{method}' within {timeout} s"),
        )),
        Ok(Err(err)) => Err(Failure::of_call(&err)),
        Ok(Ok(AnyValue(value))) => Ok(value),
    }
}

/// Prints the items of streaming method `method` until it completes.
async fn stream(
    connection: &HubConnection,
    timeout: u64,
    method: &str,
    arguments: Vec<Value>,
    out: Output,
) -> Result<(), Failure> {
    let mut items = match within(timeout, connection.stream::<AnyValue>(method, arguments)).await {
        Err(_) => {
            return Err(Failure::new(
                TIMEOUT,
                format!("could not start '{method}' within {timeout} s"),
            ));
        }
        Ok(Err(err)) => return Err(Failure::of_call(&err)),
        Ok(Ok(items)) => items,
    };
    loop {
        match within(timeout, items.next()).await {
            Err(_) => {
                return Err(Failure::new(
                    TIMEOUT,
                    format!("no item of '{method}' within {timeout} s"),
                ));
            }
            Ok(None) => {
                out.status("stream completed");
                return Ok(());
            }
            Ok(Some(Err(err))) => return Err(Failure::of_call(&err)),
            Ok(Some(Ok(AnyValue(value)))) => {
                if out.item(&value).is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Ctrl-C (SIGINT), caught from the moment this is made: made once connected, so that Ctrl-C
/// still ends a connect attempt at once, and before saying so on stderr, so that an interrupt
/// right after that message is not lost.
struct Interrupt {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    fn new() -> Self {
        Interrupt {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves at the next Ctrl-C.
    async fn recv(&mut self) {
        #[cfg(unix)]
        match &mut self.signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Prints the server's calls until Ctrl-C, `count` calls, or the connection closes.
async fn listen(
    events: &mut mpsc::UnboundedReceiver<Event>,
    count: Option<u64>,
    interrupt: &mut Interrupt,
    out: Output,
) -> Result<(), Failure> {
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Invocation(target, arguments)) => {
                    if out.invocation(&target, &arguments).is_err() {
                        return Ok(());
                    }
                    seen += 1;
                    if count.is_some_and(|count| seen >= count) {
                        return Ok(());
                    }
                }
                Some(Event::Closed(error)) => return Err(closed(error)),
                None => return Err(closed(None)),
            },
            () = interrupt.recv() => {
                out.status("interrupted");
                return Ok(());
            }
        }
    }
}

/// The lines of stdin (without their `\n` or `\r\n`), read on a thread of their own (a thread
/// blocked reading a terminal must not keep the process from exiting); a line that is not UTF-8
/// is an `Err` with its number. The channel closes at the end of input or on a read error.
fn stdin_lines() -> mpsc::UnboundedReceiver<Result<String, String>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin().lock();
        for (index, line) in std::io::BufRead::split(stdin, b'\n').enumerate() {
            let Ok(mut line) = line else { break };
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line)
                .map_err(|_| format!("line {} is not valid UTF-8", index + 1));
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// How long calls from the server are still printed after the last line.
const LINGER: Duration = Duration::from_millis(200);

/// Prints one event of the connection; `Err` when the session must end.
fn show(event: Option<Event>, out: Output) -> Result<(), Option<Failure>> {
    match event {
        Some(Event::Invocation(target, arguments)) => {
            out.invocation(&target, &arguments).map_err(|Closed| None)
        }
        Some(Event::Closed(error)) => Err(Some(closed(error))),
        None => Err(Some(closed(None))),
    }
}

/// The call of a line of `connect` being waited for.
type PendingCall<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Value, Failure>> + Send + 'a>>;

/// `connect`: reads lines, invokes, prints results and the server's calls.
async fn interactive(
    client: &Client,
    events: &mut mpsc::UnboundedReceiver<Event>,
    timeout: u64,
    interrupt: &mut Interrupt,
    out: Output,
) -> Result<(), Failure> {
    let mut lines = stdin_lines();
    let mut pending: Option<PendingCall<'_>> = None;
    loop {
        tokio::select! {
            biased;
            event = events.recv() => {
                if let Err(failure) = show(event, out) {
                    return failure.map_or(Ok(()), Err);
                }
            }
            outcome = async {
                match pending.as_mut() {
                    Some(call) => call.await,
                    None => std::future::pending().await,
                }
            }, if pending.is_some() => {
                pending = None;
                match outcome {
                    Ok(value) => {
                        if out.result(&value).is_err() {
                            return Ok(());
                        }
                    }
                    Err(failure) => out.error(&failure),
                }
            }
            line = lines.recv(), if pending.is_none() => match line {
                None => break,
                Some(Err(message)) => out.error(&Failure::new(USAGE, message)),
                Some(Ok(line)) => match parse_line(&line) {
                    Ok(Line::Empty) => {}
                    Ok(Line::Exit) => break,
                    Ok(Line::Call { method, arguments }) => {
                        pending = Some(Box::pin(async move { invoke(client, timeout, &method, arguments).await }));
                    }
                    Err(message) => out.error(&Failure::new(USAGE, message)),
                },
            },
            () = interrupt.recv() => {
                out.status("interrupted");
                return Ok(());
            }
        }
    }
    // Calls the server made just before the last result may still be on their way.
    let deadline = tokio::time::Instant::now() + LINGER;
    while let Ok(event) = tokio::time::timeout_at(deadline, events.recv()).await {
        if let Err(failure) = show(event, out) {
            return failure.map_or(Ok(()), Err);
        }
    }
    Ok(())
}
