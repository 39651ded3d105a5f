// Reads callbridge's events from a RabbitMQ queue (amqplib), binary mode, manual acks.
//
//   RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f RABBITMQ_QUEUE=calls.all node dist/rabbitmq.js [--drain]
//
// Each message: body = the event's `data` (JSON), messageId = the event id, type = the event
// type, CloudEvents attributes in `cloudEvents_*` headers; one that is not an event (no
// messageId, or a body the typed model refuses) is skipped and counted. Acked after processing (a crash
// redelivers, the dedupe absorbs it). --drain: process the messages the queue held at startup,
// then print the summary (without it: run until Ctrl-C).
import amqp from "amqplib";
import { Calls, drain, drainTimeoutMs, env, printEvent, run } from "./calls";

run(async (stopped) => {
  const queue = env("RABBITMQ_QUEUE", "calls.all");
  const conn = await amqp.connect(env("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"));
  const calls = new Calls("typescript-rabbitmq");
  try {
    const ch = await conn.createChannel();
    // The queue exists (the bridge declares it with `queues:`, or you did): a check only.
    let waiting = (await ch.checkQueue(queue)).messageCount;
    if (drain && waiting === 0) return calls;
    await ch.prefetch(64);
    let done!: () => void;
    const drained = new Promise<void>((resolve) => (done = resolve));
    await ch.consume(
      queue,
      (msg) => {
        if (!msg) return;
        const id: string | undefined = msg.properties.messageId;
        const data = calls.parse(id, msg.content, `message ${msg.fields.routingKey}#${msg.fields.deliveryTag}`);
        if (data && id && calls.handle(id, data)) printEvent(data);
        ch.ack(msg); // after the work is done
        if (--waiting === 0 && drain) done();
      },
      { noAck: false },
    );
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      if (drain) timer = setTimeout(() => reject(new Error(`drain timed out with ${waiting} unread`)), drainTimeoutMs);
    });
    try {
      await Promise.race([drain ? drained : stopped, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await conn.close();
  }
  return calls;
});
