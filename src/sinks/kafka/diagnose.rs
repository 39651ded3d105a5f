//! Why a record timed out although a broker answers: librdkafka retries a retriable broker
//! error (`NOT_ENOUGH_REPLICAS`, `UNKNOWN_TOPIC_OR_PART`, a leader moving) until
//! `message.timeout.ms` and then reports only `_MSG_TIMED_OUT`. The cluster's metadata for the
//! topic usually tells the operator the real cause, so the 503 carries it.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::Producer;

use super::producer::Slot;

/// Why a record timed out although a broker answers, read from the cluster's metadata for its
/// topic: the topic is missing, its partition has no leader, or fewer replicas are in sync than
/// the partition has (below the topic's `min.insync.replicas`, `acks=all` cannot be met, and
/// librdkafka only ever reports the timeout). `None` when the metadata does not arrive within
/// `budget` or shows nothing wrong.
pub(super) async fn diagnose(
    slot: Arc<Slot>,
    topic: String,
    partition: Option<i32>,
    budget: Duration,
) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let md = slot
            .producer
            .client()
            .fetch_metadata(Some(&topic), budget)
            .ok()?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        match t.error() {
            Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                return Some(format!("topic {topic} does not exist (create it first)"))
            }
            Some(err) => return Some(format!("the cluster answers {err:?} for topic {topic}")),
            None => {}
        }
        t.partitions()
            .iter()
            .filter(|p| partition.is_none_or(|n| p.id() == n))
            .find_map(|p| {
                if p.leader() < 0 {
                    Some(format!("partition {} of {topic} has no leader", p.id()))
                } else if p.isr().len() < p.replicas().len() {
                    Some(format!(
                        "not enough in-sync replicas? partition {} of {topic} has {} of its {} \
                         replicas in sync (acks=all needs min.insync.replicas)",
                        p.id(),
                        p.isr().len(),
                        p.replicas().len()
                    ))
                } else {
                    None
                }
            })
    })
    .await
    .ok()
    .flatten()
}
