//! Reads callbridge's events from a JetStream stream with a durable pull consumer (async-nats).
//!
//!   NATS_URL=nats://127.0.0.1:4222 NATS_STREAM=CALLS NATS_CONSUMER=billing cargo run --release [-- --drain]
//!
//! Each message: payload = the event's `data` (JSON), `Nats-Msg-Id` = the event id (the stream
//! already drops a second copy within its duplicate window), CloudEvents attributes in `ce-*`
//! headers (percent-encoded). A message that is not an event (no `Nats-Msg-Id`, or a payload the
//! typed model refuses) is skipped and counted, never taken for a duplicate. The durable consumer keeps its position across restarts; unacked
//! messages are redelivered. --drain: process what the stream held for this consumer at startup,
//! then print the summary (without it: run until Ctrl-C).

mod calls;
// Generated (scripts/gen-models): the whole event's types, of which binary mode reads `data`.
#[allow(dead_code)]
#[rustfmt::skip]
mod models;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt;

use calls::Calls;

fn env(name: &str, fallback: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let drain = std::env::args().any(|a| a == "--drain");
    let client = async_nats::connect(env("NATS_URL", "nats://127.0.0.1:4222")).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(env("NATS_STREAM", "CALLS")).await?;
    let durable = env("NATS_CONSUMER", "example-rust");
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: env("NATS_FILTER", ""),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await?;
    let mut waiting = consumer.info().await?.num_pending as i64;
    let mut calls = Calls::new("rust-nats");
    let timeout: u64 = env("DRAIN_TIMEOUT_SECS", "60").parse()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);

    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    while !(drain && waiting <= 0) {
        if drain && tokio::time::Instant::now() > deadline {
            return Err(format!("drain timed out with {waiting} messages unread").into());
        }
        let fetch = consumer
            .fetch()
            .max_messages(64)
            .expires(Duration::from_secs(1))
            .messages();
        let mut batch = tokio::select! {
            batch = fetch => batch?,
            _ = &mut interrupted => break,
        };
        while let Some(msg) = batch.next().await {
            let msg = msg?;
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned());
            let place = format!("message {}", msg.subject);
            if let (Some(data), Some(id)) = (calls.parse(id.as_deref(), &msg.payload, &place), &id)
            {
                if calls.handle(id, &data) && !drain {
                    let status = data.status.as_deref().unwrap_or("-");
                    println!("{} {:?} {status}", data.call_id, data.kind);
                }
            }
            msg.ack().await?; // after the work is done
            waiting -= 1;
        }
    }
    println!("{}", calls.summary());
    Ok(())
}
