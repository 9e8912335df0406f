//! The scenarios with classic SignalR 2.x clients, for `bench-server` only (the ceiling and
//! aiosignalr have no classic endpoint):
//!
//! - **classic echo**: N classic and N Core JSON connections on one server, each with one `Echo`
//!   in flight, measured in turns (a Core window and a classic window, `reps` times, the order
//!   alternating), so that the two figures come from the same server process and machine state;
//! - **mixed broadcast**: one Core JSON sender, M receivers (half Core JSON, half classic), in
//!   three phases measured in turns: a `Broadcast` to all of them (mixed), and a
//!   `GroupBroadcast` to each half alone, which is what gives server CPU per delivery per
//!   receiver kind (the mixed phase's CPU cannot be split by kind).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use signalr_protocol::{HubMessage, HubProtocol, Payload};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

use crate::classic_conn::{ClassicConn, classic_template};
use crate::conn::{Conn, Result, Stamp, Template, now_ns};
use crate::proc::{ServerCommand, ServerProcess, rss_bytes};
use crate::scenarios::{
    BROADCAST_TIMEOUT, CONNECT_CONCURRENCY, CONNECT_TIMEOUT, Gate, MIB, Outcome, REPLY_TIMEOUT,
    Settings, Slot, broadcast_window, connect_many, echo_loop, reply_error,
};
use crate::stats::{Recorder, Window, window_of, windows};

/// Figure-name prefix of the classic connections.
pub const CLASSIC: &str = "classic";
/// Figure-name prefix of the ASP.NET Core JSON connections.
pub const CORE: &str = "Core JSON";

/// Time given to a set of loops that was just let go before a window opens.
fn settle(s: &Settings) -> Duration {
    (s.warmup / 2).min(Duration::from_millis(200))
}

/// Opens `n` started classic connections, at most [`CONNECT_CONCURRENCY`] at a time.
async fn connect_classic_many(addr: SocketAddr, n: usize) -> Result<Vec<ClassicConn>> {
    let results: Vec<Result<ClassicConn>> = stream::iter(0..n)
        .map(|_| async move {
            timeout(CONNECT_TIMEOUT, ClassicConn::connect(addr))
                .await
                .map_err(|_| "classic connect timed out")?
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut conns = Vec::with_capacity(n);
    for (i, result) in results.into_iter().enumerate() {
        conns.push(result.map_err(|err| format!("classic connection {i} of {n}: {err}"))?);
    }
    Ok(conns)
}

/// A note for the failures `recorder` counted, naming the connection kind.
fn note_errors(out: &mut Outcome, kind: &str, recorder: &Recorder) {
    let errors = recorder.error_count();
    if errors > 0 {
        let first = recorder
            .first_error()
            .map_or(String::new(), |e| format!(" (first: {e})"));
        out.notes
            .push(format!("{kind}: {errors} failed operations{first}"));
    }
}

// ---------------------------------------------------------------------------------------------
// classic echo

async fn classic_echo_loop(
    mut conn: ClassicConn,
    recorder: Rc<Recorder>,
    template: Rc<Template>,
    gate: Rc<Gate>,
) {
    let mut seq: u32 = 0;
    while !recorder.stopped() {
        gate.wait().await;
        seq = seq.wrapping_add(1);
        let frame = template.frame(&mut conn.wbuf, seq);
        let start = Instant::now();
        if let Err(err) = conn.send_frame(frame).await {
            recorder.failed(format_args!("send: {err}"));
            return;
        }
        match timeout(REPLY_TIMEOUT, conn.reply(&Stamp::id(seq))).await {
            Ok(Ok(Some(stamp))) if stamp.seq == seq => recorder.record(start.elapsed()),
            outcome => {
                if !recorder.stopped() {
                    recorder.failed(reply_error(outcome));
                }
                return;
            }
        }
    }
}

/// The echo figures of one connection kind, each name prefixed with `kind`.
fn echo_figures(out: &mut Outcome, kind: &str, w: &[Window]) {
    out.push(&format!("{kind} invocations/s"), w.iter().map(Window::rate));
    out.push(&format!("{kind} p50 latency (µs)"), w.iter().map(|w| w.p50));
    out.push(&format!("{kind} p99 latency (µs)"), w.iter().map(|w| w.p99));
    out.push(
        &format!("{kind} p99.9 latency (µs)"),
        w.iter().map(|w| w.p999),
    );
    out.push(
        &format!("{kind} server CPU µs/invocation"),
        w.iter().map(Window::cpu_per_op),
    );
    out.push(
        &format!("{kind} server CPU %"),
        w.iter().map(Window::server_cpu_pct),
    );
    out.push(
        &format!("{kind} generator CPU %"),
        w.iter().map(Window::gen_cpu_pct),
    );
}

/// classic echo: `n` classic and `n` Core JSON connections, each with one `Echo(payload)` of
/// `size` bytes in flight, the two kinds in turns.
pub async fn classic_echo(
    command: &ServerCommand,
    s: &Settings,
    n: usize,
    size: usize,
) -> Result<Outcome> {
    let server = ServerProcess::start(command).await?;
    let core_conns = connect_many(server.addr, n, HubProtocol::Json, |_| String::new()).await?;
    let classic_conns = connect_classic_many(server.addr, n).await?;
    let core = (Rc::new(Recorder::default()), Rc::new(Gate::default()));
    let classic = (Rc::new(Recorder::default()), Rc::new(Gate::default()));
    let core_template = Rc::new(Template::new(HubProtocol::Json, "Echo", true, &[], size)?);
    let classic_template = Rc::new(classic_template("Echo", true, &[], size)?);
    let mut tasks = JoinSet::new();
    for conn in core_conns {
        tasks.spawn_local(echo_loop(
            conn,
            core.0.clone(),
            core_template.clone(),
            Some(core.1.clone()),
        ));
    }
    for conn in classic_conns {
        tasks.spawn_local(classic_echo_loop(
            conn,
            classic.0.clone(),
            classic_template.clone(),
            classic.1.clone(),
        ));
    }
    for (_, gate) in [&core, &classic] {
        gate.set(true);
        sleep(s.warmup).await;
        gate.set(false);
    }
    let mut core_w = Vec::new();
    let mut classic_w = Vec::new();
    for rep in 0..s.reps {
        let mut turns = [(&core, &mut core_w), (&classic, &mut classic_w)];
        // Core first, then classic first, and so on: neither kind always follows the other.
        if rep % 2 == 1 {
            turns.reverse();
        }
        for ((recorder, gate), w) in turns {
            gate.set(true);
            sleep(settle(s)).await;
            w.extend(windows(recorder, server.pid, 1, s.window).await);
            gate.set(false);
        }
    }
    core.0.stop();
    classic.0.stop();
    tasks.shutdown().await;
    server.stop().await;
    let mut out = Outcome::default();
    echo_figures(&mut out, CLASSIC, &classic_w);
    echo_figures(&mut out, CORE, &core_w);
    out.gen_cpu_pct
        .extend(classic_w.iter().map(Window::gen_cpu_pct));
    note_errors(&mut out, CLASSIC, &classic.0);
    note_errors(&mut out, CORE, &core.0);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// mixed broadcast

/// What the sender sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `Broadcast`: every receiver, both kinds.
    Mixed,
    /// `GroupBroadcast` to the group of the Core receivers.
    CoreAlone,
    /// `GroupBroadcast` to the group of the classic receivers.
    ClassicAlone,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Mixed, Phase::CoreAlone, Phase::ClassicAlone];

    fn index(self) -> usize {
        self as usize
    }
}

/// Group names of the two halves.
const CORE_GROUP: &str = "core";
const CLASSIC_GROUP: &str = "classic";

struct Mixed {
    core: Recorder,
    classic: Recorder,
    slots: RefCell<Vec<Slot>>,
    /// Receivers that must get a broadcast of the current phase before its slot is free.
    expected: Cell<usize>,
    notify: Notify,
    /// The phase asked for, and the one the sender is in (it switches between two broadcasts).
    wanted: Cell<Phase>,
    current: Cell<Option<Phase>>,
    /// Deliveries that did not arrive within [`BROADCAST_TIMEOUT`].
    lost: Cell<u64>,
}

impl Mixed {
    fn stopped(&self) -> bool {
        self.core.stopped()
    }

    fn stop(&self) {
        self.core.stop();
        self.classic.stop();
    }

    /// A broadcast reached one receiver whose kind records on `recorder`.
    fn delivered(&self, recorder: &Recorder, stamp: Stamp) {
        recorder.record_ns(now_ns().saturating_sub(stamp.sent_ns));
        let mut slots = self.slots.borrow_mut();
        let len = slots.len();
        let slot = &mut slots[stamp.seq as usize % len];
        if slot.seq == stamp.seq && !slot.done {
            slot.count += 1;
            if slot.count >= self.expected.get() {
                slot.done = true;
                self.notify.notify_one();
            }
        }
    }

    /// Waits (until `deadline`) for `ready` to hold, counting what is still missing as lost
    /// when the time runs out.
    async fn wait_slots(&self, deadline: tokio::time::Instant, ready: impl Fn(&[Slot]) -> bool) {
        loop {
            if ready(&self.slots.borrow()) || self.stopped() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let expected = self.expected.get();
                let missing: usize = self
                    .slots
                    .borrow()
                    .iter()
                    .filter(|s| s.seq != 0 && !s.done)
                    .map(|s| expected - s.count.min(expected))
                    .sum();
                self.lost.set(self.lost.get() + missing as u64);
                return;
            }
            let _ = tokio::time::timeout_at(deadline, self.notify.notified()).await;
        }
    }
}

fn free(slot: &Slot) -> bool {
    slot.seq == 0 || slot.done
}

async fn mixed_send_loop(
    mut conn: Conn,
    state: Rc<Mixed>,
    templates: [Template; 3],
    expected: [usize; 3],
) {
    let mut seq: u32 = 0;
    let mut phase: Option<Phase> = None;
    while !state.stopped() {
        let wanted = state.wanted.get();
        if phase != Some(wanted) {
            // The broadcasts of the previous phase arrive (or time out) before the next begins.
            let deadline = tokio::time::Instant::now() + BROADCAST_TIMEOUT;
            state
                .wait_slots(deadline, |slots| slots.iter().all(free))
                .await;
            state.slots.borrow_mut().fill(Slot::default());
            state.expected.set(expected[wanted.index()]);
            phase = Some(wanted);
            state.current.set(phase);
        }
        seq = seq.checked_add(1).unwrap_or(1);
        let index = seq as usize % state.slots.borrow().len();
        let deadline = tokio::time::Instant::now() + BROADCAST_TIMEOUT;
        state
            .wait_slots(deadline, |slots| free(&slots[index]))
            .await;
        state.slots.borrow_mut()[index] = Slot {
            seq,
            count: 0,
            done: false,
        };
        let frame = templates[wanted.index()].frame(&mut conn.wbuf, seq);
        if let Err(err) = conn.send_frame(frame).await {
            if !state.stopped() {
                state.core.failed(format_args!("sender: {err}"));
            }
            return;
        }
    }
}

async fn core_receive_loop(mut conn: Conn, state: Rc<Mixed>) {
    while !state.stopped() {
        match conn.next_message().await {
            Ok(HubMessage::Invocation(invocation)) => {
                if let Some(stamp) = invocation.arguments.last().and_then(Stamp::read) {
                    state.delivered(&state.core, stamp);
                }
            }
            Ok(_) => {}
            Err(err) => {
                if !state.stopped() {
                    state.core.failed(format_args!("receiver: {err}"));
                }
                return;
            }
        }
    }
}

async fn classic_receive_loop(mut conn: ClassicConn, state: Rc<Mixed>) {
    while !state.stopped() {
        if let Err(err) = conn
            .receive(|stamp| state.delivered(&state.classic, stamp))
            .await
        {
            if !state.stopped() {
                state.classic.failed(format_args!("receiver: {err}"));
            }
            return;
        }
    }
}

/// Asks the sender for `phase` and waits until it switched.
async fn switch(state: &Mixed, phase: Phase) -> Result<()> {
    state.wanted.set(phase);
    let asked = Instant::now();
    while state.current.get() != Some(phase) {
        if state.stopped() {
            return Err("stopped while switching phases".into());
        }
        if asked.elapsed() > 2 * BROADCAST_TIMEOUT {
            return Err(format!("the sender did not switch to {phase:?}").into());
        }
        sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Windows of one phase: per repetition, the Core receivers' window and the classic ones'.
#[derive(Default)]
struct PhaseWindows {
    core: Vec<Window>,
    classic: Vec<Window>,
}

impl PhaseWindows {
    fn total_rate(&self) -> impl Iterator<Item = f64> + '_ {
        self.core
            .iter()
            .zip(&self.classic)
            .map(|(a, b)| (a.count + b.count) as f64 / a.secs.max(1e-9))
    }

    fn cpu_per_delivery(&self) -> impl Iterator<Item = f64> + '_ {
        self.core.iter().zip(&self.classic).map(|(a, b)| {
            let count = a.count + b.count;
            if count == 0 {
                f64::NAN
            } else {
                a.server_cpu_us / count as f64
            }
        })
    }
}

/// mixed broadcast: one Core JSON sender, `receivers` receivers (half Core JSON, half classic),
/// 32-byte payloads, the three [`Phase`]s in turns.
pub async fn mixed_broadcast(
    command: &ServerCommand,
    s: &Settings,
    receivers: usize,
) -> Result<Outcome> {
    let server = ServerProcess::start(command).await?;
    let addr = server.addr;
    let n_core = receivers / 2;
    let n_classic = receivers - n_core;
    let mut core_conns = connect_many(addr, n_core, HubProtocol::Json, |_| String::new()).await?;
    let mut classic_conns = connect_classic_many(addr, n_classic).await?;
    let sender = connect_many(addr, 1, HubProtocol::Json, |_| String::new())
        .await?
        .pop()
        .ok_or("no sender")?;
    let joins: Vec<Result<()>> = stream::iter(core_conns.iter_mut())
        .map(|c| c.invoke("j", "JoinGroup", vec![Payload::from_value(CORE_GROUP)]))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    joins.into_iter().collect::<Result<Vec<()>>>()?;
    let joins: Vec<Result<()>> = stream::iter(classic_conns.iter_mut())
        .map(|c| c.invoke("j", "JoinGroup", &[CLASSIC_GROUP]))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    joins.into_iter().collect::<Result<Vec<()>>>()?;

    const SIZE: usize = 32;
    let json = HubProtocol::Json;
    let templates = [
        Template::new(json, "Broadcast", false, &[], SIZE)?,
        Template::new(json, "GroupBroadcast", false, &[CORE_GROUP], SIZE)?,
        Template::new(json, "GroupBroadcast", false, &[CLASSIC_GROUP], SIZE)?,
    ];
    let expected = [receivers, n_core, n_classic];
    let state = Rc::new(Mixed {
        core: Recorder::default(),
        classic: Recorder::default(),
        slots: RefCell::new(vec![Slot::default(); broadcast_window(receivers)]),
        expected: Cell::new(receivers),
        notify: Notify::new(),
        wanted: Cell::new(Phase::CoreAlone),
        current: Cell::new(None),
        lost: Cell::new(0),
    });
    let mut tasks = JoinSet::new();
    for conn in core_conns {
        tasks.spawn_local(core_receive_loop(conn, state.clone()));
    }
    for conn in classic_conns {
        tasks.spawn_local(classic_receive_loop(conn, state.clone()));
    }
    tasks.spawn_local(mixed_send_loop(sender, state.clone(), templates, expected));
    let result = async {
        // Warm every phase up, the mixed one last and longest.
        for (phase, length) in [
            (Phase::CoreAlone, settle(s)),
            (Phase::ClassicAlone, settle(s)),
            (Phase::Mixed, s.warmup),
        ] {
            switch(&state, phase).await?;
            sleep(length).await;
        }
        let mut measured: [PhaseWindows; 3] = Default::default();
        for _ in 0..s.reps {
            for phase in Phase::ALL {
                switch(&state, phase).await?;
                sleep(settle(s)).await;
                let mut w = window_of(&[&state.core, &state.classic], &[server.pid], s.window)
                    .await
                    .into_iter();
                let slot = &mut measured[phase.index()];
                slot.core.extend(w.next());
                slot.classic.extend(w.next());
            }
        }
        Ok::<_, crate::conn::Error>(measured)
    }
    .await;
    let rss = rss_bytes(server.pid) as f64 / MIB;
    state.stop();
    tasks.shutdown().await;
    server.stop().await;
    let [mixed, core_alone, classic_alone] = result?;

    let mut out = Outcome::default();
    out.push("deliveries/s", mixed.total_rate());
    out.push("server CPU µs/delivery", mixed.cpu_per_delivery());
    out.push(
        "server CPU %",
        mixed.core.iter().map(Window::server_cpu_pct),
    );
    out.push(
        "generator CPU %",
        mixed.core.iter().map(Window::gen_cpu_pct),
    );
    for (kind, w) in [(CORE, &mixed.core), (CLASSIC, &mixed.classic)] {
        out.push(&format!("{kind} deliveries/s"), w.iter().map(Window::rate));
        out.push(&format!("{kind} p50 latency (µs)"), w.iter().map(|w| w.p50));
        out.push(&format!("{kind} p99 latency (µs)"), w.iter().map(|w| w.p99));
    }
    for (kind, w) in [(CORE, &core_alone.core), (CLASSIC, &classic_alone.classic)] {
        out.push(
            &format!("{kind} alone: deliveries/s"),
            w.iter().map(Window::rate),
        );
        out.push(
            &format!("{kind} alone: p50 latency (µs)"),
            w.iter().map(|w| w.p50),
        );
        out.push(
            &format!("{kind} alone: p99 latency (µs)"),
            w.iter().map(|w| w.p99),
        );
        out.push(
            &format!("{kind} alone: server CPU µs/delivery"),
            w.iter().map(Window::cpu_per_op),
        );
        out.push(
            &format!("{kind} alone: server CPU %"),
            w.iter().map(Window::server_cpu_pct),
        );
        out.push(
            &format!("{kind} alone: generator CPU %"),
            w.iter().map(Window::gen_cpu_pct),
        );
    }
    out.push("server RSS at the end (MiB)", [rss]);
    out.gen_cpu_pct
        .extend(mixed.core.iter().map(Window::gen_cpu_pct));
    // A receiver that got a delivery of the other kind's phase would show here.
    let strays = core_alone.classic.iter().map(|w| w.count).sum::<u64>()
        + classic_alone.core.iter().map(|w| w.count).sum::<u64>();
    if strays > 0 {
        out.notes.push(format!(
            "{strays} deliveries reached receivers outside the group sent to"
        ));
    }
    if state.lost.get() > 0 {
        out.notes.push(format!(
            "{} deliveries did not arrive within {} s",
            state.lost.get(),
            BROADCAST_TIMEOUT.as_secs()
        ));
    }
    note_errors(&mut out, CORE, &state.core);
    note_errors(&mut out, CLASSIC, &state.classic);
    Ok(out)
}
