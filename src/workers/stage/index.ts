/**
 * @module
 * Entry of the stage Worker: one codebase deployed once per pipeline stage (beit-edge-stage-0, -1,
 * ..., see src/topology.ts).
 * Each isolate holds at most one InferenceSession, for the (version, stage) the gateway asks for;
 * the shard bytes come from {@link ShardStore} (verified, Cache API, R2) and are dropped once the
 * session owns them.
 *
 * Loading = shard bytes (verified) -> session -> one priming run on zeros.
 *
 * Lifecycle: a request for another version (or stage) waits until runs on the resident session
 * have finished, releases it, then loads the requested one. Wasm memory never shrinks, so two
 * sessions are never resident at once: the isolate's peak stays one stage's peak.
 */

import ortWasm from "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm";
import type { StageEnv } from "../../edge/env.ts";
import { problemResponse, toAppError } from "../../edge/problem.ts";
import {
  HEADER_LOAD_MS,
  HEADER_ORIGIN,
  HEADER_STAGE,
  HEADER_STAGE_MS,
  HEADER_VERSION,
  type StageStatus,
  type WarmReport,
} from "../../edge/stage-protocol.ts";
import { createStageSession, initOrt, type StageSession, wasmHeapBytes } from "../../inference/ort.ts";
import { isVersion } from "../../shards/layout.ts";
import { type KeepAlive, ShardStore } from "../../shards/store.ts";
import { AppError, RETRY_AFTER_S } from "../../shared/errors.ts";
import type { Manifest, StageSpec } from "../../shared/manifest.ts";

interface Loaded {
  session: StageSession;
  spec: StageSpec;
  origin: "cache" | "r2";
  loadMs: number;
  /** Set once a request has reported this load's time; later requests report 0 / "memory". */
  reported: boolean;
}

interface Resident {
  key: string;
  version: string;
  stage: number;
  promise: Promise<Loaded>;
  loaded: boolean;
  failed: boolean;
  busy: number;
  /** Resolvers of callers waiting for `busy` to reach 0 (each wait gets a fresh promise). */
  waiters: (() => void)[];
}

let store: ShardStore | null = null;
let resident: Resident | null = null;
let peakHeap = 0;
let ortReady: Promise<void> | null = null;

function getStore(env: StageEnv): ShardStore {
  store ??= new ShardStore(env.MODELS);
  return store;
}

function ensureOrt(): Promise<void> {
  ortReady ??= Promise.resolve(initOrt({ wasmModule: ortWasm })).then(() => undefined);
  ortReady.catch(() => {
    ortReady = null;
  });
  return ortReady;
}

function heap(): number {
  const h = ortReady ? wasmHeapBytes() : 0;
  if (h > peakHeap) peakHeap = h;
  return h;
}

async function load(env: StageEnv, version: string, stage: number): Promise<Loaded> {
  const t0 = Date.now();
  await ensureOrt();
  const manifest: Manifest = await getStore(env).manifest(version);
  const spec = manifest.stages[stage];
  if (!spec)
    throw new AppError(
      "bad-stage-request",
      400,
      `Model version ${version.slice(0, 12)} has ${manifest.stages.length} stages; stage ${stage} does not exist.`,
    );
  const graph = await getStore(env).file(spec.graph);
  const weights = spec.weights ? await getStore(env).file(spec.weights) : null;
  let session: StageSession;
  try {
    session = await createStageSession(
      graph.bytes,
      weights && spec.externalDataPath ? { path: spec.externalDataPath, data: weights.bytes } : null,
    );
  } catch (e) {
    if (e instanceof AppError) throw e;
    throw new AppError(
      "model-unavailable",
      503,
      `Stage ${stage} of model version ${version.slice(0, 12)} could not be loaded: ${String(e)}`,
      { retryAfter: RETRY_AFTER_S },
    );
  }
  // Prime the session with one run on zeros: ORT's first run allocates its buffers and is several
  // times slower than later ones. Done here, it happens during the parallel warm-up instead of on
  // the request's sequential path, and the wasm heap reported afterwards is the working peak.
  const input = spec.inputs[0];
  try {
    await session.run(new Float32Array(input.shape.reduce((a, b) => a * b, 1)), input, spec.outputs[0]);
  } catch (e) {
    await session.release().catch(() => undefined);
    throw e instanceof AppError
      ? e
      : new AppError("model-unavailable", 503, `Stage ${stage} failed its first run: ${String(e)}`, {
          retryAfter: RETRY_AFTER_S,
        });
  }
  heap();
  const origin = graph.origin === "r2" || weights?.origin === "r2" ? "r2" : "cache";
  return { session, spec, origin, loadMs: Date.now() - t0, reported: false };
}

/**
 * Pins the session of (version, stage) for the duration of `fn`, loading it if needed. A load is
 * shared by every request that wants it, so it is tied to the starting request with `keepAlive`
 * (waitUntil): were that request cancelled mid-load, its I/O would never settle in workerd and
 * every later request would hang on it.
 */
async function withSession<T>(
  env: StageEnv,
  version: string,
  stage: number,
  keepAlive: KeepAlive,
  fn: (l: Loaded, freshLoad: boolean) => Promise<T>,
): Promise<T> {
  const key = `${version}/${stage}`;
  for (;;) {
    const r = resident;
    if (r && r.key === key) {
      r.busy++;
      try {
        const loaded = await r.promise;
        const fresh = !loaded.reported;
        loaded.reported = true;
        return await fn(loaded, fresh);
      } catch (e) {
        // A failed load is forgotten so that the next request tries again (no poisoned state).
        if (resident === r && r.failed) resident = null;
        throw e;
      } finally {
        r.busy--;
        if (r.busy === 0) for (const wake of r.waiters.splice(0)) wake();
      }
    }
    if (r && r.busy > 0) {
      await new Promise<void>((wake) => r.waiters.push(wake));
      continue;
    }
    if (r) {
      resident = null;
      const old = await r.promise.catch(() => null);
      await old?.session.release().catch(() => undefined);
    }
    const next: Resident = {
      key,
      version,
      stage,
      promise: load(env, version, stage),
      loaded: false,
      failed: false,
      busy: 0,
      waiters: [],
    };
    next.promise.then(
      () => {
        next.loaded = true;
      },
      () => {
        next.failed = true;
      },
    );
    keepAlive(next.promise.catch(() => undefined));
    resident = next;
  }
}

function target(req: Request): { version: string; stage: number } {
  const version = req.headers.get(HEADER_VERSION);
  const stageText = req.headers.get(HEADER_STAGE) ?? "";
  const stage = Number(stageText);
  if (!isVersion(version) || !/^\d+$/.test(stageText) || stage < 0)
    throw new AppError(
      "bad-stage-request",
      400,
      `A stage call needs ${HEADER_VERSION} (64 hex digits) and ${HEADER_STAGE} (a stage number).`,
    );
  return { version, stage };
}

/** Handles one stage request; exported for tests that call the stage in-process. */
export async function handleStage(req: Request, env: StageEnv, ctx?: ExecutionContext): Promise<Response> {
  const keepAlive: KeepAlive = (p) => ctx?.waitUntil(p);
  try {
    const url = new URL(req.url);
    if (url.pathname === "/status" && req.method === "GET") {
      const r = resident;
      const warm = r?.loaded ?? false;
      const status: StageStatus = {
        stage: r?.stage ?? null,
        version: r?.version ?? null,
        warm,
        wasmHeapBytes: heap(),
        jsHeapBytes: null,
        peakWasmHeapBytes: peakHeap,
      };
      return Response.json(status);
    }
    if (url.pathname === "/warm" && req.method === "POST") {
      const { version, stage } = target(req);
      const report = await withSession(env, version, stage, keepAlive, async (l, fresh) => {
        const r: WarmReport = {
          stage,
          version,
          loadMs: fresh ? l.loadMs : 0,
          origin: fresh ? l.origin : "memory",
          wasmHeapBytes: heap(),
        };
        return r;
      });
      return Response.json(report);
    }
    if (url.pathname === "/run" && req.method === "POST") {
      const { version, stage } = target(req);
      const body = await req.arrayBuffer();
      return await withSession(env, version, stage, keepAlive, async (l, fresh) => {
        const spec = l.spec.inputs[0];
        const want = spec.shape.reduce((a, b) => a * b, 1);
        if (body.byteLength !== want * 4)
          throw new AppError(
            "bad-stage-request",
            400,
            `Stage ${stage} expects ${want} float32 values (${spec.shape.join("x")}), got ${body.byteLength} bytes.`,
          );
        const t0 = Date.now();
        const out = await l.session.run(new Float32Array(body), spec, l.spec.outputs[0]);
        const ms = Date.now() - t0;
        heap();
        const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
        return new Response(bytes.slice(), {
          headers: {
            "content-type": "application/octet-stream",
            [HEADER_STAGE_MS]: String(ms),
            [HEADER_LOAD_MS]: String(fresh ? l.loadMs : 0),
            [HEADER_ORIGIN]: fresh ? l.origin : "memory",
          },
        });
      });
    }
    throw new AppError("not-found", 404, `A stage Worker serves POST /run, POST /warm and GET /status.`);
  } catch (e) {
    const err = toAppError(e);
    if (err.status >= 500 && err.code === "internal-error") console.error("stage error", e);
    return problemResponse(err);
  }
}

export default {
  fetch(req: Request, env: StageEnv, ctx: ExecutionContext): Promise<Response> {
    return handleStage(req, env, ctx);
  },
} satisfies ExportedHandler<StageEnv>;
