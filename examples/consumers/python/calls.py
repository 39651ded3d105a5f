"""What every example consumer does with an event: dedupe by id, keep the latest status per call.

The id is the CloudEvents `id` (deterministic per webhook: a redelivery has the same id). The
latest status is decided by the status order of docs/events.md, never by arrival order: a webhook
answered 503 is retried by the sender minutes later and can arrive after the call's later
statuses.
"""

import json

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
        self.duplicates = 0
        self.stale = 0
        self.calls = {}  # call_id -> {"status", "retry", "rank"}

    def handle(self, event_id, data):
        """Processes one message. Returns False for a duplicate (already processed)."""
        self.received += 1
        if event_id in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(event_id)
        status = data.get("status")
        if status is None:  # started, recording and some analyses carry no status
            return True
        retry = data.get("retry") or 0
        rank = RANK.get(status, UNKNOWN_RANK)
        held = self.calls.get(data["call_id"])
        if held is None or (retry, rank) > (held["retry"], held["rank"]):
            self.calls[data["call_id"]] = {"status": status, "retry": retry, "rank": rank}
        elif (retry, rank) < (held["retry"], held["rank"]):
            self.stale += 1  # an older status arriving late: discarded
        return True

    def summary(self):
        return json.dumps(
            {
                "consumer": self.name,
                "received": self.received,
                "duplicates": self.duplicates,
                "events": len(self.seen),
                "stale": self.stale,
                "calls": {
                    k: {"status": v["status"], "retry": v["retry"]} for k, v in sorted(self.calls.items())
                },
            }
        )
