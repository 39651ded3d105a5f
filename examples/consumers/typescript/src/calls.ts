// What every example consumer does with an event: dedupe by id, keep the latest status per call.
//
// The id is the CloudEvents `id` (deterministic per webhook: a redelivery has the same id). The
// latest status is decided by the status order of docs/events.md, never by arrival order: a
// webhook answered 503 is retried by the sender minutes later and can arrive after the call's
// later statuses.
//
// A message is parsed with the typed model generated from the event's JSON Schema (models.ts,
// `scripts/gen-models`; its converters check the JSON against the schema's types). One that is
// not an event (no id, or a body the model refuses) is counted as skipped and acknowledged, so
// that it never blocks the events behind it.
import { CallData, Convert } from "./models";

export { CallData };

// docs/events.md, "Status order": the rank of a status within one attempt of the call.
const RANK: Record<string, number> = {
  registered: 0,
  ongoing: 1,
  completed: 2,
  failed: 2,
  error: 2,
  cancelled: 2,
  retry: 2,
};
// A status the table does not know (the platform may add some) counts as in progress.
const UNKNOWN_RANK = 1;

interface Held {
  status: string;
  retry: number;
  rank: number;
}

export class Calls {
  private seen = new Set<string>(); // in production: a table keyed by event id, or an idempotent upsert
  private received = 0;
  private skipped = 0;
  private duplicates = 0;
  private stale = 0;
  private latest = new Map<string, Held>();

  constructor(private name: string) {}

  /**
   * The message's `data` as the typed model, or null when it is not an event: counted as
   * skipped (with the reason on stderr), never an error that stops the consumer.
   */
  parse(eventId: string | undefined, body: Buffer | Uint8Array | string | null | undefined, where: string): CallData | null {
    this.received++;
    let why: string;
    if (!eventId) {
      why = "no event id";
    } else {
      try {
        return Convert.toCallData(body == null ? "" : Buffer.from(body).toString("utf8"));
      } catch (err) {
        why = `not a call event: ${err instanceof Error ? err.message : err}`;
      }
    }
    this.skipped++;
    console.error(`skipped ${where}: ${why}`);
    return null;
  }

  /** Processes one parsed event; false means a duplicate (already processed). */
  handle(eventId: string, data: CallData): boolean {
    if (this.seen.has(eventId)) {
      this.duplicates++;
      return false;
    }
    this.seen.add(eventId);
    if (data.status == null) return true; // started, recording and some analyses carry no status
    const retry = data.retry ?? 0;
    const rank = RANK[data.status] ?? UNKNOWN_RANK;
    const held = this.latest.get(data.call_id);
    if (!held || retry > held.retry || (retry === held.retry && rank > held.rank)) {
      this.latest.set(data.call_id, { status: data.status, retry, rank });
    } else if (retry < held.retry || rank < held.rank) {
      this.stale++; // an older status arriving late: discarded
    }
    return true;
  }

  summary(): string {
    const calls: Record<string, { status: string; retry: number }> = {};
    for (const id of [...this.latest.keys()].sort()) {
      const h = this.latest.get(id)!;
      calls[id] = { status: h.status, retry: h.retry };
    }
    return JSON.stringify({
      consumer: this.name,
      received: this.received,
      skipped: this.skipped,
      duplicates: this.duplicates,
      events: this.seen.size,
      stale: this.stale,
      calls,
    });
  }
}

export const env = (name: string, fallback: string): string => process.env[name] || fallback;
export const drain = process.argv.includes("--drain");
export const drainTimeoutMs = Number(env("DRAIN_TIMEOUT_SECS", "60")) * 1000;

/** Shows a processed event while following (not while draining). */
export function printEvent(data: CallData): void {
  if (!drain) console.log(data.call_id, data.kind, data.status ?? "-");
}

/** Runs a consumer; prints its summary at the end, or the error and exit code 1. */
export function run(main: (stopped: Promise<void>) => Promise<Calls>): void {
  const stopped = new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  main(stopped).then(
    (calls) => {
      console.log(calls.summary());
      process.exit(0);
    },
    (err) => {
      console.error("error:", err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
