/**
 * @module
 * The hot path of the tagging Worker: a GET or HEAD under the prefix is answered with the origin's
 * response, unchanged, plus the image's labels when they are known.
 *
 * Order of work for one request:
 * 1. resolve the path to one source on the configured origin (origin.ts; else 400/404, never a
 *    fetch elsewhere);
 * 2. start the origin fetch and, **at the same time**, the one KV read (key = sha256 of the
 *    locator, `cacheTtl` so repeated reads are served by the edge's KV cache);
 * 3. when the origin's headers arrive, wait for the KV read at most `lookupBudgetMs` more; use the
 *    entry only if its validators match the response's (identity.ts); add `image-labels`,
 *    `image-labels-model`, `image-labels-status`;
 * 4. return the origin's status, headers and body stream as they are (the body is never read here);
 * 5. on a miss (no entry, stale entry, KV error or budget exceeded), after the response has gone:
 *    enqueue one tagging job in `waitUntil`, deduped as described at {@link PendingSet}.
 *
 * Why KV and not the Cache API for the entry: the consumer writes an entry once, in whatever colo
 * it runs; KV makes it readable from every colo (and caches reads at the edge), whereas the Cache
 * API is per colo, so an entry written by the consumer would only ever hit in the consumer's colo.
 * The trade-off is KV's eventual consistency: a new entry can take up to about a minute to be
 * visible elsewhere, and a miss read with `cacheTtl` is itself cached for `cacheTtlS`, so an image
 * may go out untagged for up to `cacheTtlS` after it was tagged. It is never served with another
 * version's labels: the entry's validators must match the response.
 *
 * Fail open: every tagging step (KV read, validators, dedupe, enqueue) is inside try/catch and only
 * logged. The image response is the origin's, whatever happens to tagging. The one error the proxy
 * itself answers under the prefix is an origin that cannot be reached at all (502
 * `origin-unreachable`, problem+json), and 400/405 for requests it will not forward.
 */

import { problemResponse } from "../edge/problem.ts";
import { AppError } from "../shared/errors.ts";
import type { TaggingConfig } from "./config.ts";
import { applyEntry, parseEntry, STATUS_HEADER, type TagEntry } from "./entry.ts";
import {
  type ImageSource,
  locatorOf,
  sameVersion,
  tagKey,
  type Validators,
  validatorsFromHeaders,
} from "./identity.ts";
import type { TagMessage } from "./messages.ts";
import { fetchFromOrigin, type OriginBindings, resolveSource } from "./origin.ts";

/** Statuses of an image response that say "this image exists": their requests may enqueue a job. */
const IMAGE_STATUSES = new Set([200, 206, 304]);

/**
 * Burst dedupe for misses. A miss enqueues only if (a) this isolate has not enqueued the same
 * locator+version within `pendingTtlS` (a Map, bounded to `maxEntries`), and (b) when a Cache API
 * cache is given, no marker for it exists in this colo's cache (the marker is put before sending).
 *
 * What it guarantees: within one isolate, one message per locator+version per window, exactly.
 * Within a colo, usually one: two isolates that miss at the same instant may both pass the
 * match-then-put race. Across colos, at most one per colo per window. Anything beyond that is
 * absorbed by the consumer, which finds the version already tagged in D1 and does no model call.
 */
export class PendingSet {
  private readonly until = new Map<string, number>();
  constructor(private readonly maxEntries = 10_000) {}

  /** True (and remembered until `now + ttlMs`) when `id` was not pending; false when it was. */
  claim(id: string, ttlMs: number, now = Date.now()): boolean {
    const t = this.until.get(id);
    if (t !== undefined && t > now) return false;
    this.until.delete(id);
    if (this.until.size >= this.maxEntries) {
      const oldest = this.until.keys().next();
      if (!oldest.done) this.until.delete(oldest.value);
    }
    this.until.set(id, now + ttlMs);
    return true;
  }

  release(id: string): void {
    this.until.delete(id);
  }
}

/** What the proxy needs from its Worker: config, origin, and the (optional) tagging bindings. */
export interface ProxyDeps {
  config: TaggingConfig;
  origin: OriginBindings;
  /** The TAGS namespace; without it every request is a miss and nothing is enqueued. */
  tags?: KVNamespace;
  queue?: Queue<TagMessage>;
  /** A Cache API cache for colo-wide dedupe markers (caches.default in a Worker). */
  markers?: Cache;
  pending: PendingSet;
  waitUntil(p: Promise<unknown>): void;
  log?(event: string, detail: Record<string, unknown>): void;
}

function problem(status: number, code: string, detail: string, headers: HeadersInit = {}): Response {
  return problemResponse(new AppError(code, status, detail), headers);
}

async function readEntry(deps: ProxyDeps, key: string): Promise<TagEntry | null> {
  if (!deps.tags) return null;
  return parseEntry(await deps.tags.get(key, { type: "json", cacheTtl: deps.config.cacheTtlS }));
}

/** Waits for `p` at most `ms`; resolves to undefined when it is slower (or rejects). */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((res) => {
    timer = setTimeout(() => res(undefined), ms);
  });
  return Promise.race([p.catch(() => undefined), late]).finally(() => clearTimeout(timer));
}

function markerUrl(id: string): string {
  return `https://tagging-pending.beit-edge.internal/${encodeURIComponent(id)}`;
}

/** Enqueues one job for a miss, unless one is pending (see {@link PendingSet}). */
async function enqueueOnce(
  deps: ProxyDeps,
  source: ImageSource,
  locatorKey: string,
  seen: Validators,
  publicUrl: string,
): Promise<"sent" | "pending"> {
  const id = `${locatorKey}|${seen.etag ?? ""}|${seen.lastModified ?? ""}|${seen.length ?? ""}`;
  const ttlMs = deps.config.pendingTtlS * 1000;
  if (!deps.pending.claim(id, ttlMs)) return "pending";
  try {
    if (deps.markers) {
      const url = markerUrl(id);
      if (await deps.markers.match(url)) return "pending";
      await deps.markers.put(
        url,
        new Response("pending", { headers: { "cache-control": `max-age=${deps.config.pendingTtlS}` } }),
      );
    }
    await deps.queue?.send(
      { type: "tag", source, publicUrl, requestedAt: new Date().toISOString() },
      { contentType: "json" },
    );
    return "sent";
  } catch (e) {
    // Let a later request try again rather than suppressing the job for the whole window.
    deps.pending.release(id);
    await deps.markers?.delete(markerUrl(id)).catch(() => undefined);
    throw e;
  }
}

/**
 * Answers `req` when its path is under the prefix; returns null otherwise (the caller routes on).
 *
 * @example
 * export default {
 *   async fetch(req, env, ctx) {
 *     return (await handleImageRequest(req, depsFor(env, ctx))) ?? new Response("Not Found", { status: 404 });
 *   },
 * };
 */
export async function handleImageRequest(req: Request, deps: ProxyDeps): Promise<Response | null> {
  const url = new URL(req.url);
  const bucketName = deps.origin.bucketName;
  const source = resolveSource(url, deps.config, bucketName);
  if (source === null) return null;
  if (req.method !== "GET" && req.method !== "HEAD")
    return problem(405, "method-not-allowed", "Images are served for GET and HEAD only.", {
      allow: "GET, HEAD",
    });
  if (typeof source === "string") return problem(400, "invalid-path", `Refused: ${source}.`);
  const log = deps.log ?? ((event, detail) => console.warn(JSON.stringify({ event, ...detail })));

  // The one lookup, started before the origin answers.
  let keyP: Promise<string> | undefined;
  let entryP: Promise<TagEntry | null> | undefined;
  if (deps.tags) {
    keyP = tagKey(locatorOf(source));
    entryP = keyP.then((k) => readEntry(deps, k));
    entryP.catch((e) => log("tags-lookup-failed", { error: String(e) }));
  }

  let res: Response;
  try {
    res = await fetchFromOrigin(source, req, deps.origin);
  } catch (e) {
    log("origin-unreachable", { error: String(e) });
    return problem(502, "origin-unreachable", "The image origin could not be reached. Retry later.");
  }
  if (!IMAGE_STATUSES.has(res.status)) return res;

  let headers: Headers;
  try {
    headers = new Headers(res.headers);
    const seen = validatorsFromHeaders(res.status, res.headers);
    const entry = entryP ? await within(entryP, deps.config.lookupBudgetMs) : undefined;
    if (entry && sameVersion(entry.validators, seen)) applyEntry(headers, entry);
    else {
      headers.set(STATUS_HEADER, "pending");
      if (keyP && deps.queue) {
        const k = keyP;
        deps.waitUntil(
          k
            .then((key) => enqueueOnce(deps, source, key, seen, url.href))
            .catch((e) => log("tag-enqueue-failed", { error: String(e), url: url.href })),
        );
      }
    }
  } catch (e) {
    log("tagging-hot-path-failed", { error: String(e) });
    return res;
  }
  return new Response(req.method === "HEAD" || res.status === 304 ? null : res.body, {
    status: res.status,
    statusText: res.statusText,
    headers,
  });
}
