//! Recording during a run (counts, latency histograms) and the summary of repeated figures.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// What the load generator's tasks record; shared by `Rc` on the generator's one thread.
pub struct Recorder {
    measuring: Cell<bool>,
    stop: Cell<bool>,
    count: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    hist: RefCell<Histogram<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            measuring: Cell::new(false),
            stop: Cell::new(false),
            count: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            hist: RefCell::new(histogram()),
        }
    }
}

impl Recorder {
    /// Records one completed operation of `latency` when a window is open.
    pub fn record(&self, latency: Duration) {
        if self.measuring.get() {
            self.count.set(self.count.get() + 1);
            let us = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let _ = self.hist.borrow_mut().record(us);
        }
    }

    /// Records a completed operation whose latency is `latency_ns` nanoseconds.
    pub fn record_ns(&self, latency_ns: u64) {
        self.record(Duration::from_nanos(latency_ns));
    }

    /// Counts a failed operation (always, window or not).
    pub fn error(&self) {
        self.errors.set(self.errors.get() + 1);
    }

    /// Counts a failed operation and keeps the first reason given.
    pub fn failed(&self, reason: impl std::fmt::Display) {
        self.error();
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(reason.to_string());
        }
    }

    /// The first reason given to [`Recorder::failed`].
    pub fn first_error(&self) -> Option<String> {
        self.first_error.borrow().clone()
    }

    /// Counts `n` failed operations.
    pub fn errors(&self, n: u64) {
        self.errors.set(self.errors.get() + n);
    }

    /// Asks every task to stop.
    pub fn stop(&self) {
        self.stop.set(true);
        self.measuring.set(false);
    }

    /// Whether tasks should stop.
    pub fn stopped(&self) -> bool {
        self.stop.get()
    }

    fn open(&self) {
        self.count.set(0);
        self.hist.borrow_mut().reset();
        self.measuring.set(true);
    }

    fn close(&self) -> (u64, Histogram<u64>) {
        self.measuring.set(false);
        (self.count.get(), self.hist.borrow().clone())
    }

    /// Errors so far.
    pub fn error_count(&self) -> u64 {
        self.errors.get()
    }
}

/// One measurement window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Operations completed in the window.
    pub count: u64,
    /// Its length in seconds (as measured, not as asked).
    pub secs: f64,
    /// Latency percentiles (µs): p50, p99, p99.9.
    pub p50: f64,
    /// 99th percentile (µs).
    pub p99: f64,
    /// 99.9th percentile (µs).
    pub p999: f64,
    /// Server CPU time in the window (µs).
    pub server_cpu_us: f64,
    /// Load generator CPU time in the window (µs).
    pub gen_cpu_us: f64,
}

impl Window {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }

    /// Server CPU µs per operation.
    pub fn cpu_per_op(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.server_cpu_us / self.count as f64
        }
    }

    /// Server CPU use in % of one core.
    pub fn server_cpu_pct(&self) -> f64 {
        self.server_cpu_us / (self.secs * 1e6) * 100.0
    }

    /// Load generator CPU use in % of one core.
    pub fn gen_cpu_pct(&self) -> f64 {
        self.gen_cpu_us / (self.secs * 1e6) * 100.0
    }
}

/// Opens `reps` windows of `length` one after the other on `recorder`, reading the CPU time of
/// `server_pid` and of this process around each.
pub async fn windows(
    recorder: &Recorder,
    server_pid: u32,
    reps: usize,
    length: Duration,
) -> Vec<Window> {
    windows_of(recorder, &[server_pid], reps, length).await
}

/// [`windows`] with the server side made of several processes (servers, Redis): their CPU times
/// are added up.
pub async fn windows_of(
    recorder: &Recorder,
    server_pids: &[u32],
    reps: usize,
    length: Duration,
) -> Vec<Window> {
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        out.extend(window_of(&[recorder], server_pids, length).await);
    }
    out
}

/// CPU time of all of `pids`, in µs.
fn cpu_sum(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| crate::proc::cpu_us(Some(pid))).sum()
}

/// One window of `length` open on every recorder of `recorders` at once: one [`Window`] per
/// recorder, each with its own count and latencies and the same (shared) CPU times, those of
/// the server side being the sum over `server_pids`.
pub async fn window_of(
    recorders: &[&Recorder],
    server_pids: &[u32],
    length: Duration,
) -> Vec<Window> {
    let cpu0 = cpu_sum(server_pids);
    let gen0 = crate::proc::cpu_us(None);
    let t0 = Instant::now();
    for recorder in recorders {
        recorder.open();
    }
    tokio::time::sleep(length).await;
    let closed: Vec<(u64, Histogram<u64>)> = recorders.iter().map(|r| r.close()).collect();
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sum(server_pids);
    let gen1 = crate::proc::cpu_us(None);
    closed
        .into_iter()
        .map(|(count, hist)| {
            let pct = |q: f64| {
                if hist.is_empty() {
                    f64::NAN
                } else {
                    hist.value_at_quantile(q) as f64
                }
            };
            Window {
                count,
                secs,
                p50: pct(0.5),
                p99: pct(0.99),
                p999: pct(0.999),
                server_cpu_us: cpu1.saturating_sub(cpu0) as f64,
                gen_cpu_us: gen1.saturating_sub(gen0) as f64,
            }
        })
        .collect()
}

/// Median, min and max of a figure's repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (NaN values are left out); `None` when none is left.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}
