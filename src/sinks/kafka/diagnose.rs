//! Why a record timed out although a broker answers: librdkafka retries a retriable broker
//! error (`NOT_ENOUGH_REPLICAS`, `UNKNOWN_TOPIC_OR_PART`, a leader moving) until
//! `message.timeout.ms` and then reports only `_MSG_TIMED_OUT`. The cluster's metadata for the
//! topic usually tells the operator the real cause, so the 503 carries it.

//!
//! One question at a time per sink, and its answer shared: when a broker outage times out
//! thousands of records at once, each used to ask the cluster on its own blocking thread — the
//! fault suite (docs/reliability.md) saw 150 such threads and 350 MiB of RSS with two of three
//! Kafka brokers down. Now a timed-out record waits (as a task, holding no thread) for the one
//! question in flight and takes its answer, or a recent answer for its topic and partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use super::producer::Slot;

/// How long an answer serves the records that time out after it.
const ANSWER_FRESH: Duration = Duration::from_secs(2);

/// The sink's one question to the cluster at a time, and its last answer.
#[derive(Default)]
pub(super) struct Diagnoser {
    last: tokio::sync::Mutex<Option<Answer>>,
}

struct Answer {
    at: Instant,
    topic: String,
    partition: Option<i32>,
    why: Option<String>,
}

impl Diagnoser {
    /// Why a record of `topic` (`partition`) timed out: a fresh answer for the same place, or
    /// `probe` run (on a blocking thread) by the first caller while the others wait for it.
    /// `None` when the wait or the probe takes longer than `budget`.
    pub(super) async fn explain<F>(
        &self,
        topic: &str,
        partition: Option<i32>,
        budget: Duration,
        probe: F,
    ) -> Option<String>
    where
        F: FnOnce() -> Option<String> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let mut last = tokio::time::timeout(budget, self.last.lock()).await.ok()?;
        if let Some(a) = last.as_ref() {
            if a.at.elapsed() < ANSWER_FRESH && a.topic == topic && a.partition == partition {
                return a.why.clone();
            }
        }
        let left = budget.saturating_sub(started.elapsed());
        let why = tokio::time::timeout(left, tokio::task::spawn_blocking(probe))
            .await
            .ok()?
            .ok()
            .flatten();
        *last = Some(Answer {
            at: Instant::now(),
            topic: topic.to_string(),
            partition,
            why: why.clone(),
        });
        why
    }
}

/// Why a record timed out although a broker answers, read from the cluster's metadata for its
/// topic: the topic is missing, its partition has no leader, or fewer replicas are in sync than
/// the partition has (below the topic's `min.insync.replicas`, `acks=all` cannot be met, and
/// librdkafka only ever reports the timeout). `None` when the metadata does not arrive within
/// `budget` or shows nothing wrong.
pub(super) async fn diagnose(
    diagnoser: &Diagnoser,
    slot: Arc<Slot>,
    topic: String,
    partition: Option<i32>,
    budget: Duration,
) -> Option<String> {
    let name = topic.clone();
    diagnoser
        .explain(&name, partition, budget, move || {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_timeouts_asks_the_cluster_once() {
        let d = Arc::new(Diagnoser::default());
        let asked = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (d, asked) = (d.clone(), asked.clone());
            tasks.push(tokio::spawn(async move {
                d.explain("t", Some(0), Duration::from_secs(5), move || {
                    asked.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    Some("no leader".to_string())
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().as_deref(), Some("no leader"));
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one question for the burst"
        );
        // Another partition is another question.
        let other = d
            .explain("t", Some(1), Duration::from_secs(5), || {
                Some("in sync".into())
            })
            .await;
        assert_eq!(other.as_deref(), Some("in sync"));
    }

    #[tokio::test]
    async fn a_slow_answer_is_none_within_the_budget() {
        let d = Diagnoser::default();
        let why = d
            .explain("t", None, Duration::from_millis(50), || {
                std::thread::sleep(Duration::from_millis(300));
                Some("late".into())
            })
            .await;
        assert_eq!(why, None);
    }
}
