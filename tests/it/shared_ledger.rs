//! The shared ledger (`idempotency.store: nats-kv`): two bridge processes, one bucket on the
//! machine's NATS, RabbitMQ sinks (RabbitMQ keeps every copy it is given, so a count of the
//! queue is a count of publishes).

use std::time::Duration;

use lapin::types::FieldTable;
use serde_json::Value;

use crate::common::proxy::TcpProxy;
use crate::common::*;
use crate::nats::NATS_URL;
use crate::rabbitmq::{Broker, AMQP_URL, BROKER};

/// A config: two RabbitMQ sinks (`r1` at `url1`, `r2` at `url2`, one exchange each) and the
/// shared ledger in `bucket`.
fn config(bucket: &str, sinks: &[(&str, &str, &str)], lease_secs: u64) -> String {
    let mut yaml = format!(
        "log: {{format: json}}\n\
         idempotency: {{store: nats-kv, url: \"{NATS_URL}\", bucket: {bucket}, lease_secs: {lease_secs}}}\n"
    );
    let list: String = sinks
        .iter()
        .map(|(name, url, exchange)| {
            format!(
                "  - {{name: {name}, type: rabbitmq, url: \"{url}\", exchange: \"{exchange}\", \
                 routing_key: \"calls.{{kind}}.{{status}}\", timeout_ms: 2000}}\n"
            )
        })
        .collect();
    yaml.push_str(&config_with_sinks(&list));
    yaml
}

async fn ready(bridge: &Bridge) {
    let url = format!("{}/readyz", bridge.base());
    eventually(Duration::from_secs(20), "the bridge to be ready", || {
        let url = url.clone();
        async move {
            let r = reqwest::get(&url).await.ok()?;
            (r.status().as_u16() == 200).then_some(())
        }
    })
    .await;
}

async fn post(bridge: &Bridge, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/callback", bridge.base()))
        .header("X-API-Key", KEY)
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn metric(bridge: &Bridge, line_prefix: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", bridge.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A topic exchange with one queue catching everything, for one sink.
async fn exchange_with_queue(tag: &str) -> (Broker, String) {
    Broker::with_queue(tag, "#", FieldTable::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_the_other_replica_is_a_duplicate_with_the_first_receipts() {
    let bucket = unique("ledger");
    let (b1, q1) = exchange_with_queue("kv-dup").await;
    let yaml = config(&bucket, &[("r1", AMQP_URL, &b1.exchange)], 52);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        Bridge::start(da.path(), &yaml, &[]),
        Bridge::start(db.path(), &yaml, &[]),
    );
    ready(&a).await;
    ready(&b).await;

    let body = status_payload(&unique("kvcall"), "completed");
    let (status, first) = post(&a, &body).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = post(&b, &body).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["sinks"]["r1"]["duplicate"], true, "{second}");
    assert_eq!(
        second["sinks"]["r1"]["receipt"], first["sinks"]["r1"]["receipt"],
        "B answers with A's receipt"
    );
    assert_eq!(second["event_id"], first["event_id"]);
    assert_eq!(b1.message_count(&q1).await, 1, "published once, by A");
    assert_eq!(
        metric(&b, "callbridge_ledger_kv_claims_total{outcome=\"acked\"}").await,
        1.0
    );
    b1.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_on_two_replicas_store_one_copy_each() {
    let bucket = unique("ledger");
    let (b1, q1) = exchange_with_queue("kv-race").await;
    let yaml = config(&bucket, &[("r1", AMQP_URL, &b1.exchange)], 52);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        Bridge::start(da.path(), &yaml, &[]),
        Bridge::start(db.path(), &yaml, &[]),
    );
    ready(&a).await;
    ready(&b).await;

    let events: Vec<Value> = (0..20)
        .map(|_| status_payload(&unique("kvrace"), "completed"))
        .collect();
    let mut tasks = Vec::new();
    for body in &events {
        for bridge in [&a, &b] {
            let (url, body) = (format!("{}/callback", bridge.base()), body.to_string());
            tasks.push(tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .header("X-API-Key", KEY)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or_default())
            }));
        }
    }
    let mut published = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        // The loser waits for the winner's receipt: a duplicate, or (past its deadline) 503.
        assert!(status == 200 || status == 503, "{status} {body}");
        if status == 200 && body["sinks"]["r1"]["duplicate"] != true {
            published += 1;
        }
    }
    assert_eq!(published, 20, "each event published by exactly one replica");
    assert_eq!(b1.message_count(&q1).await, 20, "one copy of each event");
    b1.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_on_one_replica_is_completed_by_the_other_alone() {
    let bucket = unique("ledger");
    let (b1, q1) = exchange_with_queue("kv-part1").await;
    let (b2, q2) = exchange_with_queue("kv-part2").await;
    let proxy = TcpProxy::start(BROKER.parse().unwrap()).await;
    let via_proxy = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let yaml_a = config(
        &bucket,
        &[
            ("r1", AMQP_URL, &b1.exchange),
            ("r2", &via_proxy, &b2.exchange),
        ],
        52,
    );
    let yaml_b = config(
        &bucket,
        &[
            ("r1", AMQP_URL, &b1.exchange),
            ("r2", AMQP_URL, &b2.exchange),
        ],
        52,
    );
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Bridge::start(da.path(), &yaml_a, &[]);
    let b = Bridge::start(db.path(), &yaml_b, &[]);
    ready(&a).await;
    ready(&b).await;
    proxy.cut();

    let body = status_payload(&unique("kvpart"), "completed");
    let (status, first) = post(&a, &body).await;
    assert_eq!(status, 503, "{first}");
    assert!(first["sinks"]["r1"]["receipt"].is_object(), "{first}");
    let (status, second) = post(&b, &body).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["sinks"]["r1"]["duplicate"], true, "{second}");
    assert!(second["sinks"]["r2"].get("duplicate").is_none(), "{second}");
    assert_eq!(b1.message_count(&q1).await, 1, "r1 holds A's copy only");
    assert_eq!(b2.message_count(&q2).await, 1, "r2 got B's copy");
    b1.cleanup().await;
    b2.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_publish_is_taken_over_once_its_lease_ends() {
    let bucket = unique("ledger");
    let (b1, q1) = exchange_with_queue("kv-kill").await;
    let proxy = TcpProxy::start(BROKER.parse().unwrap()).await;
    let via_proxy = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Bridge::start(
        da.path(),
        &config(&bucket, &[("r1", &via_proxy, &b1.exchange)], 1),
        &[],
    );
    let b = Bridge::start(
        db.path(),
        &config(&bucket, &[("r1", AMQP_URL, &b1.exchange)], 1),
        &[],
    );
    ready(&a).await;
    ready(&b).await;

    // A claims and publishes into a connection that forwards nothing: the publish hangs.
    proxy.freeze();
    let body = status_payload(&unique("kvkill"), "completed");
    let hanging = {
        let (url, body) = (format!("{}/callback", a.base()), body.to_string());
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(url)
                .header("X-API-Key", KEY)
                .body(body)
                .send()
                .await;
        })
    };
    eventually(Duration::from_secs(10), "A's claim", || async {
        (metric(&a, "callbridge_ledger_kv_claims_total{outcome=\"mine\"}").await >= 1.0)
            .then_some(())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = a.wait().await;
    hanging.abort();

    // B waits out A's lease (1 s, within its 3 s deadline) and publishes itself.
    let (status, answer) = post(&b, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["sinks"]["r1"].get("duplicate").is_none(), "{answer}");
    assert_eq!(b1.message_count(&q1).await, 1, "one copy, B's");
    assert_eq!(
        metric(&b, "callbridge_ledger_kv_takeovers_total ").await,
        1.0
    );
    b1.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_ledger_fails_closed() {
    let (b1, q1) = exchange_with_queue("kv-down").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let yaml = config(&unique("ledger"), &[("r1", AMQP_URL, &b1.exchange)], 52)
        .replace(NATS_URL, &format!("nats://127.0.0.1:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let a = Bridge::start(dir.path(), &yaml, &[]);
    let (status, answer) = post(&a, &status_payload(&unique("kvdown"), "completed")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["sinks"]["r1"]["error"]["code"], "not_connected",
        "{answer}"
    );
    assert_eq!(
        b1.message_count(&q1).await,
        0,
        "nothing published unchecked"
    );
    b1.cleanup().await;
}

/// Issue #28, item 9: two deployments (different `event.source`) share one bucket and each has
/// a sink named `r1`: the same webhook sent to both is published by both, neither answers the
/// other's event `duplicate`. An explicit `idempotency.namespace` shared by both makes them one
/// deployment again (the second is a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_ledger_namespace_keeps_two_deployments_on_one_bucket_apart() {
    let bucket = unique("ledger-ns");
    let (b1, q1) = exchange_with_queue("kv-ns-a").await;
    let (b2, q2) = exchange_with_queue("kv-ns-b").await;
    let deployment = |source: &str, exchange: &str, namespace: &str| {
        let yaml = config(&bucket, &[("r1", AMQP_URL, exchange)], 52)
            .replace(
                "log: {format: json}\n",
                &format!("event: {{source: \"{source}\"}}\n"),
            )
            .replace("lease_secs: 52}", &format!("lease_secs: 52{namespace}}}"));
        settings(&yaml)
    };
    let a = spawn_settings(deployment("/billing", &b1.exchange, "")).await;
    let b = spawn_settings(deployment("/support", &b2.exchange, "")).await;
    a.await_ready(true).await;
    b.await_ready(true).await;

    let body = status_payload(&unique("kvns"), "completed");
    let first = a.post(&body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = b.post(&body).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.event_id(), first.event_id(), "the same event id");
    assert!(
        second.body["sinks"]["r1"]["duplicate"].is_null(),
        "not the other deployment's duplicate: {}",
        second.body
    );
    assert_eq!(b1.message_count(&q1).await, 1, "published by the first");
    assert_eq!(b2.message_count(&q2).await, 1, "and by the second");
    a.stop().await;
    b.stop().await;

    // One namespace configured on both: one deployment, whatever their sources say.
    let ns = ", namespace: shared-ns";
    let a = spawn_settings(deployment("/billing", &b1.exchange, ns)).await;
    let b = spawn_settings(deployment("/support", &b2.exchange, ns)).await;
    a.await_ready(true).await;
    b.await_ready(true).await;
    let body = status_payload(&unique("kvns-one"), "completed");
    assert_eq!(a.post(&body).await.status, 200);
    let again = b.post(&body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body["sinks"]["r1"]["duplicate"], true,
        "{}",
        again.body
    );
    assert_eq!(b1.message_count(&q1).await, 2);
    assert_eq!(
        b2.message_count(&q2).await,
        1,
        "nothing more published by the second"
    );
    a.stop().await;
    b.stop().await;
    b1.cleanup().await;
    b2.cleanup().await;
}
