/**
 * Pillow's verdicts on broken PNG containers (issue #21): for every chunk of seven bases, its CRC
 * flipped, a data byte flipped, its type's case flipped; each base without IEND and cut inside the
 * IHDR's CRC. The variants are rebuilt here from the bases (their sha256 must equal the generator's)
 * and decodeImage must accept exactly what Pillow 9.4 accepted when
 * scripts/make-png-checksum-corpus.py opened them as the Hugging Face pipeline does. A refusal here
 * is always a 4xx problem, never a 500.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { FIXTURES } from "../../test/helpers/image-fixtures.ts";
import { AppError } from "../shared/errors.ts";
import { initNodeCodecs } from "./codecs-node.ts";
import { crc32 } from "./crc32.ts";
import { decodeImage } from "./decode.ts";

const CORPUS = join(FIXTURES, "..", "png-checksums");

interface Variant {
  base: string;
  chunk: number | null;
  type: string | null;
  change: "crc" | "data" | "type" | "no-iend" | "cut-in-crc";
  offset: number;
  xor: number | null;
  sha256: string;
  pillow: "accept" | "refuse";
  message: string | null;
}

const corpus = JSON.parse(readFileSync(join(CORPUS, "verdicts.json"), "utf8")) as {
  pillow: string;
  variants: Variant[];
};

function base(name: string): Uint8Array {
  const dir = name === "ancillary-chunks.png" ? CORPUS : FIXTURES;
  return new Uint8Array(readFileSync(join(dir, name)));
}

function rebuild(v: Variant): Uint8Array {
  const b = base(v.base);
  if (v.xor === null) return b.slice(0, v.offset);
  const m = b.slice();
  m[v.offset] ^= v.xor;
  return m;
}

async function verdict(
  bytes: Uint8Array,
): Promise<{ verdict: "accept" | "refuse"; detail?: string; status?: number }> {
  try {
    await decodeImage(bytes);
    return { verdict: "accept" };
  } catch (e) {
    if (!(e instanceof AppError)) throw e;
    return { verdict: "refuse", detail: e.detail, status: e.status };
  }
}

beforeAll(() => initNodeCodecs());

describe("PNG container checks, as Pillow makes them", () => {
  it("computes the CRC-32 PNG uses", () => {
    expect(crc32(new TextEncoder().encode("IEND"))).toBe(0xae426082);
  });

  it(`agrees with Pillow ${corpus.pillow} on all ${corpus.variants.length} variants`, async () => {
    expect(corpus.variants.length).toBeGreaterThan(100);
    expect(corpus.variants.some((v) => v.pillow === "accept")).toBe(true);
    const disagreements: string[] = [];
    for (const v of corpus.variants) {
      const bytes = rebuild(v);
      expect(createHash("sha256").update(bytes).digest("hex"), `${v.base} ${v.type} ${v.change}`).toBe(
        v.sha256,
      );
      const ours = await verdict(bytes);
      if (ours.verdict === "refuse") expect(ours.status).toBeGreaterThanOrEqual(400);
      if (ours.status !== undefined) expect(ours.status).toBeLessThan(500);
      if (ours.verdict !== v.pillow)
        disagreements.push(
          `${v.base} chunk ${v.chunk} ${v.type} ${v.change}: Pillow ${v.pillow}${v.message ? ` (${v.message.slice(0, 60)})` : ""}, we ${ours.verdict}${ours.detail ? ` (${ours.detail})` : ""}`,
        );
    }
    expect(disagreements).toEqual([]);
  });

  it("names the chunk whose checksum is wrong", async () => {
    const b = base("rgb-8bit.png").slice();
    b[8 + 8 + 13 + 3] ^= 1; // IHDR's CRC
    const r = await verdict(b);
    expect(r).toMatchObject({ verdict: "refuse", status: 400 });
    expect(r.detail).toMatch(/checksum in the IHDR chunk/);
  });
});
