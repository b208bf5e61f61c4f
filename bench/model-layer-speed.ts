/**
 * @module
 * Latency of one full-size BEiT-base encoder layer (plus the head when asked) under each int8
 * scheme and fp32, onnxruntime-web in Node, 1 thread, median of N runs after a warm-up.
 * Usage: tsx bench/model-layer-speed.ts [N=15]
 */

import { baseConfig } from "../model-shards/configs.ts";
import { median } from "../model-shards/metrics.ts";
import { buildStageGraph } from "../model-shards/onnx/beit-graph.ts";
import { serializeModel } from "../model-shards/onnx/proto.ts";
import type { QuantOptions } from "../model-shards/onnx/quantize.ts";
import { randomBeit } from "../model-shards/testing/random-beit.ts";
import { createStageSession } from "../src/inference/ort.ts";

const N = Number(process.argv[2] ?? 15);
const config = baseConfig();
const tensors = randomBeit({ ...config, num_hidden_layers: 3 }, 5);
const variants: [string, "fp32" | "int8", QuantOptions | undefined][] = [
  ["fp32", "fp32", undefined],
  ["int8 per-row act, 8-bit w", "int8", { activation: "per-row", weightBits: 8 }],
  ["int8 per-tensor act, 8-bit w", "int8", { activation: "per-tensor", weightBits: 8 }],
  ["int8 per-row act, 7-bit w", "int8", { activation: "per-row", weightBits: 7 }],
];
const x = new Float32Array(197 * 768).map((_, i) => Math.sin(i * 0.37));
console.log("| graph (3 base layers [0,3) without embeddings/head) | median ms per run |");
for (const [name, precision, quant] of variants) {
  const sg = buildStageGraph({
    config,
    tensors,
    layers: [0, 3],
    embeddings: false,
    head: false,
    precision,
    quant,
  });
  const { model, weights } = serializeModel(sg.graph, { location: "w" });
  const s = await createStageSession(model, weights ? { path: "w", data: weights } : null);
  await s.run(x, sg.input, sg.output);
  const t: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await s.run(x, sg.input, sg.output);
    t.push(performance.now() - t0);
  }
  await s.release();
  console.log(`| ${name} | ${median(t).toFixed(1)} |`);
}
