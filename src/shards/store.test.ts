/**
 * ShardStore over an in-memory R2 and an in-memory Cache API: the pointer is reused for its TTL,
 * manifests are validated and pinned to their key, file bytes are verified before use and before
 * caching, and a bad cache entry is deleted and replaced from R2. (The workerd tests run the same
 * code against miniflare's R2 and Cache API.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bucketWithModel, buildTinyModel, type TinyModel } from "../../test/helpers/fake-classifier.ts";
import { MemoryCache, MemoryR2 } from "../../test/helpers/memory-r2.ts";
import { AppError } from "../shared/errors.ts";
import { ACTIVE_KEY, manifestKey, shardKey } from "./layout.ts";
import { ShardStore } from "./store.ts";

let tiny: TinyModel;
beforeAll(async () => {
  tiny = await buildTinyModel(14);
}, 120_000);
afterAll(() => tiny.cleanup());

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof AppError) return `${e.status} ${e.code}`;
    throw e;
  }
}

describe("ShardStore", () => {
  it("re-reads the active pointer only after its TTL", async () => {
    const r2 = await bucketWithModel(tiny);
    let now = 1_000;
    const store = new ShardStore(r2.asBinding(), { pointerTtlMs: 5_000, cache: null, now: () => now });
    expect((await store.active()).version).toBe(tiny.manifest.version);
    now += 4_999;
    await store.active();
    expect(r2.reads.filter((k) => k === ACTIVE_KEY)).toHaveLength(1);
    now += 2;
    await store.active();
    expect(r2.reads.filter((k) => k === ACTIVE_KEY)).toHaveLength(2);
  });

  it("answers 503 for a missing or malformed pointer and a missing, invalid or misfiled manifest", async () => {
    const empty = new ShardStore(new MemoryR2().asBinding(), { cache: null });
    expect(await codeOf(empty.active())).toBe("503 model-unavailable");
    const r2 = await bucketWithModel(tiny);
    await r2.put(ACTIVE_KEY, "{not json");
    expect(await codeOf(new ShardStore(r2.asBinding(), { cache: null }).active())).toBe(
      "503 model-unavailable",
    );

    const other = "e".repeat(64);
    await r2.put(manifestKey(other), r2.objects.get(manifestKey(tiny.manifest.version))!);
    const store = new ShardStore(r2.asBinding(), { cache: null });
    expect(await codeOf(store.manifest(other))).toBe("503 model-unavailable");
    expect(await codeOf(store.manifest("d".repeat(64)))).toBe("503 model-unavailable");
    await r2.put(manifestKey("c".repeat(64)), '{"schema":1}');
    expect(await codeOf(store.manifest("c".repeat(64)))).toBe("503 model-unavailable");
    expect((await store.manifest(tiny.manifest.version)).version).toBe(tiny.manifest.version);
  });

  it("verifies file bytes from R2, caches only good ones, and replaces a bad cache entry", async () => {
    const r2 = await bucketWithModel(tiny);
    const cache = new MemoryCache();
    const store = new ShardStore(r2.asBinding(), { cache: cache as unknown as Cache });
    const ref = tiny.manifest.labels;
    const first = await store.file(ref);
    expect(first.origin).toBe("r2");
    expect(first.bytes.byteLength).toBe(ref.bytes);
    expect((await store.file(ref)).origin).toBe("cache");

    // A corrupted cache entry is deleted and the file comes from R2 again.
    const [url] = [...cache.entries.keys()];
    cache.entries.set(url, new Uint8Array(ref.bytes));
    expect((await store.file(ref)).origin).toBe("r2");
    expect((await store.file(ref)).origin).toBe("cache");

    // Bad bytes in R2: refused, and nothing is cached.
    const graph = tiny.manifest.stages[0].graph;
    const bad = r2.objects.get(shardKey(graph.file))!.slice();
    bad[bad.length - 1] ^= 1;
    await r2.put(shardKey(graph.file), bad);
    expect(await codeOf(store.file(graph))).toBe("503 model-unavailable");
    expect(cache.entries.size).toBe(1);
    r2.objects.delete(shardKey(graph.file));
    expect(await codeOf(store.file(graph))).toBe("503 model-unavailable");
  });
});
