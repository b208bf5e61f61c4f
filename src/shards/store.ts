/**
 * @module
 * Reading a model from R2 inside a Worker (the Worker-side {@link ModelSource}): the active pointer (short isolate cache), manifests by
 * version (isolate cache, immutable), and content-addressed files through two cache levels:
 *
 *   isolate memory (caller's choice) -> Cache API (per data center) -> R2.
 *
 * Every file's sha256 is checked against the manifest before it is returned or written to the
 * Cache API, so a corrupted or truncated object is never used and never cached: the caller gets
 * an {@link AppError} `model-unavailable` (503, with `retryAfter`), and the next request reads R2
 * again. A corrupted Cache API entry is deleted and R2 is read instead.
 */
import { AppError, RETRY_AFTER_S } from "../shared/errors.ts";
import { sha256Hex } from "../shared/hash.ts";
import { type FileRef, type Manifest, parseManifest } from "../shared/manifest.ts";
import { ACTIVE_KEY, type ActivePointer, manifestKey, parseActivePointer, shardKey } from "./layout.ts";
import type { KeepAlive, LoadedFile, ModelSource } from "./source.ts";

/** Seconds a client should wait before retrying after `model-unavailable` (one value, src/shared/errors.ts). */
export const RETRY_AFTER_SECONDS = RETRY_AFTER_S;

/** Origin of the synthetic URLs that key shard bytes in the Cache API. */
const CACHE_ORIGIN = "https://shards.beit-edge.internal";

export type { KeepAlive };

/** Where a file's bytes came from in a Worker, for timing headers and the cold-start benchmark. */
export type StoreOrigin = "cache" | "r2";

export interface ShardStoreOptions {
  /** How long the active pointer is reused before R2 is asked again (ms). */
  pointerTtlMs?: number;
  /** Cache API to use; defaults to `caches.default` when present, none otherwise. */
  cache?: Cache | null;
  /** Clock, for tests. */
  now?: () => number;
}

function unavailable(detail: string, extra: Record<string, unknown> = {}): AppError {
  return new AppError("model-unavailable", 503, detail, { retryAfter: RETRY_AFTER_SECONDS, ...extra });
}

function defaultCache(): Cache | null {
  const c = (globalThis as { caches?: CacheStorage & { default?: Cache } }).caches;
  return c?.default ?? null;
}

/**
 * Model reader over an R2 bucket. Create one per isolate (module scope) and reuse it.
 *
 * @example
 * const store = new ShardStore(env.MODELS);
 * const manifest = await store.manifest((await store.active()).version);
 * const { bytes } = await store.file(manifest.stages[0].graph);
 */
export class ShardStore implements ModelSource<StoreOrigin> {
  readonly #bucket: R2Bucket;
  readonly #ttl: number;
  readonly #cache: Cache | null;
  readonly #now: () => number;
  #pointer: { value: ActivePointer; at: number } | null = null;
  readonly #manifests = new Map<string, Promise<Manifest>>();

  constructor(bucket: R2Bucket, options: ShardStoreOptions = {}) {
    this.#bucket = bucket;
    this.#ttl = options.pointerTtlMs ?? 5_000;
    this.#cache = options.cache === undefined ? defaultCache() : options.cache;
    this.#now = options.now ?? Date.now;
  }

  /** The active pointer, re-read from R2 at most every `pointerTtlMs`. */
  async active(): Promise<ActivePointer> {
    const now = this.#now();
    if (this.#pointer && now - this.#pointer.at < this.#ttl) return this.#pointer.value;
    const obj = await this.#bucket.get(ACTIVE_KEY);
    if (!obj)
      throw unavailable(
        "No model is published (active.json is missing in the bucket). Publish one with `npm start` or `npm run deploy`, then retry.",
      );
    let parsed: ActivePointer | null = null;
    try {
      parsed = parseActivePointer(await obj.json());
    } catch {
      parsed = null;
    }
    if (!parsed)
      throw unavailable("The model pointer active.json is malformed. Republish the model, then retry.");
    this.#pointer = { value: parsed, at: now };
    return parsed;
  }

  /** Forgets the cached pointer so that the next {@link active} reads R2. */
  invalidatePointer(): void {
    this.#pointer = null;
  }

  /**
   * The manifest of `version` (default: the active one), validated; cached for the life of the
   * isolate (versions are immutable). `keepAlive` receives the load when this call starts it.
   */
  manifest(version?: string, keepAlive?: KeepAlive): Promise<Manifest> {
    if (version === undefined) return this.active().then((p) => this.manifest(p.version, keepAlive));
    let p = this.#manifests.get(version);
    if (!p) {
      p = this.#loadManifest(version);
      this.#manifests.set(version, p);
      p.catch(() => this.#manifests.delete(version));
      keepAlive?.(p.catch(() => undefined));
    }
    return p;
  }

  async #loadManifest(version: string): Promise<Manifest> {
    const obj = await this.#bucket.get(manifestKey(version));
    if (!obj)
      throw unavailable(`The manifest of model version ${version.slice(0, 12)} is missing from the bucket.`);
    let manifest: Manifest;
    try {
      manifest = parseManifest(await obj.json());
    } catch (e) {
      throw unavailable(`The manifest of model version ${version.slice(0, 12)} is invalid: ${String(e)}`);
    }
    if (manifest.version !== version)
      throw unavailable(`manifests/${version}.json holds version ${manifest.version}; republish the model.`);
    return manifest;
  }

  /**
   * The verified bytes of a content-addressed file: Cache API first, then R2. Bytes whose length
   * or sha256 differs from `ref` are never returned or cached.
   */
  async file(ref: FileRef): Promise<LoadedFile<StoreOrigin>> {
    const url = `${CACHE_ORIGIN}/${ref.file}`;
    const t0 = Date.now();
    if (this.#cache) {
      const hit = await this.#cache.match(url).catch(() => undefined);
      if (hit) {
        const bytes = await hit.arrayBuffer().then(
          (b) => new Uint8Array(b),
          () => null,
        );
        const t1 = Date.now();
        if (bytes && (await matches(bytes, ref)))
          return { bytes, origin: "cache", fetchMs: t1 - t0, verifyMs: Date.now() - t1, owned: true };
        await this.#cache.delete(url).catch(() => false);
      }
    }
    const bytes = await this.#readR2(ref);
    const t1 = Date.now();
    const ok = await matches(bytes, ref);
    const verifyMs = Date.now() - t1;
    if (!ok)
      throw unavailable(
        `Shard ${ref.file} failed its integrity check (size or sha256 differs from the manifest); it was not used. Republish the model, then retry.`,
        { file: ref.file },
      );
    if (this.#cache) {
      const res = new Response(bytes, {
        headers: {
          "content-type": "application/octet-stream",
          "cache-control": "public, max-age=31536000, immutable",
        },
      });
      await this.#cache.put(url, res).catch(() => undefined);
    }
    // The Cache API put above has consumed its copy, so the caller holds the only reference.
    return { bytes, origin: "r2", fetchMs: t1 - t0 + (Date.now() - t1 - verifyMs), verifyMs, owned: true };
  }

  /**
   * The shard's bytes from R2. A read that fails part-way (the stored object shorter than its
   * recorded size: "FixedLengthStream did not see all expected bytes", or a dropped connection) is
   * tried once more, then answered as `model-unavailable` (503 with retryAfter), never a 500.
   */
  async #readR2(ref: FileRef): Promise<Uint8Array> {
    let failure = "";
    for (let attempt = 1; attempt <= R2_READ_ATTEMPTS; attempt++) {
      let obj: R2ObjectBody | null;
      try {
        obj = await this.#bucket.get(shardKey(ref.file));
      } catch (e) {
        failure = String(e);
        continue;
      }
      if (!obj)
        throw unavailable(`Shard ${ref.file} is missing from the bucket. Republish the model, then retry.`, {
          file: ref.file,
        });
      try {
        return new Uint8Array(await obj.arrayBuffer());
      } catch (e) {
        failure = String(e);
      }
    }
    console.warn(`shard ${ref.file}: R2 read failed ${R2_READ_ATTEMPTS} times: ${failure}`);
    throw unavailable(
      `Shard ${ref.file} could not be read from the bucket (the stored object is incomplete or the read broke off). Retry; if it persists, republish the model.`,
      { file: ref.file },
    );
  }
}

/** Reads attempted per shard before `model-unavailable`: a body that breaks off is read once more. */
const R2_READ_ATTEMPTS = 2;

async function matches(bytes: Uint8Array, ref: FileRef): Promise<boolean> {
  return bytes.byteLength === ref.bytes && (await sha256Hex(bytes)) === ref.sha256;
}
