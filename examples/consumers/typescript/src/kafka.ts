// Reads callbridge's Kafka topics in a consumer group (kafkajs), binary mode.
//
//   KAFKA_BROKERS=127.0.0.1:9092 node dist/kafka.js [--drain]
//
// Each record: value = the event's `data` (JSON), key = the call id, CloudEvents attributes in
// `ce_*` headers; `ce_id` is the event id. A record that is not an event (no `ce_id`, or a value
// the typed model refuses) is skipped and counted. Offsets are committed after processing (a crash
// re-reads, the dedupe absorbs it). --drain: stop once every partition is read up to where it
// ended at startup, then print the summary (without it: run until Ctrl-C).
import { Kafka, logLevel } from "kafkajs";
import { Calls, drain, drainTimeoutMs, env, printEvent, run } from "./calls";

const KINDS = ["started", "status", "recording", "analysis", "processed", "other"];

run(async (stopped) => {
  const topics = env("KAFKA_TOPICS", KINDS.map((k) => `calls.${k}`).join(",")).split(",");
  const kafka = new Kafka({
    clientId: "example-typescript",
    brokers: env("KAFKA_BROKERS", "127.0.0.1:9092").split(","),
    logLevel: logLevel.ERROR,
  });
  const calls = new Calls("typescript-kafka");

  // Where each partition ends now: --drain stops once everything up to there is read.
  const remaining = new Map<string, bigint>();
  if (drain) {
    const admin = kafka.admin();
    await admin.connect();
    for (const topic of topics) {
      for (const p of await admin.fetchTopicOffsets(topic)) {
        if (BigInt(p.high) > BigInt(p.low)) remaining.set(`${topic}/${p.partition}`, BigInt(p.high));
      }
    }
    await admin.disconnect();
    if (remaining.size === 0) return calls;
  }

  const consumer = kafka.consumer({ groupId: env("KAFKA_GROUP", "example-typescript") });
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  let done!: () => void;
  const drained = new Promise<void>((resolve) => (done = resolve));
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      const id = message.headers?.ce_id?.toString();
      const data = calls.parse(id, message.value, `record ${topic}/${partition}@${message.offset}`);
      if (data && id && calls.handle(id, data)) printEvent(data);
      const next = BigInt(message.offset) + 1n;
      await consumer.commitOffsets([{ topic, partition, offset: next.toString() }]);
      const key = `${topic}/${partition}`;
      if (remaining.has(key) && next >= remaining.get(key)!) {
        remaining.delete(key);
        if (drain && remaining.size === 0) done();
      }
    },
  });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    if (drain) timer = setTimeout(() => reject(new Error(`drain timed out; unread: ${[...remaining.keys()]}`)), drainTimeoutMs);
  });
  try {
    await Promise.race([drain ? drained : stopped, timedOut]);
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
  return calls;
});
