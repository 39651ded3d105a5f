"""Reads callbridge's events from a RabbitMQ queue (pika), binary mode, manual acks.

    RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f RABBITMQ_QUEUE=calls.all python rabbitmq_consumer.py [--drain]

Each message: body = the event's `data` (JSON), `message_id` = the event id, `type` = the event
type, CloudEvents attributes in `cloudEvents_*` headers. A message that is not an event (no
`message_id`, or a body the typed model refuses) is skipped and counted. A message is acked after it is processed
(a crash redelivers it; the dedupe by id absorbs that). --drain: process the messages the queue
held at startup, then print the summary (without it: run until Ctrl-C).
"""

import os
import sys

import pika

from calls import Calls


def main():
    drain = "--drain" in sys.argv[1:]
    queue = os.environ.get("RABBITMQ_QUEUE", "calls.all")
    conn = pika.BlockingConnection(
        pika.URLParameters(os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    )
    ch = conn.channel()
    # The queue exists (the bridge declares it with `queues:`, or you did): passive, only a check.
    waiting = ch.queue_declare(queue, passive=True).method.message_count
    calls = Calls("python-rabbitmq")
    if drain and waiting == 0:
        print(calls.summary(), flush=True)
        return
    ch.basic_qos(prefetch_count=64)

    def on_message(ch, method, props, body):
        nonlocal waiting
        data = calls.parse(props.message_id, body, f"message {method.routing_key}#{method.delivery_tag}")
        if data is not None and calls.handle(props.message_id, data) and not drain:
            print(f"{data.call_id} {data.kind} {data.status}", flush=True)
        ch.basic_ack(method.delivery_tag)  # after the work is done
        waiting -= 1
        if drain and waiting == 0:
            ch.stop_consuming()

    ch.basic_consume(queue, on_message, auto_ack=False)
    if drain:
        # Bounded: every message the queue held is delivered well within this.
        conn.call_later(float(os.environ.get("DRAIN_TIMEOUT_SECS", "60")), lambda: sys.exit("drain timed out"))
    try:
        ch.start_consuming()
    except KeyboardInterrupt:
        pass
    conn.close()
    print(calls.summary(), flush=True)


if __name__ == "__main__":
    main()
