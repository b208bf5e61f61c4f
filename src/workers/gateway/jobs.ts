/**
 * @module
 * The webhook-jobs routes of the gateway (issue #9). Submitting stores the images in R2 (UPLOADS),
 * the job in D1 and sends one message to the jobs queue; the jobs Worker (src/workers/jobs/) does
 * the rest. Every job belongs to the caller that created it (src/edge/auth.ts `authenticate`):
 * another caller gets a 404, as for a job that does not exist.
 *
 * - `POST /v1/jobs`: the inputs of /v1/classify plus `callback_url` (JSON member, multipart field or
 *   query parameter), `metadata` (a JSON object up to MAX_METADATA_BYTES, echoed back), `top_k`
 *   (at most MAX_JOB_TOP_K), `exif_transpose`; header `Idempotency-Key` (same key + same request =
 *   the same job, answered again; same key + another request = 422). 202 + `Location`.
 * - `GET /v1/jobs/{id}`, `GET /v1/jobs?status=&limit=&cursor=`, `POST /v1/jobs/{id}/redeliver`.
 */
import type { Context, Hono } from "hono";
import type { Principal } from "../../accounts/auth.ts";
import type { QuotaResult } from "../../accounts/quota.ts";
import type { UsageCounts } from "../../accounts/store.ts";
import type { Classifier } from "../../classify/index.ts";
import { configOf } from "../../edge/config.ts";
import type { GatewayEnv } from "../../edge/env.ts";
import { Deadline } from "../../edge/limits.ts";
import { checkCallbackUrl } from "../../jobs/callback-url.ts";
import { jobsConfigOf } from "../../jobs/config.ts";
import { endJob } from "../../jobs/consumers.ts";
import { isJobId, JOB_STATUSES, type JobRow, type JobStatus, jobView, newJobId } from "../../jobs/model.ts";
import { JobStore, uploadKey } from "../../jobs/repository.ts";
import { AppError } from "../../shared/errors.ts";
import { sha256Hex } from "../../shared/hash.ts";
import { addUsage } from "./accounts.ts";
import { readClassifyInput, resolveExifTranspose, resolveTopK } from "./input.ts";

/** Per-request state the gateway's middleware sets (src/workers/gateway/accounts.ts). */
export interface GatewayVariables {
  /** The caller's id: jobs belong to it (a key id, the static key's id, or "open"). */
  caller: string;
  principal: Principal;
  requestId: string;
  /** The last quota charge of this request (its RateLimit fields go on the response). */
  rate: QuotaResult | null;
  /** Usage of this request, recorded after the response (waitUntil). */
  usage: UsageCounts;
  /** Problem code of an error response (for the log line). */
  problem: string | null;
  /** Phase timings (ms) for the log line. */
  phases: Record<string, number>;
}

export type JobsAppEnv = { Bindings: GatewayEnv; Variables: GatewayVariables };

/** Longest Idempotency-Key accepted (characters). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
/** Longest cancel_after (s): a job's deadline to start, at most its retention (7 days by default). */
export const MAX_CANCEL_AFTER_S = 604_800;

/** cancel_after in whole seconds (1..MAX_CANCEL_AFTER_S), or null when not given. */
function cancelAfterOf(raw: unknown): number | null {
  if (raw === undefined || raw === null || raw === "") return null;
  const n = typeof raw === "number" ? raw : typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_CANCEL_AFTER_S)
    throw invalid(
      "cancel_after",
      `cancel_after must be a whole number of seconds from 1 to ${MAX_CANCEL_AFTER_S}: a job not started by then ends expired. Got ${JSON.stringify(String(raw).slice(0, 40))}.`,
    );
  return n;
}

/** Jobs per page of GET /v1/jobs: default and maximum. */
export const LIST_DEFAULT_LIMIT = 20;
export const LIST_MAX_LIMIT = 100;

interface Deps {
  classifier: (c: Context<JobsAppEnv>) => Classifier;
}

function invalid(parameter: string, detail: string, code = "invalid-parameter"): AppError {
  return new AppError(code, 422, detail, { parameter });
}

function notFound(id: string): AppError {
  return new AppError(
    "not-found",
    404,
    `No job ${JSON.stringify(id.slice(0, 100))} exists for this API key.`,
  );
}

function storeOf(env: GatewayEnv): { store: JobStore; uploads: R2Bucket; queue: Queue; deliveries: Queue } {
  if (!env.DB || !env.UPLOADS || !env.JOBS_QUEUE || !env.DELIVERY_QUEUE)
    throw new AppError(
      "jobs-unavailable",
      503,
      "Webhook jobs are not configured on this deployment (the DB, UPLOADS, JOBS_QUEUE and DELIVERY_QUEUE bindings are missing).",
      { retryAfter: 60 },
    );
  return {
    store: new JobStore(env.DB),
    uploads: env.UPLOADS,
    queue: env.JOBS_QUEUE,
    deliveries: env.DELIVERY_QUEUE,
  };
}

/** The metadata as canonical JSON text, or null; 422 unless it is a JSON object within the limit. */
function metadataText(raw: unknown, maxBytes: number): string | null {
  if (raw === undefined || raw === null || raw === "") return null;
  let value = raw;
  if (typeof raw === "string") {
    try {
      value = JSON.parse(raw);
    } catch {
      throw invalid(
        "metadata",
        "metadata must be a JSON object; the text given is not JSON.",
        "invalid-metadata",
      );
    }
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw invalid("metadata", 'metadata must be a JSON object such as {"order": 42}.', "invalid-metadata");
  const text = JSON.stringify(value);
  const bytes = new TextEncoder().encode(text).byteLength;
  if (bytes > maxBytes)
    throw new AppError(
      "metadata-too-large",
      422,
      `metadata is ${bytes} bytes of JSON; at most ${maxBytes} are accepted. Keep a reference in it instead.`,
      { parameter: "metadata", maxBytes },
    );
  return text;
}

function idempotencyKeyOf(c: Context<JobsAppEnv>): string | null {
  const key = c.req.header("idempotency-key");
  if (key === undefined) return null;
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH || !/^[\x21-\x7e]+$/.test(key))
    throw invalid(
      "Idempotency-Key",
      `Idempotency-Key must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters without spaces (a UUID is typical).`,
    );
  return key;
}

async function replayOrConflict(c: Context<JobsAppEnv>, job: JobRow, hash: string, store: JobStore) {
  if (job.request_hash !== hash)
    throw new AppError(
      "idempotency-key-reused",
      422,
      "This Idempotency-Key was already used for a different request (other images or parameters). Use a new key for a new job.",
      { job: job.id },
    );
  return c.json(jobView(job, await store.delivery(job.id)), 202, {
    location: `/v1/jobs/${job.id}`,
    "idempotent-replayed": "true",
  });
}

/** Adds the /v1/jobs routes to the gateway app (after its auth middleware). */
export function registerJobRoutes(app: Hono<JobsAppEnv>, deps: Deps): void {
  app.post("/v1/jobs", async (c) => {
    const { store, uploads, queue } = storeOf(c.env);
    const limits = configOf(c.env).limits;
    const cfg = jobsConfigOf(c.env);
    const caller = c.get("caller");
    const key = idempotencyKeyOf(c);
    const deadline = Deadline.forRequest(c.req.raw, limits);
    const input = await deadline.race(
      readClassifyInput(c.req.raw, {
        maxBodyBytes: limits.maxBodyBytes,
        maxBatch: limits.maxBatch,
        urlFetch: { policy: { allowLoopback: limits.allowLoopbackFetch } },
      }),
    );
    const rawCallback = c.req.query("callback_url") ?? input.callbackUrl;
    let callbackUrl: string | null = null;
    if (rawCallback !== undefined && rawCallback !== null) {
      if (typeof rawCallback !== "string")
        throw invalid(
          "callback_url",
          "callback_url must be a string (an https URL).",
          "invalid-callback-url",
        );
      callbackUrl = checkCallbackUrl(rawCallback, {
        allowedPorts: cfg.callbackPorts,
        allowLoopback: configOf(c.env).limits.allowLoopbackFetch,
      }).href;
    }
    const metadata = metadataText(c.req.query("metadata") ?? input.metadata, cfg.maxMetadataBytes);
    // top_k is checked against the active model's labels when one is published; otherwise (503)
    // against the jobs limit only, and the job fails later if the model has fewer labels.
    let labelCount = cfg.maxTopK;
    try {
      labelCount = (await deadline.race(deps.classifier(c).model())).labels.length;
    } catch (e) {
      if (!(e instanceof AppError) || e.status < 500) throw e;
    }
    const topK = resolveTopK(c.req.query("top_k"), input.topK, labelCount);
    if (topK > cfg.maxTopK)
      throw invalid(
        "top_k",
        `A job's top_k may be at most ${cfg.maxTopK} (MAX_JOB_TOP_K), got ${topK}. /v1/classify allows more.`,
      );
    const exifTranspose = resolveExifTranspose(c.req.query("exif_transpose"), input.exifTranspose);
    const cancelAfterS = cancelAfterOf(c.req.query("cancel_after") ?? input.cancelAfter);
    const imageHashes = await Promise.all(input.images.map((b) => sha256Hex(b)));
    const hash = await sha256Hex(
      new TextEncoder().encode(
        JSON.stringify({
          images: imageHashes,
          batch: input.batch,
          callbackUrl,
          metadata,
          topK,
          exifTranspose,
          ...(cancelAfterS !== null && { cancelAfterS }),
        }),
      ),
    );
    if (key !== null) {
      const existing = await store.byIdempotencyKey(caller, key);
      if (existing) return replayOrConflict(c, existing, hash, store);
    }
    const now = Date.now();
    const id = newJobId(now);
    await Promise.all(input.images.map((b, i) => uploads.put(uploadKey(id, i), b)));
    const { job, created } = await store.create({
      id,
      owner: caller,
      idempotencyKey: key,
      requestHash: hash,
      callbackUrl,
      metadata,
      topK,
      exifTranspose,
      batch: input.batch,
      imageCount: input.images.length,
      imageBytes: input.images.reduce((n, b) => n + b.byteLength, 0),
      now,
      retentionMs: cfg.retentionMs,
      cancelAfterS,
    });
    if (!created) {
      // Another request with the same key won the race: drop our copy of the images.
      await uploads.delete(input.images.map((_, i) => uploadKey(id, i)));
      return replayOrConflict(c, job, hash, store);
    }
    try {
      await queue.send({ jobId: job.id });
    } catch (e) {
      // The job is stored: the sweeper re-enqueues queued jobs it finds untouched.
      console.error(`job ${job.id}: could not enqueue; the sweeper will`, e);
    }
    addUsage(c, { jobs: 1 });
    return c.json(jobView(job, null), 202, { location: `/v1/jobs/${job.id}` });
  });

  app.get("/v1/jobs", async (c) => {
    const { store } = storeOf(c.env);
    const status = c.req.query("status");
    if (status !== undefined && !JOB_STATUSES.includes(status as JobStatus))
      throw invalid(
        "status",
        `status must be one of ${JOB_STATUSES.join(", ")}, got ${JSON.stringify(status.slice(0, 50))}.`,
      );
    const rawLimit = c.req.query("limit");
    const limit = rawLimit === undefined ? LIST_DEFAULT_LIMIT : Number(rawLimit);
    if (!/^\d+$/.test(rawLimit ?? "1") || !Number.isInteger(limit) || limit < 1 || limit > LIST_MAX_LIMIT)
      throw invalid(
        "limit",
        `limit must be an integer from 1 to ${LIST_MAX_LIMIT}, got ${JSON.stringify(rawLimit)}.`,
      );
    const cursor = c.req.query("cursor");
    if (cursor !== undefined && !isJobId(cursor))
      throw invalid("cursor", "cursor must be the next_cursor of a previous page.");
    const page = await store.list(c.get("caller"), {
      status: status as JobStatus | undefined,
      limit,
      cursor,
    });
    return c.json({
      jobs: page.jobs.map((j) => jobView(j.job, j.delivery)),
      next_cursor: page.next,
    });
  });

  app.get("/v1/jobs/:id", async (c) => {
    const { store } = storeOf(c.env);
    const id = c.req.param("id");
    const job = isJobId(id) ? await store.get(c.get("caller"), id) : null;
    if (!job) throw notFound(id);
    return c.json(jobView(job, await store.delivery(job.id)));
  });

  app.post("/v1/jobs/:id/redeliver", async (c) => {
    const { store, deliveries } = storeOf(c.env);
    const id = c.req.param("id");
    if (!isJobId(id)) throw notFound(id);
    const r = await store.redeliver(c.get("caller"), id, Date.now());
    if ("reason" in r) {
      if (r.reason === "not-found") throw notFound(id);
      const detail = {
        "not-final": "The job has not finished yet: its event is delivered when it does.",
        "no-callback": "The job has no callback_url, so there is nothing to deliver. Poll GET /v1/jobs/{id}.",
        "in-progress": "A delivery of this job is in progress; redeliver once it is delivered or failed.",
      }[r.reason];
      throw new AppError(
        r.reason === "no-callback" ? "no-callback-url" : `delivery-${r.reason}`,
        409,
        detail,
      );
    }
    await deliveries.send({ jobId: id, generation: r.delivery.generation });
    const job = await store.get(c.get("caller"), id);
    return c.json(jobView(job!, r.delivery), 202, { location: `/v1/jobs/${id}` });
  });

  // A queued job ends canceled now (never classified); a running one is marked, and the jobs
  // consumer discards its result and ends it canceled. Either way the final event says canceled.
  app.post("/v1/jobs/:id/cancel", async (c) => {
    const { store, uploads, deliveries } = storeOf(c.env);
    const cfg = jobsConfigOf(c.env);
    const id = c.req.param("id");
    if (!isJobId(id)) throw notFound(id);
    const now = Date.now();
    const r = await store.requestCancel(c.get("caller"), id, now);
    if ("reason" in r) {
      if (r.reason === "not-found" || !r.job) throw notFound(id);
      throw new AppError(
        "job-final",
        409,
        `The job has already ended (${jobView(r.job).status}); there is nothing to cancel.`,
        { job_status: jobView(r.job).status },
      );
    }
    if (r.job.status === "queued") {
      const held = await store.claimToEnd(id, now, cfg.leaseMs);
      // Not held: a consumer claimed it first; it sees the cancel and ends it canceled.
      if (held)
        await endJob(
          {
            store,
            uploads,
            config: cfg,
            classifier: () => {
              throw new Error("a canceled job is not classified");
            },
            sendJob: async () => {},
            sendDelivery: async (msg) => {
              await deliveries.send(msg);
            },
          },
          held,
          "canceled",
        );
    }
    const job = await store.get(c.get("caller"), id);
    return c.json(jobView(job!, await store.delivery(id)), 202, { location: `/v1/jobs/${id}` });
  });
}
