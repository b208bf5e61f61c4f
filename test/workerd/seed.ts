/**
 * @module
 * Seeds the local R2 bucket inside workerd tests with a model fixture, the way publishing does
 * (files, then manifest, then the pointer), with switches to corrupt or withhold files.
 */
import { ACTIVE_KEY, manifestKey, shardKey } from "../../src/shards/layout.ts";
import { fromBase64, type ModelFixture } from "./fixtures.ts";

export interface SeedOptions {
  /** Swap active.json to this model (default true). */
  activate?: boolean;
  /** Files (by name predicate) to upload with flipped bytes. */
  corrupt?: (file: string) => boolean;
  /** Files (by name predicate) to leave out. */
  omit?: (file: string) => boolean;
}

/** Uploads a model fixture into `bucket`. */
export async function seedModel(bucket: R2Bucket, fx: ModelFixture, opts: SeedOptions = {}): Promise<void> {
  for (const [file, b64] of Object.entries(fx.files)) {
    if (opts.omit?.(file)) {
      await bucket.delete(shardKey(file));
      continue;
    }
    const bytes = fromBase64(b64);
    if (opts.corrupt?.(file)) bytes[bytes.length >> 1] ^= 0xff;
    await bucket.put(shardKey(file), bytes);
  }
  await bucket.put(manifestKey(fx.version), fx.manifest);
  if (opts.activate !== false) await activate(bucket, fx.version);
}

/** Points active.json at `version`. */
export async function activate(bucket: R2Bucket, version: string): Promise<void> {
  await bucket.put(ACTIVE_KEY, JSON.stringify({ version, publishedAt: new Date().toISOString() }));
}

/** The file of `fx` whose name starts with `prefix` and ends with `suffix` (e.g. "stage1-", ".weights"). */
export function fileOf(fx: ModelFixture, prefix: string, suffix: string): string {
  const f = Object.keys(fx.files).find((n) => n.startsWith(prefix) && n.endsWith(suffix));
  if (!f) throw new Error(`no ${prefix}*${suffix} in fixture`);
  return f;
}
