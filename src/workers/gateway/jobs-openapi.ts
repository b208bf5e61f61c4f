/**
 * @module
 * OpenAPI path items of the webhook-job routes (./jobs.ts), passed to `openApiDocument` so that
 * test/openapi.test.ts validates them with the rest of the document. The job object is
 * src/jobs/model.ts `JobView`; the webhook event wraps it as `data`.
 */
import { errorResponses, json, ref, v1Security } from "./openapi.ts";

type Json = Record<string, unknown>;

const nullable = (type: string, extra: Json = {}) => ({ type: [type, "null"], ...extra });

const delivery: Json = {
  type: ["object", "null"],
  description: "Webhook delivery state; null when the job has no callback_url",
  properties: {
    state: { enum: ["pending", "delivered", "failed"] },
    webhook_id: { type: "string", description: "Stable across every retry and redelivery" },
    url: { type: "string", format: "uri" },
    attempts: { type: "integer" },
    total_attempts: { type: "integer" },
    redeliveries: { type: "integer" },
    last_status: nullable("integer"),
    last_error: nullable("string"),
    last_attempt_at: nullable("string", { format: "date-time" }),
    next_attempt_at: nullable("string", { format: "date-time" }),
    delivered_at: nullable("string", { format: "date-time" }),
  },
};

const job: Json = {
  type: "object",
  required: ["id", "status", "created_at"],
  properties: {
    id: { type: "string" },
    status: {
      enum: ["queued", "running", "succeeded", "failed", "canceled", "expired"],
      description: "canceled: POST /v1/jobs/{id}/cancel; expired: not started within cancel_after",
    },
    cancel_requested_at: nullable("string", { format: "date-time" }),
    created_at: { type: "string", format: "date-time" },
    started_at: nullable("string", { format: "date-time" }),
    finished_at: nullable("string", { format: "date-time" }),
    expires_at: { type: "string", format: "date-time", description: "End of the retention period" },
    callback_url: nullable("string", { format: "uri" }),
    metadata: { description: "The submitted metadata object, untouched" },
    parameters: {
      type: "object",
      properties: {
        top_k: { type: "integer" },
        exif_transpose: { type: "boolean" },
        cancel_after: nullable("integer", { description: "Seconds the job had to start" }),
      },
    },
    image_count: { type: "integer" },
    results: {
      description: "As /v1/classify returns: one array for a single image, an array of arrays for a batch",
      oneOf: [
        { type: "null" },
        ref("schemas", "Predictions"),
        { type: "array", items: ref("schemas", "Predictions") },
      ],
    },
    images: { description: "width, height, format per image" },
    model: { description: "id, version, synthetic, precision of the model that ran" },
    error: {
      description: "problem details when failed",
      oneOf: [{ type: "null" }, ref("schemas", "Problem")],
    },
    attempts: { type: "integer" },
    delivery,
  },
};

const idParam = { name: "id", in: "path", required: true, schema: { type: "string" } };
const location = { location: { schema: { type: "string" }, description: "/v1/jobs/{id}" } };

/** The path items of POST/GET /v1/jobs, GET /v1/jobs/{id} and POST /v1/jobs/{id}/redeliver. */
export function jobsPaths(): Record<string, Json> {
  return {
    "/v1/jobs": {
      post: {
        operationId: "createJob",
        summary:
          "Submit a classification job: the inputs of /v1/classify plus callback_url, metadata (a JSON object up to 4 KB) and the same parameters; the result is POSTed to callback_url as a signed Standard Webhooks event",
        security: v1Security,
        parameters: [
          { name: "callback_url", in: "query", schema: { type: "string", format: "uri" } },
          { name: "top_k", in: "query", schema: { type: "integer", minimum: 1 } },
          { name: "exif_transpose", in: "query", schema: { type: "boolean" } },
          {
            name: "cancel_after",
            in: "query",
            description:
              "Seconds (1..604800) the job may wait in the queue: one not started by then ends `expired` (event classification.expired) and is never classified. Also a JSON member or multipart field.",
            schema: { type: "integer", minimum: 1, maximum: 604800 },
          },
          { name: "Idempotency-Key", in: "header", schema: { type: "string", maxLength: 255 } },
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
                  callback_url: { type: "string" },
                  metadata: { type: "string" },
                  cancel_after: { type: "string" },
                },
                additionalProperties: { type: "string", format: "binary" },
              },
            },
            "application/json": {
              schema: {
                type: "object",
                properties: {
                  callback_url: { type: "string", format: "uri" },
                  metadata: { type: "object" },
                  cancel_after: { type: "integer", minimum: 1, maximum: 604800 },
                },
              },
            },
          },
        },
        responses: {
          "202": json(
            job,
            "The job (status queued), or the existing one for a reused Idempotency-Key",
            location,
          ),
          ...errorResponses("400", "401", "413", "415", "422", "503"),
        },
      },
      get: {
        operationId: "listJobs",
        summary: "The caller's jobs, newest first",
        security: v1Security,
        parameters: [
          {
            name: "status",
            in: "query",
            schema: { enum: ["queued", "running", "succeeded", "failed", "canceled", "expired"] },
          },
          { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 100 } },
          { name: "cursor", in: "query", schema: { type: "string" } },
        ],
        responses: {
          "200": json(
            {
              type: "object",
              properties: { jobs: { type: "array", items: job }, next_cursor: nullable("string") },
            },
            "A page of jobs",
          ),
          ...errorResponses("401", "422", "503"),
        },
      },
    },
    "/v1/jobs/{id}": {
      get: {
        operationId: "getJob",
        summary: "A job: status, results, error, model identity, timestamps, delivery state",
        security: v1Security,
        parameters: [idParam],
        responses: { "200": json(job, "The job"), ...errorResponses("401", "404", "503") },
      },
    },
    "/v1/jobs/{id}/redeliver": {
      post: {
        operationId: "redeliverJob",
        summary: "Deliver the job's final event once more (same webhook-id and body)",
        security: v1Security,
        parameters: [idParam],
        responses: {
          "202": json(job, "The job, with the new delivery pending", location),
          ...errorResponses("401", "404", "409", "503"),
        },
      },
    },
    "/v1/jobs/{id}/cancel": {
      post: {
        operationId: "cancelJob",
        summary:
          "Cancel a job: a queued job ends canceled at once and is never classified; a running one ends canceled when its run returns and its result is discarded. The final event's type is classification.canceled. A job that has already ended: 409 job-final, nothing changed",
        security: v1Security,
        parameters: [idParam],
        responses: {
          "202": json(job, "The job: canceled, or running with cancel_requested_at set", location),
          ...errorResponses("401", "403", "404", "409", "503"),
        },
      },
    },
  };
}

/** The webhook a job's callback_url receives (OpenAPI 3.1 `webhooks`): one signed event per final job. */
export function jobsWebhooks(): Record<string, Json> {
  return {
    classificationEvent: {
      post: {
        operationId: "classificationEvent",
        summary:
          "The final event of a job, POSTed to its callback_url and signed as Standard Webhooks prescribes (webhook-id, webhook-timestamp, webhook-signature). The same bytes on every retry and redelivery",
        requestBody: {
          required: true,
          content: {
            "application/json": {
              schema: {
                type: "object",
                required: ["type", "timestamp", "data"],
                properties: {
                  type: {
                    enum: [
                      "classification.succeeded",
                      "classification.failed",
                      "classification.canceled",
                      "classification.expired",
                    ],
                    description:
                      "canceled: POST /v1/jobs/{id}/cancel (results discarded); expired: not started within cancel_after",
                  },
                  timestamp: { type: "string", format: "date-time" },
                  data: job,
                },
              },
            },
          },
        },
        responses: {
          "2XX": { description: "Delivered" },
          "410": { description: "Gone: no more attempts" },
        },
      },
    },
  };
}
