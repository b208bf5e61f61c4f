/**
 * @module
 * The one way to open a model stage: a manifest's stage spec -> its graph and external weights
 * from a {@link ModelSource} (verified bytes) -> an onnxruntime-web session, optionally primed with
 * one run on zeros. Used by the stage Worker (source: the R2 shard store), the Node runner
 * (model-shards/runner.ts, source: a shard directory; through it the workerd test setup and the
 * e2e test compute their expected results) and the heap measurement (model-shards/measure-heap.ts).
 *
 * The shard bytes are referenced only while the session is created, so once this returns, ORT's
 * copy (in the wasm heap) is the only one left.
 */
import type { FileOrigin, LoadedFile, ModelSource } from "../shards/source.ts";
import { slowestOrigin } from "../shards/source.ts";
import { AppError, RETRY_AFTER_S } from "../shared/errors.ts";
import { type Manifest, numel, type StageSpec } from "../shared/manifest.ts";
import { createStageSession, reserveWasmHeap, type SessionTuning, type StageSession } from "./ort.ts";
import type { PipelineStage } from "./pipeline.ts";

export interface OpenStageOptions {
  /**
   * Run the session once on zeros before returning: ORT's first run allocates its buffers and is
   * several times slower than later ones, so the stage Worker does it during the warm-up, and the
   * wasm heap measured afterwards is the working peak. Default false.
   */
  prime?: boolean;
  /**
   * ORT session options over the manifest's graph optimisation level (bench/stage-load.ts compares
   * them); the Workers pass none.
   */
  tuning?: SessionTuning;
  /**
   * Bytes to grow ORT's wasm heap to after the session exists and before its first run; default
   * the manifest's `wasmHeapBytes` for the stage (none in older manifests). 0: no reservation
   * (bench/stage-memory.ts measures the heap both ways).
   */
  reserveHeapBytes?: number;
}

/** An open stage: its session and specs (a {@link PipelineStage}), where it came from, and how long it took. */
export interface OpenedStage<O extends FileOrigin = FileOrigin> extends PipelineStage {
  spec: StageSpec;
  /** The slowest origin of the stage's files. */
  origin: O;
  /** Reading + verifying the files, creating the session and priming it (ms). */
  loadMs: number;
  /** Where `loadMs` went (ms): file reads, size + sha256 checks, session create, priming run (0 without). */
  timings: { fetchMs: number; verifyMs: number; createMs: number; primeMs: number };
  /** Frees the session's native memory. */
  release(): Promise<void>;
}

/**
 * Frees a buffer's memory at once instead of at the next garbage collection: `transfer(0)` detaches
 * it and drops its backing store (workerd; Node 20's V8 lacks it, and then this does nothing).
 * Only for bytes nobody else holds (LoadedFile.owned).
 */
function freeNow(bytes: Uint8Array): void {
  const buffer = bytes.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };
  if (typeof buffer.transfer === "function" && !(buffer instanceof SharedArrayBuffer)) buffer.transfer(0);
}

/**
 * Opens stage `index` of `manifest`. A stage the manifest does not have is a 400
 * `bad-stage-request`; a session ORT cannot create or run is a 503 (`model-load-failed`,
 * `model-unavailable`) with Retry-After; the source's own errors pass through.
 *
 * @example
 * const stage = await openStage(store, await store.manifest(version), 2, { prime: true });
 * const out = await stage.session.run(x, stage.input, stage.output);
 */
export async function openStage<O extends FileOrigin>(
  source: ModelSource<O>,
  manifest: Manifest,
  index: number,
  opts: OpenStageOptions = {},
): Promise<OpenedStage<O>> {
  const t0 = Date.now();
  const spec = manifest.stages[index];
  if (!spec)
    throw new AppError(
      "bad-stage-request",
      400,
      `Model version ${manifest.version.slice(0, 12)} has ${manifest.stages.length} stages; stage ${index} does not exist.`,
    );
  // Both reads at once: the graph's round trip hides behind the weights' (tens of KB vs. MiB).
  const tRead = Date.now();
  let [graph, weights]: [LoadedFile<O> | null, LoadedFile<O> | null] = await Promise.all([
    source.file(spec.graph),
    spec.weights ? source.file(spec.weights) : null,
  ]);
  // Only these facts outlive session creation: the bytes themselves must not stay reachable from
  // this frame while the first run grows the wasm heap.
  const files = [graph, weights].flatMap((f) => (f ? [{ origin: f.origin, verifyMs: f.verifyMs }] : []));
  // The reads overlap, so their wall time is the fetch phase: sha256 checks (CPU, one thread) are
  // counted apart, the rest is fetching.
  const verifyMs = files.reduce((a, f) => a + f.verifyMs, 0);
  let session: StageSession;
  const tCreate = Date.now();
  const fetchMs = Math.max(0, tCreate - tRead - verifyMs);
  try {
    session = await createStageSession(
      (graph as LoadedFile<O>).bytes,
      weights && spec.externalDataPath ? { path: spec.externalDataPath, data: weights.bytes } : null,
      { graphOptimizationLevel: manifest.graphOptimization, ...opts.tuning },
    );
    if (weights?.owned) freeNow(weights.bytes);
    graph = null;
    weights = null;
  } catch (e) {
    if (e instanceof AppError) throw e;
    throw new AppError(
      "model-unavailable",
      503,
      `Stage ${index} of model version ${manifest.version.slice(0, 12)} could not be loaded: ${String(e)}`,
      { retryAfter: RETRY_AFTER_S },
    );
  }
  // The shard bytes are no longer referenced: the wasm heap holds ORT's copy. Grow the heap to
  // the planned size now, in one step, so the first run does not overshoot it by a growth step.
  const reserve = opts.reserveHeapBytes ?? spec.wasmHeapBytes ?? 0;
  if (reserve > 0) reserveWasmHeap(reserve);
  const input = spec.inputs[0];
  const output = spec.outputs[0];
  const tPrime = Date.now();
  if (opts.prime) {
    try {
      await session.run(new Float32Array(numel(input.shape)), input, output);
    } catch (e) {
      await session.release().catch(() => undefined);
      throw e instanceof AppError
        ? e
        : new AppError("model-unavailable", 503, `Stage ${index} failed its first run: ${String(e)}`, {
            retryAfter: RETRY_AFTER_S,
          });
    }
  }
  const end = Date.now();
  return {
    session,
    input,
    output,
    spec,
    origin: slowestOrigin(files.map((f) => f.origin)),
    loadMs: end - t0,
    timings: {
      fetchMs,
      verifyMs,
      createMs: tPrime - tCreate,
      primeMs: end - tPrime,
    },
    release: () => session.release(),
  };
}

/**
 * Opens every stage of `manifest` in pipeline order (for running the whole model in one
 * process); on a failure the stages already open are released.
 */
export async function openStages<O extends FileOrigin>(
  source: ModelSource<O>,
  manifest: Manifest,
  opts: OpenStageOptions = {},
): Promise<OpenedStage<O>[]> {
  const open: OpenedStage<O>[] = [];
  try {
    for (const s of manifest.stages) open.push(await openStage(source, manifest, s.index, opts));
  } catch (e) {
    for (const s of open) await s.release().catch(() => undefined);
    throw e;
  }
  return open;
}
