/**
 * The real local service for end-to-end tests: a tiny synthetic int8 model (several stages) built
 * into a temporary directory, published to a temporary local R2, and served by `wrangler dev`
 * (gateway + every stage Worker, as `npm start` does) on a free port. `stop()` ends the server
 * and removes the directory.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { buildShards } from "../../model-shards/build.ts";
import { loadCheckpoint } from "../../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../../model-shards/checkpoint/synth.ts";
import { publishLocal } from "../../scripts/lib/local-r2.ts";
import { freePort, type RunningService, serveLocal } from "../../scripts/lib/serve.ts";
import type { Manifest } from "../../src/shared/manifest.ts";

export interface TinyService {
  url: string;
  dir: string;
  manifest: Manifest;
  service: RunningService;
  stop(): Promise<void>;
}

export async function startTinyService(opts: {
  seed: number;
  secrets?: Record<string, string>;
}): Promise<TinyService> {
  const root = resolve(import.meta.dirname, "../..");
  const dir = await mkdtemp(join(tmpdir(), "beit-edge-e2e-"));
  let service: RunningService | null = null;
  try {
    await writeCheckpoint(join(dir, "ck"), synthesize({ size: "tiny", seed: opts.seed }), "safetensors");
    const manifest = await buildShards(await loadCheckpoint(join(dir, "ck")), {
      outDir: join(dir, "shards"),
      precision: "int8",
      stageBudgetBytes: 32_000_000,
    });
    await publishLocal(join(dir, "shards"), join(dir, "state"));
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
      manifest,
      service: svc,
      stop: async () => {
        await svc.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await service?.stop();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
