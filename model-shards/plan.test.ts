/**
 * The shard planner: the full-size plan fits the isolate budget, and the estimate is checked
 * against onnxruntime-web's measured wasm heap (each measurement in a fresh process, because wasm
 * memory never shrinks).
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { calibratedQuant } from "./build.ts";
import { parseBeitConfig } from "./checkpoint/config.ts";
import { synthesize } from "./checkpoint/synth.ts";
import { baseConfig } from "./configs.ts";
import { buildStageGraph } from "./onnx/beit-graph.ts";
import { DEFAULT_QUANT } from "./onnx/quantize.ts";
import { estimateStage, formatPlan, ISOLATE_LIMIT, MiB, planStages, weightParts } from "./plan.ts";
import { randomBeit, tinyConfig } from "./testing/random-beit.ts";

const run = promisify(execFile);

describe("planStages", () => {
  it("plans the full-size base model so every int8 stage estimates under 128 MiB minus the margin", () => {
    const plan = planStages(baseConfig(), "int8");
    console.log(formatPlan(plan));
    expect(plan.stageBudgetBytes).toBe(ISOLATE_LIMIT - 16 * MiB);
    expect(plan.stages.length).toBeGreaterThan(1);
    let next = 0;
    for (const s of plan.stages) {
      expect(s.estimatedPeakBytes).toBeLessThanOrEqual(plan.stageBudgetBytes);
      expect(s.layers[0]).toBe(next);
      next = s.layers[1];
    }
    expect(next).toBe(12);
    expect(plan.stages[0].embeddings).toBe(true);
    expect(plan.stages.at(-1)?.head).toBe(true);
    // 102.6M parameters at ~1 byte each (the relative position bias tables are tiny).
    const total = plan.stages.reduce((s, st) => s + st.weightBytes, 0);
    expect(total / MiB).toBeGreaterThan(100);
    expect(total / MiB).toBeLessThan(110);
  });

  it("fits base in 3 int8 stages now that the heap is reserved and the shard freed after create (#19)", () => {
    expect(planStages(baseConfig(), "int8").stages.map((s) => s.layers)).toEqual([
      [0, 5],
      [5, 10],
      [10, 12],
    ]);
  });

  it("caps layers per stage with maxLayersPerStage (the tiny test model's multi-stage pipeline)", () => {
    const tiny = parseBeitConfig(synthesize({ size: "tiny" }).config);
    expect(planStages(tiny, "int8", { stageBudgetBytes: 40_000_000 }).stages).toHaveLength(1);
    const split = planStages(tiny, "int8", { stageBudgetBytes: 32_000_000, maxLayersPerStage: 1 });
    expect(split.stages.map((s) => s.layers)).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
      [3, 4],
    ]);
  });

  it("honours --stage-budget-mb and refuses budgets nothing fits", () => {
    const tight = planStages(baseConfig(), "int8", { stageBudgetBytes: 80 * MiB });
    expect(tight.stages.length).toBeGreaterThan(planStages(baseConfig(), "int8").stages.length);
    expect(() => planStages(baseConfig(), "int8", { stageBudgetBytes: 20 * MiB })).toThrow(/No split fits/);
  });

  it("counts weight bytes as the graph builder lays them out", () => {
    const synth = synthesize({ size: "tiny", seed: 0 });
    const config = parseBeitConfig(synth.config);
    for (const precision of ["fp32", "int8"] as const) {
      const parts = weightParts(config, precision);
      const sg = buildStageGraph({
        config,
        tensors: synth.tensors,
        layers: [0, 4],
        embeddings: true,
        head: true,
        precision,
      });
      const planned = parts.embeddings + 4 * parts.perLayer + parts.perStage + parts.head;
      expect(Math.abs(sg.weightBytes - planned)).toBeLessThan(1024);
    }
    const mid = tinyConfig({ hidden_size: 96, num_attention_heads: 3, intermediate_size: 384 });
    const sg = buildStageGraph({
      config: mid,
      tensors: randomBeit(mid, 1),
      layers: [1, 3],
      embeddings: false,
      head: false,
      precision: "int8",
    });
    const midParts = weightParts(mid, "int8");
    expect(Math.abs(sg.weightBytes - 2 * midParts.perLayer - midParts.perStage)).toBeLessThan(1024);
  });

  it("the outlier allowance covers what calibrated outlier channels add to a layer", async () => {
    const ck = synthesize({ size: "tiny", seed: 3, init: "outlier" });
    const config = parseBeitConfig(ck.config);
    const quant = await calibratedQuant(config, ck.tensors, DEFAULT_QUANT);
    let channels = 0;
    const sg = buildStageGraph({
      config,
      tensors: ck.tensors,
      layers: [0, 4],
      embeddings: true,
      head: true,
      precision: "int8",
      quant: { ...quant, onLayer: (r) => (channels += r.outliers.length) },
    });
    expect(channels).toBeGreaterThan(0);
    const parts = weightParts(config, "int8");
    const plain = parts.embeddings + 4 * parts.perLayer + parts.perStage + parts.head;
    expect(sg.weightBytes).toBeGreaterThan(plain);
    expect(sg.weightBytes).toBeLessThanOrEqual(plain + 4 * parts.perLayerOutliers + parts.headOutliers);
  });

  // Measured after session create and two runs, each in its own process: once with the heap
  // reserved at the estimate as the stage loader does (the runs must fit: the heap stays there), once
  // grown freely (the estimate must not be absurd: <= 1.5x that).
  it("the estimated wasm heap, reserved before the first run, holds the runs", async () => {
    const tiny = parseBeitConfig(synthesize({ size: "tiny" }).config);
    const mid = tinyConfig({
      hidden_size: 384,
      num_attention_heads: 6,
      intermediate_size: 1536,
      labels: Array.from({ length: 1000 }, (_, i) => `c${i}`),
    });
    const cases = [
      { size: "tiny", config: tiny, from: 0, to: 4, head: true, precision: "int8" },
      { size: "mid", config: mid, from: 0, to: 4, head: true, precision: "int8" },
      { size: "mid", config: mid, from: 2, to: 4, head: true, precision: "fp32" },
    ] as const;
    type Heap = { weightBytes: number; afterReserve: number; afterRun: number };
    const measure = async (c: (typeof cases)[number], reserve: number): Promise<Heap> => {
      const args = ["--import", "tsx", "model-shards/measure-heap.ts", c.size, String(c.from), String(c.to)];
      args.push(c.head ? "1" : "0", c.precision, String(reserve));
      const { stdout } = await run(process.execPath, args, { cwd: process.cwd() });
      return JSON.parse(stdout.trim().split("\n").at(-1) as string) as Heap;
    };
    const ests = cases.map((c) => estimateStage(c.config, c.precision, c.from, c.to, c.head));
    const reserved = await Promise.all(cases.map((c, i) => measure(c, ests[i].wasmHeapBytes)));
    const free = await Promise.all(cases.map((c) => measure(c, 0)));
    cases.forEach((c, i) => {
      const est = ests[i];
      console.log(
        `${c.size} [${c.from},${c.to}) ${c.precision}: estimated ${(est.wasmHeapBytes / MiB).toFixed(1)} MiB, reserved -> ${(reserved[i].afterRun / MiB).toFixed(1)} MiB after the runs; grown freely ${(free[i].afterRun / MiB).toFixed(1)} MiB`,
      );
      // The estimate holds the outlier-channel allowance, which a graph built without calibration
      // (as here) does not use.
      const parts = weightParts(c.config, c.precision);
      const allowance = (c.to - c.from) * parts.perLayerOutliers + (c.head ? parts.headOutliers : 0);
      expect(Math.abs(est.weightBytes - allowance - reserved[i].weightBytes)).toBeLessThan(1024);
      expect(reserved[i].afterReserve).toBe(Math.max(est.wasmHeapBytes, 16 * MiB));
      expect(reserved[i].afterRun).toBe(reserved[i].afterReserve);
      expect(est.wasmHeapBytes).toBeLessThanOrEqual(1.5 * free[i].afterRun);
    });
  });
});
