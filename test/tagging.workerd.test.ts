/**
 * The tagging Worker inside workerd: the real bundle (auxiliary Worker), real KV, D1 (migrations
 * applied), R2, Cache API and Queues as Miniflare emulates them, the tiny model's stage Workers,
 * reached through the gateway's `/images/*` forwarding exactly as `npm start` serves it. A second
 * tagging Worker fronts an HTTP origin (an outbound service answering like a static origin). The
 * tagging consumer (its own Worker) drains the real queue: tests wait for it through the public
 * API, as a user would.
 */

import { applyD1Migrations, type D1Migration, env, SELF } from "cloudflare:test";
import { createHash } from "node:crypto";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { fromBase64 } from "./workerd/fixtures.ts";
import { seedModel } from "./workerd/seed.ts";

interface TestEnv {
  MODELS: R2Bucket;
  IMAGES: R2Bucket;
  DB: D1Database;
  TAGGING_QUEUE: Queue<unknown>;
  TAGGING_HTTP: Fetcher;
  TEST_MIGRATIONS: D1Migration[];
}

const fx = inject("workerdFixtures");
const tenv = env as unknown as TestEnv;
const BASE = "https://beit-edge.test";
const gradient = fromBase64(fx.images.gradient);
const wide = fromBase64(fx.images.wide);
const square = fromBase64(fx.images.square);
const sha = (b: ArrayBuffer | Uint8Array) => createHash("sha256").update(new Uint8Array(b)).digest("hex");

/** Polls `f` until it returns a value (the queue runs in the background), at most `ms`. */
async function eventually<T>(f: () => Promise<T | undefined | null | false>, ms = 30_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > until) throw new Error("timed out waiting for the tagging queue");
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function tagsOf(key: string): Promise<Record<string, unknown> | null> {
  const res = await SELF.fetch(`${BASE}/v1/images/tags?key=${encodeURIComponent(key)}`);
  if (res.status === 404) {
    await res.body?.cancel();
    return null;
  }
  return (await res.json()) as Record<string, unknown>;
}

beforeAll(async () => {
  await applyD1Migrations(tenv.DB, tenv.TEST_MIGRATIONS);
  await seedModel(tenv.MODELS, fx.modelA);
  const put = (key: string, bytes: Uint8Array, contentType: string) =>
    tenv.IMAGES.put(key, bytes, { httpMetadata: { contentType, cacheControl: "public, max-age=600" } });
  await put("cats/gradient.png", gradient, "image/png");
  await put("dogs/same-bytes.png", gradient, "image/png");
  await put("wide.png", wide, "image/png");
  await put("square.png", square, "image/png");
  await put("notes.txt", new TextEncoder().encode("not an image"), "text/plain");
  // for bulk tagging and search: distinct images plus one more copy of known bytes
  const pages: [string, Uint8Array, string][] = [
    ["page/0.png", wide, "image/png"],
    ["page/1.png", square, "image/png"],
    ["page/2.png", gradient, "image/png"],
    ["page/3.jpeg", fromBase64(fx.images.exifUpright), "image/jpeg"],
  ];
  for (const [key, bytes, type] of pages) await put(key, bytes, type);
});

describe("tagging Worker (R2 origin, through the gateway)", () => {
  it("streams the image unchanged and untagged first, then with the labels once the queue has run", async () => {
    const first = await SELF.fetch(`${BASE}/images/cats/gradient.png`);
    expect(first.status).toBe(200);
    expect(sha(await first.arrayBuffer())).toBe(sha(gradient));
    expect(first.headers.get("content-type")).toBe("image/png");
    expect(first.headers.get("cache-control")).toBe("public, max-age=600");
    const obj = await tenv.IMAGES.head("cats/gradient.png");
    expect(first.headers.get("etag")).toBe(obj?.httpEtag);
    expect(first.headers.get("image-labels-status")).toBe("pending");
    expect(first.headers.has("image-labels")).toBe(false);

    const tagged = await eventually(async () => {
      const r = await SELF.fetch(`${BASE}/images/cats/gradient.png`);
      const body = await r.arrayBuffer();
      return r.headers.has("image-labels") ? { r, body } : null;
    });
    expect(sha(tagged.body)).toBe(sha(gradient));
    // the labels are the core's, best first, score as sf-decimal (3 fractional digits)
    const expected = fx.expected.modelA.gradient.top;
    const header = tagged.r.headers.get("image-labels") ?? "";
    const firstMember = header.split(/, (?=["%])/)[0];
    expect(firstMember.startsWith(`"${expected[0].label}";score=`)).toBe(true);
    const score = Number(/score=([0-9.]+)/.exec(firstMember)?.[1]);
    expect(Math.abs(score - expected[0].score)).toBeLessThanOrEqual(0.0005);
    expect(tagged.r.headers.get("image-labels-model")).toContain(`version="${fx.modelA.version}"`);
    expect(tagged.r.headers.get("image-labels-status")).toBe("tagged");
    const rec = await tagsOf("cats/gradient.png");
    expect(rec).toMatchObject({
      status: "tagged",
      width: 40,
      height: 30,
      format: "png",
      sha256: sha(gradient),
    });
    expect((rec as { labels: { label: string }[] }).labels[0].label).toBe(expected[0].label);
  });

  it("passes Range and conditional requests through (206, 304), with the labels once known", async () => {
    const etag = (await tenv.IMAGES.head("cats/gradient.png"))?.httpEtag ?? "";
    const part = await SELF.fetch(`${BASE}/images/cats/gradient.png`, { headers: { range: "bytes=0-15" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 0-15/${gradient.byteLength}`);
    expect(sha(await part.arrayBuffer())).toBe(sha(gradient.subarray(0, 16)));
    const nm = await SELF.fetch(`${BASE}/images/cats/gradient.png`, { headers: { "if-none-match": etag } });
    expect(nm.status).toBe(304);
    await nm.arrayBuffer();
  });

  it("classifies the same bytes under two keys once", async () => {
    await (await SELF.fetch(`${BASE}/images/dogs/same-bytes.png`)).arrayBuffer();
    const twin = await eventually(() => tagsOf("dogs/same-bytes.png"));
    const original = await eventually(() => tagsOf("cats/gradient.png"));
    expect(twin.status).toBe("tagged");
    expect(twin.sha256).toBe(original.sha256);
    expect(twin.labels).toEqual(original.labels);
    expect(twin.classified).toBe(false); // labels reused: no model call
  });

  it("a burst of requests for a new image is classified once", async () => {
    const rs = await Promise.all(Array.from({ length: 12 }, () => SELF.fetch(`${BASE}/images/wide.png`)));
    for (const r of rs) expect(sha(await r.arrayBuffer())).toBe(sha(wide));
    const rec = await eventually(() => tagsOf("wide.png"));
    expect(rec).toMatchObject({ status: "tagged", classified: true, width: 97, height: 23 });
  });

  it("a non-image passes through untouched and is recorded as skipped", async () => {
    const r = await SELF.fetch(`${BASE}/images/notes.txt`);
    expect(await r.text()).toBe("not an image");
    expect(r.headers.get("content-type")).toBe("text/plain");
    const rec = await eventually(() => tagsOf("notes.txt"));
    expect(rec).toMatchObject({ status: "skipped", reason: "not-an-image", labels: [] });
    const again = await eventually(async () => {
      const x = await SELF.fetch(`${BASE}/images/notes.txt`);
      await x.arrayBuffer();
      return x.headers.get("image-labels-status")?.startsWith("skipped") ? x : null;
    });
    expect(again.headers.get("image-labels-status")).toBe('skipped;reason="not-an-image"');
  });

  it("handles R2 event notifications in R2's message shape", async () => {
    const key = "uploads/square.png";
    await tenv.IMAGES.put(key, square, { httpMetadata: { contentType: "image/png" } });
    const obj = await tenv.IMAGES.head(key);
    await tenv.TAGGING_QUEUE.send({
      account: "3f4b7e3dcab231cbfdaa90a6a28bd548",
      action: "PutObject",
      bucket: "beit-edge-images",
      object: { key, size: square.byteLength, eTag: obj?.etag },
      eventTime: new Date().toISOString(),
    });
    const rec = await eventually(() => tagsOf(key));
    expect(rec).toMatchObject({ status: "tagged", width: 224, height: 224, etag: obj?.etag });
    await tenv.TAGGING_QUEUE.send({
      account: "a",
      action: "DeleteObject",
      bucket: "beit-edge-images",
      object: { key },
    });
    await eventually(async () => (await tagsOf(key)) === null);
  });

  it("search pages through images carrying a label, best score first", async () => {
    const res = await SELF.fetch(`${BASE}/v1/images/backfill`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ bucket: "beit-edge-images", prefix: "page/" }),
    });
    expect(await res.json()).toMatchObject({ enqueued: 4, cursor: null });
    await eventually(async () => {
      const s = (await (await SELF.fetch(`${BASE}/v1/images/stats?prefix=page/`)).json()) as {
        tagged: number;
      };
      return s.tagged >= 4;
    }, 60_000);
    const label = fx.expected.modelA.gradient.top[0].label;
    const seen: { id: number; score: number }[] = [];
    let cursor: string | null = null;
    do {
      const page = (await (
        await SELF.fetch(
          `${BASE}/v1/images?label=${encodeURIComponent(label)}&limit=2${cursor ? `&cursor=${cursor}` : ""}`,
        )
      ).json()) as { items: { id: number; score: number }[]; next_cursor: string | null };
      seen.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor);
    // gradient under three keys (cats/, dogs/, page/) at least; every tagged image of the tiny
    // model's 16 classes carries most labels
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(new Set(seen.map((s) => s.id)).size).toBe(seen.length);
    expect(seen).toEqual([...seen].sort((a, b) => b.score - a.score || a.id - b.id));
  });
});

describe("tagging Worker (HTTP origin)", () => {
  const get = (path: string, init?: RequestInit) =>
    tenv.TAGGING_HTTP.fetch(`https://cdn.test/images/${path}`, init);

  it("returns the origin's bytes and headers, Range and 304 unchanged; origin errors pass through", async () => {
    const direct = await get("photo.png");
    expect(direct.status).toBe(200);
    const bytes = await direct.arrayBuffer();
    expect(direct.headers.get("x-origin")).toBe("static");
    expect(direct.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    const etag = direct.headers.get("etag") ?? "";
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
    const part = await get("photo.png", { headers: { range: "bytes=100-199" } });
    expect(part.status).toBe(206);
    expect(sha(await part.arrayBuffer())).toBe(sha(new Uint8Array(bytes).subarray(100, 200)));
    const nm = await get("photo.png", { headers: { "if-none-match": etag } });
    expect(nm.status).toBe(304);
    await nm.arrayBuffer();
    const missing = await get("missing.jpg");
    expect(missing.status).toBe(404);
    expect(await missing.text()).toBe("not found");
    const err = await get("status/503");
    expect(err.status).toBe(503);
    expect(await err.text()).toBe("status 503");
    const open = await tenv.TAGGING_HTTP.fetch("https://cdn.test/images//evil.example/x.png");
    expect(open.status).toBe(400);
    await open.arrayBuffer();
  });
});
