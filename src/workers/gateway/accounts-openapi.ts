/**
 * @module
 * OpenAPI path items of the key and usage routes (src/workers/gateway/accounts.ts), passed to
 * openApiDocument().
 */
import { MAX_LIMIT_PER_MINUTE, MAX_NAME_LENGTH, SCOPES } from "../../accounts/keys.ts";
import { errorResponses, json, v1Security } from "./openapi.ts";

type Json = Record<string, unknown>;
const nullable = (type: string, extra: Json = {}) => ({ type: [type, "null"], ...extra });
const scopes = { type: "array", items: { enum: [...SCOPES] }, minItems: 1 };
const limit = { type: "integer", minimum: 1, maximum: MAX_LIMIT_PER_MINUTE };

const key: Json = {
  type: "object",
  required: ["id", "name", "scopes", "status", "created_at"],
  properties: {
    id: { type: "string", pattern: "^key_[0-9a-f]{16}$" },
    name: { type: "string" },
    scopes,
    rpm: nullable("integer", { description: "Requests per minute; null = DEFAULT_RPM" }),
    images_per_minute: nullable("integer", {
      description: "Images per minute; null = DEFAULT_IMAGES_PER_MINUTE",
    }),
    status: { enum: ["active", "expired", "revoked"] },
    created_at: { type: "string", format: "date-time" },
    expires_at: nullable("string", { format: "date-time" }),
    revoked_at: nullable("string", { format: "date-time" }),
    last_used_at: nullable("string", { format: "date-time", description: "Updated at most once a minute" }),
  },
};

const counts: Json = {
  type: "object",
  properties: Object.fromEntries(
    ["requests", "images", "model_ms", "jobs", "deliveries", "images_tagged"].map((f) => [
      f,
      { type: "integer" },
    ]),
  ),
};

const idParam = { name: "id", in: "path", required: true, schema: { type: "string" } };
const admin = "Needs a key with the `admin` scope.";

export const accountsPaths: Record<string, Json> = {
  "/v1/keys": {
    post: {
      operationId: "createKey",
      summary: `Issue an API key. ${admin} The answer's \`key\` is shown only this once; only its SHA-256 is stored`,
      security: v1Security,
      requestBody: {
        required: true,
        content: {
          "application/json": {
            schema: {
              type: "object",
              required: ["name"],
              properties: {
                name: { type: "string", minLength: 1, maxLength: MAX_NAME_LENGTH },
                scopes: {
                  ...scopes,
                  description: "Default: classify, jobs, images. admin grants every scope",
                },
                rpm: limit,
                images_per_minute: limit,
                expires: {
                  type: "string",
                  description: "A duration (30d, 12h, 15m, 90s) or an ISO 8601 time; default: never",
                },
              },
            },
          },
        },
      },
      responses: {
        "201": json(
          { ...key, properties: { ...(key.properties as Json), key: { type: "string" } } },
          "The new key, with `key` (bek_...) shown this once",
          { location: { schema: { type: "string" }, description: "/v1/keys/{id}" } },
        ),
        ...errorResponses("400", "401", "403", "422", "429", "503"),
      },
    },
    get: {
      operationId: "listKeys",
      summary: `Every key, newest first (never the key itself). ${admin}`,
      security: v1Security,
      responses: {
        "200": json({ type: "object", properties: { keys: { type: "array", items: key } } }, "The keys"),
        ...errorResponses("401", "403", "429", "503"),
      },
    },
  },
  "/v1/keys/{id}": {
    delete: {
      operationId: "revokeKey",
      summary: `Revoke a key: every isolate refuses it within KEY_CACHE_TTL_S (30 s, at most 60). ${admin}`,
      security: v1Security,
      parameters: [idParam],
      responses: {
        "200": json(key, "The key, revoked"),
        ...errorResponses("401", "403", "404", "429", "503"),
      },
    },
  },
  "/v1/usage": {
    get: {
      operationId: "usage",
      summary:
        "Usage per key and UTC day: requests, images classified, model ms, jobs, webhook deliveries, images tagged. A key sees its own; an admin key sees every key (or one, with key_id)",
      security: v1Security,
      parameters: [
        {
          name: "from",
          in: "query",
          schema: { type: "string", format: "date" },
          description: "Default: to - 29 days",
        },
        {
          name: "to",
          in: "query",
          schema: { type: "string", format: "date" },
          description: "Default: today (UTC)",
        },
        { name: "key_id", in: "query", schema: { type: "string" }, description: "Admin only" },
      ],
      responses: {
        "200": json(
          {
            type: "object",
            properties: {
              from: { type: "string", format: "date" },
              to: { type: "string", format: "date" },
              key_id: nullable("string"),
              totals: counts,
              days: {
                type: "array",
                items: {
                  ...counts,
                  properties: {
                    ...(counts.properties as Json),
                    key_id: { type: "string" },
                    day: { type: "string", format: "date" },
                  },
                },
              },
            },
          },
          "Usage rows and their totals",
        ),
        ...errorResponses("401", "403", "422", "429", "503"),
      },
    },
  },
};
