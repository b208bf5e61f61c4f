/**
 * The gateway inside workerd with the tiny model's stage Workers (auxiliary, separate isolates) on local R2
 * seeded with a tiny synthetic int8 model: every input form, batches, top_k, each error status as
 * problem+json, auth, and the read-only routes. Classifications must equal, bit for bit, what
 * onnxruntime-web in Node gives for the same image (computed in global setup).
 */
import { applyD1Migrations, env, SELF } from "cloudflare:test";
import { beforeAll, describe, expect, inject, it } from "vitest";
import type { GatewayEnv } from "../src/edge/env.ts";
import { PROBLEM_BASE } from "../src/edge/problem.ts";
import { fromBase64 } from "./workerd/fixtures.ts";
import { seedModel } from "./workerd/seed.ts";

const fx = inject("workerdFixtures");
const genv = env as unknown as GatewayEnv;
const png = fromBase64(fx.images.gradient);
const wide = fromBase64(fx.images.wide);
const expectedA = fx.expected.modelA;
const URL_BASE = "https://beit-edge.test";

function classify(body: BodyInit | null, init: RequestInit & { query?: string } = {}): Promise<Response> {
  return SELF.fetch(`${URL_BASE}/v1/classify${init.query ?? ""}`, { method: "POST", body, ...init });
}

async function expectProblem(res: Response, status: number, code: string): Promise<Record<string, unknown>> {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  const body = (await res.json()) as Record<string, unknown>;
  expect(body).toMatchObject({ type: `${PROBLEM_BASE}${code}`, status, code });
  expect(typeof body.title).toBe("string");
  expect(typeof body.detail).toBe("string");
  return body;
}

const toB64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));

/**
 * What `curl -d @file` sends (curl 7.88, checked byte for byte): the file read with fgets into a
 * 256-byte buffer, each piece cut at its first NUL, CR and LF dropped.
 */
function curlData(file: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < file.length; ) {
    const nl = file.indexOf(0x0a, i);
    const end = Math.min(nl < 0 ? file.length : nl + 1, i + 255);
    for (let j = i; j < end && file[j] !== 0; j++)
      if (file[j] !== 0x0a && file[j] !== 0x0d) out.push(file[j]);
    i = end;
  }
  return new Uint8Array(out);
}

beforeAll(async () => {
  await seedModel(genv.MODELS, fx.modelA);
  // The key table (auth is checked against it when API_KEY is not set).
  const tenv = env as unknown as { DB: D1Database; TEST_MIGRATIONS: Parameters<typeof applyD1Migrations>[1] };
  await applyD1Migrations(tenv.DB, tenv.TEST_MIGRATIONS);
});

describe("POST /v1/classify", () => {
  it("classifies raw PNG bytes exactly as onnxruntime-web in Node does, with model headers and Server-Timing", async () => {
    const res = await classify(png, { headers: { "content-type": "image/png" } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(expectedA.gradient.top);
    expect(res.headers.get("x-model-version")).toBe(fx.modelA.version);
    expect(res.headers.get("x-model-synthetic")).toBe("true");
    expect(res.headers.get("x-model-id")).toBeTruthy();
    const timing = res.headers.get("server-timing") ?? "";
    expect(fx.modelA.stages).toBeGreaterThanOrEqual(2);
    const stageParts = Array.from({ length: fx.modelA.stages }, (_, i) => [
      `stage-${i};dur=`,
      `run-${i};dur=`,
    ]);
    for (const part of ["decode;dur=", "queue;dur=", ...stageParts.flat(), "total;dur="])
      expect(timing).toContain(part);
  });

  it("accepts application/octet-stream and no content type; different images give their own results", async () => {
    const a = await classify(wide, { headers: { "content-type": "application/octet-stream" } });
    expect(await a.json()).toEqual(expectedA.wide.top);
    const b = await classify(fromBase64(fx.images.square));
    expect(await b.json()).toEqual(expectedA.square.top);
  });

  it("applies EXIF orientation by default and skips it with exif_transpose=false", async () => {
    const rotated = fromBase64(fx.images.exifRotated);
    const upright = expectedA.exifUpright.top;
    // The fixtures store the same pixels; only the orientation tag differs, so the results must differ.
    expect(expectedA.exifRotated.top).not.toEqual(upright);
    const jpeg = { "content-type": "image/jpeg" };
    expect(await (await classify(rotated, { headers: jpeg })).json()).toEqual(expectedA.exifRotated.top);
    const off = await classify(rotated, { query: "?exif_transpose=false", headers: jpeg });
    expect(await off.json()).toEqual(upright);
    const json = await classify(
      JSON.stringify({ inputs: toB64(rotated), parameters: { exif_transpose: false } }),
      {
        headers: { "content-type": "application/json" },
      },
    );
    expect(await json.json()).toEqual(upright);
    const bad = await classify(rotated, { query: "?exif_transpose=sideways", headers: jpeg });
    const problem = await expectProblem(bad, 422, "invalid-parameter");
    expect(problem.detail).toContain("exif_transpose");
  });

  it("honours top_k from the query string and from JSON parameters", async () => {
    const q = await classify(png, { query: "?top_k=2", headers: { "content-type": "image/png" } });
    expect(await q.json()).toEqual(expectedA.gradient.top.slice(0, 2));
    const j = await classify(JSON.stringify({ inputs: toB64(png), parameters: { top_k: 3 } }), {
      headers: { "content-type": "application/json" },
    });
    expect(await j.json()).toEqual(expectedA.gradient.top.slice(0, 3));
    const all = await classify(png, { query: "?top_k=16", headers: { "content-type": "image/png" } });
    const labels = (await all.json()) as { score: number }[];
    expect(labels).toHaveLength(16);
    for (let i = 1; i < labels.length; i++)
      expect(labels[i - 1].score).toBeGreaterThanOrEqual(labels[i].score);
  });

  it("accepts JSON image base64, data: URLs and a URL to fetch (following one redirect)", async () => {
    const bodies = [
      { image: toB64(png) },
      { image: `data:image/png;base64,${toB64(png)}` },
      { url: "http://images.test/gradient.png" },
      { url: "http://images.test/redirect" },
    ];
    for (const body of bodies) {
      const res = await classify(JSON.stringify(body), { headers: { "content-type": "application/json" } });
      expect(res.status, JSON.stringify(body).slice(0, 60)).toBe(200);
      expect(await res.json()).toEqual(expectedA.gradient.top);
    }
  });

  it("accepts multipart: one file gives one array, several files give one array per file in order", async () => {
    const one = new FormData();
    one.append("file", new Blob([png], { type: "image/png" }), "a.png");
    expect(await (await classify(one)).json()).toEqual(expectedA.gradient.top);
    const two = new FormData();
    two.append("file", new Blob([wide], { type: "image/png" }), "w.png");
    two.append("file", new Blob([png], { type: "image/png" }), "g.png");
    two.append("top_k", "3");
    const res = await classify(two);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual([expectedA.wide.top.slice(0, 3), expectedA.gradient.top.slice(0, 3)]);
  });

  it("answers JSON arrays with an array of arrays in input order", async () => {
    const res = await classify(JSON.stringify({ image: [toB64(png), toB64(wide), toB64(png)] }), {
      headers: { "content-type": "application/json" },
      query: "?top_k=1",
    });
    expect(await res.json()).toEqual([
      expectedA.gradient.top.slice(0, 1),
      expectedA.wide.top.slice(0, 1),
      expectedA.gradient.top.slice(0, 1),
    ]);
  });
});

describe("errors are problem+json with stable types", () => {
  it("400 for an empty body, a truncated image, bad base64 and bad JSON", async () => {
    await expectProblem(
      await classify(new Uint8Array(0), { headers: { "content-type": "image/png" } }),
      400,
      "empty-body",
    );
    const truncated = await classify(png.slice(0, 60), { headers: { "content-type": "image/png" } });
    expect(truncated.status).toBe(400);
    expect(truncated.headers.get("content-type")).toBe("application/problem+json");
    const j = { "content-type": "application/json" };
    await expectProblem(
      await classify(JSON.stringify({ image: "%%%" }), { headers: j }),
      400,
      "invalid-base64",
    );
    await expectProblem(await classify("{not json", { headers: j }), 400, "invalid-json");
  });

  it("415 for bytes that are no supported image, a text body, and a URL serving HTML", async () => {
    await expectProblem(
      await classify(new TextEncoder().encode("plain words, not pixels")),
      415,
      "unsupported-format",
    );
    await expectProblem(
      await classify("hello", { headers: { "content-type": "text/plain" } }),
      415,
      "unsupported-media-type",
    );
    await expectProblem(
      await classify(JSON.stringify({ url: "http://images.test/page.html" }), {
        headers: { "content-type": "application/json" },
      }),
      415,
      "unsupported-media-type",
    );
  });

  it("413 for a body over the limit, by Content-Length and while streaming, and for a big URL image", async () => {
    const big = new Uint8Array(1024 * 1024 + 1);
    await expectProblem(
      await classify(big, { headers: { "content-type": "image/png" } }),
      413,
      "payload-too-large",
    );
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 20; i++) c.enqueue(new Uint8Array(64 * 1024));
        c.close();
      },
    });
    await expectProblem(
      await classify(stream, { headers: { "content-type": "image/png" }, duplex: "half" } as RequestInit),
      413,
      "payload-too-large",
    );
    await expectProblem(
      await classify(JSON.stringify({ url: "http://images.test/huge.png" }), {
        headers: { "content-type": "application/json" },
      }),
      413,
      "payload-too-large",
    );
  });

  it("422 for bad top_k, too many images, bad URLs, redirect loops are 400, and a bad deadline header", async () => {
    for (const q of ["?top_k=0", "?top_k=17", "?top_k=abc", "?top_k=2.5"]) {
      const body = await expectProblem(
        await classify(png, { query: q, headers: { "content-type": "image/png" } }),
        422,
        "invalid-parameter",
      );
      expect(body.detail).toContain("top_k");
    }
    const j = { "content-type": "application/json" };
    await expectProblem(
      await classify(JSON.stringify({ image: Array(5).fill(toB64(png)) }), { headers: j }),
      422,
      "too-many-images",
    );
    await expectProblem(
      await classify(JSON.stringify({ url: "ftp://images.test/x.png" }), { headers: j }),
      422,
      "url-not-allowed",
    );
    await expectProblem(
      await classify(JSON.stringify({ url: "not a url" }), { headers: j }),
      422,
      "invalid-url",
    );
    await expectProblem(await classify(JSON.stringify({ foo: 1 }), { headers: j }), 422, "invalid-parameter");
    await expectProblem(
      await classify(JSON.stringify({ url: "http://images.test/loop" }), { headers: j }),
      400,
      "too-many-redirects",
    );
    await expectProblem(
      await classify(png, { headers: { "content-type": "image/png", "x-deadline-ms": "soon" } }),
      422,
      "invalid-parameter",
    );
  });

  it("504 when the client's deadline passes", async () => {
    const res = await classify(png, { headers: { "content-type": "image/png", "x-deadline-ms": "1" } });
    await expectProblem(res, 504, "deadline-exceeded");
  });

  it("404 for unknown routes, 405 with Allow for a known route and another method", async () => {
    await expectProblem(await SELF.fetch(`${URL_BASE}/v2/nothing`), 404, "not-found");
    const res = await SELF.fetch(`${URL_BASE}/v1/classify`);
    expect(res.headers.get("allow")).toBe("POST, OPTIONS");
    await expectProblem(res, 405, "method-not-allowed");
  });

  it("hints at --data-binary when the body is an image as `curl -d @file` sends it", async () => {
    const jpeg = curlData(fromBase64(fx.images.exifRotated));
    const a = await expectProblem(
      await classify(jpeg, { headers: { "content-type": "image/jpeg" } }),
      400,
      "undecodable-image",
    );
    expect(a.detail).toContain("--data-binary");
    const b = await expectProblem(
      await classify(curlData(fromBase64(fx.images.square))),
      415,
      "unsupported-format",
    );
    expect(b.detail).toContain("--data-binary");
    // An intact image that fails to decode gets no such hint.
    const truncated = await classify(fromBase64(fx.images.square).slice(0, 2000));
    expect(((await truncated.json()) as { detail: string }).detail).not.toContain("--data-binary");
  });
});

describe("URL inputs: outbound policy (SSRF)", () => {
  const j = { "content-type": "application/json" };
  const viaKeyed = {
    "content-type": "application/json",
    "x-test-gateway": "keyed",
    authorization: "Bearer s3cret-key",
  };

  it("refuses loopback and private URLs, in any notation and behind a redirect, with one uniform 422", async () => {
    const details = new Set<unknown>();
    for (const url of [
      "http://127.0.0.1/gradient.png",
      "http://2130706433/gradient.png",
      "http://0x7f000001/gradient.png",
      "http://127.1/gradient.png",
      "http://0.0.0.0/gradient.png",
      "http://localhost/gradient.png",
      "http://[::1]/gradient.png",
      "http://[::ffff:127.0.0.1]/gradient.png",
      "http://169.254.169.254/latest/meta-data/",
      "http://10.1.2.3/x.png",
      "http://images.test/to-metadata",
      "http://images.test/to-loopback",
    ]) {
      const body = await expectProblem(
        await classify(JSON.stringify({ url }), { headers: j }),
        422,
        "url-not-allowed",
      );
      details.add(body.detail);
    }
    expect(details.size).toBe(1);
  });

  it("ALLOW_LOOPBACK_FETCH=true lets loopback through (local development), but not other private hosts", async () => {
    const ok = await classify(JSON.stringify({ url: "http://127.0.0.1/gradient.png" }), {
      headers: viaKeyed,
    });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual(expectedA.gradient.top);
    const redirected = await classify(JSON.stringify({ url: "http://images.test/to-loopback" }), {
      headers: viaKeyed,
    });
    expect(redirected.status).toBe(200);
    await expectProblem(
      await classify(JSON.stringify({ url: "http://images.test/to-metadata" }), { headers: viaKeyed }),
      422,
      "url-not-allowed",
    );
  });

  it("a malformed redirect Location is a 400, and a long URL is not echoed whole", async () => {
    await expectProblem(
      await classify(JSON.stringify({ url: "http://images.test/bad-location" }), { headers: j }),
      400,
      "url-unreachable",
    );
    const long = `http://images.test/${"a".repeat(200_000)}`;
    const res = await classify(JSON.stringify({ url: long }), { headers: j });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect((await res.text()).length).toBeLessThan(1000);
  });
});

describe("auth", () => {
  // The keyed gateway is the same bundle with the API_KEY secret set.
  const call = (path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set("x-test-gateway", "keyed");
    return SELF.fetch(`${URL_BASE}${path}`, { ...init, headers });
  };

  it("requires the bearer key on /v1/* when API_KEY is set (constant-time compare)", async () => {
    await expectProblem(await call("/v1/labels"), 401, "unauthorized");
    await expectProblem(
      await call("/v1/labels", { headers: { authorization: "Bearer wrong" } }),
      401,
      "unauthorized",
    );
    await expectProblem(
      await call("/v1/labels", { headers: { authorization: "Basic s3cret-key" } }),
      401,
      "unauthorized",
    );
    const ok = await call("/v1/classify", {
      method: "POST",
      body: png,
      headers: { authorization: "Bearer s3cret-key", "content-type": "image/png" },
    });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual(expectedA.gradient.top);
  });

  it("leaves /healthz, / and /openapi.json open, and everything open without API_KEY", async () => {
    expect((await call("/healthz")).status).toBe(200);
    expect((await call("/openapi.json")).status).toBe(200);
    expect((await SELF.fetch(`${URL_BASE}/v1/labels`)).status).toBe(200);
  });
});

describe("keys and quotas in workerd (real D1 and Durable Object)", () => {
  const call = (path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set("x-test-gateway", "keyed");
    return SELF.fetch(`${URL_BASE}${path}`, { ...init, headers });
  };
  const admin = { authorization: "Bearer s3cret-key" };

  it("issues a key through the admin API, counts its requests exactly, answers 429, and revokes it", async () => {
    // Quota windows are whole clock minutes: start well inside one, so the counts below are in one
    // window (a run that crossed a minute boundary saw its count start again, r=1 after 2 requests).
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 50_000) await new Promise((ok) => setTimeout(ok, 60_500 - intoMinute));
    const made = await call("/v1/keys", {
      method: "POST",
      body: JSON.stringify({ name: "workerd", scopes: ["classify"], rpm: 2 }),
      headers: { ...admin, "content-type": "application/json" },
    });
    expect(made.status).toBe(201);
    const { id, key } = (await made.json()) as { id: string; key: string };
    const auth = { authorization: `Bearer ${key}` };
    const first = await call("/v1/classify", {
      method: "POST",
      body: png,
      headers: { ...auth, "content-type": "image/png" },
    });
    expect(first.status).toBe(200);
    expect(first.headers.get("ratelimit-policy")).toBe('"requests";q=2;w=60, "images";q=600;w=60');
    expect(first.headers.get("ratelimit")).toMatch(/^"requests";r=1;t=\d+, "images";r=599;t=\d+$/);
    // Refused for its scope: not counted.
    await expectProblem(await call("/v1/jobs", { headers: auth }), 403, "forbidden");
    const second = await call("/v1/labels", { headers: auth });
    expect(second.status).toBe(200);
    expect(second.headers.get("ratelimit")).toMatch(/^"requests";r=0;/);
    const limited = await expectProblem(await call("/v1/labels", { headers: auth }), 429, "rate-limited");
    expect(limited.limit).toBe("requests");
    const del = await call(`/v1/keys/${id}`, { method: "DELETE", headers: admin });
    expect(del.status).toBe(200);
    await expectProblem(await call("/v1/labels", { headers: auth }), 401, "unauthorized");
    // The static key has the default quota and its own counter.
    expect((await call("/v1/labels", { headers: admin })).headers.get("ratelimit-policy")).toMatch(
      /^"requests";q=600;/,
    );
  });
});

describe("read-only routes", () => {
  it("GET /v1/labels lists every label in class order", async () => {
    const res = await SELF.fetch(`${URL_BASE}/v1/labels`);
    const labels = (await res.json()) as string[];
    expect(labels).toHaveLength(16);
    expect(labels).toContain(expectedA.gradient.top[0].label);
    expect(res.headers.get("x-model-version")).toBe(fx.modelA.version);
  });

  it("GET /v1/model summarises the manifest and says the model is synthetic", async () => {
    const m = (await (await SELF.fetch(`${URL_BASE}/v1/model`)).json()) as Record<string, unknown>;
    expect(m).toMatchObject({
      synthetic: true,
      version: fx.modelA.version,
      precision: "int8",
      num_labels: 16,
    });
    expect(m.stages).toHaveLength(fx.modelA.stages);
  });

  it("GET /healthz is ready and /v1/status reports each warm stage's wasm heap", async () => {
    await classify(png, { headers: { "content-type": "image/png" } });
    const h = await SELF.fetch(`${URL_BASE}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.json()).toMatchObject({ status: "ok", version: fx.modelA.version });
    const s = (await (await SELF.fetch(`${URL_BASE}/v1/status`)).json()) as {
      stages: { index: number; warm: boolean; reachable: boolean; wasmHeapBytes: number }[];
    };
    expect(s.stages.map((x) => x.index)).toEqual(Array.from({ length: fx.modelA.stages }, (_, i) => i));
    for (const st of s.stages) {
      expect(st.reachable).toBe(true);
      expect(st.warm).toBe(true);
      expect(st.wasmHeapBytes).toBeGreaterThan(0);
    }
  });

  it("GET /openapi.json describes every route, and / serves the drop-an-image page", async () => {
    const doc = (await (await SELF.fetch(`${URL_BASE}/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    expect(doc.openapi).toBe("3.1.0");
    for (const p of [
      "/v1/classify",
      "/v1/labels",
      "/v1/model",
      "/v1/status",
      "/healthz",
      "/openapi.json",
      "/",
    ])
      expect(doc.paths).toHaveProperty([p]);
    const page = await SELF.fetch(`${URL_BASE}/`);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(await page.text()).toContain("/v1/classify");
  });
});
