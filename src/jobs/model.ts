/**
 * @module
 * The job and event shapes clients see, built from the D1 rows (src/jobs/repository.ts). Pure: no
 * platform imports.
 *
 * Job object (`GET /v1/jobs/{id}`, the 202 of `POST /v1/jobs`, an event's `data`):
 * `{id, status, created_at, started_at, finished_at, expires_at, callback_url, metadata,
 *   parameters: {top_k, exif_transpose}, image_count, results, images, model, error, attempts,
 *   delivery}` with times in ISO 8601, `results` exactly what `/v1/classify` answers for the same
 * request (one array of `{label, score}`, or one per image for a batch), `error` problem details
 * when failed, `model` `{id, version, synthetic, precision}`, `delivery` `{state, webhook_id,
 * attempts, last_status, last_error, last_attempt_at, next_attempt_at, delivered_at}` (pending
 * with no attempts until the job is final), or null without a callback_url.
 *
 * Event (webhook body): `{type: "classification.succeeded" | "classification.failed" |
 * "classification.canceled" | "classification.expired", timestamp,
 * data: <job object without delivery>}`, fixed once when the job becomes final, so every retry and
 * redelivery carries the same bytes under the same `webhook-id`.
 */

/** The statuses stored in jobs.status (a canceled or expired job is stored as failed + outcome). */
export type StoredJobStatus = "queued" | "running" | "succeeded" | "failed";
/** The statuses clients see: `canceled` (POST /v1/jobs/{id}/cancel), `expired` (not started by cancel_after). */
export type JobStatus = StoredJobStatus | "canceled" | "expired";
export type DeliveryState = "pending" | "delivered" | "failed";
export const JOB_STATUSES: readonly JobStatus[] = [
  "queued",
  "running",
  "succeeded",
  "failed",
  "canceled",
  "expired",
];
/** Final statuses: nothing changes a job in one of these any more. */
export const FINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "canceled", "expired"];
export type EventType =
  | "classification.succeeded"
  | "classification.failed"
  | "classification.canceled"
  | "classification.expired";

/** A row of `jobs` (migrations/0001_jobs.sql). */
export interface JobRow {
  id: string;
  owner: string;
  status: StoredJobStatus;
  /** Why a `failed` row ended without a result: canceled or expired (null otherwise). */
  outcome?: "canceled" | "expired" | null;
  /** Set by a cancel while the job runs: its result is then not delivered. */
  cancel_requested_at?: number | null;
  /** cancel_after: a job not started by then (Unix ms) ends expired. */
  start_by?: number | null;
  idempotency_key: string | null;
  request_hash: string;
  callback_url: string | null;
  metadata: string | null;
  top_k: number;
  exif_transpose: number;
  batch: number;
  image_count: number;
  image_bytes: number;
  uploads_deleted: number;
  attempts: number;
  lease_until: number | null;
  results: string | null;
  images: string | null;
  model: string | null;
  timings: string | null;
  error: string | null;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
  expires_at: number;
}

/** A row of `deliveries`. */
export interface DeliveryRow {
  job_id: string;
  webhook_id: string;
  url: string;
  payload: string;
  state: DeliveryState;
  generation: number;
  attempts: number;
  total_attempts: number;
  last_status: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  next_attempt_at: number | null;
  lease_until: number | null;
  delivered_at: number | null;
  created_at: number;
  updated_at: number;
}

export interface DeliveryView {
  state: DeliveryState;
  webhook_id: string;
  url: string;
  attempts: number;
  total_attempts: number;
  redeliveries: number;
  last_status: number | null;
  last_error: string | null;
  last_attempt_at: string | null;
  next_attempt_at: string | null;
  delivered_at: string | null;
}

export interface JobView {
  id: string;
  status: JobStatus;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  expires_at: string;
  callback_url: string | null;
  metadata: unknown;
  parameters: { top_k: number; exif_transpose: boolean; cancel_after: number | null };
  /** When a cancel was asked while the job ran (its result is then not delivered). */
  cancel_requested_at: string | null;
  image_count: number;
  results: unknown;
  images: unknown;
  model: unknown;
  error: unknown;
  attempts: number;
  delivery?: DeliveryView | null;
}

export interface WebhookEvent {
  type: EventType;
  timestamp: string;
  data: JobView;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
const json = (text: string | null): unknown => (text === null ? null : JSON.parse(text));

/** The webhook-id of a job's final event: stable across every retry and redelivery. */
export function webhookIdFor(jobId: string): string {
  return `evt_${jobId.replace(/^job_/, "")}`;
}

export function deliveryView(d: DeliveryRow): DeliveryView {
  return {
    state: d.state,
    webhook_id: d.webhook_id,
    url: d.url,
    attempts: d.attempts,
    total_attempts: d.total_attempts,
    redeliveries: d.generation,
    last_status: d.last_status,
    last_error: d.last_error,
    last_attempt_at: iso(d.last_attempt_at),
    next_attempt_at: d.state === "pending" ? iso(d.next_attempt_at) : null,
    delivered_at: iso(d.delivered_at),
  };
}

/** The status a client sees for a row. */
export function viewStatus(job: JobRow): JobStatus {
  return job.status === "failed" && job.outcome ? job.outcome : job.status;
}

/** The job object; `delivery` is included when given (undefined leaves it out, as in events). */
export function jobView(job: JobRow, delivery?: DeliveryRow | null): JobView {
  const status = viewStatus(job);
  const view: JobView = {
    id: job.id,
    status,
    created_at: iso(job.created_at)!,
    started_at: iso(job.started_at),
    finished_at: iso(job.finished_at),
    expires_at: iso(job.expires_at)!,
    callback_url: job.callback_url,
    metadata: json(job.metadata),
    parameters: {
      top_k: job.top_k,
      exif_transpose: job.exif_transpose === 1,
      cancel_after:
        job.start_by === null || job.start_by === undefined
          ? null
          : Math.round((job.start_by - job.created_at) / 1000),
    },
    cancel_requested_at: iso(job.cancel_requested_at ?? null),
    image_count: job.image_count,
    results: json(job.results),
    images: json(job.images),
    model: json(job.model),
    error: job.status === "failed" ? json(job.error) : null,
    attempts: job.attempts,
  };
  if (delivery !== undefined)
    view.delivery =
      delivery !== null
        ? deliveryView(delivery)
        : job.callback_url
          ? // The event is created when the job becomes final; until then the delivery waits.
            {
              state: "pending",
              webhook_id: webhookIdFor(job.id),
              url: job.callback_url,
              attempts: 0,
              total_attempts: 0,
              redeliveries: 0,
              last_status: null,
              last_error: null,
              last_attempt_at: null,
              next_attempt_at: null,
              delivered_at: null,
            }
          : null;
  return view;
}

/** The event body for a final job, serialised once (these exact bytes are signed and re-sent). */
export function eventPayload(job: JobRow, now: number): string {
  const event: WebhookEvent = {
    type: `classification.${viewStatus(job) as "succeeded" | "failed" | "canceled" | "expired"}`,
    timestamp: new Date(now).toISOString(),
    data: jobView(job),
  };
  return JSON.stringify(event);
}

/** A new job id: time-ordered (12 hex digits of ms) then 80 random bits. */
export function newJobId(now = Date.now()): string {
  const rand = crypto.getRandomValues(new Uint8Array(10));
  let hex = "";
  for (const b of rand) hex += b.toString(16).padStart(2, "0");
  return `job_${now.toString(16).padStart(12, "0")}${hex}`;
}

/** True for a string shaped like a job id (anything else is a 404 without a query). */
export function isJobId(text: string): boolean {
  return /^job_[0-9a-f]{32}$/.test(text);
}
