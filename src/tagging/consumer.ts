/**
 * @module
 * The tagging consumer: one {@link TagJob} at a time (messages of a batch run in order, so two
 * URLs of the same bytes in one batch still classify once).
 *
 * For a `tag` job:
 * 1. refuse a source that is not on the configured origin (a message is never a licence to fetch
 *    anything else) — acknowledged and logged;
 * 2. ask the core for the active model version (no model call);
 * 3. open the image at the origin: 404/410 -> `skipped: not-found`, other 4xx/3xx ->
 *    `skipped: origin-status-<code>`, 5xx/429/network -> retried (`failed: origin-error` once out of
 *    retries), a non-image content type -> `skipped: not-an-image`, larger than the limit (by
 *    Content-Length, R2 size, or while reading) -> `skipped: image-too-large`, none of them read;
 * 4. if D1 already has this locator at the same version, tagged by the same model (or skipped), and
 *    the job is not a `--retag`: rewrite the KV entry only (duplicates cost no model call);
 * 5. sha256 the bytes; the same bytes already tagged by this model version lend their labels
 *    (content-hash dedupe); otherwise classify through the core (top_k, then the minimum score);
 *    the core's 4xx errors are final (`skipped: image-too-large`/`unsupported-format`,
 *    `failed: undecodable-image`, ...), its 503/504 are retried (`failed: model-unavailable` ... once
 *    out of retries, with a KV expiration so the image is tried again later);
 * 6. store the outcome in D1, then the hot-path entry in KV.
 *
 * An R2 `forget` (object deleted) removes the row and the entry.
 */
import { sha256Hex } from "../shared/hash.ts";
import type { TaggingConfig } from "./config.ts";
import { statusEntry, type TagEntry, taggedEntry } from "./entry.ts";
import {
  type ImageSource,
  locatorOf,
  sameVersion,
  tagKey,
  unvalidated,
  type Validators,
  validatorsFromHeaders,
} from "./identity.ts";
import { parseQueueMessage, type TagJob } from "./messages.ts";
import type { OriginBindings } from "./origin.ts";
import { type ImageStore, type StoredLabel, validatorsOf } from "./store.ts";

/** The model as the consumer needs it: the active identity, and one image classified. */
export interface TagClassifier {
  activeModel(): Promise<{ id: string; version: string; synthetic: boolean }>;
  classify(
    bytes: Uint8Array,
    topK: number,
  ): Promise<{
    labels: { label: string; index: number; score: number }[];
    image: { width: number; height: number; format: string };
    model: { id: string; version: string; synthetic: boolean };
  }>;
}

export interface TaggerDeps {
  config: TaggingConfig;
  origin: OriginBindings;
  store: ImageStore;
  tags: KVNamespace;
  classifier: TagClassifier;
  now?: () => number;
  log?(event: string, detail: Record<string, unknown>): void;
  /**
   * Charges one image to the image quota of the key that asked (backfill messages carry its id)
   * before it is classified; a refused charge retries the message later. Absent: no quota.
   */
  chargeImages?(keyId: string, images: number): Promise<{ allowed: boolean; retryAfterS: number } | null>;
  /** Adds to a key's usage (or the tagging id `cdn` for work no key asked for). */
  usage?(keyId: string | null, counts: { images?: number; images_tagged?: number }): void;
}

export type TagResult =
  | { outcome: "tagged"; classified: boolean; labels: number }
  | { outcome: "skipped" | "failed"; reason: string }
  | { outcome: "current" }
  | { outcome: "forgotten" }
  | { outcome: "refused"; reason: string };

/** A failure worth retrying (origin 5xx, model unavailable, deadline); `reason` is its code. */
export class RetryableTagError extends Error {
  constructor(
    readonly reason: string,
    detail: string,
  ) {
    super(detail);
    this.name = "RetryableTagError";
  }
}

/** Content types worth decoding (the format always comes from the bytes; this only filters). */
export function looksLikeImage(contentType: string | null | undefined): boolean {
  if (!contentType) return true;
  const t = contentType.split(";")[0].trim().toLowerCase();
  return t.startsWith("image/") || t === "application/octet-stream" || t === "binary/octet-stream";
}

type Opened =
  | {
      ok: true;
      validators: Validators;
      contentType?: string;
      read(): Promise<Uint8Array | "too-large">;
      cancel(): Promise<void>;
    }
  | { ok: false; status: "skipped" | "failed"; reason: string; validators?: Validators };

/** Reads a stream into one buffer, giving up (and cancelling) past `max` bytes. */
async function readCapped(body: ReadableStream<Uint8Array>, max: number): Promise<Uint8Array | "too-large"> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel();
      return "too-large";
    }
    parts.push(value);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/**
 * Is `source` one this deployment serves? (Messages are checked, never trusted.) R2 sources: the
 * bound IMAGES bucket under R2_PREFIX, whatever the proxy fronts; URLs: under ORIGIN_URL (or, for
 * "self", under the prefix).
 */
export function onConfiguredOrigin(
  source: ImageSource,
  config: TaggingConfig,
  origin: OriginBindings,
): boolean {
  const o = config.origin;
  if (source.kind === "r2")
    return (
      origin.bucket !== undefined &&
      source.bucket === origin.bucketName &&
      source.key.startsWith(config.r2Prefix)
    );
  let u: URL;
  try {
    u = new URL(source.url);
  } catch {
    return false;
  }
  if (o.kind === "url") return u.origin === o.base.origin && u.pathname.startsWith(o.base.pathname);
  if (o.kind === "self")
    return (u.protocol === "https:" || u.protocol === "http:") && u.pathname.startsWith(config.prefix);
  return false;
}

async function openImage(source: ImageSource, deps: TaggerDeps): Promise<Opened> {
  const max = deps.config.maxImageBytes;
  if (source.kind === "r2") {
    const bucket = deps.origin.bucket;
    if (!bucket) throw new RetryableTagError("origin-error", "the IMAGES bucket is not bound");
    let obj: R2ObjectBody | null;
    try {
      obj = await bucket.get(source.key);
    } catch (e) {
      throw new RetryableTagError("origin-error", `R2 get failed: ${String(e)}`);
    }
    if (!obj) return { ok: false, status: "skipped", reason: "not-found" };
    const body = obj;
    const validators: Validators = {
      etag: obj.etag,
      lastModified: obj.uploaded.toUTCString(),
      length: obj.size,
    };
    const contentType = obj.httpMetadata?.contentType;
    if (!looksLikeImage(contentType)) {
      await body.body.cancel();
      return { ok: false, status: "skipped", reason: "not-an-image", validators };
    }
    return {
      ok: true,
      validators,
      ...(contentType ? { contentType } : {}),
      read: async () => {
        if (body.size <= max) return readCapped(body.body, max);
        await body.body.cancel();
        return "too-large";
      },
      cancel: () => body.body.cancel(),
    };
  }
  let res: Response;
  try {
    res = await deps.origin.fetch(source.url, { redirect: "manual" });
  } catch (e) {
    throw new RetryableTagError("origin-error", `origin unreachable: ${String(e)}`);
  }
  const drop = () => res.body?.cancel() ?? Promise.resolve();
  if (res.status >= 500 || res.status === 429) {
    await drop();
    throw new RetryableTagError("origin-error", `origin answered ${res.status}`);
  }
  if (res.status === 404 || res.status === 410) {
    await drop();
    return { ok: false, status: "skipped", reason: "not-found" };
  }
  if (res.status !== 200 || !res.body) {
    await drop();
    return { ok: false, status: "skipped", reason: `origin-status-${res.status}` };
  }
  const validators = validatorsFromHeaders(200, res.headers);
  const contentType = res.headers.get("content-type") ?? undefined;
  if (!looksLikeImage(contentType)) {
    await drop();
    return { ok: false, status: "skipped", reason: "not-an-image", validators };
  }
  const body = res.body;
  return {
    ok: true,
    validators,
    ...(contentType ? { contentType } : {}),
    read: async () => {
      if (validators.length === undefined || validators.length <= max) return readCapped(body, max);
      await drop();
      return "too-large";
    },
    cancel: drop,
  };
}

/** KV expiration for an entry: failed ones and URL-only identities age out. */
function entryTtl(e: TagEntry, retryable: boolean, config: TaggingConfig): number | undefined {
  if (e.status === "failed" && retryable) return config.failedRetryS;
  if (unvalidated(e.validators)) return config.unvalidatedTtlS;
  return undefined;
}

async function putEntry(deps: TaggerDeps, locator: string, e: TagEntry, retryable = false): Promise<void> {
  const ttl = entryTtl(e, retryable, deps.config);
  await deps.tags.put(await tagKey(locator), JSON.stringify(e), ttl ? { expirationTtl: ttl } : {});
}

/** The core's error codes that mean "this image will not be tagged" (a policy) rather than "it broke". */
const SKIP_CODES = new Set(["image-too-large", "unsupported-format", "image-too-small", "payload-too-large"]);

function errorCode(e: unknown): { code: string; status: number } | null {
  if (typeof e === "object" && e !== null && "code" in e && "status" in e) {
    const { code, status } = e as { code: unknown; status: unknown };
    if (typeof code === "string" && typeof status === "number") return { code, status };
  }
  return null;
}

/**
 * Runs one job. Throws {@link RetryableTagError} (or anything unexpected) for the queue to retry;
 * with `finalAttempt` a retryable failure is recorded as `failed` instead.
 */
export async function runTagJob(job: TagJob, deps: TaggerDeps, finalAttempt = false): Promise<TagResult> {
  const now = deps.now ?? Date.now;
  const locator = locatorOf(job.source);
  if (!onConfiguredOrigin(job.source, deps.config, deps.origin))
    return { outcome: "refused", reason: `${locator} is not on the configured origin` };
  if (job.op === "forget") {
    await deps.store.forget(locator);
    await deps.tags.delete(await tagKey(locator));
    return { outcome: "forgotten" };
  }
  const base = { locator, source: job.source, ...(job.publicUrl ? { publicUrl: job.publicUrl } : {}) };
  const record = async (
    status: "skipped" | "failed",
    reason: string,
    v: Validators,
    retryable: boolean,
    extra = {},
  ) => {
    await deps.store.save({
      ...base,
      validators: v,
      status,
      reason,
      labels: [],
      classified: false,
      now: now(),
      ...extra,
    });
    await putEntry(deps, locator, statusEntry(v, status, reason), retryable);
    return { outcome: status, reason } as const;
  };
  try {
    let active: { id: string; version: string; synthetic: boolean };
    try {
      active = await deps.classifier.activeModel();
    } catch (e) {
      throw new RetryableTagError(errorCode(e)?.code ?? "model-unavailable", `no active model: ${String(e)}`);
    }
    const opened = await openImage(job.source, deps);
    // The status entry carries the validators seen, so the proxy shows it for this version.
    if (!opened.ok) return await record(opened.status, opened.reason, opened.validators ?? {}, false);
    const v = opened.validators;
    const existing = await deps.store.get(locator);
    if (existing && !job.retag && sameVersion(validatorsOf(existing), v)) {
      const sameModel = existing.status === "tagged" && existing.model?.version === active.version;
      if (sameModel || existing.status === "skipped") {
        await opened.cancel();
        const entry =
          existing.status === "tagged"
            ? taggedEntry(v, existing.labels, active)
            : statusEntry(v, "skipped", existing.reason ?? "unknown");
        await putEntry(deps, locator, entry);
        await deps.store.touch(locator, now());
        return { outcome: "current" };
      }
    }
    const bytes = await opened.read();
    const meta = { ...(opened.contentType ? { contentType: opened.contentType } : {}) };
    if (bytes === "too-large") return await record("skipped", "image-too-large", v, false, meta);
    const sha256 = await sha256Hex(bytes);
    const twin = job.retag ? null : await deps.store.findTaggedBySha(sha256, active.version);
    let labels: StoredLabel[];
    let image: { width: number; height: number; format: string };
    let model = active;
    let classified = false;
    if (twin && twin.width !== null && twin.height !== null && twin.format !== null) {
      labels = twin.labels.map((l) => ({ label: l.label, classId: l.class_id, score: l.score }));
      image = { width: twin.width, height: twin.height, format: twin.format };
    } else {
      let out: Awaited<ReturnType<TagClassifier["classify"]>>;
      if (job.keyId && deps.chargeImages) {
        const r = await deps.chargeImages(job.keyId, 1);
        if (r && !r.allowed)
          throw new RetryableTagError(
            "rate-limited",
            `the image quota of ${job.keyId} is used up for this minute (retry after ${r.retryAfterS} s)`,
          );
      }
      try {
        out = await deps.classifier.classify(bytes, deps.config.topK);
      } catch (e) {
        const c = errorCode(e);
        if (c && c.status >= 400 && c.status < 500)
          return await record(SKIP_CODES.has(c.code) ? "skipped" : "failed", c.code, v, false, {
            ...meta,
            sha256,
          });
        throw new RetryableTagError(c?.code ?? "model-unavailable", String(e));
      }
      classified = true;
      model = out.model;
      image = out.image;
      labels = out.labels
        .filter((l) => l.score >= deps.config.minScore)
        .map((l) => ({ label: l.label, classId: l.index, score: l.score }));
    }
    await deps.store.save({
      ...base,
      ...meta,
      validators: v,
      sha256,
      ...image,
      model: { id: model.id, version: model.version },
      status: "tagged",
      labels,
      classified,
      now: now(),
    });
    await putEntry(deps, locator, taggedEntry(v, labels, model));
    deps.usage?.(job.keyId ?? null, { images: classified ? 1 : 0, images_tagged: 1 });
    return { outcome: "tagged", classified, labels: labels.length };
  } catch (e) {
    if (!finalAttempt) throw e;
    const reason = e instanceof RetryableTagError ? e.reason : "internal-error";
    (deps.log ?? console.warn)("tagging-gave-up", { locator, reason, error: String(e) });
    return await record("failed", reason, {}, true);
  }
}

/**
 * The queue handler: messages in order; a malformed or refused message is acknowledged (and
 * logged), a retryable failure retried with a growing delay until `maxRetries`, then recorded as
 * `failed`.
 */
export async function handleTagBatch(
  batch: MessageBatch<unknown>,
  deps: TaggerDeps,
  maxRetries: number,
): Promise<TagResult[]> {
  const log = deps.log ?? ((event, detail) => console.warn(JSON.stringify({ event, ...detail })));
  const results: TagResult[] = [];
  for (const msg of batch.messages) {
    const job = parseQueueMessage(msg.body);
    if (typeof job === "string") {
      log("tag-message-refused", { id: msg.id, reason: job });
      results.push({ outcome: "refused", reason: job });
      msg.ack();
      continue;
    }
    try {
      const r = await runTagJob(job, deps, msg.attempts > maxRetries);
      if (r.outcome === "refused") log("tag-message-refused", { id: msg.id, reason: r.reason });
      results.push(r);
      msg.ack();
    } catch (e) {
      log("tag-job-retry", { id: msg.id, attempts: msg.attempts, error: String(e) });
      msg.retry({ delaySeconds: Math.min(300, 5 * 2 ** Math.max(0, msg.attempts - 1)) });
    }
  }
  return results;
}
