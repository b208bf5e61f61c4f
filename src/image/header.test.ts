import { describe, expect, it } from "vitest";
import { expected, fixture } from "../../test/helpers/image-fixtures.ts";
import { applyOrientation, effectiveOrientation, readOrientation } from "./exif.ts";
import { readHeader, type SupportedFormat, sniffFormat } from "./header.ts";
import { composeFirstFrame, firstAnimationFrame } from "./webp-anim.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

describe("sniffFormat reads magic bytes only", () => {
  it.each([
    ["jpeg", [0xff, 0xd8, 0xff, 0xdb]],
    ["png", [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
    ["gif", enc("GIF87a")],
    ["webp", enc("RIFF\0\0\0\0WEBPVP8 ")],
    ["avif", enc("\0\0\0\x1cftypavif\0\0\0\0avifmif1")],
    ["avif", enc("\0\0\0\x1cftypmif1\0\0\0\0mif1avif")],
    ["heic", enc("\0\0\0\x18ftypheic\0\0\0\0mif1heic")],
    ["bmp", enc("BM\0\0")],
    ["tiff", [0x4d, 0x4d, 0, 0x2a]],
    ["jxl", [0xff, 0x0a]],
    ["svg", enc('  <svg xmlns="http://www.w3.org/2000/svg"/>')],
    ["pdf", enc("%PDF-1.7")],
    [null, enc("plain text")],
    [null, [0xff, 0xd8]],
  ] as [string | null, ArrayLike<number>][])("%s", (format, bytes) => {
    expect(sniffFormat(Uint8Array.from(bytes))).toBe(format);
  });

  it("names every fixture by its bytes, whatever its extension", () => {
    for (const name of Object.keys(expected.images)) {
      const ext = name.split(".").pop()!;
      expect(sniffFormat(fixture(name)), name).toBe(ext);
    }
  });
});

describe("readHeader finds the stored size without decoding", () => {
  it.each(Object.entries(expected.images).filter(([n]) => !n.endsWith(".gif")))("%s", (name, e) => {
    const bytes = fixture(name);
    const h = readHeader(bytes, sniffFormat(bytes) as SupportedFormat);
    if (e.rawWidth) expect([h.width, h.height]).toEqual([e.rawWidth, e.rawHeight]);
    expect(h.animated).toBe(name.startsWith("animated"));
  });

  it("reports CMYK JPEGs by their component count and finds EXIF blocks", () => {
    expect(readHeader(fixture("cmyk.jpeg"), "jpeg").components).toBe(4);
    expect(readOrientation(readHeader(fixture("exif-orientation-6.jpeg"), "jpeg").exif)).toBe(6);
    expect(readOrientation(readHeader(fixture("exif-rotated-90.png"), "png").exif)).toBe(6);
    expect(readOrientation(readHeader(fixture("exif-rotated-180.webp"), "webp").exif)).toBe(3);
    expect(readOrientation(readHeader(fixture("rgb-8bit.png"), "png").exif)).toBe(1);
  });
});

describe("EXIF orientation helpers", () => {
  const tiff = (le: boolean, type: number, value: number) => {
    const b = new Uint8Array(26);
    const v = new DataView(b.buffer);
    b.set(le ? [0x49, 0x49] : [0x4d, 0x4d]);
    v.setUint16(2, 42, le);
    v.setUint32(4, 8, le);
    v.setUint16(8, 1, le);
    v.setUint16(10, 0x0112, le);
    v.setUint16(12, type, le);
    v.setUint32(14, 1, le);
    if (type === 3) v.setUint16(18, value, le);
    else v.setUint32(18, value, le);
    return b;
  };

  it("reads little- and big-endian SHORT and LONG tags, ignores out-of-range values", () => {
    expect(readOrientation(tiff(true, 3, 8))).toBe(8);
    expect(readOrientation(tiff(false, 3, 5))).toBe(5);
    expect(readOrientation(tiff(false, 4, 3))).toBe(3);
    expect(readOrientation(tiff(true, 3, 9))).toBe(1);
    expect(readOrientation(tiff(true, 3, 0))).toBe(1);
    expect(readOrientation(new Uint8Array([1, 2, 3]))).toBe(1);
    expect(readOrientation(null)).toBe(1);
  });

  it("XMP tiff:Orientation is used only when the EXIF block has no orientation tag (Pillow's getexif)", () => {
    const xmp = '<rdf:Description tiff:Orientation="8"/>';
    expect(effectiveOrientation(null, xmp)).toBe(8);
    expect(effectiveOrientation(tiff(true, 3, 1), xmp)).toBe(1);
    expect(effectiveOrientation(tiff(true, 3, 3), xmp)).toBe(3);
    expect(effectiveOrientation(null, "<tiff:Orientation>6</tiff:Orientation>")).toBe(6);
    expect(effectiveOrientation(null, null)).toBe(1);
    expect(readHeader(fixture("xmp-orientation-8.png"), "png").xmp).toContain('tiff:Orientation="8"');
  });

  it("rotations compose as expected: 6 then 8 is the identity, 3 twice is the identity", () => {
    const img = { width: 3, height: 2, data: Uint8Array.from({ length: 18 }, (_, i) => i) };
    expect(applyOrientation(applyOrientation(img, 6), 8).data).toEqual(img.data);
    expect(applyOrientation(applyOrientation(img, 3), 3).data).toEqual(img.data);
    const r = applyOrientation(img, 6); // 90 degrees clockwise: the bottom-left pixel comes first
    expect([r.width, r.height, ...r.data.subarray(0, 3)]).toEqual([2, 3, 9, 10, 11]);
  });
});

describe("animated WebP first frame", () => {
  it("finds the first ANMF frame and rewraps it as a still WebP", () => {
    const f = firstAnimationFrame(fixture("animated-alpha.webp"));
    expect([f.x, f.y, f.width, f.height]).toEqual([0, 0, 40, 28]);
    expect(sniffFormat(f.still)).toBe("webp");
    const h = readHeader(f.still, "webp");
    expect([h.width, h.height, h.animated]).toEqual([40, 28, false]);
  });

  it("a frame smaller than the canvas lands at its offset on transparent black", () => {
    const rgba = Uint8Array.from([1, 2, 3, 0, 4, 5, 6, 255]);
    const out = composeFirstFrame(3, 2, { x: 2, y: 0, width: 1, height: 2 }, rgba);
    // Alpha is dropped without compositing: the alpha-0 pixel keeps its colour, as convert("RGB") does.
    expect(Array.from(out)).toEqual([0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 4, 5, 6]);
    expect(() => composeFirstFrame(3, 2, { x: 2, y: 0, width: 2, height: 1 }, rgba)).toThrow(
      /outside the canvas/,
    );
  });
});
