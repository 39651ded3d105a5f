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
    /// The admin listener's port, when the configuration sets `server.admin_listen`.
    pub admin_port: Option<u16>,
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
    /// json}`): that line names the port.
    pub fn start(dir: &Path, yaml: &str, envs: &[(&str, &str)]) -> Bridge {
        let cfg = dir.join("callbridge.yaml");
        std::fs::write(&cfg, yaml).expect("config written");
        let mut child = bin()
            .args(["serve", "--config"])
            .arg(&cfg)
            .envs(envs.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("callbridge starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr_tx, addr_rx) = mpsc::channel::<(String, Option<u16>)>();
        let logs = std::thread::spawn(move || read_logs(stderr, addr_tx));
        let (addr, admin_port) = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the bridge logs `listening` within 30 s");
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {addr:?}"));
        Bridge {
            child: Some(child),
            port,
            admin_port,
            logs: Some(logs),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin listener's base URL (`server.admin_listen` must be set).
    pub fn admin_base(&self) -> String {
        let port = self.admin_port.expect("server.admin_listen is set");
        format!("http://127.0.0.1:{port}")
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

/// Collects stderr; sends the `addr` of the `listening` line once it has arrived whole (a read
/// can end in the middle of a line), with the admin listener's port when an earlier line named
/// it.
fn read_logs(mut stderr: impl Read, addr: mpsc::Sender<(String, Option<u16>)>) -> String {
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
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let admin_port = lines
            .iter()
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admin listener"))
            })
            .find_map(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        if let Some(v) = lines.iter().find(|v| v["message"] == "listening") {
            let listening = v["addr"].as_str().unwrap_or_default().to_string();
            let _ = addr.send((listening, admin_port));
            sent = true;
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}
