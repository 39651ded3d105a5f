//! The brokers' side: declaring the exchange, queue and stream a scenario uses, and counting
//! what each holds afterwards (the verification that nothing answered 200 was lost).

use super::*;

pub(crate) async fn declare_rabbit(ch: &lapin::Channel, exchange: &str, queue: &str) -> Result<()> {
    use lapin::options::*;
    use lapin::types::FieldTable;
    ch.exchange_declare(
        exchange,
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        queue,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue,
        exchange,
        "#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

pub(crate) async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<()> {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: stream.to_string(),
        subjects: vec![format!("{subject}.>"), subject.to_string()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Counting what arrived (verification)
// ---------------------------------------------------------------------------------------------

pub(crate) async fn kafka_count(brokers: &str, topic: &str) -> Result<u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::ClientConfig;
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "callbridge-bench-count")
            .create()?;
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut total = 0u64;
        for t in md.topics() {
            for p in t.partitions() {
                let (lo, hi) = c.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
                total += (hi - lo).max(0) as u64;
            }
        }
        Ok(total)
    })
    .await?
}

/// Reads the whole topic back and names the acknowledged events that are not in it, with the
/// receipts the bridge gave for them, and any (partition, offset) the broker handed out twice.
pub(crate) async fn kafka_diagnose(
    brokers: &str,
    topic: &str,
    acked: &[(String, String)],
) -> Result<String> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-diagnose-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    let total = kafka_count(brokers, topic).await?;
    let mut keys = std::collections::HashSet::new();
    let mut positions = std::collections::HashSet::new();
    while (keys.len() as u64) < total {
        match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Ok(Ok(m)) => {
                positions.insert((m.partition(), m.offset()));
                keys.insert(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
            }
            _ => break,
        }
    }
    eprintln!(
        "diagnose: read {} distinct keys at {} positions (watermarks say {total})",
        keys.len(),
        positions.len()
    );
    let mut seen: BTreeMap<(i64, i64), String> = BTreeMap::new();
    let mut missing = 0;
    let mut duplicates = 0;
    for (call_id, body) in acked {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        let r = &v["sinks"]["kafka"]["receipt"];
        let pos = (
            r["partition"].as_i64().unwrap_or(-1),
            r["offset"].as_i64().unwrap_or(-1),
        );
        if let Some(other) = seen.insert(pos, call_id.clone()) {
            duplicates += 1;
            eprintln!("diagnose: offset {pos:?} acknowledged for both {other} and {call_id}");
        }
        if !keys.contains(call_id) {
            missing += 1;
            if missing <= 10 {
                eprintln!("diagnose: missing {call_id}, acknowledged at {r}");
            }
        }
    }
    eprintln!("diagnose: {missing} acknowledged events missing from {topic}");
    Ok(format!(
        "{missing} events the bridge answered 200 for are missing from the topic although each \
         has a delivery report with a distinct (partition, offset); {duplicates} offsets were \
         handed out twice"
    ))
}

pub(crate) async fn rabbit_count(amqp: &str, queue: &str) -> Result<u64> {
    use lapin::options::QueueDeclareOptions;
    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let n = q.message_count() as u64;
    let _ = ch
        .queue_delete(queue, lapin::options::QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye").await;
    Ok(n)
}

pub(crate) async fn nats_count(nats: &str, stream: &str) -> Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await?);
    let mut s = js.get_stream(stream).await?;
    let n = s.info().await?.state.messages;
    let _ = js.delete_stream(stream).await;
    Ok(n)
}
