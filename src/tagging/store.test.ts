import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type TestD1, testD1 } from "../../test/helpers/d1.ts";
import { locatorOf } from "./identity.ts";
import { type ImageOutcome, ImageStore } from "./store.ts";

let d1: TestD1;
let store: ImageStore;
const model = { id: "m", version: "v1" };

function tagged(n: number, labels: [string, number][], over: Partial<ImageOutcome> = {}): ImageOutcome {
  const source = { kind: "origin" as const, url: `https://origin.test/img/${n}.jpg` };
  return {
    locator: locatorOf(source),
    source,
    publicUrl: `https://site.test/images/${n}.jpg`,
    validators: { etag: `e${n}`, length: 100 + n },
    contentType: "image/jpeg",
    sha256: `sha-${n}`,
    width: 10,
    height: 20,
    format: "jpeg",
    model,
    status: "tagged",
    labels: labels.map(([label, score], i) => ({ label, score, classId: i })),
    classified: true,
    now: 1_000_000 + n,
    ...over,
  };
}

// One database for the file (a Miniflare start costs ~1 s here); emptied before each test.
beforeAll(async () => {
  d1 = await testD1();
  store = new ImageStore(d1.db);
});
beforeEach(async () => {
  await d1.db.batch([d1.db.prepare("DELETE FROM image_labels"), d1.db.prepare("DELETE FROM images")]);
});
afterAll(() => d1.dispose());

describe("ImageStore (Miniflare D1, migrations/ applied)", () => {
  it("saves an image with its labels and replaces them on the next save", async () => {
    await store.save(
      tagged(1, [
        ["tabby, tabby cat", 0.41],
        ["tiger cat", 0.12],
      ]),
    );
    const r = await store.get("url:https://origin.test/img/1.jpg");
    expect(r).toMatchObject({
      source: "origin",
      url: "https://origin.test/img/1.jpg",
      public_url: "https://site.test/images/1.jpg",
      etag: "e1",
      content_length: 101,
      sha256: "sha-1",
      width: 10,
      height: 20,
      format: "jpeg",
      model: { id: "m", version: "v1" },
      status: "tagged",
      classified: true,
      tagged_at: new Date(1_000_001).toISOString(),
      labels: [
        { label: "tabby, tabby cat", score: 0.41, class_id: 0 },
        { label: "tiger cat", score: 0.12, class_id: 1 },
      ],
    });
    await store.save(tagged(1, [["lynx", 0.3]], { publicUrl: undefined, model: { id: "m", version: "v2" } }));
    const again = await store.get("url:https://origin.test/img/1.jpg");
    expect(again?.labels).toEqual([{ label: "lynx", score: 0.3, class_id: 0 }]);
    expect(again?.model?.version).toBe("v2");
    expect(again?.public_url).toBe("https://site.test/images/1.jpg"); // kept when not given
    // a status row has no labels and no tagged_at
    await store.save(
      tagged(1, [], { status: "skipped", reason: "image-too-large", model: undefined, classified: false }),
    );
    expect(await store.get("url:https://origin.test/img/1.jpg")).toMatchObject({
      status: "skipped",
      reason: "image-too-large",
      labels: [],
      tagged_at: null,
    });
  });

  it("finds tagged bytes by sha256 and model version only", async () => {
    await store.save(tagged(1, [["a", 0.5]]));
    await store.save(tagged(2, [], { sha256: "sha-x", status: "failed", reason: "undecodable-image" }));
    expect((await store.findTaggedBySha("sha-1", "v1"))?.labels).toEqual([
      { label: "a", score: 0.5, class_id: 0 },
    ]);
    expect(await store.findTaggedBySha("sha-1", "v2")).toBeNull();
    expect(await store.findTaggedBySha("sha-x", "v1")).toBeNull();
  });

  it("looks up by origin URL, public URL or R2 key", async () => {
    await store.save(tagged(1, [["a", 0.5]]));
    const r2 = { kind: "r2" as const, bucket: "b", key: "photos/x.png" };
    await store.save(tagged(2, [["b", 0.5]], { source: r2, locator: locatorOf(r2), publicUrl: undefined }));
    expect((await store.lookup({ url: "https://origin.test/img/1.jpg" }))?.id).toBeDefined();
    expect((await store.lookup({ url: "https://site.test/images/1.jpg" }))?.labels[0].label).toBe("a");
    expect((await store.lookup({ key: "photos/x.png" }))?.labels[0].label).toBe("b");
    expect(await store.lookup({ key: "nope" })).toBeNull();
    expect(await store.forget(locatorOf(r2))).toBe(true);
    expect(await store.lookup({ key: "photos/x.png" })).toBeNull();
    expect(await store.forget(locatorOf(r2))).toBe(false);
  });

  it("searches a label best score first with stable cursor pagination and min_score", async () => {
    // 25 images with the label "cat" at scores that include ties
    for (let n = 0; n < 25; n++)
      await store.save(
        tagged(n, [
          ["Cat", [0.9, 0.5, 0.5, 0.3, 0.1][n % 5]],
          ["other", 0.01],
        ]),
      );
    const seen: { id: number; score: number }[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await store.search({ label: "cat", limit: 7, cursor });
      for (const it of page.items) seen.push({ id: it.id, score: it.score });
      cursor = page.next_cursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(4);
    expect(seen).toHaveLength(25);
    expect(new Set(seen.map((s) => s.id)).size).toBe(25);
    const sorted = [...seen].sort((a, b) => b.score - a.score || a.id - b.id);
    expect(seen).toEqual(sorted);
    const strong = await store.search({ label: "CAT", minScore: 0.5, limit: 100 });
    expect(strong.items).toHaveLength(15);
    expect(strong.next_cursor).toBeNull();
    expect(strong.items[0].labels.map((l) => l.label)).toEqual(["Cat", "other"]);
    expect((await store.search({ label: "dog" })).items).toEqual([]);
    await expect(store.search({ label: "cat", cursor: "garbage" })).rejects.toMatchObject({
      code: "invalid-parameter",
      status: 422,
    });
  });

  it("stores one row per label name, so an image is listed once per label", async () => {
    await store.save(
      tagged(1, [
        ["crane", 0.4],
        ["crane", 0.2],
        ["bird", 0.1],
      ]),
    );
    const r = await store.get("url:https://origin.test/img/1.jpg");
    expect(r?.labels.map((l) => [l.label, l.score])).toEqual([
      ["crane", 0.4],
      ["bird", 0.1],
    ]);
    expect((await store.search({ label: "crane" })).items).toHaveLength(1);
  });
});
