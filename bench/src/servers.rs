//! The servers under test and how to start them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::conn::Result;
use crate::proc::{ServerCommand, exe_dir};

/// The PyPI package (and version) of the peer server.
pub const PEER_PACKAGE: &str = "aiosignalr==0.1.1";

/// Environment variable: extra arguments for `bench-ceiling` (experiments such as
/// `--read-buffer-size 8192`).
pub const CEILING_ARGS_VAR: &str = "SIGNALR_BENCH_CEILING_ARGS";

/// Environment variable: the `bench-server` binary to run as `ours` instead of the one built
/// next to this executable (e.g. a kept build of an earlier commit, for back-to-back runs).
pub const SERVER_BIN_VAR: &str = "SIGNALR_BENCH_SERVER_BIN";

/// The `bench-server` binary that runs as `ours`: [`SERVER_BIN_VAR`] when set, else the sibling
/// of this executable.
pub fn ours_binary() -> Result<PathBuf> {
    match std::env::var_os(SERVER_BIN_VAR) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{SERVER_BIN_VAR}={} is not a file", path.display()).into())
            }
        }
        _ => Ok(exe_dir()?.join("bench-server")),
    }
}

/// Which server a figure belongs to (declared in report order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerKind {
    /// `bench-ceiling`: raw axum WebSockets, no SignalR.
    Ceiling,
    /// `bench-server`: signalr-server.
    Ours,
    /// ASP.NET Core 10 SignalR (`dotnet-peer server`), present next to the project only.
    AspNetCore,
    /// aiosignalr's server (Python, aiohttp).
    Peer,
}

impl ServerKind {
    /// The kinds of the main scenarios, in report order.
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Ceiling,
        ServerKind::Ours,
        ServerKind::AspNetCore,
        ServerKind::Peer,
    ];

    /// The kinds of the `redis-broadcast` scenario (the two with a Redis backplane).
    pub const REDIS: [ServerKind; 2] = [ServerKind::Ours, ServerKind::AspNetCore];

    /// Short name (CLI, table header).
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Ceiling => "ceiling",
            ServerKind::Ours => "ours",
            ServerKind::Peer => "aiosignalr",
            ServerKind::AspNetCore => "aspnetcore",
        }
    }

    /// What it is, in the main report.
    pub fn description(self) -> String {
        match self {
            ServerKind::Ceiling => {
                "`bench-ceiling`: raw WebSocket echo / fan-out on axum's ws (tokio-tungstenite), no SignalR; WebSockets only".to_owned()
            }
            ServerKind::Ours => match std::env::var_os(SERVER_BIN_VAR) {
                Some(path) if !path.is_empty() => format!(
                    "`bench-server`: signalr-server, Tokio runtime; the binary given by `{SERVER_BIN_VAR}`: `{}`",
                    path.to_string_lossy()
                ),
                _ => "`bench-server`: signalr-server (this repository), Tokio runtime".to_owned(),
            },
            ServerKind::AspNetCore => ASPNETCORE_DESCRIPTION.to_owned(),
            ServerKind::Peer => {
                "aiosignalr 0.1.1 from PyPI (Python asyncio + aiohttp), `bench/peers/aiosignalr_server.py`".to_owned()
            }
        }
    }

    /// Parses a short name.
    pub fn parse(name: &str) -> Option<ServerKind> {
        ServerKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// How the ASP.NET Core server runs (the main report's server list).
const ASPNETCORE_DESCRIPTION: &str = "ASP.NET Core 10 SignalR on Kestrel: `dotnet-peer server` (a self-contained build of the ASP.NET Core 10 shared framework, present next to the project only; skipped when absent), hub `/hub` with the same four methods, JSON and MessagePack, all three transports, ASP.NET's default `HubOptions` (1 parallel invocation per client, as ours; 15 s keep-alive; 90 s long-polling timeout). Run as a user gets it: no `DOTNET_` environment variables. The program asks for server GC (the Web SDK's default), but with one CPU in its affinity mask the runtime falls back to workstation GC (no `.NET Server GC` threads, which it starts when it may use two cores; `DOTNET_gcServer=1` changes nothing), so nothing needs overriding to behave on one pinned core; tiered compilation with dynamic PGO, the .NET defaults";

/// Where the ASP.NET Core peer program is: `../shared/peers/dotnet-peer` from the project root.
pub fn aspnetcore_peer() -> PathBuf {
    bench_dir().join("../../shared/peers/dotnet-peer")
}

/// The bench crate's directory.
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the two server binaries next to this executable (same profile) when this runs under
/// cargo; cheap when they are fresh.
pub async fn build_siblings() -> Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let release = exe_dir()?.ends_with("release");
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "-p",
        "signalr-bench",
        "--bin",
        "bench-server",
        "--bin",
        "bench-ceiling",
    ]);
    if release {
        command.arg("--release");
    }
    let status = tokio::time::timeout(Duration::from_secs(1200), command.status())
        .await
        .map_err(|_| "building the server binaries took over 20 minutes")??;
    if !status.success() {
        return Err("building bench-server and bench-ceiling failed".into());
    }
    Ok(())
}

/// The command that starts `kind`; `python` is the peer's interpreter.
pub fn command(kind: ServerKind, python: Option<&Path>, logs: &Path) -> Result<ServerCommand> {
    let dir = exe_dir()?;
    let argv = match kind {
        ServerKind::Ceiling => {
            let mut argv = vec![dir.join("bench-ceiling").display().to_string()];
            argv.extend(
                std::env::var(CEILING_ARGS_VAR)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from),
            );
            argv
        }
        ServerKind::Ours => {
            let mut argv: Vec<String> = std::env::var(crate::proc::WRAP_VAR)
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
            argv.push(ours_binary()?.display().to_string());
            argv
        }
        ServerKind::Peer => vec![
            python
                .ok_or("no Python for the peer")?
                .display()
                .to_string(),
            bench_dir()
                .join("peers/aiosignalr_server.py")
                .display()
                .to_string(),
        ],
        ServerKind::AspNetCore => {
            let program = aspnetcore_peer();
            if !program.exists() {
                return Err(format!(
                    "{} is absent (the ASP.NET Core peer exists only next to the project's shared/ folder)",
                    program.display()
                )
                .into());
            }
            vec![program.display().to_string(), "server".to_owned()]
        }
    };
    let binary = match kind {
        ServerKind::Ceiling => argv.first(),
        ServerKind::Ours => argv.last(),
        ServerKind::Peer | ServerKind::AspNetCore => None,
    };
    if let Some(program) = binary
        && !Path::new(program).exists()
    {
        return Err(format!("{program} is missing: cargo build --release -p signalr-bench").into());
    }
    let mut argv = argv;
    argv.extend(["--port", "0"].map(String::from));
    Ok(ServerCommand {
        argv,
        log: logs.join(format!("{}.log", kind.name())),
    })
}

async fn run(program: &Path, args: &[&str], limit: Duration) -> Result<bool> {
    let status = tokio::time::timeout(
        limit,
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .map_err(|_| format!("{} {} timed out", program.display(), args.join(" ")))??;
    Ok(status.success())
}

/// Makes `bench/.venv` with aiosignalr (once; later runs reuse it) and returns its Python.
pub async fn setup_peer() -> Result<PathBuf> {
    let venv = bench_dir().join(".venv");
    let python = venv.join("bin/python");
    let minute = Duration::from_secs(60);
    if !python.exists() {
        let venv_arg = venv.display().to_string();
        if !run(Path::new("python3"), &["-m", "venv", &venv_arg], minute).await? {
            return Err("python3 -m venv failed".into());
        }
    }
    if run(&python, &["-c", "import aiosignalr"], minute).await? {
        return Ok(python);
    }
    eprintln!("installing {PEER_PACKAGE} into {}", venv.display());
    let installed = run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PEER_PACKAGE,
        ],
        5 * minute,
    )
    .await?;
    if installed && run(&python, &["-c", "import aiosignalr"], minute).await? {
        Ok(python)
    } else {
        Err(format!("pip install {PEER_PACKAGE} failed").into())
    }
}
