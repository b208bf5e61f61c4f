/**
 * Regression tests for hostile images (issue #13): each input is made here, and each test failed on
 * the decoder before the fix (unbounded inflation, bitstreams larger than their headers, scan and
 * chunk counts, 12-bit JPEG answered as a decoder error).
 */
import { deflateSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import {
  animatedWebp,
  animatedWebpLaterFrame,
  jpegWithScans,
  pngBomb,
  pngFromZlib,
  pngManyChunks,
  stillWebpVp8x,
  zlibZeros,
} from "../../test/helpers/hostile.ts";
import { refusal } from "../../test/helpers/image-fixtures.ts";
import type { AppError } from "../shared/errors.ts";
import { initNodeCodecs } from "./codecs-node.ts";
import { decodeImage } from "./decode.ts";
import { countJpegScans } from "./header.ts";
import { inflateZlibInto } from "./inflate.ts";
import { DEFAULT_LIMITS } from "./limits.ts";

beforeAll(() => initNodeCodecs());

/** `bytes` as 1 KiB views, recording the highest view the decoder asked for. */
function tracked(bytes: Uint8Array): { parts: Uint8Array[]; highest: () => number } {
  const views = Array.from({ length: Math.ceil(bytes.length / 1024) }, (_, i) =>
    bytes.subarray(i * 1024, (i + 1) * 1024),
  );
  let highest = -1;
  const parts = new Proxy(views, {
    get(target, key, receiver) {
      if (typeof key === "string" && /^\d+$/.test(key)) highest = Math.max(highest, Number(key));
      return Reflect.get(target, key, receiver);
    },
  });
  return { parts, highest: () => highest };
}

describe("PNG: inflation stops at the declared image", () => {
  it("a 1x1 PNG whose IDAT inflates to 32 MiB decodes, reading only the first KiB of its stream", async () => {
    const bomb = await pngBomb(1, 1, 32 * 1024 * 1024);
    expect(bomb.length).toBeGreaterThan(30_000);
    const img = await decodeImage(bomb);
    expect([img.width, img.height, ...img.data]).toEqual([1, 1, 0, 0, 0]);
    // What the PNG decoder does with it: a raw buffer of the declared 4 bytes, filled from the front.
    const zlib = await zlibZeros(32 * 1024 * 1024);
    const t = tracked(zlib);
    const raw = new Uint8Array(4);
    inflateZlibInto(t.parts, raw);
    expect(t.highest()).toBe(0);
    expect(t.parts.length).toBeGreaterThan(30);
  });

  it("a declared 2000x2000 image behind a 256 MiB stream inflates its 12 MB of rows and stops", async () => {
    const rows = 2000 * (1 + 3 * 2000);
    const zlib = await zlibZeros(256 * 1024 * 1024);
    const t = tracked(zlib);
    inflateZlibInto(t.parts, new Uint8Array(rows));
    // zlib level 9 stores zeros at ~1030:1, so 12 MB of rows need ~12 KiB of the ~260 KiB stream.
    expect(t.highest()).toBeLessThan(20);
    expect(t.parts.length).toBeGreaterThan(200);
  });

  it("refuses a PNG of more chunks than maxChunks before inflating anything", async () => {
    const png = pngManyChunks(64, 64, DEFAULT_LIMITS.maxChunks + 10);
    const e = await refusal(png);
    expect([e.code, e.status, e.extra.limit]).toEqual(["image-too-complex", 422, "maxChunks"]);
    expect(e.detail).toContain(`the limit is ${DEFAULT_LIMITS.maxChunks}`);
  });

  it("an image whose rows arrive in many small IDATs still decodes exactly", async () => {
    const rows = Uint8Array.from({ length: 3 * (1 + 9) }, (_, i) => (i % 10 === 0 ? 0 : i));
    const img = await decodeImage(pngFromZlib(3, 3, deflateSync(rows), 1));
    expect(Array.from(img.data.subarray(0, 9))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const many = await decodeImage(pngManyChunks(64, 64, 5000));
    expect([many.width, many.height, many.data.every((v) => v === 0)]).toEqual([64, 64, true]);
  });
});

describe("WebP: every frame's real bitstream size is checked before decoding", () => {
  it("an animated WebP whose 1x1 frame holds an 8000x8000 VP8L bitstream is refused from its header", async () => {
    const webp = animatedWebp([1, 1], [1, 1], [8000, 8000]);
    expect(webp.length).toBeLessThan(200);
    const e = await refusal(webp);
    expect([e.code, e.status]).toEqual(["undecodable-image", 400]);
    expect(e.detail).toContain("bitstream is 8000x8000");
  });

  it("a frame header that matches its oversized bitstream is refused by the pixel limit (413)", async () => {
    const e = await refusal(animatedWebp([1, 1], [12000, 12000], [12000, 12000]));
    expect([e.code, e.status]).toEqual(["image-too-large", 413]);
    // A later frame counts too, though only the first is decoded.
    const later = await refusal(animatedWebpLaterFrame());
    expect([later.code, later.detail]).toEqual(["undecodable-image", expect.stringContaining("9000x9000")]);
  });

  it("a still VP8X WebP whose bitstream disagrees with its canvas is refused before decoding", async () => {
    const e = await refusal(stillWebpVp8x([1, 1], [8000, 8000]));
    expect([e.code, e.status]).toEqual(["undecodable-image", 400]);
    expect(e.detail).toContain("8000x8000");
  });
});

describe("JPEG: scans and sample precision are checked before decoding", () => {
  it("counts scans from the markers, skipping entropy data, stuffed bytes and restart markers", () => {
    expect(countJpegScans(jpegWithScans(1))).toBe(1);
    expect(countJpegScans(jpegWithScans(10))).toBe(10);
    expect(countJpegScans(jpegWithScans(5000), 100)).toBe(101);
  });

  it(`refuses a progressive JPEG of more than ${DEFAULT_LIMITS.maxScans} scans with 422 image-too-complex`, async () => {
    const e = await refusal(jpegWithScans(DEFAULT_LIMITS.maxScans + 1));
    expect([e.code, e.status, e.extra.limit]).toEqual(["image-too-complex", 422, "maxScans"]);
    const many = await refusal(jpegWithScans(100_000));
    expect(many.code).toBe("image-too-complex");
    // At the limit the scans are accepted and the (junk) data goes to the decoder.
    const atLimit = await decodeImage(jpegWithScans(DEFAULT_LIMITS.maxScans)).then(
      () => "decoded",
      (e: AppError) => e.code,
    );
    expect(atLimit).not.toBe("image-too-complex");
  });

  it("a 12-bit JPEG is 415 unsupported-format (docs/api.md's promise), not a 400 decoder error", async () => {
    for (const sof of [0xc1, 0xc2]) {
      const e = await refusal(jpegWithScans(1, { sof, precision: 12 }));
      expect([e.code, e.status]).toEqual(["unsupported-format", 415]);
      expect(e.detail).toContain("12-bit");
    }
    const lossless = await refusal(jpegWithScans(1, { sof: 0xc3 }));
    expect([lossless.code, lossless.detail]).toEqual([
      "unsupported-format",
      expect.stringContaining("lossless"),
    ]);
  });
});
