import { deflateSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { expected, fixture, maxAbsDiff, pillowRgb, refusal } from "../../test/helpers/image-fixtures.ts";
import { bigJpeg } from "../../test/helpers/jpeg-encode.ts";
import type { AppError } from "../shared/errors.ts";
import { codecMemoryBytes, RELEASE_AFTER_BYTES, retainedCodecBytes } from "./codecs.ts";
import { initNodeCodecs } from "./codecs-node.ts";
import { crc32 } from "./crc32.ts";
import { decodeImage, inspectImage } from "./decode.ts";
import { decodeJpegTs } from "./jpeg-ts.ts";
import { DEFAULT_LIMITS, estimateDecodeBytes, resolveLimits } from "./limits.ts";

beforeAll(() => initNodeCodecs());

const decodable = Object.entries(expected.images).filter(([, e]) => !e.refusal);
const refused = Object.entries(expected.images).filter(([, e]) => e.refusal);

describe("decodeImage matches Pillow's exif_transpose(open(f)).convert('RGB')", () => {
  it.each(decodable)("%s", async (name, e) => {
    const img = await decodeImage(fixture(name));
    expect([img.width, img.height]).toEqual([e.width, e.height]);
    expect(img.data.length).toBe(e.width! * e.height! * 3);
    const ref = pillowRgb(name);
    // libjpeg-turbo in Pillow and MozJPEG here share the ISLOW IDCT and fancy upsampling: the spec allows
    // 1 LSB for JPEG, lossless formats must be exact.
    const tolerance = name.endsWith(".jpeg") ? 1 : 0;
    expect(maxAbsDiff(img.data, ref)).toBeLessThanOrEqual(tolerance);
  });

  it("every fixture decodes (refusals are tested below with their own inputs)", () => {
    expect(refused).toEqual([]);
  });
});

describe("EXIF orientation", () => {
  it("applies all eight orientations like ImageOps.exif_transpose", async () => {
    const upright = await decodeImage(fixture("exif-orientation-1.jpeg"));
    for (let o = 2; o <= 8; o++) {
      const img = await decodeImage(fixture(`exif-orientation-${o}.jpeg`));
      const swap = o >= 5;
      expect([img.width, img.height]).toEqual(swap ? [11, 17] : [17, 11]);
      expect(maxAbsDiff(img.data, pillowRgb(`exif-orientation-${o}.jpeg`))).toBeLessThanOrEqual(1);
      if (!swap) expect(img.data).not.toEqual(upright.data);
    }
  });

  it("exifTranspose: false keeps the stored pixel grid (Image.open + processor, as in the model card)", async () => {
    const raw = await decodeImage(fixture("exif-orientation-6.jpeg"), { exifTranspose: false });
    const plain = await decodeImage(fixture("exif-orientation-1.jpeg"));
    expect([raw.width, raw.height]).toEqual([17, 11]);
    expect(raw.data).toEqual(plain.data);
    const png = await decodeImage(fixture("exif-rotated-90.png"), { exifTranspose: false });
    expect([png.width, png.height]).toEqual([17, 11]);
  });

  it("reads EXIF from PNG eXIf and WebP EXIF chunks too", async () => {
    expect((await decodeImage(fixture("exif-rotated-90.png"))).width).toBe(11);
    const webp = await decodeImage(fixture("exif-rotated-180.webp"));
    expect(webp.data).toEqual(pillowRgb("exif-rotated-180.webp"));
  });
});

describe("the TypeScript JPEG decoder (CMYK, and progressive over the wasm budget)", () => {
  const names = Object.keys(expected.images).filter((n) => /progressive|cmyk|ycck/.test(n));
  it.each(names)("%s equals Pillow bit for bit", (name) => {
    const img = decodeJpegTs(fixture(name));
    expect(maxAbsDiff(img.data, pillowRgb(name))).toBe(0);
  });

  it("equals the MozJPEG wasm decoder on the baseline fixtures too", async () => {
    for (const name of ["photo-odd-size.jpeg", "baseline-444.jpeg", "grayscale.jpeg"]) {
      expect(maxAbsDiff(decodeJpegTs(fixture(name)).data, pillowRgb(name)), name).toBe(0);
    }
  });
});

describe("format quirks Pillow has", () => {
  it("clips 16-bit grayscale to 0..255 instead of scaling (mode 'I' -> 'RGB')", async () => {
    const img = await decodeImage(fixture("grayscale-16bit.png"));
    // The first row starts with samples 0, 1, 254, 255, 256, 65535.
    expect(Array.from(img.data.subarray(0, 18))).toEqual([
      0, 0, 0, 1, 1, 1, 254, 254, 254, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    ]);
  });

  it("keeps the high byte of 16-bit RGB samples", async () => {
    const img = await decodeImage(fixture("rgb-16bit.png"));
    // First pixel's samples are 0, 2741, 5482 -> high bytes 0, 10, 21.
    expect(Array.from(img.data.subarray(0, 3))).toEqual([0, 10, 21]);
  });

  it("drops alpha without compositing", async () => {
    const img = await decodeImage(fixture("rgba-alpha-dropped.png"));
    const rgb = await decodeImage(fixture("rgb-8bit.png"));
    expect(img.data).toEqual(rgb.data);
  });

  it("decodes the first frame of an animated WebP (with and without alpha) like Pillow's WebPAnimDecoder", async () => {
    for (const name of ["animated.webp", "animated-alpha.webp"]) {
      expect((await decodeImage(fixture(name))).data).toEqual(pillowRgb(name));
    }
  });

  it("decodes the first frame of an animated GIF and the default image of an APNG", async () => {
    const gif = await decodeImage(fixture("first-frame.gif"));
    expect(gif.format).toBe("gif");
    const apng = await decodeImage(fixture("animated.png"));
    expect(apng.data).toEqual(pillowRgb("animated.png"));
  });
});

function pngHeaderOnly(width: number, height: number): Uint8Array {
  const b = new Uint8Array(8 + 25 + 12);
  b.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const v = new DataView(b.buffer);
  v.setUint32(8, 13);
  b.set([0x49, 0x48, 0x44, 0x52], 12);
  v.setUint32(16, width);
  v.setUint32(20, height);
  b.set([8, 2, 0, 0, 0], 24);
  v.setUint32(29, crc32(b, 12, 29));
  // then an IEND with its CRC: the header is complete and checks out, only the image data is missing
  b.set([0x49, 0x45, 0x4e, 0x44], 37);
  v.setUint32(41, crc32(b, 37, 41));
  return b;
}

describe("bad input gets a clear error with a stable code", () => {
  it("empty body", async () => {
    const e = await refusal(new Uint8Array(0));
    expect([e.code, e.status]).toEqual(["empty-body", 400]);
  });

  it("unknown bytes and unsupported formats name what was detected", async () => {
    const text = await refusal(new TextEncoder().encode("hello, this is not an image"));
    expect([text.code, text.status]).toEqual(["unsupported-format", 415]);
    expect(text.detail).toContain("no known image format");
    const tiff = await refusal(new Uint8Array([0x49, 0x49, 0x2a, 0, 8, 0, 0, 0, 0, 0]));
    expect(tiff.detail).toContain("detected TIFF; supported: JPEG, PNG, WebP, AVIF, GIF");
    const bmp = await refusal(new Uint8Array([0x42, 0x4d, 1, 2, 3, 4]));
    expect(bmp.detail).toContain("detected BMP");
  });

  it("a wrong file name or Content-Type does not matter: the magic bytes decide", async () => {
    // A PNG named .jpeg would still be a PNG: decodeImage never sees a name, and the format comes back.
    expect((await decodeImage(fixture("rgb-8bit.png"))).format).toBe("png");
  });

  it("too many bytes", async () => {
    const e = await refusal(fixture("rgb-8bit.png"), { limits: { maxBytes: 100 } });
    expect([e.code, e.status]).toEqual(["image-too-large", 413]);
    expect(e.detail).toContain("limit is 100 bytes");
  });

  it("a decompression bomb is refused from its header", async () => {
    const e = await refusal(pngHeaderOnly(100_000, 100_000));
    expect([e.code, e.status]).toEqual(["image-too-large", 413]);
    expect(e.detail).toContain("width 100000 exceeds the limit");
    const px = await refusal(pngHeaderOnly(16_000, 16_000));
    expect(px.detail).toContain(`exceeds the limit of ${DEFAULT_LIMITS.maxPixels}`);
    const custom = await refusal(fixture("photo-odd-size.jpeg"), { limits: { maxPixels: 10_000 } });
    expect(custom.code).toBe("image-too-large");
  });

  it("zero-pixel images", async () => {
    const e = await refusal(pngHeaderOnly(0, 10));
    expect([e.code, e.status]).toEqual(["image-too-small", 422]);
  });

  it("a one-pixel image decodes", async () => {
    const gif = new Uint8Array([
      0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 1, 0, 1, 0, 0x80, 0, 0, 10, 20, 30, 40, 50, 60, 0x2c, 0, 0, 0, 0, 1,
      0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b,
    ]);
    const img = await decodeImage(gif);
    expect([img.width, img.height, ...img.data]).toEqual([1, 1, 10, 20, 30]);
  });

  it("a GIF frame whose LZW data ends early is refused, as Pillow refuses it (image file is truncated)", async () => {
    // 4x3 screen and frame, 4-colour table, LZW: (clear, index) for 1, 2, 3, 1, 2, then end: 5 of 12 pixels.
    const gif = Uint8Array.from([
      71, 73, 70, 56, 57, 97, 4, 0, 3, 0, 129, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0, 44, 0, 0,
      0, 0, 4, 0, 3, 0, 0, 2, 5, 12, 197, 49, 84, 1, 0, 59,
    ]);
    const e = await refusal(gif);
    expect(e.code).toBe("undecodable-image");
    expect(e.detail).toContain("ends after 5 of 12 pixels");
  });

  it("truncated files of every format", async () => {
    // (A GIF cut inside its second frame still has a complete first frame and decodes, as in Pillow.)
    for (const name of [
      "photo-odd-size.jpeg",
      "rgb-8bit.png",
      "lossy.webp",
      "not-interlaced.gif",
      "lossless.avif",
    ]) {
      const b = fixture(name);
      const e = await refusal(b.subarray(0, Math.floor(b.length * 0.6)));
      expect(e.code, name).toBe("undecodable-image");
    }
  });
});

/** SOI + SOF (baseline C0 or progressive C2), YCbCr 4:2:0 (or 4:4:4), and nothing else. */
function jpegHeaderOnly(width: number, height: number, progressive: boolean, luma = 0x22): Uint8Array {
  return Uint8Array.from([
    0xff,
    0xd8,
    0xff,
    progressive ? 0xc2 : 0xc0,
    0,
    17,
    8,
    height >> 8,
    height & 255,
    width >> 8,
    width & 255,
    3,
    1,
    luma,
    0,
    2,
    0x11,
    1,
    3,
    0x11,
    1,
  ]);
}

describe("memory budget (maxDecodeBytes) from the header", () => {
  it("12 MP: baseline goes to wasm, progressive 4:2:0 to the TypeScript decoder, progressive 4:4:4 is refused", () => {
    const limits = resolveLimits();
    expect(inspectImage(jpegHeaderOnly(4032, 3024, false), limits).decoder).toBeUndefined();
    expect(inspectImage(jpegHeaderOnly(4032, 3024, true), limits).decoder).toBe("ts");
    expect(inspectImage(jpegHeaderOnly(1200, 800, true), limits).decoder).toBeUndefined(); // small: wasm
    // A 14 MP baseline JPEG is over the wasm budget but fits the TypeScript decoder's; 16 MP fits neither.
    expect(inspectImage(jpegHeaderOnly(4600, 3100, false), limits).decoder).toBe("ts");
    expect(() => inspectImage(jpegHeaderOnly(4900, 3300, false), limits)).toThrow(/limit is 109 MB/);
    try {
      inspectImage(jpegHeaderOnly(4032, 3024, true, 0x11), limits);
      throw new Error("expected a refusal");
    } catch (e) {
      expect((e as AppError).code).toBe("image-too-large");
      expect((e as AppError).detail).toContain("Progressive JPEGs cost the most");
    }
  });

  it("estimates match the measured 12 MP costs (bench/image-decode.ts) from above", () => {
    const base = estimateDecodeBytes({ format: "jpeg", width: 4032, height: 3024, encodedBytes: 1_372_000 });
    expect(base).toBeGreaterThanOrEqual(51.8e6 + 48.8e6);
    expect(base).toBeLessThan(DEFAULT_LIMITS.maxDecodeBytes);
    const samples = 3 * 4032 * 3024; // the bench's progressive file is 4:4:4
    const prog = estimateDecodeBytes({
      format: "jpeg",
      width: 4032,
      height: 3024,
      encodedBytes: 1_342_000,
      progressive: true,
      samples,
    });
    expect(prog).toBeGreaterThanOrEqual(124.8e6 + 48.8e6);
  });
});

/** A PNG (8-bit RGB) with the given IHDR size and raw IDAT payload; the IDAT and IEND CRCs are zero (Pillow does not check them). */
function pngWithIdat(width: number, height: number, idat: Uint8Array): Uint8Array {
  const head = pngHeaderOnly(width, height).subarray(0, 33);
  const b = new Uint8Array(33 + 12 + idat.length + 12);
  b.set(head);
  const v = new DataView(b.buffer);
  v.setUint32(33, idat.length);
  b.set([0x49, 0x44, 0x41, 0x54], 37);
  b.set(idat, 41);
  v.setUint32(41 + idat.length + 4, 0);
  b.set([0x49, 0x45, 0x4e, 0x44], 41 + idat.length + 8);
  return b;
}

describe("streaming PNG decoder", () => {
  it("stops inflating once the declared rows are read (a zlib bomb costs nothing)", async () => {
    const bomb = deflateSync(new Uint8Array(50_000_000), { level: 9 });
    expect(bomb.length).toBeLessThan(100_000);
    const img = await decodeImage(pngWithIdat(2, 2, bomb));
    expect([img.width, img.height, ...img.data]).toEqual([2, 2, ...new Array(12).fill(0)]);
  });

  it("refuses a corrupt zlib stream and too little image data", async () => {
    const good = deflateSync(Uint8Array.from({ length: 2 * (1 + 6) }, (_, i) => (i % 7 === 0 ? 0 : i)));
    const img = await decodeImage(pngWithIdat(2, 2, good));
    expect(Array.from(img.data.subarray(0, 6))).toEqual([1, 2, 3, 4, 5, 6]);
    const flipped = good.slice();
    flipped[flipped.length - 1] ^= 0xff; // Adler-32 mismatch
    expect((await refusal(pngWithIdat(2, 2, flipped))).code).toBe("undecodable-image");
    expect((await refusal(pngWithIdat(2, 3, good))).code).toBe("undecodable-image");
  });
});

describe("codec memory", () => {
  it("keeps a 12 MP JPEG's instance for the next JPEG (same memory, same pixels) and drops it before a PNG", async () => {
    // A phone photo's size: ~51 MB of wasm heap, kept (rebuilding it for every photo made every
    // other 12 MP request 1.5-2 s slower in the service).
    const jpeg = await bigJpeg(4032, 3024);
    const first = await decodeImage(jpeg);
    const kept = retainedCodecBytes("jpeg");
    expect(kept).toBeGreaterThan(48e6);
    expect(kept).toBeLessThanOrEqual(RELEASE_AFTER_BYTES);
    // The estimate of the next decode counts the memory the instance already holds.
    const header = inspectImage(jpeg, DEFAULT_LIMITS);
    expect(header.format).toBe("jpeg");
    const own = estimateDecodeBytes({ format: "jpeg", width: 4032, height: 3024, encodedBytes: jpeg.length });
    const withRetained = estimateDecodeBytes({
      format: "jpeg",
      width: 4032,
      height: 3024,
      encodedBytes: jpeg.length,
      retainedWasmBytes: 200e6,
    });
    expect(withRetained - own).toBeGreaterThan(140e6); // 200 MB held instead of its own ~53 MB
    const second = await decodeImage(jpeg);
    expect(retainedCodecBytes("jpeg")).toBe(kept);
    expect(maxAbsDiff(second.data, first.data)).toBe(0);
    // A TypeScript decode (PNG) drops the large JPEG heap first; the next JPEG builds a fresh one.
    await decodeImage(fixture(decodable.find(([n]) => n.endsWith(".png"))![0]));
    expect(retainedCodecBytes("jpeg")).toBe(0);
    const third = await decodeImage(jpeg);
    expect(maxAbsDiff(third.data, first.data)).toBe(0);
  }, 60_000);

  it("drops a JPEG instance whose memory grew past the release threshold, and keeps decoding", async () => {
    await decodeImage(fixture("photo-odd-size.jpeg"));
    const mem = codecMemoryBytes();
    expect(mem.jpeg).toBeGreaterThan(0);
    expect(mem.jpeg).toBeLessThanOrEqual(RELEASE_AFTER_BYTES);
    const again = await decodeImage(fixture("photo-odd-size.jpeg"));
    expect(maxAbsDiff(again.data, pillowRgb("photo-odd-size.jpeg"))).toBeLessThanOrEqual(1);
  });
});
