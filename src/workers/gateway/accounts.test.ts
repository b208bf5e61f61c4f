// The gateway's keys, scopes, quotas, usage and request ids through app.request(), on Miniflare's
// D1 with migrations/ applied. The quota counter is the real KeyQuota class behind an in-process
// stand-in for its Durable Object namespace (one instance per key, as idFromName gives); the real
// Durable Object runtime is exercised over wrangler dev in test/e2e-keys.test.ts.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { type TestD1, testD1 } from "../../../test/helpers/d1.ts";
import {
  buildTinyModel,
  fakeDecoder,
  fakeEnv,
  fakeStages,
  type TinyModel,
} from "../../../test/helpers/fake-classifier.ts";
import { KeyQuota, type QuotaNamespace } from "../../accounts/quota.ts";
import type { GatewayEnv } from "../../edge/env.ts";
import { createApp } from "./app.ts";

function quotaNamespace(): QuotaNamespace {
  const objects = new Map<string, KeyQuota>();
  return {
    idFromName: (name) => name as unknown as DurableObjectId,
    get: (id) => {
      const name = id as unknown as string;
      if (!objects.has(name)) objects.set(name, new KeyQuota());
      const obj = objects.get(name)!;
      return { fetch: (input, init) => obj.fetch(new Request(input, init)) };
    },
  };
}

let tiny: TinyModel;
let d1: TestD1;
let env: GatewayEnv;
const app = createApp({ decode: fakeDecoder });
const logs: string[] = [];

beforeAll(async () => {
  tiny = await buildTinyModel(12);
}, 120_000);
afterAll(() => tiny.cleanup());
beforeEach(async () => {
  d1 = await testD1();
  env = await fakeEnv<GatewayEnv>(tiny, fakeStages(tiny.manifest), {
    DB: d1.db,
    QUOTA: quotaNamespace(),
    API_KEY: "root-secret",
    KEY_CACHE_TTL_S: "0",
  });
  logs.length = 0;
  vi.spyOn(console, "log").mockImplementation((line: string) => {
    logs.push(String(line));
  });
});
afterEach(async () => {
  // Usage writes run after each response (waitUntil): let them finish before the database goes.
  await new Promise((r) => setTimeout(r, 100));
  vi.restoreAllMocks();
  await d1.dispose();
});

const ROOT = { authorization: "Bearer root-secret" };
const png = (key: string, headers: Record<string, string> = {}) => ({
  method: "POST",
  body: new Uint8Array([3]),
  headers: { "content-type": "image/png", authorization: `Bearer ${key}`, ...headers },
});

async function createKey(
  body: Record<string, unknown>,
): Promise<{ id: string; key: string; status: number }> {
  const res = await app.request(
    "/v1/keys",
    { method: "POST", body: JSON.stringify(body), headers: { ...ROOT, "content-type": "application/json" } },
    env,
  );
  return { ...((await res.json()) as { id: string; key: string }), status: res.status };
}

describe("keys over HTTP", () => {
  it("creates (key shown once), lists without it, revokes; the key works until revoked", async () => {
    const made = await createKey({ name: "acme", scopes: ["classify"], rpm: 100 });
    expect(made.status).toBe(201);
    expect(made.key).toMatch(/^bek_/);
    const list = (await (await app.request("/v1/keys", { headers: ROOT }, env)).json()) as {
      keys: Record<string, unknown>[];
    };
    expect(list.keys).toHaveLength(1);
    expect(list.keys[0]).toMatchObject({
      id: made.id,
      name: "acme",
      scopes: ["classify"],
      rpm: 100,
      status: "active",
    });
    expect(JSON.stringify(list)).not.toContain(made.key);
    expect((await app.request("/v1/classify", png(made.key), env)).status).toBe(200);
    const del = await app.request(`/v1/keys/${made.id}`, { method: "DELETE", headers: ROOT }, env);
    expect(((await del.json()) as { status: string }).status).toBe("revoked");
    const after = await app.request("/v1/classify", png(made.key), env);
    expect(after.status).toBe(401);
    expect(((await after.json()) as { detail: string }).detail).toMatch(/revoked/);
  });

  it("refuses bad input with problem+json and changes nothing", async () => {
    const bad = async (body: unknown) => {
      const res = await app.request(
        "/v1/keys",
        {
          method: "POST",
          body: JSON.stringify(body),
          headers: { ...ROOT, "content-type": "application/json" },
        },
        env,
      );
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      return [res.status, ((await res.json()) as { parameter?: string }).parameter];
    };
    expect(await bad({ name: "x", scopes: ["root"] })).toEqual([422, "scopes"]);
    expect(await bad({ name: "x", rpm: 0 })).toEqual([422, "rpm"]);
    expect(await bad({ name: "x", images_per_minute: "many" })).toEqual([422, "images_per_minute"]);
    expect(await bad({ name: "x", expires: "tomorrow" })).toEqual([422, "expires"]);
    expect(await bad({ scopes: ["classify"] })).toEqual([422, "name"]);
    expect(await bad([1])).toEqual([400, undefined]);
    for (const id of ["key_0123456789abcdef", "nope"]) {
      const res = await app.request(`/v1/keys/${id}`, { method: "DELETE", headers: ROOT }, env);
      expect([res.status, ((await res.json()) as { code: string }).code]).toEqual([404, "key-not-found"]);
    }
    const list = (await (await app.request("/v1/keys", { headers: ROOT }, env)).json()) as {
      keys: unknown[];
    };
    expect(list.keys).toEqual([]);
  });

  it("needs the admin scope to manage keys, and the route's scope everywhere", async () => {
    const user = await createKey({ name: "user", scopes: ["classify"] });
    const res = await app.request("/v1/keys", { headers: { authorization: `Bearer ${user.key}` } }, env);
    expect([res.status, ((await res.json()) as { code: string }).code]).toEqual([403, "forbidden"]);
    const jobs = await app.request("/v1/jobs", { headers: { authorization: `Bearer ${user.key}` } }, env);
    expect(jobs.status).toBe(403);
    expect(((await jobs.json()) as { detail: string }).detail).toMatch(/lacks the `jobs` scope/);
    const admin = await createKey({ name: "ops", scopes: ["admin"] });
    expect(
      (await app.request("/v1/keys", { headers: { authorization: `Bearer ${admin.key}` } }, env)).status,
    ).toBe(200);
  });
});

describe("quotas", () => {
  it("answers 429 rate-limited past rpm with Retry-After and the RateLimit fields, also on 200s", async () => {
    const k = await createKey({ name: "slow", rpm: 2, images_per_minute: 50 });
    const ok = await app.request("/v1/classify", png(k.key), env);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("ratelimit-policy")).toBe('"requests";q=2;w=60, "images";q=50;w=60');
    expect(ok.headers.get("ratelimit")).toMatch(/^"requests";r=1;t=\d+, "images";r=49;t=\d+$/);
    expect(
      (await app.request("/v1/model", { headers: { authorization: `Bearer ${k.key}` } }, env)).status,
    ).toBe(200);
    const refused = await app.request("/v1/classify", png(k.key), env);
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { code: string; limit: string };
    expect(body).toMatchObject({ code: "rate-limited", limit: "requests" });
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(refused.headers.get("ratelimit")).toMatch(/^"requests";r=0;/);
    // Another key is not affected.
    const other = await createKey({ name: "other" });
    expect((await app.request("/v1/classify", png(other.key), env)).status).toBe(200);
  });

  it("counts images per minute: a batch past the limit is refused before any model work", async () => {
    const k = await createKey({ name: "img", images_per_minute: 2 });
    const batch = (n: number) => ({
      method: "POST",
      body: JSON.stringify({ inputs: Array.from({ length: n }, () => btoa("\x01")) }),
      headers: { "content-type": "application/json", authorization: `Bearer ${k.key}` },
    });
    expect((await app.request("/v1/classify", batch(2), env)).status).toBe(200);
    const refused = await app.request("/v1/classify", batch(1), env);
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { limit: string }).limit).toBe("images");
  });
});

describe("usage and request logs", () => {
  it("records requests, images and model time per key; a key sees its own, admin sees all", async () => {
    const a = await createKey({ name: "a" });
    const b = await createKey({ name: "b" });
    await app.request("/v1/classify", png(a.key), env);
    await app.request("/v1/classify", png(a.key), env);
    await app.request("/v1/classify", png(b.key), env);
    // Usage is written after the response (waitUntil); let it land.
    await new Promise((r) => setTimeout(r, 200));
    const mine = (await (
      await app.request("/v1/usage", { headers: { authorization: `Bearer ${a.key}` } }, env)
    ).json()) as {
      key_id: string;
      totals: { requests: number; images: number; model_ms: number };
    };
    expect(mine.key_id).toBe(a.id);
    expect(mine.totals).toMatchObject({ requests: 2, images: 2 });
    const all = (await (await app.request("/v1/usage", { headers: ROOT }, env)).json()) as {
      days: { key_id: string }[];
    };
    expect(new Set(all.days.map((d) => d.key_id))).toEqual(
      new Set([a.id, b.id, expect.stringMatching(/^key:/)]),
    );
    const other = await app.request(
      `/v1/usage?key_id=${b.id}`,
      { headers: { authorization: `Bearer ${a.key}` } },
      env,
    );
    expect(other.status).toBe(403);
    const bad = await app.request("/v1/usage?from=yesterday", { headers: ROOT }, env);
    expect([bad.status, ((await bad.json()) as { parameter: string }).parameter]).toEqual([422, "from"]);
  });

  it("keeps a well-formed x-request-id, makes one otherwise, and logs one line without the key", async () => {
    const k = await createKey({ name: "log" });
    logs.length = 0;
    const res = await app.request("/v1/classify", png(k.key, { "x-request-id": "client-abc.1" }), env);
    expect(res.headers.get("x-request-id")).toBe("client-abc.1");
    const made = await app.request("/v1/classify", png(k.key, { "x-request-id": "bad id with spaces" }), env);
    expect(made.headers.get("x-request-id")).toMatch(/^req_[0-9a-f]{32}$/);
    const lines = logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.event === "request");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({
      request_id: "client-abc.1",
      key_id: k.id,
      route: "/v1/classify",
      status: 200,
      images: 1,
      model_version: tiny.manifest.version,
    });
    expect(Object.keys(lines[0].ms as object)).toEqual(expect.arrayContaining(["auth", "quota", "total"]));
    expect(logs.join("\n")).not.toContain(k.key);
    expect(logs.join("\n")).not.toContain("root-secret");
  });
});

describe("jobs a client can stop, over HTTP", () => {
  it("cancels a queued job (202 canceled), refuses a second cancel (409 job-final) and bad cancel_after (422)", async () => {
    const sent: unknown[] = [];
    const jobsEnv: GatewayEnv = {
      ...env,
      UPLOADS: await d1.bindings.bucket("UPLOADS"),
      JOBS_QUEUE: { send: async (m: unknown) => void sent.push(m) } as unknown as Queue,
      DELIVERY_QUEUE: { send: async (m: unknown) => void sent.push(m) } as unknown as Queue,
    };
    const k = await createKey({ name: "jobs", scopes: ["jobs"] });
    const auth = { authorization: `Bearer ${k.key}` };
    const submit = (query: string) =>
      app.request(
        `/v1/jobs${query}`,
        { method: "POST", body: new Uint8Array([2]), headers: { ...auth, "content-type": "image/png" } },
        jobsEnv,
      );
    const bad = await submit("?cancel_after=0");
    expect([bad.status, ((await bad.json()) as { parameter: string }).parameter]).toEqual([
      422,
      "cancel_after",
    ]);
    const made = await submit("?cancel_after=60");
    expect(made.status).toBe(202);
    const job = (await made.json()) as { id: string; parameters: { cancel_after: number } };
    expect(job.parameters.cancel_after).toBe(60);
    const cancel = () => app.request(`/v1/jobs/${job.id}/cancel`, { method: "POST", headers: auth }, jobsEnv);
    const first = await cancel();
    expect(first.status).toBe(202);
    expect(((await first.json()) as { status: string }).status).toBe("canceled");
    const again = await cancel();
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ code: "job-final", status: 409, job_status: "canceled" });
    const list = await app.request("/v1/jobs?status=canceled", { headers: auth }, jobsEnv);
    expect(((await list.json()) as { jobs: { id: string }[] }).jobs.map((j) => j.id)).toEqual([job.id]);
    const other = await createKey({ name: "other", scopes: ["jobs"] });
    const foreign = await app.request(
      `/v1/jobs/${job.id}/cancel`,
      { method: "POST", headers: { authorization: `Bearer ${other.key}` } },
      jobsEnv,
    );
    expect(foreign.status).toBe(404);
  });
});
