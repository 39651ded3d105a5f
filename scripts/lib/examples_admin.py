"""Creates and removes the broker objects one scripts/test-examples run uses (all named after the
run, so runs never share anything). Runs in the Python examples' venv.

  examples_admin.py create-topics BROKERS PARTITIONS TOPIC...
  examples_admin.py publish-bad RUN --kafka BROKERS TOPIC --rabbitmq URL EXCHANGE KEY --nats URL SUBJECT
  examples_admin.py cleanup --kafka BROKERS TOPIC,... --rabbitmq URL EXCHANGE QUEUE,... --nats URL STREAM
"""

import asyncio
import json
import sys

from confluent_kafka.admin import AdminClient, NewTopic


def create_topics(brokers, partitions, topics):
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=int(partitions), replication_factor=1) for t in topics],
        operation_timeout=30,
        request_timeout=30,
    )
    for topic, f in futures.items():
        f.result(timeout=60)  # raises on failure
        print(f"created topic {topic}")


def delete_topics(brokers, topics):
    admin = AdminClient({"bootstrap.servers": brokers})
    for topic, f in admin.delete_topics(topics, operation_timeout=30, request_timeout=30).items():
        try:
            f.result(timeout=60)
        except Exception as e:  # cleanup goes on
            print(f"delete topic {topic}: {e}", file=sys.stderr)


def delete_rabbitmq(url, exchange, queues):
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(q)
    ch.exchange_delete(exchange)
    conn.close()


async def delete_stream(url, stream):
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception as e:
        print(f"delete stream {stream}: {e}", file=sys.stderr)
    await nc.close()


def bad_records(run):
    """Two messages that are not callbridge events, as (event id or None, body): a valid call
    record without an event id, and an id with a body the event's schema refuses (no call_id)."""
    record = {"kind": "status", "family": "callback", "call_id": f"{run}-bad", "status": "completed",
              "callback_params": {}, "extra": {}}
    return [(None, json.dumps(record).encode()), (f"{run}-bad-body", b'{"kind": "status"}')]


def publish_bad(run, args):
    """Publishes bad_records() to each broker where the bridge publishes (each consumer must
    skip and count both, and still report every real event)."""
    opts = {args[i]: args[i + 1 : i + 4] for i in range(len(args)) if args[i].startswith("--")}
    records = bad_records(run)
    from confluent_kafka import Producer

    brokers, topic = opts["--kafka"][:2]
    producer = Producer({"bootstrap.servers": brokers, "acks": "all"})
    errors = []
    for event_id, body in records:
        headers = [("ce_id", event_id.encode())] if event_id else []
        producer.produce(topic, body, key=f"{run}-bad", headers=headers,
                         on_delivery=lambda err, _msg: err and errors.append(err))
    if producer.flush(30) or errors:
        sys.exit(f"kafka: not delivered: {errors}")
    print(f"published {len(records)} bad records to kafka topic {topic}")

    import pika

    url, exchange, key = opts["--rabbitmq"][:3]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    for event_id, body in records:
        props = pika.BasicProperties(message_id=event_id, content_type="application/json", delivery_mode=2)
        ch.basic_publish(exchange, key, body, props, mandatory=True)  # raises unless confirmed
    conn.close()
    print(f"published {len(records)} bad messages to rabbitmq exchange {exchange} key {key}")

    async def to_nats(url, subject):
        import nats

        nc = await nats.connect(url)
        js = nc.jetstream()
        for event_id, body in records:
            await js.publish(subject, body, headers={"Nats-Msg-Id": event_id} if event_id else None)
        await nc.close()

    url, subject = opts["--nats"][:2]
    asyncio.run(to_nats(url, subject))
    print(f"published {len(records)} bad messages to nats subject {subject}")


def main(argv):
    if argv[0] == "create-topics":
        return create_topics(argv[1], argv[2], argv[3:])
    if argv[0] == "publish-bad":
        return publish_bad(argv[1], argv[2:])
    if argv[0] != "cleanup":
        sys.exit(__doc__)
    args, i, failed = argv[1:], 0, False
    while i < len(args):
        try:
            if args[i] == "--kafka":
                delete_topics(args[i + 1], args[i + 2].split(","))
                i += 3
            elif args[i] == "--rabbitmq":
                delete_rabbitmq(args[i + 1], args[i + 2], args[i + 3].split(","))
                i += 4
            elif args[i] == "--nats":
                asyncio.run(delete_stream(args[i + 1], args[i + 2]))
                i += 3
            else:
                sys.exit(__doc__)
        except Exception as e:
            print(f"cleanup {args[i]}: {e}", file=sys.stderr)
            failed = True
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                i += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
