/**
 * The real local service for end-to-end tests: the tiny synthetic int8 model (tiny-model.ts,
 * several stages) built into a temporary directory, published to a temporary local R2, and served by `wrangler dev`
 * (gateway + every stage Worker, as `npm start` does) on a free port. `stop()` ends the server
 * and removes the directory.
 */
import { join, resolve } from "node:path";
import { publishLocal } from "../../scripts/lib/local-r2.ts";
import { freePort, type RunningService, serveLocal } from "../../scripts/lib/serve.ts";
import type { Manifest } from "../../src/shared/manifest.ts";
import { buildTinyModel } from "./tiny-model.ts";

export interface TinyService {
  url: string;
  dir: string;
  /** The model's shard directory. */
  shards: string;
  manifest: Manifest;
  service: RunningService;
  stop(): Promise<void>;
}

export async function startTinyService(opts: {
  seed: number;
  secrets?: Record<string, string>;
}): Promise<TinyService> {
  const root = resolve(import.meta.dirname, "../..");
  const tiny = await buildTinyModel(opts.seed);
  const { dir, manifest } = tiny;
  let service: RunningService | null = null;
  try {
    await publishLocal(tiny.out, join(dir, "state"));
    service = await serveLocal({
      root,
      stages: manifest.stages.length,
      persistTo: join(dir, "state"),
      port: await freePort(),
      configDir: join(dir, "configs"),
      prebundle: true,
      secrets: opts.secrets,
      readyTimeoutMs: 150_000,
    });
    const svc = service;
    return {
      url: svc.url,
      dir,
      shards: tiny.out,
      manifest,
      service: svc,
      stop: async () => {
        await svc.stop();
        await tiny.cleanup();
      },
    };
  } catch (e) {
    await service?.stop();
    await tiny.cleanup();
    throw e;
  }
}
