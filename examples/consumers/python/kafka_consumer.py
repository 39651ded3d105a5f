"""Reads callbridge's Kafka topics in a consumer group (confluent-kafka), binary mode.

    KAFKA_BROKERS=127.0.0.1:9092 python kafka_consumer.py [--drain]

Each record: value = the event's `data` (JSON), key = the call id, CloudEvents attributes in
`ce_*` headers; `ce_id` is the event id. A record that is not an event (no `ce_id`, or a value
the typed model refuses) is skipped and counted. Offsets are committed after processing, so a crash
re-reads (at-least-once) and the dedupe by id absorbs it. --drain: stop once every partition is
read up to where it ended at startup, then print the summary (without it: run until Ctrl-C).
"""

import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from calls import Calls

KINDS = ["started", "status", "recording", "analysis", "processed", "other"]


def main():
    drain = "--drain" in sys.argv[1:]
    topics = os.environ.get("KAFKA_TOPICS", ",".join(f"calls.{k}" for k in KINDS)).split(",")
    consumer = Consumer(
        {
            "bootstrap.servers": os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092"),
            "group.id": os.environ.get("KAFKA_GROUP", "example-python"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    calls = Calls("python-kafka")

    # Where each partition ends now: --drain stops once everything up to there is read.
    remaining = {}
    if drain:
        metadata = consumer.list_topics(timeout=10)
        for t in topics:
            if t not in metadata.topics or metadata.topics[t].error is not None:
                sys.exit(f"topic {t} does not exist")
            for p in metadata.topics[t].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if high > low:
                    remaining[(t, p)] = high

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    consumer.subscribe(topics)
    deadline = time.monotonic() + float(os.environ.get("DRAIN_TIMEOUT_SECS", "60"))
    try:
        while not stop and not (drain and not remaining):
            if drain and time.monotonic() > deadline:
                sys.exit(f"drain timed out; still unread: {sorted(remaining)}")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            headers = {k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])}
            where = f"record {msg.topic()}/{msg.partition()}@{msg.offset()}"
            data = calls.parse(headers.get("ce_id"), msg.value(), where)
            if data is not None and calls.handle(headers["ce_id"], data) and not drain:
                print(f"{data.call_id} {data.kind} {data.status}", flush=True)
            consumer.commit(message=msg, asynchronous=False)
            key = (msg.topic(), msg.partition())
            if key in remaining and msg.offset() + 1 >= remaining[key]:
                del remaining[key]
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(calls.summary(), flush=True)


if __name__ == "__main__":
    main()
