/**
 * The real local service for end-to-end tests: the tiny synthetic int8 model (tiny-model.ts,
 * several stages) built into a temporary directory, published to a temporary local R2, and served by `wrangler dev`
 * (gateway + every stage Worker, as `npm start` does) on a free port. `stop()` ends the server
 * and removes the directory; `restart()` stops wrangler dev and starts it again on the same local
 * state (D1, R2 persist; what miniflare keeps in memory, such as queued messages, is lost) and a new
 * port (the old one can still be held by the exiting workerd), which `url` then names.
 */
import { join, resolve } from "node:path";
import { publishLocal, withLocalBucket } from "../../scripts/lib/local-r2.ts";
import { freePort, type RunningService, type ServeOptions, serveLocal } from "../../scripts/lib/serve.ts";
import type { Manifest } from "../../src/shared/manifest.ts";
import { BUCKETS } from "../../src/topology.ts";
import { buildTinyModel } from "./tiny-model.ts";

export interface TinyService {
  /** The running service's URL (a new one after {@link restart}). */
  readonly url: string;
  dir: string;
  /** The model's shard directory. */
  shards: string;
  manifest: Manifest;
  /** The running wrangler dev (a new one after {@link restart}). */
  service: RunningService;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startTinyService(opts: {
  seed: number;
  secrets?: Record<string, string>;
  vars?: ServeOptions["vars"];
  varsByKind?: ServeOptions["varsByKind"];
  /** Files to put in the local IMAGES bucket before the server starts, by key (as npm start seeds samples/). */
  images?: Record<string, { bytes: Uint8Array; contentType: string }>;
}): Promise<TinyService> {
  const root = resolve(import.meta.dirname, "../..");
  const tiny = await buildTinyModel(opts.seed);
  const { dir, manifest } = tiny;
  let service: RunningService | null = null;
  try {
    await publishLocal(tiny.out, join(dir, "state"));
    if (opts.images)
      await withLocalBucket(
        join(dir, "state"),
        async (bucket) => {
          for (const [key, f] of Object.entries(opts.images ?? {}))
            await bucket.put(key, new Uint8Array(f.bytes), { httpMetadata: { contentType: f.contentType } });
        },
        BUCKETS.IMAGES,
      );
    const serveOpts: ServeOptions = {
      root,
      stages: manifest.stages.length,
      persistTo: join(dir, "state"),
      port: await freePort(),
      configDir: join(dir, "configs"),
      prebundle: true,
      secrets: opts.secrets,
      vars: opts.vars,
      varsByKind: opts.varsByKind,
      readyTimeoutMs: 150_000,
    };
    service = await serveLocal(serveOpts);
    const svc: TinyService = {
      get url() {
        return svc.service.url;
      },
      dir,
      shards: tiny.out,
      manifest,
      service,
      restart: async () => {
        await svc.service.stop();
        svc.service = await serveLocal({ ...serveOpts, port: await freePort() });
      },
      stop: async () => {
        await svc.service.stop();
        await tiny.cleanup();
      },
    };
    return svc;
  } catch (e) {
    await service?.stop();
    await tiny.cleanup();
    throw e;
  }
}
