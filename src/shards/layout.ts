/**
 * @module
 * Where a model lives in the R2 bucket, shared by the publisher (Node scripts) and the Workers:
 *
 * - `shards/<file>`: content-addressed files (stage graphs, external weights, the label file); the
 *   file name carries its sha256, so an existing key never needs re-uploading.
 * - `manifests/<version>.json`: the manifest of one model build (version = content id).
 * - `active.json`: the pointer `{ version, publishedAt }` the gateway follows. Publishing swaps it last.
 *
 * Imports nothing platform-specific.
 */

/** Key of the active-version pointer. */
export const ACTIVE_KEY = "active.json";

/** R2 key of a content-addressed file named in a manifest. */
export function shardKey(file: string): string {
  return `shards/${file}`;
}

/** R2 key of a manifest by its version. */
export function manifestKey(version: string): string {
  return `manifests/${version}.json`;
}

/** The active-version pointer stored at {@link ACTIVE_KEY}. */
export interface ActivePointer {
  version: string;
  publishedAt: string;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** True when `v` looks like a model version (64 lower-case hex digits). */
export function isVersion(v: unknown): v is string {
  return typeof v === "string" && HEX64.test(v);
}

/**
 * Validates the pointer's JSON. Returns null for anything malformed, so that callers can answer
 * "model unavailable" rather than crash.
 */
export function parseActivePointer(value: unknown): ActivePointer | null {
  if (typeof value !== "object" || value === null) return null;
  const o = value as Record<string, unknown>;
  if (!isVersion(o.version) || typeof o.publishedAt !== "string") return null;
  return { version: o.version, publishedAt: o.publishedAt };
}
