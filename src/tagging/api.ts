/**
 * @module
 * The gateway's `/v1/images` routes over the tagging store (D1) and the tagging queue. Mounted by
 * the gateway app (`app.route("/", imageRoutes())`), behind its `/v1/*` bearer auth; errors are
 * thrown as AppError and leave through the gateway's problem+json handler.
 *
 * - `GET /v1/images?label=&min_score=&limit=&cursor=`: images carrying `label` (case-insensitive
 *   exact match), best score first; `next_cursor` until the last page. Without `label`: every
 *   recorded image (tagged, pending, skipped or failed), oldest first (the demo page's list).
 * - `GET /v1/images/tags?url=` (origin URL or the URL it was served under) `| ?key=` (R2 key):
 *   one image's status and labels; 404 `image-not-found` when it was never seen.
 * - `GET /v1/images/stats?prefix=&since=`: counts by status (for `npm run tag` progress).
 * - `POST /v1/images/backfill` `{"bucket","prefix"?,"cursor"?,"retag"?,"limit"?}`: lists up to
 *   `limit` (<= 1000) keys of the IMAGES bucket and enqueues one tag message each; answers
 *   `{listed, enqueued, cursor, at}` (`cursor` null when the listing is done; `at` = the server's
 *   time before enqueueing, for `stats?since=`). `npm run tag` loops on it.
 */
import { Hono } from "hono";
import { AppError } from "../shared/errors.ts";
import type { TagMessage } from "./messages.ts";
import { ImageStore, SEARCH_LIMITS } from "./store.ts";

/** Bindings the routes use (all optional: a gateway deployed without tagging answers 503). */
export interface ImagesApiEnv {
  DB?: D1Database;
  IMAGES?: R2Bucket;
  TAGGING_QUEUE?: Queue<unknown>;
  /** Name of the IMAGES bucket (what `--bucket` must name). */
  IMAGES_BUCKET?: string;
}

/** Most keys one backfill call lists (R2's list limit). */
export const BACKFILL_MAX_LIMIT = 1000;
/** Messages per Queue sendBatch call (the platform's limit). */
const SEND_BATCH = 100;

function invalid(parameter: string, detail: string): AppError {
  return new AppError("invalid-parameter", 422, detail, { parameter });
}

function numberParam(
  raw: string | undefined,
  name: string,
  min: number,
  max: number,
  integer: boolean,
): number | undefined {
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n)))
    throw invalid(
      name,
      `${name} must be ${integer ? "an integer" : "a number"} from ${min} to ${max}, got ${JSON.stringify(raw)}.`,
    );
  return n;
}

function storeOf(env: ImagesApiEnv): ImageStore {
  if (!env.DB)
    throw new AppError(
      "tagging-unavailable",
      503,
      "Image tagging is not configured on this deployment (no DB binding).",
    );
  return new ImageStore(env.DB);
}

/** The `/v1/images` routes. */
export function imageRoutes<E extends ImagesApiEnv>(): Hono<{ Bindings: E; Variables: { caller?: string } }> {
  const app = new Hono<{ Bindings: E; Variables: { caller?: string } }>();

  app.get("/v1/images", async (c) => {
    const label = c.req.query("label");
    if (label === undefined)
      return c.json(
        await storeOf(c.env).list({
          limit: numberParam(c.req.query("limit"), "limit", 1, SEARCH_LIMITS.max, true),
          cursor: c.req.query("cursor") ?? null,
        }),
      );
    if (!label)
      throw invalid("label", "label is empty; give one, e.g. /v1/images?label=tabby,%20tabby%20cat");
    if (label.length > 1000) throw invalid("label", "label is longer than 1000 characters.");
    const page = await storeOf(c.env).search({
      label,
      minScore: numberParam(c.req.query("min_score"), "min_score", 0, 1, false),
      limit: numberParam(c.req.query("limit"), "limit", 1, SEARCH_LIMITS.max, true),
      cursor: c.req.query("cursor") ?? null,
    });
    return c.json(page);
  });

  app.get("/v1/images/tags", async (c) => {
    const url = c.req.query("url");
    const key = c.req.query("key");
    if ((url === undefined) === (key === undefined))
      throw invalid("url", "give exactly one of url= (the image URL) or key= (its R2 key).");
    const rec = await storeOf(c.env).lookup(url !== undefined ? { url } : { key: key as string });
    if (!rec)
      throw new AppError(
        "image-not-found",
        404,
        "No image is recorded under that URL or key. It is recorded once it has been requested through the tagging Worker (or backfilled) and the queue has run.",
      );
    return c.json(rec);
  });

  app.get("/v1/images/stats", async (c) => {
    const db = c.env.DB;
    if (!db)
      throw new AppError("tagging-unavailable", 503, "Image tagging is not configured (no DB binding).");
    const since = numberParam(c.req.query("since"), "since", 0, Number.MAX_SAFE_INTEGER, true) ?? 0;
    const prefix = c.req.query("prefix") ?? "";
    const { results } = await db
      .prepare(
        "SELECT status, COUNT(*) AS n, SUM(classified) AS classified FROM images WHERE updated_at >= ?1 AND (?2 = '' OR substr(COALESCE(r2_key, url), 1, length(?2)) = ?2) GROUP BY status",
      )
      .bind(since, prefix)
      .all<{ status: string; n: number; classified: number }>();
    const counts: Record<string, number> = { tagged: 0, skipped: 0, failed: 0 };
    let classified = 0;
    for (const r of results) {
      counts[r.status] = r.n;
      classified += r.classified ?? 0;
    }
    return c.json({ ...counts, classified });
  });

  app.post("/v1/images/backfill", async (c) => {
    const { IMAGES: bucket, TAGGING_QUEUE: queue } = c.env;
    if (!bucket || !queue)
      throw new AppError(
        "tagging-unavailable",
        503,
        "Bulk tagging needs the IMAGES bucket and the tagging queue bound to the gateway.",
      );
    let body: Record<string, unknown>;
    try {
      body = (await c.req.json()) as Record<string, unknown>;
    } catch {
      throw new AppError(
        "invalid-json",
        400,
        'The body must be JSON: {"bucket":"<name>","prefix":"...","cursor":"..."}',
      );
    }
    if (typeof body !== "object" || body === null)
      throw new AppError("invalid-json", 400, "The body must be a JSON object.");
    const bucketName = c.env.IMAGES_BUCKET ?? "";
    if (body.bucket !== bucketName)
      throw invalid(
        "bucket",
        `This deployment tags the bucket "${bucketName}"; got ${JSON.stringify(body.bucket)}.`,
      );
    const prefix = typeof body.prefix === "string" ? body.prefix : "";
    const cursor = typeof body.cursor === "string" && body.cursor !== "" ? body.cursor : undefined;
    const limit = body.limit === undefined ? BACKFILL_MAX_LIMIT : Number(body.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > BACKFILL_MAX_LIMIT)
      throw invalid("limit", `limit must be an integer from 1 to ${BACKFILL_MAX_LIMIT}.`);
    const at = Date.now();
    const listed = await bucket.list({ prefix, limit, ...(cursor ? { cursor } : {}) });
    const requestedAt = new Date().toISOString();
    const messages = listed.objects.map((o) => ({
      body: {
        type: "tag",
        source: { kind: "r2", bucket: bucketName, key: o.key },
        retag: body.retag === true,
        requestedAt,
        // The caller's image quota and usage are charged when the consumer classifies.
        ...(c.get("caller") ? { keyId: c.get("caller") } : {}),
      } satisfies TagMessage,
      contentType: "json" as const,
    }));
    for (let i = 0; i < messages.length; i += SEND_BATCH)
      await queue.sendBatch(messages.slice(i, i + SEND_BATCH));
    return c.json({
      listed: listed.objects.length,
      enqueued: messages.length,
      cursor: listed.truncated ? listed.cursor : null,
      // the server's clock before enqueueing: GET /v1/images/stats?since=<at> counts these jobs' outcomes
      at,
    });
  });

  return app;
}
