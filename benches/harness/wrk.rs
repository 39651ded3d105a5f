//! A second, light load generator: `wrk` (C, one thread) with a Lua script posting the same
//! ~1 KB payload with unique call ids. The harness's own generator (reqwest + tokio) takes about
//! half of the two cores here, which caps what any server can show; wrk costs a fraction of
//! that, so its ratios say more about the servers. `scripts/bench` installs it.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::Point;

/// Whether `wrk` is on the PATH.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

/// Loads `http://127.0.0.1:{port}/callback` with `conc` connections for `duration`.
pub fn run(
    scenario: &str,
    port: u16,
    conc: usize,
    duration: Duration,
    body: &str,
) -> Result<Point> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("post.lua");
    // The body with its call id replaced by a marker; each request gets a fresh one.
    let template = body
        .replace('%', "%%")
        .replace("__CALL_ID__", "%s")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let run_tag = format!(
        "{scenario}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    std::fs::write(
        &script,
        format!(
            "local n = 0\n\
             wrk.method = \"POST\"\n\
             wrk.headers[\"X-API-Key\"] = \"bench-key\"\n\
             request = function()\n\
             \x20 n = n + 1\n\
             \x20 return wrk.format(nil, \"/callback\", nil, string.format(\"{template}\", \"{run_tag}-\" .. n))\n\
             end\n"
        ),
    )?;
    let cpu_before = super::cpu::snapshot();
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conc}"),
            &format!("-d{}s", duration.as_secs()),
        ])
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/callback"))
        .output()
        .context("running wrk")?;
    let cpu = super::cpu::split(&cpu_before, &super::cpu::snapshot());
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let ms = |v: Option<String>| -> f64 {
        let v = v.unwrap_or_default();
        let num = |s: &str, unit: &str| s.strip_suffix(unit).and_then(|n| n.parse::<f64>().ok());
        num(&v, "us")
            .map(|u| u / 1000.0)
            .or_else(|| num(&v, "ms"))
            .or_else(|| num(&v, "s").map(|s| s * 1000.0))
            .unwrap_or(f64::NAN)
    };
    let total: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no request count in wrk's output")?;
    let secs: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split("requests in").nth(1))
        .and_then(|r| r.trim().split(',').next())
        .and_then(|d| d.trim().strip_suffix('s'))
        .and_then(|d| d.parse().ok())
        .unwrap_or(duration.as_secs_f64());
    let failed: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let point = Point {
        scenario: scenario.into(),
        concurrency: conc,
        ok: total.saturating_sub(failed),
        failed,
        secs,
        p50_ms: ms(field("50%")),
        p99_ms: ms(field("99%")),
        p999_ms: f64::NAN,
        cpu,
    };
    eprintln!(
        "{:<18} c={:<4} {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  failed {} (wrk)",
        point.scenario,
        conc,
        point.rate(),
        point.p50_ms,
        point.p99_ms,
        point.failed
    );
    Ok(point)
}
