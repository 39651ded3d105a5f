//! The `callbridge` binary as a child process, for tests that need a process of their own: a
//! process-wide tracing subscriber, SIGTERM, the log output. Everything else runs the
//! application in the test process (`spawn`), which is faster and shares this binary's brokers.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The binary, run from elsewhere (it must not depend on the working directory) and without a
/// `CALLBRIDGE_CONFIG` inherited from the test's environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callbridge"));
    c.current_dir(std::env::temp_dir());
    for var in [
        "CALLBRIDGE_CONFIG",
        "CALLBRIDGE_API_KEY",
        "CALLBRIDGE_LISTEN",
    ] {
        c.env_remove(var);
    }
    c
}

/// A running bridge and everything it has logged.
pub struct Bridge {
    /// `None` once waited for.
    child: Option<Child>,
    pub port: u16,
    /// The admin listener's port (a free one: `CALLBRIDGE__SERVER__ADMIN_LISTEN` is
    /// `127.0.0.1:0` unless the test sets it).
    pub admin_port: u16,
    /// Reads stderr to the end (so the child never blocks on a full pipe) and returns it.
    logs: Option<JoinHandle<String>>,
}

/// A test that panics before stopping its bridge must not leave the process behind (it would
/// hold the test run's output pipe open and hang whatever reads it).
impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Bridge {
    /// Writes `yaml` into `dir` as its configuration, runs `callbridge serve` with `envs`, and
    /// waits for the `listening` log line. The configuration must log JSON (`log: {format:
    /// json}`): that line names the port, and the `admin listener` line before it the admin
    /// port. The admin listener takes a free port unless `envs` or `yaml` say otherwise.
    pub fn start(dir: &Path, yaml: &str, envs: &[(&str, &str)]) -> Bridge {
        Self::try_start(dir, yaml, envs).unwrap_or_else(|logs| {
            panic!("the bridge did not log `listening` within 30 s:\n{logs}")
        })
    }

    /// [`Bridge::start`], or everything the process logged when it exited (or 30 s passed)
    /// without listening.
    pub fn try_start(dir: &Path, yaml: &str, envs: &[(&str, &str)]) -> Result<Bridge, String> {
        let cfg = dir.join("callbridge.yaml");
        std::fs::write(&cfg, yaml).expect("config written");
        let mut cmd = bin();
        if !envs.iter().any(|(k, _)| *k == ADMIN_LISTEN_ENV) && !yaml.contains("admin_listen") {
            cmd.env(ADMIN_LISTEN_ENV, "127.0.0.1:0");
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&cfg)
            .envs(envs.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("callbridge starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr_tx, addr_rx) = mpsc::channel::<(String, String)>();
        let logs = std::thread::spawn(move || read_logs(stderr, addr_tx));
        let Ok((addr, admin_addr)) = addr_rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(logs.join().unwrap_or_default());
        };
        let port_of = |a: &str| -> u16 {
            a.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no port in {a:?}"))
        };
        Ok(Bridge {
            child: Some(child),
            port: port_of(&addr),
            admin_port: port_of(&admin_addr),
            logs: Some(logs),
        })
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin listener's base URL.
    pub fn admin_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Sends SIGTERM, as an orchestrator stopping the pod does.
    /// The child's process id (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM sent");
    }

    /// Waits for the process to exit; its exit status and everything it logged.
    pub async fn wait(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("not waited for yet");
        let logs = self.logs.take().expect("not waited for yet");
        tokio::task::spawn_blocking(move || {
            let status = child.wait().expect("the bridge exits");
            (status, logs.join().expect("log reader"))
        })
        .await
        .expect("waiting task")
    }

    /// [`Bridge::terminate`], then [`Bridge::wait`].
    pub async fn stop(self) -> (ExitStatus, String) {
        self.terminate();
        self.wait().await
    }
}

/// Set to `127.0.0.1:0` for a bridge whose test does not choose its admin listener.
const ADMIN_LISTEN_ENV: &str = "CALLBRIDGE__SERVER__ADMIN_LISTEN";

/// Collects stderr; sends the `addr` of the `listening` line, and of the `admin listener` line
/// before it, once it has arrived whole (a read can end in the middle of a line).
fn read_logs(mut stderr: impl Read, addr: mpsc::Sender<(String, String)>) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = false;
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if sent {
            continue;
        }
        let Some(end) = all.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&all[..end])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        let addr_of = |prefix: &str| {
            lines
                .iter()
                .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
                .map(|v| v["addr"].as_str().unwrap_or_default().to_string())
        };
        if let (Some(main), Some(admin)) = (addr_of("listening"), addr_of("admin listener")) {
            let _ = addr.send((main, admin));
            sent = true;
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}
