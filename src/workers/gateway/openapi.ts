/**
 * @module
 * The OpenAPI 3.1 document served at /openapi.json.
 */
import { PROBLEM_BASE } from "../../edge/problem.ts";

const predictions = {
  type: "array",
  items: {
    type: "object",
    required: ["label", "score"],
    properties: { label: { type: "string" }, score: { type: "number", minimum: 0, maximum: 1 } },
  },
};

const problem = {
  description: `application/problem+json; \`type\` is ${PROBLEM_BASE}<code>`,
  content: {
    "application/problem+json": {
      schema: {
        type: "object",
        required: ["type", "title", "status", "detail", "code"],
        properties: {
          type: { type: "string", format: "uri" },
          title: { type: "string" },
          status: { type: "integer" },
          detail: { type: "string" },
          code: { type: "string" },
        },
      },
    },
  },
};

const modelHeaders = {
  "x-model-id": { schema: { type: "string" }, description: "Hub id or directory the model was built from" },
  "x-model-version": { schema: { type: "string" }, description: "Content id of the model build (64 hex)" },
  "x-model-synthetic": {
    schema: { type: "string", enum: ["true", "false"] },
    description: "true for random-weight synthetic models: their labels mean nothing",
  },
};

/** The API description; `origin` becomes the server URL. */
export function openApiDocument(origin: string): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "beit-edge",
      version: "1.0.0",
      description:
        "Image classification with BEiT-base (ImageNet-22k, 21,841 labels) as int8 ONNX shards on Cloudflare Workers. When the API_KEY secret is set, /v1/* requires `Authorization: Bearer <key>`; otherwise the service is open.",
    },
    servers: [{ url: origin }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    },
    paths: {
      "/v1/classify": {
        post: {
          summary: "Classify one image or a batch",
          security: [{ bearer: [] }, {}],
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
            content: {
              "image/*": { schema: { type: "string", format: "binary" } },
              "application/octet-stream": { schema: { type: "string", format: "binary" } },
              "multipart/form-data": {
                schema: {
                  type: "object",
                  properties: {
                    file: { type: "array", items: { type: "string", format: "binary" } },
                    top_k: { type: "integer" },
                    exif_transpose: { type: "boolean" },
                  },
                },
                description: "Every file field is an image; several files make a batch",
              },
              "application/json": {
                schema: {
                  oneOf: [
                    {
                      type: "object",
                      required: ["image"],
                      properties: {
                        image: { oneOf: [{ type: "string" }, { type: "array", items: { type: "string" } }] },
                      },
                    },
                    {
                      type: "object",
                      required: ["inputs"],
                      properties: {
                        inputs: { oneOf: [{ type: "string" }, { type: "array", items: { type: "string" } }] },
                        parameters: {
                          type: "object",
                          properties: { top_k: { type: "integer" }, exif_transpose: { type: "boolean" } },
                        },
                      },
                    },
                    {
                      type: "object",
                      required: ["url"],
                      properties: {
                        url: {
                          oneOf: [
                            { type: "string", format: "uri" },
                            { type: "array", items: { type: "string", format: "uri" } },
                          ],
                        },
                      },
                    },
                  ],
                },
                description:
                  "Base64 image(s) (a data: URL is fine) or http(s) URL(s); an array makes a batch",
              },
            },
          },
          responses: {
            "200": {
              description: "Labels sorted by score; an array of such arrays for a batch, in input order",
              headers: {
                ...modelHeaders,
                "server-timing": {
                  schema: { type: "string" },
                  description: "decode, stage-N and total durations (ms)",
                },
              },
              content: {
                "application/json": {
                  schema: { oneOf: [predictions, { type: "array", items: predictions }] },
                },
              },
            },
            "400": { ...problem, description: "Undecodable image, malformed body (problem+json)" },
            "401": { ...problem, description: "Missing or wrong API key" },
            "413": { ...problem, description: "Body or image too large" },
            "415": { ...problem, description: "Unsupported content type or image format" },
            "422": {
              ...problem,
              description: "Bad parameter (top_k, exif_transpose, batch size, URL, deadline header)",
            },
            "503": { ...problem, description: "Model unavailable (Retry-After set)" },
            "504": { ...problem, description: "Deadline passed" },
          },
        },
      },
      "/v1/labels": {
        get: {
          summary: "All labels, index = class id",
          responses: {
            "200": {
              description: "Label strings",
              content: { "application/json": { schema: { type: "array", items: { type: "string" } } } },
            },
          },
        },
      },
      "/v1/model": {
        get: {
          summary: "Summary of the active model's manifest",
          responses: { "200": { description: "Model id, version, synthetic flag, precision, stages" } },
        },
      },
      "/v1/status": {
        get: {
          summary: "Each stage's isolate: wasm heap bytes, peak, warm flag",
          responses: { "200": { description: "Stage reports" } },
        },
      },
      "/v1/jobs": {
        post: {
          summary:
            "Submit a classification job: the inputs of /v1/classify plus callback_url, metadata (JSON object, 4 KB), top_k (<= 100), exif_transpose; results are POSTed to callback_url as a Standard Webhooks event",
          parameters: [
            { name: "callback_url", in: "query", schema: { type: "string", format: "uri" } },
            { name: "top_k", in: "query", schema: { type: "integer", minimum: 1, maximum: 100 } },
            { name: "Idempotency-Key", in: "header", schema: { type: "string", maxLength: 255 } },
          ],
          responses: {
            "202": { description: "The job object (status queued); Location: /v1/jobs/{id}" },
            "400": { ...problem, description: "Bad body" },
            "422": {
              ...problem,
              description: "Bad callback_url, metadata, parameter, or Idempotency-Key reused",
            },
            "503": { ...problem, description: "Jobs not configured" },
          },
        },
        get: {
          summary: "The caller's jobs, newest first",
          parameters: [
            { name: "status", in: "query", schema: { enum: ["queued", "running", "succeeded", "failed"] } },
            { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 100 } },
            { name: "cursor", in: "query", schema: { type: "string" } },
          ],
          responses: { "200": { description: "{jobs, next_cursor}" }, "422": problem },
        },
      },
      "/v1/jobs/{id}": {
        get: {
          summary: "A job: status, results (as /v1/classify), error, model, delivery state",
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: { "200": { description: "The job object" }, "404": problem },
        },
      },
      "/v1/jobs/{id}/redeliver": {
        post: {
          summary: "Deliver the job's final event once more (same webhook-id and body)",
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: { "202": { description: "The job object" }, "404": problem, "409": problem },
        },
      },
      "/healthz": {
        get: {
          summary: "Readiness: model published and every stage reachable",
          responses: { "200": { description: "ready" }, "503": { ...problem, description: "not ready" } },
        },
      },
      "/openapi.json": {
        get: { summary: "This document", responses: { "200": { description: "OpenAPI 3.1" } } },
      },
      "/": {
        get: {
          summary: "A page to drop an image and see its labels",
          responses: { "200": { description: "HTML" } },
        },
      },
    },
  };
}
