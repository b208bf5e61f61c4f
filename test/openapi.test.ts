/**
 * The served OpenAPI document (GET /openapi.json through the gateway app itself) is valid
 * OpenAPI 3.1 in two independent validators, and agrees with the app: every route the app
 * registers is documented and every documented route is registered. The route list comes from
 * the Hono app (src/edge/methods.ts), so routes other modules add are checked too.
 */
import SwaggerParser from "@apidevtools/swagger-parser";
import { compileErrors, validate as readmeValidate } from "@readme/openapi-parser";
import { describe, expect, it } from "vitest";
import { listRoutes } from "../src/edge/methods.ts";
import { createApp } from "../src/workers/gateway/app.ts";

type Doc = {
  openapi: string;
  servers: { url: string }[];
  paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
  components: { schemas: Record<string, unknown>; responses: Record<string, { headers?: object }> };
};

const app = createApp({
  decode: () => Promise.reject(new Error("no decoding in this test")),
});

async function served(host = "beit-edge.example"): Promise<Doc> {
  const res = await app.request(`http://${host}/openapi.json`, { headers: { host } }, {});
  expect(res.status).toBe(200);
  return (await res.json()) as Doc;
}

const HTTP_METHODS = new Set(["get", "put", "post", "delete", "options", "head", "patch", "trace"]);

/** Hono's `/v1/jobs/:id` is OpenAPI's `/v1/jobs/{id}`; a trailing `/*` is a `{path}` parameter. */
const toOpenApiPath = (p: string) => p.replace(/:(\w+)(\{[^}]*\})?/g, "{$1}").replace(/\/\*$/, "/{path}");

/** `METHOD path` of every route; an explicit HEAD beside a GET is the GET's (OpenAPI need not repeat it). */
function servedOperations(): string[] {
  const routes = listRoutes(app).map((r) => ({ method: r.method, path: toOpenApiPath(r.path) }));
  const gets = new Set(routes.filter((r) => r.method === "GET").map((r) => r.path));
  return routes
    .filter((r) => !(r.method === "HEAD" && gets.has(r.path)))
    .map((r) => `${r.method} ${r.path}`)
    .sort();
}

describe("GET /openapi.json", () => {
  it("is valid OpenAPI 3.1 for @apidevtools/swagger-parser and @readme/openapi-parser", async () => {
    const doc = await served();
    expect(doc.openapi).toBe("3.1.0");
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeTruthy();
    const result = await readmeValidate(structuredClone(doc) as never);
    expect(result.valid, result.valid ? "" : compileErrors(result)).toBe(true);
  });

  it("documents exactly the routes the app serves, with the shared error responses", async () => {
    const doc = await served();
    const documented = Object.entries(doc.paths)
      .flatMap(([p, item]) =>
        Object.keys(item)
          .filter((k) => HTTP_METHODS.has(k))
          .map((m) => `${m.toUpperCase()} ${p}`),
      )
      .sort();
    expect(documented).toEqual(servedOperations());
    for (const [p, item] of Object.entries(doc.paths))
      for (const [m, op] of Object.entries(item).filter(([k]) => HTTP_METHODS.has(k))) {
        expect(op.responses, `${m} ${p}`).toHaveProperty("405");
        expect(op.responses, `${m} ${p}`).toHaveProperty("500");
        if (p.startsWith("/v1/")) expect(op.responses, `${m} ${p}`).toHaveProperty("401");
      }
    expect(doc.components.schemas).toHaveProperty("Problem");
    expect(doc.components.responses.Unavailable.headers).toHaveProperty("retry-after");
    expect(doc.components.responses.MethodNotAllowed.headers).toHaveProperty("allow");
  });

  it("never reflects the Host header into servers", async () => {
    const doc = await served("evil.example");
    expect(JSON.stringify(doc)).not.toContain("evil.example");
    expect(doc.servers).toEqual([expect.objectContaining({ url: "/" })]);
  });
});

describe("methods", () => {
  it("answers 405 with Allow for a known path and another method, OPTIONS with 204, else 404", async () => {
    const get = await app.request("/v1/classify", { method: "GET" }, {});
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST, OPTIONS");
    expect(get.headers.get("content-type")).toBe("application/problem+json");
    expect(await get.json()).toMatchObject({ code: "method-not-allowed", allow: ["POST", "OPTIONS"] });
    const del = await app.request("/openapi.json", { method: "DELETE" }, {});
    expect(del.status).toBe(405);
    expect(del.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
    const opt = await app.request("/v1/model", { method: "OPTIONS" }, {});
    expect(opt.status).toBe(204);
    expect(opt.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
    expect((await app.request("/v1/nope", { method: "GET" }, {})).status).toBe(404);
    // A route added later is covered without any list to update.
    const later = createApp({ decode: () => Promise.reject(new Error("unused")) });
    later.delete("/v1/things/:id", (c) => c.body(null, 204));
    const put = await later.request("/v1/things/42", { method: "PUT" }, {});
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("DELETE, OPTIONS");
  });
});
