/**
 * CDN image tagging end to end over real HTTP: the tiny synthetic model published into a temporary
 * local R2, a node:http static origin (scripts/lib/image-origin.ts) on loopback, and the real
 * `wrangler dev` (gateway + tagging Worker + tagging consumer + every stage Worker, D1 migrations
 * applied, local KV and Queues) with the tagging Worker fronting that origin; sample images seeded
 * into the local IMAGES bucket for bulk tagging. Plain fetch, bounded by timeouts, the server always stopped.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sampleJpeg } from "../bench/lib/sample-images.ts";
import { type OriginFile, type RunningOrigin, startImageOrigin } from "../scripts/lib/image-origin.ts";
import { BUCKETS } from "../src/topology.ts";
import { testPng } from "./helpers/png.ts";
import { startTinyService, type TinyService } from "./helpers/tiny-service.ts";

let svc: TinyService | null = null;
let origin: RunningOrigin | null = null;
const sha = (b: ArrayBuffer | Uint8Array) => createHash("sha256").update(new Uint8Array(b)).digest("hex");
const photo = testPng(64, 48, 21);
const files = new Map<string, OriginFile>();

/**
 * Polls `f` until it returns a value. Generous: the first job also warms every stage (cold). A
 * poll that stalls (before the --single-threaded-gc fix: locally a request can stall while the consumer
 * runs in the same workerd process) is abandoned after 30 s and counted, not fatal.
 */
let stalls = 0;
async function eventually<T>(f: () => Promise<T | null | undefined | false>, ms = 180_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    let v: T | null | undefined | false = null;
    try {
      v = await f();
    } catch (e) {
      if ((e as Error).name !== "TimeoutError") throw e;
      stalls++;
      console.warn(`tagging e2e: a request stalled for 30 s (${stalls} so far)`);
    }
    if (v) return v;
    if (Date.now() > until) throw new Error("timed out waiting for the tagging queue");
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function lookup(url: string): Promise<Record<string, unknown> | null> {
  const res = await fetch(`${svc!.url}/v1/images/tags?url=${encodeURIComponent(url)}`);
  if (res.status === 404) {
    await res.body?.cancel();
    return null;
  }
  return (await res.json()) as Record<string, unknown>;
}

beforeAll(async () => {
  const bulk: Record<string, { bytes: Uint8Array; contentType: string }> = {};
  for (let i = 0; i < 7; i++)
    bulk[`bulk/${i}.jpg`] = { bytes: await sampleJpeg(100 + i, 96, 64), contentType: "image/jpeg" };
  files.set("photo.png", {
    bytes: photo,
    contentType: "image/png",
    headers: { "cache-control": "public, max-age=60" },
  });
  files.set("copy/photo.png", { bytes: photo, contentType: "image/png" });
  files.set("burst.png", { bytes: testPng(50, 50, 22), contentType: "image/png" });
  files.set("readme.txt", { bytes: new TextEncoder().encode("hello"), contentType: "text/plain" });
  files.set("big.png", { bytes: testPng(400, 400, 23), contentType: "image/png" });
  origin = await startImageOrigin(files);
  svc = await startTinyService({
    seed: 11,
    images: bulk,
    // The proxy maps paths to this origin; its consumer fetches only from the same one.
    varsByKind: {
      tagging: { ORIGIN_URL: origin.url },
      "tagging-consumer": { ORIGIN_URL: origin.url, TAG_MAX_IMAGE_BYTES: "100000" },
    },
  });
}, 300_000);

afterAll(async () => {
  await svc?.stop();
  await origin?.stop();
}, 30_000);

describe("tagging over wrangler dev", () => {
  it("first request untagged, bytes and headers as the origin's; tagged once the queue drains", async () => {
    const direct = await fetch(`${origin!.url}photo.png`);
    const directBytes = await direct.arrayBuffer();
    const first = await fetch(`${svc!.url}/images/photo.png`);
    expect(first.status).toBe(200);
    expect(sha(await first.arrayBuffer())).toBe(sha(directBytes));
    for (const h of ["etag", "last-modified", "cache-control", "content-type", "content-length"])
      expect(first.headers.get(h), h).toBe(direct.headers.get(h));
    expect(first.headers.get("image-labels-status")).toBe("pending");
    const tagged = await eventually(async () => {
      const r = await fetch(`${svc!.url}/images/photo.png`, { signal: AbortSignal.timeout(30_000) });
      const body = await r.arrayBuffer();
      return r.headers.has("image-labels") ? { r, body } : null;
    });
    expect(sha(tagged.body)).toBe(sha(photo));
    expect(tagged.r.headers.get("image-labels")).toMatch(/^"synthetic-[a-z]+-\d+";score=\d\.\d{1,3}(, |$)/);
    expect(tagged.r.headers.get("image-labels-model")).toMatch(/;synthetic$/);
    // Range and conditional requests pass through
    const part = await fetch(`${svc!.url}/images/photo.png`, { headers: { range: "bytes=4-11" } });
    expect(part.status).toBe(206);
    expect(sha(await part.arrayBuffer())).toBe(sha(photo.subarray(4, 12)));
    const nm = await fetch(`${svc!.url}/images/photo.png`, {
      headers: { "if-none-match": direct.headers.get("etag") ?? "" },
    });
    expect(nm.status).toBe(304);
    expect(nm.headers.has("image-labels")).toBe(true);
    await nm.arrayBuffer();
  }, 240_000);

  it("the same bytes under a second URL are not classified again; a burst enqueues once", async () => {
    await (await fetch(`${svc!.url}/images/copy/photo.png`)).arrayBuffer();
    const copy = await eventually(() => lookup(`${origin!.url}copy/photo.png`));
    const orig = await eventually(() => lookup(`${origin!.url}photo.png`));
    expect(copy).toMatchObject({ status: "tagged", classified: false, sha256: sha(photo) });
    expect(copy.labels).toEqual(orig.labels);
    const before = origin!.requests.filter((r) => r.path === "/burst.png").length;
    const rs = await Promise.all(Array.from({ length: 10 }, () => fetch(`${svc!.url}/images/burst.png`)));
    for (const r of rs) await r.arrayBuffer();
    await eventually(() => lookup(`${origin!.url}burst.png`));
    await new Promise((r) => setTimeout(r, 2000)); // any duplicate job would have run by now
    // 10 proxied requests + exactly one fetch by the consumer
    expect(origin!.requests.filter((r) => r.path === "/burst.png").length - before).toBe(11);
  });

  it("non-image and oversized files pass through and are recorded with a status; origin errors pass through", async () => {
    const txt = await fetch(`${svc!.url}/images/readme.txt`);
    expect(await txt.text()).toBe("hello");
    const big = await fetch(`${svc!.url}/images/big.png`);
    expect(sha(await big.arrayBuffer())).toBe(sha(files.get("big.png")!.bytes));
    expect(await eventually(() => lookup(`${origin!.url}readme.txt`))).toMatchObject({
      status: "skipped",
      reason: "not-an-image",
    });
    expect(await eventually(() => lookup(`${origin!.url}big.png`))).toMatchObject({
      status: "skipped",
      reason: "image-too-large",
    });
    const err = await fetch(`${svc!.url}/images/status/502`);
    expect(err.status).toBe(502);
    expect(await err.text()).toBe("status 502");
    const missing = await fetch(`${svc!.url}/images/nope.png`);
    expect(missing.status).toBe(404);
    await missing.arrayBuffer();
  });

  it("bulk-tags a bucket prefix with npm run tag's API and finds the images by label", async () => {
    const r = await fetch(`${svc!.url}/v1/images/backfill`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ bucket: BUCKETS.IMAGES, prefix: "bulk/" }),
    });
    expect(await r.json()).toMatchObject({ listed: 7, enqueued: 7, cursor: null });
    await eventually(async () => {
      const s = (await (await fetch(`${svc!.url}/v1/images/stats?prefix=bulk/`)).json()) as {
        tagged: number;
      };
      return s.tagged >= 7;
    }, 120_000);
    const rec = (await (await fetch(`${svc!.url}/v1/images/tags?key=bulk/0.jpg`)).json()) as {
      labels: { label: string }[];
    };
    const label = rec.labels[0].label;
    const found = (await (
      await fetch(`${svc!.url}/v1/images?label=${encodeURIComponent(label)}`)
    ).json()) as {
      items: { key: string | null }[];
    };
    expect(found.items.map((i) => i.key)).toContain("bulk/0.jpg");
  });
});
