//! The steady load: an open-loop generator (a new call on a fixed tick, whatever the bridge is
//! doing — senders do not slow down because a broker is down). Every call id is unique; one
//! call in three sends three statuses, each only after the previous one was answered (as the
//! platform sends a call's statuses). Each request has a deadline of 15 s on the client, so an
//! answer after the sender's 10 s is measured, not just cut off. Every outcome is recorded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The statuses of a multi-status call, in the order they are sent.
pub const STATUSES: [&str; 3] = ["registered", "ongoing", "completed"];

#[derive(Debug, Clone)]
pub enum Outcome {
    Answer {
        code: u16,
        retry_after: bool,
        event_id: Option<String>,
        /// Per sink: ok, spooled, the error code when not ok.
        sinks: BTreeMap<String, SinkBrief>,
        /// The top-level error code of an error answer.
        error: Option<String>,
    },
    /// Connection refused: nothing listened (the bridge was down).
    Refused,
    /// No answer within the client's 15 s.
    Timeout,
    /// The connection broke before an answer (reset, closed).
    Broken(String),
}

#[derive(Debug, Clone, Default)]
pub struct SinkBrief {
    pub ok: bool,
    pub spooled: bool,
    pub code: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rec {
    pub call: String,
    pub seq: usize,
    /// Seconds since the run's start when the request was sent.
    pub sent: f64,
    pub latency: f64,
    pub outcome: Outcome,
}

pub type Recs = Arc<Mutex<Vec<Rec>>>;

pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts `rate` events per second against `port`, call ids prefixed `tag`.
    pub fn start(port: u16, rate: f64, tag: String, t0: Instant, recs: Recs) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(256)
            // Below the server's keep-alive (actix: 5 s), so a request is never sent on a
            // connection the server is closing as idle at that moment (a client-side race
            // that would show as a broken connection).
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let url = Arc::new(format!("http://127.0.0.1:{port}/callback"));
        // One call in three has three statuses: 5 events per 3 calls.
        let calls_per_sec = rate * 3.0 / 5.0;
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / calls_per_sec));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut calls = tokio::task::JoinSet::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let statuses: &[&str] = if n % 3 == 0 {
                        &STATUSES
                    } else {
                        &STATUSES[2..]
                    };
                    let call = format!("{tag}-{n}");
                    let (client, url, recs) = (client.clone(), url.clone(), recs.clone());
                    calls.spawn(async move {
                        for (seq, status) in statuses.iter().enumerate() {
                            let body = callbridge::cli::sample_payload(&call, "status", status)
                                .to_string();
                            let started = Instant::now();
                            let sent_at = started.duration_since(t0).as_secs_f64();
                            let outcome = post(&client, &url, body).await;
                            let rec = Rec {
                                call: call.clone(),
                                seq,
                                sent: sent_at,
                                latency: started.elapsed().as_secs_f64(),
                                outcome,
                            };
                            if let Ok(mut r) = recs.lock() {
                                r.push(rec);
                            }
                        }
                    });
                    // Reap finished calls as we go (the set stays small).
                    while calls.try_join_next().is_some() {}
                    n += 1;
                }
                while calls.join_next().await.is_some() {}
            })
        };
        Load { stop, task }
    }

    /// Stops sending new calls and waits for every call in flight to finish.
    pub async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Outcome {
    let resp = match client
        .post(url)
        .header("X-API-Key", crate::KEY)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(e) if e.is_connect() => return Outcome::Refused,
        Err(e) => return Outcome::Broken(error_chain(&e)),
    };
    let code = resp.status().as_u16();
    let retry_after = resp.headers().contains_key("retry-after");
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(e) => return Outcome::Broken(error_chain(&e)),
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let sinks = v["sinks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        SinkBrief {
                            ok: s["ok"].as_bool().unwrap_or(false),
                            spooled: s["spooled"].as_bool().unwrap_or(false),
                            code: s["error"]["code"].as_str().map(str::to_string),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Outcome::Answer {
        code,
        retry_after,
        event_id: v["event_id"].as_str().map(str::to_string),
        sinks,
        error: v["error"]["code"].as_str().map(str::to_string),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
