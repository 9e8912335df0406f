//! The Tokio runtime of the benchmark servers (`bench-server`, `bench-ceiling`), shared so both
//! run on the same scheduler.

/// Which Tokio scheduler a benchmark server runs on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `current-thread` when the process may use one CPU (the runner pins servers to one core),
    /// `multi-thread` otherwise.
    Auto,
    /// One thread, one FIFO run queue: every ready connection is served in turn.
    CurrentThread,
    /// One worker per CPU. With one worker, its run queue holds 256 tasks: when more connections
    /// are ready at once, the rest wait in the shared queue, which the worker looks at once
    /// every 61 tasks, and those connections' latency grows far past the others' (the echo
    /// N=1,000 tail: p99 7 to 25 times p50, against 1.6 on the current-thread scheduler).
    MultiThread,
}

/// Builds the runtime of `flavor`, with I/O and timers.
pub fn build(flavor: Flavor) -> std::io::Result<tokio::runtime::Runtime> {
    let one_cpu = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::Auto if one_cpu => tokio::runtime::Builder::new_current_thread(),
        Flavor::Auto | Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}
