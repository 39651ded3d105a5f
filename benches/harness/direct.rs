//! Direct baselines: each broker alone, published to with its client library and the
//! acknowledgement the sink uses.

use super::*;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

pub(crate) async fn kafka_topic(brokers: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for r in res {
        if let Err((t, e)) = r {
            bail!("create topic {t}: {e}");
        }
    }
    Ok(())
}

pub(crate) async fn kafka(o: &Opts, conc: usize, topic: &str) -> Result<Point> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &o.kafka)
        .set("acks", "all")
        .set(
            "enable.idempotence",
            if o.kafka_idempotence { "true" } else { "false" },
        )
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("message.timeout.ms", "3800")
        .create()?;
    let body = Arc::new(payload("direct-kafka"));
    let topic = topic.to_string();
    Ok(drive("direct-kafka", conc, o.duration, move |w, seq| {
        let producer = producer.clone();
        let body = body.clone();
        let topic = topic.clone();
        async move {
            let key = format!("k-{w}-{seq}");
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(body.as_bytes()),
                    Duration::from_secs(5),
                )
                .await
                .is_ok()
        }
    })
    .await)
}

/// The broker's best acknowledged rate: `rabbit_direct_channels` confirm-mode channels,
/// every worker publishing on them at once (many unconfirmed publishes per channel, as
/// pipelining clients do), mandatory + persistent; an `Ack` without a return counts. No
/// return attribution is needed here: everything is routable.
///
/// `rate`: open loop at that rate instead of `conc` in flight (`direct-rabbitmq-open`).
/// `ce`: each message as the sink sends it — the CloudEvents binary binding's properties
/// and `cloudEvents_*` headers and the sink's sequence header, built per publish by the
/// sink's own `build_message` (`direct-rabbitmq-ce`): the broker's best rate for the
/// bridge's messages, where the plain baseline is its best rate for a bare body.
pub(crate) async fn rabbitmq(
    o: &Opts,
    conc: usize,
    rate: Option<f64>,
    ce: bool,
    exchange: &str,
    queue: &str,
) -> Result<Point> {
    use lapin::options::*;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(&o.amqp, ConnectionProperties::default()).await?;
    let mut pool = Vec::new();
    let channels = match rate {
        Some(_) => o.rabbit_direct_channels.max(1),
        None => conc.min(o.rabbit_direct_channels.max(1)),
    };
    for _ in 0..channels {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        pool.push(ch);
    }
    super::declare_rabbit(&pool[0], exchange, queue).await?;
    let pool = Arc::new(pool);
    let body = Arc::new(payload("direct-rabbitmq"));
    let event = Arc::new(callbridge::sinks::Outgoing::new(
        callbridge::event::normalize(
            &serde_json::from_str(&body)?,
            Default::default(),
            &Default::default(),
            "2026-01-01T00:00:00Z".into(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    ));
    let exchange = exchange.to_string();
    let op = move |w: usize, seq: u64| {
        let pool = pool.clone();
        let body = body.clone();
        let event = event.clone();
        let exchange = exchange.clone();
        async move {
            let ch = &pool[(w + seq as usize) % pool.len()];
            let (bytes, props) = if ce {
                callbridge::sinks::rabbitmq::message::build_message(Default::default(), &event, seq)
            } else {
                (
                    bytes::Bytes::copy_from_slice(body.as_bytes()),
                    BasicProperties::default(),
                )
            };
            let props = props
                .with_delivery_mode(2)
                .with_message_id(format!("d-{w}-{seq}").into());
            let confirm = ch
                .basic_publish(
                    &exchange,
                    "calls.status.completed",
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &bytes,
                    props,
                )
                .await;
            match confirm {
                Ok(c) => matches!(
                    c.await,
                    Ok(lapin::publisher_confirm::Confirmation::Ack(None))
                ),
                Err(_) => false,
            }
        }
    };
    let name = if ce {
        "direct-rabbitmq-ce"
    } else {
        "direct-rabbitmq"
    };
    let point = match rate {
        Some(r) => drive_rate(&format!("{name}-open"), r, o.duration, op).await,
        None => drive(name, conc, o.duration, op).await,
    };
    let _ = conn.close(200, "bye").await;
    Ok(point)
}

/// The RabbitMQ sink itself, driven in-process without HTTP (opt-in: `--only
/// sink-rabbitmq`): what the sink costs against `direct-rabbitmq`, apart from the HTTP
/// path and the load generator. Each publish normalises a fresh webhook, as the bridge does.
pub(crate) async fn sink_rabbitmq(
    o: &Opts,
    conc: usize,
    exchange: &str,
    queue: &str,
) -> Result<Point> {
    use callbridge::sinks::rabbitmq::RabbitmqSinkSettings;
    use callbridge::sinks::{Outgoing, SinkSpec};
    let conn = lapin::Connection::connect(&o.amqp, lapin::ConnectionProperties::default()).await?;
    super::declare_rabbit(&conn.create_channel().await?, exchange, queue).await?;
    let _ = conn.close(200, "bye").await;
    let yaml = super::sink_yaml("rabbitmq", o, &super::Names::with_exchange(exchange));
    let entry = yaml
        .trim()
        .trim_start_matches("- ")
        .replace("type: rabbitmq, ", "");
    let settings: RabbitmqSinkSettings = serde_yaml::from_str(&entry)?;
    let sink = settings.build().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    while !sink.is_ready() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the rabbitmq sink did not connect");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sink: Arc<dyn callbridge::sinks::Sink> = sink;
    let run = std::process::id();
    let point = drive("sink-rabbitmq", conc, o.duration, {
        let sink = sink.clone();
        move |w, seq| {
            let sink = sink.clone();
            async move {
                let body: Value =
                    match serde_json::from_str(&payload(&format!("sink-{run}-{conc}-{w}-{seq}"))) {
                        Ok(b) => b,
                        Err(_) => return false,
                    };
                let Ok(event) = callbridge::event::normalize(
                    &body,
                    Default::default(),
                    &Default::default(),
                    "2026-01-01T00:00:00Z".into(),
                ) else {
                    return false;
                };
                sink.publish(&Outgoing::new(event)).await.is_ok()
            }
        }
    })
    .await;
    sink.close().await;
    Ok(point)
}

pub(crate) async fn nats(o: &Opts, conc: usize, stream: &str, subject: &str) -> Result<Point> {
    let client = async_nats::connect(&o.nats).await?;
    let js = async_nats::jetstream::new(client);
    super::ensure_stream(&js, stream, subject).await?;
    let body = bytes::Bytes::from(payload("direct-nats"));
    let subject = subject.to_string();
    Ok(drive("direct-nats", conc, o.duration, move |w, seq| {
        let js = js.clone();
        let body = body.clone();
        let subject = subject.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("d-{w}-{seq}").as_str());
            match js.publish_with_headers(subject, headers, body).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await)
}
