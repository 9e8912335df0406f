//! `signalr`: a command line client for SignalR hubs, on `signalr-hub-client`.
//!
//! ```sh
//! signalr invoke http://127.0.0.1:5000/hub Echo '"hi"'          # prints "hi"
//! signalr stream http://127.0.0.1:5000/hub Count 3               # 1, 2, 3 on their own lines
//! signalr listen http://127.0.0.1:5000/chat ReceiveMessage --count 1
//! signalr connect http://127.0.0.1:5000/chat --on ReceiveMessage # then type: SendMessage "ann" "hi"
//! signalr invoke http://127.0.0.1:5001/signalr Add 2 3 --classic --hub TestHub  # classic SignalR 2.x
//! ```
//!
//! Arguments are JSON values; results are printed as JSON on stdout (`--json`: one JSON object
//! per line), progress and errors on stderr. Common options: `--transport`, `--protocol`,
//! `--header`, `--token`, `--timeout`, `--skip-negotiation`, `--classic --hub NAME` (a classic
//! ASP.NET SignalR 2.x server; no `stream` there). `signalr --help` lists them, and
//! the exit codes: 0 success, 1 hub error, 2 usage error, 3 connection failure, 4 timeout. See
//! the crate's README.md for more.

mod cli;
mod input;
mod output;
mod run;
mod value;

use std::io::{IsTerminal, Write};

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if cli.options.verbose > 0 {
        let level = if cli.options.verbose > 1 {
            "trace"
        } else {
            "debug"
        };
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "signalr_hub_client={level}"
            )))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run::run(cli)),
        Err(err) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {err}"
            );
            run::CONNECTION
        }
    };
    let _ = std::io::stdout().flush();
    // Not returning from main: a thread blocked reading stdin (`connect`) must not keep the
    // process alive.
    std::process::exit(i32::from(code));
}
