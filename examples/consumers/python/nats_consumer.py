"""Reads callbridge's events from a JetStream stream with a durable pull consumer (nats-py).

    NATS_URL=nats://127.0.0.1:4222 NATS_STREAM=CALLS NATS_CONSUMER=billing python nats_consumer.py [--drain]

Each message: payload = the event's `data` (JSON), `Nats-Msg-Id` = the event id (the stream
already drops a second copy within its duplicate window), CloudEvents attributes in `ce-*`
headers (percent-encoded). A message that is not an event (no `Nats-Msg-Id`, or a payload the
typed model refuses) is skipped and counted, never taken for a duplicate. The durable consumer remembers its position across restarts; a
message is acked after processing and redelivered if it is not. --drain: process what the stream
held for this consumer at startup, then print the summary (without it: run until Ctrl-C).
"""

import asyncio
import os
import sys

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from calls import Calls


async def main():
    drain = "--drain" in sys.argv[1:]
    stream = os.environ.get("NATS_STREAM", "CALLS")
    durable = os.environ.get("NATS_CONSUMER", "example-python")
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        os.environ.get("NATS_FILTER", ""),
        durable=durable,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
    )
    waiting = (await js.consumer_info(stream, durable)).num_pending
    calls = Calls("python-nats")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(os.environ.get("DRAIN_TIMEOUT_SECS", "60"))
    try:
        while not (drain and waiting <= 0):
            if drain and loop.time() > deadline:
                sys.exit(f"drain timed out with {waiting} messages unread")
            try:
                msgs = await sub.fetch(64, timeout=1)
            except NatsTimeout:
                continue
            for msg in msgs:
                event_id = (msg.headers or {}).get("Nats-Msg-Id")
                data = calls.parse(event_id, msg.data, f"message {msg.subject}")
                if data is not None and calls.handle(event_id, data) and not drain:
                    print(f"{data.call_id} {data.kind} {data.status}", flush=True)
                await msg.ack()
                waiting -= 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await nc.close()
    print(calls.summary(), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
