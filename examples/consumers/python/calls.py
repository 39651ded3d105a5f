"""What every example consumer does with an event: dedupe by id, keep the latest status per call.

The id is the CloudEvents `id` (deterministic per webhook: a redelivery has the same id). The
latest status is decided by the status order of docs/events.md, never by arrival order: a webhook
answered 503 is retried by the sender minutes later and can arrive after the call's later
statuses.

A message is parsed with the typed model generated from the event's JSON Schema (models.py,
`scripts/gen-models`). One that is not an event (no id, or a body the model refuses) is counted
as skipped and acknowledged, so that it never blocks the events behind it.
"""

import json
import sys

from pydantic import ValidationError

from models import CallData

# docs/events.md, "Status order": rank within one attempt of the call.
RANK = {
    "registered": 0,
    "ongoing": 1,
    "completed": 2,
    "failed": 2,
    "error": 2,
    "cancelled": 2,
    "retry": 2,
}
# A status this table does not know (the platform may add some) counts as in progress.
UNKNOWN_RANK = 1


class Calls:
    def __init__(self, name):
        self.name = name
        self.seen = set()  # in production: a table keyed by event id, or an idempotent upsert
        self.received = 0
        self.skipped = 0
        self.duplicates = 0
        self.stale = 0
        self.calls = {}  # call_id -> {"status", "retry", "rank"}

    def parse(self, event_id, body, where):
        """The message's `data` as the typed model, or None when it is not an event: counted as
        skipped (with the reason on stderr), never an error that stops the consumer."""
        self.received += 1
        if not event_id:
            return self._skip(where, "no event id")
        try:
            return CallData.model_validate_json(body or b"")
        except ValidationError as e:
            return self._skip(where, f"not a call event: {e.error_count()} error(s), first: {e.errors()[0]['msg']}")

    def _skip(self, where, why):
        self.skipped += 1
        print(f"skipped {where}: {why}", file=sys.stderr, flush=True)
        return None

    def handle(self, event_id, data):
        """Processes one parsed event. Returns False for a duplicate (already processed)."""
        if event_id in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(event_id)
        status = data.status
        if status is None:  # started, recording and some analyses carry no status
            return True
        retry = data.retry or 0
        rank = RANK.get(status, UNKNOWN_RANK)
        held = self.calls.get(data.call_id)
        if held is None or (retry, rank) > (held["retry"], held["rank"]):
            self.calls[data.call_id] = {"status": status, "retry": retry, "rank": rank}
        elif (retry, rank) < (held["retry"], held["rank"]):
            self.stale += 1  # an older status arriving late: discarded
        return True

    def summary(self):
        return json.dumps(
            {
                "consumer": self.name,
                "received": self.received,
                "skipped": self.skipped,
                "duplicates": self.duplicates,
                "events": len(self.seen),
                "stale": self.stale,
                "calls": {
                    k: {"status": v["status"], "retry": v["retry"]} for k, v in sorted(self.calls.items())
                },
            }
        )
