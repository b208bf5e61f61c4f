/**
 * @module
 * What the gateway knows about the model: the active version (from the R2 pointer, cached a few
 * seconds), its manifest and its labels (cached per version for the isolate's life). A request
 * resolves the version once and uses that manifest for every stage call, so a pointer swap never
 * mixes two versions inside one request.
 */

import { configOf } from "../edge/config.ts";
import type { ClassifierEnv } from "../edge/env.ts";
import { readLabels } from "../shards/source.ts";
import { type KeepAlive, ShardStore } from "../shards/store.ts";
import { AppError, RETRY_AFTER_S } from "../shared/errors.ts";
import { LabelFileError, type Manifest } from "../shared/manifest.ts";

/** Which model answered: on every classification outcome and in the x-model-* headers. */
export interface ModelIdentity {
  id: string;
  version: string;
  synthetic: boolean;
  precision: string;
}

export interface ModelView {
  version: string;
  publishedAt: string;
  manifest: Manifest;
  labels: string[];
}

let store: ShardStore | null = null;
let storeBucket: R2Bucket | null = null;
const labelCache = new Map<string, Promise<string[]>>();

/** The isolate's ShardStore for this bucket (recreated if the binding object changes). */
export function gatewayStore(env: ClassifierEnv): ShardStore {
  if (!store || storeBucket !== env.MODELS) {
    store = new ShardStore(env.MODELS, { pointerTtlMs: configOf(env).pointerTtlMs });
    storeBucket = env.MODELS;
  }
  return store;
}

async function loadLabels(s: ShardStore, manifest: Manifest): Promise<string[]> {
  try {
    return await readLabels(s, manifest);
  } catch (e) {
    if (!(e instanceof LabelFileError)) throw e;
    throw new AppError(
      "model-unavailable",
      503,
      `The label file of model version ${manifest.version.slice(0, 12)} is invalid: ${e.message} Republish the model.`,
      { retryAfter: RETRY_AFTER_S },
    );
  }
}

/**
 * The active model (pointer -> manifest -> labels), each verified. Pass the request's
 * `waitUntil` as `keepAlive` so that loads shared with later requests always settle.
 */
export async function activeModel(env: ClassifierEnv, keepAlive?: KeepAlive): Promise<ModelView> {
  const s = gatewayStore(env);
  const pointer = await s.active();
  const manifest = await s.manifest(pointer.version, keepAlive);
  let labels = labelCache.get(pointer.version);
  if (!labels) {
    labels = loadLabels(s, manifest);
    labelCache.set(pointer.version, labels);
    labels.catch(() => labelCache.delete(pointer.version));
    keepAlive?.(labels.catch(() => undefined));
  }
  return { version: pointer.version, publishedAt: pointer.publishedAt, manifest, labels: await labels };
}

/** The identity of a model view. */
export function identityOf(m: ModelView): ModelIdentity {
  return {
    id: m.manifest.model.id,
    version: m.version,
    synthetic: m.manifest.model.synthetic,
    precision: m.manifest.precision,
  };
}

/** Headers naming the model on every model-related response. */
export function modelHeaders(m: ModelView | ModelIdentity): Record<string, string> {
  const id = "manifest" in m ? identityOf(m) : m;
  return {
    "x-model-id": id.id,
    "x-model-version": id.version,
    "x-model-synthetic": String(id.synthetic),
    "x-model-precision": id.precision,
  };
}
