/**
 * Regression tests for hostile images (issue #13): each input is made here, and each test failed on
 * the decoder before the fix (unbounded inflation, bitstreams larger than their headers, scan and
 * chunk counts, 12-bit JPEG answered as a decoder error).
 */
import { deflateSync } from "node:zlib";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  animatedWebp,
  jpegWithScans,
  pngBomb,
  pngFromZlib,
  pngManyChunks,
  stillWebpVp8x,
} from "../../test/helpers/hostile.ts";
import { AppError } from "../shared/errors.ts";
import { initNodeCodecs } from "./codecs-node.ts";
import { decodeImage } from "./decode.ts";
import { countJpegScans } from "./header.ts";
import { DEFAULT_LIMITS } from "./limits.ts";

beforeAll(() => initNodeCodecs());
afterEach(() => vi.unstubAllGlobals());

async function refusal(bytes: Uint8Array, opts = {}): Promise<AppError> {
  try {
    await decodeImage(bytes, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    return e as AppError;
  }
  throw new Error("expected decodeImage to refuse the input");
}

/** Replaces DecompressionStream by one that counts the compressed bytes and writes it is given. */
function countInflaterInput(): { bytes: number; writes: number } {
  const seen = { bytes: 0, writes: 0 };
  const Real = DecompressionStream;
  class Counting {
    readonly readable: ReadableStream<Uint8Array>;
    readonly writable: WritableStream<Uint8Array>;
    constructor(format: ConstructorParameters<typeof DecompressionStream>[0]) {
      const real = new Real(format);
      this.readable = real.readable;
      const w = real.writable.getWriter();
      this.writable = new WritableStream<Uint8Array>({
        write(chunk) {
          seen.bytes += chunk.length;
          seen.writes++;
          return w.write(chunk);
        },
        close: () => w.close(),
        abort: (r) => w.abort(r),
      });
    }
  }
  vi.stubGlobal("DecompressionStream", Counting);
  return seen;
}

describe("PNG: inflation stops at the declared image", () => {
  it("a 1x1 PNG whose IDAT inflates to 32 MiB feeds the inflater a few KiB, not the whole IDAT", async () => {
    const bomb = await pngBomb(1, 1, 32 * 1024 * 1024);
    expect(bomb.length).toBeGreaterThan(30_000);
    const seen = countInflaterInput();
    const img = await decodeImage(bomb);
    expect([img.width, img.height, ...img.data]).toEqual([1, 1, 0, 0, 0]);
    expect(seen.bytes).toBeLessThanOrEqual(3 * 4096);
  });

  it("many tiny IDAT chunks cost one inflater write per 4 KiB of compressed data, not one per chunk", async () => {
    const png = pngManyChunks(64, 64, 5000);
    const seen = countInflaterInput();
    const img = await decodeImage(png);
    expect([img.width, img.height]).toEqual([64, 64]);
    expect(img.data.every((v) => v === 0)).toBe(true);
    expect(seen.writes).toBeLessThanOrEqual(2);
  });

  it("refuses a PNG of more chunks than maxChunks before inflating anything", async () => {
    const png = pngManyChunks(64, 64, DEFAULT_LIMITS.maxChunks + 10);
    const seen = countInflaterInput();
    const e = await refusal(png);
    expect([e.code, e.status, e.extra.limit]).toEqual(["image-too-complex", 422, "maxChunks"]);
    expect(e.detail).toContain(`the limit is ${DEFAULT_LIMITS.maxChunks}`);
    expect(seen.writes).toBe(0);
  });

  it("an image whose rows arrive in many small IDATs still decodes exactly", async () => {
    const rows = Uint8Array.from({ length: 3 * (1 + 9) }, (_, i) => (i % 10 === 0 ? 0 : i));
    const img = await decodeImage(pngFromZlib(3, 3, deflateSync(rows), 1));
    expect(Array.from(img.data.subarray(0, 9))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
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
    const later = await refusal(
      animatedWebp(
        [64, 64],
        [64, 64],
        [64, 64],
        [
          [
            [64, 64],
            [9000, 9000],
          ],
        ],
      ),
    );
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

  it("a 12-bit JPEG is 415 unsupported-format (the README's promise), not a 400 decoder error", async () => {
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
