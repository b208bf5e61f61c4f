/**
 * @module
 * The gateway's HTTP API (Hono). Each route is parsing + one call into the classification core
 * (src/classify, with the injected {@link PixelDecoder}) + response shaping. It never holds model
 * weights. Every error leaves as application/problem+json.
 *
 * Routes: POST /v1/classify, GET /v1/labels, GET /v1/model, GET /v1/status, GET /healthz,
 * GET /openapi.json, GET / (a drop-an-image page), GET /favicon.ico, and the webhook jobs of
 * ./jobs.ts (POST /v1/jobs, GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}/redeliver). A known
 * path asked with another method answers 405 with `Allow` (src/edge/methods.ts, derived from the routes).
 */
import { type Context, Hono } from "hono";
import { authIsOn } from "../../accounts/auth.ts";
import { accountsConfigOf } from "../../accounts/config.ts";
import {
  type Classifier,
  createClassifier,
  type ModelView,
  modelHeaders,
  type PixelDecoder,
} from "../../classify/index.ts";
import { configOf } from "../../edge/config.ts";
import type { GatewayEnv } from "../../edge/env.ts";
import { Deadline } from "../../edge/limits.ts";
import { routeMethods } from "../../edge/methods.ts";
import { problemResponse, toAppError } from "../../edge/problem.ts";
import { AppError } from "../../shared/errors.ts";
import { modelShape } from "../../shared/manifest.ts";
import { imageRoutes } from "../../tagging/api.ts";
import { ISOLATE_LIMIT_BYTES } from "../../topology.ts";
import { addUsage, chargeImages, registerAccountsMiddleware, registerAccountsRoutes } from "./accounts.ts";
import { accountsPaths } from "./accounts-openapi.ts";
import { FAVICON_SVG, homePage } from "./home-page.ts";
import { imagesOpenApiPaths } from "./images-openapi.ts";
import { readClassifyInput, resolveExifTranspose, resolveTopK, withCurlHint } from "./input.ts";
import { type JobsAppEnv, registerJobRoutes } from "./jobs.ts";
import { jobsPaths, jobsWebhooks } from "./jobs-openapi.ts";
import { openApiDocument } from "./openapi.ts";

export type { PixelDecoder, Prediction } from "../../classify/index.ts";

export interface AppOptions {
  decode: PixelDecoder;
}

type AppEnv = JobsAppEnv;

const FAVICON_HEADERS = { "content-type": "image/svg+xml", "cache-control": "public, max-age=86400" };

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

function classifierOf(c: Context<AppEnv>, options: AppOptions): Classifier {
  return createClassifier(c.env, { decode: options.decode, keepAlive: keepAliveOf(c) });
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
    if (e.code === "internal-error")
      console.error(
        JSON.stringify({
          event: "unhandled-error",
          request_id: c.get("requestId") ?? null,
          method: c.req.method,
          path: c.req.path,
          error: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
        }),
      );
    c.set("problem", e.code);
    return problemResponse(e);
  });
  // 405 + Allow (OPTIONS: 204 + Allow) for a known path and another method, from the app's routes.
  const methodsOf = routeMethods(app);
  app.notFound((c) => {
    const allow = methodsOf(c.req.path);
    if (allow.length === 0)
      return problemResponse(
        new AppError(
          "not-found",
          404,
          `No route for ${c.req.method} ${c.req.path}. See /openapi.json for the API.`,
        ),
      );
    if (c.req.method === "OPTIONS")
      return new Response(null, { status: 204, headers: { allow: allow.join(", ") } });
    return problemResponse(
      new AppError(
        "method-not-allowed",
        405,
        `${c.req.method} is not allowed on ${c.req.path}; it answers ${allow.join(", ")}. See /openapi.json for the API.`,
        { allow },
      ),
      { allow: allow.join(", ") },
    );
  });

  // Request id, log line, usage; then /v1 auth, scopes and the per-key request quota.
  registerAccountsMiddleware(app);

  // CDN image tagging (issue #10): the images themselves are public (no API key), the tagging
  // Worker serves them; /v1/images (search, lookup, backfill) sits behind the /v1 auth above.
  app.on(["GET", "HEAD"], "/images/*", async (c) => {
    if (!c.env.TAGGING)
      throw new AppError(
        "not-found",
        404,
        "Image tagging is not deployed with this gateway (no TAGGING binding).",
      );
    return c.env.TAGGING.fetch(c.req.raw);
  });
  app.route("/", imageRoutes<GatewayEnv>());

  app.get("/", async (c) =>
    c.html(
      homePage({
        needsKey: await authIsOn(configOf(c.env).apiKey, c.env.DB, accountsConfigOf(c.env), Date.now()),
        imagesBucket: c.env.IMAGES_BUCKET,
      }),
    ),
  );
  app.get("/favicon.ico", () => new Response(FAVICON_SVG, { headers: FAVICON_HEADERS }));
  // Relative `servers` ("/"): the Host header is never reflected into the document.
  app.get("/openapi.json", (c) =>
    c.json(openApiDocument({ ...jobsPaths(), ...imagesOpenApiPaths, ...accountsPaths }, jobsWebhooks())),
  );

  // 200 only when a classification can succeed now: the pointer and manifest load, every stage is
  // reachable and holds the active version (a cold or evicted stage is warmed here, as the next
  // classify would; a shard that cannot be loaded makes it a 503 with Retry-After).
  app.get("/healthz", async (c) => {
    const classifier = classifierOf(c, options);
    const model = await classifier.model();
    const stages = await classifier.ready(model, new Deadline(configOf(c.env).limits.deadlineMs));
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
    const model = await classifierOf(c, options).model();
    return c.json(model.labels, 200, modelHeaders(model));
  });

  app.get("/v1/model", async (c) => {
    const model = await classifierOf(c, options).model();
    return c.json(modelSummary(model), 200, modelHeaders(model));
  });

  app.get("/v1/status", async (c) => {
    const classifier = classifierOf(c, options);
    const model = await classifier.model();
    const stages = await classifier.status(model);
    return c.json(
      {
        version: model.version,
        stageBudgetBytes: model.manifest.budget.stageBudgetBytes,
        isolateLimitBytes: ISOLATE_LIMIT_BYTES,
        stages,
        gateway: { jsHeapBytes: null, note: "workerd does not expose JS heap size to scripts" },
      },
      200,
      modelHeaders(model),
    );
  });

  app.post("/v1/classify", async (c) => {
    const started = Date.now();
    const limits = configOf(c.env).limits;
    const deadline = Deadline.forRequest(c.req.raw, limits);
    const queryTopK = c.req.query("top_k");
    const input = await deadline.race(
      readClassifyInput(c.req.raw, {
        maxBodyBytes: limits.maxBodyBytes,
        maxBatch: limits.maxBatch,
        urlFetch: { policy: { allowLoopback: limits.allowLoopbackFetch } },
      }),
    );
    // The images count against the key's image quota before any model work.
    await chargeImages(c, input.images.length);
    const classifier = classifierOf(c, options);
    // One version for the whole request: top_k is checked against its labels, and it is pinned below.
    const model = await deadline.race(classifier.model());
    const topK = resolveTopK(queryTopK, input.topK, model.labels.length);
    const exifTranspose = resolveExifTranspose(c.req.query("exif_transpose"), input.exifTranspose);
    const out = await classifier
      .classify(input.images, { topK, exifTranspose, deadline, model })
      .catch((e: unknown) => {
        // A body mangled by `curl -d @file` fails to decode: say so (the first such image decides).
        throw input.images.reduce((err, image) => (err === e ? withCurlHint(e, image) : err), e);
      });
    const t = out.timings;
    addUsage(c, { images: input.images.length, model_ms: t.runMs.reduce((n, x) => n + x, 0) });
    const timing: [string, number][] = [
      ["decode", t.decodeMs],
      ["preprocess", t.preprocessMs],
      ["queue", t.queueMs],
    ];
    t.stageMs.forEach((ms, i) => {
      timing.push([`stage-${i}`, ms]);
    });
    t.runMs.forEach((ms, i) => {
      timing.push([`run-${i}`, ms]);
    });
    timing.push(["total", Date.now() - started]);
    const parts = [serverTiming(timing)];
    if (t.warm !== undefined) parts.push(`warm;dur=${(t.warmMs ?? 0).toFixed(1)};desc="${t.warm}"`);
    return c.json(input.batch ? out.predictions : out.predictions[0], 200, {
      ...modelHeaders(out.model),
      "server-timing": parts.join(", "),
    });
  });

  registerJobRoutes(app, { classifier: (c) => classifierOf(c, options) });
  registerAccountsRoutes(app);

  return app;
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
    config: modelShape(m.model),
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
    fidelity: m.fidelity ?? null,
    createdAt: m.createdAt,
    converter: m.converter,
  };
}
