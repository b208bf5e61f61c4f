import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestD1, testD1 } from "../../test/helpers/d1.ts";
import { type LocalBindings, localBindings } from "../../test/helpers/local-bindings.ts";
import { problemResponse, toAppError } from "../edge/problem.ts";
import { type ImagesApiEnv, imageRoutes } from "./api.ts";
import { locatorOf } from "./identity.ts";
import type { TagMessage } from "./messages.ts";
import { ImageStore } from "./store.ts";

let d1: TestD1;
let local: LocalBindings;
let env: ImagesApiEnv;
const sent: TagMessage[] = [];
const app = new Hono<{ Bindings: ImagesApiEnv }>();
app.onError((e) => problemResponse(toAppError(e)));
app.route("/", imageRoutes());

beforeAll(async () => {
  d1 = await testD1();
  local = localBindings({ r2Buckets: ["IMAGES"] });
  const bucket = await local.bucket("IMAGES");
  for (let i = 0; i < 5; i++) await bucket.put(`photos/${i}.png`, new Uint8Array([i]));
  await bucket.put("other/x.png", new Uint8Array([9]));
  const queue = {
    async send(b: TagMessage) {
      sent.push(b);
    },
    async sendBatch(ms: { body: TagMessage }[]) {
      for (const m of ms) sent.push(m.body);
    },
  } as unknown as Queue<TagMessage>;
  env = { DB: d1.db, IMAGES: bucket, TAGGING_QUEUE: queue, IMAGES_BUCKET: "site-images" };
  const store = new ImageStore(d1.db);
  for (let n = 0; n < 5; n++) {
    const source = { kind: "origin" as const, url: `https://o.test/${n}.jpg` };
    await store.save({
      locator: locatorOf(source),
      source,
      publicUrl: `http://localhost:8787/images/${n}.jpg`,
      validators: { etag: `e${n}` },
      sha256: `s${n}`,
      width: 1,
      height: 1,
      format: "jpeg",
      model: { id: "m", version: "v" },
      status: "tagged",
      labels: [{ label: "tabby, tabby cat", classId: 281, score: 0.1 * (n + 1) }],
      classified: true,
      now: 1000 + n,
    });
  }
});
afterAll(async () => {
  await local?.dispose();
  await d1?.dispose();
});

const get = async (path: string) => {
  const res = await app.request(path, {}, env);
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    body: (await res.json()) as Record<string, unknown>,
  };
};

describe("/v1/images routes", () => {
  it("searches by label with pagination and min_score", async () => {
    const first = await get("/v1/images?label=tabby,%20tabby%20cat&limit=2");
    expect(first.status).toBe(200);
    const items = first.body.items as { url: string; score: number }[];
    expect(items.map((i) => i.url)).toEqual(["https://o.test/4.jpg", "https://o.test/3.jpg"]);
    const rest = await get(`/v1/images?label=tabby,%20tabby%20cat&limit=10&cursor=${first.body.next_cursor}`);
    expect((rest.body.items as unknown[]).length).toBe(3);
    expect(rest.body.next_cursor).toBeNull();
    const strong = await get("/v1/images?label=TABBY,%20TABBY%20CAT&min_score=0.35");
    expect((strong.body.items as unknown[]).length).toBe(2);
  });

  it("lists every recorded image without a label, oldest first, with labels and status, in pages", async () => {
    const first = await get("/v1/images?limit=2");
    expect(first.status).toBe(200);
    const items = first.body.items as { id: number; labels: unknown[]; status: string }[];
    expect(items.length).toBe(2);
    expect(items[0].id).toBeLessThan(items[1].id);
    expect(items[0]).toHaveProperty("labels");
    expect(items[0]).toHaveProperty("status");
    const all: number[] = items.map((i) => i.id);
    let cursor = first.body.next_cursor as string | null;
    while (cursor) {
      const page = await get(`/v1/images?limit=2&cursor=${cursor}`);
      all.push(...(page.body.items as { id: number }[]).map((i) => i.id));
      cursor = page.body.next_cursor as string | null;
    }
    expect(all).toEqual([...all].sort((a, b) => a - b));
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBeGreaterThanOrEqual(5);
  });

  it("refuses bad parameters with problem+json", async () => {
    for (const [path, status, code] of [
      ["/v1/images?label=", 422, "invalid-parameter"],
      ["/v1/images?limit=0", 422, "invalid-parameter"],
      ["/v1/images?cursor=zzz", 422, "invalid-parameter"],
      ["/v1/images?label=x&limit=0", 422, "invalid-parameter"],
      ["/v1/images?label=x&limit=101", 422, "invalid-parameter"],
      ["/v1/images?label=x&min_score=2", 422, "invalid-parameter"],
      ["/v1/images?label=x&cursor=zzz", 422, "invalid-parameter"],
      ["/v1/images/tags", 422, "invalid-parameter"],
      ["/v1/images/tags?url=https://o.test/nope.jpg", 404, "image-not-found"],
    ] as const) {
      const r = await get(path);
      expect(r.status, path).toBe(status);
      expect(r.type).toBe("application/problem+json");
      expect(r.body.code, path).toBe(code);
    }
  });

  it("looks one image up by origin URL or by the URL it was served under", async () => {
    const byOrigin = await get("/v1/images/tags?url=https://o.test/2.jpg");
    expect(byOrigin.body).toMatchObject({
      status: "tagged",
      labels: [{ label: "tabby, tabby cat", class_id: 281 }],
    });
    const byPublic = await get(
      `/v1/images/tags?url=${encodeURIComponent("http://localhost:8787/images/2.jpg")}`,
    );
    expect(byPublic.body.id).toBe(byOrigin.body.id);
  });

  it("backfills a bucket prefix page by page into the tagging queue", async () => {
    const post = (body: unknown) =>
      app.request(
        "/v1/images/backfill",
        { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } },
        env,
      );
    sent.length = 0;
    const p1 = (await (
      await post({ bucket: "site-images", prefix: "photos/", limit: 3, retag: true })
    ).json()) as {
      enqueued: number;
      cursor: string | null;
    };
    expect(p1.enqueued).toBe(3);
    expect(p1.cursor).toBeTruthy();
    const p2 = (await (
      await post({ bucket: "site-images", prefix: "photos/", limit: 3, cursor: p1.cursor })
    ).json()) as {
      enqueued: number;
      cursor: string | null;
    };
    expect(p2).toMatchObject({ listed: 2, enqueued: 2, cursor: null });
    expect(typeof (p2 as unknown as { at: number }).at).toBe("number");
    expect(sent.map((m) => m.source)).toEqual(
      [0, 1, 2, 3, 4].map((i) => ({ kind: "r2", bucket: "site-images", key: `photos/${i}.png` })),
    );
    expect(sent.slice(0, 3).every((m) => m.retag === true)).toBe(true);
    const wrong = await post({ bucket: "nope" });
    expect(wrong.status).toBe(422);
    const stats = await get("/v1/images/stats?since=0");
    expect(stats.body).toMatchObject({ tagged: 5, skipped: 0, failed: 0, classified: 5 });
  });
});
