/**
 * @module
 * Publishing a shard directory into the local R2 that `wrangler dev --persist-to DIR` reads
 * (DIR/v3/r2), through Miniflare's API: no wrangler process per file, no Cloudflare account.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import { type PublishResult, type PublishTarget, publishModel } from "../../src/shards/publish.ts";
import { type Manifest, parseManifest } from "../../src/shared/manifest.ts";
import { useLocalWorkerdFlags } from "./workerd-wrapper.ts";
import { BUCKET_NAME } from "./wrangler-configs.ts";

/** Reads and validates DIR/manifest.json. */
export async function readManifest(dir: string): Promise<Manifest> {
  return parseManifest(JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")));
}

/**
 * Runs `fn` with the local R2 bucket of `persistTo` open, then closes it. Its workerd, like every
 * later one of the process, runs with the local V8 flags (useLocalWorkerdFlags).
 */
export async function withLocalBucket<T>(
  persistTo: string,
  fn: (bucket: R2Bucket) => Promise<T>,
  bucketName: string = BUCKET_NAME,
): Promise<T> {
  await useLocalWorkerdFlags(join(import.meta.dirname, "../.."));
  const mf = new Miniflare({
    modules: true,
    script: "export default { fetch() { return new Response(null, { status: 404 }); } }",
    r2Buckets: { MODELS: bucketName },
    defaultPersistRoot: join(persistTo, "v3"),
  });
  try {
    const bucket = (await mf.getR2Bucket("MODELS")) as unknown as R2Bucket;
    return await fn(bucket);
  } finally {
    await mf.dispose();
  }
}

/** A PublishTarget over a Miniflare R2 bucket (it wants plain Uint8Arrays, not Buffers). */
export function miniflareTarget(bucket: R2Bucket): PublishTarget {
  return {
    async has(key) {
      return (await bucket.head(key)) !== null;
    },
    async put(key, bytes, contentType) {
      const plain = new Uint8Array(bytes.byteLength);
      plain.set(bytes);
      await bucket.put(key, plain, { httpMetadata: { contentType } });
    },
  };
}

/** Publishes the shard directory `dir` into the local R2 of `persistTo` and activates it. */
export async function publishLocal(
  dir: string,
  persistTo: string,
  onFile?: (file: string, action: "uploaded" | "skipped", bytes: number) => void,
): Promise<PublishResult> {
  const manifest = await readManifest(dir);
  return withLocalBucket(persistTo, (bucket) =>
    publishModel(
      manifest,
      async (f) => new Uint8Array(await readFile(join(dir, f))),
      miniflareTarget(bucket),
      {
        onFile,
      },
    ),
  );
}
