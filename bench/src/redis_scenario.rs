//! redis broadcast: one broadcast across two servers sharing one Redis backplane, against the
//! same broadcast on one server alone (the cost of the backplane), for our `bench-server` and for
//! ASP.NET Core (`dotnet-peer server`, when `../shared/peers` is there).
//!
//! Each run starts its own `redis-server` on a free loopback port (nothing saved), two servers
//! with `--redis 127.0.0.1:PORT`, M receivers split evenly between them and one sender on the
//! first, which calls `Broadcast(payload)` with [`IN_FLIGHT`] broadcasts in flight; every
//! receiver gets `Receive(payload)`. Measured as the `broadcast` scenario measures: deliveries/s,
//! delivery latency (send to receipt) and the CPU of the whole server side (both servers and
//! Redis) per delivery. The single-server variant is the same without Redis, every receiver on
//! the one server. Every variant runs [`ROUNDS`] times on fresh processes, the variants taking
//! turns: how a run starts (which connections share a socket write, where Nagle's algorithm
//! holds a write back) varies more from one start to the next than from one window to the next.
//!
//! Pinning: both servers and Redis run on the server core (CPU 1), the load generator on CPU 0,
//! as in every other scenario. The two-server figures are therefore the whole server side of a
//! scale-out on the same one core the single server gets: what the backplane costs, not what a
//! second machine would add. (On a 2-core machine there is no core left to give each server its
//! own without taking the load generator's.)
//!
//! Results go to `results/redis-latest.md`, apart from `latest.md`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use signalr_protocol::HubProtocol;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::sleep;

use crate::conn::{Result, Template};
use crate::proc::{RedisProcess, ServerCommand, ServerProcess, cpu_us};
use crate::report::{cell, figure, significant};
use crate::scenarios::{Broadcast, Outcome, Settings, Slot, connect_many, receive_loop, send_loop};
use crate::servers::ServerKind;
use crate::stats::{Recorder, Summary, windows_of};

/// The scenario's name for `--only`.
pub const KEY: &str = "redis-broadcast";
/// Receivers of the cases.
pub const RECEIVERS: [usize; 2] = [100, 1000];
/// Broadcasts in flight at once (the sender waits until the oldest reached every receiver).
pub const IN_FLIGHT: usize = 8;
/// Payload size in bytes.
pub const SIZE: usize = 32;
/// Runs per case and variant, each on fresh processes (start-to-start differences are larger
/// than window-to-window ones).
pub const ROUNDS: usize = 3;
/// Figure name: Redis's own CPU use.
const REDIS_CPU: &str = "Redis CPU %";

/// One column of the table: a server kind, alone or two on Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Whose servers.
    pub kind: ServerKind,
    /// Two servers on one Redis (else one server, no Redis).
    pub scaled_out: bool,
}

impl Variant {
    /// The column header.
    pub fn name(self) -> String {
        format!(
            "{}, {}",
            self.kind.name(),
            if self.scaled_out {
                "2 servers + Redis"
            } else {
                "1 server"
            }
        )
    }
}

/// One receiver count on every variant.
#[derive(Debug)]
pub struct RedisCase {
    /// Receivers.
    pub receivers: usize,
    /// Per variant: its outcome or why it failed.
    pub results: Vec<(Variant, std::result::Result<Outcome, String>)>,
}

/// Runs one case on one variant: `command` starts one server of `variant.kind`.
pub async fn run(
    command: &ServerCommand,
    logs: &Path,
    s: &Settings,
    receivers: usize,
    variant: Variant,
) -> Result<Outcome> {
    let redis = if variant.scaled_out {
        Some(RedisProcess::start(&logs.join("redis.log")).await?)
    } else {
        None
    };
    let mut command = command.clone();
    if let Some(redis) = &redis {
        command
            .argv
            .extend(["--redis".to_owned(), redis.address.clone()]);
    }
    let a = ServerProcess::start(&command).await?;
    let b = match redis {
        Some(_) => Some(ServerProcess::start(&command).await?),
        None => None,
    };
    let protocol = HubProtocol::Json;
    let on_b = if b.is_some() { receivers / 2 } else { 0 };
    let mut conns = connect_many(a.addr, receivers - on_b, protocol, |_| String::new()).await?;
    if let Some(b) = &b {
        conns.extend(connect_many(b.addr, on_b, protocol, |_| String::new()).await?);
    }
    let sender = connect_many(a.addr, 1, protocol, |_| String::new())
        .await?
        .pop()
        .ok_or("no sender")?;
    let state = Rc::new(Broadcast {
        recorder: Recorder::default(),
        slots: RefCell::new(vec![Slot::default(); IN_FLIGHT]),
        expected: receivers,
        notify: Notify::new(),
    });
    let mut tasks = JoinSet::new();
    for conn in conns {
        tasks.spawn_local(receive_loop(conn, state.clone(), None));
    }
    let template = Template::new(protocol, "Broadcast", false, &[], SIZE)?;
    tasks.spawn_local(send_loop(sender, state.clone(), template));
    sleep(s.warmup).await;
    let mut pids = vec![a.pid];
    pids.extend(b.as_ref().map(|b| b.pid));
    pids.extend(redis.as_ref().map(|r| r.pid));
    let redis_pid = redis.as_ref().map(|r| r.pid);
    let redis_cpu0 = redis_pid.map(|pid| cpu_us(Some(pid)));
    let t0 = Instant::now();
    let w = windows_of(&state.recorder, &pids, s.reps, s.window).await;
    let redis_cpu = redis_pid.zip(redis_cpu0).map(|(pid, cpu0)| {
        cpu_us(Some(pid)).saturating_sub(cpu0) as f64 / (t0.elapsed().as_secs_f64() * 1e6) * 100.0
    });
    state.recorder.stop();
    tasks.shutdown().await;
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
    if let Some(redis) = redis {
        redis.stop().await;
    }
    let mut out = Outcome::default();
    out.windows(&w, "deliveries", "delivery");
    if let Some(pct) = redis_cpu {
        out.push(REDIS_CPU, [pct]);
    }
    out.errors(&state.recorder);
    Ok(out)
}

/// The one-line progress report of a finished run.
pub fn progress_line(outcome: &Outcome) -> String {
    let m = |name: &str| figure(outcome, name).map_or("–".to_owned(), |s| significant(s.median));
    format!(
        "deliveries/s {}, p50 {} µs, p99 {} µs, {} server CPU µs each",
        m("deliveries/s"),
        m("p50 latency (µs)"),
        m("p99 latency (µs)"),
        m("server CPU µs/delivery"),
    )
}

/// Facts about the run, for the header of `redis-latest.md`.
#[derive(Debug, Clone)]
pub struct RedisRunInfo {
    /// quick / full / smoke.
    pub mode: &'static str,
    /// UTC date and time.
    pub date: String,
    /// OS, cores, CPU, memory.
    pub machine: String,
    /// The command line of the run.
    pub command: String,
    /// `redis-server --version`.
    pub redis_version: String,
    /// Warm-up, windows, repetitions.
    pub method: String,
    /// Whether the processes could be pinned.
    pub pinned: bool,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Variants not measured, and why.
    pub not_run: Vec<String>,
}

/// Row name: the load generator's CPU use (from [`Outcome::gen_cpu_pct`]).
const GEN_CPU: &str = "load generator CPU %";

/// The rows of the table, in order: figure name, and how to show it.
const ROWS: [(&str, &str); 7] = [
    ("deliveries/s", "deliveries/s"),
    ("p50 latency (µs)", "p50 delivery latency µs"),
    ("p99 latency (µs)", "p99 delivery latency µs"),
    ("server CPU µs/delivery", "server-side CPU µs / delivery"),
    ("server CPU %", "server-side CPU % (of the one server core)"),
    (REDIS_CPU, "of which Redis, CPU %"),
    (GEN_CPU, "load generator CPU % (of CPU 0)"),
];

fn outcome_of(case: &RedisCase, variant: Variant) -> Option<&Outcome> {
    case.results
        .iter()
        .find(|(v, _)| *v == variant)
        .and_then(|(_, r)| r.as_ref().ok())
}

/// `redis-latest.md`.
pub fn markdown(info: &RedisRunInfo, variants: &[Variant], cases: &[RedisCase]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Broadcast across two servers on one Redis backplane\n"
    );
    let _ = writeln!(
        out,
        "- Date: {}\n- Machine: {}\n- Command: `{}` ({} mode, {:.0} s)\n- Redis: {}\n- {}.",
        info.date,
        info.machine,
        info.command,
        info.mode,
        info.seconds,
        info.redis_version,
        info.method
    );
    let _ = writeln!(
        out,
        "- Pinning: {}\n",
        if info.pinned {
            "the server side (both servers and redis-server) on CPU 1, the load generator (one thread) on CPU 0 (`taskset`). The two-server figures are the whole server side of a scale-out on the same one core the single server gets: the cost of the backplane"
        } else {
            "none (taskset not found): the figures are not comparable with pinned runs"
        }
    );
    let _ = writeln!(
        out,
        "One sender on server A calls `Broadcast(payload)` ({SIZE} B, JSON, WebSockets) with {IN_FLIGHT} \
         broadcasts in flight; every other connection gets `Receive(payload)`. With two servers, \
         the receivers are split evenly between A and B, and every broadcast goes through Redis \
         (to A's own receivers too: a send to all is delivered from the backplane's subscription). \
         Latency is from the send to the receipt. Server-side CPU adds up both servers and Redis. \
         Medians of all windows of all runs, min–max in brackets. A load generator near 100 % \
         means the figure is its limit rather than the servers'.\n"
    );
    if !info.not_run.is_empty() {
        let _ = writeln!(out, "Not measured:\n");
        for line in &info.not_run {
            let _ = writeln!(out, "- {line}");
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "| receivers | figure |");
    for v in variants {
        let _ = write!(out, " {} |", v.name());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(variants.len()));
    for case in cases {
        for (name, label) in ROWS {
            if name == REDIS_CPU && !variants.iter().any(|v| v.scaled_out) {
                continue;
            }
            let _ = write!(out, "| {} | {label} |", significant(case.receivers as f64));
            for &v in variants {
                let value = outcome_of(case, v).and_then(|o| {
                    if name == GEN_CPU {
                        return Summary::of(&o.gen_cpu_pct);
                    }
                    o.figures
                        .iter()
                        .find(|(n, _)| n == name)
                        .and_then(|(_, values)| Summary::of(values))
                });
                let _ = write!(out, " {} |", cell(value));
            }
            let _ = writeln!(out);
        }
        // Deliveries/s of two servers + Redis relative to one server of the same kind.
        let _ = write!(
            out,
            "| {} | deliveries/s, 2 servers + Redis / 1 server |",
            significant(case.receivers as f64)
        );
        for &v in variants {
            let ratio = if v.scaled_out {
                let rate = |variant| {
                    outcome_of(case, variant)
                        .and_then(|o| figure(o, "deliveries/s"))
                        .map(|s| s.median)
                };
                rate(v)
                    .zip(rate(Variant {
                        scaled_out: false,
                        ..v
                    }))
                    .map_or("–".to_owned(), |(two, one)| format!("{:.2}", two / one))
            } else {
                String::new()
            };
            let _ = write!(out, " {ratio} |");
        }
        let _ = writeln!(out);
    }
    let mut notes = Vec::new();
    for case in cases {
        for (v, result) in &case.results {
            match result {
                Ok(outcome) => {
                    for note in &outcome.notes {
                        notes.push(format!("M={}, {}: {note}", case.receivers, v.name()));
                    }
                }
                Err(err) => {
                    notes.push(format!("M={}, {}: failed: {err}", case.receivers, v.name()))
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(rate: f64) -> Outcome {
        let mut out = Outcome::default();
        out.push("deliveries/s", [rate, rate * 1.1, rate * 0.9]);
        out.push("p50 latency (µs)", [100.0]);
        out.gen_cpu_pct = vec![50.0];
        out
    }

    #[test]
    fn the_table_has_every_variant_and_the_backplane_ratio() {
        let one = Variant {
            kind: ServerKind::Ours,
            scaled_out: false,
        };
        let two = Variant {
            scaled_out: true,
            ..one
        };
        let cases = [RedisCase {
            receivers: 100,
            results: vec![(one, Ok(outcome(1000.0))), (two, Ok(outcome(500.0)))],
        }];
        let info = RedisRunInfo {
            mode: "full",
            date: "today".into(),
            machine: "here".into(),
            command: "cargo run".into(),
            redis_version: "7".into(),
            method: "3 windows".into(),
            pinned: true,
            seconds: 1.0,
            not_run: vec!["aspnetcore: absent".into()],
        };
        let md = markdown(&info, &[one, two], &cases);
        assert!(md.contains("| receivers | figure | ours, 1 server | ours, 2 servers + Redis |"));
        assert!(md.contains("| 100 | deliveries/s | 1,000 (900–1,100) | 500 (450–550) |"));
        assert!(md.contains("| 100 | deliveries/s, 2 servers + Redis / 1 server |  | 0.50 |"));
        assert!(md.contains("| 100 | load generator CPU % (of CPU 0) | 50 | 50 |"));
        assert!(md.contains("- aspnetcore: absent"));
        assert!(md.contains("| 100 | p99 delivery latency µs | – | – |"));
    }
}
