import { beforeAll, describe, expect, it } from "vitest";
import { fixture } from "../../test/helpers/image-fixtures.ts";
import { isAppError } from "../shared/errors.ts";
import { mulberry32 } from "../shared/random.ts";
import { initNodeCodecs } from "./codecs-node.ts";
import { decodeImage } from "./decode.ts";
import { decodeJpegTs } from "./jpeg-ts.ts";
import type { ImageLimits } from "./limits.ts";

beforeAll(() => initNodeCodecs());

/** Deterministic uniform [0, 1) generator, so a failing mutation can be replayed from its seed. */
const rng = mulberry32;

/** Offsets of header fields worth editing, per fixture (dimensions, depths, chunk lengths, code sizes). */
const HEADER_FIELDS: Record<string, number[]> = {
  "progressive.jpeg": [],
  "baseline-444.jpeg": [],
  "cmyk-progressive.jpeg": [],
  "ycck.jpeg": [],
  "rgb-8bit.png": [8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 33, 34, 35, 36],
  "interlaced-palette-4bit.png": [16, 19, 20, 23, 24, 25, 28],
  "grayscale-16bit.png": [19, 23, 24, 25],
  "lossy.webp": [4, 5, 16, 17, 20, 23, 26, 27, 28, 29],
  "lossless-alpha.webp": [4, 16, 17, 20, 21, 22, 23, 24],
  "exif-rotated-180.webp": [16, 20, 24, 25, 27, 30, 31, 32],
  "animated-alpha.webp": [4, 20, 24, 27, 30, 34, 38, 42, 46, 50, 54, 58, 62],
  "first-frame.gif": [6, 7, 8, 9, 10, 11, 13],
  "frame-offset-transparent.gif": [6, 8, 10, 13, 20, 23, 25, 27, 29, 31, 33, 34, 35],
  "lossless.avif": [3, 20, 24, 28, 40, 60, 100, 140, 180],
};

/** JPEG SOF fields are found by walking markers: precision, height, width, component count. */
function jpegSofFields(b: Uint8Array): number[] {
  for (let i = 2; i + 9 < b.length; i++) {
    if (b[i] === 0xff && (b[i + 1] === 0xc0 || b[i + 1] === 0xc2))
      return [i + 4, i + 5, i + 6, i + 7, i + 8, i + 9, i + 10];
  }
  return [];
}

type Mutation = { kind: string; bytes: Uint8Array };

function mutations(name: string, seed: number, count: number): Mutation[] {
  const src = fixture(name);
  const rand = rng(seed);
  const pick = (n: number) => Math.floor(rand() * n);
  const fields = name.endsWith(".jpeg") ? jpegSofFields(src) : HEADER_FIELDS[name];
  const out: Mutation[] = [];
  for (let i = 0; i < count; i++) {
    const b = src.slice();
    const mode = i % 4;
    if (mode === 0) {
      const cut = 1 + pick(src.length - 1);
      out.push({ kind: `truncate@${cut}`, bytes: b.subarray(0, cut) });
    } else if (mode === 1) {
      const flips = 1 + pick(8);
      for (let f = 0; f < flips; f++) b[pick(b.length)] ^= 1 << pick(8);
      out.push({ kind: `flip${flips}`, bytes: b });
    } else if (mode === 2 && fields.length) {
      const at = fields[pick(fields.length)];
      const v = [0, 0xff, 1, pick(256)][pick(4)];
      b[at] = v;
      out.push({ kind: `field@${at}=${v}`, bytes: b });
    } else {
      // Bit flips concentrated in the first 64 bytes, where headers live.
      for (let f = 0; f < 3; f++) b[pick(Math.min(64, b.length))] ^= 1 << pick(8);
      out.push({ kind: "head-flip", bytes: b });
    }
  }
  return out;
}

const LIMITS: Partial<ImageLimits> = {
  maxPixels: 4_000_000,
  maxWidth: 8192,
  maxHeight: 8192,
  maxDecodeMs: 5000,
};
const PER_FILE = 36;

describe("mutated files decode sanely or are refused with an AppError", () => {
  it.each(Object.keys(HEADER_FIELDS))(`${PER_FILE} mutations of %s`, async (name) => {
    const outcomes: Record<string, number> = {};
    for (const m of mutations(name, name.length * 7919, PER_FILE)) {
      try {
        const img = await decodeImage(m.bytes, { limits: LIMITS });
        expect(img.width, m.kind).toBeGreaterThan(0);
        expect(img.height, m.kind).toBeGreaterThan(0);
        expect(img.width * img.height, m.kind).toBeLessThanOrEqual(LIMITS.maxPixels!);
        expect(img.data.length, m.kind).toBe(img.width * img.height * 3);
        outcomes.decoded = (outcomes.decoded ?? 0) + 1;
      } catch (e) {
        if (!isAppError(e)) throw new Error(`${name} ${m.kind}: non-AppError escaped: ${String(e)}`);
        expect(e.status, m.kind).toBeGreaterThanOrEqual(400);
        expect(e.detail.length, m.kind).toBeGreaterThan(10);
        outcomes[e.code] = (outcomes[e.code] ?? 0) + 1;
      }
    }
    expect(Object.values(outcomes).reduce((a, b) => a + b, 0)).toBe(PER_FILE);
  });

  it.each(["progressive-420-odd-size.jpeg", "progressive-restart-markers.jpeg", "baseline-444.jpeg"])(
    `${PER_FILE} mutations of %s through the TypeScript JPEG decoder`,
    (name) => {
      for (const m of mutations(name, name.length * 104729, PER_FILE)) {
        try {
          const img = decodeJpegTs(m.bytes, performance.now() + 5000);
          expect(img.data.length, m.kind).toBe(img.width * img.height * 3);
        } catch (e) {
          if (!isAppError(e)) throw new Error(`${name} ${m.kind}: non-AppError escaped: ${String(e)}`);
        }
      }
    },
  );

  it("the codecs still decode correctly after all that", async () => {
    for (const name of ["photo-odd-size.jpeg", "rgb-8bit.png", "lossy.webp", "lossless.avif"]) {
      const img = await decodeImage(fixture(name));
      expect(img.data.length).toBe(img.width * img.height * 3);
    }
  });
});
