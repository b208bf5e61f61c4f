/**
 * @module
 * Hostile image files made on the spot (issue #13): zlib bombs behind small PNG headers, PNGs of
 * many tiny chunks, animated WebPs whose bitstream is larger than their frame header says,
 * progressive JPEGs of many scans, 12-bit JPEGs. Structure only where the refusal comes before
 * decoding; Node only (node:zlib). Used by src/image/hostile.test.ts and bench/hostile-corpus.ts.
 */
import { createDeflate, deflateSync } from "node:zlib";

const be32 = (v: number) => [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
const le32 = (v: number) => [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255];
const le24 = (v: number) => [v & 255, (v >>> 8) & 255, (v >>> 16) & 255];
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));

function concat(parts: (Uint8Array | number[])[]): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

let crcTable: Uint32Array | null = null;
function crc32(parts: Uint8Array[]): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = ~0;
  for (const p of parts) for (let i = 0; i < p.length; i++) c = crcTable[(c ^ p[i]) & 255] ^ (c >>> 8);
  return ~c >>> 0;
}

/** One PNG chunk with a correct CRC. */
export function pngChunk(type: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const t = Uint8Array.from(ascii(type));
  return concat([be32(data.length), t, data, be32(crc32([t, data]))]);
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** IHDR for 8-bit RGB. */
export function ihdr(width: number, height: number): Uint8Array {
  return pngChunk("IHDR", Uint8Array.from([...be32(width), ...be32(height), 8, 2, 0, 0, 0]));
}

/** A PNG from an IHDR size and the zlib stream to put in IDAT (split into `chunkBytes` pieces). */
export function pngFromZlib(
  width: number,
  height: number,
  zlib: Uint8Array,
  chunkBytes = 1 << 20,
): Uint8Array {
  const idats: Uint8Array[] = [];
  for (let at = 0; at < zlib.length; at += chunkBytes)
    idats.push(pngChunk("IDAT", zlib.subarray(at, at + chunkBytes)));
  return concat([PNG_SIGNATURE, ihdr(width, height), ...idats, pngChunk("IEND")]);
}

/** Zero bytes deflated (zlib format), streamed through zlib so a 1 GiB bomb never exists inflated. */
export async function zlibZeros(bytes: number): Promise<Uint8Array> {
  const deflate = createDeflate({ level: 9 });
  const out: Buffer[] = [];
  deflate.on("data", (d: Buffer) => out.push(d));
  const done = new Promise<void>((res, rej) => {
    deflate.on("end", res);
    deflate.on("error", rej);
  });
  const block = Buffer.alloc(1 << 20);
  for (let left = bytes; left > 0; left -= block.length) {
    const piece = left >= block.length ? block : block.subarray(0, left);
    if (!deflate.write(piece)) await new Promise((r) => deflate.once("drain", r));
  }
  deflate.end();
  await done;
  return new Uint8Array(Buffer.concat(out));
}

/**
 * A PNG whose IHDR says `width`x`height` (8-bit RGB, all black) but whose IDAT inflates to
 * `inflatedBytes` (at least the declared rows, then zeros Pillow never reads).
 */
export async function pngBomb(width: number, height: number, inflatedBytes: number): Promise<Uint8Array> {
  return pngFromZlib(width, height, await zlibZeros(Math.max(inflatedBytes, height * (1 + 3 * width))));
}

/** A valid `width`x`height` black RGB PNG whose zlib stream is split into `chunks` IDAT chunks. */
export function pngManyChunks(width: number, height: number, chunks: number): Uint8Array {
  const zlib = deflateSync(new Uint8Array(height * (1 + 3 * width)));
  // Pad with zero-length IDATs when the stream has fewer bytes than chunks.
  const size = Math.max(1, Math.floor(zlib.length / chunks));
  const parts: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < chunks; i++) {
    const end = i === chunks - 1 ? zlib.length : Math.min(zlib.length, at + size);
    parts.push(pngChunk("IDAT", zlib.subarray(at, end)));
    at = end;
  }
  return concat([PNG_SIGNATURE, ihdr(width, height), ...parts, pngChunk("IEND")]);
}

function riffChunk(type: string, data: Uint8Array | number[]): Uint8Array {
  const d = data instanceof Uint8Array ? data : Uint8Array.from(data);
  return concat([ascii(type), le32(d.length), d, d.length & 1 ? [0] : []]);
}

/** A VP8L bitstream header declaring `width`x`height`, followed by `tail` bytes of junk. */
export function vp8lHeader(width: number, height: number, tail = 16): Uint8Array {
  const bits = ((width - 1) & 0x3fff) | (((height - 1) & 0x3fff) << 14);
  return concat([[0x2f], le32(bits >>> 0), new Uint8Array(tail).fill(0x55)]);
}

/**
 * An animated WebP: `canvas` size in VP8X, a first ANMF frame whose header says `frame` but whose VP8L
 * bitstream says `bitstream`, then `later` frames ([header size, bitstream size] each).
 */
export function animatedWebp(
  canvas: [number, number],
  frame: [number, number],
  bitstream: [number, number],
  later: [[number, number], [number, number]][] = [],
): Uint8Array {
  const vp8x = riffChunk("VP8X", [0x02, 0, 0, 0, ...le24(canvas[0] - 1), ...le24(canvas[1] - 1)]);
  const anim = riffChunk("ANIM", [0, 0, 0, 0, 0, 0]);
  const anmf = ([fw, fh]: [number, number], bits: [number, number]) =>
    riffChunk(
      "ANMF",
      concat([
        le24(0),
        le24(0),
        le24(fw - 1),
        le24(fh - 1),
        le24(100),
        [0],
        riffChunk("VP8L", vp8lHeader(...bits)),
      ]),
    );
  const frames = [anmf(frame, bitstream), ...later.map(([f, bits]) => anmf(f, bits))];
  const body = concat([ascii("WEBP"), vp8x, anim, ...frames]);
  return concat([ascii("RIFF"), le32(body.length), body]);
}

/** An animated WebP whose second frame's VP8L bitstream is 9000x9000 behind a 64x64 frame header. */
export function animatedWebpLaterFrame(): Uint8Array {
  return animatedWebp(
    [64, 64],
    [64, 64],
    [64, 64],
    [
      [
        [64, 64],
        [9000, 9000],
      ],
    ],
  );
}

/** A still WebP: VP8X canvas `canvas`, VP8L bitstream `bitstream`. */
export function stillWebpVp8x(canvas: [number, number], bitstream: [number, number]): Uint8Array {
  const vp8x = riffChunk("VP8X", [0, 0, 0, 0, ...le24(canvas[0] - 1), ...le24(canvas[1] - 1)]);
  const body = concat([ascii("WEBP"), vp8x, riffChunk("VP8L", vp8lHeader(...bitstream))]);
  return concat([ascii("RIFF"), le32(body.length), body]);
}

/** A JPEG marker segment. */
function seg(marker: number, data: number[]): number[] {
  return [0xff, marker, ((data.length + 2) >> 8) & 255, (data.length + 2) & 255, ...data];
}

/**
 * Grayscale `width`x`height` JPEG frame (SOF `sof`, `precision` bits) with `scans` scans, each with a
 * few bytes of entropy data (incl. a stuffed 0xff00 and a restart marker). Structure only: it is refused
 * before decoding, or fails in the decoder.
 */
export function jpegWithScans(
  scans: number,
  opts: { width?: number; height?: number; sof?: number; precision?: number } = {},
): Uint8Array {
  const { width = 16, height = 16, sof = 0xc2, precision = 8 } = opts;
  const head = [
    0xff,
    0xd8,
    ...seg(0xdb, [0, ...new Array(64).fill(1)]),
    ...seg(sof, [precision, height >> 8, height & 255, width >> 8, width & 255, 1, 1, 0x11, 0]),
    ...seg(0xc4, [0x00, 1, ...new Array(15).fill(0), 0]),
    ...seg(0xc4, [0x10, 1, ...new Array(15).fill(0), 0]),
  ];
  const scan = [...seg(0xda, [1, 1, 0, 0, 0, 0]), 0x12, 0xff, 0x00, 0x34, 0xff, 0xd0, 0x56];
  const out = new Uint8Array(head.length + scans * scan.length + 2);
  out.set(head);
  for (let i = 0; i < scans; i++) out.set(scan, head.length + i * scan.length);
  out.set([0xff, 0xd9], out.length - 2);
  return out;
}
