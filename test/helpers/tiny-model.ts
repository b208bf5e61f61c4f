/**
 * @module
 * The tiny synthetic test model, built one way for every test and bench that needs real shards: a
 * seeded tiny checkpoint (safetensors) converted with the tiny build options of
 * model-shards/configs.ts (int8, several stages), in a fresh temporary directory.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildShards } from "../../model-shards/build.ts";
import { loadCheckpoint } from "../../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../../model-shards/checkpoint/synth.ts";
import { TINY_BUILD } from "../../model-shards/configs.ts";
import { localModelSource } from "../../model-shards/local-source.ts";
import { readLabels } from "../../src/shards/source.ts";
import type { Manifest } from "../../src/shared/manifest.ts";

export interface TinyModel {
  /** The temporary directory: ck/ (the checkpoint) and out/ (the shards). */
  dir: string;
  /** The shard directory. */
  out: string;
  manifest: Manifest;
  labels: string[];
  /** Removes `dir`. */
  cleanup(): Promise<void>;
}

/** Synthesizes (seed `seed`) and converts the tiny model into a new directory under `parent`. */
export async function buildTinyModel(seed = 11, parent = tmpdir()): Promise<TinyModel> {
  const dir = await mkdtemp(join(parent, "beit-tiny-"));
  const out = join(dir, "out");
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    await writeCheckpoint(join(dir, "ck"), synthesize({ size: "tiny", seed }), "safetensors");
    const manifest = await buildShards(await loadCheckpoint(join(dir, "ck")), { outDir: out, ...TINY_BUILD });
    const labels = await readLabels(localModelSource(out), manifest);
    return { dir, out, manifest, labels, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
