//! Reading every message back after a run, straight from each broker (not through the
//! proxies), by event id: the Kafka topic (every partition from the start to its high
//! watermark), the RabbitMQ queue (drained), the JetStream stream (every message), the file
//! sink's lines. Each is returned as ordered sequences of event ids: per partition for Kafka,
//! one sequence for the others (a queue, a stream, a file are each one order).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::StreamExt;

pub type Stored = Vec<Vec<String>>;

pub async fn kafka(brokers: &str, topic: &str) -> Result<Stored> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || -> Result<Stored> {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "callbridge-chaos-readback")
            .set("enable.auto.commit", "false")
            .create()?;
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut out = Vec::new();
        for p in parts {
            let (lo, hi) = c.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
            let mut ids = Vec::new();
            if hi > lo {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
                c.assign(&tpl)?;
                let mut last = lo - 1;
                let mut idle = 0;
                while last < hi - 1 {
                    match c.poll(Duration::from_secs(1)) {
                        Some(Ok(m)) => {
                            idle = 0;
                            last = m.offset();
                            let id = m
                                .headers()
                                .and_then(|h| {
                                    h.iter()
                                        .find(|h| h.key == "ce_id")
                                        .and_then(|h| h.value)
                                        .map(|v| String::from_utf8_lossy(v).into_owned())
                                })
                                .unwrap_or_default();
                            ids.push(id);
                        }
                        Some(Err(e)) => bail!("reading {topic}/{p}: {e}"),
                        None => {
                            idle += 1;
                            if idle > 30 {
                                bail!("reading {topic}/{p}: stuck at {last} of {hi}");
                            }
                        }
                    }
                }
            }
            out.push(ids);
        }
        Ok(out)
    })
    .await?
}

pub async fn rabbitmq(url: &str, queue: &str) -> Result<Stored> {
    use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let total = q.message_count() as usize;
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue,
            "chaos-readback",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut ids = Vec::with_capacity(total);
    while ids.len() < total {
        match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(Ok(d))) => ids.push(
                d.properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            ),
            Ok(Some(Err(e))) => bail!("reading {queue}: {e}"),
            Ok(None) | Err(_) => bail!("reading {queue}: stopped at {} of {total}", ids.len()),
        }
    }
    let _ = conn.close(200, "bye").await;
    Ok(vec![ids])
}

pub async fn nats(url: &str, stream: &str) -> Result<Stored> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let mut s = js.get_stream(stream).await?;
    let total = s.info().await?.state.messages as usize;
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut ids = Vec::with_capacity(total);
    while ids.len() < total {
        let mut batch = consumer
            .fetch()
            .max_messages((total - ids.len()).min(1000))
            .expires(Duration::from_secs(5))
            .messages()
            .await?;
        let before = ids.len();
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
            let id = m
                .headers
                .as_ref()
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.to_string().eq_ignore_ascii_case("Nats-Msg-Id"))
                        .and_then(|(_, v)| v.first())
                        .map(|v| v.as_str().to_string())
                })
                .unwrap_or_default();
            ids.push(id);
        }
        if ids.len() == before {
            bail!("reading {stream}: stopped at {} of {total}", ids.len());
        }
    }
    Ok(vec![ids])
}

/// The file sink's lines; a line that is not a JSON event is returned as id `<corrupt>`.
pub fn file(path: &Path) -> Result<Stored> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(vec![text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string))
                .unwrap_or_else(|| "<corrupt>".into())
        })
        .collect()])
}
