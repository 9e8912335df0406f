//! The command line: commands and options (clap).

use clap::{Args, Parser, Subcommand, ValueEnum};
use signalr_hub_client::classic::ClassicTransport;
use signalr_hub_client::{HubProtocol, TransportType};

/// The exit codes, shown by `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  hub error: the server completed the call (or the stream) with an error; its text is on stderr
  2  usage error: bad options or arguments (an argument that is not JSON, a bad URL or header)
  3  connection failure: negotiate, transport or handshake failed, or the connection closed
     unexpectedly (the server closed it, the network dropped)
  4  timeout: --timeout elapsed while connecting or waiting for a result or a stream item";

/// A command line client for SignalR hubs (ASP.NET Core SignalR and compatible servers, and with
/// `--classic --hub NAME` classic ASP.NET SignalR 2.x servers).
///
/// Arguments of hub methods are JSON values: `'"hi"'` is a string, `42` a number,
/// `'{"a":1}'` an object. Results go to stdout (JSON; `--json` for one JSON object per line),
/// progress and errors to stderr.
#[derive(Debug, Parser)]
#[command(name = "signalr", version, after_help = EXIT_CODES, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub options: Options,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes (before or after the command's own arguments).
#[derive(Debug, Args)]
pub struct Options {
    /// Talk to a classic ASP.NET SignalR 2.x server (needs `--hub`): the URL is the site root
    /// (`/signalr` is appended) or the endpoint itself, e.g. http://127.0.0.1:8080/signalr.
    /// JSON only; no streams (`stream` is a usage error); `send` waits for the call to complete,
    /// as classic has no fire-and-forget. A hub error's data (a `HubException`'s `ErrorData`)
    /// is shown with its message.
    #[arg(long, global = true)]
    pub classic: bool,
    /// With `--classic`: the hub to call, e.g. TestHub (names match ignoring case).
    #[arg(long, global = true, value_name = "NAME", requires = "classic")]
    pub hub: Option<String>,
    /// The only transport to use (default: the best the server offers in negotiate, falling back
    /// to the next one; with `--classic` the classic client's automatic choice: WebSockets, then
    /// Server-Sent Events, then long polling). Names ignore case; the classic names webSockets,
    /// serverSentEvents and longPolling work too.
    #[arg(long, global = true, value_enum, ignore_case = true)]
    pub transport: Option<TransportArg>,
    /// The hub protocol. MessagePack needs WebSockets or long polling.
    #[arg(long, global = true, value_enum, default_value_t = ProtocolArg::Json)]
    pub protocol: ProtocolArg,
    /// Connect the WebSocket directly, without negotiate (needs `--transport websockets`).
    #[arg(long, global = true)]
    pub skip_negotiation: bool,
    /// An HTTP header for every request, `'Name: value'` (repeatable).
    #[arg(long = "header", short = 'H', global = true, value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// An access token, sent as `Authorization: Bearer TOKEN` (and as `access_token` in the
    /// query of WebSocket and Server-Sent Events requests, as the official clients do).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "SIGNALR_ACCESS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Seconds to wait for the connection, for a result, for each stream item; 0 waits forever.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Output for scripts: one JSON object per line on stdout (`{"type":"result","value":…}`,
    /// `{"type":"item","value":…}`, `{"type":"invocation","target":…,"arguments":[…]}`,
    /// `{"type":"error","kind":…,"message":…}`).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress messages on stderr (errors are still reported).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Log the client's connection events on stderr (`-vv`: every message).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// WebSockets.
    #[value(name = "websockets", alias = "ws")]
    WebSockets,
    /// Server-Sent Events (plus POST for sending).
    #[value(name = "sse", alias = "serversentevents")]
    ServerSentEvents,
    /// Long polling (plus POST for sending).
    #[value(name = "longpolling", alias = "long-polling")]
    LongPolling,
    /// The best the server offers (the default).
    #[value(name = "auto")]
    Auto,
}

impl TransportArg {
    /// The Core transport; `None` for `auto`.
    pub fn core(self) -> Option<TransportType> {
        match self {
            TransportArg::WebSockets => Some(TransportType::WebSockets),
            TransportArg::ServerSentEvents => Some(TransportType::ServerSentEvents),
            TransportArg::LongPolling => Some(TransportType::LongPolling),
            TransportArg::Auto => None,
        }
    }

    /// The classic transport.
    pub fn classic(self) -> ClassicTransport {
        match self {
            TransportArg::WebSockets => ClassicTransport::WebSockets,
            TransportArg::ServerSentEvents => ClassicTransport::ServerSentEvents,
            TransportArg::LongPolling => ClassicTransport::LongPolling,
            TransportArg::Auto => ClassicTransport::Auto,
        }
    }
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// The JSON hub protocol.
    #[value(name = "json")]
    Json,
    /// The MessagePack hub protocol.
    #[value(name = "messagepack", alias = "msgpack")]
    MessagePack,
}

impl ProtocolArg {
    /// Whether this is MessagePack.
    pub fn is_messagepack(self) -> bool {
        self == ProtocolArg::MessagePack
    }
}

impl From<ProtocolArg> for HubProtocol {
    fn from(value: ProtocolArg) -> Self {
        match value {
            ProtocolArg::Json => HubProtocol::Json,
            ProtocolArg::MessagePack => HubProtocol::MessagePack,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Interactive: every line typed on stdin invokes a hub method and prints its result.
    ///
    /// A line is `Method arg1 arg2 …` (each argument a JSON value: `Echo "hi" 42`) or the whole
    /// call as one JSON array (`["Echo", "hi", 42]`); `exit`, `quit` or end of input stops.
    /// Calls run one at a time. A failed call is reported on stderr and the session goes on.
    ///
    /// The client has no catch-all handler: calls the server makes to this client are printed
    /// for the methods named with `--on` only.
    #[command(after_help = EXIT_CODES)]
    Connect {
        /// The hub's URL, e.g. http://127.0.0.1:5000/chat.
        url: String,
        /// Print the server's calls of this client method (repeatable).
        #[arg(long = "on", value_name = "METHOD")]
        on: Vec<String>,
    },
    /// Invoke a hub method, print its result and exit.
    #[command(after_help = EXIT_CODES)]
    Invoke {
        /// The hub's URL.
        url: String,
        /// The hub method.
        method: String,
        /// Its arguments, each one JSON value.
        #[arg(allow_negative_numbers = true, conflicts_with = "args")]
        arguments: Vec<String>,
        /// All arguments as one JSON array, instead of one by one.
        #[arg(long, value_name = "JSON_ARRAY")]
        args: Option<String>,
    },
    /// Send an invocation without waiting for its result (fire and forget), then exit.
    #[command(after_help = EXIT_CODES)]
    Send {
        /// The hub's URL.
        url: String,
        /// The hub method.
        method: String,
        /// Its arguments, each one JSON value.
        #[arg(allow_negative_numbers = true, conflicts_with = "args")]
        arguments: Vec<String>,
        /// All arguments as one JSON array, instead of one by one.
        #[arg(long, value_name = "JSON_ARRAY")]
        args: Option<String>,
    },
    /// Print every call the server makes to the client methods named, one line each, until
    /// Ctrl-C, `--count` calls, or the connection closes (exit code 3).
    #[command(after_help = EXIT_CODES)]
    Listen {
        /// The hub's URL.
        url: String,
        /// The client methods to print (matched case-insensitively).
        #[arg(required = true, value_name = "METHOD")]
        methods: Vec<String>,
        /// Exit after this many calls.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Call a streaming hub method and print each item on its own line until it completes
    /// (not with `--classic`: classic SignalR has no streams).
    #[command(after_help = EXIT_CODES)]
    Stream {
        /// The hub's URL.
        url: String,
        /// The streaming hub method.
        method: String,
        /// Its arguments, each one JSON value.
        #[arg(allow_negative_numbers = true, conflicts_with = "args")]
        arguments: Vec<String>,
        /// All arguments as one JSON array, instead of one by one.
        #[arg(long, value_name = "JSON_ARRAY")]
        args: Option<String>,
    },
}

/// Reads `Name: value`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', got '{text}'"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("the header has no name: '{text}'"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("X-Tenant: blue"),
            Ok(("X-Tenant".to_owned(), "blue".to_owned()))
        );
        assert_eq!(
            parse_header("Authorization:Bearer a:b"),
            Ok(("Authorization".to_owned(), "Bearer a:b".to_owned()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn classic_options() {
        for (name, transport) in [
            ("webSockets", TransportArg::WebSockets),
            ("serverSentEvents", TransportArg::ServerSentEvents),
            ("longPolling", TransportArg::LongPolling),
            ("auto", TransportArg::Auto),
            ("SSE", TransportArg::ServerSentEvents),
        ] {
            let cli = Cli::try_parse_from([
                "signalr",
                "invoke",
                "http://h/signalr",
                "Echo",
                "--classic",
                "--hub",
                "TestHub",
                "--transport",
                name,
            ])
            .expect("parse");
            assert!(cli.options.classic);
            assert_eq!(cli.options.hub.as_deref(), Some("TestHub"));
            assert_eq!(cli.options.transport, Some(transport), "{name}");
        }
        assert_eq!(TransportArg::Auto.core(), None);
        assert_eq!(TransportArg::Auto.classic(), ClassicTransport::Auto);
        // --hub is for --classic only.
        assert!(
            Cli::try_parse_from(["signalr", "invoke", "http://h/hub", "M", "--hub", "H"]).is_err()
        );
    }

    #[test]
    fn options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "signalr",
            "--json",
            "invoke",
            "http://h/hub",
            "Add",
            "-1",
            "2",
            "--protocol",
            "msgpack",
            "-H",
            "A: b",
        ])
        .expect("parse");
        assert!(cli.options.json);
        assert_eq!(cli.options.protocol, ProtocolArg::MessagePack);
        assert_eq!(cli.options.headers, [("A".to_owned(), "b".to_owned())]);
        match cli.command {
            Command::Invoke { arguments, .. } => assert_eq!(arguments, ["-1", "2"]),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["signalr", "listen", "http://h/hub"]).is_err());
        assert!(
            Cli::try_parse_from([
                "signalr",
                "invoke",
                "http://h/hub",
                "M",
                "1",
                "--args",
                "[1]"
            ])
            .is_err()
        );
    }
}
