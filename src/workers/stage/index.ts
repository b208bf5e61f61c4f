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
 * Lifecycle (resident.ts): a request for another version (or stage) waits until runs on the
 * resident session have finished, releases it, then loads the requested one. Wasm memory never
 * shrinks, so two sessions are never resident at once: the isolate's peak stays one stage's peak.
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
import { ResidentSession } from "./resident.ts";

interface Loaded {
  session: StageSession;
  spec: StageSpec;
  origin: "cache" | "r2";
  loadMs: number;
  release(): Promise<void>;
}

let store: ShardStore | null = null;
const sessions = new ResidentSession<Loaded>();
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
  return { session, spec, origin, loadMs: Date.now() - t0, release: () => session.release() };
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
      const r = sessions.view();
      const status: StageStatus = {
        stage: r.stage,
        version: r.version,
        warm: r.loaded,
        wasmHeapBytes: heap(),
        jsHeapBytes: null,
        peakWasmHeapBytes: peakHeap,
      };
      return Response.json(status);
    }
    if (url.pathname === "/warm" && req.method === "POST") {
      const { version, stage } = target(req);
      const report = await sessions.with(
        version,
        stage,
        () => load(env, version, stage),
        keepAlive,
        async (l, fresh) => {
          const r: WarmReport = {
            stage,
            version,
            loadMs: fresh ? l.loadMs : 0,
            origin: fresh ? l.origin : "memory",
            wasmHeapBytes: heap(),
          };
          return r;
        },
      );
      return Response.json(report);
    }
    if (url.pathname === "/run" && req.method === "POST") {
      const { version, stage } = target(req);
      const body = await req.arrayBuffer();
      return await sessions.with(
        version,
        stage,
        () => load(env, version, stage),
        keepAlive,
        async (l, fresh) => {
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
        },
      );
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
