//! `results/latest.md`: the Markdown tables of a run.

use std::fmt::Write as _;

use crate::classic_scenarios::{CLASSIC, CORE};
use crate::scenarios::Outcome;
use crate::servers::ServerKind;
use crate::stats::Summary;

/// The scenario name of the echo case with stateful reconnect on (ours only), which the report
/// sets beside the plain echo case of the same parameters.
pub const STATEFUL_ECHO: &str = "stateful echo";

/// One scenario case on every server.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Scenario name as in the README table.
    pub scenario: &'static str,
    /// Parameters, human-readable.
    pub params: String,
    /// Two short lines for the chart's category label.
    pub label: (String, String),
    /// Per server: its outcome or why it failed.
    pub results: Vec<(ServerKind, Result<Outcome, String>)>,
    /// Servers the case does not apply to, and why.
    pub not_run: Vec<(ServerKind, &'static str)>,
}

impl CaseResult {
    /// The chart's two-line label.
    pub fn short_label(&self) -> (String, String) {
        self.label.clone()
    }

    fn outcome(&self, kind: ServerKind) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, r)| r.as_ref().ok())
    }
}

/// The summary of figure `name` in `outcome`.
pub fn figure(outcome: &Outcome, name: &str) -> Option<Summary> {
    outcome
        .figures
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, values)| Summary::of(values))
}

/// The figure that sums a scenario up (chart).
pub fn headline(scenario: &str) -> &'static str {
    match scenario {
        "echo" | STATEFUL_ECHO | "SSE echo" | "long-polling echo" => "invocations/s",
        "broadcast" | "group" | "SSE broadcast" | "long-polling broadcast" => "deliveries/s",
        "fixed rate" => "p99 latency (µs)",
        "idle density" => "KiB per idle connection",
        "connect storm" => "connections/s",
        "slow consumer" => "deliveries/s during the stall",
        "classic echo" => "classic invocations/s",
        "mixed broadcast" => "deliveries/s",
        _ => "",
    }
}

/// The median of figure `name`, formatted, or "–".
fn median(outcome: &Outcome, name: &str) -> String {
    figure(outcome, name).map_or("–".to_owned(), |s| significant(s.median))
}

/// The one-line progress report of a finished case on one server.
pub fn progress_line(scenario: &str, outcome: &Outcome) -> String {
    let m = |name: &str| median(outcome, name);
    match scenario {
        "classic echo" => format!(
            "{CLASSIC} {} invocations/s, p99 {} µs, {} CPU µs each; {CORE} {} invocations/s, p99 {} µs, {} CPU µs each",
            m(&format!("{CLASSIC} invocations/s")),
            m(&format!("{CLASSIC} p99 latency (µs)")),
            m(&format!("{CLASSIC} server CPU µs/invocation")),
            m(&format!("{CORE} invocations/s")),
            m(&format!("{CORE} p99 latency (µs)")),
            m(&format!("{CORE} server CPU µs/invocation")),
        ),
        "mixed broadcast" => format!(
            "deliveries/s {} (p99 {CORE} {} µs, {CLASSIC} {} µs); CPU µs/delivery alone: {CORE} {}, {CLASSIC} {}",
            m("deliveries/s"),
            m(&format!("{CORE} p99 latency (µs)")),
            m(&format!("{CLASSIC} p99 latency (µs)")),
            m(&format!("{CORE} alone: server CPU µs/delivery")),
            m(&format!("{CLASSIC} alone: server CPU µs/delivery")),
        ),
        _ => {
            let name = headline(scenario);
            let p99 = figure(outcome, "p99 latency (µs)").map_or(String::new(), |s| {
                format!(", p99 {} µs", significant(s.median))
            });
            format!("{name} {}{p99}", m(name))
        }
    }
}

/// 1234567 → "1.23M", 12345 → "12.3k" (axis labels).
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", significant(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", significant(v / 1e3))
    } else {
        significant(v)
    }
}

/// Three significant digits, thousands separated, no trailing zeros.
pub fn significant(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let rounded = v.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        return if rounded < 0 { format!("-{out}") } else { out };
    }
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

pub(crate) fn cell(summary: Option<Summary>) -> String {
    match summary {
        None => "–".to_owned(),
        Some(s) if (s.max - s.min).abs() <= f64::EPSILON * s.max.abs().max(1.0) => {
            significant(s.median)
        }
        Some(s) => format!(
            "{} ({}–{})",
            significant(s.median),
            significant(s.min),
            significant(s.max)
        ),
    }
}

/// Facts about the run, for the report's header.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// quick / full / smoke.
    pub mode: &'static str,
    /// UTC date and time.
    pub date: String,
    /// `uname -sr`, cores.
    pub machine: String,
    /// The servers measured.
    pub servers: Vec<ServerKind>,
    /// Servers asked for that could not run here, and why.
    pub unavailable: Vec<(ServerKind, String)>,
    /// Warm-up, window, repetitions.
    pub method: String,
    /// Whether the processes could be pinned.
    pub pinned: bool,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// Cases skipped because the time budget ran out.
    pub skipped: Vec<String>,
}

/// Whether `scenario` is an echo over some transport (not the classic one).
fn is_echo(scenario: &str) -> bool {
    scenario.ends_with("echo") && scenario != "classic echo"
}

/// What bounded a figure: "server" (its CPU ≥ 90 %), "load generator" (its CPU ≥ 90 %) or
/// "round trips" (neither), "–" without figures.
pub fn bound_by(outcome: &Outcome) -> &'static str {
    let server = figure(outcome, "server CPU %").map(|s| s.median);
    let generator = Summary::of(&outcome.gen_cpu_pct).map(|s| s.median);
    match (server, generator) {
        (Some(s), _) if s >= 90.0 => "server",
        (_, Some(g)) if g >= 90.0 => "load generator",
        (Some(_), Some(_)) => "round trips",
        _ => "–",
    }
}

/// `top / bottom` of the medians of figure `name`, as "1.23×".
fn ratio_of(top: Option<&Outcome>, bottom: Option<&Outcome>, name: &str) -> String {
    match (
        top.and_then(|o| figure(o, name)),
        bottom.and_then(|o| figure(o, name)),
    ) {
        (Some(t), Some(b)) if b.median > 0.0 && t.median.is_finite() => {
            format!("{:.2}×", t.median / b.median)
        }
        _ => "–".to_owned(),
    }
}

fn generator_check(out: &mut String, results: &[CaseResult]) {
    let _ = writeln!(out, "## Load generator check\n");
    let _ = writeln!(
        out,
        "The load generator (one thread on CPU 0) must outrun the server it measures. Against the \
         ceiling it shows how fast it can go; against a hub server, *bound by* names what set the \
         figure: the server (its CPU ≥ 90 % of its one core), the load generator (its CPU ≥ 90 %), \
         or round trips (neither saturated: with one invocation in flight per connection, every \
         connection waits for its answer, and the network stack's latency sets the rate). A \
         figure bound by the load generator understates that server.\n"
    );
    if let Some((params, outcome)) = results
        .iter()
        .filter(|c| c.scenario == "echo")
        .find_map(|c| c.outcome(ServerKind::Ceiling).map(|o| (&c.params, o)))
    {
        let rate = figure(outcome, "invocations/s").map_or(f64::NAN, |s| s.median);
        let cpu = Summary::of(&outcome.gen_cpu_pct).map_or(f64::NAN, |s| s.median);
        let _ = writeln!(
            out,
            "Alone against the ceiling (echo, {params}) the load generator reached {} invocations/s at {} % of its core.\n",
            significant(rate),
            significant(cpu)
        );
    }
    let hubs = [ServerKind::Ours, ServerKind::AspNetCore];
    let mut header = "| echo case | ceiling invocations/s |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for kind in hubs {
        let k = kind.name();
        let _ = write!(
            header,
            " {k} invocations/s | server CPU ({k}) | generator CPU ({k}) | bound by ({k}) |"
        );
        rule.push_str("---|---|---|---|");
    }
    header.push_str(" ceiling / ours | ours / aspnetcore |");
    rule.push_str("---|---|");
    let _ = writeln!(out, "{header}\n{rule}");
    let mut generator_bound = Vec::new();
    let pct = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{} %", significant(v)));
    for case in results.iter().filter(|c| is_echo(c.scenario)) {
        let ceiling = case.outcome(ServerKind::Ceiling);
        let mut row = format!(
            "| {} {} | {} |",
            case.scenario,
            case.params,
            cell(ceiling.and_then(|o| figure(o, "invocations/s")))
        );
        for kind in hubs {
            let outcome = case.outcome(kind);
            let server_cpu = outcome
                .and_then(|o| figure(o, "server CPU %"))
                .map(|s| s.median);
            let gen_cpu = outcome
                .and_then(|o| Summary::of(&o.gen_cpu_pct))
                .map(|s| s.median);
            let bound = outcome.map_or("–", bound_by);
            if bound == "load generator" {
                generator_bound.push(format!(
                    "{} {} on {}",
                    case.scenario,
                    case.params,
                    kind.name()
                ));
            }
            let _ = write!(
                row,
                " {} | {} | {} | {bound} |",
                cell(outcome.and_then(|o| figure(o, "invocations/s"))),
                pct(server_cpu),
                pct(gen_cpu),
            );
        }
        let _ = writeln!(
            out,
            "{row} {} | {} |",
            ratio_of(ceiling, case.outcome(ServerKind::Ours), "invocations/s"),
            ratio_of(
                case.outcome(ServerKind::Ours),
                case.outcome(ServerKind::AspNetCore),
                "invocations/s"
            ),
        );
    }
    let verdict = if generator_bound.is_empty() {
        "The load generator was never the bottleneck of an echo figure of ours or ASP.NET Core."
            .to_owned()
    } else {
        format!(
            "The load generator, not the server, bounded: {}. Those figures understate that server (and a ratio against it).",
            generator_bound.join("; ")
        )
    };
    let _ = writeln!(out, "\n{verdict}\n");
}

/// The figures of the summary table, per scenario: the headline and what explains it.
fn summary_figures(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "echo" | STATEFUL_ECHO => &[
            "invocations/s",
            "p99 latency (µs)",
            "server CPU µs/invocation",
        ],
        "SSE echo" => &[
            "invocations/s",
            "p99 latency (µs)",
            "messages per SSE event",
        ],
        "long-polling echo" => &[
            "invocations/s",
            "p99 latency (µs)",
            "messages per poll response",
        ],
        "broadcast" | "group" => &["deliveries/s", "p99 latency (µs)", "server CPU µs/delivery"],
        "SSE broadcast" => &["deliveries/s", "p99 latency (µs)", "messages per SSE event"],
        "long-polling broadcast" => &[
            "deliveries/s",
            "p99 latency (µs)",
            "messages per poll response",
        ],
        "fixed rate" => &["p99 latency (µs)", "server CPU %"],
        "idle density" => &[
            "KiB per idle connection",
            "idle CPU µs per connection-second",
        ],
        "connect storm" => &["connections/s"],
        "slow consumer" => &[
            "deliveries/s during the stall",
            "deliveries/s before the stall",
            "server RSS max (MiB)",
        ],
        _ => &[],
    }
}

/// The summary: the figures that matter per case, every server, and ours relative to each
/// other server (the layout of the README's table).
fn summary(out: &mut String, info: &RunInfo, results: &[CaseResult]) {
    let others: Vec<ServerKind> = info
        .servers
        .iter()
        .copied()
        .filter(|&k| k != ServerKind::Ours)
        .collect();
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "Medians. *ours / X* divides our figure by X's: above 1 means ours is higher, which is \
         better for rates (invocations/s, deliveries/s, connections/s) and worse for latency, CPU \
         and memory. \"–\": not measured (the case does not apply, or the server was not run). \
         *bound by* (as in the load generator check): server, load generator, or round trips; a \
         ratio against a figure bound by the load generator understates that server.\n"
    );
    let mut header = "| Scenario | Parameters | Figure |".to_owned();
    let mut rule = "|---|---|---|".to_owned();
    for kind in &info.servers {
        let _ = write!(header, " {} |", kind.name());
        rule.push_str("---|");
    }
    if info.servers.contains(&ServerKind::Ours) {
        for kind in &others {
            let _ = write!(header, " ours / {} |", kind.name());
            rule.push_str("---|");
        }
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for case in results {
        for &name in summary_figures(case.scenario) {
            if !case
                .results
                .iter()
                .any(|(_, r)| r.as_ref().is_ok_and(|o| figure(o, name).is_some()))
            {
                continue;
            }
            let mut row = format!("| {} | {} | {name} |", case.scenario, case.params);
            for kind in &info.servers {
                let _ = write!(
                    row,
                    " {} |",
                    case.outcome(*kind)
                        .and_then(|o| figure(o, name))
                        .map_or("–".to_owned(), |s| significant(s.median))
                );
            }
            if info.servers.contains(&ServerKind::Ours) {
                for &kind in &others {
                    let _ = write!(
                        row,
                        " {} |",
                        ratio_of(case.outcome(ServerKind::Ours), case.outcome(kind), name)
                    );
                }
            }
            let _ = writeln!(out, "{row}");
        }
        // What bounded each server's figures in this case.
        if case.results.iter().any(|(_, r)| {
            r.as_ref()
                .is_ok_and(|o| figure(o, "server CPU %").is_some())
        }) {
            let mut row = format!("| {} | {} | bound by |", case.scenario, case.params);
            for kind in &info.servers {
                let _ = write!(row, " {} |", case.outcome(*kind).map_or("–", bound_by));
            }
            if info.servers.contains(&ServerKind::Ours) {
                row.push_str(&" |".repeat(others.len()));
            }
            let _ = writeln!(out, "{row}");
        }
    }
    let _ = writeln!(out);
}

/// How the HTTP transports batch: messages per poll response and per SSE event, server by
/// server, beside the rates they explain.
fn batching_section(out: &mut String, info: &RunInfo, results: &[CaseResult]) {
    let cases: Vec<&CaseResult> = results
        .iter()
        .filter(|c| c.scenario.starts_with("SSE ") || c.scenario.starts_with("long-polling "))
        .collect();
    if cases.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## SSE and long polling: messages per response\n\n\
         Over long polling a server answers each poll with everything it queued for the \
         connection since the last one (ASP.NET Core does, and so do we), and over SSE one event \
         may carry several messages: the fewer HTTP responses (or events) a delivery needs, the \
         cheaper it is. *messages per poll response* and *messages per SSE event* are averages \
         over all the load generator's connections in the measured windows (responses that \
         carried data only; pings count as messages). With one echo in flight per connection \
         there is at most one answer to batch; a broadcast with several in flight fills \
         responses while the receiver's next poll is on its way.\n"
    );
    let hubs: Vec<ServerKind> = info
        .servers
        .iter()
        .copied()
        .filter(|&k| k != ServerKind::Ceiling)
        .collect();
    let mut header = "| case | figure |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for kind in &hubs {
        let _ = write!(header, " {} |", kind.name());
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for case in cases {
        let rate = headline(case.scenario);
        let batch = if case.scenario.starts_with("SSE ") {
            "messages per SSE event"
        } else {
            "messages per poll response"
        };
        for name in [rate, batch, "server CPU %"] {
            let mut row = format!("| {} {} | {name} |", case.scenario, case.params);
            for kind in &hubs {
                let _ = write!(
                    row,
                    " {} |",
                    cell(case.outcome(*kind).and_then(|o| figure(o, name)))
                );
            }
            let _ = writeln!(out, "{row}");
        }
    }
}

/// The whole Markdown report.
pub fn markdown(info: &RunInfo, results: &[CaseResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# SignalR for Rust: benchmark results ({} mode)\n",
        info.mode
    );
    let _ = writeln!(
        out,
        "Run {} on {}, {:.0} s. Written by `cargo run --release -p signalr-bench{}`; chart: [latest.png](latest.png). How to reproduce and read every figure: [bench/README.md](../README.md).\n",
        info.date,
        info.machine,
        info.seconds,
        if info.mode == "full" {
            " -- --full"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "Each server runs as its own process {}; the load generator (one thread: tokio-tungstenite + signalr-protocol for WebSockets, raw HTTP/1.1 on tokio for SSE and long polling) {}. {}. Cells: median (min–max).\n",
        if info.pinned {
            "pinned to CPU 1 (`taskset -c 1`)"
        } else {
            "(not pinned: taskset missing)"
        },
        if info.pinned { "on CPU 0" } else { "unpinned" },
        info.method
    );
    let _ = writeln!(out, "Servers:\n");
    for kind in ServerKind::ALL {
        if info.servers.contains(&kind) {
            let _ = writeln!(out, "- **{}**: {}", kind.name(), kind.description());
        } else if let Some((_, why)) = info.unavailable.iter().find(|(k, _)| *k == kind) {
            let _ = writeln!(out, "- **{}**: not run: {why}", kind.name());
        } else {
            let _ = writeln!(out, "- **{}**: not run (not selected)", kind.name());
        }
    }
    let _ = writeln!(out);
    generator_check(&mut out, results);
    summary(&mut out, info, results);

    let _ = writeln!(out, "## Results\n");
    let ours_run = info.servers.contains(&ServerKind::Ours);
    let others: Vec<ServerKind> = info
        .servers
        .iter()
        .copied()
        .filter(|&k| k != ServerKind::Ours)
        .collect();
    let mut header = "| Scenario | Parameters | Figure |".to_owned();
    let mut rule = "|---|---|---|".to_owned();
    for kind in &info.servers {
        let _ = write!(header, " {} |", kind.name());
        rule.push_str("---|");
    }
    if ours_run {
        for kind in &others {
            let _ = write!(header, " ours / {} |", kind.name());
            rule.push_str("---|");
        }
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for case in results {
        let mut names: Vec<&str> = Vec::new();
        for (_, result) in &case.results {
            if let Ok(outcome) = result {
                for (name, _) in &outcome.figures {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
            }
        }
        if names.is_empty() {
            names.push("(failed)");
        }
        for name in names {
            let mut row = format!("| {} | {} | {} |", case.scenario, case.params, name);
            for kind in &info.servers {
                let text = match case.results.iter().find(|(k, _)| k == kind) {
                    None => "–".to_owned(),
                    Some((_, Err(_))) => "failed".to_owned(),
                    Some((_, Ok(outcome))) => cell(figure(outcome, name)),
                };
                let _ = write!(row, " {text} |");
            }
            if ours_run {
                for &kind in &others {
                    let _ = write!(
                        row,
                        " {} |",
                        ratio_of(case.outcome(ServerKind::Ours), case.outcome(kind), name)
                    );
                }
            }
            let _ = writeln!(out, "{row}");
        }
    }

    batching_section(&mut out, info, results);
    stateful_section(&mut out, results);
    classic_echo_section(&mut out, results);
    mixed_broadcast_section(&mut out, results);

    let slow: Vec<(ServerKind, &Outcome)> = results
        .iter()
        .filter(|c| c.scenario == "slow consumer")
        .flat_map(|c| c.results.iter())
        .filter_map(|(k, r)| r.as_ref().ok().map(|o| (*k, o)))
        .collect();
    if !slow.is_empty() {
        let _ = writeln!(
            out,
            "\n## Slow consumer: server RSS over time\n\nOne receiver stops reading after the first window and stays stalled through the measured windows and a while longer; samples every 0.4 s as `seconds: MiB`.\n"
        );
        for (kind, outcome) in slow {
            let samples: Vec<String> = outcome
                .series
                .iter()
                .step_by(2)
                .map(|(t, m)| format!("{t:.1}: {m:.1}"))
                .collect();
            let _ = writeln!(out, "- **{}**: {}", kind.name(), samples.join(", "));
        }
    }

    let mut notes = Vec::new();
    for case in results {
        for (kind, result) in &case.results {
            match result {
                Err(err) => notes.push(format!(
                    "{} ({}) on {}: failed: {err}",
                    case.scenario,
                    case.params,
                    kind.name()
                )),
                Ok(outcome) => {
                    for note in &outcome.notes {
                        notes.push(format!(
                            "{} ({}) on {}: {note}",
                            case.scenario,
                            case.params,
                            kind.name()
                        ));
                    }
                }
            }
        }
    }
    // One note per scenario and reason: "<scenario> not run on <servers>: <why>".
    let mut not_run: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for case in results {
        for &(kind, why) in &case.not_run {
            match not_run
                .iter_mut()
                .find(|(s, w, _)| *s == case.scenario && *w == why)
            {
                Some((_, _, kinds)) => {
                    if !kinds.contains(&kind.name()) {
                        kinds.push(kind.name());
                    }
                }
                None => not_run.push((case.scenario, why, vec![kind.name()])),
            }
        }
    }
    for (scenario, why, kinds) in not_run {
        notes.push(format!("{scenario} not run on {}: {why}", kinds.join(", ")));
    }
    for skipped in &info.skipped {
        notes.push(format!("skipped, time budget spent: {skipped}"));
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// Our server's outcomes of the cases of `scenario`.
fn ours<'a>(results: &'a [CaseResult], scenario: &str) -> Vec<(&'a str, &'a Outcome)> {
    results
        .iter()
        .filter(|c| c.scenario == scenario)
        .filter_map(|c| c.outcome(ServerKind::Ours).map(|o| (c.params.as_str(), o)))
        .collect()
}

/// "p50 / p99 / p99.9" medians of `prefix` latency figures (those that exist).
fn latencies(outcome: &Outcome, prefix: &str, quantiles: &[&str]) -> String {
    quantiles
        .iter()
        .map(|q| median(outcome, &format!("{prefix}{q} latency (µs)")))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The ratio of the medians of two figures, as "1.23×".
fn ratio(outcome: &Outcome, top: &str, bottom: &str) -> String {
    match (figure(outcome, top), figure(outcome, bottom)) {
        (Some(t), Some(b)) if b.median > 0.0 => format!("{:.2}×", t.median / b.median),
        _ => "–".to_owned(),
    }
}

/// Stateful reconnect's cost: each stateful echo case of ours beside the plain echo case of the
/// same parameters, from the same run.
fn stateful_section(out: &mut String, results: &[CaseResult]) {
    let cases = ours(results, STATEFUL_ECHO);
    if cases.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Stateful reconnect: its cost on echo\n\n\
         Our server only. *stateful* connections negotiate with `useStatefulReconnect=true` and \
         handshake with version 2, so the server numbers and keeps every Completion until the \
         load generator acknowledges it (an Ack about once a second, or after 50,000 bytes) and \
         sends Acks of its own; *plain* is the echo case of the same parameters in the same run \
         (no negotiate, version 1). *stateful / plain* above 1 means more: better for the rate, \
         worse for CPU and latency.\n"
    );
    let _ = writeln!(
        out,
        "| echo case | plain invocations/s | stateful invocations/s | stateful / plain | plain server CPU µs/invocation | stateful server CPU µs/invocation | stateful / plain | plain p50 / p99 µs | stateful p50 / p99 µs | bound by (plain / stateful) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let plain = ours(results, "echo");
    let q = ["p50", "p99"];
    for (params, stateful) in cases {
        let plain = plain.iter().find(|(p, _)| *p == params).map(|(_, o)| *o);
        let c = |o: Option<&Outcome>, name: &str| cell(o.and_then(|o| figure(o, name)));
        let rate = "invocations/s";
        let cpu = "server CPU µs/invocation";
        let _ = writeln!(
            out,
            "| {params} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            c(plain, rate),
            c(Some(stateful), rate),
            ratio_of(Some(stateful), plain, rate),
            c(plain, cpu),
            c(Some(stateful), cpu),
            ratio_of(Some(stateful), plain, cpu),
            plain.map_or("–".to_owned(), |o| latencies(o, "", &q)),
            latencies(stateful, "", &q),
            plain.map_or("–", bound_by),
            bound_by(stateful),
        );
    }
}

fn classic_echo_section(out: &mut String, results: &[CaseResult]) {
    let cases = ours(results, "classic echo");
    if cases.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Classic SignalR 2.x beside ASP.NET Core SignalR: echo\n\n\
         Our server only (the ceiling and aiosignalr have no classic endpoint). Each case opens N \
         classic WebSocket connections (`/signalr`: negotiate, connect, start) and N Core JSON \
         connections (`/hub`) on one server, every connection with one `Echo` in flight, and \
         measures the two kinds in turns (a Core window and a classic window per repetition, which \
         goes first alternating), so both figures come from the same server process. *bound by* as in the load generator \
         check, for the classic windows.\n"
    );
    let _ = writeln!(
        out,
        "| echo case | {CLASSIC} invocations/s | {CORE} invocations/s | {CLASSIC} p50 / p99 / p99.9 µs | {CORE} p50 / p99 / p99.9 µs | {CLASSIC} server CPU µs/invocation | {CORE} server CPU µs/invocation | CPU {CLASSIC} / {CORE} | bound by ({CLASSIC}) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let q = ["p50", "p99", "p99.9"];
    for (params, o) in cases {
        let cpu = |kind: &str| format!("{kind} server CPU µs/invocation");
        let rate = |kind: &str| cell(figure(o, &format!("{kind} invocations/s")));
        let server = figure(o, &format!("{CLASSIC} server CPU %")).map(|s| s.median);
        let generator = figure(o, &format!("{CLASSIC} generator CPU %")).map(|s| s.median);
        let bound = match (server, generator) {
            (Some(s), _) if s >= 90.0 => "our server",
            (_, Some(g)) if g >= 90.0 => "load generator",
            (Some(_), Some(_)) => "round trips",
            _ => "–",
        };
        let _ = writeln!(
            out,
            "| {params} | {} | {} | {} | {} | {} | {} | {} | {bound} |",
            rate(CLASSIC),
            rate(CORE),
            latencies(o, &format!("{CLASSIC} "), &q),
            latencies(o, &format!("{CORE} "), &q),
            cell(figure(o, &cpu(CLASSIC))),
            cell(figure(o, &cpu(CORE))),
            ratio(o, &cpu(CLASSIC), &cpu(CORE)),
        );
    }
}

fn mixed_broadcast_section(out: &mut String, results: &[CaseResult]) {
    let cases = ours(results, "mixed broadcast");
    if cases.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Mixed broadcast: per receiver kind\n\n\
         Our server only. One Core JSON sender and M receivers, half Core JSON and half classic, \
         all on one server; the sender's fan-out takes turns between three phases, each measured \
         in every repetition: `Broadcast` to all receivers (*mixed*), and `GroupBroadcast` to the \
         group of each half *alone*. Server CPU per delivery per receiver kind comes from the \
         phases alone (one process serves both kinds, so the mixed phase's CPU cannot be split); \
         latency is send to receipt.\n"
    );
    let _ = writeln!(
        out,
        "| broadcast case | phase: receivers | deliveries/s | p50 / p99 µs | server CPU µs/delivery | server CPU % | generator CPU % |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let q = ["p50", "p99"];
    for (params, o) in cases {
        let c = |name: &str| cell(figure(o, name));
        let _ = writeln!(
            out,
            "| {params} | mixed: all | {} | – | {} | {} | {} |",
            c("deliveries/s"),
            c("server CPU µs/delivery"),
            c("server CPU %"),
            c("generator CPU %"),
        );
        for kind in [CORE, CLASSIC] {
            let _ = writeln!(
                out,
                "| | mixed: {kind} | {} | {} | – | – | – |",
                c(&format!("{kind} deliveries/s")),
                latencies(o, &format!("{kind} "), &q),
            );
        }
        for kind in [CORE, CLASSIC] {
            let _ = writeln!(
                out,
                "| | {kind} alone | {} | {} | {} | {} | {} |",
                c(&format!("{kind} alone: deliveries/s")),
                latencies(o, &format!("{kind} alone: "), &q),
                c(&format!("{kind} alone: server CPU µs/delivery")),
                c(&format!("{kind} alone: server CPU %")),
                c(&format!("{kind} alone: generator CPU %")),
            );
        }
        let cpu = |kind: &str| format!("{kind} alone: server CPU µs/delivery");
        let _ = writeln!(
            out,
            "| | {CLASSIC} / {CORE}, alone | | | {} | | |",
            ratio(o, &cpu(CLASSIC), &cpu(CORE)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(rate: f64, server_cpu: f64, gen_cpu: f64) -> Outcome {
        let mut out = Outcome::default();
        out.push("invocations/s", [rate * 0.9, rate, rate * 1.1]);
        out.push("p99 latency (µs)", [100.0]);
        out.push("server CPU %", [server_cpu]);
        out.push("messages per poll response", [1.0]);
        out.gen_cpu_pct = vec![gen_cpu];
        out
    }

    fn info() -> RunInfo {
        RunInfo {
            mode: "full",
            date: "today".into(),
            machine: "here".into(),
            servers: vec![ServerKind::Ours, ServerKind::AspNetCore],
            unavailable: vec![(ServerKind::Peer, "pip install failed".into())],
            method: "3 windows".into(),
            pinned: true,
            seconds: 1.0,
            skipped: Vec::new(),
        }
    }

    #[test]
    fn the_report_compares_ours_with_aspnetcore_and_says_what_bounded_each() {
        let results = [CaseResult {
            scenario: "long-polling echo",
            params: "N=100, JSON, 32 B".into(),
            label: ("N=100".into(), "lp 32B".into()),
            results: vec![
                (ServerKind::Ours, Ok(outcome(20_000.0, 50.0, 95.0))),
                (ServerKind::AspNetCore, Ok(outcome(5_000.0, 97.0, 20.0))),
            ],
            not_run: vec![(ServerKind::Ceiling, "raw WebSockets only")],
        }];
        let md = markdown(&info(), &results);
        assert!(
            md.contains("- **aiosignalr**: not run: pip install failed"),
            "{md}"
        );
        assert!(md.contains("- **ceiling**: not run (not selected)"));
        assert!(md.contains(
            "| Scenario | Parameters | Figure | ours | aspnetcore | ours / aspnetcore |"
        ));
        assert!(md.contains(
            "| long-polling echo | N=100, JSON, 32 B | invocations/s | 20,000 | 5,000 | 4.00× |"
        ));
        assert!(md.contains(
            "| long-polling echo | N=100, JSON, 32 B | bound by | load generator | server | |"
        ));
        // The load generator check names the generator-bound figure.
        assert!(md.contains("bounded: long-polling echo N=100, JSON, 32 B on ours"));
        assert!(md.contains("## SSE and long polling: messages per response"));
        assert!(md.contains(
            "| long-polling echo N=100, JSON, 32 B | messages per poll response | 1 | 1 |"
        ));
        assert!(md.contains("- long-polling echo not run on ceiling: raw WebSockets only"));
    }

    #[test]
    fn stateful_echo_is_set_beside_plain_echo_of_the_same_parameters() {
        let mut plain = outcome(10_000.0, 95.0, 50.0);
        plain.push("server CPU µs/invocation", [10.0]);
        let mut stateful = outcome(8_000.0, 95.0, 50.0);
        stateful.push("server CPU µs/invocation", [12.5]);
        let case = |scenario, outcome| CaseResult {
            scenario,
            params: "N=100, JSON, 32 B".into(),
            label: ("N=100".into(), "json 32B".into()),
            results: vec![(ServerKind::Ours, Ok(outcome))],
            not_run: vec![(ServerKind::AspNetCore, "no stateful reconnect")],
        };
        let mut results = vec![case("echo", plain), case(STATEFUL_ECHO, stateful)];
        results[0].not_run.clear();
        let md = markdown(&info(), &results);
        assert!(
            md.contains("## Stateful reconnect: its cost on echo"),
            "{md}"
        );
        assert!(
            md.contains(
                "| N=100, JSON, 32 B | 10,000 (9,000–11,000) | 8,000 (7,200–8,800) | 0.80× | 10 | 12.5 | 1.25× | – / 100 | – / 100 | server / server |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| stateful echo | N=100, JSON, 32 B | invocations/s | 8,000 | – | – |")
        );
        assert!(md.contains("- stateful echo not run on aspnetcore: no stateful reconnect"));
        // Without a stateful case there is no section.
        let md = markdown(&info(), &results[..1]);
        assert!(!md.contains("Stateful reconnect"));
    }

    #[test]
    fn ratios_need_both_sides() {
        let ours = outcome(300.0, 50.0, 50.0);
        let theirs = outcome(100.0, 50.0, 50.0);
        assert_eq!(
            ratio_of(Some(&ours), Some(&theirs), "invocations/s"),
            "3.00×"
        );
        assert_eq!(ratio_of(Some(&ours), None, "invocations/s"), "–");
        assert_eq!(ratio_of(Some(&ours), Some(&theirs), "no such figure"), "–");
        assert_eq!(bound_by(&Outcome::default()), "–");
        assert_eq!(bound_by(&outcome(1.0, 40.0, 30.0)), "round trips");
    }
}
