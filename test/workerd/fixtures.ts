/**
 * @module
 * What the Node-side global setup hands to the workerd tests (through vitest's provide/inject):
 * tiny synthetic models as file bytes, test images, and the results onnxruntime-web gives in
 * Node for the same images, which the Worker must reproduce bit for bit.
 */

/** A built shard directory, in memory: file name -> base64 bytes, plus manifest.json text. */
export interface ModelFixture {
  version: string;
  manifest: string;
  files: Record<string, string>;
  stages: number;
}

/** Expected output for one image: top-5 labels and scores as Node computed them. */
export interface ExpectedResult {
  top: { label: string; score: number }[];
}

export interface WorkerdFixtures {
  /** Published first; most tests use it. */
  modelA: ModelFixture;
  /** Different weights, same shape: the version-swap test. */
  modelB: ModelFixture;
  /** Never loaded before the corruption test. */
  modelC: ModelFixture;
  /** base64 PNGs by name. */
  images: Record<string, string>;
  /** expected[modelKey][imageName] */
  expected: Record<"modelA" | "modelB" | "modelC", Record<string, ExpectedResult>>;
}

/** A Worker bundled by `wrangler deploy --dry-run --outdir`. */
export interface WorkerBundle {
  dir: string;
  js: string;
  wasm: string[];
}

/** One bundle per Worker kind of src/topology.ts ("gateway", "stage", ...). */
export type WorkerBundles = Record<string, WorkerBundle> & { gateway: WorkerBundle; stage: WorkerBundle };

declare module "vitest" {
  export interface ProvidedContext {
    workerdFixtures: WorkerdFixtures;
    workerBundles: WorkerBundles;
  }
}

/** base64 -> bytes (workerd and Node). */
export function fromBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
