//! The bridge binary as the runner's child: one configuration and one port for the whole run
//! (a restart after SIGTERM or SIGKILL listens where the load generator already sends), its
//! log appended to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procs::wait_until;

pub struct Bridge {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pub port: u16,
    /// The admin listener's port (`/spool`).
    pub admin_port: u16,
    child: Option<Child>,
    /// The running process's id (0 while none runs), read by the RSS sampler.
    pub pid: Arc<AtomicU32>,
    client: reqwest::Client,
}

impl Bridge {
    pub fn new(bin: &Path, dir: &Path, yaml: &str, port: u16, admin_port: u16) -> Result<Bridge> {
        let config = dir.join("callbridge.yaml");
        std::fs::write(&config, yaml)?;
        Ok(Bridge {
            bin: bin.to_path_buf(),
            config,
            log: dir.join("bridge.log"),
            port,
            admin_port,
            child: None,
            pid: Arc::default(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// Starts the process and waits until it answers `/healthz` (not `/readyz`: the sinks may
    /// still be connecting).
    pub async fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env_remove("CALLBRIDGE_CONFIG")
            .env(
                "RUST_LOG",
                "warn,callbridge::app=info,callbridge::ingest=info",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.pid.store(child.id(), Ordering::Relaxed);
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let client = self.client.clone();
        let up = wait_until(Duration::from_secs(60), || {
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(&url).send().await.is_ok() }
        })
        .await;
        anyhow::ensure!(
            up,
            "the bridge did not answer /healthz within 60 s (log: {})",
            self.log.display()
        );
        Ok(())
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.client
                .get(format!("http://127.0.0.1:{}/readyz", self.port))
                .send()
                .await,
            Ok(r) if r.status().as_u16() == 200
        )
    }

    /// Spooled events still waiting, all sinks together (None: no answer).
    pub async fn spool_depth(&self) -> Option<u64> {
        let v: serde_json::Value = self
            .client
            .get(format!("http://127.0.0.1:{}/spool", self.admin_port))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["sinks"]
            .as_array()
            .map(|a| a.iter().map(|s| s["depth"].as_u64().unwrap_or(0)).sum())
    }

    /// `GET path` on the admin listener, as JSON (None: no answer, or not a 200).
    pub async fn admin_json(&self, path: &str) -> Option<serde_json::Value> {
        let r = self
            .client
            .get(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// One unlabelled sample of `/metrics` (None: no answer, or no such metric).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Sends `sig`; for SIGTERM and SIGKILL waits (up to `timeout`) for the exit. Returns how
    /// long the exit took, or None if the process was still running at the timeout (it is
    /// then killed).
    pub async fn signal_and_wait(&mut self, sig: Signal, timeout: Duration) -> Option<Duration> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        let exited = wait_until(timeout, || {
            let done = matches!(child.try_wait(), Ok(Some(_)));
            async move { done }
        })
        .await;
        self.pid.store(0, Ordering::Relaxed);
        if exited {
            Some(started.elapsed())
        } else {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Resident set size of `pid` in MiB (None if it is gone).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}
