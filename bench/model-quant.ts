/**
 * @module
 * Chooses the int8 scheme by measurement on the full-size synthetic base model: for each scheme
 * (activation scales per tensor or per token row; weights 8-bit or 7-bit; classifier int8 or
 * float), one unsplit graph in onnxruntime-web (Node, 1 thread) against the fp32 graph over N
 * random inputs: top-1 agreement, mean top-5 overlap, relative L2 error of the logits, median
 * latency. Usage: tsx bench/model-quant.ts [N=20] [size=base]
 */

import { parseBeitConfig } from "../model-shards/checkpoint/config.ts";
import { synthesize } from "../model-shards/checkpoint/synth.ts";
import { argmax, median, relL2, topKOverlap } from "../model-shards/metrics.ts";
import type { QuantOptions } from "../model-shards/onnx/quantize.ts";
import { webSession, wholeModelGraph } from "../model-shards/onnx/whole-model.ts";
import { randomPixels } from "../model-shards/testing/random-beit.ts";

const N = Number(process.argv[2] ?? 20);
const size = (process.argv[3] ?? "base") as "base" | "tiny";
const synth = synthesize({ size, seed: 0 });
const config = parseBeitConfig(synth.config);
const tensors = synth.tensors;
const inputs = Array.from({ length: N }, (_, i) => randomPixels(config, 1000 + i));

async function runAll(precision: "fp32" | "int8", quant?: QuantOptions) {
  const sg = wholeModelGraph(config, tensors, { precision, quant });
  const session = await webSession(sg.graph);
  const outs: Float32Array[] = [];
  const times: number[] = [];
  await session.run(inputs[0], sg.input, sg.output);
  for (const x of inputs) {
    const t0 = performance.now();
    outs.push(await session.run(x, sg.input, sg.output));
    times.push(performance.now() - t0);
  }
  await session.release();
  return { outs, ms: median(times), weightBytes: sg.weightBytes };
}

const fp = await runAll("fp32");
console.log(`| fp32 | - | - | - | ${fp.ms.toFixed(0)} ms | ${(fp.weightBytes / 1048576).toFixed(1)} MiB |`);
const schemes: [string, QuantOptions][] = [
  ["per-row act, 8-bit w, int8 head", { activation: "per-row", weightBits: 8 }],
  ["per-row act, 7-bit w, int8 head", { activation: "per-row", weightBits: 7 }],
  ["per-tensor act, 8-bit w, int8 head", { activation: "per-tensor", weightBits: 8 }],
  ["per-tensor act, 7-bit w, int8 head", { activation: "per-tensor", weightBits: 7 }],
  ["per-row act, 8-bit w, fp32 head", { activation: "per-row", weightBits: 8, headFloat: true }],
];
console.log("| scheme | top-1 agree | mean top-5 overlap | mean rel L2 | median latency | weights |");
for (const [name, q] of schemes) {
  const r = await runAll("int8", q);
  let agree = 0;
  let ov = 0;
  let rl = 0;
  for (let i = 0; i < N; i++) {
    if (argmax(r.outs[i]) === argmax(fp.outs[i])) agree++;
    ov += topKOverlap(r.outs[i], fp.outs[i], 5);
    rl += relL2(r.outs[i], fp.outs[i]);
  }
  console.log(
    `| ${name} | ${agree}/${N} | ${(ov / N).toFixed(2)}/5 | ${(rl / N).toFixed(4)} | ${r.ms.toFixed(0)} ms | ${(r.weightBytes / 1048576).toFixed(1)} MiB |`,
  );
}
