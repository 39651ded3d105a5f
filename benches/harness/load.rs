//! The load generator: closed loop at a fixed concurrency, open loop at a fixed rate, and the
//! bridge's webhook request as the operation.

use super::*;

pub(crate) fn payload(call_id: &str) -> String {
    let mut body = callbridge::cli::sample_payload(call_id, "status", "completed");
    body["data"]["transcript"] = Value::from("Hello, this is a test call... ".repeat(18));
    body.to_string()
}

/// Runs `conc` workers for `duration`, each calling `op(worker, seq)` back to back.
pub(crate) async fn drive<F, Fut>(scenario: &str, conc: usize, duration: Duration, op: F) -> Point
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cpu_before = cpu::snapshot();
    let tasks: Vec<_> = (0..conc)
        .map(|w| {
            let op = op.clone();
            let stop = stop.clone();
            let failed = failed.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if op(w, seq).await {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    seq += 1;
                }
                h
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let cpu = cpu::split(&cpu_before, &cpu::snapshot());
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = all.add(h);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let point = Point::from_histogram(
        scenario,
        conc,
        &all,
        failed.load(Ordering::Relaxed),
        secs,
        cpu,
    );
    eprintln!(
        "{:<18} c={:<4} {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  failed {}",
        point.scenario,
        conc,
        point.rate(),
        point.p50_ms,
        point.p99_ms,
        point.p999_ms,
        point.failed
    );
    point
}

/// Open loop: one request every `1 / rate` s whatever the answers do, each latency measured
/// from the moment the request was *due* — a slow answer neither delays the next request nor
/// hides behind it (no coordinated omission). This is how "p99 at half the peak rate" is
/// measured: a closed loop at some concurrency only ever sees the rate its own waiting allows.
/// The point's `concurrency` is 0 (its rate is fixed, not its requests in flight).
pub(crate) async fn drive_rate<F, Fut>(
    scenario: &str,
    rate: f64,
    duration: Duration,
    op: F,
) -> Point
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut failed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // A late tick fires at once: the requests stay due when they were due.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    let started = Instant::now();
    let cpu_before = cpu::snapshot();
    let mut seq = 0u64;
    let mut record = |r: Result<(bool, Duration), tokio::task::JoinError>| match r {
        Ok((true, took)) => {
            let _ = h.record(took.as_micros() as u64);
        }
        _ => failed += 1,
    };
    while started.elapsed() < duration {
        let due = tick.tick().await;
        let op = op.clone();
        inflight.spawn(async move { (op(0, seq).await, due.elapsed()) });
        seq += 1;
        while let Some(r) = inflight.try_join_next() {
            record(r);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu::split(&cpu_before, &cpu::snapshot());
    while let Some(r) = inflight.join_next().await {
        record(r);
    }
    let point = Point::from_histogram(scenario, 0, &h, failed, secs, cpu);
    eprintln!(
        "{:<18} {:>6.0}/s offered {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  failed {}",
        point.scenario, rate, point.rate(), point.p50_ms, point.p99_ms, point.p999_ms, point.failed
    );
    point
}

/// Every event answered 200: its call id and the answer (with the receipts), for diagnosis.
pub(crate) type Acked = Arc<std::sync::Mutex<Vec<(String, String)>>>;

pub(crate) async fn load_bridge(
    port: u16,
    scenario: &str,
    conc: usize,
    duration: Duration,
    run: usize,
    acked: Acked,
) -> Point {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let op = bridge_op(client, port, format!("{scenario}-{run}-{conc}"), acked);
    drive(scenario, conc, duration, op).await
}

/// Prints the first few failed requests of the run (what a `failed` column counts).
pub(crate) fn report_failure(what: impl FnOnce() -> String) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("failed request: {}", what());
    }
}

/// Every concurrency level of the run against the bridge on `port`, a point each; returns how
/// many events were answered 200 in all.
pub(crate) async fn load_levels(
    o: &Opts,
    port: u16,
    scenario: &str,
    acked: &Acked,
    points: &mut Vec<Point>,
) -> u64 {
    let mut ok = 0;
    for (run, &c) in o.concurrency.iter().enumerate() {
        let p = load_bridge(port, scenario, c, o.duration, run, acked.clone()).await;
        ok += p.ok;
        points.push(p);
    }
    ok
}

/// One webhook to the bridge on `port` with a unique call id (`tag`, worker, sequence); true
/// when answered 200 (the answer is kept in `acked` to verify against the brokers).
pub(crate) fn bridge_op(
    client: reqwest::Client,
    port: u16,
    tag: String,
    acked: Acked,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
       + Send
       + Sync
       + 'static {
    let url = Arc::new(format!("http://127.0.0.1:{port}/callback"));
    move |w, seq| {
        let client = client.clone();
        let url = url.clone();
        let call_id = format!("{tag}-{w}-{seq}");
        let body = payload(&call_id);
        let acked = acked.clone();
        Box::pin(async move {
            let resp = match client
                .post(url.as_str())
                .header("X-API-Key", "bench-key")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    report_failure(|| format!("no answer: {e}"));
                    return false;
                }
            };
            if resp.status().as_u16() != 200 {
                let code = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                report_failure(|| {
                    format!("{code}: {}", text.chars().take(300).collect::<String>())
                });
                return false;
            }
            let text = resp.text().await.unwrap_or_default();
            if let Ok(mut a) = acked.lock() {
                a.push((call_id, text));
            }
            true
        })
    }
}
