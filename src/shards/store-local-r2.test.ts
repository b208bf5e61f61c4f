/**
 * ShardStore over a real local R2 (Miniflare, persisted to a temporary directory, as `wrangler dev
 * --persist-to` keeps it): a shard whose stored blob is truncated on disk is a 503
 * model-unavailable with retryAfter (it was a 500 "FixedLengthStream did not see all expected
 * bytes"), and the next read after a republish succeeds.
 */
import { mkdtemp, readdir, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { withLocalBucket } from "../../scripts/lib/local-r2.ts";
import { AppError } from "../shared/errors.ts";
import { sha256Hex } from "../shared/hash.ts";
import { shardKey } from "./layout.ts";
import { RETRY_AFTER_SECONDS, ShardStore } from "./store.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function blobs(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true }))
    if (e.isFile() && e.parentPath.endsWith("blobs")) out.push(join(e.parentPath, e.name));
  return out;
}

describe("ShardStore over local R2", () => {
  it("answers a truncated shard blob with 503 model-unavailable + retryAfter, and recovers once it is rewritten", async () => {
    const dir = await mkdtemp(join(tmpdir(), "beit-store-"));
    dirs.push(dir);
    const bytes = Uint8Array.from({ length: 200_000 }, (_, i) => (i * 31) & 255);
    const ref = {
      file: `stage0-${(await sha256Hex(bytes)).slice(0, 16)}.weights`,
      bytes: bytes.length,
      sha256: await sha256Hex(bytes),
    };
    await withLocalBucket(dir, (b) => b.put(shardKey(ref.file), bytes).then(() => undefined));
    const [blob] = await blobs(dir);
    await truncate(blob, 10_000);

    await withLocalBucket(dir, async (bucket) => {
      const store = new ShardStore(bucket, { cache: null });
      const err = await store.file(ref).catch((e) => e);
      expect(err).toBeInstanceOf(AppError);
      expect([err.code, err.status, err.extra.retryAfter]).toEqual([
        "model-unavailable",
        503,
        RETRY_AFTER_SECONDS,
      ]);
      expect(err.detail).toContain("could not be read");
      await bucket.put(shardKey(ref.file), bytes);
      const ok = await store.file(ref);
      expect([ok.origin, ok.bytes.length]).toEqual(["r2", bytes.length]);
    });
  });
});
