/**
 * @module
 * safetensors reader and writer. The format: an 8-byte little-endian header length N, N bytes of
 * JSON `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {...} }`, then the
 * data section. The whole header is validated (size, dtypes, shapes against byte spans, offsets
 * inside the data section, no overlaps, no gaps) before a single tensor is decoded. Sharded
 * checkpoints (`model.safetensors.index.json`) are read through {@link readSafetensorsIndex}.
 */
import { open, readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { AppError } from "../../src/shared/errors.ts";
import { decodeElements, encodeTensor, ITEM_SIZE, isStoredDType, numel } from "./dtypes.ts";
import type { StateDict, StoredDType } from "./types.ts";

/** Largest JSON header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** One validated header entry. */
export interface SafetensorsEntry {
  name: string;
  dtype: StoredDType;
  shape: number[];
  /** Byte span inside the data section, half open. */
  begin: number;
  end: number;
}

function bad(file: string, what: string): AppError {
  return new AppError(
    "invalid-safetensors",
    422,
    `${file} is not a valid safetensors file: ${what}. Re-download or re-export the checkpoint.`,
    { file },
  );
}

/**
 * Parses and validates the header of a safetensors file held in `bytes`. Returns the entries
 * sorted by offset, the byte offset of the data section, and the metadata.
 */
export function parseSafetensorsHeader(
  bytes: Uint8Array,
  file = "model.safetensors",
): { entries: SafetensorsEntry[]; dataStart: number; metadata: Record<string, string> } {
  if (bytes.byteLength < 8)
    throw bad(file, `the file has ${bytes.byteLength} bytes, fewer than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES))
    throw bad(file, `the header claims ${headerLen} bytes, more than the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(headerLen);
  if (8 + n > bytes.byteLength)
    throw bad(
      file,
      `the header claims ${n} bytes but the file has only ${bytes.byteLength - 8} after the length (truncated?)`,
    );
  let header: unknown;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n)),
    );
  } catch (e) {
    throw bad(file, `the header is not UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header))
    throw bad(file, "the header is not a JSON object");
  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw))
        throw bad(file, "__metadata__ is not an object");
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") throw bad(file, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof raw !== "object" || raw === null) throw bad(file, `entry ${name} is not an object`);
    const { dtype, shape, data_offsets } = raw as Record<string, unknown>;
    if (!isStoredDType(dtype))
      throw bad(
        file,
        `tensor ${name} has dtype ${JSON.stringify(dtype)}; supported dtypes are F32, F16, BF16 and I64`,
      );
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad(
        file,
        `tensor ${name} has shape ${JSON.stringify(shape)}, not a list of non-negative integers`,
      );
    if (
      !Array.isArray(data_offsets) ||
      data_offsets.length !== 2 ||
      !data_offsets.every((d) => Number.isSafeInteger(d) && d >= 0)
    )
      throw bad(file, `tensor ${name} has data_offsets ${JSON.stringify(data_offsets)}, not [begin, end]`);
    const [begin, end] = data_offsets as number[];
    if (end < begin)
      throw bad(file, `tensor ${name} has data_offsets [${begin}, ${end}] with end before begin`);
    const want = numel(shape) * ITEM_SIZE[dtype];
    if (end - begin !== want)
      throw bad(
        file,
        `tensor ${name} (${dtype} ${JSON.stringify(shape)}) needs ${want} bytes but data_offsets span ${end - begin}`,
      );
    if (end > dataLen)
      throw bad(
        file,
        `tensor ${name} ends at data byte ${end} but the data section has only ${dataLen} bytes (offset out of range; truncated file?)`,
      );
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = "";
  for (const e of entries) {
    if (e.begin < pos) throw bad(file, `tensor ${e.name} overlaps tensor ${prev} (bytes ${e.begin}..${pos})`);
    if (e.begin > pos) throw bad(file, `there is a gap of ${e.begin - pos} bytes before tensor ${e.name}`);
    pos = e.end;
    prev = e.name;
  }
  if (pos !== dataLen) throw bad(file, `${dataLen - pos} bytes after the last tensor belong to no tensor`);
  return { entries, dataStart, metadata };
}

/**
 * Reads a safetensors file (a path or its bytes) into a state dict. F16/BF16 are widened to
 * Float32Array exactly; I64 stays BigInt64Array.
 *
 * @example
 * const tensors = await readSafetensors("ckpt/model.safetensors");
 */
export async function readSafetensors(src: string | Uint8Array, file?: string): Promise<StateDict> {
  if (typeof src === "string") return decodeSafetensors(await readFile(src), file ?? basename(src), true);
  return decodeSafetensors(src, file ?? "model.safetensors");
}

/**
 * Synchronous core of {@link readSafetensors} over bytes already in memory. With `view`, aligned
 * F32/I64 tensors are views of `bytes` rather than copies (pass it only for a buffer you own).
 */
export function decodeSafetensors(bytes: Uint8Array, file = "model.safetensors", view = false): StateDict {
  const { entries, dataStart } = parseSafetensorsHeader(bytes, file);
  const out: StateDict = new Map();
  for (const e of entries) {
    const data = decodeElements(
      bytes.subarray(dataStart + e.begin, dataStart + e.end),
      e.dtype,
      numel(e.shape),
      view,
    );
    out.set(e.name, { dtype: e.dtype, shape: e.shape, data });
  }
  return out;
}

/**
 * Reads a sharded checkpoint: `model.safetensors.index.json` maps each tensor to a shard file in
 * the same directory. Every shard the index names must exist and hold exactly its tensors.
 */
export async function readSafetensorsIndex(
  indexPath: string,
): Promise<{ tensors: StateDict; shards: string[] }> {
  const file = basename(indexPath);
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, "utf8"));
  } catch (e) {
    throw new AppError(
      "invalid-safetensors",
      422,
      `${file} could not be read as JSON: ${(e as Error).message}.`,
    );
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map))
    throw new AppError(
      "invalid-safetensors",
      422,
      `${file} has no "weight_map" object mapping tensor names to shard files.`,
    );
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\") || shard.startsWith("."))
      throw new AppError(
        "invalid-safetensors",
        422,
        `${file}: tensor ${name} points at ${JSON.stringify(shard)}, not a shard file name.`,
      );
    byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  }
  const tensors: StateDict = new Map();
  const dir = dirname(indexPath);
  for (const [shard, names] of byShard) {
    let part: StateDict;
    try {
      part = await readSafetensors(join(dir, shard));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT")
        throw new AppError(
          "checkpoint-incomplete",
          422,
          `${file} names shard ${shard}, which is missing from ${dir}.`,
        );
      throw e;
    }
    for (const name of names) {
      const t = part.get(name);
      if (!t)
        throw new AppError(
          "invalid-safetensors",
          422,
          `${file} puts tensor ${name} in ${shard}, but ${shard} does not hold it.`,
        );
      tensors.set(name, t);
    }
  }
  return { tensors, shards: [...byShard.keys()] };
}

/**
 * Writes `tensors` as one safetensors file, each in its own `dtype` (F16/BF16 are narrowed from
 * the Float32Array, round to nearest even). Streams tensor bytes to disk without building the
 * whole file in memory. Entries keep the map's order; the header is padded to 8 bytes.
 *
 * @example
 * await writeSafetensors("out/model.safetensors", tensors, { format: "pt" });
 */
export async function writeSafetensors(
  path: string,
  tensors: StateDict,
  metadata: Record<string, string> = { format: "pt" },
): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = numel(t.shape) * ITEM_SIZE[t.dtype];
    if (t.data.length !== numel(t.shape))
      throw new TypeError(`tensor ${name}: ${t.data.length} elements for shape ${JSON.stringify(t.shape)}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const jsonBytes = () => Buffer.byteLength(json, "utf8");
  json += " ".repeat((8 - (jsonBytes() % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(jsonBytes()));
  const fh = await open(path, "w");
  try {
    await fh.write(prefix);
    await fh.write(Buffer.from(json, "utf8"));
    for (const t of tensors.values()) await writeAll(fh, encodeTensor(t));
  } finally {
    await fh.close();
  }
}

/** Writes a (possibly > 2 GiB) byte view in chunks. */
export async function writeAll(fh: import("node:fs/promises").FileHandle, bytes: Uint8Array): Promise<void> {
  const CHUNK = 64 << 20;
  for (let i = 0; i < bytes.byteLength; i += CHUNK) {
    const part = bytes.subarray(i, Math.min(bytes.byteLength, i + CHUNK));
    let done = 0;
    while (done < part.byteLength) {
      const { bytesWritten } = await fh.write(part, done, part.byteLength - done);
      done += bytesWritten;
    }
  }
}
