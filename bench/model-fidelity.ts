/**
 * @module
 * int8 fidelity of the full-size synthetic BEiT-base on two weight families (`synth`, the
 * generator's spread-logit weights, and `torch`, PyTorch's default initialisation; see
 * model-shards/checkpoint/synth.ts), each against its own fp32 graph on 20 inputs (10 photo-like
 * pictures from bench/image-inputs.ts, 10 uniform random pixel fields): top-1 agreement, mean
 * top-5 overlap, mean and max relative L2 of all logits, median latency of the unsplit graph.
 *
 *   --mode schemes      real int8 graphs in onnxruntime-web (what the Workers run)
 *   --mode attribution  float graphs that round only the weights or only the activations of one
 *                       kind of linear layer (qkv, attn_out, fc1, fc2, classifier) or of one layer,
 *                       in onnxruntime-node (fast; float arithmetic, so runtime-independent)
 *
 * Usage: tsx bench/model-fidelity.ts [--mode schemes|attribution] [--family synth|torch|both] [--n 20]
 */
import { parseBeitConfig } from "../model-shards/checkpoint/config.ts";
import { type SynthInit, synthesize } from "../model-shards/checkpoint/synth.ts";
import type { BeitConfig, StateDict } from "../model-shards/checkpoint/types.ts";
import { argmax, median, relL2, topKOverlap } from "../model-shards/metrics.ts";
import { calibrateInputMeans } from "../model-shards/onnx/calibrate.ts";
import { serializeModel } from "../model-shards/onnx/proto.ts";
import { DEFAULT_QUANT, type QuantOptions } from "../model-shards/onnx/quantize.ts";
import { webSession, wholeModelGraph } from "../model-shards/onnx/whole-model.ts";
import { randomPixels } from "../model-shards/testing/random-beit.ts";
import { syntheticPhoto } from "./image-inputs.ts";
import { loadOrtNode } from "./lib/ort-node.ts";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2)
  args.set(process.argv[i].replace(/^--/, ""), process.argv[i + 1]);
const mode = args.get("mode") ?? "schemes";
const N = Number(args.get("n") ?? 20);
const families: SynthInit[] =
  (args.get("family") ?? "both") === "both" ? ["synth", "torch"] : [args.get("family") as SynthInit];

/** pixel_values for a photo-like 224x224 picture, normalized with mean 0.5, std 0.5. */
function photoPixels(seed: number): Float32Array {
  const rgba = syntheticPhoto(224, 224, seed);
  const out = new Float32Array(3 * 224 * 224);
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < 224 * 224; i++) out[c * 224 * 224 + i] = (rgba[i * 4 + c] / 255 - 0.5) / 0.5;
  return out;
}

function inputsFor(config: BeitConfig): Float32Array[] {
  return Array.from({ length: N }, (_, i) =>
    i % 2 === 0 ? photoPixels(100 + i) : randomPixels(config, 1000 + i),
  );
}

type Runtime = "web" | "node";

async function runGraph(
  runtime: Runtime,
  config: BeitConfig,
  tensors: StateDict,
  inputs: Float32Array[],
  precision: "fp32" | "int8",
  quant?: QuantOptions,
): Promise<{ outs: Float32Array[]; ms: number }> {
  const sg = wholeModelGraph(config, tensors, { precision, quant });
  const outs: Float32Array[] = [];
  const times: number[] = [];
  if (runtime === "web") {
    const session = await webSession(sg.graph);
    await session.run(inputs[0], sg.input, sg.output);
    for (const x of inputs) {
      const t0 = performance.now();
      outs.push(await session.run(x, sg.input, sg.output));
      times.push(performance.now() - t0);
    }
    await session.release();
  } else {
    const { model } = serializeModel(sg.graph);
    const ortNode = await loadOrtNode();
    const session = await ortNode.InferenceSession.create(model, {
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      executionProviders: ["cpu"],
    });
    for (const x of inputs) {
      const t0 = performance.now();
      const r = await session.run({ [sg.input.name]: new ortNode.Tensor("float32", x, sg.input.shape) });
      outs.push(r[sg.output.name].data as Float32Array);
      times.push(performance.now() - t0);
    }
    await session.release();
  }
  return { outs, ms: median(times) };
}

function compare(outs: Float32Array[], ref: Float32Array[]) {
  let agree = 0;
  let ov = 0;
  let rl = 0;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    if (argmax(outs[i]) === argmax(ref[i])) agree++;
    ov += topKOverlap(outs[i], ref[i], 5);
    const e = relL2(outs[i], ref[i]);
    rl += e;
    worst = Math.max(worst, e);
  }
  return `${agree}/${ref.length} | ${(ov / ref.length).toFixed(2)} | ${(rl / ref.length).toFixed(4)} | ${worst.toFixed(4)}`;
}

const onlyFc2 = (m: Map<string, Float32Array>) => new Map([...m].filter(([k]) => k.endsWith("_fc2")));
const schemes = (inputMeans: Map<string, Float32Array>): [string, QuantOptions][] => [
  ["before #11: per-token symmetric, 8-bit weights", { activation: "per-row", weightBits: 8 }],
  ["per-token, asymmetric after GELU", { activation: "per-row", weightBits: 8, asymmetric: "gelu" }],
  [
    "asymmetric after GELU, bias correction (all linears)",
    { activation: "per-row", weightBits: 8, asymmetric: "gelu", inputMeans },
  ],
  [
    "asymmetric after GELU, bias correction (MLP output only)",
    { activation: "per-row", weightBits: 8, asymmetric: "gelu", inputMeans: onlyFc2(inputMeans) },
  ],
];

const KINDS = ["qkv", "attn_out", "fc1", "fc2", "classifier"];

for (const family of families) {
  const t0 = performance.now();
  const synth = synthesize({ size: "base", seed: 0, init: family });
  const config = parseBeitConfig(synth.config);
  const inputs = inputsFor(config);
  const runtime: Runtime = mode === "schemes" ? "web" : "node";
  const tc = performance.now();
  const inputMeans = await calibrateInputMeans(config, synth.tensors);
  const calMs = performance.now() - tc;
  const fp = await runGraph(runtime, config, synth.tensors, inputs, "fp32");
  let lo = Infinity;
  let hi = -Infinity;
  for (const o of fp.outs) for (const v of o) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  console.log(
    `\n## family ${family} (${mode}, onnxruntime-${runtime}, ${N} inputs; fp32 logits span ${lo.toFixed(1)}..${hi.toFixed(1)}; fp32 median ${fp.ms.toFixed(0)} ms; calibration ${(calMs / 1000).toFixed(0)} s; total setup ${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
  console.log("| variant | top-1 | mean top-5 overlap | mean rel L2 | max rel L2 | median latency |");
  console.log("|---|---|---|---|---|---|");
  const row = async (name: string, q: QuantOptions) => {
    const r = await runGraph(runtime, config, synth.tensors, inputs, "int8", q);
    console.log(`| ${name} | ${compare(r.outs, fp.outs)} | ${r.ms.toFixed(0)} ms |`);
  };
  if (mode === "schemes") {
    // All int8 sessions at once, inputs interleaved across them, so latencies share conditions.
    const list = schemes(inputMeans);
    const sessions = [];
    for (const [, q] of list) {
      const sg = wholeModelGraph(config, synth.tensors, { precision: "int8", quant: q });
      const session = await webSession(sg.graph);
      await session.run(inputs[0], sg.input, sg.output);
      sessions.push({ session, sg, outs: [] as Float32Array[], times: [] as number[] });
    }
    for (const x of inputs)
      for (const s of sessions) {
        const t = performance.now();
        s.outs.push(await s.session.run(x, s.sg.input, s.sg.output));
        s.times.push(performance.now() - t);
      }
    for (const [k, s] of sessions.entries()) {
      await s.session.release();
      console.log(`| ${list[k][0]} | ${compare(s.outs, fp.outs)} | ${median(s.times).toFixed(0)} ms |`);
    }
  } else {
    const which = (args.get("variants") ?? "all,kinds").split(",");
    const base: QuantOptions = { ...DEFAULT_QUANT, ...(which.includes("bc") ? { inputMeans } : {}) };
    if (which.includes("asym")) base.asymmetric = "gelu";
    if (which.includes("all"))
      for (const sim of ["both", "weights", "activations"] as const)
        await row(`all linears, ${sim}`, { ...base, simulate: sim });
    if (which.includes("kinds"))
      for (const kind of KINDS)
        for (const sim of ["weights", "activations"] as const)
          await row(`${kind} only, ${sim}`, {
            ...base,
            simulate: sim,
            select: (p) => p.endsWith(`_${kind}`) || p === kind,
          });
    if (which.includes("layers"))
      for (let l = 0; l < config.num_hidden_layers; l++)
        await row(`layer ${l} only, both`, {
          ...base,
          simulate: "both",
          select: (p) => p.startsWith(`l${l}_`),
        });
  }
}
