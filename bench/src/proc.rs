//! The servers under test as child processes: started pinned to the server core, found by the
//! `Listening on http://ADDR` line they print, and always killed: on drop, from the panic hook,
//! on Ctrl-C (the runner's select), and by the kernel when the runner dies (`setpriv
//! --pdeathsig KILL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::conn::Result;

/// The core the servers run on; the load generator (this process) runs on [`GEN_CORE`].
pub const SERVER_CORE: &str = "1";
/// The core of the load generator.
pub const GEN_CORE: &str = "0";

/// Environment variable: a command prefix for `bench-server` (e.g. `valgrind --tool=callgrind`),
/// for profiling our server under the benchmark's load.
pub const WRAP_VAR: &str = "SIGNALR_BENCH_WRAP";

/// Pids of the running servers, for the panic hook.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every server still registered (panic hook, Ctrl-C, end of run).
pub fn kill_all() {
    let pids: Vec<u32> = CHILDREN
        .lock()
        .map(|mut pids| std::mem::take(&mut *pids))
        .unwrap_or_default();
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn unregister(pid: u32) {
    if let Ok(mut pids) = CHILDREN.lock() {
        pids.retain(|&p| p != pid);
    }
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `taskset` and `setpriv` are there (checked once).
fn tools() -> (bool, bool) {
    static TOOLS: OnceLock<(bool, bool)> = OnceLock::new();
    *TOOLS.get_or_init(|| (have("taskset"), have("setpriv")))
}

/// Pins this process (before it starts threads) to [`GEN_CORE`]; false without taskset.
pub fn pin_self() -> bool {
    tools().0
        && std::process::Command::new("taskset")
            .args(["-cp", GEN_CORE, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// How to start one server.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// A running server, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Its process id (the pinned program itself: setpriv and taskset exec it).
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `command` pinned to [`SERVER_CORE`] and waits (at most 60 s) for its
    /// `Listening on http://ADDR` line.
    pub async fn start(command: &ServerCommand) -> Result<ServerProcess> {
        let (mut child, pid) = spawn_pinned(&command.argv, &command.log, Stdio::piped())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix("Listening on http://") {
                    let addr: SocketAddr =
                        rest.split_whitespace().next().unwrap_or_default().parse()?;
                    return Ok::<_, crate::conn::Error>(Some(addr));
                }
            }
            Ok(None)
        })
        .await;
        let server_addr = match found {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                return Err(format!(
                    "{} ended before listening (log: {})",
                    command.argv.join(" "),
                    command.log.display()
                )
                .into());
            }
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err(format!("{} did not start in 60 s", command.argv[0]).into()),
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::task::spawn_local(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // Let the server settle (a Python interpreter finishes importing).
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(ServerProcess {
            child,
            pid,
            addr: server_addr,
        })
    }

    /// Stops the server: SIGTERM, then SIGKILL if it is still there after `grace` (a profiler
    /// wrapped around it writes its output on SIGTERM).
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .await;
        let grace = if std::env::var_os(WRAP_VAR).is_some() {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(2)
        };
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        unregister(self.pid);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        unregister(self.pid);
    }
}

/// Starts `argv` pinned to [`SERVER_CORE`] (and killed by the kernel if the runner dies), its
/// stderr appended to `log`; registers it for [`kill_all`]. Returns the child and its pid.
fn spawn_pinned(argv: &[String], log: &Path, stdout: Stdio) -> Result<(Child, u32)> {
    let (taskset, setpriv) = tools();
    let mut full: Vec<String> = Vec::new();
    if setpriv {
        full.extend(["setpriv", "--pdeathsig", "KILL"].map(String::from));
    }
    if taskset {
        full.extend(["taskset", "-c", SERVER_CORE].map(String::from));
    }
    full.extend(argv.iter().cloned());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new(&full[0])
        .args(&full[1..])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("server exited at once")?;
    if let Ok(mut pids) = CHILDREN.lock() {
        pids.push(pid);
    }
    Ok((child, pid))
}

/// A `redis-server` of the run's own on a free loopback port, pinned like the servers (nothing
/// saved to disk); killed when dropped.
pub struct RedisProcess {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Where it listens (`127.0.0.1:PORT`).
    pub address: String,
}

impl RedisProcess {
    /// Whether `redis-server` is installed.
    pub fn available() -> bool {
        have("redis-server")
    }

    /// Starts `redis-server` and waits (at most 10 s) until it accepts connections.
    pub async fn start(log: &Path) -> Result<RedisProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let argv: Vec<String> = [
            "redis-server",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(String::from)
        .to_vec();
        let (child, pid) = spawn_pinned(&argv, log, Stdio::null())?;
        let mut redis = RedisProcess {
            child,
            pid,
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline || redis.child.try_wait()?.is_some() {
                return Err(format!(
                    "redis-server did not listen on {port} (log: {})",
                    log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(redis)
    }

    /// Stops it (SIGKILL: it keeps nothing).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        unregister(self.pid);
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        unregister(self.pid);
    }
}

fn getconf(name: &str, default: u64) -> u64 {
    std::process::Command::new("getconf")
        .arg(name)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| getconf("CLK_TCK", 100))
}

fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| getconf("PAGESIZE", 4096))
}

/// CPU time (user + system, all threads) of `pid` in microseconds, from `/proc/<pid>/stat`.
pub fn cpu_us(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    ticks * 1_000_000 / clk_tck()
}

/// Resident set size of `pid` in bytes, from `/proc/<pid>/statm`.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|f| f.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page_size())
}

/// The directory of this executable (where cargo put the sibling binaries).
pub fn exe_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}
