/**
 * The tagging consumer in Node on Miniflare's D1 (migrations applied), KV and R2, a real HTTP
 * origin, and a counting stand-in for the classification core (the real core and model run in the
 * workerd and wrangler dev tests). Queue messages are handed over as MessageBatch objects with
 * the exact bodies producers send, R2 event notifications included.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type RunningOrigin, startImageOrigin } from "../../scripts/lib/image-origin.ts";
import { testD1 } from "../../test/helpers/d1.ts";
import { type LocalBindings, localBindings } from "../../test/helpers/local-bindings.ts";
import { testPng } from "../../test/helpers/png.ts";
import { AppError } from "../shared/errors.ts";
import { parseTaggingConfig, type TaggingConfig } from "./config.ts";
import {
  handleTagBatch,
  RetryableTagError,
  runTagJob,
  type TagClassifier,
  type TaggerDeps,
} from "./consumer.ts";
import { LABELS_HEADER, MODEL_HEADER, parseEntry, STATUS_HEADER } from "./entry.ts";
import { locatorOf, tagKey } from "./identity.ts";
import type { TagMessage } from "./messages.ts";
import { handleImageRequest, PendingSet } from "./proxy.ts";
import { ImageStore } from "./store.ts";

let d1: Awaited<ReturnType<typeof testD1>>;
let local: LocalBindings;
let kv: KVNamespace;
let bucket: R2Bucket;
let origin: RunningOrigin;
let store: ImageStore;
let httpConfig: TaggingConfig;
const r2Config = parseTaggingConfig({}, true);
const cat = testPng(40, 30, 1);
const MODEL = { id: "test/model", version: "v1", synthetic: true };

/** A stand-in for the core: deterministic labels from the bytes, every call counted. */
function countingClassifier(fail?: unknown): TagClassifier & { calls: number; version: string } {
  const c = {
    calls: 0,
    version: MODEL.version,
    async activeModel() {
      return { ...MODEL, version: c.version };
    },
    async classify(bytes: Uint8Array, topK: number) {
      c.calls++;
      if (fail) throw fail;
      const h = createHash("sha256").update(bytes).digest();
      const labels = Array.from({ length: 12 }, (_, i) => ({
        label: i === 0 ? "tabby, tabby cat" : `label-${h[i]}-${i}`,
        index: i,
        score: 0.4 / (i + 1),
      })).slice(0, topK);
      return {
        labels,
        image: { width: 40, height: 30, format: "png" },
        model: { ...MODEL, version: c.version },
      };
    },
  };
  return c;
}

function deps(classifier: TagClassifier, config = httpConfig): TaggerDeps {
  return {
    config,
    origin: { fetch: globalThis.fetch, bucket, bucketName: "site-images" },
    store,
    tags: kv,
    classifier,
    log: () => {},
  };
}

function batchOf(bodies: unknown[], attempts = 1) {
  const acked: number[] = [];
  const retried: number[] = [];
  const messages = bodies.map((body, i) => ({
    id: `m${i}`,
    timestamp: new Date(),
    body,
    attempts,
    ack: () => acked.push(i),
    retry: () => retried.push(i),
  }));
  return {
    batch: {
      queue: "beit-edge-tagging",
      messages,
      ackAll() {},
      retryAll() {},
    } as unknown as MessageBatch<unknown>,
    acked,
    retried,
  };
}

const tagMsg = (path: string): TagMessage => ({
  type: "tag",
  source: { kind: "origin", url: `${origin.url}${path}` },
});

beforeAll(async () => {
  d1 = await testD1();
  store = new ImageStore(d1.db);
  local = localBindings({ kvNamespaces: ["TAGS"], r2Buckets: ["IMAGES"] });
  kv = await local.kv("TAGS");
  bucket = await local.bucket("IMAGES");
  const files = new Map([
    ["a/cat.png", { bytes: cat, contentType: "image/png" }],
    ["b/same-cat.png", { bytes: cat, contentType: "image/png" }],
    ["page.html", { bytes: new TextEncoder().encode("<html></html>"), contentType: "text/html" }],
    ["big.png", { bytes: testPng(200, 200, 5), contentType: "image/png" }],
    ["broken.png", { bytes: new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]), contentType: "image/png" }],
  ]);
  origin = await startImageOrigin(files);
  httpConfig = parseTaggingConfig(
    { ORIGIN_URL: origin.url, TAG_MAX_IMAGE_BYTES: "50000", TAG_MIN_SCORE: "0.05" },
    false,
  );
});
afterAll(async () => {
  await origin?.stop();
  await local?.dispose();
  await d1?.dispose();
});
beforeEach(async () => {
  await d1.db.batch([d1.db.prepare("DELETE FROM image_labels"), d1.db.prepare("DELETE FROM images")]);
  for (const k of (await kv.list()).keys) await kv.delete(k.name);
});

describe("tagging consumer", () => {
  it("tags an image: D1 row + labels above the minimum score, KV entry the proxy then serves", async () => {
    const model = countingClassifier();
    const d = deps(model);
    const { batch, acked } = batchOf([tagMsg("a/cat.png")]);
    expect(await handleTagBatch(batch, d, 3)).toEqual([{ outcome: "tagged", classified: true, labels: 8 }]);
    expect(acked).toEqual([0]);
    expect(model.calls).toBe(1);
    const row = await store.get(`url:${origin.url}a/cat.png`);
    expect(row).toMatchObject({
      status: "tagged",
      width: 40,
      height: 30,
      format: "png",
      model: { version: "v1" },
    });
    expect(row?.sha256).toBe(createHash("sha256").update(cat).digest("hex"));
    // top_k 10 of the 12, then score >= 0.05: 0.4/(i+1) >= 0.05 for i < 8
    expect(row?.labels).toHaveLength(8);
    expect(row?.labels.every((l) => l.score >= 0.05)).toBe(true);
    const entry = parseEntry(await kv.get(await tagKey(`url:${origin.url}a/cat.png`), "json"));
    expect(entry?.labels?.startsWith('"tabby, tabby cat";score=0.4, ')).toBe(true);
    expect(entry?.model).toBe('"test/model";version="v1";synthetic');

    // the proxy in front of the same origin now adds the labels
    const res = await handleImageRequest(new Request("http://site.test/images/a/cat.png"), {
      config: httpConfig,
      origin: d.origin,
      tags: kv,
      pending: new PendingSet(),
      waitUntil: () => {},
    });
    expect(res?.headers.get(LABELS_HEADER)).toBe(entry?.labels);
    expect(res?.headers.get(MODEL_HEADER)).toBe('"test/model";version="v1";synthetic');
    expect(res?.headers.get(STATUS_HEADER)).toBe("tagged");
    await res?.arrayBuffer();
  });

  it("classifies the same bytes under two URLs once, and a duplicate message not at all", async () => {
    const model = countingClassifier();
    const { batch } = batchOf([tagMsg("a/cat.png"), tagMsg("b/same-cat.png"), tagMsg("a/cat.png")]);
    const results = await handleTagBatch(batch, deps(model), 3);
    expect(results).toEqual([
      { outcome: "tagged", classified: true, labels: 8 },
      { outcome: "tagged", classified: false, labels: 8 },
      { outcome: "current" },
    ]);
    expect(model.calls).toBe(1);
    const a = await store.get(`url:${origin.url}a/cat.png`);
    const b = await store.get(`url:${origin.url}b/same-cat.png`);
    expect(b?.labels).toEqual(a?.labels);
    expect(b?.classified).toBe(false);
    // a new model version is picked up by --retag, and the stored tags name it
    model.version = "v2";
    const retag = await runTagJob(
      { op: "tag", source: tagMsg("a/cat.png").source, retag: true },
      deps(model),
    );
    expect(retag).toEqual({ outcome: "tagged", classified: true, labels: 8 });
    expect(model.calls).toBe(2);
    expect((await store.get(`url:${origin.url}a/cat.png`))?.model?.version).toBe("v2");
    // without --retag, a message for an image tagged by the old version classifies it again too
    await runTagJob({ op: "tag", source: tagMsg("b/same-cat.png").source, retag: false }, deps(model));
    expect(model.calls).toBe(2); // ... reusing the v2 labels of the same bytes
    expect((await store.get(`url:${origin.url}b/same-cat.png`))?.model?.version).toBe("v2");
  });

  it("records non-images, oversized, missing and undecodable images with a status, without labels", async () => {
    const model = countingClassifier();
    const run = (path: string, m: TagClassifier = model) =>
      runTagJob({ op: "tag", source: tagMsg(path).source, retag: false }, deps(m));
    expect(await run("page.html")).toEqual({ outcome: "skipped", reason: "not-an-image" });
    expect(await run("big.png")).toEqual({ outcome: "skipped", reason: "image-too-large" });
    expect(await run("gone.png")).toEqual({ outcome: "skipped", reason: "not-found" });
    expect(model.calls).toBe(0);
    const undecodable = countingClassifier(new AppError("undecodable-image", 400, "truncated"));
    expect(await run("broken.png", undecodable)).toEqual({ outcome: "failed", reason: "undecodable-image" });
    const row = await store.get(`url:${origin.url}broken.png`);
    expect(row).toMatchObject({ status: "failed", reason: "undecodable-image", labels: [] });
    const entry = parseEntry(await kv.get(await tagKey(`url:${origin.url}page.html`), "json"));
    expect(entry).toMatchObject({ status: "skipped", reason: "not-an-image" });
    // ... for this version of it, so the proxy shows the status instead of enqueueing again
    expect(entry?.validators.etag).toMatch(/^[0-9a-f]{64}$/);
    const res = await handleImageRequest(new Request("http://site.test/images/page.html"), {
      config: httpConfig,
      origin: deps(model).origin,
      tags: kv,
      pending: new PendingSet(),
      waitUntil: () => {},
    });
    expect(res?.headers.get(STATUS_HEADER)).toBe('skipped;reason="not-an-image"');
    await res?.arrayBuffer();
  });

  it("retries a model outage, then records failed: model-unavailable with an expiring entry", async () => {
    const down = countingClassifier(new AppError("model-unavailable", 503, "stage down", { retryAfter: 5 }));
    await expect(
      runTagJob({ op: "tag", source: tagMsg("a/cat.png").source, retag: false }, deps(down)),
    ).rejects.toBeInstanceOf(RetryableTagError);
    const first = batchOf([tagMsg("a/cat.png")], 1);
    await handleTagBatch(first.batch, deps(down), 3);
    expect(first.retried).toEqual([0]);
    expect(first.acked).toEqual([]);
    const last = batchOf([tagMsg("a/cat.png")], 4);
    expect(await handleTagBatch(last.batch, deps(down), 3)).toEqual([
      { outcome: "failed", reason: "model-unavailable" },
    ]);
    expect(last.acked).toEqual([0]);
    const key = await tagKey(`url:${origin.url}a/cat.png`);
    const listed = (await kv.list()).keys.find((k) => k.name === key);
    expect(listed?.expiration).toBeGreaterThan(Date.now() / 1000);
    // origin errors are retried the same way
    await expect(
      runTagJob(
        { op: "tag", source: { kind: "origin", url: `${origin.url}status/503` }, retag: false },
        deps(countingClassifier()),
      ),
    ).rejects.toMatchObject({ reason: "origin-error" });
  });

  it("charges a backfill's image to the key that asked: waits while its quota is used up, then records its usage", async () => {
    const model = countingClassifier();
    let allowed = false;
    const charged: string[] = [];
    const usage: unknown[] = [];
    const d: TaggerDeps = {
      ...deps(model),
      chargeImages: async (keyId, n) => {
        charged.push(`${keyId}:${n}`);
        return { allowed, retryAfterS: 9 };
      },
      usage: (keyId, counts) => usage.push([keyId, counts]),
    };
    const msg = { ...tagMsg("a/cat.png"), keyId: "key_00000000000000aa" };
    const first = batchOf([msg]);
    await handleTagBatch(first.batch, d, 3);
    expect(first.retried).toEqual([0]);
    expect(model.calls).toBe(0);
    allowed = true;
    const second = batchOf([msg]);
    expect(await handleTagBatch(second.batch, d, 3)).toMatchObject([{ outcome: "tagged", classified: true }]);
    expect(charged).toEqual(["key_00000000000000aa:1", "key_00000000000000aa:1"]);
    expect(usage).toEqual([["key_00000000000000aa", { images: 1, images_tagged: 1 }]]);
    // A CDN miss belongs to no key: no charge, usage under the tagging id.
    const miss = batchOf([tagMsg("b/same-cat.png")]);
    await handleTagBatch(miss.batch, d, 3);
    expect(charged).toHaveLength(2);
    expect(usage[1]).toEqual([null, { images: 0, images_tagged: 1 }]);
  });

  it("refuses messages for anything but the configured origin, and malformed messages, without fetching", async () => {
    const model = countingClassifier();
    const before = origin.requests.length;
    const { batch, acked } = batchOf([
      { type: "tag", source: { kind: "origin", url: "http://evil.example/x.png" } },
      { type: "tag", source: { kind: "r2", bucket: "other-bucket", key: "x.png" } },
      { hello: "world" },
      "not json",
    ]);
    const results = await handleTagBatch(batch, deps(model), 3);
    expect(results.map((r) => r.outcome)).toEqual(["refused", "refused", "refused", "refused"]);
    expect(acked).toEqual([0, 1, 2, 3]);
    expect(origin.requests.length).toBe(before);
  });

  it("handles R2 event notifications in the exact shape R2 sends: object-create tags, object-delete forgets", async () => {
    await bucket.put("photos/cat.png", cat, { httpMetadata: { contentType: "image/png" } });
    const obj = await bucket.head("photos/cat.png");
    const model = countingClassifier();
    const d = deps(model, r2Config);
    const created = {
      account: "3f4b7e3dcab231cbfdaa90a6a28bd548",
      action: "PutObject",
      bucket: "site-images",
      object: { key: "photos/cat.png", size: cat.byteLength, eTag: obj?.etag },
      eventTime: "2026-12-01T19:36:44.379Z",
    };
    const copied = {
      ...created,
      action: "CopyObject",
      copySource: { bucket: "site-images", object: "photos/cat.png" },
    };
    const { batch } = batchOf([created, copied, { ...created, bucket: "another-bucket" }]);
    expect((await handleTagBatch(batch, d, 3)).map((r) => r.outcome)).toEqual([
      "tagged",
      "current",
      "refused",
    ]);
    expect(model.calls).toBe(1);
    const locator = locatorOf({ kind: "r2", bucket: "site-images", key: "photos/cat.png" });
    expect((await store.lookup({ key: "photos/cat.png" }))?.etag).toBe(obj?.etag);
    // the proxy's R2 response (ETag = httpEtag) matches the entry the consumer wrote
    const res = await handleImageRequest(new Request("http://site.test/images/photos/cat.png"), {
      config: r2Config,
      origin: d.origin,
      tags: kv,
      pending: new PendingSet(),
      waitUntil: () => {},
    });
    expect(res?.headers.get(LABELS_HEADER)).toContain("tabby");
    await res?.arrayBuffer();
    const del = batchOf([{ ...created, action: "DeleteObject", object: { key: "photos/cat.png" } }]);
    expect(await handleTagBatch(del.batch, d, 3)).toEqual([{ outcome: "forgotten" }]);
    expect(await store.get(locator)).toBeNull();
    expect(await kv.get(await tagKey(locator))).toBeNull();
  });
});
