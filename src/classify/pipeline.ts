/**
 * @module
 * The caller's side of the stage pipeline (gateway, or any Worker that binds STAGE_i): warming
 * every stage at once when a version is new to this isolate, then running the stages in order over
 * their service bindings, all pinned to one model version. {@link StagePipeline} is built once per
 * classification for one manifest.
 */

import { MAX_STAGES, type StageBindings, stageBinding } from "../edge/env.ts";
import type { Deadline } from "../edge/limits.ts";
import { problemFromResponse } from "../edge/problem.ts";
import {
  HEADER_LOAD_MS,
  HEADER_PRIME,
  HEADER_STAGE,
  HEADER_STAGE_MS,
  HEADER_VERSION,
  STAGE_ORIGIN,
  type StageStatus,
  type WarmReport,
} from "../edge/stage-protocol.ts";
import type { KeepAlive } from "../shards/store.ts";
import { AppError, RETRY_AFTER_REDEPLOY_S, RETRY_AFTER_S } from "../shared/errors.ts";
import { type Manifest, numel } from "../shared/manifest.ts";
import { nextTask, serialize } from "./serialize.ts";

/** Per-stage timings of one pipeline run (ms, measured at the gateway, and as the stage reported). */
export interface StageTiming {
  stage: number;
  /** Round trip seen by the gateway. */
  ms: number;
  /** session.run time reported by the stage. */
  runMs: number;
  /** Shard loading included in this call (0 when warm). */
  loadMs: number;
}

function bindings(env: StageBindings, manifest: Manifest): Fetcher[] {
  if (manifest.stages.length > MAX_STAGES)
    throw new AppError(
      "model-unavailable",
      503,
      `The active model has ${manifest.stages.length} stages; the gateway binds at most ${MAX_STAGES}.`,
      { retryAfter: RETRY_AFTER_REDEPLOY_S },
    );
  return manifest.stages.map((s) => {
    const b = stageBinding(env, s.index);
    if (!b)
      throw new AppError(
        "model-unavailable",
        503,
        `The active model needs ${manifest.stages.length} stage Workers but STAGE_${s.index} is not bound. Redeploy with \`npm run deploy\` (or restart \`npm start\`).`,
        { retryAfter: RETRY_AFTER_REDEPLOY_S },
      );
    return b;
  });
}

function stageRequest(
  path: string,
  version: string,
  stage: number,
  body?: Uint8Array,
  extra: Record<string, string> = {},
): Request {
  return new Request(`${STAGE_ORIGIN}${path}`, {
    method: "POST",
    headers: {
      [HEADER_VERSION]: version,
      [HEADER_STAGE]: String(stage),
      "content-type": "application/octet-stream",
      ...extra,
    },
    body: body ?? null,
  });
}

async function call(binding: Fetcher, req: Request, stage: number): Promise<Response> {
  let res: Response;
  try {
    res = await binding.fetch(req);
  } catch (e) {
    throw new AppError(
      "model-unavailable",
      503,
      `Stage ${stage} is unreachable (${String(e)}). Retry shortly.`,
      { retryAfter: RETRY_AFTER_S },
    );
  }
  if (!res.ok) throw await problemFromResponse(res, `Stage ${stage} failed with HTTP ${res.status}.`);
  return res;
}

const warmed = new Map<string, { promise: Promise<WarmReport[]>; done: boolean }>();

/**
 * Warms every stage of `manifest` in parallel, once per version per gateway isolate (concurrent
 * callers share the same attempt; a failed attempt is forgotten so that the next request retries).
 * The attempt settles only when every stage has answered, so no stage is left loading on behalf of
 * a request that already ended; `keepAlive` (the request's waitUntil) holds it open until then.
 *
 * @returns each stage's report, or null when this isolate had already warmed the version.
 */
function warmAll(
  env: StageBindings,
  manifest: Manifest,
  deadline?: Deadline,
  keepAlive?: KeepAlive,
  prime = true,
): Promise<WarmReport[] | null> {
  const cached = warmed.get(manifest.version);
  if (cached?.done) return Promise.resolve(null);
  let p = cached?.promise;
  if (!p) {
    const bs = bindings(env, manifest);
    p = Promise.allSettled(
      bs.map(async (b, i) => {
        const res = await call(
          b,
          stageRequest("/warm", manifest.version, i, undefined, { [HEADER_PRIME]: prime ? "1" : "0" }),
          i,
        );
        return (await res.json()) as WarmReport;
      }),
    ).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
      return results.map((r) => (r as PromiseFulfilledResult<WarmReport>).value);
    });
    const entry = { promise: p, done: false };
    warmed.set(manifest.version, entry);
    p.then(
      () => {
        entry.done = true;
      },
      () => warmed.delete(manifest.version),
    );
    keepAlive?.(p.catch(() => undefined));
  }
  return deadline ? deadline.race(p) : p;
}

/**
 * One pipeline run at a time per isolate, in arrival order. A stage Worker called over a service
 * binding runs on the caller's thread (on Cloudflare by default; locally every Worker shares
 * workerd's one thread), so two runs never compute at the same time anyway. Letting concurrent
 * runs interleave stage by stage only made each request wait for all the others (8 concurrent
 * requests all finished together, each after ~8 runs' time), and kept workerd's thread from
 * polling its sockets for seconds (see {@link nextTask}). In FIFO order the k-th of n concurrent
 * requests is answered after k runs; throughput is the same.
 */
const oneRunAtATime = serialize();

/** Runs `pixels` through every stage in order; returns the logits and per-stage timings. */
function runStages(
  env: StageBindings,
  manifest: Manifest,
  pixels: Float32Array,
  deadline: Deadline,
): Promise<{ logits: Float32Array; timings: StageTiming[]; queueMs: number }> {
  const queued = Date.now();
  return deadline.race(
    oneRunAtATime(async () => {
      await nextTask();
      const queueMs = Date.now() - queued;
      // A run that waited past its deadline ends at its first deadline.check, calling no stage.
      return { ...(await runStagesNow(env, manifest, pixels, deadline)), queueMs };
    }),
  );
}

async function runStagesNow(
  env: StageBindings,
  manifest: Manifest,
  pixels: Float32Array,
  deadline: Deadline,
): Promise<{ logits: Float32Array; timings: StageTiming[] }> {
  const bs = bindings(env, manifest);
  let x = new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.byteLength);
  const timings: StageTiming[] = [];
  for (let i = 0; i < bs.length; i++) {
    deadline.check();
    const t0 = Date.now();
    const res = await deadline.race(call(bs[i], stageRequest("/run", manifest.version, i, x), i));
    x = new Uint8Array(await deadline.race(res.arrayBuffer()));
    timings.push({
      stage: i,
      ms: Date.now() - t0,
      runMs: Number(res.headers.get(HEADER_STAGE_MS) ?? 0),
      loadMs: Number(res.headers.get(HEADER_LOAD_MS) ?? 0),
    });
  }
  const expected = numel(manifest.stages[manifest.stages.length - 1].outputs[0].shape);
  if (x.byteLength !== expected * 4)
    throw new AppError(
      "model-unavailable",
      503,
      `The last stage returned ${x.byteLength} bytes, expected ${expected * 4}.`,
      { retryAfter: RETRY_AFTER_S },
    );
  return { logits: new Float32Array(x.buffer, x.byteOffset, expected), timings };
}

export interface StageReport extends Partial<StageStatus> {
  index: number;
  binding: string;
  reachable: boolean;
  error?: string;
  estimatedPeakBytes: number;
  budgetBytes: number;
}

/** GET /status of every stage of `manifest` (never throws; unreachable stages are reported). */
async function stageStatuses(env: StageBindings, manifest: Manifest): Promise<StageReport[]> {
  return Promise.all(
    manifest.stages.map(async (s) => {
      const base = {
        index: s.index,
        binding: `STAGE_${s.index}`,
        estimatedPeakBytes: s.estimatedPeakBytes,
        budgetBytes: manifest.budget.stageBudgetBytes,
      };
      const b = stageBinding(env, s.index);
      if (!b) return { ...base, reachable: false, error: "not bound" };
      try {
        const res = await b.fetch(new Request(`${STAGE_ORIGIN}/status`));
        if (!res.ok) return { ...base, reachable: false, error: `HTTP ${res.status}` };
        const st = (await res.json()) as StageStatus;
        return { ...base, ...st, reachable: true };
      } catch (e) {
        return { ...base, reachable: false, error: String(e) };
      }
    }),
  );
}

/**
 * The stage pipeline of one manifest, over one env's STAGE_i bindings. Build one per
 * classification (it is cheap; the warm state lives per isolate): every call it makes carries the
 * manifest's version, so a pointer swap never mixes two versions inside one classification.
 */
export class StagePipeline {
  constructor(
    readonly env: StageBindings,
    readonly manifest: Manifest,
    readonly keepAlive?: KeepAlive,
  ) {}

  /**
   * Warms every stage at once (once per version per isolate; see {@link warmAll}). With
   * `prime: false` (a classification's cold start) the warm-up asks the stages to skip the run on
   * zeros, which they do only under STAGE_PRIME=on-request; concurrent callers share the first
   * call's choice.
   * @returns each stage's report, or null when this isolate had already warmed the version.
   */
  warm(deadline?: Deadline, opts: { prime?: boolean } = {}): Promise<WarmReport[] | null> {
    return warmAll(this.env, this.manifest, deadline, this.keepAlive, opts.prime ?? true);
  }

  /**
   * Runs NCHW pixel_values through every stage in order (after the runs this isolate started
   * before it, see {@link oneRunAtATime}); the logits, per-stage timings and the time it waited.
   */
  run(
    pixels: Float32Array,
    deadline: Deadline,
  ): Promise<{ logits: Float32Array; timings: StageTiming[]; queueMs: number }> {
    return runStages(this.env, this.manifest, pixels, deadline);
  }

  /** GET /status of every stage (never throws; unreachable stages are reported). */
  status(): Promise<StageReport[]> {
    return stageStatuses(this.env, this.manifest);
  }

  /**
   * Whether a classification can run now, found cheaply: every stage's status, and only when one
   * is unreachable or does not hold this version, a warm-up of the stages (what the next classify
   * would do anyway; a stage that already holds its session answers from memory). Throws what a
   * classify would meet: 503 `model-unavailable` (with retryAfter) for an unreachable stage or a
   * shard that cannot be loaded, 504 past `deadline`.
   */
  async ready(deadline?: Deadline): Promise<StageReport[]> {
    const before = await this.status();
    const down = before.filter((s) => !s.reachable);
    if (down.length > 0)
      throw new AppError(
        "model-unavailable",
        503,
        `Stage(s) ${down.map((s) => s.index).join(", ")} are not reachable.`,
        { retryAfter: RETRY_AFTER_S, stages: before },
      );
    if (before.every((s) => s.warm && s.version === this.manifest.version)) return before;
    // A stage lost or never loaded its session: warm again even if this isolate warmed it before.
    const cached = warmed.get(this.manifest.version);
    if (cached?.done) warmed.delete(this.manifest.version);
    await this.warm(deadline);
    return this.status();
  }
}
