/**
 * @module
 * Where int8 error comes from, per kind of linear layer: float graphs (onnxruntime-node, fast and
 * runtime-independent: float arithmetic) that round only the weights or only the activations of
 * one kind of layer (qkv, attn_out, fc1, fc2, classifier), or of every layer, with the shipped
 * scheme's options, each against the fp32 graph on N inputs (photo-like pictures and random
 * pixel fields alternately). The outlier channels are not modelled by the float simulation, so
 * this attributes the error of one int8 product per layer.
 *
 * Usage: tsx bench/model-attribution.ts [--family synth|torch|outlier:1|...] [--n 10] [--variants all,kinds,layers]
 */
import { calibratedQuant } from "../model-shards/build.ts";
import { parseBeitConfig } from "../model-shards/checkpoint/config.ts";
import { type SynthInit, synthesize } from "../model-shards/checkpoint/synth.ts";
import { agreement } from "../model-shards/fidelity.ts";
import { serializeModel } from "../model-shards/onnx/proto.ts";
import { DEFAULT_QUANT, type QuantOptions } from "../model-shards/onnx/quantize.ts";
import { wholeModelGraph } from "../model-shards/onnx/whole-model.ts";
import { randomPixels } from "../model-shards/testing/random-beit.ts";
import { syntheticPhoto } from "./image-inputs.ts";
import { flag } from "./lib/cli.ts";
import { loadOrtNode } from "./lib/ort-node.ts";

const N = Number(flag("n", "10"));
const [init, s] = flag("family", "synth").split(":");
const which = flag("variants", "all,kinds").split(",");
const ck = synthesize({
  size: "base",
  seed: 0,
  init: init as SynthInit,
  strength: s ? Number(s) : undefined,
});
const config = parseBeitConfig(ck.config);
const inputs = Array.from({ length: N }, (_, i) => {
  if (i % 2) return randomPixels(config, 1000 + i);
  const rgba = syntheticPhoto(224, 224, 100 + i);
  return Float32Array.from(
    { length: 3 * 224 * 224 },
    (_, k) => (rgba[(k % (224 * 224)) * 4 + Math.floor(k / (224 * 224))] / 255 - 0.5) / 0.5,
  );
});
const ort = await loadOrtNode();

async function logits(precision: "fp32" | "int8", quant?: QuantOptions): Promise<Float32Array[]> {
  const sg = wholeModelGraph(config, ck.tensors, { precision, quant });
  const session = await ort.InferenceSession.create(serializeModel(sg.graph).model, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionProviders: ["cpu"],
  });
  const outs: Float32Array[] = [];
  for (const x of inputs) {
    const r = await session.run({ [sg.input.name]: new ort.Tensor("float32", x, sg.input.shape) });
    outs.push(r[sg.output.name].data as Float32Array);
  }
  await session.release();
  return outs;
}

const ref = await logits("fp32");
const base: QuantOptions = {
  ...(await calibratedQuant(config, ck.tensors, DEFAULT_QUANT)),
  inputStats: undefined,
};
console.log(`## family ${flag("family", "synth")}, ${N} inputs`);
console.log("| variant | top-1 | mean top-5 overlap | mean rel L2 | max rel L2 |\n|---|---|---|---|---|");
const row = async (name: string, q: QuantOptions) => {
  const a = agreement(await logits("int8", q), ref);
  console.log(
    `| ${name} | ${a.top1Agreement}/${a.inputs} | ${a.top5OverlapMean.toFixed(2)} | ${a.relL2Mean.toFixed(4)} | ${a.relL2Max.toFixed(4)} |`,
  );
};
if (which.includes("all"))
  for (const sim of ["both", "weights", "activations"] as const)
    await row(`all linears, ${sim}`, { ...base, simulate: sim });
if (which.includes("kinds"))
  for (const kind of ["qkv", "attn_out", "fc1", "fc2", "classifier"])
    for (const sim of ["weights", "activations"] as const)
      await row(`${kind} only, ${sim}`, {
        ...base,
        simulate: sim,
        select: (p) => p.endsWith(`_${kind}`) || p === kind,
      });
if (which.includes("layers"))
  for (let l = 0; l < config.num_hidden_layers; l++)
    await row(`layer ${l} only, both`, { ...base, simulate: "both", select: (p) => p.startsWith(`l${l}_`) });
