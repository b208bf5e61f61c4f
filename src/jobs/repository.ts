/**
 * @module
 * The jobs store in D1 (schema: migrations/0001_jobs.sql). Every state change is one conditional
 * UPDATE (or one D1 batch, which D1 runs as a transaction), so that Queues' at-least-once delivery,
 * a consumer that crashes halfway, or two consumers racing never give a job two results or two
 * different events:
 *
 * - a job is claimed (`queued` -> `running`, or a `running` job whose lease expired) by incrementing
 *   `attempts`; that number is the claim token, and only the holder of the latest token may finish
 *   the job or put it back to `queued`;
 * - finishing writes the result and, in the same batch, the delivery row with the event payload,
 *   only if the claim still holds: a second finisher changes nothing;
 * - a delivery attempt is claimed the same way (`attempts` within a `generation`), and its outcome
 *   is recorded only by that claim; a redelivery starts a new generation, so messages of an older
 *   one are dropped.
 *
 * All times are Unix milliseconds, passed in (`now`) so tests can move the clock.
 */
import {
  type DeliveryRow,
  eventPayload,
  type JobRow,
  type JobStatus,
  newJobId,
  webhookIdFor,
} from "./model.ts";

/** R2 key of image `index` of a job in the UPLOADS bucket. */
export function uploadKey(jobId: string, index: number): string {
  return `uploads/${jobId}/${index}`;
}

export interface NewJob {
  owner: string;
  idempotencyKey: string | null;
  requestHash: string;
  callbackUrl: string | null;
  /** The caller's metadata as JSON text, or null. */
  metadata: string | null;
  topK: number;
  exifTranspose: boolean;
  batch: boolean;
  imageCount: number;
  imageBytes: number;
  now: number;
  retentionMs: number;
  /** Defaults to a new time-ordered id; the gateway picks it first to name the uploads. */
  id?: string;
  /** cancel_after (s): a job not started within this ends `expired`. */
  cancelAfterS?: number | null;
}

export interface JobOutcome {
  /** canceled and expired are stored as status failed + outcome. */
  status: "succeeded" | "failed" | "canceled" | "expired";
  results?: unknown;
  images?: unknown;
  model?: unknown;
  timings?: unknown;
  /** Problem details (failed). */
  error?: unknown;
}

export interface ListOptions {
  status?: JobStatus;
  limit: number;
  /** The id of the last job of the previous page. */
  cursor?: string;
}

const JOB_COLUMNS = `id, owner, status, idempotency_key, request_hash, callback_url, metadata, top_k,
  exif_transpose, batch, image_count, image_bytes, created_at, updated_at, expires_at, start_by`;

export class JobStore {
  constructor(readonly db: D1Database) {}

  /**
   * Inserts a job unless the owner already has one under the same idempotency key; returns the job
   * that holds the key and whether it was created now. The caller compares `request_hash`.
   */
  async create(n: NewJob): Promise<{ job: JobRow; created: boolean }> {
    const id = n.id ?? newJobId(n.now);
    const row = await this.db
      .prepare(
        `INSERT INTO jobs (${JOB_COLUMNS}) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT DO NOTHING RETURNING *`,
      )
      .bind(
        id,
        n.owner,
        n.idempotencyKey,
        n.requestHash,
        n.callbackUrl,
        n.metadata,
        n.topK,
        n.exifTranspose ? 1 : 0,
        n.batch ? 1 : 0,
        n.imageCount,
        n.imageBytes,
        n.now,
        n.now,
        n.now + n.retentionMs,
        n.cancelAfterS ? n.now + n.cancelAfterS * 1000 : null,
      )
      .first<JobRow>();
    if (row) return { job: row, created: true };
    if (n.idempotencyKey !== null) {
      const existing = await this.byIdempotencyKey(n.owner, n.idempotencyKey);
      if (existing) return { job: existing, created: false };
    }
    throw new Error(`job ${id} was not inserted and no job holds its idempotency key`);
  }

  byIdempotencyKey(owner: string, key: string): Promise<JobRow | null> {
    return this.db
      .prepare("SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?")
      .bind(owner, key)
      .first<JobRow>();
  }

  /** The job if it exists and belongs to `owner` (anyone else gets null, i.e. a 404). */
  get(owner: string, id: string): Promise<JobRow | null> {
    return this.db.prepare("SELECT * FROM jobs WHERE id = ? AND owner = ?").bind(id, owner).first<JobRow>();
  }

  /** Internal (consumers, sweeper): the job whoever owns it. */
  byId(id: string): Promise<JobRow | null> {
    return this.db.prepare("SELECT * FROM jobs WHERE id = ?").bind(id).first<JobRow>();
  }

  delivery(jobId: string): Promise<DeliveryRow | null> {
    return this.db.prepare("SELECT * FROM deliveries WHERE job_id = ?").bind(jobId).first<DeliveryRow>();
  }

  /** The owner's jobs, newest first, with their deliveries; `next` is the cursor of the next page. */
  async list(
    owner: string,
    o: ListOptions,
  ): Promise<{ jobs: { job: JobRow; delivery: DeliveryRow | null }[]; next: string | null }> {
    const where = ["j.owner = ?"];
    const args: unknown[] = [owner];
    if (o.status === "canceled" || o.status === "expired") {
      where.push("j.status = 'failed' AND j.outcome = ?");
      args.push(o.status);
    } else if (o.status) {
      where.push("j.status = ?");
      args.push(o.status);
      if (o.status === "failed") where.push("j.outcome IS NULL");
    }
    if (o.cursor) {
      where.push("j.id < ?");
      args.push(o.cursor);
    }
    const { results } = await this.db
      .prepare(
        `SELECT j.*, d.job_id AS d_job_id, d.webhook_id AS d_webhook_id, d.url AS d_url, d.state AS d_state,
           d.generation AS d_generation, d.attempts AS d_attempts, d.total_attempts AS d_total_attempts,
           d.last_status AS d_last_status, d.last_error AS d_last_error, d.last_attempt_at AS d_last_attempt_at,
           d.next_attempt_at AS d_next_attempt_at, d.delivered_at AS d_delivered_at
         FROM jobs j LEFT JOIN deliveries d ON d.job_id = j.id
         WHERE ${where.join(" AND ")} ORDER BY j.id DESC LIMIT ?`,
      )
      .bind(...args, o.limit + 1)
      .all<Record<string, unknown>>();
    const page = results.slice(0, o.limit).map((r) => {
      const job = Object.fromEntries(
        Object.entries(r).filter(([k]) => !k.startsWith("d_")),
      ) as unknown as JobRow;
      const delivery =
        r.d_job_id === null
          ? null
          : ({
              job_id: r.d_job_id,
              webhook_id: r.d_webhook_id,
              url: r.d_url,
              payload: "",
              state: r.d_state,
              generation: r.d_generation,
              attempts: r.d_attempts,
              total_attempts: r.d_total_attempts,
              last_status: r.d_last_status,
              last_error: r.d_last_error,
              last_attempt_at: r.d_last_attempt_at,
              next_attempt_at: r.d_next_attempt_at,
              lease_until: null,
              delivered_at: r.d_delivered_at,
              created_at: 0,
              updated_at: 0,
            } as DeliveryRow);
      return { job, delivery };
    });
    return { jobs: page, next: results.length > o.limit ? page[page.length - 1].job.id : null };
  }

  /**
   * Claims a job for one classification attempt: `queued`, or `running` with an expired lease.
   * Returns the claimed row (its `attempts` is the token) or null when someone else holds it or it
   * is final.
   */
  claim(id: string, now: number, leaseMs: number): Promise<JobRow | null> {
    return this.db
      .prepare(
        `UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = ?,
           started_at = COALESCE(started_at, ?), updated_at = ?
         WHERE id = ? AND (status = 'queued' OR (status = 'running' AND lease_until < ?))
           AND (start_by IS NULL OR started_at IS NOT NULL OR start_by >= ?) RETURNING *`,
      )
      .bind(now + leaseMs, now, now, id, now, now)
      .first<JobRow>();
  }

  /**
   * Takes a queued job to end it without classifying (cancel, expiry): like {@link claim} but
   * regardless of cancel_after and without marking it started. The claimed row's `attempts` is the
   * token {@link finish} needs.
   */
  claimToEnd(id: string, now: number, leaseMs: number): Promise<JobRow | null> {
    return this.db
      .prepare(
        `UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = ?, updated_at = ?
         WHERE id = ? AND status = 'queued' RETURNING *`,
      )
      .bind(now + leaseMs, now, id)
      .first<JobRow>();
  }

  /**
   * Records a cancel of the owner's job: queued or running jobs get `cancel_requested_at` (kept
   * from the first cancel). Returns the row after it, or why nothing changed.
   */
  async requestCancel(
    owner: string,
    id: string,
    now: number,
  ): Promise<{ job: JobRow } | { reason: "not-found" | "final"; job?: JobRow }> {
    const row = await this.db
      .prepare(
        `UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?), updated_at = ?
         WHERE id = ? AND owner = ? AND status IN ('queued', 'running') RETURNING *`,
      )
      .bind(now, now, id, owner)
      .first<JobRow>();
    if (row) return { job: row };
    const job = await this.get(owner, id);
    return job ? { reason: "final", job } : { reason: "not-found" };
  }

  /** Queued jobs never started whose cancel_after has passed (the sweeper expires them). */
  async dueExpiries(now: number, limit: number): Promise<string[]> {
    const { results } = await this.db
      .prepare(
        `SELECT id FROM jobs WHERE status = 'queued' AND started_at IS NULL AND start_by IS NOT NULL
           AND start_by < ? ORDER BY start_by LIMIT ?`,
      )
      .bind(now, limit)
      .all<{ id: string }>();
    return results.map((r) => r.id);
  }

  /** Puts a claimed job back to `queued` (retryable error, or the consumer failed); false if the claim was lost. */
  async release(id: string, token: number, now: number, error?: unknown, unstart = false): Promise<boolean> {
    const r = await this.db
      .prepare(
        `UPDATE jobs SET status = 'queued', lease_until = NULL, updated_at = ?, error = COALESCE(?, error),
           started_at = CASE WHEN ? THEN NULL ELSE started_at END
         WHERE id = ? AND status = 'running' AND attempts = ?`,
      )
      .bind(now, error === undefined ? null : JSON.stringify(error), unstart ? 1 : 0, id, token)
      .run();
    return r.meta.changes === 1;
  }

  /**
   * Makes a claimed job final and, when it has a callback_url, creates its delivery with the event
   * payload, in one transaction. Returns the final job, or null when the claim no longer holds
   * (another attempt finished or took over): then nothing was written.
   */
  async finish(
    job: JobRow,
    outcome: JobOutcome,
    now: number,
    retentionMs: number,
  ): Promise<{ job: JobRow; delivery: DeliveryRow | null } | null> {
    const stored = outcome.status === "succeeded" ? "succeeded" : "failed";
    const why = outcome.status === "canceled" || outcome.status === "expired" ? outcome.status : null;
    const final: JobRow = {
      ...job,
      status: stored,
      outcome: why,
      results: outcome.results === undefined ? null : JSON.stringify(outcome.results),
      images: outcome.images === undefined ? null : JSON.stringify(outcome.images),
      model: outcome.model === undefined ? null : JSON.stringify(outcome.model),
      timings: outcome.timings === undefined ? null : JSON.stringify(outcome.timings),
      error: outcome.error === undefined ? null : JSON.stringify(outcome.error),
      lease_until: null,
      updated_at: now,
      finished_at: now,
      expires_at: now + retentionMs,
    };
    const update = this.db
      .prepare(
        `UPDATE jobs SET status = ?, outcome = ?, results = ?, images = ?, model = ?, timings = ?, error = ?,
           lease_until = NULL, updated_at = ?, finished_at = ?, expires_at = ?
         WHERE id = ? AND status = 'running' AND attempts = ?${stored === "succeeded" ? " AND cancel_requested_at IS NULL" : ""}`,
      )
      .bind(
        final.status,
        final.outcome,
        final.results,
        final.images,
        final.model,
        final.timings,
        final.error,
        now,
        now,
        final.expires_at,
        job.id,
        job.attempts,
      );
    if (!job.callback_url) {
      const r = await update.run();
      return r.meta.changes === 1 ? { job: final, delivery: null } : null;
    }
    const delivery: DeliveryRow = {
      job_id: job.id,
      webhook_id: webhookIdFor(job.id),
      url: job.callback_url,
      payload: eventPayload(final, now),
      state: "pending",
      generation: 0,
      attempts: 0,
      total_attempts: 0,
      last_status: null,
      last_error: null,
      last_attempt_at: null,
      next_attempt_at: now,
      lease_until: null,
      delivered_at: null,
      created_at: now,
      updated_at: now,
    };
    // Inserted only if this claim made the job final (same transaction, right after the update).
    const insert = this.db
      .prepare(
        `INSERT INTO deliveries (job_id, webhook_id, url, payload, state, next_attempt_at, created_at, updated_at)
         SELECT ?, ?, ?, ?, 'pending', ?, ?, ? WHERE EXISTS (
           SELECT 1 FROM jobs WHERE id = ? AND status = ? AND attempts = ? AND finished_at = ?)
         ON CONFLICT DO NOTHING`,
      )
      .bind(
        delivery.job_id,
        delivery.webhook_id,
        delivery.url,
        delivery.payload,
        now,
        now,
        now,
        job.id,
        final.status,
        job.attempts,
        now,
      );
    const [u, i] = await this.db.batch([update, insert]);
    if (u.meta.changes !== 1) return null;
    return { job: final, delivery: i.meta.changes === 1 ? delivery : await this.delivery(job.id) };
  }

  /**
   * Claims delivery attempt `attempt + 1` of `generation`: only when the delivery is pending in
   * that generation with exactly `attempt` attempts made and no live lease. Returns the row after
   * the claim (its `attempts` is the token) or null (a duplicate or stale message).
   */
  claimDelivery(
    jobId: string,
    generation: number,
    attempt: number,
    now: number,
    leaseMs: number,
  ): Promise<DeliveryRow | null> {
    return this.db
      .prepare(
        `UPDATE deliveries SET attempts = attempts + 1, total_attempts = total_attempts + 1, lease_until = ?,
           last_attempt_at = ?, updated_at = ?
         WHERE job_id = ? AND state = 'pending' AND generation = ? AND attempts = ?
           AND (lease_until IS NULL OR lease_until < ?) RETURNING *`,
      )
      .bind(now + leaseMs, now, now, jobId, generation, attempt, now)
      .first<DeliveryRow>();
  }

  /**
   * Records the outcome of the claimed attempt: delivered, failed (410 or out of attempts), or
   * pending again with `nextAttemptAt`. False when the claim no longer holds.
   */
  async recordAttempt(
    d: DeliveryRow,
    r: {
      state: "delivered" | "failed" | "pending";
      status: number | null;
      error: string | null;
      nextAttemptAt: number | null;
      now: number;
    },
  ): Promise<boolean> {
    const res = await this.db
      .prepare(
        `UPDATE deliveries SET state = ?, last_status = ?, last_error = ?, next_attempt_at = ?, lease_until = NULL,
           delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END, updated_at = ?
         WHERE job_id = ? AND state = 'pending' AND generation = ? AND attempts = ? AND lease_until = ?`,
      )
      .bind(
        r.state,
        r.status,
        r.error,
        r.state === "pending" ? r.nextAttemptAt : null,
        r.state,
        r.now,
        r.now,
        d.job_id,
        d.generation,
        d.attempts,
        d.lease_until,
      )
      .run();
    return res.meta.changes === 1;
  }

  /** Marks a pending delivery of `generation` failed (its messages were dead-lettered); false if it was not pending. */
  async failDelivery(jobId: string, generation: number, now: number, error: string): Promise<boolean> {
    const r = await this.db
      .prepare(
        `UPDATE deliveries SET state = 'failed', last_error = ?, next_attempt_at = NULL, lease_until = NULL, updated_at = ?
         WHERE job_id = ? AND generation = ? AND state = 'pending'`,
      )
      .bind(error, now, jobId, generation)
      .run();
    return r.meta.changes === 1;
  }

  /**
   * Starts one more delivery of the final event (same webhook-id, same payload) when the last one
   * is over (delivered or failed). Returns the new row, or the reason it cannot.
   */
  async redeliver(
    owner: string,
    jobId: string,
    now: number,
  ): Promise<
    { delivery: DeliveryRow } | { reason: "not-found" | "not-final" | "no-callback" | "in-progress" }
  > {
    const job = await this.get(owner, jobId);
    if (!job) return { reason: "not-found" };
    if (job.status !== "succeeded" && job.status !== "failed") return { reason: "not-final" };
    if (!job.callback_url) return { reason: "no-callback" };
    const d = await this.db
      .prepare(
        `UPDATE deliveries SET state = 'pending', generation = generation + 1, attempts = 0, next_attempt_at = ?,
           lease_until = NULL, updated_at = ?
         WHERE job_id = ? AND state IN ('delivered', 'failed') RETURNING *`,
      )
      .bind(now, now, jobId)
      .first<DeliveryRow>();
    return d ? { delivery: d } : { reason: "in-progress" };
  }

  /**
   * Jobs the sweeper re-enqueues: queued and not touched for `stuckMs`, or running past their
   * lease (those go back to `queued`: a late finisher's claim no longer holds). Touches them
   * (updated_at = now) so the next sweep does not send them again at once.
   */
  async stuckJobs(now: number, stuckMs: number, limit: number): Promise<string[]> {
    const { results } = await this.db
      .prepare(
        `UPDATE jobs SET status = 'queued', lease_until = NULL, updated_at = ? WHERE id IN (
           SELECT id FROM jobs WHERE (status = 'queued' AND updated_at < ?) OR (status = 'running' AND lease_until < ?)
           ORDER BY updated_at LIMIT ?) RETURNING id`,
      )
      .bind(now, now - stuckMs, now, limit)
      .all<{ id: string }>();
    return results.map((r) => r.id);
  }

  /**
   * Deliveries the sweeper re-enqueues: pending, due for more than `graceMs`, with no live lease
   * (a lost message, a dev server restarted, a consumer that died mid-attempt).
   */
  async stuckDeliveries(
    now: number,
    graceMs: number,
    limit: number,
  ): Promise<{ job_id: string; generation: number; attempts: number }[]> {
    const { results } = await this.db
      .prepare(
        `UPDATE deliveries SET next_attempt_at = ?, lease_until = NULL, updated_at = ? WHERE job_id IN (
           SELECT job_id FROM deliveries WHERE state = 'pending' AND next_attempt_at < ?
             AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at LIMIT ?)
         RETURNING job_id, generation, attempts`,
      )
      .bind(now, now, now - graceMs, now, limit)
      .all<{ job_id: string; generation: number; attempts: number }>();
    return results;
  }

  /** Final jobs (or expired ones) whose uploaded images are still in R2. */
  async uploadsToDelete(now: number, limit: number): Promise<{ id: string; image_count: number }[]> {
    const { results } = await this.db
      .prepare(
        `SELECT id, image_count FROM jobs WHERE uploads_deleted = 0
           AND (status IN ('succeeded', 'failed') OR expires_at < ?) LIMIT ?`,
      )
      .bind(now, limit)
      .all<{ id: string; image_count: number }>();
    return results;
  }

  async markUploadsDeleted(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.batch(
      ids.map((id) => this.db.prepare("UPDATE jobs SET uploads_deleted = 1 WHERE id = ?").bind(id)),
    );
  }

  /** Deletes jobs past their retention whose uploads are gone, with their deliveries; returns how many. */
  async expire(now: number, limit: number): Promise<number> {
    const ids = (
      await this.db
        .prepare("SELECT id FROM jobs WHERE expires_at < ? AND uploads_deleted = 1 LIMIT ?")
        .bind(now, limit)
        .all<{ id: string }>()
    ).results.map((r) => r.id);
    if (ids.length === 0) return 0;
    const marks = ids.map(() => "?").join(", ");
    await this.db.batch([
      this.db.prepare(`DELETE FROM deliveries WHERE job_id IN (${marks})`).bind(...ids),
      this.db.prepare(`DELETE FROM jobs WHERE id IN (${marks})`).bind(...ids),
    ]);
    return ids.length;
  }
}
