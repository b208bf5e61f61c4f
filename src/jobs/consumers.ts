/**
 * @module
 * What the jobs Worker does with each queue message and each cron tick, written against small
 * interfaces (the D1 store, the UPLOADS bucket, a classifier, a queue sender) so the entry
 * (src/workers/jobs/) stays thin and the logic can be driven directly in tests.
 *
 * Job message `{jobId}` (queue beit-edge-jobs): claim the job, read its images from R2, classify
 * through the core, store the result and the event in one transaction, enqueue the first delivery,
 * delete the uploads. A 4xx from the core fails the job at once with the problem details
 * /v1/classify would give; a 503/504 (model unavailable, deadline) or an unexpected error puts it
 * back to queued and retries it, up to JOB_MAX_ATTEMPTS, then fails it with that problem.
 *
 * Delivery message `{jobId, generation}` (queue beit-edge-deliveries): claim the next attempt,
 * POST the signed event, record the outcome, and retry the same message with the retry delay.
 * Messages that are duplicates (they lose the claim), stale (an older generation, or the delivery
 * is over) or early are dropped or re-delayed; a delivery retry never re-runs the model.
 *
 * Dead letters (queue beit-edge-jobs-dlq): a job message that exhausted the queue's retries fails
 * its job (500 `job-processing-failed`, delivered as classification.failed); a delivery message
 * marks its delivery failed (it stays redeliverable).
 *
 * Sweep (cron): re-enqueue stuck jobs and deliveries, delete uploads of final jobs, delete jobs past
 * their retention.
 */

import { problemBody, toAppError } from "../edge/problem.ts";
import { AppError } from "../shared/errors.ts";
import type { JobsConfig } from "./config.ts";
import { postWebhook } from "./deliver.ts";
import type { JobRow } from "./model.ts";
import { type JobStore, uploadKey } from "./repository.ts";
import { classifyAttempt, nextRetryDelay } from "./retry.ts";

export interface JobMessage {
  jobId: string;
}

/**
 * One live message per delivery generation: it is retried (message.retry with the delay) after each
 * failed attempt rather than re-sent, so the deliveries consumer never produces to its own queue
 * (which also makes Miniflare's local queue broker spin, workers-sdk issue 4639).
 */
export interface DeliveryMessage {
  jobId: string;
  generation: number;
}

/** Queue message delays are capped at 12 h by Cloudflare Queues; longer waits re-delay on arrival. */
export const MAX_QUEUE_DELAY_S = 43_200;

/** The part of the classification core (src/classify) the consumer uses. */
export interface JobClassifier {
  classify(
    images: Uint8Array[],
    opts: { topK: number; exifTranspose: boolean },
  ): Promise<{
    predictions: { label: string; score: number }[][];
    images: unknown[];
    model: unknown;
    timings?: unknown;
  }>;
}

export interface ConsumerDeps {
  store: JobStore;
  uploads: Pick<R2Bucket, "get" | "delete">;
  config: JobsConfig;
  classifier: () => JobClassifier;
  sendJob(msg: JobMessage, delaySeconds?: number): Promise<void>;
  sendDelivery(msg: DeliveryMessage, delaySeconds?: number): Promise<void>;
  /** Checks a callback URL against the outbound policy again before each attempt; throws AppError. */
  checkCallbackUrl?(url: string): void;
  fetch?: typeof fetch;
  now?: () => number;
  /** Rare unexpected failures are logged here (default console.error). */
  log?: (message: string, error?: unknown) => void;
  /**
   * Charges a job's images to its owner's image quota just before they are classified; a refused
   * charge puts the job back to queued until the quota's window resets. Absent: no quota.
   */
  chargeImages?(owner: string, images: number): Promise<{ allowed: boolean; retryAfterS: number } | null>;
  /** Adds to an owner's usage (off the hot path). */
  usage?(owner: string, counts: { images?: number; model_ms?: number; deliveries?: number }): void;
}

export type MessageAction = { ack: true } | { ack: false; delaySeconds: number };

const ACK: MessageAction = { ack: true };

/** Seconds before a retryable job attempt is tried again: 5, 10, 20, ... capped at 5 minutes. */
export function jobRetryDelay(attempts: number): number {
  return Math.min(300, 5 * 2 ** Math.max(0, attempts - 1));
}

function isRetryable(e: AppError): boolean {
  return e.status >= 500;
}

/** The problem details a canceled or expired job carries as its `error`. */
export function endProblem(kind: "canceled" | "expired", job: JobRow): Record<string, unknown> {
  return kind === "canceled"
    ? problemBody(
        new AppError(
          "job-canceled",
          409,
          "The job was canceled by its client (POST /v1/jobs/{id}/cancel); its images were not classified, or its result was discarded.",
        ),
      )
    : problemBody(
        new AppError(
          "job-expired",
          504,
          `The job was not started within its cancel_after of ${Math.round(((job.start_by ?? job.created_at) - job.created_at) / 1000)} s, so it was never classified.`,
        ),
      );
}

/**
 * Ends a job this consumer holds (claim token in `job.attempts`) as canceled or expired, with its
 * final event, and enqueues the delivery.
 */
export async function endJob(
  deps: ConsumerDeps,
  job: JobRow,
  kind: "canceled" | "expired",
): Promise<boolean> {
  const now = deps.now ?? Date.now;
  const done = await deps.store.finish(
    job,
    { status: kind, error: endProblem(kind, job) },
    now(),
    deps.config.retentionMs,
  );
  if (done) await afterFinish(deps, done.job, done.delivery !== null);
  return done !== null;
}

/** Expires the job if it is queued, never started, and past its cancel_after. */
export async function expireIfDue(deps: ConsumerDeps, jobId: string): Promise<boolean> {
  const now = (deps.now ?? Date.now)();
  const j = await deps.store.byId(jobId);
  if (j?.status !== "queued" || j.started_at !== null || !j.start_by || j.start_by >= now) return false;
  const held = await deps.store.claimToEnd(jobId, now, deps.config.leaseMs);
  return held ? endJob(deps, held, "expired") : false;
}

/** Handles one job message. */
export async function runJob(deps: ConsumerDeps, msg: JobMessage): Promise<MessageAction> {
  const now = deps.now ?? Date.now;
  const claimedAt = now();
  const job = await deps.store.claim(msg.jobId, claimedAt, deps.config.leaseMs);
  if (!job) {
    // final, unknown (expired rows), running under another live claim, or past its cancel_after
    await expireIfDue(deps, msg.jobId);
    return ACK;
  }
  // Canceled while queued, before the cancel itself could take it: never classified.
  if (job.cancel_requested_at) {
    await endJob(deps, job, "canceled");
    return ACK;
  }
  if (deps.chargeImages) {
    const r = await deps.chargeImages(job.owner, job.image_count);
    if (r && !r.allowed) {
      // Back to queued, as not started (cancel_after still applies), until the window resets.
      await deps.store.release(job.id, job.attempts, now(), undefined, job.started_at === claimedAt);
      return { ack: false, delaySeconds: Math.max(1, r.retryAfterS) };
    }
  }
  let error: AppError;
  try {
    const images = await readUploads(deps, job);
    const out = await deps.classifier().classify(images, {
      topK: job.top_k,
      exifTranspose: job.exif_transpose === 1,
    });
    const runMs = (out.timings as { runMs?: number[] } | undefined)?.runMs ?? [];
    deps.usage?.(job.owner, { images: images.length, model_ms: runMs.reduce((n, x) => n + x, 0) });
    const results = job.batch === 1 ? out.predictions : out.predictions[0];
    const done = await deps.store.finish(
      job,
      { status: "succeeded", results, images: out.images, model: out.model, timings: out.timings },
      now(),
      deps.config.retentionMs,
    );
    if (!done) {
      // A cancel that arrived while it ran: the result is discarded, the event says canceled.
      const current = await deps.store.byId(job.id);
      if (current?.status === "running" && current.attempts === job.attempts && current.cancel_requested_at) {
        await endJob(deps, current, "canceled");
        return ACK;
      }
    }
    if (done) await afterFinish(deps, done.job, done.delivery !== null);
    return ACK;
  } catch (e) {
    error = toAppError(e);
    if (error.code === "internal-error")
      (deps.log ?? console.error)(`job ${job.id} attempt ${job.attempts} failed`, e);
  }
  const problem = problemBody(error);
  if (!isRetryable(error) || job.attempts >= deps.config.maxAttempts) {
    const done = await deps.store.finish(
      job,
      { status: "failed", error: problem },
      now(),
      deps.config.retentionMs,
    );
    if (done) await afterFinish(deps, done.job, done.delivery !== null);
    return ACK;
  }
  // Retryable: back to queued (so the retried message can claim it) and retry later; a job
  // canceled meanwhile ends now instead.
  const current = await deps.store.byId(job.id);
  if (current?.cancel_requested_at && current.status === "running" && current.attempts === job.attempts) {
    await endJob(deps, current, "canceled");
    return ACK;
  }
  await deps.store.release(job.id, job.attempts, now(), problem);
  const retryAfter = typeof error.extra.retryAfter === "number" ? error.extra.retryAfter : 0;
  return { ack: false, delaySeconds: Math.max(retryAfter, jobRetryDelay(job.attempts)) };
}

async function readUploads(deps: ConsumerDeps, job: JobRow): Promise<Uint8Array[]> {
  const images: Uint8Array[] = [];
  for (let i = 0; i < job.image_count; i++) {
    const obj = await deps.uploads.get(uploadKey(job.id, i));
    if (!obj)
      throw new AppError(
        "upload-missing",
        422,
        `Image ${i} of this job is no longer stored (it may have expired); submit the job again.`,
      );
    images.push(new Uint8Array(await obj.arrayBuffer()));
  }
  return images;
}

async function afterFinish(deps: ConsumerDeps, job: JobRow, deliver: boolean): Promise<void> {
  if (deliver) {
    try {
      await deps.sendDelivery({ jobId: job.id, generation: 0 });
    } catch (e) {
      // The sweeper re-enqueues deliveries that are due and not in flight.
      (deps.log ?? console.error)(`job ${job.id}: could not enqueue its delivery; the sweeper will`, e);
    }
  }
  await deleteUploads(deps, [{ id: job.id, image_count: job.image_count }]);
}

async function deleteUploads(deps: ConsumerDeps, jobs: { id: string; image_count: number }[]): Promise<void> {
  if (jobs.length === 0) return;
  try {
    const keys = jobs.flatMap((j) => Array.from({ length: j.image_count }, (_, i) => uploadKey(j.id, i)));
    for (let i = 0; i < keys.length; i += 1000) await deps.uploads.delete(keys.slice(i, i + 1000));
    await deps.store.markUploadsDeleted(jobs.map((j) => j.id));
  } catch (e) {
    (deps.log ?? console.error)("could not delete uploads; the sweeper retries", e);
  }
}

/** Handles one delivery message. */
export async function runDelivery(deps: ConsumerDeps, msg: DeliveryMessage): Promise<MessageAction> {
  const now = deps.now ?? Date.now;
  const cfg = deps.config;
  const current = await deps.store.delivery(msg.jobId);
  // Delivered, failed, redelivered since (another generation) or expired: this message is done.
  if (current?.state !== "pending" || current.generation !== msg.generation) return ACK;
  const early = (current.next_attempt_at ?? 0) - now();
  if (early > 1000)
    // Queues cap delays at 12 h: a 14-24 h retry arrives early and waits again.
    return { ack: false, delaySeconds: Math.min(Math.ceil(early / 1000), MAX_QUEUE_DELAY_S) };
  const leaseMs = cfg.webhookTimeoutMs + 30_000;
  // Only one holder per attempt: a duplicate of this message loses the claim and is dropped.
  const d = await deps.store.claimDelivery(msg.jobId, msg.generation, current.attempts, now(), leaseMs);
  if (!d) return ACK;
  let status: number | null = null;
  let error: string | null;
  let retryAfter: string | null = null;
  let refused = false;
  try {
    deps.checkCallbackUrl?.(d.url);
    if (cfg.secrets.length === 0)
      throw new AppError("webhook-secret-missing", 503, "WEBHOOK_SECRET is not configured.");
    const r = await postWebhook({
      url: d.url,
      webhookId: d.webhook_id,
      payload: d.payload,
      secrets: cfg.secrets,
      timeoutMs: cfg.webhookTimeoutMs,
      fetch: deps.fetch,
    });
    status = r.status;
    error = r.error;
    retryAfter = r.retryAfter;
  } catch (e) {
    const ae = toAppError(e);
    error = ae.detail;
    refused = ae.status === 422;
  }
  if (deps.usage) {
    const owner = (await deps.store.byId(d.job_id))?.owner;
    if (owner) deps.usage(owner, { deliveries: 1 });
  }
  const outcome = refused ? { kind: "gone" as const } : classifyAttempt(status ?? undefined, retryAfter);
  const at = now();
  if (outcome.kind === "delivered") {
    await deps.store.recordAttempt(d, {
      state: "delivered",
      status,
      error: null,
      nextAttemptAt: null,
      now: at,
    });
    return ACK;
  }
  const delay =
    outcome.kind === "gone"
      ? null
      : nextRetryDelay(d.attempts, cfg.retryScheduleS, { retryAfterS: outcome.retryAfterS });
  if (delay === null) {
    const why = outcome.kind === "gone" ? error : `${error}; no attempts left (${d.attempts} made)`;
    await deps.store.recordAttempt(d, { state: "failed", status, error: why, nextAttemptAt: null, now: at });
    return ACK;
  }
  const nextAt = at + Math.round(delay * 1000);
  const recorded = await deps.store.recordAttempt(d, {
    state: "pending",
    status,
    error,
    nextAttemptAt: nextAt,
    now: at,
  });
  return recorded ? { ack: false, delaySeconds: Math.min(Math.ceil(delay), MAX_QUEUE_DELAY_S) } : ACK;
}

/** Handles one dead-lettered message of either queue. */
export async function runDeadLetter(
  deps: ConsumerDeps,
  body: JobMessage | DeliveryMessage,
): Promise<MessageAction> {
  const now = deps.now ?? Date.now;
  if ("generation" in body) {
    await deps.store.failDelivery(
      body.jobId,
      body.generation,
      now(),
      "the delivery message exhausted its queue retries (dead-lettered)",
    );
    return ACK;
  }
  const job = await deps.store.claim(body.jobId, now(), deps.config.leaseMs);
  if (!job) return ACK; // final already, or held by a live attempt (the sweeper watches its lease)
  const error = new AppError(
    "job-processing-failed",
    500,
    "The job could not be processed: its queue message failed every retry. Submit it again; if it persists, report the job id.",
  );
  const done = await deps.store.finish(
    job,
    { status: "failed", error: problemBody(error) },
    now(),
    deps.config.retentionMs,
  );
  if (done) await afterFinish(deps, done.job, done.delivery !== null);
  return ACK;
}

export interface SweepReport {
  /** Queued jobs past their cancel_after, ended `expired`. */
  expiredUnstarted: number;
  jobs: number;
  deliveries: number;
  uploadsDeleted: number;
  expired: number;
}

/** One sweep: bounded work (at most `limit` of each kind) so a cron tick stays short. */
export async function sweep(deps: ConsumerDeps, limit = 100): Promise<SweepReport> {
  const now = (deps.now ?? Date.now)();
  const cfg = deps.config;
  let expiredUnstarted = 0;
  for (const id of await deps.store.dueExpiries(now, limit))
    if (await expireIfDue(deps, id)) expiredUnstarted++;
  const jobs = await deps.store.stuckJobs(now, cfg.stuckAfterMs, limit);
  for (const jobId of jobs) await deps.sendJob({ jobId });
  const deliveries = await deps.store.stuckDeliveries(now, cfg.deliveryStuckAfterMs, limit);
  for (const d of deliveries) await deps.sendDelivery({ jobId: d.job_id, generation: d.generation });
  const uploads = await deps.store.uploadsToDelete(now, limit);
  await deleteUploads(deps, uploads);
  const expired = await deps.store.expire(now, limit);
  return {
    jobs: jobs.length,
    deliveries: deliveries.length,
    uploadsDeleted: uploads.length,
    expired,
    expiredUnstarted,
  };
}
