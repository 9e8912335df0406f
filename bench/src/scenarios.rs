//! The scenarios. Each starts its own server process, connects, warms up, measures `reps`
//! back-to-back windows (or, for idle density, `reps` fresh servers) and stops everything; every
//! loop ends on the recorder's stop flag or a timeout.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use signalr_protocol::{HubMessage, HubProtocol, Payload};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, sleep, timeout};

use crate::conn::{Conn, Result, Stamp, Template, Transport, acks_sent, negotiate, now_ns};
use crate::http_conn;
use crate::proc::{ServerCommand, ServerProcess, cpu_us, rss_bytes};
use crate::servers::ServerKind;
use crate::stats::{Recorder, Window, windows};

/// How long one invocation may take before the connection counts as failed.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection attempt may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections opened at once while setting a scenario up.
pub(crate) const CONNECT_CONCURRENCY: usize = 64;
/// Broadcasts in flight at once (the sender waits until the oldest reached every receiver):
/// 8 for small fan-outs, fewer for large ones so about 1,000 deliveries (at least two broadcasts)
/// are under way; more would only add queueing delay to the latency figures.
pub(crate) fn broadcast_window(receivers: usize) -> usize {
    1000usize.div_ceil(receivers.max(1)).clamp(2, 8)
}
/// How long a broadcast may take to reach every receiver before it counts as lost.
pub(crate) const BROADCAST_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const MIB: f64 = 1024.0 * 1024.0;
/// Figure name: the load generator's CPU use in a window, in % of its core.
pub(crate) const GEN_CPU: &str = "load generator CPU %";

/// Durations of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Warm-up before the first window.
    pub warmup: Duration,
    /// Length of one measurement window.
    pub window: Duration,
    /// Windows (repetitions) per figure.
    pub reps: usize,
    /// Window length of the fixed-rate scenario (1 message/s per connection needs longer ones).
    pub fixed_window: Duration,
    /// Measured idle time of the idle-density scenario.
    pub idle_window: Duration,
    /// Window length while the slow consumer stalls.
    pub stall_window: Duration,
    /// How much longer the slow consumer stalls after its windows (to fill its queue).
    pub stall_extra: Duration,
}

/// What one scenario run on one server produced.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Figures: name and one value per repetition.
    pub figures: Vec<(String, Vec<f64>)>,
    /// Remarks (errors, slow-consumer fate).
    pub notes: Vec<String>,
    /// Server RSS over time (seconds, MiB), for the slow consumer.
    pub series: Vec<(f64, f64)>,
    /// Load generator CPU use (% of its core) per window.
    pub gen_cpu_pct: Vec<f64>,
}

impl Outcome {
    /// Adds the values, notes, series and load generator figures of `other` (another run of the
    /// same case) to these.
    pub(crate) fn extend(&mut self, other: Outcome) {
        for (name, values) in other.figures {
            match self.figures.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => mine.extend(values),
                None => self.figures.push((name, values)),
            }
        }
        self.notes.extend(other.notes);
        self.series.extend(other.series);
        self.gen_cpu_pct.extend(other.gen_cpu_pct);
    }

    pub(crate) fn push(&mut self, name: &str, values: impl IntoIterator<Item = f64>) {
        self.figures
            .push((name.to_owned(), values.into_iter().collect()));
    }

    pub(crate) fn windows(&mut self, w: &[Window], ops: &str, unit_op: &str) {
        self.push(&format!("{ops}/s"), w.iter().map(Window::rate));
        self.push("p50 latency (µs)", w.iter().map(|w| w.p50));
        self.push("p99 latency (µs)", w.iter().map(|w| w.p99));
        self.push(
            &format!("server CPU µs/{unit_op}"),
            w.iter().map(Window::cpu_per_op),
        );
        self.push("server CPU %", w.iter().map(Window::server_cpu_pct));
        self.push(GEN_CPU, w.iter().map(Window::gen_cpu_pct));
        self.gen_cpu_pct.extend(w.iter().map(Window::gen_cpu_pct));
    }

    pub(crate) fn errors(&mut self, recorder: &Recorder) {
        let errors = recorder.error_count();
        if errors > 0 {
            let first = recorder
                .first_error()
                .map_or(String::new(), |e| format!(" (first: {e})"));
            self.notes
                .push(format!("{errors} failed operations{first}"));
        }
    }
}

/// Opens `n` WebSocket connections, at most [`CONNECT_CONCURRENCY`] at a time; `query(i)` is
/// the query string of connection `i`.
pub(crate) async fn connect_many(
    addr: SocketAddr,
    n: usize,
    protocol: HubProtocol,
    query: impl Fn(usize) -> String,
) -> Result<Vec<Conn>> {
    connect_many_over(addr, n, protocol, Transport::WebSockets, false, query).await
}

/// [`connect_many`] over `transport`; with `receive_only`, each SSE or long-polling connection
/// closes its POST connection as soon as it is connected (see [`Conn::release_sender`]), so
/// that 10,000 of them hold 10,000 sockets, not 20,000.
pub(crate) async fn connect_many_over(
    addr: SocketAddr,
    n: usize,
    protocol: HubProtocol,
    transport: Transport,
    receive_only: bool,
    query: impl Fn(usize) -> String,
) -> Result<Vec<Conn>> {
    let results: Vec<Result<Conn>> = stream::iter(0..n)
        .map(|i| {
            let q = query(i);
            async move {
                let mut conn = timeout(
                    CONNECT_TIMEOUT,
                    Conn::connect_over(addr, &q, protocol, transport),
                )
                .await
                .map_err(|_| "connect timed out")??;
                if receive_only {
                    conn.release_sender();
                }
                Ok(conn)
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut conns = Vec::with_capacity(n);
    for (i, result) in results.into_iter().enumerate() {
        conns.push(result.map_err(|err| format!("connection {i} of {n}: {err}"))?);
    }
    Ok(conns)
}

/// Opens `n` WebSocket connections with stateful reconnect on ([`Conn::connect_stateful`]), at
/// most [`CONNECT_CONCURRENCY`] at a time.
pub(crate) async fn connect_many_stateful(
    addr: SocketAddr,
    n: usize,
    protocol: HubProtocol,
) -> Result<Vec<Conn>> {
    let results: Vec<Result<Conn>> = stream::iter(0..n)
        .map(|_| async move {
            timeout(CONNECT_TIMEOUT, Conn::connect_stateful(addr, protocol))
                .await
                .map_err(|_| "connect timed out")?
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut conns = Vec::with_capacity(n);
    for (i, result) in results.into_iter().enumerate() {
        conns.push(result.map_err(|err| format!("connection {i} of {n}: {err}"))?);
    }
    Ok(conns)
}

/// Reads and drops everything a connection receives (pings) until the task is aborted; a
/// long-polling connection keeps one poll in flight.
pub(crate) async fn idle_reader(mut conn: Conn) {
    let _ = conn.drain(Duration::from_secs(3600)).await;
}

/// The figure of how many hub messages a server put in one poll response (long polling) or one
/// event (SSE); `None` over WebSockets.
pub(crate) fn batching_figure(transport: Transport) -> Option<&'static str> {
    match transport {
        Transport::WebSockets => None,
        Transport::ServerSentEvents => Some("messages per SSE event"),
        Transport::LongPolling => Some("messages per poll response"),
    }
}

/// [`windows`], with the hub messages per poll response or SSE event of each window (all the
/// load generator's connections of `transport` together).
async fn windows_batched(
    recorder: &Recorder,
    server_pid: u32,
    s: &Settings,
    transport: Transport,
) -> (Vec<Window>, Vec<f64>) {
    let mut out = Vec::with_capacity(s.reps);
    let mut batching = Vec::with_capacity(s.reps);
    for _ in 0..s.reps {
        let (units0, messages0) = http_conn::batching(transport);
        out.extend(windows(recorder, server_pid, 1, s.window).await);
        let (units1, messages1) = http_conn::batching(transport);
        batching.push(if units1 > units0 {
            (messages1 - messages0) as f64 / (units1 - units0) as f64
        } else {
            f64::NAN
        });
    }
    (out, batching)
}

// ---------------------------------------------------------------------------------------------
// echo

/// echo: `n` connections over `transport`, each with one `Echo(payload)` invocation in flight;
/// with `stateful`, WebSocket connections with stateful reconnect on
/// ([`Conn::connect_stateful`]: negotiated, handshake version 2, the server's messages
/// acknowledged).
pub async fn echo(
    command: &ServerCommand,
    s: &Settings,
    n: usize,
    protocol: HubProtocol,
    size: usize,
    transport: Transport,
    stateful: bool,
) -> Result<Outcome> {
    let server = ServerProcess::start(command).await?;
    let conns = if stateful {
        if transport != Transport::WebSockets {
            return Err("stateful reconnect is a WebSocket feature".into());
        }
        connect_many_stateful(server.addr, n, protocol).await?
    } else {
        connect_many_over(server.addr, n, protocol, transport, false, |_| {
            String::new()
        })
        .await?
    };
    let recorder = Rc::new(Recorder::default());
    let template = Rc::new(Template::new(protocol, "Echo", true, &[], size)?);
    let mut tasks = JoinSet::new();
    for conn in conns {
        tasks.spawn_local(echo_loop(conn, recorder.clone(), template.clone(), None));
    }
    sleep(s.warmup).await;
    let acks0 = acks_sent();
    let started = Instant::now();
    let (w, batching) = windows_batched(&recorder, server.pid, s, transport).await;
    let (acks, acked) = {
        let (acks1, acked1) = acks_sent();
        (acks1 - acks0.0, acked1 - acks0.1)
    };
    let secs = started.elapsed().as_secs_f64();
    recorder.stop();
    tasks.shutdown().await;
    server.stop().await;
    let mut out = Outcome::default();
    out.windows(&w, "invocations", "invocation");
    out.push("p99.9 latency (µs)", w.iter().map(|w| w.p999));
    if let Some(name) = batching_figure(transport) {
        out.push(name, batching);
    }
    if stateful {
        out.notes.push(format!(
            "the load generator sent {:.2} Acks per connection-second over the windows, each acknowledging {:.0} messages on average",
            acks as f64 / (n as f64 * secs),
            acked as f64 / acks.max(1) as f64
        ));
    }
    out.errors(&recorder);
    Ok(out)
}

/// Why an echo reply did not count.
pub(crate) fn reply_error(
    outcome: std::result::Result<Result<Option<Stamp>>, tokio::time::error::Elapsed>,
) -> String {
    match outcome {
        Err(_) => "no reply within 10 s".to_owned(),
        Ok(Err(err)) => format!("reply: {err}"),
        Ok(Ok(None)) => "the reply carried no payload".to_owned(),
        Ok(Ok(Some(_))) => "the reply carried another payload".to_owned(),
    }
}

/// Lets a set of loops run or park, so that two sets take turns on one server (paired
/// measurements). Parked loops cost nothing: they wait on a [`Notify`].
#[derive(Default)]
pub(crate) struct Gate {
    open: Cell<bool>,
    changed: Notify,
}

impl Gate {
    /// Opens or closes the gate; a loop in the middle of an operation finishes it first.
    pub(crate) fn set(&self, open: bool) {
        self.open.set(open);
        self.changed.notify_waiters();
    }

    /// Returns once the gate is open.
    pub(crate) async fn wait(&self) {
        loop {
            // Registered before the check, so an opening in between is not missed.
            let changed = self.changed.notified();
            if self.open.get() {
                return;
            }
            changed.await;
        }
    }
}

/// One `Echo` in flight on `conn`, recorded on `recorder`; with a gate, only while it is open.
pub(crate) async fn echo_loop(
    mut conn: Conn,
    recorder: Rc<Recorder>,
    template: Rc<Template>,
    gate: Option<Rc<Gate>>,
) {
    let mut seq: u32 = 0;
    while !recorder.stopped() {
        if let Some(gate) = &gate {
            gate.wait().await;
        }
        seq = seq.wrapping_add(1);
        let frame = template.frame(&mut conn.wbuf, seq);
        let start = Instant::now();
        match timeout(REPLY_TIMEOUT, conn.round_trip(frame, &Stamp::id(seq))).await {
            Ok(Ok((Some(stamp), at))) if stamp.seq == seq => {
                recorder.record(at.saturating_duration_since(start));
            }
            outcome => {
                if !recorder.stopped() {
                    recorder.failed(reply_error(outcome.map(|r| r.map(|(stamp, _)| stamp))));
                }
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// broadcast, group, slow consumer

/// A broadcast run.
#[derive(Debug, Clone, Copy)]
pub struct BroadcastSpec {
    /// Receivers (group members, for a group send).
    pub receivers: usize,
    /// Hub protocol of every connection.
    pub protocol: HubProtocol,
    /// Payload size in bytes.
    pub size: usize,
    /// For a group send: all connections, members and sender included.
    pub total: Option<usize>,
    /// Whether one receiver stops reading (slow consumer; WebSockets only).
    pub slow: bool,
    /// The transport of every connection (the sender's too).
    pub transport: Transport,
    /// Broadcasts in flight; `None`: [`broadcast_window`] of the receivers.
    pub in_flight: Option<usize>,
}

impl BroadcastSpec {
    /// Broadcasts in flight at once.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .unwrap_or_else(|| broadcast_window(self.receivers))
            .max(1)
    }
}

/// One broadcast in flight: its sequence number and how many receivers got it.
#[derive(Clone, Copy, Default)]
pub(crate) struct Slot {
    pub(crate) seq: u32,
    pub(crate) count: usize,
    pub(crate) done: bool,
}

pub(crate) struct Broadcast {
    pub(crate) recorder: Recorder,
    pub(crate) slots: RefCell<Vec<Slot>>,
    /// Receivers that must get a broadcast before its slot is free again.
    pub(crate) expected: usize,
    pub(crate) notify: Notify,
}

impl Broadcast {
    fn delivered(&self, stamp: Stamp) {
        self.recorder
            .record_ns(now_ns().saturating_sub(stamp.sent_ns));
        let mut slots = self.slots.borrow_mut();
        let len = slots.len();
        let slot = &mut slots[stamp.seq as usize % len];
        if slot.seq == stamp.seq && !slot.done {
            slot.count += 1;
            if slot.count >= self.expected {
                slot.done = true;
                self.notify.notify_one();
            }
        }
    }
}

/// The slow receiver's switches and fate.
#[derive(Default)]
pub(crate) struct Victim {
    stall: Cell<bool>,
    resume: Cell<bool>,
    fate: Cell<Option<(bool, u64)>>,
}

pub(crate) async fn receive_loop(mut conn: Conn, state: Rc<Broadcast>, victim: Option<Rc<Victim>>) {
    loop {
        if state.recorder.stopped() {
            return;
        }
        if let Some(victim) = &victim
            && victim.stall.get()
        {
            while !victim.resume.get() && !state.recorder.stopped() {
                sleep(Duration::from_millis(5)).await;
            }
            let fate = conn.drain(Duration::from_secs(3)).await;
            victim.fate.set(Some(fate));
            return;
        }
        match conn.next_message().await {
            Ok(HubMessage::Invocation(invocation)) => {
                if victim.is_none()
                    && let Some(stamp) = invocation.arguments.last().and_then(Stamp::read)
                {
                    state.delivered(stamp);
                }
            }
            Ok(_) => {}
            Err(err) => {
                if !state.recorder.stopped() {
                    state.recorder.failed(format_args!("receiver: {err}"));
                }
                return;
            }
        }
    }
}

pub(crate) async fn send_loop(mut conn: Conn, state: Rc<Broadcast>, template: Template) {
    let mut seq: u32 = 0;
    while !state.recorder.stopped() {
        seq = seq.checked_add(1).unwrap_or(1);
        let index = seq as usize % state.slots.borrow().len();
        let deadline = tokio::time::Instant::now() + BROADCAST_TIMEOUT;
        loop {
            let slot = state.slots.borrow()[index];
            if slot.seq == 0 || slot.done || state.recorder.stopped() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                state
                    .recorder
                    .errors((state.expected - slot.count.min(state.expected)) as u64);
                break;
            }
            let _ = tokio::time::timeout_at(deadline, state.notify.notified()).await;
        }
        state.slots.borrow_mut()[index] = Slot {
            seq,
            count: 0,
            done: false,
        };
        let frame = template.frame(&mut conn.wbuf, seq);
        if let Err(err) = conn.send_frame(frame).await {
            if !state.recorder.stopped() {
                state.recorder.failed(format_args!("sender: {err}"));
            }
            return;
        }
    }
}

/// broadcast / group / slow consumer: one sender, `receivers` receivers.
pub async fn broadcast(
    kind: ServerKind,
    command: &ServerCommand,
    s: &Settings,
    spec: BroadcastSpec,
) -> Result<Outcome> {
    let server = ServerProcess::start(command).await?;
    let addr = server.addr;
    let ceiling = kind == ServerKind::Ceiling;
    // The ceiling fans out within a room named in the query; hub servers use the hub methods.
    let member_query = |_| {
        if ceiling {
            "?room=b".to_owned()
        } else {
            String::new()
        }
    };
    let mut receivers = Vec::with_capacity(spec.receivers);
    if spec.slow {
        // The receiver that will stall, with a small socket buffer so that it falls behind within
        // seconds rather than after the kernel buffered megabytes for it.
        let q = member_query(0);
        receivers.push(Conn::connect_with(addr, &q, spec.protocol, Some(8 * 1024)).await?);
    }
    let rest = spec.receivers - receivers.len();
    // Receivers send nothing after their handshake: no POST connection held open.
    receivers.extend(
        connect_many_over(
            addr,
            rest,
            spec.protocol,
            spec.transport,
            true,
            member_query,
        )
        .await?,
    );
    let mut sender = connect_many_over(addr, 1, spec.protocol, spec.transport, false, member_query)
        .await?
        .pop()
        .ok_or("no sender")?;
    let mut tasks = JoinSet::new();
    if let Some(mut incoming) = sender.take_receiver() {
        // The sender's own SSE stream or poll loop (pings only: a broadcast goes to the others).
        tasks.spawn_local(async move { incoming.drain(&mut 0).await });
    }
    let template = match spec.total {
        Some(total) => {
            let others = total.saturating_sub(spec.receivers + 1);
            let idle_query = |_| {
                if ceiling {
                    "?room=idle".to_owned()
                } else {
                    String::new()
                }
            };
            for conn in connect_many(addr, others, spec.protocol, idle_query).await? {
                tasks.spawn_local(idle_reader(conn));
            }
            if !ceiling {
                let joins = receivers
                    .iter_mut()
                    .chain(std::iter::once(&mut sender))
                    .map(|c| c.invoke("j", "JoinGroup", vec![Payload::from_value("g")]));
                let results: Vec<Result<()>> = stream::iter(joins)
                    .buffer_unordered(CONNECT_CONCURRENCY)
                    .collect()
                    .await;
                results.into_iter().collect::<Result<Vec<()>>>()?;
            }
            Template::new(spec.protocol, "GroupBroadcast", false, &["g"], spec.size)?
        }
        None => Template::new(spec.protocol, "Broadcast", false, &[], spec.size)?,
    };
    let expected = spec.receivers - usize::from(spec.slow);
    let state = Rc::new(Broadcast {
        recorder: Recorder::default(),
        slots: RefCell::new(vec![Slot::default(); spec.in_flight()]),
        expected,
        notify: Notify::new(),
    });
    let victim = Rc::new(Victim::default());
    for (i, conn) in receivers.into_iter().enumerate() {
        let victim = (spec.slow && i == 0).then(|| victim.clone());
        tasks.spawn_local(receive_loop(conn, state.clone(), victim));
    }
    // RSS over time, every 200 ms, until the end of the run.
    let rss = Rc::new(RefCell::new(Vec::new()));
    let sampler = {
        let rss = rss.clone();
        let state = state.clone();
        let pid = server.pid;
        let start = Instant::now();
        tokio::task::spawn_local(async move {
            while !state.recorder.stopped() {
                rss.borrow_mut()
                    .push((start.elapsed().as_secs_f64(), rss_bytes(pid) as f64 / MIB));
                sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tasks.spawn_local(send_loop(sender, state.clone(), template));
    sleep(s.warmup).await;
    let mut out = Outcome::default();
    if spec.slow {
        let before = windows(&state.recorder, server.pid, 1, s.window).await;
        let rss_before = rss_bytes(server.pid) as f64 / MIB;
        victim.stall.set(true);
        let during = windows(&state.recorder, server.pid, s.reps, s.stall_window).await;
        // Keep stalling a while longer, so that the queue overflows even on a slow server.
        sleep(s.stall_extra).await;
        let rss_end = rss_bytes(server.pid) as f64 / MIB;
        victim.resume.set(true);
        let waited = Instant::now();
        while victim.fate.get().is_none() && waited.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(20)).await;
        }
        state.recorder.stop();
        out.push(
            "deliveries/s before the stall",
            before.iter().map(Window::rate),
        );
        out.push(
            "deliveries/s during the stall",
            during.iter().map(Window::rate),
        );
        out.push("p99 latency during (µs)", during.iter().map(|w| w.p99));
        out.push(
            "server CPU % before",
            before.iter().map(Window::server_cpu_pct),
        );
        out.push(
            "server CPU % during",
            during.iter().map(Window::server_cpu_pct),
        );
        let max = rss.borrow().iter().map(|&(_, m)| m).fold(0.0, f64::max);
        out.push("server RSS before (MiB)", [rss_before]);
        out.push("server RSS max (MiB)", [max]);
        out.push("server RSS at the end of the stall (MiB)", [rss_end]);
        out.gen_cpu_pct
            .extend(during.iter().map(Window::gen_cpu_pct));
        out.notes.push(match victim.fate.get() {
            Some((true, frames)) => format!(
                "the stalled receiver was closed by the server (it found {frames} frames buffered before the close)"
            ),
            Some((false, frames)) => format!(
                "the stalled receiver was still open 3 s after it resumed ({frames} frames read)"
            ),
            None => "the stalled receiver did not report".to_owned(),
        });
    } else {
        let (w, batching) = windows_batched(&state.recorder, server.pid, s, spec.transport).await;
        out.windows(&w, "deliveries", "delivery");
        if let Some(name) = batching_figure(spec.transport) {
            out.push(name, batching);
        }
    }
    state.recorder.stop();
    let _ = sampler.await;
    out.series = rss.borrow().clone();
    tasks.shutdown().await;
    server.stop().await;
    out.errors(&state.recorder);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// fixed rate

/// fixed rate: `n` connections, each sending one `Echo(payload)` per second.
pub async fn fixed_rate(
    command: &ServerCommand,
    s: &Settings,
    n: usize,
    protocol: HubProtocol,
    size: usize,
) -> Result<Outcome> {
    let server = ServerProcess::start(command).await?;
    let conns = connect_many(server.addr, n, protocol, |_| String::new()).await?;
    let recorder = Rc::new(Recorder::default());
    let template = Rc::new(Template::new(protocol, "Echo", true, &[], size)?);
    let mut tasks = JoinSet::new();
    let start = tokio::time::Instant::now();
    for (i, conn) in conns.into_iter().enumerate() {
        let offset = Duration::from_secs(1).mul_f64(i as f64 / n as f64);
        tasks.spawn_local(fixed_loop(
            conn,
            recorder.clone(),
            template.clone(),
            start + offset,
        ));
    }
    sleep(s.warmup.max(Duration::from_millis(1100))).await;
    let w = windows(&recorder, server.pid, s.reps, s.fixed_window).await;
    recorder.stop();
    tasks.shutdown().await;
    server.stop().await;
    let mut out = Outcome::default();
    out.windows(&w, "messages", "message");
    out.push("p99.9 latency (µs)", w.iter().map(|w| w.p999));
    out.errors(&recorder);
    Ok(out)
}

async fn fixed_loop(
    mut conn: Conn,
    recorder: Rc<Recorder>,
    template: Rc<Template>,
    first: tokio::time::Instant,
) {
    let mut ticks = tokio::time::interval_at(first, Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut seq: u32 = 0;
    loop {
        // Latency counts from the scheduled time, so a late send is not hidden
        // (no coordinated omission).
        let scheduled = ticks.tick().await;
        if recorder.stopped() {
            return;
        }
        seq = seq.wrapping_add(1);
        let frame = template.frame(&mut conn.wbuf, seq);
        if let Err(err) = conn.send_frame(frame).await {
            recorder.failed(format_args!("send: {err}"));
            return;
        }
        match timeout(REPLY_TIMEOUT, conn.reply(&Stamp::id(seq))).await {
            Ok(Ok(Some(stamp))) if stamp.seq == seq => recorder.record(scheduled.elapsed()),
            outcome => {
                if !recorder.stopped() {
                    recorder.failed(reply_error(outcome));
                }
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// idle density

/// idle density: `n` idle connections over `transport` on a fresh server per repetition. An
/// idle SSE connection is its open event stream, an idle long-polling connection one poll in
/// flight (polled again when the server answers it with a keep-alive ping or at its timeout);
/// neither keeps its POST connection open after the handshake.
pub async fn idle(
    command: &ServerCommand,
    s: &Settings,
    n: usize,
    transport: Transport,
) -> Result<Outcome> {
    let idle_conns = |addr, n| {
        connect_many_over(addr, n, HubProtocol::Json, transport, true, |_| {
            String::new()
        })
    };
    let mut kib = Vec::new();
    let mut cpu = Vec::new();
    let mut rss_total = Vec::new();
    for _ in 0..s.reps {
        let server = ServerProcess::start(command).await?;
        let mut tasks = JoinSet::new();
        // One connection first, so one-time set-up is not counted per connection.
        for conn in idle_conns(server.addr, 1).await? {
            tasks.spawn_local(idle_reader(conn));
        }
        sleep(Duration::from_millis(300)).await;
        let rss0 = rss_bytes(server.pid);
        for conn in idle_conns(server.addr, n).await? {
            tasks.spawn_local(idle_reader(conn));
        }
        sleep(Duration::from_secs(1)).await;
        let rss1 = rss_bytes(server.pid);
        let cpu0 = cpu_us(Some(server.pid));
        let t0 = Instant::now();
        sleep(s.idle_window).await;
        let cpu1 = cpu_us(Some(server.pid));
        let secs = t0.elapsed().as_secs_f64();
        kib.push(rss1.saturating_sub(rss0) as f64 / n as f64 / 1024.0);
        cpu.push(cpu1.saturating_sub(cpu0) as f64 / (n as f64 * secs));
        rss_total.push(rss1 as f64 / MIB);
        tasks.shutdown().await;
        server.stop().await;
    }
    let mut out = Outcome::default();
    out.push("KiB per idle connection", kib);
    out.push("idle CPU µs per connection-second", cpu);
    out.push("server RSS (MiB)", rss_total);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// connect storm

/// connect storm: `workers` loops of negotiate + WebSocket + handshake + close.
pub async fn storm(command: &ServerCommand, s: &Settings, workers: usize) -> Result<Outcome> {
    let server = ServerProcess::start(command).await?;
    let recorder = Rc::new(Recorder::default());
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        tasks.spawn_local(storm_loop(server.addr, recorder.clone()));
    }
    sleep(s.warmup).await;
    let w = windows(&recorder, server.pid, s.reps, s.window).await;
    recorder.stop();
    let _ = timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
    server.stop().await;
    let mut out = Outcome::default();
    out.windows(&w, "connections", "connection");
    out.errors(&recorder);
    Ok(out)
}

async fn storm_loop(addr: SocketAddr, recorder: Rc<Recorder>) {
    while !recorder.stopped() {
        let start = Instant::now();
        let attempt = timeout(Duration::from_secs(10), async {
            let token = negotiate(addr).await?;
            let conn = Conn::connect(addr, &format!("?id={token}"), HubProtocol::Json).await?;
            Ok::<_, crate::conn::Error>(conn)
        })
        .await;
        match attempt {
            Ok(Ok(conn)) => {
                recorder.record(start.elapsed());
                conn.close(Duration::from_secs(2)).await;
            }
            Ok(Err(err)) => {
                recorder.failed(err);
                sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                recorder.failed("no connection within 10 s");
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
