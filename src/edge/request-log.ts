/**
 * @module
 * Structured logs: one JSON line per request and per queue invocation, for Workers Logs
 * (`observability.enabled` in every generated config) and `wrangler tail`. Fields are an allow-list
 * built by the callers: ids, route patterns, statuses, counts and timings. Never an image byte, an
 * API key, a bearer header, a callback URL's query or a webhook secret: nothing from a request is
 * copied in except the client's own request id, and only when it is well-formed.
 */

/** A client's `x-request-id` is kept when it is 1..128 of these characters; otherwise a new one is made. */
const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** The request id to use: the client's well-formed `x-request-id`, else a new `req_<32 hex>`. */
export function requestIdOf(header: string | null | undefined): string {
  if (header && REQUEST_ID_RE.test(header)) return header;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let hex = "";
  for (const b of bytes) hex += b.toString(16).padStart(2, "0");
  return `req_${hex}`;
}

export interface RequestLog {
  event: "request";
  request_id: string;
  /** Key id (`key_...`), static caller id, `open`, or null before auth (or when it failed). */
  key_id: string | null;
  method: string;
  /** The route pattern (`/v1/jobs/:id`), never the raw path with ids or queries. */
  route: string;
  status: number;
  /** The problem code of an error response. */
  problem: string | null;
  images: number;
  bytes_in: number | null;
  bytes_out: number | null;
  /** Milliseconds per phase: auth, quota, handler, total. */
  ms: Record<string, number>;
  model_version: string | null;
}

export interface QueueLog {
  event: "queue";
  queue: string;
  messages: number;
  /** Per message: job id, key id, outcome (what happened), images. */
  outcomes: Record<string, unknown>[];
  ms: number;
}

/** Writes one log line (JSON). */
export function logLine(entry: RequestLog | QueueLog | Record<string, unknown>): void {
  console.log(JSON.stringify(entry));
}

/** Rounds a duration for a log line (0.1 ms). */
export function ms(start: number, end = performance.now()): number {
  return Math.round((end - start) * 10) / 10;
}
