/**
 * @module
 * Full-size synthetic BEiT-base benchmark of the converter and the shards:
 *  1. `model synth --size base` and `model build --precision int8` wall times (child processes),
 *     plus an fp32 build (one stage, budget lifted) as the baseline;
 *  2. the int8 shard plan (stages, layers, bytes, estimated peaks) and each stage's wasm heap
 *     measured in a fresh process;
 *  3. int8 vs fp32 agreement over N random inputs (top-1, mean top-5 overlap, rel L2 of logits);
 *  4. fp32 vs the float64 reference on R inputs (max abs logit difference);
 *  5. latency medians of the whole pipeline in onnxruntime-web (Node, 1 thread) and the same
 *     shard files in onnxruntime-node (native, 1 thread) as a ratio.
 * Usage: tsx bench/model-base.ts [WORKDIR=/tmp/beit-bench] [N=20] [R=1]
 * With REUSE=1 the existing checkpoint and shards in WORKDIR are reused (no synth/build/heap).
 * Latencies: the four pipelines run interleaved per input so background load hits all alike; the
 * CPU-time/wall ratio shows whether a runtime really used one thread.
 * Prints markdown rows; nothing is written under the repository.
 */
import { execFile } from "node:child_process";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { loadCheckpoint } from "../model-shards/checkpoint/index.ts";
import { argmax, maxAbsDiff, median, relL2, topKOverlap } from "../model-shards/metrics.ts";
import { MiB } from "../model-shards/plan.ts";
import { referenceForward } from "../model-shards/reference.ts";
import { loadLocalModel } from "../model-shards/runner.ts";
import { randomPixels } from "../model-shards/testing/random-beit.ts";
import type { Manifest } from "../src/shared/manifest.ts";
import { loadOrtNode, type OrtSession } from "./lib/ort-node.ts";

const run = promisify(execFile);
const work = process.argv[2] ?? "/tmp/beit-bench";
const N = Number(process.argv[3] ?? 20);
const R = Number(process.argv[4] ?? 1);
const ck = join(work, "ck");
const int8Dir = join(work, "int8");
const fp32Dir = join(work, "fp32");
await mkdir(work, { recursive: true });

async function timed(args: string[]): Promise<number> {
  const t0 = performance.now();
  const { stderr } = await run(process.execPath, ["--import", "tsx", "model-shards/cli.ts", ...args], {
    maxBuffer: 1 << 26,
  }).catch((e) => {
    throw new Error(`${args.join(" ")} failed: ${e.stderr ?? e}`);
  });
  void stderr;
  return (performance.now() - t0) / 1000;
}

const reuse = process.env.REUSE === "1";
if (!reuse) {
  const tSynth = await timed([
    "synth",
    "--size",
    "base",
    "--out",
    ck,
    "--format",
    "safetensors",
    "--seed",
    "0",
  ]);
  const tBuild = await timed(["build", "--from", ck, "--out", int8Dir, "--precision", "int8"]);
  const tBuildFp = await timed([
    "build",
    "--from",
    ck,
    "--out",
    fp32Dir,
    "--precision",
    "fp32",
    "--stage-budget-mb",
    "4096",
  ]);
  console.log(`| synth --size base (safetensors) | ${tSynth.toFixed(1)} s |`);
  console.log(`| build --precision int8 | ${tBuild.toFixed(1)} s |`);
  console.log(`| build --precision fp32 (one stage) | ${tBuildFp.toFixed(1)} s |`);

  const manifest = JSON.parse(await readFile(join(int8Dir, "manifest.json"), "utf8")) as Manifest;
  console.log(
    "\n| stage | layers | weights (MiB) | estimated peak (MiB) | wasm heap measured (MiB) | wasm heap estimated (MiB) |",
  );
  for (const s of manifest.stages) {
    const { stdout } = await run(
      process.execPath,
      ["--import", "tsx", "model-shards/measure-heap.ts", "--shards", int8Dir, String(s.index)],
      {
        maxBuffer: 1 << 20,
      },
    );
    const m = JSON.parse(stdout.trim().split("\n").at(-1) as string) as { afterRun: number };
    const parts = [s.embeddings ? "embed" : "", `${s.layers[1] - s.layers[0]} layers`, s.head ? "head" : ""]
      .filter(Boolean)
      .join("+");
    // The planned heap the loader reserves (older manifests: the old model's heap + shard + 8 MiB JS).
    const wasmEst = s.wasmHeapBytes ?? s.estimatedPeakBytes - s.weightBytes - 8 * MiB;
    console.log(
      `| ${s.index} | [${s.layers[0]}, ${s.layers[1]}) ${parts} | ${(s.weightBytes / MiB).toFixed(1)} | ${(s.estimatedPeakBytes / MiB).toFixed(1)} | ${(m.afterRun / MiB).toFixed(1)} | ${(wasmEst / MiB).toFixed(1)} |`,
    );
  }
}

const int8 = await loadLocalModel(int8Dir);
const fp32 = await loadLocalModel(fp32Dir);
const config = { num_channels: 3, image_size: 224 } as Parameters<typeof randomPixels>[0];
const inputs = Array.from({ length: N }, (_, i) => randomPixels(config, 5000 + i));

// onnxruntime-node on the same files.
async function nativePipeline(dir: string) {
  const ortNode = await loadOrtNode();
  const m = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as Manifest;
  const sessions: { s: Manifest["stages"][number]; session: OrtSession }[] = [];
  for (const s of m.stages)
    sessions.push({
      s,
      session: await ortNode.InferenceSession.create(join(dir, s.graph.file), {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: "sequential",
        graphOptimizationLevel: "all",
      }),
    });
  return async (x: Float32Array) => {
    let cur = x;
    for (const { s, session } of sessions) {
      const out = await session.run({
        [s.inputs[0].name]: new ortNode.Tensor("float32", cur, s.inputs[0].shape),
      });
      cur = out[s.outputs[0].name].data as Float32Array;
    }
    return cur;
  };
}
const runners: [string, (x: Float32Array) => Promise<Float32Array>][] = [
  ["web int8", (x) => int8.run(x)],
  ["web fp32", (x) => fp32.run(x)],
  ["native int8", await nativePipeline(int8Dir)],
  ["native fp32", await nativePipeline(fp32Dir)],
];
const outs = runners.map(() => [] as Float32Array[]);
const wall = runners.map(() => [] as number[]);
const cpu = runners.map(() => [] as number[]);
for (const [, f] of runners) await f(inputs[0]);
for (const x of inputs)
  for (const [k, [, f]] of runners.entries()) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    outs[k].push(await f(x));
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    wall[k].push(ms);
    cpu[k].push((c.user + c.system) / 1000 / ms);
  }
let agree = 0;
let overlap = 0;
let rl = 0;
let nativeVsWebInt8 = 0;
let nativeVsWebFp32 = 0;
const fpOuts = outs[1];
for (let i = 0; i < N; i++) {
  const a = outs[1][i];
  const b = outs[0][i];
  if (argmax(a) === argmax(b)) agree++;
  overlap += topKOverlap(a, b, 5);
  rl += relL2(b, a);
  nativeVsWebInt8 = Math.max(nativeVsWebInt8, relL2(outs[2][i], outs[0][i]));
  nativeVsWebFp32 = Math.max(nativeVsWebFp32, relL2(outs[3][i], outs[1][i]));
}
await int8.release();
await fp32.release();
console.log(
  `\n| int8 vs fp32 over ${N} random inputs | top-1 ${agree}/${N}, mean top-5 overlap ${(overlap / N).toFixed(2)}/5, mean rel L2 ${(rl / N).toFixed(4)} |`,
);
console.log("\n| pipeline (all stages, 1 thread) | median | best | CPU time / wall |");
for (const [k, [name]] of runners.entries())
  console.log(
    `| ${name} | ${median(wall[k]).toFixed(0)} ms | ${Math.min(...wall[k]).toFixed(0)} ms | ${median(cpu[k]).toFixed(2)} |`,
  );
console.log(
  `| web / native (median) | int8 ${(median(wall[0]) / median(wall[2])).toFixed(2)}x | fp32 ${(median(wall[1]) / median(wall[3])).toFixed(2)}x | |`,
);
console.log(
  `| native vs web logits, max rel L2 | int8 ${nativeVsWebInt8.toFixed(4)} | fp32 ${nativeVsWebFp32.toExponential(2)} | |`,
);

// The float64 reference (tens of seconds per input).
const checkpoint = await loadCheckpoint(ck, { onWarning: () => {} });
for (let i = 0; i < R; i++) {
  const t0 = performance.now();
  const ref = referenceForward(checkpoint.config, checkpoint.tensors, inputs[i]);
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `| fp32 graph vs float64 reference, input ${i} | max abs logit diff ${maxAbsDiff(fpOuts[i], ref).toExponential(2)} (logit range ${Math.min(...ref).toFixed(2)}..${Math.max(...ref).toFixed(2)}), reference ${secs.toFixed(1)} s |`,
  );
}
