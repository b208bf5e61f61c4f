/**
 * @module
 * Times `model synth --size base` (synthesize + write) and reading it back, per format.
 * Usage: npx tsx bench/synth-checkpoint.ts [OUT_DIR]   (default: a temp dir, removed afterwards)
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCheckpoint } from "../model-shards/checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "../model-shards/checkpoint/synth.ts";

async function main() {
  const keep = process.argv[2];
  const root = keep ?? (await mkdtemp(join(tmpdir(), "beit-synth-bench-")));
  const secs = (t0: number) => ((performance.now() - t0) / 1000).toFixed(2);
  const rows: string[] = [];
  try {
    let t0 = performance.now();
    const ck = synthesize({ size: "base", seed: 0 });
    rows.push(`| synthesize base (102.6M params, in memory) | ${secs(t0)} s | |`);
    for (const format of ["bin", "safetensors"] as const) {
      const dir = join(root, format);
      t0 = performance.now();
      await writeCheckpoint(dir, ck, format);
      const file = format === "bin" ? "pytorch_model.bin" : "model.safetensors";
      const bytes = (await stat(join(dir, file))).size;
      rows.push(`| write ${file} | ${secs(t0)} s | ${bytes.toLocaleString("en")} bytes |`);
      t0 = performance.now();
      const back = await loadCheckpoint(dir, { onWarning: () => {} });
      rows.push(
        `| loadCheckpoint (${file}: read, sha256, validate) | ${secs(t0)} s | ${back.tensors.size} tensors |`,
      );
    }
    t0 = performance.now();
    await writeCheckpoint(join(root, "both"), ck, "both");
    rows.push(`| synth write --format both (after synthesize) | ${secs(t0)} s | |`);
    process.stdout.write(`| step | time | size |\n|---|---|---|\n${rows.join("\n")}\n`);
    process.stdout.write(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB\n`);
  } finally {
    if (!keep) await rm(root, { recursive: true, force: true });
  }
}

await main();
