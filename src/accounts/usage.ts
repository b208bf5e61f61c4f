/**
 * @module
 * Usage records: per key and UTC day in D1 (`usage_daily`, what `GET /v1/usage` reads), and, where
 * the USAGE_EVENTS Analytics Engine binding exists (deployed Workers), one data point per record so
 * an operator can query it with SQL. Always called off the hot path (`waitUntil`); a failure is
 * logged, never returned to a client.
 *
 * Analytics Engine data point: index1 = key id; blob1 = key id, blob2 = source (`gateway`, `jobs`,
 * `tagging`); double1..6 = requests, images, model_ms, jobs, deliveries, images_tagged.
 */
import { type SqlDatabase, USAGE_FIELDS, type UsageCounts, UsageStore } from "./store.ts";

/** Usage id of tagging work: CDN misses, notifications and backfills are not one client's requests. */
export const TAGGING_USAGE_ID = "cdn";

/** The Analytics Engine binding's shape. */
export interface UsageEventsDataset {
  writeDataPoint(p: { indexes?: string[]; blobs?: string[]; doubles?: number[] }): void;
}

export interface UsageSinks {
  DB?: SqlDatabase;
  USAGE_EVENTS?: UsageEventsDataset;
}

/** Adds `counts` to the key's usage of today (D1) and writes one Analytics Engine point. */
export async function recordUsage(
  sinks: UsageSinks,
  keyId: string,
  source: "gateway" | "jobs" | "tagging",
  counts: UsageCounts,
  now = Date.now(),
): Promise<void> {
  try {
    sinks.USAGE_EVENTS?.writeDataPoint({
      indexes: [keyId],
      blobs: [keyId, source],
      doubles: USAGE_FIELDS.map((f) => counts[f] ?? 0),
    });
  } catch (e) {
    console.error(JSON.stringify({ event: "usage-analytics-failed", key_id: keyId, error: String(e) }));
  }
  if (!sinks.DB) return;
  try {
    await new UsageStore(sinks.DB).add(keyId, now, counts);
  } catch (e) {
    console.error(JSON.stringify({ event: "usage-write-failed", key_id: keyId, error: String(e) }));
  }
}
