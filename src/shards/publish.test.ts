/**
 * Publishing order and idempotence: files before the manifest, the pointer last; existing keys are
 * skipped; a file whose size differs from the manifest stops the publish before the pointer moves.
 */
import { describe, expect, it } from "vitest";
import { sha256Hex } from "../shared/hash.ts";
import type { FileRef, Manifest } from "../shared/manifest.ts";
import { ACTIVE_KEY, manifestKey, parseActivePointer, shardKey } from "./layout.ts";
import { type PublishTarget, publishModel } from "./publish.ts";

async function ref(prefix: string, bytes: Uint8Array): Promise<FileRef> {
  const sha256 = await sha256Hex(bytes);
  return { file: `${prefix}-${sha256}.bin`, bytes: bytes.byteLength, sha256 };
}

async function fixture() {
  const files = new Map<string, Uint8Array>();
  const add = async (prefix: string, text: string) => {
    const b = new TextEncoder().encode(text);
    const r = await ref(prefix, b);
    files.set(r.file, b);
    return r;
  };
  const labels = { ...(await add("labels", '["a","b"]')), count: 2 };
  const g0 = await add("stage0", "graph0");
  const w0 = await add("stage0w", "weights0");
  const g1 = await add("stage1", "graph1");
  const manifest = {
    version: "f".repeat(64),
    labels,
    stages: [
      { graph: g0, weights: w0 },
      { graph: g1, weights: null },
    ],
  } as unknown as Manifest;
  return { manifest, files };
}

function memoryTarget(existing: string[] = []) {
  const store = new Map<string, Uint8Array>(existing.map((k) => [k, new Uint8Array()]));
  const log: string[] = [];
  const target: PublishTarget = {
    async has(key) {
      return store.has(key);
    },
    async put(key, bytes) {
      log.push(key);
      store.set(key, bytes);
    },
  };
  return { store, log, target };
}

describe("publishModel", () => {
  it("uploads every file, then the manifest, then swaps the pointer last", async () => {
    const { manifest, files } = await fixture();
    const { store, log, target } = memoryTarget();
    const now = new Date("2026-01-02T03:04:05Z");
    const r = await publishModel(manifest, async (f) => files.get(f)!, target, { now: () => now });
    expect(log.at(-1)).toBe(ACTIVE_KEY);
    expect(log.at(-2)).toBe(manifestKey(manifest.version));
    expect(log.slice(0, -2).sort()).toEqual([...files.keys()].map(shardKey).sort());
    expect(r.uploaded).toHaveLength(4);
    expect(parseActivePointer(JSON.parse(new TextDecoder().decode(store.get(ACTIVE_KEY))))).toEqual({
      version: manifest.version,
      publishedAt: now.toISOString(),
    });
  });

  it("skips content-addressed keys already present and can leave the pointer alone", async () => {
    const { manifest, files } = await fixture();
    const present = [...files.keys()].slice(0, 2).map(shardKey);
    const { log, target } = memoryTarget(present);
    const r = await publishModel(manifest, async (f) => files.get(f)!, target, { activate: false });
    expect(r.skipped).toHaveLength(2);
    expect(r.pointer).toBeNull();
    expect(log).not.toContain(ACTIVE_KEY);
    for (const k of present) expect(log).not.toContain(k);
  });

  it("refuses a file whose size differs from the manifest before touching the pointer", async () => {
    const { manifest, files } = await fixture();
    const { log, target } = memoryTarget();
    await expect(
      publishModel(
        manifest,
        async (f) => (f.startsWith("stage1-") ? new Uint8Array(1) : files.get(f)!),
        target,
      ),
    ).rejects.toThrow(/bytes on disk/);
    expect(log).not.toContain(ACTIVE_KEY);
  });
});
