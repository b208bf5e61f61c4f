/**
 * @module
 * Where a model's files come from. One interface, two implementations:
 *
 * - {@link ShardStore} (src/shards/store.ts): R2 through the Cache API, inside a Worker;
 * - `localModelSource(dir)` (model-shards/local-source.ts): a shard directory, in Node.
 *
 * Both return only bytes whose size and sha256 match the manifest. The stage-session loader
 * (src/inference/open-stage.ts) and {@link readLabels} take either, so the stage Worker, the Node
 * runner, the test setup and the heap measurement open a model the same way.
 */
import { type FileRef, type Manifest, parseLabels } from "../shared/manifest.ts";

/**
 * Keeps a promise's request alive until it settles (`ctx.waitUntil`). Promises cached at module
 * scope are shared by later requests; in workerd, I/O started by a request that is then cancelled
 * (say, its client gave up) never settles, and every later request awaiting it would hang.
 */
export type KeepAlive = (p: Promise<unknown>) => void;

/** Where a file's bytes came from: Cache API, R2 or a local directory. */
export type FileOrigin = "cache" | "r2" | "disk";

export interface LoadedFile<O extends FileOrigin = FileOrigin> {
  bytes: Uint8Array;
  origin: O;
  /** Time reading the body (Cache API or R2, including the failed cache lookup; or the disk). */
  fetchMs: number;
  /** Time checking size and sha256. */
  verifyMs: number;
  /**
   * True when nothing else holds `bytes` (a fresh read, not a cache the source keeps): the stage
   * loader may then free them the moment ORT has its copy (ArrayBuffer `transfer(0)`), instead of
   * leaving a stage's weights to the next garbage collection while the wasm heap grows.
   */
  owned?: boolean;
}

export interface ModelSource<O extends FileOrigin = FileOrigin> {
  /**
   * The validated manifest of `version`; without one, the model the source serves now (the
   * active pointer's in R2, the directory's own). A directory holds one model and refuses another
   * version. `keepAlive` receives a load this call starts (Workers: `ctx.waitUntil`).
   */
  manifest(version?: string, keepAlive?: KeepAlive): Promise<Manifest>;
  /** The bytes of one file of a manifest, checked against its size and sha256. */
  file(ref: FileRef): Promise<LoadedFile<O>>;
}

/** The slowest of several origins (R2 over disk over cache): what a load that read them all reports. */
export function slowestOrigin<O extends FileOrigin>(origins: readonly O[]): O {
  const rank: Record<FileOrigin, number> = { cache: 0, disk: 1, r2: 2 };
  return origins.reduce((a, b) => (rank[b] > rank[a] ? b : a));
}

/** The labels of `manifest` from `source` (index = class id); a bad file throws LabelFileError. */
export async function readLabels(source: ModelSource, manifest: Manifest): Promise<string[]> {
  return parseLabels((await source.file(manifest.labels)).bytes, manifest.labels);
}
