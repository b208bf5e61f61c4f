/**
 * @module
 * Entry of the stage Worker: one codebase deployed once per pipeline stage (beit-edge-stage-0, -1,
 * ..., see src/topology.ts).
 * Each isolate holds at most one InferenceSession, for the (version, stage) the gateway asks for;
 * the shard bytes come from {@link ShardStore} (verified, Cache API, R2) and are dropped once the
 * session owns them.
 *
 * Loading = manifest -> shard bytes (verified) -> session -> one priming run on zeros, all done by
 * the one stage loader (src/inference/open-stage.ts) over the R2 shard store.
 *
 * Priming: an isolate's first run is 3-4x a warm one (V8 compiles and tiers up ORT's wasm code in
 * each isolate; a second session in a warm isolate runs at warm speed at once, see bench/README.md).
 * With `STAGE_PRIME=always` (default) every load pays it on zeros right after the session exists,
 * so the tier-up starts while the other stages are still loading. `STAGE_PRIME=on-request` primes
 * only for a `/warm` that asks (`x-stage-prime`, default on: `/healthz`); the gateway's classify
 * path asks not to and lets its own first run through each stage do it, and a load started by
 * `/run` does not prime. That saves one run per stage but starts each stage's tier-up only when
 * the request reaches it: measured slower overall here (bench/README.md), kept for comparisons.
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
  HEADER_PRIME,
  HEADER_STAGE,
  HEADER_STAGE_MS,
  HEADER_VERSION,
  type LoadPhases,
  type StageStatus,
  type WarmReport,
} from "../../edge/stage-protocol.ts";
import { type OpenedStage, openStage } from "../../inference/open-stage.ts";
import { initOrt, wasmHeapBytes } from "../../inference/ort.ts";
import { isVersion } from "../../shards/layout.ts";
import { type KeepAlive, ShardStore, type StoreOrigin } from "../../shards/store.ts";
import { AppError } from "../../shared/errors.ts";
import { numel } from "../../shared/manifest.ts";
import { STAGE_VARS } from "../../topology.ts";
import { ResidentSession } from "./resident.ts";

/** A resident stage; `loadMs` also counts ORT's set-up and the manifest read, `phases` splits it. */
type Loaded = OpenedStage<StoreOrigin> & { phases: LoadPhases };

let store: ShardStore | null = null;
const sessions = new ResidentSession<Loaded>();
let peakHeap = 0;
let ortReady: Promise<void> | null = null;
/** Breakdown of the most recent successful load (the resident session's when it is warm). */
let lastLoad: LoadPhases | null = null;

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

/** Whether a load asked for with `wanted` primes, under the Worker's STAGE_PRIME. */
function primes(env: StageEnv, wanted: boolean): boolean {
  const mode = env.STAGE_PRIME ?? STAGE_VARS.STAGE_PRIME.default;
  if (mode === "always") return true;
  if (mode === "on-request") return wanted;
  throw new AppError(
    "bad-config",
    500,
    `STAGE_PRIME must be "on-request" or "always", not ${JSON.stringify(mode.slice(0, 40))}; fix the stage Worker's vars.`,
  );
}

async function load(env: StageEnv, version: string, stage: number, prime: boolean): Promise<Loaded> {
  const t0 = Date.now();
  await ensureOrt();
  const source = getStore(env);
  const manifest = await source.manifest(version);
  const tManifest = Date.now();
  const opened = await openStage(source, manifest, stage, { prime });
  heap();
  const end = Date.now();
  const phases: LoadPhases = {
    origin: opened.origin,
    manifestMs: tManifest - t0,
    ...opened.timings,
    primed: prime,
    totalMs: end - t0,
  };
  lastLoad = phases;
  return { ...opened, loadMs: end - t0, phases };
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
        lastLoad: r.loaded ? lastLoad : null,
      };
      return Response.json(status);
    }
    if (url.pathname === "/warm" && req.method === "POST") {
      const { version, stage } = target(req);
      const prime = primes(env, req.headers.get(HEADER_PRIME) !== "0");
      const report = await sessions.with(
        version,
        stage,
        () => load(env, version, stage, prime),
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
      const prime = primes(env, false);
      return await sessions.with(
        version,
        stage,
        () => load(env, version, stage, prime),
        keepAlive,
        async (l, fresh) => {
          const spec = l.spec.inputs[0];
          const want = numel(spec.shape);
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
          // `out` is this request's own array (see createStageSession), so its bytes go out uncopied.
          const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
          return new Response(bytes, {
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
