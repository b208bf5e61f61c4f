/**
 * @module
 * Measures one stage's wasm heap in a fresh process: builds the stage graph from a synthetic checkpoint
 * of the given size, creates an onnxruntime-web session from external data and runs it once,
 * printing JSON {weightBytes, afterCreate, afterRun} (WebAssembly.Memory byteLength). Run it as a
 * child process (wasm memory never shrinks, so each measurement needs its own process):
 *   tsx model-shards/measure-heap.ts tiny|mid|base FROM TO HEAD(0|1) int8|fp32 [RESERVE]
 *   tsx model-shards/measure-heap.ts --shards DIR STAGE [RESERVE]   (a built stage, opened from its
 *       shard directory by the one stage loader; RESERVE: bytes to grow the heap to before the first
 *       run, default the manifest's wasmHeapBytes, 0 for none)
 * The first form builds a graph in memory (no manifest, no files), so it creates its session
 * directly at the ORT boundary.
 */
import { openStage } from "../src/inference/open-stage.ts";
import { createStageSession, reserveWasmHeap, wasmHeapBytes } from "../src/inference/ort.ts";
import { numel, type Precision } from "../src/shared/manifest.ts";
import { parseBeitConfig } from "./checkpoint/config.ts";
import { synthesize } from "./checkpoint/synth.ts";
import { localModelSource } from "./local-source.ts";
import { buildStageGraph } from "./onnx/beit-graph.ts";
import { serializeModel } from "./onnx/proto.ts";
import { randomBeit, randomPixels, tinyConfig } from "./testing/random-beit.ts";

const argv = process.argv.slice(2);
if (argv[0] === "--shards") {
  const source = localModelSource(argv[1]);
  const manifest = await source.manifest();
  // The loader keeps no reference to the shard bytes, so the JS heap below holds ORT's copy only.
  // Open without the loader's reservation, read the heap ORT's create left, then reserve as the
  // loader would (same order: create, reserve, run).
  const { session, spec: st } = await openStage(source, manifest, Number(argv[2]), { reserveHeapBytes: 0 });
  const afterCreate = wasmHeapBytes();
  const reserve = argv[3] === undefined ? (st.wasmHeapBytes ?? 0) : Number(argv[3]);
  if (reserve > 0) reserveWasmHeap(reserve);
  const afterReserve = wasmHeapBytes();
  const n = numel(st.inputs[0].shape);
  const input = new Float32Array(n).map((_, i) => Math.sin(i * 0.1));
  await session.run(input, st.inputs[0], st.outputs[0]);
  await session.run(input, st.inputs[0], st.outputs[0]);
  const mem = process.memoryUsage();
  console.log(
    JSON.stringify({
      stage: st.index,
      weightBytes: st.weightBytes,
      estimatedPeakBytes: st.estimatedPeakBytes,
      afterCreate,
      reserve,
      afterReserve,
      afterRun: wasmHeapBytes(),
      jsHeapUsed: mem.heapUsed,
    }),
  );
  process.exit(0);
}
const [size, fromS, toS, headS, precisionS, reserveS] = argv;
// "mid" (384 wide, 4 layers, 1000 labels) is big enough for the heap to grow past ORT's initial
// 16 MiB, yet quick to build.
const mid = tinyConfig({
  hidden_size: 384,
  num_attention_heads: 6,
  intermediate_size: 1536,
  labels: Array.from({ length: 1000 }, (_, i) => `c${i}`),
});
const synth =
  size === "mid"
    ? { config: null, tensors: randomBeit(mid, 7) }
    : synthesize({ size: size === "base" ? "base" : "tiny", seed: 7 });
const config = synth.config ? parseBeitConfig(synth.config) : mid;
const from = Number(fromS);
const to = Number(toS);
const head = headS === "1";
const precision = precisionS as Precision;
const tensors = synth.tensors;
const sg = buildStageGraph({ config, tensors, layers: [from, to], embeddings: from === 0, head, precision });
tensors.clear();
const { model, weights } = serializeModel(sg.graph, { location: "w.weights" });
const session = await createStageSession(model, weights ? { path: "w.weights", data: weights } : null, {
  graphOptimizationLevel: "disabled",
});
const afterCreate = wasmHeapBytes();
if (reserveS) reserveWasmHeap(Number(reserveS));
const afterReserve = wasmHeapBytes();
const input = from === 0 ? randomPixels(config, 1) : new Float32Array(numel(sg.input.shape)).fill(0.5);
await session.run(input, sg.input, sg.output);
await session.run(input, sg.input, sg.output);
console.log(
  JSON.stringify({ weightBytes: sg.weightBytes, afterCreate, afterReserve, afterRun: wasmHeapBytes() }),
);
