/**
 * @module
 * The gateway's HTTP API (Hono). It validates input, decodes and preprocesses images through an
 * injected {@link PixelDecoder}, runs the stage pipeline over service bindings, and answers with
 * top-k labels. It never holds model weights. Every error leaves as application/problem+json.
 *
 * Routes: POST /v1/classify, GET /v1/labels, GET /v1/model, GET /v1/status, GET /healthz,
 * GET /openapi.json, GET / (a drop-an-image page).
 */
import { type Context, Hono } from "hono";
import { topK } from "../inference/pipeline.ts";
import { AppError } from "../shared/errors.ts";
import type { PreprocessSpec } from "../shared/manifest.ts";
import { checkBearer } from "./auth.ts";
import type { GatewayEnv } from "./env.ts";
import { homePage } from "./home-page.ts";
import { readClassifyInput, resolveExifTranspose, resolveTopK } from "./input.ts";
import { Deadline, limitsFrom } from "./limits.ts";
import { activeModel, type ModelView, modelHeaders } from "./model-state.ts";
import { openApiDocument } from "./openapi.ts";
import { problemResponse, toAppError } from "./problem.ts";
import { runPipeline, type StageTiming, stageStatuses, warmAll } from "./stage-client.ts";

/** Decodes image bytes into NCHW float32 pixel_values for the model's preprocessing. */
export type PixelDecoder = (
  bytes: Uint8Array,
  spec: PreprocessSpec,
  opts: { exifTranspose: boolean },
) => Promise<{ pixels: Float32Array; width: number; height: number; format: string }>;

export interface AppOptions {
  decode: PixelDecoder;
}

/** One label and its softmax score, the shape of the Hugging Face Inference API. */
export interface Prediction {
  label: string;
  score: number;
}

type AppEnv = { Bindings: GatewayEnv };

/** The request's waitUntil, or a no-op where there is no execution context (app.request in tests). */
function keepAliveOf(c: Context<AppEnv>): (p: Promise<unknown>) => void {
  return (p) => {
    try {
      c.executionCtx.waitUntil(p);
    } catch {
      // no execution context
    }
  };
}

function serverTiming(parts: [string, number][]): string {
  return parts.map(([name, ms]) => `${name};dur=${ms.toFixed(1)}`).join(", ");
}

/**
 * Builds the gateway app.
 *
 * @example
 * const app = createApp({ decode: (bytes, spec) => imageToPixelValues(bytes, spec) });
 * export default app;
 */
export function createApp(options: AppOptions): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.onError((err, c) => {
    const e = toAppError(err);
    if (e.code === "internal-error") console.error("unhandled error", c.req.method, c.req.path, err);
    return problemResponse(e);
  });
  app.notFound((c) =>
    problemResponse(
      new AppError(
        "not-found",
        404,
        `No route for ${c.req.method} ${c.req.path}. See /openapi.json for the API.`,
      ),
    ),
  );

  app.use("/v1/*", async (c, next) => {
    await checkBearer(c.req.header("authorization") ?? null, c.env.API_KEY);
    await next();
  });

  app.get("/", (c) => c.html(homePage(Boolean(c.env.API_KEY))));
  app.get("/openapi.json", (c) => c.json(openApiDocument(new URL(c.req.url).origin)));

  app.get("/healthz", async (c) => {
    const model = await activeModel(c.env, keepAliveOf(c));
    const stages = await stageStatuses(c.env, model.manifest);
    const down = stages.filter((s) => !s.reachable);
    if (down.length > 0)
      throw new AppError(
        "model-unavailable",
        503,
        `Stage(s) ${down.map((s) => s.index).join(", ")} are not reachable.`,
        { retryAfter: 5, stages },
      );
    return c.json(
      {
        status: "ok",
        version: model.version,
        stages: stages.map((s) => ({ index: s.index, warm: s.warm ?? false })),
      },
      200,
      modelHeaders(model),
    );
  });

  app.get("/v1/labels", async (c) => {
    const model = await activeModel(c.env, keepAliveOf(c));
    return c.json(model.labels, 200, modelHeaders(model));
  });

  app.get("/v1/model", async (c) => {
    const model = await activeModel(c.env, keepAliveOf(c));
    return c.json(modelSummary(model), 200, modelHeaders(model));
  });

  app.get("/v1/status", async (c) => {
    const model = await activeModel(c.env, keepAliveOf(c));
    const stages = await stageStatuses(c.env, model.manifest);
    return c.json(
      {
        version: model.version,
        stageBudgetBytes: model.manifest.budget.stageBudgetBytes,
        isolateLimitBytes: 128 * 1024 * 1024,
        stages,
        gateway: { jsHeapBytes: null, note: "workerd does not expose JS heap size to scripts" },
      },
      200,
      modelHeaders(model),
    );
  });

  app.post("/v1/classify", async (c) => {
    const started = Date.now();
    const limits = limitsFrom(c.env);
    const deadline = Deadline.forRequest(c.req.raw, limits);
    const queryTopK = c.req.query("top_k");
    const input = await deadline.race(
      readClassifyInput(c.req.raw, {
        maxBodyBytes: limits.maxBodyBytes,
        maxBatch: limits.maxBatch,
        urlFetch: { policy: { allowLoopback: limits.allowLoopbackFetch } },
      }),
    );
    // One version for the whole request: every stage call below carries it.
    const keepAlive = keepAliveOf(c);
    const model = await deadline.race(activeModel(c.env, keepAlive));
    const k = resolveTopK(queryTopK, input.topK, model.labels.length);
    const exifTranspose = resolveExifTranspose(c.req.query("exif_transpose"), input.exifTranspose);
    // Cold isolates: warm every stage at once while the first image decodes.
    const warmStart = Date.now();
    let warmMs = 0;
    const warm = warmAll(c.env, model.manifest, deadline, keepAlive).then((reports) => {
      warmMs = Date.now() - warmStart;
      return reports;
    });
    warm.catch(() => undefined);
    let decodeMs = 0;
    const stageMs = new Map<number, number>();
    const timingExtra: string[] = [];
    const results: Prediction[][] = [];
    for (const image of input.images) {
      const t0 = Date.now();
      const { pixels } = await deadline.race(
        options.decode(image, model.manifest.preprocess, { exifTranspose }),
      );
      decodeMs += Date.now() - t0;
      const reports = await warm;
      // Loads this request caused (or waited on), with where each stage's shard came from.
      if (reports?.some((r) => r.origin !== "memory") && !timingExtra.length)
        timingExtra.push(
          `warm;dur=${warmMs.toFixed(1)};desc="${reports.map((r) => `${r.stage}:${r.origin}:${r.loadMs}ms`).join(" ")}"`,
        );
      const { logits, timings } = await runPipeline(c.env, model.manifest, pixels, deadline);
      addTimings(stageMs, timings);
      results.push(topK(logits, model.labels, k).map((p) => ({ label: p.label, score: p.score })));
    }
    const timing: [string, number][] = [["decode", decodeMs]];
    for (const [i, ms] of [...stageMs.entries()].sort((a, b) => a[0] - b[0])) timing.push([`stage-${i}`, ms]);
    timing.push(["total", Date.now() - started]);
    return c.json(input.batch ? results : results[0], 200, {
      ...modelHeaders(model),
      "server-timing": [serverTiming(timing), ...timingExtra].join(", "),
    });
  });

  return app;
}

function addTimings(acc: Map<number, number>, timings: StageTiming[]): void {
  for (const t of timings) acc.set(t.stage, (acc.get(t.stage) ?? 0) + t.ms);
}

/** GET /v1/model: the manifest without file names. */
export function modelSummary(model: ModelView) {
  const m = model.manifest;
  return {
    id: m.model.id,
    revision: m.model.revision,
    synthetic: m.model.synthetic,
    version: model.version,
    publishedAt: model.publishedAt,
    architecture: m.model.architecture,
    precision: m.precision,
    quantization: m.quantization,
    config: {
      hidden_size: m.model.hidden_size,
      num_hidden_layers: m.model.num_hidden_layers,
      num_attention_heads: m.model.num_attention_heads,
      intermediate_size: m.model.intermediate_size,
      image_size: m.model.image_size,
      patch_size: m.model.patch_size,
    },
    num_labels: m.labels.count,
    preprocess: m.preprocess,
    stages: m.stages.map((s) => ({
      index: s.index,
      layers: s.layers,
      embeddings: s.embeddings,
      head: s.head,
      weightBytes: s.weightBytes,
      estimatedPeakBytes: s.estimatedPeakBytes,
      input: s.inputs[0].shape,
      output: s.outputs[0].shape,
    })),
    budget: m.budget,
    createdAt: m.createdAt,
    converter: m.converter,
  };
}
