//! Helpers of the CLI tests: a server on a runtime of its own and a runner of the built binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::Router;

/// How long one run of the binary may take before the test fails.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Serves `app` on a free loopback port, on a thread and runtime of its own (for the rest of the
/// test process); returns `http://127.0.0.1:PORT`.
pub fn serve(app: impl FnOnce() -> Router + Send + 'static) -> String {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            sender.send(format!("http://{address}")).expect("report");
            signalr_server::serve(listener, app()).await.expect("serve");
        });
    });
    receiver.recv().expect("server address")
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Run {
    /// The non-empty lines of stdout.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.is_empty()).collect()
    }

    /// Each stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("not JSON ({err}): {line}\n{self:?}"))
            })
            .collect()
    }
}

/// The binary with `args`.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signalr"));
    command
        .args(args)
        .env_remove("SIGNALR_ACCESS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the binary with `args` and `input` on stdin; fails the test after [`RUN_LIMIT`].
pub fn signalr_with_input(args: &[&str], input: impl AsRef<[u8]>) -> Run {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn signalr");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.as_ref().to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    finish(child, RUN_LIMIT)
}

/// Runs the binary with `args` (stdin empty); fails the test after [`RUN_LIMIT`].
pub fn signalr(args: &[&str]) -> Run {
    let child = command(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn signalr");
    finish(child, RUN_LIMIT)
}

fn reader(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let _ = sender.send(text);
    });
    receiver
}

/// Waits for `child` at most `limit`, collecting its output.
pub fn finish(mut child: Child, limit: Duration) -> Run {
    let stdout = reader(child.stdout.take().expect("stdout"));
    let stderr = child.stderr.take().map(reader);
    let code = wait(&mut child, limit);
    let stdout = stdout.recv().unwrap_or_default();
    let stderr = stderr.and_then(|r| r.recv().ok()).unwrap_or_default();
    match code {
        Some(code) => Run {
            code,
            stdout,
            stderr,
        },
        None => panic!("signalr ran longer than {limit:?}\nstdout: {stdout}\nstderr: {stderr}"),
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `signalr listen` (or `connect`) whose stderr was read up to a line containing
/// `ready`; the rest of stderr is collected in the background.
pub struct Background {
    child: Child,
    /// Kept open: `connect` ends at the end of its input.
    _stdin: Option<std::process::ChildStdin>,
    stderr_head: String,
    stderr_rest: mpsc::Receiver<String>,
}

impl Background {
    /// Starts the binary with `args` and waits until stderr has a line containing `ready`.
    pub fn start(args: &[&str], ready: &str) -> Background {
        let mut child = command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn signalr");
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().expect("stderr");
        let (lines, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + RUN_LIMIT;
        let mut head = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    head.push_str(&line);
                    head.push('\n');
                    if line.contains(ready) {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("signalr never printed {ready:?} on stderr: {head}");
                }
            }
        }
        let (rest_sender, stderr_rest) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            while let Ok(line) = receiver.recv() {
                text.push_str(&line);
                text.push('\n');
            }
            let _ = rest_sender.send(text);
        });
        Background {
            child,
            _stdin: stdin,
            stderr_head: head,
            stderr_rest,
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) to the process with the `kill` program; `false` when
    /// there is no `kill` to run.
    pub fn interrupt(&self) -> bool {
        match Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
        {
            Ok(status) => {
                assert!(status.success(), "kill -INT failed");
                true
            }
            Err(err) => {
                println!("cannot run kill ({err})");
                false
            }
        }
    }

    /// Waits for the process to end on its own.
    pub fn finish(mut self) -> Run {
        let stdout = reader(self.child.stdout.take().expect("stdout"));
        let code = wait(&mut self.child, RUN_LIMIT);
        let stdout = stdout.recv().unwrap_or_default();
        let stderr =
            std::mem::take(&mut self.stderr_head) + &self.stderr_rest.recv().unwrap_or_default();
        match code {
            Some(code) => Run {
                code,
                stdout,
                stderr,
            },
            None => {
                panic!("signalr ran longer than {RUN_LIMIT:?}\nstdout: {stdout}\nstderr: {stderr}")
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A test that ends early leaves no process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback URL nothing listens on.
pub fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hub")
}
