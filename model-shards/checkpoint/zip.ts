/**
 * @module
 * The subset of ZIP that torch.save uses: a reader for stored and deflated entries (zip64 records
 * understood, CRC-32 checked) and a writer for stored entries whose data starts on a 64-byte
 * boundary, padded through an extra field the way PyTorch's stream writer does.
 */

import type { FileHandle } from "node:fs/promises";
import { crc32, inflateRawSync } from "node:zlib";
import { AppError } from "../../src/shared/errors.ts";
import { writeAll } from "./safetensors.ts";

/** One file of an archive, located but not yet read. */
export interface ZipEntry {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  /** Offset of the local file header. */
  headerOffset: number;
}

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

function corrupt(file: string, what: string): AppError {
  return new AppError(
    "invalid-pytorch-bin",
    422,
    `${file} is not a readable torch.save archive: ${what}. Re-download the file or convert the checkpoint to safetensors.`,
    { file },
  );
}

/**
 * Lists the entries of the ZIP archive in `bytes` from its central directory.
 * Throws an AppError ("invalid-pytorch-bin") if the directory is missing or inconsistent.
 */
export function listZip(bytes: Uint8Array, file: string): Map<string, ZipEntry> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.byteLength;
  let eocd = -1;
  for (let i = len - 22; i >= Math.max(0, len - 22 - 0xffff); i--) {
    if (view.getUint32(i, true) === EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw corrupt(file, "no ZIP end-of-central-directory record (truncated or not a zip)");
  let count = view.getUint16(eocd + 10, true);
  let cdSize = view.getUint32(eocd + 12, true);
  let cdOffset = view.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || view.getUint32(loc, true) !== EOCD64_LOCATOR) throw corrupt(file, "zip64 locator missing");
    const e64 = Number(view.getBigUint64(loc + 8, true));
    if (e64 + 56 > len || view.getUint32(e64, true) !== EOCD64)
      throw corrupt(file, "zip64 end record missing");
    count = Number(view.getBigUint64(e64 + 32, true));
    cdSize = Number(view.getBigUint64(e64 + 40, true));
    cdOffset = Number(view.getBigUint64(e64 + 48, true));
  }
  if (cdOffset + cdSize > len) throw corrupt(file, "central directory lies outside the file (truncated?)");
  const entries = new Map<string, ZipEntry>();
  let p = cdOffset;
  const dec = new TextDecoder();
  for (let k = 0; k < count; k++) {
    if (p + 46 > len || view.getUint32(p, true) !== CENTRAL)
      throw corrupt(file, `central directory entry ${k} is damaged`);
    const method = view.getUint16(p + 10, true);
    const crc = view.getUint32(p + 16, true);
    let compressedSize = view.getUint32(p + 20, true);
    let size = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    let headerOffset = view.getUint32(p + 42, true);
    const name = dec.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // zip64 extended information: only the fields that overflowed are present, in this order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = view.getUint16(x, true);
      const sz = view.getUint16(x + 2, true);
      if (id === 0x0001) {
        let q = x + 4;
        if (size === 0xffffffff) {
          size = Number(view.getBigUint64(q, true));
          q += 8;
        }
        if (compressedSize === 0xffffffff) {
          compressedSize = Number(view.getBigUint64(q, true));
          q += 8;
        }
        if (headerOffset === 0xffffffff) headerOffset = Number(view.getBigUint64(q, true));
      }
      x += 4 + sz;
    }
    entries.set(name, { name, method, crc, compressedSize, size, headerOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/** Returns the uncompressed bytes of one entry (a view for stored entries), CRC-32 checked. */
export function readZipEntry(bytes: Uint8Array, entry: ZipEntry, file: string): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = entry.headerOffset;
  if (h + 30 > bytes.byteLength || view.getUint32(h, true) !== LOCAL)
    throw corrupt(file, `the local header of ${entry.name} is damaged`);
  const start = h + 30 + view.getUint16(h + 26, true) + view.getUint16(h + 28, true);
  const end = start + entry.compressedSize;
  if (end > bytes.byteLength)
    throw corrupt(file, `${entry.name} extends past the end of the file (truncated?)`);
  let data: Uint8Array;
  if (entry.method === 0) data = bytes.subarray(start, end);
  else if (entry.method === 8) {
    try {
      data = inflateRawSync(bytes.subarray(start, end));
    } catch (e) {
      throw corrupt(file, `${entry.name} does not inflate (${(e as Error).message})`);
    }
  } else
    throw corrupt(
      file,
      `${entry.name} uses ZIP compression method ${entry.method}; only stored and deflate are supported`,
    );
  if (data.byteLength !== entry.size)
    throw corrupt(file, `${entry.name} has ${data.byteLength} bytes, the directory says ${entry.size}`);
  if (crc32(data) >>> 0 !== entry.crc >>> 0) throw corrupt(file, `${entry.name} fails its CRC-32 check`);
  return data;
}

/** Data alignment of PyTorch's archive writer. */
export const ZIP_ALIGNMENT = 64;

/**
 * Streams a ZIP of stored entries to an open file, each entry's data 64-byte aligned.
 * Call {@link ZipWriter.add} per entry, then {@link ZipWriter.finish}.
 */
export class ZipWriter {
  private offset = 0;
  private readonly central: Buffer[] = [];

  constructor(private readonly fh: FileHandle) {}

  /** Appends one stored entry. */
  async add(name: string, data: Uint8Array): Promise<void> {
    const nameBytes = Buffer.from(name, "utf8");
    const crc = crc32(data) >>> 0;
    const fixed = 30 + nameBytes.length;
    // Extra field "FB" + length + padding bytes, so that the data starts on a 64-byte boundary.
    const pad = (ZIP_ALIGNMENT - ((this.offset + fixed + 4) % ZIP_ALIGNMENT)) % ZIP_ALIGNMENT;
    const extra = Buffer.alloc(4 + pad, "Z");
    extra.writeUInt16LE(0x4246, 0);
    extra.writeUInt16LE(pad, 2);
    if (data.byteLength >= 0xffffffff || this.offset >= 0xffffffff)
      throw new RangeError("entries over 4 GiB need zip64, which this writer does not produce");
    const local = Buffer.alloc(30);
    local.writeUInt32LE(LOCAL, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt32LE(0, 10); // time/date
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.byteLength, 18);
    local.writeUInt32LE(data.byteLength, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    local.writeUInt16LE(extra.length, 28);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(CENTRAL, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt16LE(0x0800, 8);
    cd.writeUInt16LE(0, 10);
    cd.writeUInt32LE(0, 12);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(data.byteLength, 20);
    cd.writeUInt32LE(data.byteLength, 24);
    cd.writeUInt16LE(nameBytes.length, 28);
    cd.writeUInt32LE(this.offset, 42);
    this.central.push(cd, nameBytes);
    await writeAll(this.fh, Buffer.concat([local, nameBytes, extra]));
    await writeAll(this.fh, data);
    this.offset += fixed + extra.length + data.byteLength;
  }

  /** Writes the central directory and the end record. */
  async finish(): Promise<void> {
    const cd = Buffer.concat(this.central);
    const end = Buffer.alloc(22);
    const count = this.central.length / 2;
    end.writeUInt32LE(EOCD, 0);
    end.writeUInt16LE(count, 8);
    end.writeUInt16LE(count, 10);
    end.writeUInt32LE(cd.length, 12);
    end.writeUInt32LE(this.offset, 16);
    await writeAll(this.fh, Buffer.concat([cd, end]));
    this.offset += cd.length + end.length;
  }
}
