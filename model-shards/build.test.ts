/**
 * End to end on the tiny synthetic checkpoint, both file formats: checkpoint -> shards -> the same
 * onnxruntime-web code the Worker uses, against the float64 reference.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createStageSession } from "../src/inference/ort.ts";
import { type PipelineStage, runPipeline } from "../src/inference/pipeline.ts";
import { AppError } from "../src/shared/errors.ts";
import { buildShards, verifyShards } from "./build.ts";
import { loadCheckpoint } from "./checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "./checkpoint/synth.ts";
import type { Checkpoint } from "./checkpoint/types.ts";
import { argmax, maxAbsDiff, topKOverlap } from "./metrics.ts";
import { buildStageGraph } from "./onnx/beit-graph.ts";
import { serializeModel } from "./onnx/proto.ts";
import { estimateStage } from "./plan.ts";
import { referenceForward } from "./reference.ts";
import { loadLocalModel } from "./runner.ts";
import { randomPixels } from "./testing/random-beit.ts";

let root: string;
let fromBin: Checkpoint;
let fromSafetensors: Checkpoint;
const inputs = [11, 12, 13, 14, 15, 16].map((s) => s);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "beit-build-"));
  const ck = synthesize({ size: "tiny", seed: 3 });
  await writeCheckpoint(join(root, "ck-bin"), ck, "bin");
  await writeCheckpoint(join(root, "ck-st"), ck, "safetensors");
  fromBin = await loadCheckpoint(join(root, "ck-bin"));
  fromSafetensors = await loadCheckpoint(join(root, "ck-st"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function shardHashes(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f !== "manifest.json").sort();
}

describe("buildShards on the tiny synthetic checkpoint", () => {
  it("gives byte-identical shards from pytorch_model.bin and model.safetensors", async () => {
    for (const precision of ["fp32", "int8"] as const) {
      const a = await buildShards(fromBin, { outDir: join(root, `bin-${precision}`), precision });
      const b = await buildShards(fromSafetensors, { outDir: join(root, `st-${precision}`), precision });
      expect(a.version).toBe(b.version);
      expect(await shardHashes(join(root, `bin-${precision}`))).toEqual(
        await shardHashes(join(root, `st-${precision}`)),
      );
    }
  });

  it("fp32 graph matches the float64 reference within 1e-4 (both formats)", async () => {
    for (const [dir, ck] of [
      ["bin-fp32", fromBin],
      ["st-fp32", fromSafetensors],
    ] as const) {
      const model = await loadLocalModel(join(root, dir));
      for (const seed of inputs.slice(0, 2)) {
        const px = randomPixels(ck.config, seed);
        const ref = referenceForward(ck.config, ck.tensors, px);
        const out = await model.run(px);
        expect(maxAbsDiff(out, ref)).toBeLessThanOrEqual(1e-4);
        // The logits must be spread, or the comparison would be vacuous.
        expect(Math.max(...ref) - Math.min(...ref)).toBeGreaterThan(1);
      }
      await model.release();
    }
  });

  it("int8 agrees with fp32 on top-1 for every input (top-5 overlap reported)", async () => {
    const fp = await loadLocalModel(join(root, "st-fp32"));
    const q = await loadLocalModel(join(root, "st-int8"));
    const overlaps: number[] = [];
    for (const seed of inputs) {
      const px = randomPixels(fromBin.config, seed);
      const a = await fp.run(px);
      const b = await q.run(px);
      expect(argmax(b)).toBe(argmax(a));
      overlaps.push(topKOverlap(a, b, 5));
    }
    console.log(
      `tiny int8 vs fp32: top-1 ${inputs.length}/${inputs.length}, top-5 overlaps ${overlaps.join(",")}`,
    );
    expect(q.manifest.quantization).toMatch(/per output channel/);
    await fp.release();
    await q.release();
  });

  it("a 3-stage split gives the logits of the unsplit graph (fp32, 1e-5)", async () => {
    const { config, tensors } = fromSafetensors;
    const px = randomPixels(config, 21);
    const run = async (ranges: [number, number][]) => {
      const stages: PipelineStage[] = [];
      for (const [i, layers] of ranges.entries()) {
        const sg = buildStageGraph({
          config,
          tensors,
          layers,
          embeddings: i === 0,
          head: i === ranges.length - 1,
          precision: "fp32",
        });
        const { model, weights } = serializeModel(sg.graph, { location: `s${i}.weights` });
        const session = await createStageSession(
          model,
          weights ? { path: `s${i}.weights`, data: weights } : null,
          { graphOptimizationLevel: "disabled" }, // as the Workers open converter graphs
        );
        stages.push({ session, input: sg.input, output: sg.output });
      }
      return runPipeline(stages, px);
    };
    const whole = await run([[0, 4]]);
    const split = await run([
      [0, 1],
      [1, 3],
      [3, 4],
    ]);
    expect(maxAbsDiff(whole, split)).toBeLessThanOrEqual(1e-5);
  });

  it("splits by the stage budget and the split model runs like the unsplit one", async () => {
    const budget = estimateStage(fromBin.config, "int8", 0, 1, false).estimatedPeakBytes;
    const m = await buildShards(fromBin, {
      outDir: join(root, "split"),
      precision: "int8",
      stageBudgetBytes: budget,
    });
    expect(m.stages.length).toBeGreaterThanOrEqual(2);
    for (const s of m.stages) expect(s.estimatedPeakBytes).toBeLessThanOrEqual(budget);
    expect(m.stages.map((s) => s.layers)).toEqual(m.stages.map((s) => s.layers).sort((a, b) => a[0] - b[0]));
    const split = await loadLocalModel(join(root, "split"));
    const whole = await loadLocalModel(join(root, "bin-int8"));
    const px = randomPixels(fromBin.config, 31);
    expect(maxAbsDiff(await split.run(px), await whole.run(px))).toBeLessThanOrEqual(1e-5);
    await split.release();
    await whole.release();
  });
});

describe("verifyShards", () => {
  async function copyBuild(name: string): Promise<string> {
    const src = join(root, "bin-int8");
    const dst = join(root, name);
    await buildShards(fromBin, { outDir: dst, precision: "int8" });
    expect(await shardHashes(dst)).toEqual(await shardHashes(src));
    return dst;
  }
  async function code(p: Promise<unknown>): Promise<string> {
    try {
      await p;
      return "ok";
    } catch (e) {
      expect(e).toBeInstanceOf(AppError);
      return (e as AppError).code;
    }
  }

  it("accepts an intact build", async () => {
    expect((await verifyShards(join(root, "bin-int8"))).stages.length).toBe(1);
  });
  it("names a flipped byte, a wrong size and a missing file", async () => {
    const dir = await copyBuild("tamper");
    const m = await verifyShards(dir);
    const weights = join(dir, m.stages[0].weights?.file as string);
    const bytes = await readFile(weights);
    bytes[1000] ^= 1;
    await writeFile(weights, bytes);
    expect(await code(verifyShards(dir))).toBe("shard-hash-mismatch");
    await writeFile(weights, bytes.subarray(0, bytes.length - 1));
    expect(await code(verifyShards(dir))).toBe("shard-size-mismatch");
    await rm(weights);
    expect(await code(verifyShards(dir))).toBe("shard-missing");
    await writeFile(join(dir, "manifest.json"), "{}");
    expect(await code(verifyShards(dir))).toBe("manifest-invalid");
  });
});

describe("failed builds leave no output directory", () => {
  it("a checkpoint directory without weights", async () => {
    const dir = join(root, "no-weights");
    const ck = synthesize({ size: "tiny", seed: 1 });
    await writeCheckpoint(dir, ck, "safetensors");
    await rm(join(dir, "model.safetensors"));
    await expect(loadCheckpoint(dir)).rejects.toMatchObject({ code: "checkpoint-incomplete" });
  });
  it("an unsupported config refuses before writing anything", async () => {
    const out = join(root, "unsupported-out");
    const bad = { ...fromBin, config: { ...fromBin.config, use_mean_pooling: false } };
    await expect(buildShards(bad, { outDir: out, precision: "int8" })).rejects.toMatchObject({
      code: "unsupported-config",
    });
    const left = (await readdir(root)).filter((f) => f.includes("unsupported-out"));
    expect(left).toEqual([]);
  });
  it("a failure mid-build removes its temporary directory", async () => {
    const out = join(root, "broken-out");
    const tensors = new Map(fromBin.tensors);
    tensors.delete("classifier.weight");
    await expect(
      buildShards({ ...fromBin, tensors }, { outDir: out, precision: "int8" }),
    ).rejects.toMatchObject({
      code: "checkpoint-missing-tensor",
    });
    expect((await readdir(root)).filter((f) => f.includes("broken-out"))).toEqual([]);
  });
});
