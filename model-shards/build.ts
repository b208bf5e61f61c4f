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
  LabelFileError,
  type Manifest,
  manifestFiles,
  modelShape,
  type Precision,
  parseManifest,
  type StageSpec,
  serializeManifest,
} from "../src/shared/manifest.ts";
import type { Checkpoint } from "./checkpoint/types.ts";
import { type LocalModelSource, localModelSource } from "./local-source.ts";
import { buildStageGraph, checkSupported } from "./onnx/beit-graph.ts";
import { calibrateInputMeans } from "./onnx/calibrate.ts";
import { readInitializers, serializeModel } from "./onnx/proto.ts";
import { DEFAULT_QUANT, describeQuant, type QuantOptions, selectBiasCorrection } from "./onnx/quantize.ts";
import { planStages } from "./plan.ts";

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
  onProgress?: (msg: string, frac?: number) => void;
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
  const plan = planStages(ck.config, opts.precision, {
    stageBudgetBytes: opts.stageBudgetBytes,
    maxLayersPerStage: opts.maxLayersPerStage,
  });
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
    let quant = opts.quant ?? DEFAULT_QUANT;
    if (opts.precision === "int8" && (quant.biasCorrection ?? "none") !== "none" && !quant.inputMeans) {
      progress("calibrating bias correction (fp32 model on synthetic pictures)", 0);
      quant = {
        ...quant,
        inputMeans: selectBiasCorrection(quant, await calibrateInputMeans(ck.config, ck.tensors)),
      };
    }
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
        precision: opts.precision,
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
        await writeFile(join(tmp, location), first.weights);
        weights = { file: location, bytes: first.weights.length, sha256: wsha };
        model = serializeModel(sg.graph, { location }).model;
      }
      const gsha = await sha256Hex(model);
      const graphFile = `stage${i}-${gsha}.onnx`;
      await writeFile(join(tmp, graphFile), model);
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
      });
      progress(
        `stage ${i}: ${(sg.weightBytes / 1048576).toFixed(1)} MiB of weights written`,
        (i + 1) / total,
      );
    }
    const labelBytes = new TextEncoder().encode(`${JSON.stringify(ck.config.labels)}\n`);
    const lsha = await sha256Hex(labelBytes);
    const labelFile = `labels-${lsha}.json`;
    await writeFile(join(tmp, labelFile), labelBytes);
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
      precision: opts.precision,
      quantization: opts.precision === "int8" ? describeQuant(quant) : "",
      preprocess: ck.preprocess,
      labels: { file: labelFile, bytes: labelBytes.length, sha256: lsha, count: c.labels.length },
      stages,
      graphOptimization: "disabled",
      budget: { stageBudgetBytes: plan.stageBudgetBytes, marginBytes: plan.marginBytes },
      createdAt: new Date().toISOString(),
      converter: CONVERTER,
    };
    const checked = parseManifest(JSON.parse(serializeManifest(manifest)));
    await writeFile(join(tmp, "manifest.json"), serializeManifest(checked));
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
