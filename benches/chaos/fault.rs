//! The faults: what each does to a broker, its proxy, the bridge or the disk, the schedules,
//! and applying one (then waiting until the bridge and the brokers are healthy again).

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    KafkaLeaderKill,
    KafkaStop,
    KafkaCut,
    KafkaStall,
    KafkaTwoDown,
    RabbitKill,
    RabbitStop,
    RabbitCut,
    RabbitStall,
    NatsKill,
    NatsStop,
    NatsCut,
    NatsStall,
    BridgeTerm,
    BridgeKill,
    DiskFull,
}

impl Fault {
    pub(crate) const ALL: [Fault; 16] = [
        Fault::KafkaLeaderKill,
        Fault::KafkaStop,
        Fault::KafkaCut,
        Fault::KafkaStall,
        Fault::KafkaTwoDown,
        Fault::RabbitKill,
        Fault::RabbitStop,
        Fault::RabbitCut,
        Fault::RabbitStall,
        Fault::NatsKill,
        Fault::NatsStop,
        Fault::NatsCut,
        Fault::NatsStall,
        Fault::BridgeTerm,
        Fault::BridgeKill,
        Fault::DiskFull,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::KafkaLeaderKill => "kafka-leader-sigkill",
            Fault::KafkaStop => "kafka-leader-sigstop",
            Fault::KafkaCut => "kafka-proxy-cut",
            Fault::KafkaStall => "kafka-proxy-stall",
            Fault::KafkaTwoDown => "kafka-two-of-three-down",
            Fault::RabbitKill => "rabbitmq-sigkill",
            Fault::RabbitStop => "rabbitmq-sigstop",
            Fault::RabbitCut => "rabbitmq-proxy-cut",
            Fault::RabbitStall => "rabbitmq-proxy-stall",
            Fault::NatsKill => "nats-sigkill",
            Fault::NatsStop => "nats-sigstop",
            Fault::NatsCut => "nats-proxy-cut",
            Fault::NatsStall => "nats-proxy-stall",
            Fault::BridgeTerm => "bridge-sigterm",
            Fault::BridgeKill => "bridge-sigkill",
            Fault::DiskFull => "disk-full",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Fault> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .with_context(|| format!("unknown fault {s}"))
    }

    /// The bridge itself is stopped: refused connections are expected.
    pub(crate) fn stops_bridge(self) -> bool {
        matches!(self, Fault::BridgeTerm | Fault::BridgeKill)
    }
}

/// The short mode's faults: every kind of fault and every broker at least once, split between
/// the two modes so the whole run fits in about five minutes.
pub(crate) fn short_schedule(mode: &str) -> Vec<Fault> {
    if mode == "fail" {
        vec![
            Fault::KafkaLeaderKill,
            Fault::RabbitCut,
            Fault::NatsStop,
            Fault::KafkaStall,
            Fault::BridgeTerm,
        ]
    } else {
        vec![
            Fault::KafkaTwoDown,
            Fault::RabbitKill,
            Fault::NatsStall,
            Fault::BridgeKill,
            Fault::DiskFull,
        ]
    }
}

/// Applies one fault for its time, undoes it, and waits for the bridge to be ready again and
/// the brokers healthy (so faults do not compound).
pub(crate) async fn fault(
    o: &Opts,
    w: &mut World,
    bridge: &mut bridge::Bridge,
    f: Fault,
    topic: &str,
    t0: Instant,
) -> Result<Phase> {
    let start = secs(t0);
    let hold = o.hold;
    let stop = Duration::from_secs(STOP_SECS);
    let mut note = String::new();
    let leader = match w.kafka.leader(topic).await {
        Some(l) if l != 1 && l > 0 => l as usize,
        _ => 2,
    };
    match f {
        Fault::KafkaLeaderKill => {
            w.kafka.kill(leader);
            note = format!("node {leader} (leader of partition 0) SIGKILLed");
            tokio::time::sleep(hold).await;
            w.kafka.start_node(leader)?;
        }
        Fault::KafkaStop => {
            w.kafka.signal(leader, Signal::SIGSTOP);
            note = format!("node {leader} (leader of partition 0) SIGSTOPped");
            tokio::time::sleep(stop).await;
            w.kafka.signal(leader, Signal::SIGCONT);
        }
        Fault::KafkaCut | Fault::KafkaStall => {
            for p in &w.kafka.proxies {
                if f == Fault::KafkaCut {
                    p.cut()
                } else {
                    p.stall_replies()
                }
            }
            tokio::time::sleep(hold).await;
            for p in &w.kafka.proxies {
                p.restore();
            }
        }
        Fault::KafkaTwoDown => {
            w.kafka.kill(2);
            w.kafka.kill(3);
            note = "nodes 2 and 3 SIGKILLed (ISR below min.insync.replicas=2)".into();
            tokio::time::sleep(hold).await;
            w.kafka.start_node(2)?;
            w.kafka.start_node(3)?;
        }
        Fault::RabbitKill => {
            w.rabbit.kill();
            tokio::time::sleep(hold).await;
            w.rabbit.start_node()?;
        }
        Fault::RabbitStop => {
            w.rabbit.signal(Signal::SIGSTOP);
            tokio::time::sleep(stop).await;
            w.rabbit.signal(Signal::SIGCONT);
        }
        Fault::RabbitCut => {
            w.rabbit.proxy.cut();
            tokio::time::sleep(hold).await;
            w.rabbit.proxy.restore();
        }
        Fault::RabbitStall => {
            w.rabbit.proxy.stall_replies();
            tokio::time::sleep(hold).await;
            w.rabbit.proxy.restore();
        }
        Fault::NatsKill => {
            w.nats.kill();
            tokio::time::sleep(hold).await;
            w.nats.start_node()?;
        }
        Fault::NatsStop => {
            w.nats.signal(Signal::SIGSTOP);
            tokio::time::sleep(stop).await;
            w.nats.signal(Signal::SIGCONT);
        }
        Fault::NatsCut => {
            w.nats.proxy.cut();
            tokio::time::sleep(hold).await;
            w.nats.proxy.restore();
        }
        Fault::NatsStall => {
            w.nats.proxy.stall_replies();
            tokio::time::sleep(hold).await;
            w.nats.proxy.restore();
        }
        Fault::BridgeTerm | Fault::BridgeKill => {
            let sig = if f == Fault::BridgeTerm {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            note = match bridge.signal_and_wait(sig, Duration::from_secs(30)).await {
                Some(d) => format!(
                    "exited {:.1} s after the signal; restarted",
                    d.as_secs_f64()
                ),
                None => "did not exit within 30 s (killed); restarted".into(),
            };
            bridge.start().await?;
        }
        Fault::DiskFull => {
            if let Some(d) = &w.disk {
                let n = d.fill()?;
                note = format!("tmpfs filled ({} MiB filler)", n >> 20);
                tokio::time::sleep(hold).await;
                d.free();
            }
        }
    }
    let heal = secs(t0);
    let ready = wait_until(Duration::from_secs(120), || bridge.ready())
        .await
        .then(|| secs(t0));
    // Let the brokers finish healing before the next fault (not counted as recovery).
    let _ = tokio::join!(
        w.kafka.wait_healthy(Some(topic), Duration::from_secs(120)),
        w.rabbit.wait_up(Duration::from_secs(120)),
        w.nats.wait_up(Duration::from_secs(60))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Phase {
        fault: f,
        start,
        heal,
        ready,
        end: secs(t0),
        note,
    })
}
