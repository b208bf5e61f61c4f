/**
 * @module
 * When to try a webhook delivery again. The default schedule is the one the Standard Webhooks
 * specification gives as its example: after the first attempt fails, retry after 5 s, 5 min, 30 min,
 * 2 h, 5 h, 10 h, 14 h, 20 h and 24 h (ten attempts over about 3 days), each delay with +-10% jitter
 * so that many failed deliveries do not come back in lockstep. `WEBHOOK_RETRY_SCHEDULE` replaces
 * it (tests shorten it this way; the code path is the same).
 *
 * What an attempt's outcome means:
 * - 2xx: delivered.
 * - 410 Gone: the endpoint is gone; no more attempts, the delivery is failed (and can be redelivered).
 * - 429, 502, 503, 504: retried; a `Retry-After` (seconds or an HTTP date) replaces the scheduled
 *   delay, capped at 24 h.
 * - anything else (3xx: redirects are never followed, 4xx, 5xx), a timeout or a network error:
 *   retried along the schedule.
 * After the last scheduled retry fails the delivery is failed.
 */

/** Seconds to wait after attempt 1, 2, ... fails (the spec's example schedule). */
export const DEFAULT_RETRY_SCHEDULE_S: readonly number[] = [
  5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
];
/** Longest delay a Retry-After can ask for (s). */
export const MAX_RETRY_AFTER_S = 86_400;
/** Jitter: each scheduled delay is multiplied by a uniform factor in [1 - JITTER, 1 + JITTER]. */
export const JITTER = 0.1;
/** Statuses whose Retry-After header is honoured. */
export const RETRY_AFTER_STATUSES: ReadonlySet<number> = new Set([429, 502, 503, 504]);

const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/**
 * Parses a schedule such as `"5s,5m,30m,2h"` (units ms, s, m, h, d; a bare number is seconds) into
 * seconds. Throws a readable Error for anything else: a schedule is configuration, checked at start.
 */
export function parseRetrySchedule(text: string): number[] {
  const parts = text
    .split(/[\s,]+/)
    .map((p) => p.trim())
    .filter(Boolean);
  return parts.map((p) => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(p);
    if (!m)
      throw new Error(
        `WEBHOOK_RETRY_SCHEDULE: ${JSON.stringify(p)} is not a delay such as 5s, 5m, 2h (list them with commas)`,
      );
    return Number(m[1]) * UNITS[m[2] ?? "s"];
  });
}

/** Seconds from a Retry-After value (delta-seconds or an HTTP date), or undefined when absent/invalid. */
export function parseRetryAfter(value: string | null | undefined, nowMs = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Math.min(Number(v), MAX_RETRY_AFTER_S);
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, Math.ceil((at - nowMs) / 1000)), MAX_RETRY_AFTER_S);
}

/** What one attempt came to. */
export type AttemptOutcome =
  | { kind: "delivered" }
  | { kind: "gone" }
  | { kind: "retry"; retryAfterS?: number };

/** Interprets an HTTP status (undefined = timeout or network error) and its Retry-After. */
export function classifyAttempt(status: number | undefined, retryAfter?: string | null): AttemptOutcome {
  if (status !== undefined && status >= 200 && status < 300) return { kind: "delivered" };
  if (status === 410) return { kind: "gone" };
  if (status !== undefined && RETRY_AFTER_STATUSES.has(status)) {
    const s = parseRetryAfter(retryAfter);
    return s === undefined ? { kind: "retry" } : { kind: "retry", retryAfterS: s };
  }
  return { kind: "retry" };
}

/**
 * Delay before the next attempt after `attemptsMade` attempts have failed, in seconds, or null when
 * the schedule is exhausted. A Retry-After replaces the scheduled delay (not jittered: the receiver
 * asked for that time).
 */
export function nextRetryDelay(
  attemptsMade: number,
  schedule: readonly number[],
  opts: { retryAfterS?: number; random?: () => number } = {},
): number | null {
  if (attemptsMade < 1 || attemptsMade > schedule.length) return null;
  if (opts.retryAfterS !== undefined) return Math.min(Math.max(opts.retryAfterS, 0), MAX_RETRY_AFTER_S);
  const base = schedule[attemptsMade - 1];
  const r = (opts.random ?? Math.random)();
  return base * (1 - JITTER + 2 * JITTER * r);
}
