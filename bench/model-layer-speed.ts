/**
 * @module
 * Latency of the full-size BEiT-base graph (all 12 layers, embeddings and head, one session) under
 * each int8 scheme and fp32, onnxruntime-web in Node, 1 thread. Sessions run interleaved, round
 * after round, so background load hits every variant alike; prints median and best per variant.
 * Usage: tsx bench/model-layer-speed.ts [ROUNDS=10] [LAYERS=12]
 */

import { baseConfig } from "../model-shards/configs.ts";
import { median } from "../model-shards/metrics.ts";
import type { QuantOptions } from "../model-shards/onnx/quantize.ts";
import { webSession, wholeModelGraph } from "../model-shards/onnx/whole-model.ts";
import { randomBeit, randomPixels } from "../model-shards/testing/random-beit.ts";

const rounds = Number(process.argv[2] ?? 10);
const layers = Number(process.argv[3] ?? 12);
const config = { ...baseConfig(), num_hidden_layers: layers };
const tensors = randomBeit(config, 5);
const variants: [string, "fp32" | "int8", QuantOptions | undefined][] = [
  ["fp32", "fp32", undefined],
  ["int8 per-tensor act, 8-bit w", "int8", { activation: "per-tensor", weightBits: 8 }],
  ["int8 per-row act, 8-bit w (shipped)", "int8", { activation: "per-row", weightBits: 8 }],
  ["int8 per-tensor act, 7-bit w", "int8", { activation: "per-tensor", weightBits: 7 }],
];
const x = randomPixels(config, 3);
const sessions = [];
for (const [name, precision, quant] of variants) {
  const sg = wholeModelGraph(config, tensors, { precision, quant, layers });
  const session = await webSession(sg.graph);
  await session.run(x, sg.input, sg.output);
  sessions.push({ name, session, sg, times: [] as number[] });
}
for (let r = 0; r < rounds; r++)
  for (const s of sessions) {
    const t0 = performance.now();
    await s.session.run(x, s.sg.input, s.sg.output);
    s.times.push(performance.now() - t0);
  }
console.log(`| graph (base, ${layers} layers + embeddings + head, one session) | median | best |`);
for (const s of sessions)
  console.log(`| ${s.name} | ${median(s.times).toFixed(0)} ms | ${Math.min(...s.times).toFixed(0)} ms |`);
