//! `validate --connect` for Kafka: would each topic the config can render store a record now?
//!
//! Read from the cluster's metadata (one request per topic, no topic is ever created: the
//! client asks with `allow.auto.create.topics=false`, where a producer's default would let a
//! broker with auto-creation create the topic being checked): the topic exists, every partition
//! has a leader. Then, because the sink always publishes with `acks=all`, one DescribeConfigs
//! request reads each topic's effective `min.insync.replicas` (its own or the broker's): a
//! replication factor below it refuses every record (missing); fewer replicas in sync than it
//! refuses records until they catch up (a warning: it is a state, not a configuration). A
//! cluster that does not let us read configurations only loses that second check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, OwnedResourceSpecifier, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaRespErr;

use super::settings::{redact_config_error, KafkaSinkSettings};
use crate::sinks::preflight::{Check, Probe, ProbeError};

/// The shortest wait given to one request, even when the budget is nearly spent.
const MIN_REQUEST: Duration = Duration::from_millis(200);

/// One topic as the metadata shows it.
#[derive(Debug)]
enum TopicState {
    Missing,
    Error(RDKafkaRespErr),
    Present(Vec<PartitionState>),
}

/// What the metadata requests found: each topic, and a broker that answered.
type Metadata = (Vec<(String, TopicState)>, Option<i32>);

#[derive(Debug)]
struct PartitionState {
    id: i32,
    leader: i32,
    error: Option<RDKafkaRespErr>,
    replicas: usize,
    isr: usize,
}

/// Checks each of `topics` within `budget`. Err: no broker answered.
pub async fn probe(
    settings: &KafkaSinkSettings,
    topics: &[String],
    budget: Duration,
) -> Result<Probe, ProbeError> {
    let deadline = Instant::now() + budget;
    let mut config = settings.client_config();
    config.set("allow.auto.create.topics", "false");
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| ProbeError::Client(redact_config_error(&e)))?;
    let admin = Arc::new(admin);

    let (states, broker) = {
        let admin = admin.clone();
        let names = topics.to_vec();
        tokio::task::spawn_blocking(move || read_metadata(&admin, &names, deadline))
            .await
            .map_err(|e| ProbeError::broker("the metadata request did not finish", e))??
    };

    let present: Vec<&str> = states
        .iter()
        .filter(|(_, s)| matches!(s, TopicState::Present(_)))
        .map(|(t, _)| t.as_str())
        .collect();
    let mut notes = Vec::new();
    let min_isr = match min_insync_replicas(&admin, &present, deadline).await {
        Ok(m) => m,
        Err(why) => {
            notes.push(format!(
                "min.insync.replicas not read ({why}): in-sync replicas not compared with it"
            ));
            HashMap::new()
        }
    };
    let auto_create = match broker {
        Some(id) if states.iter().any(|(_, s)| matches!(s, TopicState::Missing)) => {
            auto_create_enabled(&admin, id, deadline).await
        }
        _ => None,
    };

    let checks = states
        .iter()
        .map(|(topic, state)| judge(state, min_isr.get(topic.as_str()).copied(), auto_create))
        .collect();
    // librdkafka's teardown blocks: off the runtime's workers.
    tokio::task::spawn_blocking(move || drop(admin));
    Ok(Probe { checks, notes })
}

/// Metadata of each topic, one request each, and the id of a broker that answered. Err when a
/// request fails as a whole (no broker answered in time): that is the cluster, not the topic.
fn read_metadata(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
    deadline: Instant,
) -> Result<Metadata, ProbeError> {
    let mut broker = None;
    let states = topics
        .iter()
        .map(|topic| {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(MIN_REQUEST);
            let md = admin
                .inner()
                .fetch_metadata(Some(topic), wait)
                .map_err(|e| ProbeError::connect("no broker answered a metadata request", e))?;
            broker = broker.or(md.brokers().first().map(|b| b.id()));
            let state = match md.topics().iter().find(|t| t.name() == topic) {
                None => TopicState::Missing,
                Some(t) => match t.error() {
                    Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                        TopicState::Missing
                    }
                    Some(e) => TopicState::Error(e),
                    None => TopicState::Present(
                        t.partitions()
                            .iter()
                            .map(|p| PartitionState {
                                id: p.id(),
                                leader: p.leader(),
                                error: p.error(),
                                replicas: p.replicas().len(),
                                isr: p.isr().len(),
                            })
                            .collect(),
                    ),
                },
            };
            Ok((topic.clone(), state))
        })
        .collect::<Result<_, ProbeError>>()?;
    Ok((states, broker))
}

/// Each topic's effective `min.insync.replicas` (the topic's, else the broker's default), in one
/// DescribeConfigs request.
async fn min_insync_replicas(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[&str],
    deadline: Instant,
) -> Result<HashMap<String, usize>, String> {
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_REQUEST);
    let opts = AdminOptions::new().request_timeout(Some(wait));
    let results = admin
        .describe_configs(&specs, &opts)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for r in results {
        let resource = r.map_err(|code| format!("{code:?}"))?;
        let OwnedResourceSpecifier::Topic(name) = &resource.specifier else {
            continue;
        };
        if let Some(v) = resource
            .entry_map()
            .get("min.insync.replicas")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
        {
            out.insert(name.clone(), v);
        }
    }
    Ok(out)
}

/// Whether a broker creates topics on first use (`auto.create.topics.enable`), read from the
/// configuration of `broker`; `None` when it cannot be read.
async fn auto_create_enabled(
    admin: &AdminClient<DefaultClientContext>,
    broker: i32,
    deadline: Instant,
) -> Option<bool> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_REQUEST);
    let opts = AdminOptions::new().request_timeout(Some(wait));
    let results = admin
        .describe_configs(&[ResourceSpecifier::Broker(broker)], &opts)
        .await
        .ok()?;
    let resource = results.into_iter().next()?.ok()?;
    let value = resource
        .entry_map()
        .get("auto.create.topics.enable")?
        .value
        .clone()?;
    Some(value == "true")
}

/// The verdict for one topic. `min_isr`: its `min.insync.replicas`, when known; `auto_create`:
/// whether the broker creates missing topics on first use, when known.
fn judge(state: &TopicState, min_isr: Option<usize>, auto_create: Option<bool>) -> Check {
    let parts = match state {
        TopicState::Missing if auto_create == Some(true) => {
            return Check::unverified(
                "does not exist yet; the broker creates topics on first use \
                 (auto.create.topics.enable=true), with its default partitions and replication",
            )
        }
        TopicState::Missing => {
            return Check::missing("the topic does not exist (create it; the bridge never does)")
        }
        TopicState::Error(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
            return Check::missing("not authorized to describe the topic (check its ACLs)")
        }
        TopicState::Error(e) => {
            return Check::missing(format!("the cluster answers {e:?} for the topic"))
        }
        TopicState::Present(parts) => parts,
    };
    if parts.is_empty() {
        return Check::missing("the topic has no partitions");
    }
    if let Some(p) = parts.iter().find(|p| p.leader < 0) {
        return Check::missing(format!("partition {} has no leader", p.id));
    }
    if let Some((p, e)) = parts.iter().find_map(|p| p.error.map(|e| (p, e))) {
        return Check::missing(format!("partition {} answers {e:?}", p.id));
    }
    let replicas = parts.iter().map(|p| p.replicas).min().unwrap_or(0);
    let isr = parts.iter().map(|p| p.isr).min().unwrap_or(0);
    let s = if parts.len() == 1 { "" } else { "s" };
    let mut evidence = format!(
        "{} partition{s}, each with a leader; {isr} of {replicas} replicas in sync",
        parts.len()
    );
    let Some(min) = min_isr else {
        return Check::ok(evidence);
    };
    evidence.push_str(&format!(" (min.insync.replicas {min})"));
    if replicas < min {
        return Check::missing(format!(
            "replication factor {replicas} is below min.insync.replicas {min}: the broker \
             refuses every acks=all record (NOT_ENOUGH_REPLICAS)"
        ));
    }
    let short: Vec<String> = parts
        .iter()
        .filter(|p| p.isr < min)
        .map(|p| p.id.to_string())
        .collect();
    let check = Check::ok(evidence);
    if short.is_empty() {
        check
    } else {
        check.with_warning(format!(
            "partition(s) {} have fewer in-sync replicas than min.insync.replicas {min}: \
             acks=all records are refused until replicas catch up",
            short.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::preflight::Verdict;

    fn part(id: i32, leader: i32, replicas: usize, isr: usize) -> PartitionState {
        PartitionState {
            id,
            leader,
            error: None,
            replicas,
            isr,
        }
    }

    #[test]
    fn judges_topics_from_their_metadata() {
        let missing = judge(&TopicState::Missing, None, Some(false));
        assert!(matches!(missing.verdict, Verdict::Missing(ref m) if m.contains("does not exist")));
        let auto = judge(&TopicState::Missing, None, Some(true));
        assert!(matches!(auto.verdict, Verdict::Unverified(ref m) if m.contains("auto.create")));

        let good = TopicState::Present(vec![part(0, 1, 3, 3), part(1, 2, 3, 3)]);
        let c = judge(&good, Some(2), None);
        assert_eq!(
            c.verdict,
            Verdict::Ok(
                "2 partitions, each with a leader; 3 of 3 replicas in sync (min.insync.replicas 2)"
                    .into()
            )
        );
        assert!(c.warnings.is_empty());

        let leaderless = TopicState::Present(vec![part(0, 1, 1, 1), part(1, -1, 1, 0)]);
        assert_eq!(
            judge(&leaderless, None, None).verdict,
            Verdict::Missing("partition 1 has no leader".into())
        );

        let short = TopicState::Present(vec![part(0, 1, 3, 1), part(1, 2, 3, 3)]);
        let c = judge(&short, Some(2), None);
        assert!(matches!(c.verdict, Verdict::Ok(_)));
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].starts_with("partition(s) 0 "),
            "{:?}",
            c.warnings
        );

        let thin = TopicState::Present(vec![part(0, 1, 1, 1)]);
        assert!(matches!(
            judge(&thin, Some(2), None).verdict,
            Verdict::Missing(ref m) if m.contains("replication factor 1")
        ));
    }
}
