// Reads callbridge's events from a JetStream stream with a durable pull consumer (nats.js).
//
//   NATS_URL=nats://127.0.0.1:4222 NATS_STREAM=CALLS NATS_CONSUMER=billing node dist/nats.js [--drain]
//
// Each message: payload = the event's `data` (JSON), Nats-Msg-Id = the event id (the stream
// already drops a second copy within its duplicate window), CloudEvents attributes in `ce-*`
// headers (percent-encoded). A message that is not an event (no Nats-Msg-Id, or a payload the
// typed model refuses) is skipped and counted, never taken for a duplicate. The durable consumer keeps its position across restarts; unacked
// messages are redelivered. --drain: process what the stream held for this consumer at startup,
// then print the summary (without it: run until Ctrl-C).
import { AckPolicy, DeliverPolicy, connect } from "nats";
import { Calls, drain, drainTimeoutMs, env, printEvent, run } from "./calls";

run(async (stopped) => {
  const nc = await connect({ servers: env("NATS_URL", "nats://127.0.0.1:4222") });
  const calls = new Calls("typescript-nats");
  try {
    const stream = env("NATS_STREAM", "CALLS");
    const durable = env("NATS_CONSUMER", "example-typescript");
    const filter = env("NATS_FILTER", "");
    const jsm = await nc.jetstreamManager();
    await jsm.consumers.add(stream, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ...(filter ? { filter_subject: filter } : {}),
    });
    const consumer = await nc.jetstream().consumers.get(stream, durable);
    let waiting = (await consumer.info()).num_pending;
    let stop = false;
    stopped.then(() => (stop = true));
    const deadline = Date.now() + drainTimeoutMs;
    while (!stop && !(drain && waiting <= 0)) {
      if (drain && Date.now() > deadline) throw new Error(`drain timed out with ${waiting} unread`);
      const batch = await consumer.fetch({ max_messages: 64, expires: 1000 });
      for await (const m of batch) {
        const id = m.headers?.get("Nats-Msg-Id");
        const data = calls.parse(id, m.data, `message ${m.subject}`);
        if (data && id && calls.handle(id, data)) printEvent(data);
        m.ack();
        waiting--;
      }
    }
  } finally {
    await nc.drain();
  }
  return calls;
});
