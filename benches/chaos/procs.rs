//! The processes the chaos runner starts: three Apache Kafka nodes, a RabbitMQ node and a NATS
//! server of its own (never the machine's shared brokers), each reached by the bridge only
//! through a [`TcpProxy`] the runner controls, and a small tmpfs for the file sink and spool.
//!
//! Every broker runs under a watchdog shell in its own process group: the group is what
//! SIGKILL / SIGSTOP / SIGCONT are sent to, and the watchdog ends the broker when the runner
//! exits, however it exits.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::proxy::TcpProxy;

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until `f` returns true or `timeout` passes; false on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A command under a watchdog shell, in a process group of its own.
pub struct Watched {
    child: Child,
}

impl Watched {
    /// Runs `cmd` (a shell command line) with its output appended to `log`.
    pub fn spawn(cmd: &str, log: &Path, envs: &[(&str, String)]) -> Result<Watched> {
        let script = format!(
            "{cmd} >>\"{log}\" 2>&1 & k=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $k 2>/dev/null; do sleep 0.5; done; \
             kill -9 $k 2>/dev/null",
            log = log.display(),
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {cmd}"))?;
        Ok(Watched { child })
    }

    pub fn signal(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// SIGKILL to the whole group, as in a crash; waits for the watchdog.
    pub fn kill(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Apache Kafka: three nodes; node 1 is the only controller (never killed: it is the quorum).

const KAFKA_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka/kafka");

pub struct Kafka {
    dir: PathBuf,
    /// Node i+1's process, `None` while it is down.
    nodes: Vec<Option<Watched>>,
    /// Node i+1's proxy (the address clients get from the metadata).
    pub proxies: Vec<TcpProxy>,
    /// Direct bootstrap (for the runner's own admin and read-back clients).
    pub direct: String,
    /// Through the proxies (for the bridge).
    pub proxied: String,
}

impl Kafka {
    /// Lays out three nodes with `scripts/kafka/kafka configure`, then gives each one more
    /// listener, `EXTERNAL`, advertised at its proxy's port: clients go through the proxies
    /// while replication and the controller stay on the direct listeners (a proxy cut is the
    /// clients' network failing, not the cluster's).
    pub async fn start(root: &Path) -> Result<Kafka> {
        let dir = root.join("kafka");
        let out = Command::new(KAFKA_SCRIPT)
            .arg("configure")
            .arg(&dir)
            .arg("3")
            .output()
            .context("scripts/kafka/kafka configure")?;
        if !out.status.success() {
            bail!("kafka configure: {}", String::from_utf8_lossy(&out.stderr));
        }
        let direct = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut proxies = Vec::new();
        let mut proxied = Vec::new();
        for node in 1..=3 {
            let props = dir.join(format!("node-{node}/server.properties"));
            let text = std::fs::read_to_string(&props)?;
            let (external, proxy_port) = (free_port()?, free_port()?);
            let port: u16 = std::fs::read_to_string(dir.join(format!("node-{node}/port")))?
                .trim()
                .parse()?;
            let text: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.starts_with("listeners=") {
                        format!("{l},EXTERNAL://127.0.0.1:{external}")
                    } else if l.starts_with("advertised.listeners=") {
                        format!("advertised.listeners=PLAINTEXT://127.0.0.1:{port},EXTERNAL://127.0.0.1:{proxy_port}")
                    } else if l.starts_with("listener.security.protocol.map=") {
                        format!("{l},EXTERNAL:PLAINTEXT")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            std::fs::write(&props, text.join("\n") + "\n")?;
            proxies.push(TcpProxy::start_on(proxy_port, loopback(external)).await);
            proxied.push(format!("127.0.0.1:{proxy_port}"));
        }
        let mut k = Kafka {
            dir,
            nodes: vec![None, None, None],
            proxies,
            direct,
            proxied: proxied.join(","),
        };
        for node in 1..=3 {
            k.start_node(node)?;
        }
        Ok(k)
    }

    pub fn start_node(&mut self, node: usize) -> Result<()> {
        if self.nodes[node - 1].is_some() {
            return Ok(());
        }
        let d = self.dir.join(format!("node-{node}"));
        let w = Watched::spawn(
            &format!("\"{KAFKA_SCRIPT}\" run \"{}\"", d.display()),
            &d.join("out.log"),
            &[("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m".to_string())],
        )?;
        self.nodes[node - 1] = Some(w);
        Ok(())
    }

    pub fn kill(&mut self, node: usize) {
        assert_ne!(node, 1, "node 1 is the metadata quorum");
        if let Some(w) = self.nodes[node - 1].take() {
            w.kill();
        }
    }

    pub fn signal(&self, node: usize, sig: Signal) {
        if let Some(w) = &self.nodes[node - 1] {
            w.signal(sig);
        }
    }

    /// Metadata from the direct listeners (None while nothing answers).
    pub async fn metadata(&self) -> Option<rdkafka::metadata::Metadata> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let bootstrap = self.direct.clone();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .ok()?;
            c.fetch_metadata(None, Duration::from_secs(2)).ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until all three brokers are registered and `topic` (when given) has every
    /// partition's full ISR back.
    pub async fn wait_healthy(&self, topic: Option<&str>, timeout: Duration) -> bool {
        wait_until(timeout, || async {
            let Some(md) = self.metadata().await else {
                return false;
            };
            if md.brokers().len() != 3 {
                return false;
            }
            match topic {
                None => true,
                Some(t) => md.topics().iter().any(|mt| {
                    mt.name() == t
                        && !mt.partitions().is_empty()
                        && mt.partitions().iter().all(|p| p.isr().len() == 3)
                }),
            }
        })
        .await
    }

    /// The leader of partition 0 of `topic`.
    pub async fn leader(&self, topic: &str) -> Option<i32> {
        let md = self.metadata().await?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        t.partitions()
            .iter()
            .find(|p| p.id() == 0)
            .map(|p| p.leader())
    }

    /// Creates `topic` with `partitions` partitions on all three nodes, node 2 the preferred
    /// leader (so the leader can be killed without touching the quorum).
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::types::RDKafkaErrorCode;
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &self.direct)
                .create()?;
        let replicas: &[i32] = &[2, 3, 1];
        let assignment: Vec<&[i32]> = (0..partitions).map(|_| replicas).collect();
        let new = NewTopic::new(topic, partitions, TopicReplication::Variable(&assignment));
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(30)));
        // A freshly started cluster can time out the first request (a slow, shared machine).
        let mut last = String::new();
        for _ in 0..4 {
            match admin.create_topics(std::slice::from_ref(&new), &opts).await {
                Ok(res) => match res.into_iter().next() {
                    Some(Ok(_)) => return Ok(()),
                    Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => return Ok(()),
                    Some(Err((t, e))) => last = format!("create topic {t}: {e}"),
                    None => last = "no result".into(),
                },
                Err(e) => last = e.to_string(),
            }
            eprintln!("create topic {topic}: {last}; again");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        bail!("create topic {topic}: {last}")
    }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ: one private node (Debian's rabbitmq-server), its own ports, node name and database.

pub struct Rabbit {
    dir: PathBuf,
    amqp: u16,
    dist: u16,
    node: Option<Watched>,
    pub proxy: TcpProxy,
}

impl Rabbit {
    const SERVER: &'static str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

    pub async fn start(root: &Path) -> Result<Rabbit> {
        if !Path::new(Self::SERVER).exists() {
            bail!(
                "{} is missing: scripts/chaos installs Debian's rabbitmq-server",
                Self::SERVER
            );
        }
        let dir = root.join("rabbitmq");
        std::fs::create_dir_all(dir.join("home"))?;
        let (amqp, dist) = (free_port()?, free_port()?);
        std::fs::write(dir.join("plugins"), "[].\n")?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{amqp}\nloopback_users = none\n"),
        )?;
        let proxy = TcpProxy::start(loopback(amqp)).await;
        let mut r = Rabbit {
            dir,
            amqp,
            dist,
            node: None,
            proxy,
        };
        r.start_node()?;
        Ok(r)
    }

    pub fn start_node(&mut self) -> Result<()> {
        if self.node.is_some() {
            return Ok(());
        }
        let d = &self.dir;
        let p = |s: &str| d.join(s).display().to_string();
        self.node = Some(Watched::spawn(
            Self::SERVER,
            &d.join("out.log"),
            &[
                ("HOME", p("home")),
                (
                    "RABBITMQ_NODENAME",
                    format!("cbchaos{}@localhost", self.amqp),
                ),
                ("RABBITMQ_DIST_PORT", self.dist.to_string()),
                ("RABBITMQ_MNESIA_BASE", p("mnesia")),
                ("RABBITMQ_LOG_BASE", p("log")),
                ("RABBITMQ_ENABLED_PLUGINS_FILE", p("plugins")),
                ("RABBITMQ_CONFIG_FILE", p("rabbitmq")),
                ("RABBITMQ_ADVANCED_CONFIG_FILE", p("advanced.config")),
                ("RABBITMQ_CONF_ENV_FILE", p("env.conf")),
                ("RABBITMQ_PID_FILE", p("pid")),
            ],
        )?);
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(w) = self.node.take() {
            w.kill();
        }
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(w) = &self.node {
            w.signal(sig);
        }
    }

    /// Direct URL (the runner's own clients).
    pub fn direct_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp)
    }

    pub fn proxied_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.proxy.port())
    }

    /// Waits until an AMQP connection opens.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        let url = self.direct_url();
        wait_until(timeout, || {
            let url = url.clone();
            async move {
                match tokio::time::timeout(
                    Duration::from_secs(3),
                    lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        let _ = c.close(200, "bye").await;
                        true
                    }
                    _ => false,
                }
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// NATS with JetStream (file storage in a directory of its own).

pub struct Nats {
    dir: PathBuf,
    port: u16,
    node: Option<Watched>,
    pub proxy: TcpProxy,
}

impl Nats {
    pub async fn start(root: &Path) -> Result<Nats> {
        let dir = root.join("nats");
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let proxy = TcpProxy::start(loopback(port)).await;
        let mut n = Nats {
            dir,
            port,
            node: None,
            proxy,
        };
        n.start_node()?;
        Ok(n)
    }

    pub fn start_node(&mut self) -> Result<()> {
        if self.node.is_none() {
            self.node = Some(Watched::spawn(
                &format!(
                    "nats-server -a 127.0.0.1 -p {} -js -sd \"{}\"",
                    self.port,
                    self.dir.join("store").display()
                ),
                &self.dir.join("out.log"),
                &[],
            )?);
        }
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(w) = self.node.take() {
            w.kill();
        }
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(w) = &self.node {
            w.signal(sig);
        }
    }

    pub fn direct_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn proxied_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.proxy.port())
    }

    /// Waits until the server answers a PING on a fresh connection.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        let url = self.direct_url();
        wait_until(timeout, || {
            let url = url.clone();
            async move {
                let attempt = async {
                    let c = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
                    c.flush().await.map_err(|e| e.to_string())
                };
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        eprintln!("nats not up yet: {e}");
                        false
                    }
                    Err(_) => false,
                }
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// The disk under the file sink and the spool: a small tmpfs of the runner's own.

pub struct Disk {
    pub path: PathBuf,
    filler: PathBuf,
}

impl Disk {
    /// Mounts a tmpfs of `mib` MiB at `path` (needs root; the runner says so otherwise).
    pub fn mount(path: &Path, mib: u64) -> Result<Disk> {
        std::fs::create_dir_all(path)?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .context("mount")?;
        if !st.success() {
            bail!("mount -t tmpfs failed (needs root / CAP_SYS_ADMIN)");
        }
        Ok(Disk {
            path: path.to_path_buf(),
            filler: path.join("filler"),
        })
    }

    /// Fills the file system: a file grows until the write fails with ENOSPC. Returns its size.
    pub fn fill(&self) -> Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(&self.filler)?;
        let chunk = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The last bytes the page-size rounding left.
        loop {
            match f.write(&chunk[..512]) {
                Ok(k) if k > 0 => n += k as u64,
                _ => break,
            }
        }
        Ok(n)
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
