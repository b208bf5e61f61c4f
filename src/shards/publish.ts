/**
 * @module
 * Publishing a built shard directory to an object store in the order that keeps readers safe:
 * content-addressed files first (skipping keys already present), then the manifest, then the
 * active pointer last. A reader that follows the pointer therefore always finds every file the
 * manifest names. The store is abstract so that the same code publishes to local R2 (Miniflare),
 * to a Worker's R2 binding in tests, and to Cloudflare through wrangler.
 */
import { type Manifest, manifestFiles, serializeManifest } from "../shared/manifest.ts";
import { ACTIVE_KEY, type ActivePointer, manifestKey, shardKey } from "./layout.ts";

/** The few object-store operations publishing needs. */
export interface PublishTarget {
  /** True when `key` already exists. */
  has(key: string): Promise<boolean>;
  put(key: string, bytes: Uint8Array, contentType: string): Promise<void>;
}

/** Supplies the bytes of a file named in the manifest (from a directory, memory, ...). */
export type FileSource = (file: string) => Promise<Uint8Array>;

export interface PublishOptions {
  /** Leave the active pointer where it is (upload only). */
  activate?: boolean;
  /** Called after each file, for progress output. */
  onFile?: (file: string, action: "uploaded" | "skipped", bytes: number) => void;
  /** Timestamp written into the pointer (defaults to now). */
  now?: () => Date;
}

export interface PublishResult {
  version: string;
  uploaded: string[];
  skipped: string[];
  pointer: ActivePointer | null;
}

/**
 * Uploads every file the manifest names (skipping existing keys), then the manifest, then swaps
 * the active pointer to `manifest.version` unless `activate` is false.
 *
 * @example
 * await publishModel(manifest, (f) => readFile(join(dir, f)).then((b) => new Uint8Array(b)), target);
 */
export async function publishModel(
  manifest: Manifest,
  source: FileSource,
  target: PublishTarget,
  options: PublishOptions = {},
): Promise<PublishResult> {
  const uploaded: string[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  for (const ref of manifestFiles(manifest)) {
    if (seen.has(ref.file)) continue;
    seen.add(ref.file);
    const key = shardKey(ref.file);
    if (await target.has(key)) {
      skipped.push(ref.file);
      options.onFile?.(ref.file, "skipped", ref.bytes);
      continue;
    }
    const bytes = await source(ref.file);
    if (bytes.byteLength !== ref.bytes)
      throw new Error(`${ref.file}: ${bytes.byteLength} bytes on disk, the manifest says ${ref.bytes}`);
    await target.put(key, bytes, contentTypeOf(ref.file));
    uploaded.push(ref.file);
    options.onFile?.(ref.file, "uploaded", ref.bytes);
  }
  const mKey = manifestKey(manifest.version);
  if (!(await target.has(mKey)))
    await target.put(mKey, new TextEncoder().encode(serializeManifest(manifest)), "application/json");
  let pointer: ActivePointer | null = null;
  if (options.activate !== false) {
    pointer = { version: manifest.version, publishedAt: (options.now?.() ?? new Date()).toISOString() };
    await target.put(ACTIVE_KEY, new TextEncoder().encode(JSON.stringify(pointer)), "application/json");
  }
  return { version: manifest.version, uploaded, skipped, pointer };
}

function contentTypeOf(file: string): string {
  return file.endsWith(".json") ? "application/json" : "application/octet-stream";
}

/** A {@link PublishTarget} over an R2 bucket binding (Workers, Miniflare). */
export function r2Target(bucket: R2Bucket): PublishTarget {
  return {
    async has(key) {
      return (await bucket.head(key)) !== null;
    },
    async put(key, bytes, contentType) {
      await bucket.put(key, bytes, { httpMetadata: { contentType } });
    },
  };
}
