/**
 * @module
 * Writes a shard directory from a checkpoint ({@link buildShards}) and checks one
 * ({@link verifyShards}).
 *
 * Layout: `stage<i>-<sha256>.onnx` (the graph, small), `stage<i>-<sha256>.weights` (its ONNX
 * external data, which the graph names as `location`), `labels-<sha256>.json`, manifest.json.
 * Shard files hold no timestamps: the same weights give byte-identical files whatever format they
 * were read from; only manifest.json carries createdAt. The build writes into a temporary
 * directory beside `outDir` and renames it into place at the end, so a failed build never leaves
 * a directory that looks complete.
 */
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { readLabels } from "../src/shards/source.ts";
import { AppError } from "../src/shared/errors.ts";
import { sha256Hex } from "../src/shared/hash.ts";
import {
  type Fidelity,
  LabelFileError,
  type Manifest,
  manifestFiles,
  modelShape,
  type Precision,
  parseManifest,
  type StageSpec,
  serializeManifest,
} from "../src/shared/manifest.ts";
import type { BeitConfig, Checkpoint } from "./checkpoint/types.ts";
import { type Agreement, agreement, FIDELITY_INPUTS, fp32Logits, heldOutInputs } from "./fidelity.ts";
import { type LocalModelSource, localModelSource } from "./local-source.ts";
import { buildStageGraph, checkSupported } from "./onnx/beit-graph.ts";
import { calibrateInputs } from "./onnx/calibrate.ts";
import { readInitializers, serializeModel } from "./onnx/proto.ts";
import {
  DEFAULT_QUANT,
  describeQuant,
  type LayerReport,
  MAX_OUTLIERS,
  type QuantOptions,
  selectBiasCorrection,
} from "./onnx/quantize.ts";
import { type ExtraBytes, type Plan, plannedWasmHeap, planStages } from "./plan.ts";
import { loadLocalModel } from "./runner.ts";

/** Converter identity written into manifests. */
export const CONVERTER = "beit-edge model-shards 0.1.0";

export interface BuildOptions {
  outDir: string;
  precision: Precision;
  stageBudgetBytes?: number;
  /** See PlanOptions.maxLayersPerStage. */
  maxLayersPerStage?: number;
  /** int8 scheme (default {@link DEFAULT_QUANT}). */
  quant?: QuantOptions;
  /**
   * int8: the largest mean relative L2 error of the logits (against the fp32 graph, on the
   * held-out inputs) the build may ship. Above it the build tightens the scheme, the layers with
   * the most estimated rounding noise first, and fails (`fidelity-target-unmet`) when
   * {@link MAX_TIGHTENING_ROUNDS} rounds do not reach it. Default: measure and report only.
   */
  maxRelL2?: number;
  /** Held-out inputs for the int8 measurement (default {@link FIDELITY_INPUTS}). */
  fidelityInputs?: number;
  onProgress?: (msg: string, frac?: number) => void;
}

/**
 * The CLI's default --max-rel-l2: about what per-token int8 with per-channel weights reaches on
 * random-normal ViT weights without outliers (issue #18's measurements, 0.045-0.055). A build above
 * it is not at int8's floor for its checkpoint, so the build tightens or says it cannot.
 */
export const DEFAULT_MAX_REL_L2 = 0.05;

/** How often a build with a fidelity target may tighten its scheme before it gives up. */
export const MAX_TIGHTENING_ROUNDS = 4;

/**
 * `quant` with what its calibration needs filled in from the fp32 model on the calibration
 * pictures: input means for bias correction, channel statistics for outlier channels. Returns
 * `quant` as is when it needs neither or already has them.
 *
 * @example
 * const quant = await calibratedQuant(config, tensors, DEFAULT_QUANT);
 */
export async function calibratedQuant(
  config: BeitConfig,
  tensors: Checkpoint["tensors"],
  quant: QuantOptions,
): Promise<QuantOptions> {
  const outliers = (quant.outlierChannels ?? "none") !== "none";
  const wantsStats = outliers || (quant.biasCorrection ?? "none") !== "none";
  if (!wantsStats || quant.inputMeans || quant.inputStats) return quant;
  const stats = await calibrateInputs(config, tensors);
  return {
    ...quant,
    inputMeans: selectBiasCorrection(quant, new Map([...stats].map(([k, v]) => [k, v.mean]))),
    ...(outliers ? { inputStats: stats } : {}),
  };
}

/** What the reference for manifest.fidelity is. */
const FIDELITY_REFERENCE = "fp32 graph of the same checkpoint (onnxruntime-web), held-out inputs";

/** Weight bytes a float32 linear layer adds over its int8 form (4 bytes per weight instead of 1). */
function floatLayerExtra(config: BeitConfig, prefix: string): number {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const kind = prefix.slice(prefix.indexOf("_") + 1);
  const [out, inp] = kind === "qkv" ? [3 * H, H] : kind === "fc1" ? [I, H] : kind === "fc2" ? [H, I] : [H, H];
  return 3 * out * inp;
}

/** Weight bytes float32 outlier products (up to 2 x MAX_OUTLIERS channels) add at most. */
function floatOutlierExtra(config: BeitConfig, prefix: string, maxOutliers: number): number {
  const H = config.hidden_size;
  const kind = prefix.slice(prefix.indexOf("_") + 1);
  const out =
    prefix === "classifier"
      ? config.labels.length
      : kind === "qkv"
        ? 3 * H
        : kind === "fc1"
          ? config.intermediate_size
          : H;
  return 4 * 2 * maxOutliers * out;
}

/** The layers a tightened scheme treats apart. */
interface Tightening {
  floatOutliers: Set<string>;
  floatLayers: Set<string>;
}

function extraBytes(config: BeitConfig, t: Tightening, maxOutliers: number): ExtraBytes {
  const of = (prefix: string) =>
    (t.floatLayers.has(prefix) ? floatLayerExtra(config, prefix) : 0) +
    (t.floatOutliers.has(prefix) ? floatOutlierExtra(config, prefix, maxOutliers) : 0);
  return {
    layer: (l) => ["qkv", "attn_out", "fc1", "fc2"].reduce((a, k) => a + of(`l${l}_${k}`), 0),
    head: of("classifier"),
  };
}

/**
 * One tightening round: the `count` layers with the most estimated noise that are not float32
 * yet move one step: int8 outlier products become float32 ones (with up to twice as many
 * channels); layers already there, or without outlier channels, become float32 layers. The
 * classifier never becomes a float32 layer: at 4 bytes a weight it would not fit any stage.
 */
function tighten(t: Tightening, reports: LayerReport[], count: number): number {
  const ranked = reports
    .filter((r) => !t.floatLayers.has(r.prefix))
    .filter((r) => !(r.prefix === "classifier" && t.floatOutliers.has(r.prefix)))
    .sort((a, b) => b.noiseToSignal - a.noiseToSignal);
  let moved = 0;
  for (const r of ranked.slice(0, count)) {
    if (r.outliers.length && r.outlierPrecision === "int8") t.floatOutliers.add(r.prefix);
    else if (r.prefix === "classifier") t.floatOutliers.add(r.prefix);
    else t.floatLayers.add(r.prefix);
    moved++;
  }
  return moved;
}

async function exists(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null)) !== null;
}

/**
 * Converts a checkpoint into content-addressed stage shards plus manifest.json in `opts.outDir`.
 * An existing `outDir` is replaced only if it is empty or a previous shard build (has
 * manifest.json).
 *
 * @example
 * const ck = await loadCheckpoint("./checkpoints/tiny");
 * const manifest = await buildShards(ck, { outDir: "model-shards/out/tiny", precision: "int8" });
 */
export async function buildShards(ck: Checkpoint, opts: BuildOptions): Promise<Manifest> {
  const progress = opts.onProgress ?? (() => {});
  const outDir = resolve(opts.outDir);
  checkSupported(ck.config);
  if (ck.config.labels.length < 1)
    throw new AppError(
      "unsupported-config",
      422,
      "config.json has no id2label entries; the classifier needs labels.",
    );
  const planFor = (extra?: ExtraBytes) =>
    planStages(ck.config, opts.precision, {
      stageBudgetBytes: opts.stageBudgetBytes,
      maxLayersPerStage: opts.maxLayersPerStage,
      extra,
    });
  let plan = planFor();
  if (opts.maxRelL2 !== undefined && !(opts.maxRelL2 > 0))
    throw new AppError("invalid-arguments", 400, `maxRelL2 must be a positive number, got ${opts.maxRelL2}.`);
  if (await exists(outDir)) {
    const entries = await readdir(outDir).catch(() => null);
    if (entries === null)
      throw new AppError(
        "output-not-directory",
        422,
        `${outDir} exists and is not a directory; choose another --out.`,
      );
    if (entries.length > 0 && !entries.includes("manifest.json"))
      throw new AppError(
        "output-not-empty",
        422,
        `${outDir} is not empty and holds no manifest.json, so it is not a previous shard build; choose an empty or new --out directory.`,
      );
  }
  await mkdir(dirname(outDir), { recursive: true });
  const tmp = join(dirname(outDir), `.${basename(outDir)}.tmp-${process.pid}-${Date.now()}`);
  await mkdir(tmp);
  try {
    const int8 = opts.precision === "int8";
    let quant = opts.quant ?? DEFAULT_QUANT;
    if (int8) {
      progress("calibrating (fp32 model on synthetic pictures)", 0);
      quant = await calibratedQuant(ck.config, ck.tensors, quant);
    }
    let reference: { inputs: Float32Array[]; logits: Float32Array[] } | null = null;
    if (int8) {
      progress("fp32 reference logits on held-out inputs", 0);
      const inputs = heldOutInputs(ck.config, opts.fidelityInputs ?? FIDELITY_INPUTS);
      reference = { inputs, logits: await fp32Logits(ck.config, ck.tensors, inputs) };
    }
    const maxOutliers = quant.maxOutliers ?? MAX_OUTLIERS;
    const tightening: Tightening = { floatOutliers: new Set(), floatLayers: new Set() };
    let stages: StageSpec[] = [];
    let measured: Agreement | null = null;
    let reports: LayerReport[] = [];
    for (let round = 0; ; round++) {
      const tightened: QuantOptions = {
        ...quant,
        floatOutliers: tightening.floatOutliers,
        select: (p) => !tightening.floatLayers.has(p) && (quant.select?.(p) ?? true),
        onLayer: (r) => reports.push(r),
      };
      reports = [];
      stages = await writeStages(tmp, ck, plan, opts.precision, tightened, progress);
      if (!reference) break;
      progress(`measuring int8 against fp32 on ${reference.inputs.length} held-out inputs`, 1);
      await writeManifest(tmp, ck, opts.precision, stages, plan, quant, null);
      const model = await loadLocalModel(tmp);
      try {
        const outs: Float32Array[] = [];
        for (const x of reference.inputs) outs.push(await model.run(x));
        measured = agreement(outs, reference.logits);
      } finally {
        await model.release();
      }
      const target = opts.maxRelL2;
      if (target === undefined || measured.relL2Mean <= target) break;
      const count = Math.ceil(reports.length / 8) * 2 ** round;
      const gap = `mean rel L2 ${measured.relL2Mean.toFixed(4)} against a target of ${target} (${(measured.relL2Mean / target).toFixed(2)}x)`;
      if (round === MAX_TIGHTENING_ROUNDS || tighten(tightening, reports, count) === 0)
        throw new AppError(
          "fidelity-target-unmet",
          422,
          `int8 cannot reach --max-rel-l2 ${target} within the stage budget: after ${round} tightening rounds (${tightening.floatOutliers.size} layers with float32 outlier products, ${tightening.floatLayers.size} float32 layers) it measures ${gap}. Ship the closest build by raising the target, or build --precision fp32.`,
        );
      try {
        plan = planFor(extraBytes(ck.config, tightening, maxOutliers));
      } catch (e) {
        throw new AppError(
          "fidelity-target-unmet",
          422,
          `int8 cannot reach --max-rel-l2 ${target} within the stage budget: the next tightening round (float32 layers ${[...tightening.floatLayers].join(", ") || "none"}) does not fit any split (${(e as Error).message}); it measures ${gap}.`,
        );
      }
      progress(
        `round ${round + 1}: ${gap}; tightening (${tightening.floatOutliers.size} float32 outlier products, ${tightening.floatLayers.size} float32 layers)`,
        0,
      );
      for (const f of await readdir(tmp)) await rm(join(tmp, f));
    }
    const outlierReports = reports.filter((r) => r.outliers.length > 0);
    const checked = await writeManifest(
      tmp,
      ck,
      opts.precision,
      stages,
      plan,
      quant,
      measured && {
        reference: FIDELITY_REFERENCE,
        ...measured,
        target: opts.maxRelL2 ?? null,
        outlierLayers: outlierReports.length,
        outlierChannels: outlierReports.reduce((n, r) => n + r.outliers.length, 0),
        floatLayers: [...tightening.floatLayers],
      },
    );
    progress("moving the finished build into place", 1);
    if (await exists(outDir)) {
      const old = `${tmp}.old`;
      await rename(outDir, old);
      await rename(tmp, outDir);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, outDir);
    }
    return checked;
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Writes every stage's graph and weights into `dir`; returns their manifest entries. */
async function writeStages(
  dir: string,
  ck: Checkpoint,
  plan: Plan,
  precision: Precision,
  quant: QuantOptions,
  progress: (msg: string, frac?: number) => void,
): Promise<StageSpec[]> {
  const stages: StageSpec[] = [];
  const total = plan.stages.length + 1;
  for (const [i, p] of plan.stages.entries()) {
    progress(`stage ${i}: building graph for layers [${p.layers[0]}, ${p.layers[1]})`, i / total);
    const sg = buildStageGraph({
      config: ck.config,
      tensors: ck.tensors,
      layers: p.layers,
      embeddings: p.embeddings,
      head: p.head,
      precision,
      quant,
    });
    // Serialize once to learn the weights' hash, then again with the final file name inside.
    const first = serializeModel(sg.graph, { location: "pending" });
    let weights: StageSpec["weights"] = null;
    let location: string | null = null;
    let model = first.model;
    if (first.weights) {
      const wsha = await sha256Hex(first.weights);
      location = `stage${i}-${wsha}.weights`;
      await writeFile(join(dir, location), first.weights);
      weights = { file: location, bytes: first.weights.length, sha256: wsha };
      model = serializeModel(sg.graph, { location }).model;
    }
    const gsha = await sha256Hex(model);
    const graphFile = `stage${i}-${gsha}.onnx`;
    await writeFile(join(dir, graphFile), model);
    stages.push({
      index: i,
      layers: p.layers,
      embeddings: p.embeddings,
      head: p.head,
      graph: { file: graphFile, bytes: model.length, sha256: gsha },
      weights,
      externalDataPath: location,
      inputs: [sg.input],
      outputs: [sg.output],
      weightBytes: sg.weightBytes,
      estimatedPeakBytes: p.estimatedPeakBytes,
      wasmHeapBytes: plannedWasmHeap(ck.config, precision, p, sg.weightBytes),
    });
    progress(`stage ${i}: ${(sg.weightBytes / 1048576).toFixed(1)} MiB of weights written`, (i + 1) / total);
  }
  return stages;
}

/** Writes the label file and manifest.json into `dir`; returns the (validated) manifest. */
async function writeManifest(
  dir: string,
  ck: Checkpoint,
  precision: Precision,
  stages: StageSpec[],
  plan: Plan,
  quant: QuantOptions,
  fidelity: Fidelity | null,
): Promise<Manifest> {
  const labelBytes = new TextEncoder().encode(`${JSON.stringify(ck.config.labels)}\n`);
  const lsha = await sha256Hex(labelBytes);
  const labelFile = `labels-${lsha}.json`;
  await writeFile(join(dir, labelFile), labelBytes);
  const hashes = [`labels ${lsha}`];
  for (const s of stages) hashes.push(`stage${s.index} ${s.graph.sha256} ${s.weights?.sha256 ?? "-"}`);
  const version = await sha256Hex(new TextEncoder().encode(hashes.join("\n")));
  const c = ck.config;
  const manifest: Manifest = {
    schema: 1,
    version,
    model: {
      id: ck.id,
      revision: ck.revision,
      synthetic: ck.synthetic,
      architecture: "BeitForImageClassification",
      ...modelShape(c),
      num_labels: c.labels.length,
    },
    precision,
    quantization: precision === "int8" ? describeQuant(quant) : "",
    preprocess: ck.preprocess,
    labels: { file: labelFile, bytes: labelBytes.length, sha256: lsha, count: c.labels.length },
    stages,
    graphOptimization: "disabled",
    budget: { stageBudgetBytes: plan.stageBudgetBytes, marginBytes: plan.marginBytes },
    ...(fidelity ? { fidelity } : {}),
    createdAt: new Date().toISOString(),
    converter: CONVERTER,
  };
  const checked = parseManifest(JSON.parse(serializeManifest(manifest)));
  await writeFile(join(dir, "manifest.json"), serializeManifest(checked));
  return checked;
}

/**
 * Checks a shard directory (or its {@link localModelSource}): manifest schema, every file's
 * presence, size and sha256, each graph's external-data location and ranges against its weights
 * file, and the label file (parseLabels). Throws an AppError naming the first mismatch; returns the manifest when all is well.
 *
 * @example
 * await verifyShards("model-shards/out/base-int8");
 */
export async function verifyShards(dir: string | LocalModelSource): Promise<Manifest> {
  const source = typeof dir === "string" ? localModelSource(dir) : dir;
  const manifest = await source.manifest();
  for (const f of manifestFiles(manifest)) await source.file(f);
  for (const s of manifest.stages) {
    const graph = (await source.file(s.graph)).bytes;
    let inits: ReturnType<typeof readInitializers>;
    try {
      inits = readInitializers(graph);
    } catch (e) {
      throw new AppError(
        "shard-graph-invalid",
        422,
        `${s.graph.file} is not a readable ONNX model (${(e as Error).message}).`,
      );
    }
    for (const t of inits) {
      if (!t.external) continue;
      if (t.external.location !== s.externalDataPath || !s.weights)
        throw new AppError(
          "shard-external-data-mismatch",
          422,
          `${s.graph.file} reads tensor ${t.name} from "${t.external.location}" but the manifest's externalDataPath is ${JSON.stringify(s.externalDataPath)}.`,
        );
      if (
        t.external.offset < 0 ||
        t.external.length < 0 ||
        t.external.offset + t.external.length > s.weights.bytes
      )
        throw new AppError(
          "shard-external-data-mismatch",
          422,
          `${s.graph.file} reads tensor ${t.name} beyond the end of ${s.weights.file}.`,
        );
    }
  }
  try {
    await readLabels(source, manifest);
  } catch (e) {
    if (e instanceof LabelFileError) throw new AppError("labels-invalid", 422, e.message);
    throw e;
  }
  return manifest;
}
