/**
 * @module
 * OpenAPI path items of the CDN image tagging routes the gateway mounts (src/tagging/api.ts) and
 * of `/images/{path}`, which it forwards to the tagging Worker; passed to openApiDocument().
 */
import { errorResponses, json, v1Security } from "./openapi.ts";

type Json = Record<string, unknown>;
const obj = { type: "object" };

export const imagesOpenApiPaths: Record<string, Json> = {
  "/v1/images": {
    get: {
      operationId: "searchImages",
      summary:
        "Images carrying a label (case-insensitive exact match), best score first; without label, every recorded image, oldest first",
      security: v1Security,
      parameters: [
        {
          name: "label",
          in: "query",
          schema: { type: "string" },
          description: "the label to search for; omit it to list every image the tagging Worker has recorded",
        },
        { name: "min_score", in: "query", schema: { type: "number", minimum: 0, maximum: 1 } },
        { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 100, default: 20 } },
        {
          name: "cursor",
          in: "query",
          schema: { type: "string" },
          description: "next_cursor of the previous page",
        },
      ],
      responses: {
        "200": json(obj, "{ items: [image (+ score when searching by label)], next_cursor }"),
        ...errorResponses("401", "422", "503"),
      },
    },
  },
  "/v1/images/tags": {
    get: {
      operationId: "imageTags",
      summary: "One image's tagging status and labels, by url= (origin or served URL) or key= (R2 key)",
      security: v1Security,
      parameters: [
        { name: "url", in: "query", schema: { type: "string" } },
        { name: "key", in: "query", schema: { type: "string" } },
      ],
      responses: { "200": json(obj, "The image record"), ...errorResponses("401", "404", "422", "503") },
    },
  },
  "/v1/images/stats": {
    get: {
      operationId: "imageStats",
      summary: "Counts of images by tagging status (since=, prefix=), what npm run tag follows",
      security: v1Security,
      responses: {
        "200": json(obj, "{ tagged, skipped, failed, classified }"),
        ...errorResponses("401", "422", "503"),
      },
    },
  },
  "/v1/images/backfill": {
    post: {
      operationId: "backfillImages",
      summary: "Enqueue tagging jobs for up to 1000 keys of the IMAGES bucket (npm run tag)",
      security: v1Security,
      requestBody: { required: true, content: { "application/json": { schema: obj } } },
      responses: {
        "200": json(obj, "{ listed, enqueued, cursor, at }"),
        ...errorResponses("400", "401", "422", "503"),
      },
    },
  },
  "/images/{path}": {
    get: {
      operationId: "taggedImage",
      summary:
        "An image through the tagging Worker: the origin's response unchanged, plus image-labels, image-labels-model, image-labels-status",
      parameters: [{ name: "path", in: "path", required: true, schema: { type: "string" } }],
      responses: {
        "200": { description: "The origin's response (any status passes through)" },
        ...errorResponses("404"),
      },
    },
  },
};
