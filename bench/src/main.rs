//! `signalr-bench`: measures our SignalR server against a ceiling (raw WebSockets on the same
//! stack), ASP.NET Core 10 (`dotnet-peer server`, when `../shared/peers` is there) and a peer
//! implementation (aiosignalr), in one run, and writes
//! `bench/results/latest.md` (Markdown tables) and `bench/results/latest.png` (chart).
//!
//! ```text
//! cargo run --release -p signalr-bench              # quick mode, about 6 minutes
//! cargo run --release -p signalr-bench -- --full    # every scenario at every size, about 40 minutes
//! cargo run --release -p signalr-bench -- --soak    # ordinary clients while an attacker runs (see soak.rs)
//! cargo run --release -p signalr-bench -- --full --only redis-broadcast   # two servers on Redis (see redis_scenario.rs)
//! ```
//!
//! Each server runs as its own process pinned to CPU 1; this process, the load generator (one
//! thread), pins itself to CPU 0. Every server is killed when its scenario ends, when the run
//! is interrupted (Ctrl-C, SIGTERM), when the runner panics, and by the kernel if the runner dies
//! (`setpriv --pdeathsig KILL`). `bench/README.md` describes the scenarios and how to reproduce
//! every figure.

mod chart;
mod classic_conn;
mod classic_scenarios;
mod conn;
mod http_conn;
mod proc;
mod redis_scenario;
mod report;
mod scenarios;
mod servers;
mod soak;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use signalr_protocol::HubProtocol;

use crate::conn::{Result, Transport};
use crate::proc::ServerCommand;
use crate::report::{CaseResult, RunInfo};
use crate::scenarios::{BroadcastSpec, Outcome, Settings};
use crate::servers::ServerKind;

#[derive(Parser, Debug)]
#[command(
    about = "SignalR benchmarks: our server against a raw WebSocket ceiling, ASP.NET Core and aiosignalr",
    long_about = None
)]
struct Cli {
    /// Every scenario at every size (about 40 minutes with all four servers). The default is
    /// the quick mode: small sizes and short windows, about 6 minutes (under 3 with
    /// `--servers ceiling,ours`).
    #[arg(long)]
    full: bool,
    /// Development smoke run: windows of a fraction of a second (with `--full`: at full sizes).
    /// Checks that everything works; its figures are not measurements.
    #[arg(long)]
    smoke: bool,
    /// Only these scenarios (comma-separated): echo, stateful-echo, broadcast, group,
    /// fixed-rate, idle, storm, slow, sse-echo, sse-broadcast, lp-echo, lp-broadcast,
    /// classic-echo, mixed-broadcast; and redis-broadcast, which runs only when named here (it
    /// needs redis-server and writes results/redis-latest.md).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Servers to measure (comma-separated): ceiling, ours, aspnetcore, aiosignalr (default:
    /// all four; aspnetcore and aiosignalr are skipped with the reason when they cannot run).
    /// For redis-broadcast: ours, aspnetcore (default: both).
    /// With `--soak`: ours, aspnetcore (default: ours).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// The soak under attack instead of the benchmarks: `--soak-conns` ordinary connections
    /// echoing once every 10 s while one attacker runs each abuse phase in turn (`--only` picks
    /// phases: ws-oversize, big-posts, slowloris, fanout-stall). Prints a table row every
    /// `--soak-interval` seconds. About 2 minutes per server.
    #[arg(long)]
    soak: bool,
    /// Ordinary connections of the soak.
    #[arg(long, default_value_t = 10_000)]
    soak_conns: usize,
    /// Seconds per soak attack phase.
    #[arg(long, default_value_t = 20.0)]
    soak_phase: f64,
    /// Seconds of the soak's baseline and recovery phases.
    #[arg(long, default_value_t = 10.0)]
    soak_calm: f64,
    /// Seconds between soak report rows.
    #[arg(long, default_value_t = 5.0)]
    soak_interval: f64,
    /// Only the cases whose parameters contain this text (e.g. "N=100, JSON, 32 B").
    #[arg(long)]
    case: Option<String>,
    /// Override the warm-up, in seconds.
    #[arg(long)]
    warmup: Option<f64>,
    /// Override the measurement window, in seconds (e.g. longer ones under a profiler).
    #[arg(long)]
    window: Option<f64>,
    /// Directory for latest.md and latest.png (default: bench/results).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Smoke,
    Quick,
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }

    fn settings(self) -> Settings {
        let ms = Duration::from_millis;
        match self {
            Mode::Smoke => Settings {
                warmup: ms(100),
                window: ms(200),
                reps: 3,
                fixed_window: ms(1000),
                idle_window: ms(500),
                stall_window: ms(1000),
                stall_extra: ms(500),
            },
            Mode::Quick => Settings {
                warmup: ms(300),
                window: ms(400),
                reps: 3,
                fixed_window: ms(1000),
                idle_window: ms(1500),
                stall_window: ms(1500),
                stall_extra: ms(3000),
            },
            Mode::Full => Settings {
                warmup: ms(1000),
                window: ms(3000),
                reps: 3,
                fixed_window: ms(5000),
                // Longer than the 15 s keep-alive interval, so server pings are counted.
                idle_window: ms(16000),
                stall_window: ms(5000),
                stall_extra: ms(10000),
            },
        }
    }

    /// No case starts after this much time: quick mode ends within about 6 minutes (its cases
    /// take about that long with all four servers; fewer servers leave room to spare).
    fn budget(self) -> Duration {
        match self {
            Mode::Smoke => Duration::from_secs(600),
            Mode::Quick => Duration::from_secs(330),
            Mode::Full => Duration::from_secs(3 * 3600),
        }
    }

    /// The longest one case may take on one server.
    fn case_limit(self, full_sizes: bool) -> Duration {
        if self == Mode::Full || full_sizes {
            Duration::from_secs(300)
        } else {
            Duration::from_secs(60)
        }
    }
}

#[derive(Debug, Clone)]
enum Spec {
    Echo {
        n: usize,
        protocol: HubProtocol,
        size: usize,
        transport: Transport,
        /// Stateful reconnect on (WebSockets; ours only).
        stateful: bool,
    },
    Broadcast(BroadcastSpec),
    FixedRate {
        n: usize,
        size: usize,
    },
    Idle {
        n: usize,
        transport: Transport,
    },
    Storm {
        workers: usize,
    },
    /// Classic and Core JSON echo in turns (ours only).
    ClassicEcho {
        n: usize,
        size: usize,
    },
    /// One Core sender, half Core and half classic receivers (ours only).
    MixedBroadcast {
        receivers: usize,
    },
    /// One sender, receivers split across two servers on one Redis (and on one server alone).
    RedisBroadcast {
        receivers: usize,
    },
}

/// Why the classic scenarios run on our server only.
const NO_CLASSIC: &str = "no classic SignalR 2.x endpoint";

/// Why the SSE and long-polling cases do not run on the ceiling.
const NO_HTTP_TRANSPORTS: &str = "raw WebSockets only, no SSE or long polling";

/// Why stateful echo does not run on the ceiling.
const NO_STATEFUL_CEILING: &str = "raw WebSockets, no SignalR: no stateful reconnect";
/// Why stateful echo does not run on ASP.NET Core.
const NO_STATEFUL_ASPNETCORE: &str =
    "the ASP.NET peer's /hub does not allow stateful reconnect (AllowStatefulReconnects is off)";
/// Why stateful echo does not run on aiosignalr.
const NO_STATEFUL_PEER: &str =
    "ours only: the case sets our stateful reconnect against our plain echo";

impl Spec {
    /// The transport of the case's connections.
    fn transport(&self) -> Transport {
        match *self {
            Spec::Echo { transport, .. } | Spec::Idle { transport, .. } => transport,
            Spec::Broadcast(spec) => spec.transport,
            _ => Transport::WebSockets,
        }
    }

    /// Why the case does not run on `kind`, if it does not.
    fn not_for(&self, kind: ServerKind) -> Option<&'static str> {
        if self.classic() && kind != ServerKind::Ours {
            Some(NO_CLASSIC)
        } else if self.stateful() {
            match kind {
                ServerKind::Ours => None,
                ServerKind::Ceiling => Some(NO_STATEFUL_CEILING),
                ServerKind::AspNetCore => Some(NO_STATEFUL_ASPNETCORE),
                ServerKind::Peer => Some(NO_STATEFUL_PEER),
            }
        } else if self.transport() != Transport::WebSockets && kind == ServerKind::Ceiling {
            Some(NO_HTTP_TRANSPORTS)
        } else {
            None
        }
    }

    /// Whether the case uses stateful reconnect, which only our bench hub allows.
    fn stateful(&self) -> bool {
        matches!(self, Spec::Echo { stateful: true, .. })
    }

    /// Whether the case needs the classic endpoint, which only our server has.
    fn classic(&self) -> bool {
        matches!(self, Spec::ClassicEcho { .. } | Spec::MixedBroadcast { .. })
    }

    /// Whether the case is a redis-broadcast case (run apart, into `redis-latest.md`).
    fn redis(&self) -> bool {
        matches!(self, Spec::RedisBroadcast { .. })
    }
}

#[derive(Debug, Clone)]
struct Case {
    scenario: &'static str,
    /// Name for `--only`.
    key: &'static str,
    params: String,
    label: (String, String),
    spec: Spec,
}

fn proto(protocol: HubProtocol) -> &'static str {
    match protocol {
        HubProtocol::Json => "JSON",
        HubProtocol::MessagePack => "MessagePack",
    }
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn count(n: usize) -> String {
    report::significant(n as f64)
}

fn plan(full: bool) -> Vec<Case> {
    let protocols = [HubProtocol::Json, HubProtocol::MessagePack];
    let ws = Transport::WebSockets;
    let mut cases = Vec::new();
    // N=100 JSON 32 B first: its ceiling figure is the load generator check.
    let ns: &[usize] = if full { &[100, 1, 1000] } else { &[100, 1] };
    for &n in ns {
        for size in [32, 2048] {
            for protocol in protocols {
                cases.push(echo_case(n, protocol, size, ws));
            }
        }
    }
    // The echo case again with stateful reconnect on (ours only), for the same-run ratio.
    for protocol in protocols {
        cases.push(stateful_echo_case(100, protocol, 32));
    }
    let ms: &[usize] = if full { &[100, 1000, 10_000] } else { &[100] };
    let broadcast_protocols: &[HubProtocol] = if full {
        &protocols
    } else {
        &[HubProtocol::Json]
    };
    for &m in ms {
        for &protocol in broadcast_protocols {
            cases.push(broadcast_case(m, protocol, ws, None));
        }
    }
    // Deeper pipelines: what a server does with more fan-out work queued at once.
    let deep: &[(usize, usize)] = if full {
        &[(1000, 8), (1000, 32), (10_000, 8), (10_000, 32)]
    } else {
        &[(1000, 8)]
    };
    for &(m, in_flight) in deep {
        cases.push(broadcast_case(m, HubProtocol::Json, ws, Some(in_flight)));
    }
    if full {
        cases.push(Case {
            scenario: "group",
            key: "group",
            params: "group of 100 among 10,000, JSON, 32 B".to_owned(),
            label: ("group 100".to_owned(), "of 10,000".to_owned()),
            spec: Spec::Broadcast(BroadcastSpec {
                receivers: 100,
                protocol: HubProtocol::Json,
                size: 32,
                total: Some(10_000),
                slow: false,
                transport: ws,
                in_flight: None,
            }),
        });
    }
    let fixed = if full { 10_000 } else { 1000 };
    cases.push(Case {
        scenario: "fixed rate",
        key: "fixed-rate",
        params: format!("{} connections × 1 msg/s, JSON, 2 KB", count(fixed)),
        label: (format!("{} conns", count(fixed)), "1/s".to_owned()),
        spec: Spec::FixedRate {
            n: fixed,
            size: 2048,
        },
    });
    let idle = if full { 10_000 } else { 1000 };
    for transport in TRANSPORTS {
        cases.push(Case {
            scenario: "idle density",
            key: "idle",
            params: format!(
                "{} {} connections",
                count(idle),
                transport_adjective(transport)
            ),
            label: (
                format!("{} idle", count(idle)),
                transport_short(transport).to_owned(),
            ),
            spec: Spec::Idle { n: idle, transport },
        });
    }
    cases.push(Case {
        scenario: "connect storm",
        key: "storm",
        params: "16 concurrent connectors, negotiate + WebSocket + handshake".to_owned(),
        label: ("storm".to_owned(), String::new()),
        spec: Spec::Storm { workers: 16 },
    });
    let slow = if full { 1000 } else { 100 };
    cases.push(Case {
        scenario: "slow consumer",
        key: "slow",
        params: format!("M={}, JSON, 2 KB, 1 receiver stops reading", count(slow)),
        label: (format!("M={}", count(slow)), "1 stalled".to_owned()),
        spec: Spec::Broadcast(BroadcastSpec {
            receivers: slow,
            protocol: HubProtocol::Json,
            size: 2048,
            total: None,
            slow: true,
            transport: ws,
            in_flight: None,
        }),
    });
    // The HTTP transports (JSON: SSE carries text only), every connection on that transport.
    let http_ms: &[usize] = if full { &[100, 1000] } else { &[100] };
    for transport in [Transport::ServerSentEvents, Transport::LongPolling] {
        cases.push(echo_case(100, HubProtocol::Json, 32, transport));
        for &m in http_ms {
            cases.push(broadcast_case(m, HubProtocol::Json, transport, None));
        }
    }
    // Classic SignalR 2.x beside Core JSON (ours only), last: when a slow machine spends the
    // quick mode's time budget, the long-standing cases still run.
    for &n in ns {
        for size in [32, 2048] {
            cases.push(Case {
                scenario: "classic echo",
                key: "classic-echo",
                params: format!("N={}, {}, classic vs Core JSON", count(n), size_name(size)),
                label: (
                    format!("N={}", count(n)),
                    format!("classic {}", size_name(size).replace(' ', "")),
                ),
                spec: Spec::ClassicEcho { n, size },
            });
        }
    }
    for &m in ms {
        cases.push(Case {
            scenario: "mixed broadcast",
            key: "mixed-broadcast",
            params: format!(
                "M={} (½ Core JSON, ½ classic), 32 B, Core JSON sender",
                count(m)
            ),
            label: (format!("M={}", count(m)), "mixed".to_owned()),
            spec: Spec::MixedBroadcast { receivers: m },
        });
    }
    // Two servers on one Redis: only when asked for by name (--only redis-broadcast), at the same
    // sizes in every mode.
    for m in redis_scenario::RECEIVERS {
        cases.push(Case {
            scenario: "redis broadcast",
            key: redis_scenario::KEY,
            params: format!(
                "M={}, JSON, {} B, {} in flight",
                count(m),
                redis_scenario::SIZE,
                redis_scenario::IN_FLIGHT
            ),
            label: (format!("M={}", count(m)), "redis".to_owned()),
            spec: Spec::RedisBroadcast { receivers: m },
        });
    }
    cases
}

/// The three transports, in report order.
const TRANSPORTS: [Transport; 3] = [
    Transport::WebSockets,
    Transport::ServerSentEvents,
    Transport::LongPolling,
];

/// "WebSocket", "SSE", "long-polling" (before "connections").
fn transport_adjective(transport: Transport) -> &'static str {
    match transport {
        Transport::WebSockets => "WebSocket",
        Transport::ServerSentEvents => "SSE",
        Transport::LongPolling => "long-polling",
    }
}

/// Chart label of a transport.
fn transport_short(transport: Transport) -> &'static str {
    match transport {
        Transport::WebSockets => "ws",
        Transport::ServerSentEvents => "sse",
        Transport::LongPolling => "lp",
    }
}

fn echo_case(n: usize, protocol: HubProtocol, size: usize, transport: Transport) -> Case {
    let (scenario, key) = match transport {
        Transport::WebSockets => ("echo", "echo"),
        Transport::ServerSentEvents => ("SSE echo", "sse-echo"),
        Transport::LongPolling => ("long-polling echo", "lp-echo"),
    };
    let protocol_label = if protocol == HubProtocol::Json {
        "json"
    } else {
        "msgpack"
    };
    let size_label = size_name(size).replace(' ', "");
    Case {
        scenario,
        key,
        params: format!("N={}, {}, {}", count(n), proto(protocol), size_name(size)),
        label: (
            format!("N={}", count(n)),
            match transport {
                Transport::WebSockets => format!("{protocol_label} {size_label}"),
                _ => format!("{} {size_label}", transport_short(transport)),
            },
        ),
        spec: Spec::Echo {
            n,
            protocol,
            size,
            transport,
            stateful: false,
        },
    }
}

/// The echo case over WebSockets with stateful reconnect on: the same parameters as the plain
/// echo case, so that the report pairs them.
fn stateful_echo_case(n: usize, protocol: HubProtocol, size: usize) -> Case {
    let mut case = echo_case(n, protocol, size, Transport::WebSockets);
    case.scenario = report::STATEFUL_ECHO;
    case.key = "stateful-echo";
    case.label.1 = format!("stateful {}", case.label.1);
    if let Spec::Echo { stateful, .. } = &mut case.spec {
        *stateful = true;
    }
    case
}

fn broadcast_case(
    m: usize,
    protocol: HubProtocol,
    transport: Transport,
    in_flight: Option<usize>,
) -> Case {
    let (scenario, key) = match transport {
        Transport::WebSockets => ("broadcast", "broadcast"),
        Transport::ServerSentEvents => ("SSE broadcast", "sse-broadcast"),
        Transport::LongPolling => ("long-polling broadcast", "lp-broadcast"),
    };
    let spec = BroadcastSpec {
        receivers: m,
        protocol,
        size: 32,
        total: None,
        slow: false,
        transport,
        in_flight,
    };
    let protocol_label = if protocol == HubProtocol::Json {
        "json"
    } else {
        "msgpack"
    };
    Case {
        scenario,
        key,
        params: format!(
            "M={}, {}, 32 B, {} in flight",
            count(m),
            proto(protocol),
            spec.in_flight()
        ),
        label: (
            format!("M={}", count(m)),
            match (transport, in_flight) {
                (Transport::WebSockets, None) => protocol_label.to_owned(),
                (Transport::WebSockets, Some(k)) => format!("{protocol_label} ×{k}"),
                (_, _) => transport_short(transport).to_owned(),
            },
        ),
        spec: Spec::Broadcast(spec),
    }
}

async fn run_case(
    spec: &Spec,
    kind: ServerKind,
    command: &ServerCommand,
    settings: &Settings,
) -> Result<Outcome> {
    match *spec {
        Spec::Echo {
            n,
            protocol,
            size,
            transport,
            stateful,
        } => scenarios::echo(command, settings, n, protocol, size, transport, stateful).await,
        Spec::Broadcast(spec) => scenarios::broadcast(kind, command, settings, spec).await,
        Spec::FixedRate { n, size } => {
            scenarios::fixed_rate(command, settings, n, HubProtocol::Json, size).await
        }
        Spec::Idle { n, transport } => scenarios::idle(command, settings, n, transport).await,
        Spec::Storm { workers } => scenarios::storm(command, settings, workers).await,
        Spec::ClassicEcho { n, size } => {
            classic_scenarios::classic_echo(command, settings, n, size).await
        }
        Spec::MixedBroadcast { receivers } => {
            classic_scenarios::mixed_broadcast(command, settings, receivers).await
        }
        Spec::RedisBroadcast { .. } => Err("redis-broadcast runs apart (run_redis)".into()),
    }
}

fn shell(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn progress(kind: ServerKind, scenario: &str, result: &std::result::Result<Outcome, String>) {
    match result {
        Ok(outcome) => {
            eprintln!(
                "   {:<10} {}",
                kind.name(),
                report::progress_line(scenario, outcome)
            );
        }
        Err(err) => eprintln!("   {:<10} failed: {err}", kind.name()),
    }
}

/// `--soak`: runs the soak against each requested server in turn.
async fn run_soak(cli: Cli) -> Result<()> {
    servers::build_siblings().await?;
    if !proc::exe_dir()?.ends_with("release") {
        eprintln!("warning: not a release build; use cargo run --release -p signalr-bench");
    }
    let logs = std::env::temp_dir().join(format!("signalr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let names = if cli.servers.is_empty() {
        vec!["ours".to_owned()]
    } else {
        cli.servers.clone()
    };
    let secs = |s: f64| Duration::try_from_secs_f64(s);
    let options = soak::SoakOptions {
        conns: cli.soak_conns,
        phase: secs(cli.soak_phase)?,
        calm: secs(cli.soak_calm)?,
        interval: secs(cli.soak_interval)?,
        period: Duration::from_secs(10),
        only: cli.only.iter().map(|s| s.trim().to_owned()).collect(),
    };
    for name in &options.only {
        if !soak::PHASES.contains(&name.as_str()) {
            return Err(format!(
                "unknown soak phase {name} (phases: {})",
                soak::PHASES.join(", ")
            )
            .into());
        }
    }
    for name in names {
        let target = soak::Target::parse(&name)
            .ok_or_else(|| format!("unknown soak server {name} (ours, aspnetcore)"))?;
        let command = match soak::command(target, &logs) {
            Ok(command) => command,
            Err(err) if target == soak::Target::AspNetCore => {
                eprintln!("skipping aspnetcore: {err}");
                continue;
            }
            Err(err) => return Err(err),
        };
        println!("\n### soak: {}\n", target.name());
        soak::run(target, &command, &options).await?;
    }
    eprintln!("server logs in {}", logs.display());
    Ok(())
}

async fn run(cli: Cli, pinned: bool) -> Result<()> {
    if cli.soak {
        return run_soak(cli).await;
    }
    let started = Instant::now();
    let mode = if cli.smoke {
        Mode::Smoke
    } else if cli.full {
        Mode::Full
    } else {
        Mode::Quick
    };
    let mut settings = mode.settings();
    if let Some(secs) = cli.warmup {
        settings.warmup = Duration::try_from_secs_f64(secs)?;
    }
    if let Some(secs) = cli.window {
        settings.window = Duration::try_from_secs_f64(secs)?;
    }
    servers::build_siblings().await?;
    if !proc::exe_dir()?.ends_with("release") {
        eprintln!("warning: not a release build; use cargo run --release -p signalr-bench");
    }
    let out_dir = cli
        .out
        .clone()
        .unwrap_or_else(|| servers::bench_dir().join("results"));
    std::fs::create_dir_all(&out_dir)?;
    let logs = std::env::temp_dir().join(format!("signalr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;

    let mut cases = plan(cli.full);
    // redis-broadcast runs only when named.
    cases.retain(|c| {
        (cli.only.is_empty() && !c.spec.redis()) || cli.only.iter().any(|o| o.trim() == c.key)
    });
    if let Some(text) = &cli.case {
        cases.retain(|c| c.params.contains(text.as_str()));
    }
    let (redis_cases, cases): (Vec<Case>, Vec<Case>) =
        cases.into_iter().partition(|c| c.spec.redis());
    let run = RunContext {
        mode,
        settings,
        pinned,
        started,
        out_dir,
        logs,
    };
    if !cases.is_empty() {
        run_main(&cli, &run, cases).await?;
    }
    if !redis_cases.is_empty() {
        run_redis(&cli, &run, redis_cases).await?;
    }
    Ok(())
}

/// What every part of a run shares.
struct RunContext {
    mode: Mode,
    settings: Settings,
    pinned: bool,
    started: Instant,
    out_dir: PathBuf,
    logs: PathBuf,
}

/// The main scenarios: every case on every server, into `latest.md` and `latest.png`.
async fn run_main(cli: &Cli, run: &RunContext, cases: Vec<Case>) -> Result<()> {
    let RunContext {
        mode,
        settings,
        pinned,
        started,
        out_dir,
        logs,
    } = run;
    let (mode, pinned, started) = (*mode, *pinned, *started);
    let mut kinds = Vec::new();
    let server_names = if cli.servers.is_empty() {
        ServerKind::ALL
            .iter()
            .map(|k| k.name().to_owned())
            .collect()
    } else {
        cli.servers.clone()
    };
    for name in &server_names {
        let kind = ServerKind::parse(name).ok_or_else(|| format!("unknown server {name}"))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    // Servers that cannot run here are skipped with the reason, in the report too.
    let mut unavailable = Vec::new();
    let mut python = None;
    if kinds.contains(&ServerKind::Peer) {
        match servers::setup_peer().await {
            Ok(path) => python = Some(path),
            Err(err) => {
                eprintln!("skipping aiosignalr: {err}");
                unavailable.push((ServerKind::Peer, err.to_string()));
            }
        }
    }
    let mut commands = Vec::new();
    for &kind in &kinds {
        if unavailable.iter().any(|(k, _)| *k == kind) {
            continue;
        }
        match servers::command(kind, python.as_deref(), logs) {
            Ok(command) => commands.push((kind, command)),
            Err(err) if kind == ServerKind::AspNetCore => {
                eprintln!("skipping aspnetcore: {err}");
                unavailable.push((kind, err.to_string()));
            }
            Err(err) => return Err(err),
        }
    }
    kinds.retain(|k| commands.iter().any(|(c, _)| c == k));

    if std::env::var_os(servers::SERVER_BIN_VAR).is_some() {
        eprintln!("ours: {}", servers::ours_binary()?.display());
    }
    eprintln!(
        "{} mode: {} cases × {} servers; server logs in {}",
        mode.name(),
        cases.len(),
        commands.len(),
        logs.display()
    );
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for case in cases {
        if started.elapsed() > mode.budget() {
            skipped.push(format!("{} ({})", case.scenario, case.params));
            continue;
        }
        eprintln!(
            "== {} ({}) at {:.0} s",
            case.scenario,
            case.params,
            started.elapsed().as_secs_f64()
        );
        let mut per_server = Vec::new();
        let mut not_run = Vec::new();
        for (kind, command) in &commands {
            if let Some(why) = case.spec.not_for(*kind) {
                eprintln!("   {:<10} skipped: {why}", kind.name());
                not_run.push((*kind, why));
                continue;
            }
            conn::set_peer_fixup(*kind == ServerKind::Peer);
            let result = tokio::time::timeout(
                mode.case_limit(cli.full),
                run_case(&case.spec, *kind, command, settings),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
            .map_err(|err| err.to_string());
            progress(*kind, case.scenario, &result);
            if results.is_empty()
                && *kind == ServerKind::Ceiling
                && case.scenario == "echo"
                && let Ok(outcome) = &result
            {
                let rate = report::figure(outcome, "invocations/s").map_or(0.0, |s| s.median);
                let cpu = stats::Summary::of(&outcome.gen_cpu_pct).map_or(0.0, |s| s.median);
                eprintln!(
                    "   load generator alone: {} invocations/s against the ceiling, at {:.0} % of its core",
                    report::significant(rate),
                    cpu
                );
            }
            per_server.push((*kind, result));
        }
        results.push(CaseResult {
            scenario: case.scenario,
            params: case.params,
            label: case.label,
            results: per_server,
            not_run,
        });
    }

    let info = RunInfo {
        mode: if mode == Mode::Smoke && cli.full {
            "smoke (full sizes)"
        } else {
            mode.name()
        },
        date: shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: format!(
            "{}, {} cores",
            shell("uname", &["-sr"]),
            shell("nproc", &["--all"])
        ),
        servers: kinds,
        unavailable,
        method: format!(
            "Every figure is repeated {} times: {} back-to-back windows of {:.1} s after a {:.1} s warm-up (fixed rate: {:.0} s windows; idle density: {} fresh servers, {:.1} s idle each)",
            settings.reps,
            settings.reps,
            settings.window.as_secs_f64(),
            settings.warmup.as_secs_f64(),
            settings.fixed_window.as_secs_f64(),
            settings.reps,
            settings.idle_window.as_secs_f64()
        ),
        pinned,
        seconds: started.elapsed().as_secs_f64(),
        skipped,
    };
    let markdown = report::markdown(&info, &results);
    let md_path = out_dir.join("latest.md");
    std::fs::write(&md_path, markdown)?;
    let png_path = out_dir.join("latest.png");
    if let Err(err) = chart::draw(&png_path, &results) {
        eprintln!("chart failed: {err}");
    }
    eprintln!(
        "wrote {} and {} in {:.0} s",
        md_path.display(),
        png_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the machine is: OS, cores, CPU model, memory.
fn machine_details() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or(String::new(), |(_, m)| format!(", {}", m.trim()));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(String::new(), |kib| {
            format!(", {:.0} GiB", kib / 1024.0 / 1024.0)
        });
    format!(
        "{}, {} cores{model}{memory}",
        shell("uname", &["-srm"]),
        shell("nproc", &["--all"])
    )
}

/// The command line of this run, as typed under cargo.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let release = proc::exe_dir().is_ok_and(|d| d.ends_with("release"));
    format!(
        "cargo run {}-p signalr-bench -- {}",
        if release { "--release " } else { "" },
        args.join(" ")
    )
}

/// redis-broadcast: every case on each server kind, one server alone and two on one Redis, into
/// `redis-latest.md`.
async fn run_redis(cli: &Cli, run: &RunContext, cases: Vec<Case>) -> Result<()> {
    let started = Instant::now();
    if !proc::RedisProcess::available() {
        eprintln!(
            "skipping redis-broadcast: redis-server is not installed (apt-get install -y redis-server)"
        );
        return Ok(());
    }
    let mut not_run = Vec::new();
    let mut kinds = Vec::new();
    if cli.servers.is_empty() {
        kinds.extend(ServerKind::REDIS);
    }
    for name in &cli.servers {
        let kind = ServerKind::parse(name).ok_or_else(|| format!("unknown server {name}"))?;
        if !ServerKind::REDIS.contains(&kind) {
            eprintln!(
                "   {:<10} skipped in redis-broadcast: no Redis backplane",
                kind.name()
            );
            not_run.push(format!("{}: it has no Redis backplane", kind.name()));
        } else if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    let mut commands = Vec::new();
    for kind in kinds {
        match servers::command(kind, None, &run.logs) {
            Ok(command) => commands.push((kind, command)),
            Err(err) if kind == ServerKind::AspNetCore => {
                eprintln!("skipping aspnetcore: {err}");
                not_run.push(format!("aspnetcore: {err}"));
            }
            Err(err) => return Err(err),
        }
    }
    let variants: Vec<redis_scenario::Variant> = commands
        .iter()
        .flat_map(|&(kind, _)| {
            [false, true].map(|scaled_out| redis_scenario::Variant { kind, scaled_out })
        })
        .collect();
    conn::set_peer_fixup(false);
    eprintln!(
        "redis-broadcast, {} mode: {} cases × {} variants; server logs in {}",
        run.mode.name(),
        cases.len(),
        variants.len(),
        run.logs.display()
    );
    let mut results = Vec::new();
    for case in cases {
        let Spec::RedisBroadcast { receivers } = case.spec else {
            continue;
        };
        eprintln!("== {} ({})", case.scenario, case.params);
        let mut per_variant: Vec<(
            redis_scenario::Variant,
            std::result::Result<Outcome, String>,
        )> = variants
            .iter()
            .map(|&v| (v, Ok(Outcome::default())))
            .collect();
        // Fresh processes for every run, the variants taking turns, so that a slow start or a
        // noisy moment of the machine spreads over all of them.
        for round in 1..=redis_scenario::ROUNDS {
            for (variant, merged) in &mut per_variant {
                let Some((_, command)) = commands.iter().find(|(k, _)| *k == variant.kind) else {
                    continue;
                };
                if merged.is_err() {
                    continue;
                }
                let result = tokio::time::timeout(
                    run.mode.case_limit(cli.full),
                    redis_scenario::run(command, &run.logs, &run.settings, receivers, *variant),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
                .map_err(|err| err.to_string());
                match result {
                    Ok(outcome) => {
                        eprintln!(
                            "   {:<30} run {round}: {}",
                            variant.name(),
                            redis_scenario::progress_line(&outcome)
                        );
                        if let Ok(merged) = merged {
                            merged.extend(outcome);
                        }
                    }
                    Err(err) => {
                        eprintln!("   {:<30} run {round} failed: {err}", variant.name());
                        *merged = Err(err);
                    }
                }
            }
        }
        results.push(redis_scenario::RedisCase {
            receivers,
            results: per_variant,
        });
    }
    let s = &run.settings;
    let info = redis_scenario::RedisRunInfo {
        mode: if run.mode == Mode::Smoke && cli.full {
            "smoke (full sizes)"
        } else {
            run.mode.name()
        },
        date: shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine_details(),
        command: command_line(),
        redis_version: shell("redis-server", &["--version"]),
        method: format!(
            "Every figure has {} values: {} runs, each on fresh servers (and a fresh Redis), the variants taking turns, each run {} back-to-back windows of {:.1} s after a {:.1} s warm-up",
            redis_scenario::ROUNDS * s.reps,
            redis_scenario::ROUNDS,
            s.reps,
            s.window.as_secs_f64(),
            s.warmup.as_secs_f64()
        ),
        pinned: run.pinned,
        seconds: started.elapsed().as_secs_f64(),
        not_run,
    };
    let markdown = redis_scenario::markdown(&info, &variants, &results);
    let path = run.out_dir.join("redis-latest.md");
    std::fs::write(&path, markdown)?;
    eprintln!(
        "wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        proc::kill_all();
        default_hook(info);
    }));
    // Room for 10,000 connections plus the servers' own files (children inherit the limit).
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the open-file limit: {err}");
    }
    let pinned = proc::pin_self();
    if !pinned {
        eprintln!("warning: taskset not found; processes are not pinned to cores");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async {
        tokio::select! {
            result = run(cli, pinned) => result,
            () = interrupted() => Err("interrupted".into()),
        }
    });
    drop(local);
    proc::kill_all();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(cases: &[Case], key: &str) -> Vec<String> {
        cases
            .iter()
            .filter(|c| c.key == key)
            .map(|c| c.params.clone())
            .collect()
    }

    #[test]
    fn full_mode_has_the_deep_broadcasts_and_every_transport() {
        let full = plan(true);
        let broadcast = params(&full, "broadcast");
        for case in [
            "M=100, JSON, 32 B, 8 in flight",
            "M=1,000, JSON, 32 B, 2 in flight",
            "M=1,000, JSON, 32 B, 8 in flight",
            "M=1,000, JSON, 32 B, 32 in flight",
            "M=10,000, JSON, 32 B, 8 in flight",
            "M=10,000, JSON, 32 B, 32 in flight",
        ] {
            assert!(
                broadcast.iter().any(|p| p == case),
                "{case} in {broadcast:?}"
            );
        }
        assert_eq!(
            params(&full, "idle"),
            [
                "10,000 WebSocket connections",
                "10,000 SSE connections",
                "10,000 long-polling connections"
            ]
        );
        assert_eq!(params(&full, "sse-echo"), ["N=100, JSON, 32 B"]);
        assert_eq!(params(&full, "lp-broadcast").len(), 2);
        let quick = plan(false);
        assert!(
            params(&quick, "broadcast")
                .iter()
                .any(|p| p == "M=1,000, JSON, 32 B, 8 in flight")
        );
        assert_eq!(
            params(&quick, "lp-broadcast"),
            ["M=100, JSON, 32 B, 8 in flight"]
        );
    }

    #[test]
    fn cases_skip_the_servers_they_do_not_apply_to() {
        let cases = plan(false);
        let case = |key: &str| {
            cases
                .iter()
                .find(|c| c.key == key)
                .map(|c| c.spec.clone())
                .expect("case")
        };
        assert_eq!(
            case("sse-echo").not_for(ServerKind::Ceiling),
            Some(NO_HTTP_TRANSPORTS)
        );
        assert_eq!(case("lp-broadcast").not_for(ServerKind::AspNetCore), None);
        assert_eq!(case("echo").not_for(ServerKind::Ceiling), None);
        assert_eq!(
            case("classic-echo").not_for(ServerKind::AspNetCore),
            Some(NO_CLASSIC)
        );
        assert_eq!(case("classic-echo").not_for(ServerKind::Ours), None);
        let stateful = case("stateful-echo");
        assert_eq!(stateful.not_for(ServerKind::Ours), None);
        assert_eq!(
            stateful.not_for(ServerKind::Ceiling),
            Some(NO_STATEFUL_CEILING)
        );
        assert_eq!(
            stateful.not_for(ServerKind::AspNetCore),
            Some(NO_STATEFUL_ASPNETCORE)
        );
        assert_eq!(stateful.not_for(ServerKind::Peer), Some(NO_STATEFUL_PEER));
        // Plain echo stays on every server.
        assert_eq!(case("echo").not_for(ServerKind::AspNetCore), None);
    }

    #[test]
    fn stateful_echo_pairs_with_the_plain_echo_cases_in_every_mode() {
        for full in [false, true] {
            let cases = plan(full);
            let stateful = params(&cases, "stateful-echo");
            assert_eq!(
                stateful,
                ["N=100, JSON, 32 B", "N=100, MessagePack, 32 B"],
                "full: {full}"
            );
            // Same parameters as plain echo cases, so `--case` picks both and the report pairs
            // them.
            let echo = params(&cases, "echo");
            assert!(stateful.iter().all(|p| echo.contains(p)), "{echo:?}");
            for case in cases.iter().filter(|c| c.key == "stateful-echo") {
                assert_eq!(case.scenario, report::STATEFUL_ECHO);
                assert!(matches!(
                    case.spec,
                    Spec::Echo {
                        n: 100,
                        size: 32,
                        transport: Transport::WebSockets,
                        stateful: true,
                        ..
                    }
                ));
                assert!(case.label.1.starts_with("stateful "), "{:?}", case.label);
            }
            // The plain echo cases stay plain; the ceiling's first echo case stays first (the
            // load generator check).
            assert!(
                cases
                    .iter()
                    .filter(|c| c.key == "echo")
                    .all(|c| !c.spec.stateful())
            );
            assert_eq!(cases[0].key, "echo");
        }
    }
}
