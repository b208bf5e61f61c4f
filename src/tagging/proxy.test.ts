/**
 * The hot path in Node against a real HTTP origin (node:http, scripts/lib/image-origin.ts), real
 * KV, R2 and Cache API from Miniflare, and a recording queue producer (the real queue and consumer
 * are exercised by the workerd and wrangler dev tests). Fault injection wraps the real bindings.
 */
import { createHash } from "node:crypto";
import { Response as MfResponse } from "miniflare";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type OriginFile, type RunningOrigin, startImageOrigin } from "../../scripts/lib/image-origin.ts";
import { type LocalBindings, localBindings } from "../../test/helpers/local-bindings.ts";
import { testPng } from "../../test/helpers/png.ts";
import { parseTaggingConfig, type TaggingConfig } from "./config.ts";
import { LABELS_HEADER, MODEL_HEADER, STATUS_HEADER, statusEntry, taggedEntry } from "./entry.ts";
import { locatorOf, tagKey, validatorsFromHeaders } from "./identity.ts";
import type { TagMessage } from "./messages.ts";
import { handleImageRequest, PendingSet, type ProxyDeps } from "./proxy.ts";

const sha = (b: ArrayBuffer | Uint8Array) => createHash("sha256").update(new Uint8Array(b)).digest("hex");

let local: LocalBindings;
let kv: KVNamespace;
let bucket: R2Bucket;
let cache: Cache;
let origin: RunningOrigin;
const cat = testPng(64, 48, 1);
const dog = testPng(32, 32, 2);

function recordingQueue(fail = false): Queue<TagMessage> & { sent: TagMessage[] } {
  const sent: TagMessage[] = [];
  return {
    sent,
    async send(body: TagMessage) {
      if (fail) throw new Error("queue full");
      sent.push(body);
    },
    async sendBatch() {
      throw new Error("not used");
    },
  } as unknown as Queue<TagMessage> & { sent: TagMessage[] };
}

interface Harness {
  deps: ProxyDeps;
  queue: ReturnType<typeof recordingQueue>;
  drain(): Promise<void>;
  request(path: string, init?: RequestInit): Promise<Response>;
}

function harness(config: TaggingConfig, over: Partial<ProxyDeps> = {}, failQueue = false): Harness {
  const queue = recordingQueue(failQueue);
  const waits: Promise<unknown>[] = [];
  const deps: ProxyDeps = {
    config,
    origin: { fetch: globalThis.fetch, bucket, bucketName: "site-images" },
    tags: kv,
    queue,
    markers: cache,
    pending: new PendingSet(),
    waitUntil: (p) => waits.push(p),
    log: () => {}, // failures are asserted through their effect on the response
    ...over,
  };
  return {
    deps,
    queue,
    drain: async () => {
      while (waits.length) await waits.shift();
    },
    request: async (path, init) => {
      const res = await handleImageRequest(new Request(`http://site.test${path}`, init), deps);
      if (!res) throw new Error(`not handled: ${path}`);
      return res;
    },
  };
}

const files = new Map<string, OriginFile>();
let httpConfig: TaggingConfig;
const r2Config = parseTaggingConfig({ R2_PREFIX: "site/" }, true);

beforeAll(async () => {
  local = localBindings({ kvNamespaces: ["TAGS"], r2Buckets: ["IMAGES"] });
  kv = await local.kv("TAGS");
  bucket = await local.bucket("IMAGES");
  // Miniflare's proxy can only carry its own Response class into cache.put: adapt at the boundary.
  const mfCache = (await local.mf.getCaches()).default;
  cache = {
    match: (url: string) => mfCache.match(url),
    put: async (url: string, res: Response) =>
      mfCache.put(url, new MfResponse(await res.text(), { headers: [...res.headers] })),
    delete: (url: string) => mfCache.delete(url),
  } as unknown as Cache;
  files.set("cat.png", {
    bytes: cat,
    contentType: "image/png",
    headers: { "cache-control": "public, max-age=3600", "x-origin": "yes" },
  });
  files.set("dog.png", { bytes: dog, contentType: "image/png" });
  files.set("page.html", { bytes: new TextEncoder().encode("<p>hi</p>"), contentType: "text/html" });
  origin = await startImageOrigin(files);
  httpConfig = parseTaggingConfig({ ORIGIN_URL: `${origin.url}static/` }, false);
  // the origin serves /static/<name>: mirror the files under that path
  for (const [k, v] of [...files]) files.set(`static/${k}`, v);
  await bucket.put("site/cat.png", cat, {
    httpMetadata: { contentType: "image/png", cacheControl: "max-age=60" },
  });
});

afterAll(async () => {
  await origin?.stop();
  await local?.dispose();
});

beforeEach(async () => {
  const keys = await kv.list();
  for (const k of keys.keys) await kv.delete(k.name);
});

describe("HTTP origin pass-through", () => {
  it("returns the origin's bytes, status and headers unchanged, marks it pending and enqueues once", async () => {
    const h = harness(httpConfig);
    const direct = await fetch(`${origin.url}static/cat.png`);
    const directBytes = await direct.arrayBuffer();
    const res = await h.request("/images/cat.png");
    expect(res.status).toBe(200);
    expect(sha(await res.arrayBuffer())).toBe(sha(directBytes));
    for (const name of [
      "content-type",
      "etag",
      "last-modified",
      "cache-control",
      "content-length",
      "accept-ranges",
      "x-origin",
    ])
      expect(res.headers.get(name), name).toBe(direct.headers.get(name));
    expect(res.headers.get(STATUS_HEADER)).toBe("pending");
    expect(res.headers.has(LABELS_HEADER)).toBe(false);
    await h.drain();
    expect(h.queue.sent).toHaveLength(1);
    expect(h.queue.sent[0]).toMatchObject({
      type: "tag",
      source: { kind: "origin", url: `${origin.url}static/cat.png` },
      publicUrl: "http://site.test/images/cat.png",
    });
  });

  it("passes Range (206) and conditional requests (304) through", async () => {
    const h = harness(httpConfig);
    const part = await h.request("/images/cat.png", { headers: { range: "bytes=10-29" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 10-29/${cat.byteLength}`);
    expect(sha(await part.arrayBuffer())).toBe(sha(cat.subarray(10, 30)));
    const etag = part.headers.get("etag") ?? "";
    const notModified = await h.request("/images/cat.png", { headers: { "if-none-match": etag } });
    expect(notModified.status).toBe(304);
    expect(notModified.headers.get("etag")).toBe(etag);
    expect(await notModified.arrayBuffer()).toHaveProperty("byteLength", 0);
    const head = await h.request("/images/cat.png", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(cat.byteLength));
    const bad = await h.request("/images/cat.png", { headers: { range: `bytes=${cat.byteLength + 5}-` } });
    expect(bad.status).toBe(416);
    // the forwarded request carried the client's Range and If-None-Match, nothing else of note
    const seen = origin.requests.filter((r) => r.path === "/static/cat.png");
    expect(seen.some((r) => r.headers.range === "bytes=10-29")).toBe(true);
    expect(seen.some((r) => r.headers["if-none-match"] === etag)).toBe(true);
  });

  it("a burst of requests for a new image enqueues one job", async () => {
    const h = harness(httpConfig);
    const responses = await Promise.all(Array.from({ length: 25 }, () => h.request("/images/dog.png")));
    for (const r of responses) expect(sha(await r.arrayBuffer())).toBe(sha(dog));
    await h.drain();
    expect(h.queue.sent).toHaveLength(1);
    // a second isolate (fresh in-isolate set) in the same colo: the Cache API marker holds it back
    const other = harness(httpConfig);
    await (await other.request("/images/dog.png")).arrayBuffer();
    await other.drain();
    expect(other.queue.sent).toHaveLength(0);
  });

  it("adds the stored labels and model on a hit whose validators match, and only then", async () => {
    const h = harness(httpConfig);
    const direct = await fetch(`${origin.url}static/cat.png`);
    await direct.arrayBuffer();
    const validators = validatorsFromHeaders(200, direct.headers);
    const key = await tagKey(locatorOf({ kind: "origin", url: `${origin.url}static/cat.png` }));
    const model = { id: "microsoft/beit-base-patch16-224-pt22k-ft22k", version: "abc123", synthetic: false };
    const labels = [
      { label: "tabby, tabby cat", score: 0.41 },
      { label: "tiger cat", score: 0.12 },
    ];
    await kv.put(key, JSON.stringify(taggedEntry(validators, labels, model)));
    const res = await h.request("/images/cat.png");
    expect(res.headers.get(LABELS_HEADER)).toBe('"tabby, tabby cat";score=0.41, "tiger cat";score=0.12');
    expect(res.headers.get(MODEL_HEADER)).toBe(
      '"microsoft/beit-base-patch16-224-pt22k-ft22k";version="abc123"',
    );
    expect(res.headers.get(STATUS_HEADER)).toBe("tagged");
    expect(sha(await res.arrayBuffer())).toBe(sha(cat));
    await h.drain();
    expect(h.queue.sent).toHaveLength(0);
    // a 304 for the same version carries the labels too
    const nm = await h.request("/images/cat.png", {
      headers: { "if-none-match": direct.headers.get("etag") ?? "" },
    });
    expect(nm.status).toBe(304);
    expect(nm.headers.get(LABELS_HEADER)).toContain("tabby");
    // the entry of another version is not used: the image was replaced at the origin
    const before = files.get("static/cat.png");
    files.set("static/cat.png", { bytes: testPng(64, 48, 9), contentType: "image/png" });
    try {
      const replaced = await h.request("/images/cat.png");
      expect(replaced.headers.has(LABELS_HEADER)).toBe(false);
      expect(replaced.headers.get(STATUS_HEADER)).toBe("pending");
      await replaced.arrayBuffer();
      await h.drain();
      expect(h.queue.sent).toHaveLength(1);
    } finally {
      if (before) files.set("static/cat.png", before);
    }
  });

  it("a skipped image says why, without labels, and is not enqueued again", async () => {
    const h = harness(httpConfig);
    const direct = await fetch(`${origin.url}static/page.html`);
    await direct.arrayBuffer();
    const key = await tagKey(locatorOf({ kind: "origin", url: `${origin.url}static/page.html` }));
    await kv.put(
      key,
      JSON.stringify(statusEntry(validatorsFromHeaders(200, direct.headers), "skipped", "not-an-image")),
    );
    const res = await h.request("/images/page.html");
    expect(await res.text()).toBe("<p>hi</p>");
    expect(res.headers.get("content-type")).toBe("text/html");
    expect(res.headers.get(STATUS_HEADER)).toBe('skipped;reason="not-an-image"');
    await h.drain();
    expect(h.queue.sent).toHaveLength(0);
  });

  it("origin errors pass through unchanged and enqueue nothing; an unreachable origin is a 502 problem", async () => {
    const h = harness(httpConfig);
    const missing = await h.request("/images/nope.png");
    expect(missing.status).toBe(404);
    expect(await missing.text()).toBe("not found");
    expect(missing.headers.has(STATUS_HEADER)).toBe(false);
    const down = harness(parseTaggingConfig({ ORIGIN_URL: "http://127.0.0.1:9/" }, false));
    const unreachable = await down.request("/images/cat.png");
    expect(unreachable.status).toBe(502);
    expect(unreachable.headers.get("content-type")).toBe("application/problem+json");
    expect(((await unreachable.json()) as { code: string }).code).toBe("origin-unreachable");
    const atRoot = harness(parseTaggingConfig({ ORIGIN_URL: origin.url }, false));
    const s500 = await atRoot.request("/images/status/500");
    expect(s500.status).toBe(500);
    expect(await s500.text()).toBe("status 500");
    await h.drain();
    await atRoot.drain();
    expect(h.queue.sent.length + atRoot.queue.sent.length).toBe(0);
  });

  it("is never an open proxy: only paths under the prefix, only on the origin, only GET/HEAD", async () => {
    const h = harness(httpConfig);
    expect(await handleImageRequest(new Request("http://site.test/other/cat.png"), h.deps)).toBeNull();
    // the URL parser already resolves these: they leave the prefix and are not handled at all
    for (const path of ["/images/%2e%2e/secret", "/images/a/%2E%2E/%2e%2e/secret"])
      expect(await handleImageRequest(new Request(`http://site.test${path}`), h.deps), path).toBeNull();
    for (const path of [
      "/images//evil.example/x.png",
      "/images/..%2fsecret",
      "/images/a%5c..%5csecret",
      "/images/",
    ]) {
      const res = await h.request(path);
      expect(res.status, path).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe("invalid-path");
    }
    const post = await h.request("/images/cat.png", { method: "POST", body: "x" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    expect(origin.requests.some((r) => r.path.includes("secret") || r.path.includes("evil"))).toBe(false);
  });
});

describe("fail open", () => {
  it("a failing KV, a slow KV or a full queue never changes the image response", async () => {
    const throwing = { get: async () => Promise.reject(new Error("KV down")) } as unknown as KVNamespace;
    const slow = {
      get: () => new Promise((ok) => setTimeout(() => ok(null), 3000)),
    } as unknown as KVNamespace;
    for (const [name, over, failQueue] of [
      ["kv throws", { tags: throwing }, false],
      ["kv slow", { tags: slow }, false],
      ["queue full", {}, true],
    ] as const) {
      const h = harness(httpConfig, over, failQueue);
      const t0 = performance.now();
      const res = await h.request("/images/cat.png");
      expect(res.status, name).toBe(200);
      expect(sha(await res.arrayBuffer()), name).toBe(sha(cat));
      expect(performance.now() - t0, name).toBeLessThan(1500);
      await h.drain();
    }
    // after a failed send the job is not suppressed: the next request tries again
    files.set("static/bird.png", { bytes: testPng(16, 16, 3), contentType: "image/png" });
    const h = harness(httpConfig, {}, true);
    await (await h.request("/images/bird.png")).arrayBuffer();
    await h.drain();
    expect(h.queue.sent).toHaveLength(0);
    const retry = harness(httpConfig);
    retry.deps.pending = h.deps.pending;
    await (await retry.request("/images/bird.png")).arrayBuffer();
    await retry.drain();
    expect(retry.queue.sent).toHaveLength(1);
  });
});

describe("R2 origin", () => {
  it("serves the object like an HTTP origin: bytes, metadata, ETag, Range, 304, HEAD, 416, 404", async () => {
    const h = harness(r2Config);
    const res = await h.request("/images/cat.png");
    expect(res.status).toBe(200);
    expect(sha(await res.arrayBuffer())).toBe(sha(cat));
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(res.headers.get("cache-control")).toBe("max-age=60");
    expect(res.headers.get("content-length")).toBe(String(cat.byteLength));
    const obj = await bucket.head("site/cat.png");
    expect(res.headers.get("etag")).toBe(obj?.httpEtag);
    await h.drain();
    expect(h.queue.sent).toEqual([
      expect.objectContaining({ source: { kind: "r2", bucket: "site-images", key: "site/cat.png" } }),
    ]);

    const part = await h.request("/images/cat.png", { headers: { range: "bytes=-16" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(
      `bytes ${cat.byteLength - 16}-${cat.byteLength - 1}/${cat.byteLength}`,
    );
    expect(sha(await part.arrayBuffer())).toBe(sha(cat.subarray(cat.byteLength - 16)));
    const nm = await h.request("/images/cat.png", { headers: { "if-none-match": obj?.httpEtag ?? "" } });
    expect(nm.status).toBe(304);
    const headNm = await h.request("/images/cat.png", {
      method: "HEAD",
      headers: { "if-none-match": obj?.httpEtag ?? "" },
    });
    expect(headNm.status).toBe(304);
    const head = await h.request("/images/cat.png", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(cat.byteLength));
    const pre = await h.request("/images/cat.png", { headers: { "if-match": '"nope"' } });
    expect(pre.status).toBe(412);
    const unsat = await h.request("/images/cat.png", { headers: { range: `bytes=${cat.byteLength + 10}-` } });
    expect(unsat.status).toBe(416);
    expect(unsat.headers.get("content-range")).toBe(`bytes */${cat.byteLength}`);
    const missing = await h.request("/images/none.png");
    expect(missing.status).toBe(404);
  });
});
