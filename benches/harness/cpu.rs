//! Where the machine's CPU went during one measured point: cores used by the load generator
//! (this process), the bridge, each broker's server, and everything else. On two shared cores
//! this is the profile that says whether a ratio is the bridge's cost or the machine's limit:
//! when the sum is ~2 cores, a faster bridge can only take CPU from the brokers it waits for.

use std::collections::BTreeMap;
use std::time::Instant;

/// The process groups reported, in the table's order.
pub const GROUPS: [&str; 5] = ["load generator", "bridge", "rabbitmq", "kafka", "nats"];

/// Clock ticks per second of `/proc/*/stat` (USER_HZ: 100 on Linux for every architecture
/// this runs on).
const TICKS: f64 = 100.0;

/// A snapshot of CPU ticks per group and of the whole machine.
pub struct Snapshot {
    at: Instant,
    groups: BTreeMap<&'static str, u64>,
    busy: u64,
}

/// Cores used per group between two snapshots (1.0 = one core busy the whole time), plus
/// `other` (the machine's busy time no group accounts for) and `machine` (all of it).
pub type Split = BTreeMap<&'static str, f64>;

pub fn snapshot() -> Snapshot {
    let mut groups: BTreeMap<&'static str, u64> = GROUPS.iter().map(|g| (*g, 0)).collect();
    let me = std::process::id();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some((comm, ticks, children)) = stat(pid) else {
                continue;
            };
            // This process's waited-for children too: wrk runs and exits within a point.
            let ticks = if pid == me { ticks + children } else { ticks };
            let group = if pid == me {
                Some("load generator")
            } else {
                group_of(pid, &comm)
            };
            if let Some(g) = group {
                *groups.entry(g).or_default() += ticks;
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        groups,
        busy: machine_busy().unwrap_or(0),
    }
}

pub fn split(before: &Snapshot, after: &Snapshot) -> Split {
    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let cores = |t: u64| t as f64 / TICKS / secs;
    let mut s = Split::new();
    let mut accounted = 0;
    for g in GROUPS {
        let d = after.groups[g].saturating_sub(before.groups[g]);
        accounted += d;
        s.insert(g, cores(d));
    }
    let busy = after.busy.saturating_sub(before.busy);
    s.insert("other", cores(busy.saturating_sub(accounted)));
    s.insert("machine", cores(busy));
    s
}

/// The broker or bridge a process belongs to, by its command name (and Kafka's JVM by its
/// command line); the bare handler counts as the bridge, being the server under test.
fn group_of(pid: u32, comm: &str) -> Option<&'static str> {
    match comm {
        "callbridge" => Some("bridge"),
        // The bare handler is this harness re-executed (`harness-<hash>`; this process itself
        // is the load generator, matched before): the server under test in its scenario.
        c if c.starts_with("harness-") => Some("bridge"),
        "wrk" => Some("load generator"),
        "beam.smp" | "epmd" | "erl_child_setup" => Some("rabbitmq"),
        "nats-server" => Some("nats"),
        "java" => std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .filter(|c| String::from_utf8_lossy(c).contains("kafka"))
            .map(|_| "kafka"),
        _ => None,
    }
}

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    stat(pid).map(|(_, ticks, _)| ticks as f64 / TICKS)
}

/// (command name, user + system ticks of the process and its threads, the same of its
/// children that exited and were waited for).
fn stat(pid: u32) -> Option<(String, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let cutime: u64 = rest.get(13)?.parse().ok()?;
    let cstime: u64 = rest.get(14)?.parse().ok()?;
    Some((comm, utime + stime, cutime + cstime))
}

/// Busy ticks of the whole machine (all CPUs, everything but idle and iowait).
fn machine_busy() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(total - idle)
}
