/**
 * @module
 * The model (or its first N layers) as one in-memory graph with embeddings and head, and an
 * onnxruntime-web session of such a graph: what calibration and the model benches run, as opposed
 * to the shard files the stage loader (src/inference/open-stage.ts) opens.
 */
import { createStageSession, type StageSession } from "../../src/inference/ort.ts";
import type { BeitConfig, StateDict } from "../checkpoint/types.ts";
import { buildStageGraph, type StageGraph, type StageGraphOptions } from "./beit-graph.ts";
import { type GraphDef, serializeModel } from "./proto.ts";

/**
 * Embeddings + layers [0, layers) + head (all layers by default) as one graph.
 *
 * @example
 * const sg = wholeModelGraph(config, tensors, { precision: "int8" });
 */
export function wholeModelGraph(
  config: BeitConfig,
  tensors: StateDict,
  opts: Pick<StageGraphOptions, "precision" | "quant" | "probeInputMeans" | "layerNormMigration"> & {
    layers?: number;
  },
): StageGraph {
  const { layers = config.num_hidden_layers, ...rest } = opts;
  return buildStageGraph({ config, tensors, layers: [0, layers], embeddings: true, head: true, ...rest });
}

/** An onnxruntime-web session of a graph built in memory, its large weights as external data. */
export async function webSession(graph: GraphDef): Promise<StageSession> {
  const { model, weights } = serializeModel(graph, { location: "model.weights" });
  return createStageSession(model, weights ? { path: "model.weights", data: weights } : null, {
    graphOptimizationLevel: "disabled",
  });
}
