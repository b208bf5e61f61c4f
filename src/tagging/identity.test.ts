import { describe, expect, it } from "vitest";
import { parseTaggingConfig, TaggingConfigError } from "./config.ts";
import { locatorOf, sameVersion, strongEtag, tagKey, validatorsFromHeaders } from "./identity.ts";
import { parseQueueMessage } from "./messages.ts";
import { resolveSource } from "./origin.ts";

const LM = "Tue, 01 Dec 2026 10:00:00 GMT";

describe("image identity", () => {
  it("records strong ETags only, without quotes", () => {
    expect(strongEtag('"abc"')).toBe("abc");
    expect(strongEtag('W/"abc"')).toBeUndefined();
    expect(strongEtag("abc")).toBeUndefined();
    expect(strongEtag(null)).toBeUndefined();
  });

  it("reads validators from 200, 206 and 304 responses", () => {
    const h = (o: Record<string, string>) => new Headers(o);
    expect(
      validatorsFromHeaders(200, h({ etag: '"e"', "last-modified": LM, "content-length": "10" })),
    ).toEqual({
      etag: "e",
      lastModified: LM,
      length: 10,
    });
    expect(
      validatorsFromHeaders(
        206,
        h({ etag: '"e"', "content-range": "bytes 0-9/1234", "content-length": "10" }),
      ),
    ).toEqual({
      etag: "e",
      length: 1234,
    });
    expect(validatorsFromHeaders(304, h({ etag: '"e"' }))).toEqual({ etag: "e" });
    expect(validatorsFromHeaders(200, h({ etag: 'W/"e"' }))).toEqual({});
  });

  it("matches versions by ETag, else Last-Modified + length, else URL only when neither side has any", () => {
    expect(sameVersion({ etag: "a" }, { etag: "a" })).toBe(true);
    expect(sameVersion({ etag: "a", lastModified: LM }, { etag: "b", lastModified: LM })).toBe(false);
    expect(sameVersion({ lastModified: LM, length: 5 }, { lastModified: LM, length: 5 })).toBe(true);
    expect(sameVersion({ lastModified: LM, length: 5 }, { lastModified: LM, length: 6 })).toBe(false);
    expect(sameVersion({ lastModified: LM, length: 5 }, { lastModified: LM })).toBe(true); // a 304 has no length
    expect(sameVersion({ etag: "a" }, {})).toBe(false);
    expect(sameVersion({}, {})).toBe(true);
    expect(sameVersion({}, { etag: "a" })).toBe(false);
  });

  it("keys KV by a fixed-length hash of the locator", async () => {
    const long = locatorOf({ kind: "origin", url: `https://o.test/${"x".repeat(2000)}` });
    const key = await tagKey(long);
    expect(key).toMatch(/^img:[0-9a-f]{64}$/);
    expect(await tagKey(locatorOf({ kind: "r2", bucket: "b", key: "k" }))).not.toBe(key);
  });
});

describe("tagging config and path resolution", () => {
  it("parses defaults and refuses bad values by name", () => {
    const c = parseTaggingConfig({ ORIGIN_URL: "https://origin.test/static" }, false);
    expect(c).toMatchObject({ prefix: "/images/", topK: 10, minScore: 0.01, cacheTtlS: 60 });
    expect(c.origin.kind === "url" && c.origin.base.href).toBe("https://origin.test/static/");
    expect(parseTaggingConfig({}, true).origin).toEqual({ kind: "r2", keyPrefix: "" });
    expect(() => parseTaggingConfig({}, false)).toThrow(TaggingConfigError);
    expect(() => parseTaggingConfig({ ORIGIN_URL: "ftp://x" }, false)).toThrow(/ORIGIN_URL/);
    expect(() => parseTaggingConfig({ ORIGIN_URL: "self", TAG_TOP_K: "0" }, false)).toThrow(/TAG_TOP_K/);
    expect(() => parseTaggingConfig({ ORIGIN_URL: "self", TAGS_CACHE_TTL_S: "10" }, false)).toThrow(
      /TAGS_CACHE_TTL_S/,
    );
    expect(() => parseTaggingConfig({ ORIGIN_URL: "self", TAGGING_PREFIX: "images" }, false)).toThrow(
      /TAGGING_PREFIX/,
    );
  });

  it("maps a request path to one source on the configured origin", () => {
    const http = parseTaggingConfig({ ORIGIN_URL: "https://origin.test/static/" }, false);
    const r = (p: string, c = http) => resolveSource(new URL(`https://site.test${p}`), c, "bkt");
    expect(r("/images/a/b.jpg?w=100")).toEqual({
      kind: "origin",
      url: "https://origin.test/static/a/b.jpg?w=100",
    });
    expect(r("/other/a.jpg")).toBeNull();
    expect(typeof r("/images//evil.example/a.jpg")).toBe("string");
    expect(typeof r("/images/a/..%2f..%2fx")).toBe("string");
    const r2 = parseTaggingConfig({ R2_PREFIX: "public/" }, true);
    expect(r("/images/a%20b/c.png", r2)).toEqual({ kind: "r2", bucket: "bkt", key: "public/a b/c.png" });
    const self = parseTaggingConfig({ ORIGIN_URL: "self" }, false);
    expect(r("/images/a.png", self)).toEqual({ kind: "origin", url: "https://site.test/images/a.png" });
  });

  it("parses tag messages and R2 notifications, and says why it refuses the rest", () => {
    expect(
      parseQueueMessage({ type: "tag", source: { kind: "origin", url: "https://o/x" }, retag: true }),
    ).toEqual({
      op: "tag",
      source: { kind: "origin", url: "https://o/x" },
      retag: true,
    });
    const n = {
      account: "a",
      action: "CompleteMultipartUpload",
      bucket: "b",
      object: { key: "k", size: 3, eTag: "e" },
    };
    expect(parseQueueMessage(n)).toEqual({
      op: "tag",
      source: { kind: "r2", bucket: "b", key: "k" },
      retag: false,
      etagHint: "e",
      sizeHint: 3,
    });
    expect(parseQueueMessage({ ...n, action: "LifecycleDeletion" })).toEqual({
      op: "forget",
      source: { kind: "r2", bucket: "b", key: "k" },
    });
    expect(parseQueueMessage({ ...n, action: "RestoreObject" })).toMatch(/not handled/);
    expect(parseQueueMessage([])).toMatch(/not a JSON object/);
    expect(parseQueueMessage({ type: "tag", source: { kind: "ftp" } })).toMatch(/needs source/);
  });
});
