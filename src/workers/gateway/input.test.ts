/**
 * Request parsing without a runtime: base64 forms, top_k validation, the byte limit enforced while
 * streaming, and the URL fetcher's redirect, content-type and size rules (with an injected fetch).
 */
import { describe, expect, it } from "vitest";
import { Deadline, readBounded } from "../../edge/limits.ts";
import { fetchImage } from "../../edge/url-fetch.ts";
import { AppError } from "../../shared/errors.ts";
import {
  countMultipartParts,
  decodeBase64,
  MAX_MULTIPART_PARTS,
  readClassifyInput,
  resolveTopK,
  withCurlHint,
} from "./input.ts";

const opts = { maxBodyBytes: 1000, maxBatch: 3 };

async function code(p: Promise<unknown>): Promise<[string, number]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AppError) return [e.code, e.status];
    throw e;
  }
  throw new Error("expected an AppError");
}

describe("decodeBase64", () => {
  it("accepts standard, URL-safe, unpadded base64 and data: URLs", () => {
    expect([...decodeBase64("AAEC/w==")]).toEqual([0, 1, 2, 255]);
    expect([...decodeBase64("AAEC_w")]).toEqual([0, 1, 2, 255]);
    expect([...decodeBase64("data:image/png;base64,AAEC/w==")]).toEqual([0, 1, 2, 255]);
  });
  it("refuses non-base64 text with invalid-base64", async () => {
    expect(await code(Promise.resolve().then(() => decodeBase64("not base64!")))).toEqual([
      "invalid-base64",
      400,
    ]);
  });
});

describe("resolveTopK", () => {
  it("defaults to 5 (capped by the label count) and accepts 1..labelCount", () => {
    expect(resolveTopK(undefined, undefined, 100)).toBe(5);
    expect(resolveTopK(undefined, undefined, 3)).toBe(3);
    expect(resolveTopK("7", undefined, 100)).toBe(7);
    expect(resolveTopK(undefined, 100, 100)).toBe(100);
  });
  it("rejects 0, fractions, text and values above the label count with 422", async () => {
    for (const v of ["0", "2.5", "x", "101"])
      expect(await code(Promise.resolve().then(() => resolveTopK(v, undefined, 100)))).toEqual([
        "invalid-parameter",
        422,
      ]);
  });
});

describe("readClassifyInput", () => {
  const req = (body: BodyInit, type: string) =>
    new Request("https://x/v1/classify", { method: "POST", body, headers: { "content-type": type } });
  it("reads JSON arrays as a batch in order and takes top_k from parameters", async () => {
    const r = await readClassifyInput(
      req(JSON.stringify({ inputs: ["AQ==", "Ag=="], parameters: { top_k: 2 } }), "application/json"),
      opts,
    );
    expect(r.batch).toBe(true);
    expect(r.images.map((b) => [...b])).toEqual([[1], [2]]);
    expect(r.topK).toBe(2);
  });
  it("refuses more images than the batch limit with 422 and unknown content types with 415", async () => {
    expect(
      await code(
        readClassifyInput(
          req(JSON.stringify({ image: ["AQ==", "AQ==", "AQ==", "AQ=="] }), "application/json"),
          opts,
        ),
      ),
    ).toEqual(["too-many-images", 422]);
    expect(await code(readClassifyInput(req("hi", "text/csv"), opts))).toEqual([
      "unsupported-media-type",
      415,
    ]);
  });
});

describe("readBounded", () => {
  it("stops a stream as soon as it passes the limit, whatever Content-Length says", async () => {
    let pulled = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        pulled++;
        c.enqueue(new Uint8Array(400));
      },
    });
    expect(await code(readBounded(stream, "10", 1000))).toEqual(["payload-too-large", 413]);
    expect(pulled).toBeLessThan(6);
  });
});

describe("hostile request bodies", () => {
  const multipart = (parts: string[], boundary = "b0undary") =>
    new Request("https://x/v1/classify", {
      method: "POST",
      body: `${parts.map((p) => `--${boundary}\r\n${p}\r\n`).join("")}--${boundary}--\r\n`,
      headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
    });
  const field = (name: string, value: string) =>
    `Content-Disposition: form-data; name="${name}"\r\n\r\n${value}`;
  const file = (bytes: string) =>
    `Content-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n${bytes}`;

  it("judges the Content-Type before buffering the body: a refused body is dropped as it streams, up to the limit", async () => {
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        pulled++;
        c.enqueue(new Uint8Array(1000));
      },
    });
    const r = new Request("https://x/v1/classify", {
      method: "POST",
      body,
      headers: { "content-type": "text/csv" },
      duplex: "half",
    } as RequestInit);
    // An endless body: read in 1000-byte pieces only until past the 1000-byte limit, then cancelled.
    expect(await code(readClassifyInput(r, opts))).toEqual(["unsupported-media-type", 415]);
    expect(pulled).toBeLessThanOrEqual(4);
  });

  it(`refuses a multipart body of more than ${MAX_MULTIPART_PARTS} parts before parsing it`, async () => {
    const many = Array.from({ length: 5000 }, (_, i) => field(`f${i}`, "x"));
    const err = await readClassifyInput(multipart(many), { maxBodyBytes: 1e7, maxBatch: 8 }).catch((e) => e);
    expect([err.code, err.status, err.extra.maxParts]).toEqual(["too-many-parts", 422, MAX_MULTIPART_PARTS]);
    const ok = await readClassifyInput(multipart([file("AB"), file("CD"), field("top_k", "2")]), {
      maxBodyBytes: 1e7,
      maxBatch: 8,
    });
    expect([ok.images.length, ok.topK]).toEqual([2, "2"]);
  });

  it("counts multipart parts from delimiter lines only", () => {
    const enc = (t: string) => new TextEncoder().encode(t);
    expect(countMultipartParts(enc("--b\r\nx\r\n--b\r\ny\r\n--b--\r\n"), "b", 10)).toBe(2);
    expect(countMultipartParts(enc("preamble\r\n--b\r\nx --b inside\r\n--b--"), "b", 10)).toBe(1);
    expect(countMultipartParts(enc(`${"--b\r\n".repeat(1000)}--b--`), "b", 10)).toBe(11);
  });

  it("names a top_k JSON cannot hold (1e400) instead of printing null, and caps echoed text", async () => {
    const body = new Request("https://x/v1/classify", {
      method: "POST",
      body: '{"inputs":"AQ==","parameters":{"top_k":1e400}}',
      headers: { "content-type": "application/json" },
    });
    const r = await readClassifyInput(body, opts);
    const e1 = (() => {
      try {
        resolveTopK(undefined, r.topK, 100);
      } catch (e) {
        return e as AppError;
      }
    })();
    expect(e1?.detail).toContain("a number too large to represent");
    expect(e1?.detail).not.toContain("null");
    const long = "9".repeat(1_000_000);
    try {
      resolveTopK(long, undefined, 100);
      throw new Error("expected a refusal");
    } catch (e) {
      expect((e as AppError).detail.length).toBeLessThan(200);
    }
  });
});

describe("URL batches", () => {
  const json = (body: unknown) =>
    new Request("https://x/v1/classify", {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" },
    });
  // Every URL answers `size` bytes of image/png, counting what it streamed.
  function host(size: number) {
    const state = { served: 0 };
    const f = (async () => {
      let left = size;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (left <= 0) return c.close();
          const n = Math.min(left, 1 << 16);
          left -= n;
          state.served += n;
          c.enqueue(new Uint8Array(n));
        },
      });
      return new Response(body, { headers: { "content-type": "image/png" } });
    }) as typeof fetch;
    return { f, state };
  }
  const urls = (n: number) => Array.from({ length: n }, (_, i) => `https://a.test/${i}.png`);

  it("caps each URL at the image limit, below the body limit", async () => {
    const { f, state } = host(600);
    const o = { maxBodyBytes: 10_000, maxBatch: 8, maxUrlBytes: 500, urlFetch: { fetch: f } };
    expect(await code(readClassifyInput(json({ url: urls(1)[0] }), o))).toEqual(["payload-too-large", 413]);
    expect(state.served).toBeLessThanOrEqual(600);
    const err = await readClassifyInput(json({ url: urls(1) }), o).catch((e) => e);
    expect(err.extra.maxBytes).toBe(500);
  });

  it("caps what all URLs of one request add up to, and stops fetching once over", async () => {
    const { f, state } = host(300_000);
    const o = { maxBodyBytes: 1_000_000, maxBatch: 8, maxUrlBytes: 400_000, urlFetch: { fetch: f } };
    const err = await readClassifyInput(json({ url: urls(8) }), o).catch((e) => e);
    expect([err.code, err.status, err.extra.maxBytes]).toEqual(["payload-too-large", 413, 1_000_000]);
    expect(err.detail).toContain("add up to");
    // Three URLs fit (900,000 bytes); the fourth is refused once it passes the request's total
    // (give or take the chunks a stream pulls ahead), not after all eight (2.4 MB) were fetched.
    expect(state.served).toBeLessThan(1_300_000);
    const ok = await readClassifyInput(json({ url: urls(3) }), o);
    expect(ok.images.map((b) => b.byteLength)).toEqual([300_000, 300_000, 300_000]);
  });

  it("defaults the per-URL cap to the image path's 20 MiB", async () => {
    const { f } = host(20 * 1024 * 1024 + 1);
    const o = { maxBodyBytes: 32 * 1024 * 1024, maxBatch: 8, urlFetch: { fetch: f } };
    const err = await readClassifyInput(json({ url: urls(1)[0] }), o).catch((e) => e);
    expect([err.code, err.extra.maxBytes]).toEqual(["payload-too-large", 20 * 1024 * 1024]);
  });
});

describe("Deadline", () => {
  it("uses the shorter of the service deadline and x-deadline-ms", () => {
    const limits = { deadlineMs: 60_000, maxBodyBytes: 1, maxBatch: 1, allowLoopbackFetch: false };
    const d = Deadline.forRequest(new Request("https://x", { headers: { "x-deadline-ms": "250" } }), limits);
    expect(d.ms).toBe(250);
    expect(
      Deadline.forRequest(new Request("https://x", { headers: { "x-deadline-ms": "999999" } }), limits).ms,
    ).toBe(60_000);
  });
});

describe("fetchImage", () => {
  const png = new Uint8Array([137, 80, 78, 71]);
  const fake = (routes: Record<string, () => Response>) =>
    (async (url: string | URL | Request) => {
      const r = routes[String(url)];
      return r ? r() : new Response("missing", { status: 404 });
    }) as typeof fetch;

  it("follows a few redirects, re-checking each target", async () => {
    const f = fake({
      "https://a.test/1": () =>
        new Response(null, { status: 301, headers: { location: "https://a.test/2" } }),
      "https://a.test/2": () => new Response(png, { headers: { "content-type": "image/png" } }),
    });
    expect([...(await fetchImage("https://a.test/1", { maxBytes: 100, fetch: f }))]).toEqual([...png]);
    const toFile = fake({
      "https://a.test/1": () =>
        new Response(null, { status: 302, headers: { location: "file:///etc/passwd" } }),
    });
    expect(await code(fetchImage("https://a.test/1", { maxBytes: 100, fetch: toFile }))).toEqual([
      "url-not-allowed",
      422,
    ]);
  });

  it("checks every redirect target against the policy before connecting to it", async () => {
    const asked: string[] = [];
    const f = (async (url: string | URL | Request) => {
      asked.push(String(url));
      const u = new URL(String(url));
      if (u.hostname === "a.test")
        return new Response(null, { status: 302, headers: { location: u.searchParams.get("to")! } });
      return new Response(png, { headers: { "content-type": "image/png" } });
    }) as typeof fetch;
    for (const to of [
      "http://169.254.169.254/latest/meta-data/",
      "http://2130706433:8787/v1/model",
      "http://[::ffff:10.0.0.1]/",
      "http://localhost/",
      "//0x7f.1/",
    ]) {
      asked.length = 0;
      const start = `https://a.test/r?to=${encodeURIComponent(to)}`;
      expect(await code(fetchImage(start, { maxBytes: 100, fetch: f }))).toEqual(["url-not-allowed", 422]);
      expect(asked).toEqual([start]);
    }
    // The same loopback redirect is followed where loopback is allowed (local development).
    const local = `https://a.test/r?to=${encodeURIComponent("http://127.1:9/x.png")}`;
    expect(await fetchImage(local, { maxBytes: 100, fetch: f, policy: { allowLoopback: true } })).toEqual(
      png,
    );
  });

  it("refuses a private first URL without connecting, and a malformed Location is a 400, not a 500", async () => {
    let calls = 0;
    const counting = (async () => {
      calls++;
      return new Response(png, { headers: { "content-type": "image/png" } });
    }) as typeof fetch;
    for (const u of ["http://127.0.0.1/", "http://0x7f000001/", "http://[::1]/", "http://0.0.0.0/"])
      expect(await code(fetchImage(u, { maxBytes: 100, fetch: counting }))).toEqual(["url-not-allowed", 422]);
    expect(calls).toBe(0);
    const bad = fake({
      "https://a.test/bad": () => new Response(null, { status: 302, headers: { location: "http://[" } }),
    });
    expect(await code(fetchImage("https://a.test/bad", { maxBytes: 100, fetch: bad }))).toEqual([
      "url-unreachable",
      400,
    ]);
  });

  it("echoes at most 100 characters of a long URL", async () => {
    const long = `https://a.test/${"x".repeat(100_000)}`;
    const err = await fetchImage(long.slice(0, 8000), { maxBytes: 100, fetch: fake({}) }).catch((e) => e);
    expect(err.code).toBe("url-unreachable");
    expect(err.detail.length).toBeLessThan(250);
    const err2 = await fetchImage(long, { maxBytes: 100, fetch: fake({}) }).catch((e) => e);
    expect(err2.code).toBe("invalid-url");
    expect(err2.detail.length).toBeLessThan(250);
  });

  it("refuses loops, non-images, oversize bodies and non-http schemes", async () => {
    const loop = fake({
      "https://a.test/l": () => new Response(null, { status: 302, headers: { location: "/l" } }),
    });
    expect(await code(fetchImage("https://a.test/l", { maxBytes: 100, fetch: loop }))).toEqual([
      "too-many-redirects",
      400,
    ]);
    const html = fake({
      "https://a.test/h": () => new Response("<p>", { headers: { "content-type": "text/html" } }),
    });
    expect(await code(fetchImage("https://a.test/h", { maxBytes: 100, fetch: html }))).toEqual([
      "unsupported-media-type",
      415,
    ]);
    const big = fake({
      "https://a.test/b": () =>
        new Response(new Uint8Array(200), { headers: { "content-type": "image/png" } }),
    });
    expect(await code(fetchImage("https://a.test/b", { maxBytes: 100, fetch: big }))).toEqual([
      "payload-too-large",
      413,
    ]);
    expect(await code(fetchImage("gopher://a.test/x", { maxBytes: 100 }))).toEqual(["url-not-allowed", 422]);
  });
});

describe("curl -d hints", () => {
  it("names --data-binary for a form-encoded body (curl -d's default type)", async () => {
    const req = new Request("http://x/v1/classify", {
      method: "POST",
      body: "abc",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    const err = await readClassifyInput(req, opts).catch((e: AppError) => e);
    expect(err).toMatchObject({ code: "unsupported-media-type", status: 415 });
    expect((err as AppError).detail).toContain("--data-binary");
  });
  it("adds the hint only to decode errors of bodies without NUL, CR and LF that start like an image or are 1 KiB+", () => {
    const bad = new AppError("undecodable-image", 400, "bad header.");
    const flat = new Uint8Array(1024).fill(7);
    expect((withCurlHint(bad, flat) as AppError).detail).toContain("--data-binary");
    const jpegStart = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 6, 8, 11, 12]);
    expect((withCurlHint(bad, jpegStart) as AppError).detail).toContain("--data-binary");
    expect(withCurlHint(bad, flat.slice(0, 1023))).toBe(bad);
    expect(withCurlHint(bad, new TextEncoder().encode("plain words, not pixels"))).toBe(bad);
    for (const byte of [0x00, 0x0a, 0x0d]) {
      const withIt = flat.slice();
      withIt[500] = byte;
      expect(withCurlHint(bad, withIt)).toBe(bad);
    }
    const other = new AppError("image-too-large", 413, "too big");
    expect(withCurlHint(other, flat)).toBe(other);
  });
});
