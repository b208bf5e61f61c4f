/**
 * @module
 * The OpenAPI 3.1 document served at /openapi.json.
 *
 * Shared pieces live in `components` (the problem+json schema, one response per error status,
 * headers) and operations reference them. `servers` is the relative "/" (the origin that served
 * the document), never the request's Host header. Routes added elsewhere document themselves by
 * passing their path items to {@link openApiDocument} (`extraPaths`), built with
 * {@link errorResponses}; test/openapi.test.ts validates the served document with two validators
 * and fails when a route of the app is missing from it or a documented route does not exist.
 */
import { PROBLEM_BASE } from "../../edge/problem.ts";

type Json = Record<string, unknown>;
/** A `$ref` to a shared component (e.g. `ref("schemas", "Problem")`). */
export const ref = (kind: "schemas" | "responses" | "headers", name: string) => ({
  $ref: `#/components/${kind}/${name}`,
});

/** The error responses of `components.responses`, by status, with the codes each can carry. */
const ERRORS: Record<string, { name: string; description: string; codes: string[]; headers?: Json }> = {
  "400": {
    name: "BadRequest",
    description: "The body could not be used",
    codes: [
      "empty-body",
      "no-image",
      "undecodable-image",
      "invalid-base64",
      "invalid-json",
      "invalid-multipart",
      "too-many-redirects",
      "url-unreachable",
    ],
  },
  "401": {
    name: "Unauthorized",
    description:
      "Keys exist (API_KEY or issued keys) and the request has no, a malformed, an unknown, a revoked or an expired `Authorization: Bearer <key>`",
    codes: ["unauthorized"],
    headers: { "www-authenticate": { schema: { type: "string" } } },
  },
  "403": {
    name: "Forbidden",
    description: "The key lacks the scope this route needs (classify, jobs, images, admin)",
    codes: ["forbidden"],
  },
  "404": {
    name: "NotFound",
    description: "No route has this path, or no job of this caller (or API key) has this id",
    codes: ["not-found", "key-not-found"],
  },
  "405": {
    name: "MethodNotAllowed",
    description: "The path exists but not for this method; `Allow` lists the methods it answers",
    codes: ["method-not-allowed"],
    headers: { allow: ref("headers", "Allow") },
  },
  "413": {
    name: "PayloadTooLarge",
    description: "Body, fetched image or decoded image over a limit (the detail names it)",
    codes: ["payload-too-large", "image-too-large"],
  },
  "415": {
    name: "UnsupportedMediaType",
    description: "Content-Type not accepted, or an image format that is not supported",
    codes: ["unsupported-media-type", "unsupported-format"],
  },
  "422": {
    name: "UnprocessableContent",
    description: "A parameter, batch size or URL is not acceptable",
    codes: [
      "invalid-parameter",
      "too-many-images",
      "invalid-url",
      "url-not-allowed",
      "too-many-parts",
      "image-too-complex",
      "image-too-small",
      "invalid-callback-url",
      "metadata-too-large",
      "idempotency-key-reused",
    ],
  },
  "409": {
    name: "Conflict",
    description:
      "The job is not in a state that allows this (redeliver before it is final, or while a delivery runs)",
    codes: ["delivery-not-final", "delivery-in-progress", "no-callback-url", "job-final"],
  },
  "429": {
    name: "RateLimited",
    description:
      "The key's requests-per-minute or images-per-minute quota is used up; retry after `Retry-After` seconds. `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) say what remains",
    codes: ["rate-limited"],
    headers: {
      "retry-after": ref("headers", "RetryAfter"),
      "ratelimit-policy": { schema: { type: "string" } },
      ratelimit: { schema: { type: "string" } },
    },
  },
  "500": {
    name: "InternalError",
    description: "An unexpected failure (logged); retry, and report it if it persists",
    codes: ["internal-error", "codec-unavailable"],
  },
  "503": {
    name: "Unavailable",
    description:
      "The model is not published, not loadable, or a stage is unreachable; retry after `Retry-After` seconds",
    codes: [
      "model-unavailable",
      "model-load-failed",
      "decode-timeout",
      "jobs-unavailable",
      "keys-unavailable",
      "auth-unavailable",
      "usage-unavailable",
    ],
    headers: { "retry-after": ref("headers", "RetryAfter") },
  },
  "504": {
    name: "DeadlineExceeded",
    description: "The request deadline or a URL fetch timed out",
    codes: ["deadline-exceeded", "url-timeout"],
  },
};

/** `responses` entries referencing the shared error responses for `statuses` (always + 405, 500). */
export function errorResponses(...statuses: (keyof typeof ERRORS)[]): Json {
  const out: Json = {};
  for (const s of [...new Set([...statuses, "405", "500"])].sort()) out[s] = ref("responses", ERRORS[s].name);
  return out;
}

/** Responses of every model-backed /v1 route: auth, model availability, deadline. */
const v1Errors = (...more: (keyof typeof ERRORS)[]) =>
  errorResponses("401", "403", "429", "503", "504", ...more);
/** Every /v1 operation may require the bearer key (only when API_KEY is set: hence the `{}`). */
export const v1Security = [{ bearer: [] }, {}];

function components(): Json {
  const responses: Json = {};
  for (const e of Object.values(ERRORS))
    responses[e.name] = {
      description: `${e.description}. Codes: ${e.codes.map((c) => `\`${c}\``).join(", ")}.`,
      ...(e.headers && { headers: e.headers }),
      content: {
        "application/problem+json": {
          schema: {
            allOf: [ref("schemas", "Problem")],
            properties: { code: { type: "string", examples: e.codes } },
          },
        },
      },
    };
  const int = { type: "integer", minimum: 0 };
  return {
    securitySchemes: {
      bearer: { type: "http", scheme: "bearer", description: "The API_KEY secret, when it is set" },
    },
    headers: {
      RetryAfter: { description: "Seconds to wait before retrying", schema: { type: "integer", minimum: 0 } },
      Allow: { description: "Methods the path answers", schema: { type: "string" } },
      ModelId: { description: "Hub id or directory the model was built from", schema: { type: "string" } },
      ModelVersion: { description: "Content id of the model build (64 hex)", schema: { type: "string" } },
      ModelSynthetic: {
        description: "true for random-weight synthetic models: their labels mean nothing",
        schema: { type: "string", enum: ["true", "false"] },
      },
      ModelPrecision: { description: "int8 or fp32", schema: { type: "string" } },
      ServerTiming: {
        description:
          "decode (decode + preprocessing), preprocess (of that, resize + normalize), queue (waiting for this isolate's earlier model runs), stage-0..N-1 (round trip per stage seen by the gateway), run-0..N-1 (session.run time each stage reported; the difference is the hop) and total durations in ms; on a cold request also warm (with each stage's shard origin and load time)",
        schema: { type: "string" },
      },
    },
    schemas: {
      Problem: {
        type: "object",
        description: `RFC 9457 problem details; \`type\` is ${PROBLEM_BASE}<code>. Some problems add members (e.g. retryAfter, allow, maxBatch).`,
        required: ["type", "title", "status", "detail", "code"],
        properties: {
          type: { type: "string", format: "uri" },
          title: { type: "string" },
          status: { type: "integer" },
          detail: { type: "string", description: "What happened and what to do" },
          code: { type: "string", description: "Stable machine-readable code" },
        },
      },
      Prediction: {
        type: "object",
        required: ["label", "score"],
        properties: {
          label: { type: "string" },
          score: { type: "number", minimum: 0, maximum: 1, description: "Softmax probability (full float)" },
        },
      },
      Predictions: {
        type: "array",
        description: "Sorted by score, highest first",
        items: ref("schemas", "Prediction"),
      },
      Model: {
        type: "object",
        required: ["id", "synthetic", "version", "precision", "num_labels", "stages"],
        properties: {
          id: { type: "string" },
          revision: { type: "string" },
          synthetic: { type: "boolean" },
          version: { type: "string" },
          publishedAt: { type: "string" },
          architecture: { type: "string" },
          precision: { type: "string", enum: ["int8", "fp32"] },
          quantization: { type: "string" },
          config: { type: "object", additionalProperties: { type: "integer" } },
          num_labels: int,
          preprocess: { type: "object" },
          stages: {
            type: "array",
            items: {
              type: "object",
              required: ["index", "layers", "weightBytes", "estimatedPeakBytes"],
              properties: {
                index: int,
                layers: { type: "array", items: int },
                embeddings: { type: "boolean" },
                head: { type: "boolean" },
                weightBytes: int,
                estimatedPeakBytes: int,
                input: { type: "array", items: int },
                output: { type: "array", items: int },
              },
            },
          },
          budget: { type: "object", properties: { stageBudgetBytes: int, marginBytes: int } },
          fidelity: {
            type: ["object", "null"],
            description:
              "int8 builds: the int8 logits against the fp32 graph of the same checkpoint on held-out inputs, as the converter measured them; null for fp32 builds and older manifests",
            properties: {
              reference: { type: "string" },
              inputs: int,
              relL2Mean: { type: "number", description: "mean ||int8 - fp32|| / ||fp32|| of all logits" },
              relL2Max: { type: "number" },
              top1Agreement: { ...int, description: "inputs whose top-1 class agrees" },
              top5OverlapMean: { type: "number", description: "mean shared classes among the top 5" },
              target: { type: ["number", "null"], description: "the build's --max-rel-l2, if any" },
              outlierLayers: int,
              outlierChannels: int,
              floatLayers: { type: "array", items: { type: "string" } },
            },
          },
          createdAt: { type: "string" },
          converter: { type: "string" },
        },
      },
      StageStatus: {
        type: "object",
        required: ["index", "binding", "reachable", "estimatedPeakBytes", "budgetBytes"],
        properties: {
          index: int,
          binding: { type: "string" },
          reachable: { type: "boolean" },
          error: { type: "string" },
          stage: { type: ["integer", "null"], description: "Stage of the resident session, null when none" },
          version: { type: ["string", "null"] },
          warm: { type: "boolean" },
          wasmHeapBytes: int,
          peakWasmHeapBytes: int,
          jsHeapBytes: { type: ["integer", "null"], description: "null: workerd does not expose it" },
          estimatedPeakBytes: int,
          budgetBytes: int,
        },
      },
      Status: {
        type: "object",
        required: ["version", "stages"],
        properties: {
          version: { type: "string" },
          stageBudgetBytes: int,
          isolateLimitBytes: int,
          stages: { type: "array", items: ref("schemas", "StageStatus") },
          gateway: {
            type: "object",
            properties: { jsHeapBytes: { type: "null" }, note: { type: "string" } },
          },
        },
      },
      Health: {
        type: "object",
        required: ["status", "version", "stages"],
        properties: {
          status: { const: "ok" },
          version: { type: "string" },
          stages: {
            type: "array",
            items: { type: "object", properties: { index: int, warm: { type: "boolean" } } },
          },
        },
      },
    },
    responses,
  };
}

const modelHeaders = {
  "x-model-id": ref("headers", "ModelId"),
  "x-model-version": ref("headers", "ModelVersion"),
  "x-model-synthetic": ref("headers", "ModelSynthetic"),
  "x-model-precision": ref("headers", "ModelPrecision"),
};

const stringOrArray = (item: Json) => ({ oneOf: [item, { type: "array", items: item, minItems: 1 }] });

function classify(): Json {
  const binary = { schema: { type: "string", contentMediaType: "application/octet-stream" } };
  return {
    post: {
      operationId: "classify",
      summary: "Classify one image or a batch",
      security: v1Security,
      parameters: [
        {
          name: "top_k",
          in: "query",
          schema: { type: "integer", minimum: 1, default: 5 },
          description: "How many labels to return per image (at most the label count)",
        },
        {
          name: "exif_transpose",
          in: "query",
          schema: { type: "boolean", default: true },
          description:
            "Apply the image's EXIF orientation first, as the Hugging Face pipeline does; false matches the model card's Image.open + processor example",
        },
        {
          name: "x-deadline-ms",
          in: "header",
          schema: { type: "integer", minimum: 1 },
          description:
            "Answer 504 rather than take longer than this (capped by the service deadline, 60000 by default)",
        },
      ],
      requestBody: {
        required: true,
        description:
          "Raw image bytes (the format is read from the bytes, not the type); or multipart/form-data where every file part is an image, whatever its field name (several make a batch; top_k and exif_transpose may be fields); or JSON with base64 image(s) (a data: URL is fine) or http(s) URL(s), an array making a batch. Send files with `curl --data-binary`, not `-d`, which strips newlines.",
        content: {
          "image/*": binary,
          "application/octet-stream": binary,
          "multipart/form-data": {
            schema: {
              type: "object",
              properties: { top_k: { type: "integer", minimum: 1 }, exif_transpose: { type: "boolean" } },
              additionalProperties: {
                type: "string",
                contentMediaType: "application/octet-stream",
                description: "An image file part, under any field name",
              },
            },
          },
          "application/json": {
            schema: {
              oneOf: [
                {
                  type: "object",
                  required: ["image"],
                  properties: {
                    image: stringOrArray({ type: "string", description: "base64 or data: URL" }),
                  },
                },
                {
                  type: "object",
                  required: ["inputs"],
                  properties: {
                    inputs: stringOrArray({ type: "string", description: "base64 or data: URL" }),
                    parameters: {
                      type: "object",
                      properties: {
                        top_k: { type: "integer", minimum: 1 },
                        exif_transpose: { type: "boolean" },
                      },
                    },
                  },
                },
                {
                  type: "object",
                  required: ["url"],
                  properties: { url: stringOrArray({ type: "string", format: "uri" }) },
                },
              ],
            },
          },
        },
      },
      responses: {
        "200": {
          description: "Labels sorted by score; for a batch, one array per image in input order",
          headers: { ...modelHeaders, "server-timing": ref("headers", "ServerTiming") },
          content: {
            "application/json": {
              schema: {
                oneOf: [
                  ref("schemas", "Predictions"),
                  { type: "array", items: ref("schemas", "Predictions") },
                ],
              },
            },
          },
        },
        ...v1Errors("400", "413", "415", "422"),
      },
    },
  };
}

function get(operationId: string, summary: string, ok: Json, errors: Json, security?: unknown[]): Json {
  return {
    get: { operationId, summary, ...(security && { security }), responses: { "200": ok, ...errors } },
  };
}
/** A JSON response object. */
export const json = (schema: Json, description: string, headers?: Json) => ({
  description,
  ...(headers && { headers }),
  content: { "application/json": { schema } },
});

/** The API description. `extraPaths`: path items of routes added by other modules. */
export function openApiDocument(
  extraPaths: Record<string, Json> = {},
  webhooks: Record<string, Json> = {},
): Json {
  return {
    ...(Object.keys(webhooks).length > 0 && { webhooks }),
    openapi: "3.1.0",
    info: {
      title: "beit-edge",
      version: "1.0.0",
      description:
        "Image classification with BEiT-base (ImageNet-22k, 21,841 labels) as int8 ONNX shards on Cloudflare Workers. When the API_KEY secret is set or an API key was issued (POST /v1/keys, npm run keys), /v1/* requires `Authorization: Bearer <key>` and each key's scopes and per-minute quotas apply (429 `rate-limited`, RateLimit-Policy / RateLimit fields); otherwise the service is open. Every response carries x-request-id. Every error is application/problem+json (components.schemas.Problem); a path that does not exist answers 404 `not-found`, a known path with another method 405 with `Allow`.",
    },
    servers: [{ url: "/", description: "The origin that serves this document" }],
    components: components(),
    paths: {
      "/v1/classify": classify(),
      "/v1/labels": get(
        "labels",
        "All labels, index = class id",
        json({ type: "array", items: { type: "string" } }, "Label strings", modelHeaders),
        v1Errors(),
        v1Security,
      ),
      "/v1/model": get(
        "model",
        "Summary of the active model's manifest",
        json(ref("schemas", "Model"), "Model id, version, synthetic flag, precision, stages", modelHeaders),
        v1Errors(),
        v1Security,
      ),
      "/v1/status": get(
        "status",
        "Each stage's isolate: reachable, warm, wasm heap bytes and peak, planned estimate and budget",
        json(ref("schemas", "Status"), "Stage reports", modelHeaders),
        v1Errors(),
        v1Security,
      ),
      "/healthz": get(
        "health",
        "Readiness: model published and every stage reachable",
        json(ref("schemas", "Health"), "Ready", modelHeaders),
        errorResponses("503", "504"),
      ),
      "/openapi.json": get(
        "openapi",
        "This document",
        json({ type: "object" }, "OpenAPI 3.1"),
        errorResponses(),
      ),
      "/": get(
        "page",
        "A page to drop or choose an image and see its labels",
        { description: "HTML", content: { "text/html": { schema: { type: "string" } } } },
        errorResponses(),
      ),
      "/favicon.ico": get(
        "favicon",
        "The page's icon",
        { description: "SVG icon", content: { "image/svg+xml": { schema: { type: "string" } } } },
        errorResponses(),
      ),
      ...extraPaths,
    },
  };
}
