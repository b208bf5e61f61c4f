/**
 * @module
 * pytorch_model.bin as torch.save (PyTorch >= 1.6) writes it: a ZIP archive `<root>/data.pkl`
 * (the state dict's pickle), `<root>/data/<key>` (one raw little-endian storage per key),
 * `<root>/version`, and in newer files `<root>/byteorder`. The pickle runs in the restricted
 * machine of ./pickle.ts with an allow-list of the handful of globals a state dict uses; tensors
 * are materialized contiguous from their storage, offset and strides. The legacy (pre-1.6)
 * non-zip format is refused. {@link writePytorchBin} produces the same layout.
 */
import { open, readFile } from "node:fs/promises";
import { basename } from "node:path";
import { AppError } from "../../src/shared/errors.ts";
import { decodeElements, encodeTensor, ITEM_SIZE, numel } from "./dtypes.ts";
import { type PickleGlobal, PickleWriter, unpickle } from "./pickle.ts";
import type { StateDict, StoredDType, Tensor } from "./types.ts";
import { listZip, readZipEntry, ZipWriter } from "./zip.ts";

/** torch storage classes this reader understands, and what they hold. */
const STORAGES: Record<string, StoredDType> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  LongStorage: "I64",
};
const STORAGE_OF: Record<StoredDType, string> = {
  F32: "FloatStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  I64: "LongStorage",
};

/** The globals a torch state dict pickle may name. */
export const ALLOWED_GLOBALS: ReadonlySet<string> = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  ...Object.keys(STORAGES).map((s) => `torch.${s}`),
]);

interface StorageRef {
  kind: "storage";
  dtype: StoredDType;
  key: string;
  numel: number;
}
interface TensorRef {
  kind: "tensor";
  storage: StorageRef;
  offset: number;
  size: number[];
  stride: number[];
}

function isInts(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => Number.isSafeInteger(x));
}

/** The bytes begin like a ZIP local header. */
function isZip(b: Uint8Array): boolean {
  return b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04;
}

/**
 * Reads a torch.save zip archive (a path or its bytes) holding a state dict.
 * Floating storages widen to Float32Array; Long stays BigInt64Array. Nothing in the pickle runs.
 *
 * @example
 * const tensors = await readPytorchBin("ckpt/pytorch_model.bin");
 */
export async function readPytorchBin(src: string | Uint8Array, file?: string): Promise<StateDict> {
  if (typeof src === "string") return decodePytorchBin(await readFile(src), file ?? basename(src), true);
  return decodePytorchBin(src, file ?? "pytorch_model.bin");
}

/**
 * Synchronous core of {@link readPytorchBin}. With `view`, aligned stored F32/I64 storages are
 * views of `bytes` rather than copies (pass it only for a buffer you own).
 */
export function decodePytorchBin(bytes: Uint8Array, file = "pytorch_model.bin", view = false): StateDict {
  if (!isZip(bytes)) {
    if (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] <= 5)
      throw new AppError(
        "unsupported-checkpoint-format",
        422,
        `${file} is in the legacy torch.save format of PyTorch < 1.6 (a bare pickle stream, not a zip archive), which is not supported. Re-save it with a current PyTorch (torch.save(torch.load(f), f)) or convert it to safetensors.`,
        { file },
      );
    throw new AppError(
      "invalid-pytorch-bin",
      422,
      `${file} is neither a torch.save zip archive nor a legacy pickle (it starts with bytes ${[...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ")}). Re-download the file.`,
      { file },
    );
  }
  const entries = listZip(bytes, file);
  const pkl = [...entries.keys()].find((n) => n === "data.pkl" || /^[^/]+\/data\.pkl$/.test(n));
  if (!pkl)
    throw new AppError(
      "invalid-pytorch-bin",
      422,
      `${file} is a zip archive but has no <root>/data.pkl, so it is not a torch.save checkpoint.`,
      {
        file,
      },
    );
  const root = pkl.slice(0, pkl.length - "data.pkl".length);
  const byteorder = entries.get(`${root}byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(readZipEntry(bytes, byteorder, file)).trim();
    if (order !== "little")
      throw new AppError(
        "invalid-pytorch-bin",
        422,
        `${file} was saved with byteorder "${order}"; only little-endian checkpoints are supported.`,
      );
  }

  const storages = new Map<string, Float32Array | BigInt64Array>();
  const loadStorage = (s: StorageRef): Float32Array | BigInt64Array => {
    const cached = storages.get(s.key);
    if (cached) return cached;
    const entry = entries.get(`${root}data/${s.key}`);
    if (!entry)
      throw new AppError(
        "invalid-pytorch-bin",
        422,
        `${file} refers to storage ${s.key}, but ${root}data/${s.key} is not in the archive.`,
        { file },
      );
    const raw = readZipEntry(bytes, entry, file);
    const count = Math.floor(raw.byteLength / ITEM_SIZE[s.dtype]);
    if (count < s.numel)
      throw new AppError(
        "invalid-pytorch-bin",
        422,
        `${file}: storage ${s.key} holds ${count} elements, the pickle says ${s.numel}.`,
        { file },
      );
    // Stored entries are views of `bytes`; deflated ones are fresh buffers of our own.
    const data = decodeElements(raw, s.dtype, count, view || raw.buffer !== bytes.buffer);
    storages.set(s.key, data);
    return data;
  };

  const malformed = (what: string) =>
    new AppError("invalid-pytorch-bin", 422, `${file}: ${what}. This is not a state dict torch.save wrote.`, {
      file,
    });

  const result = unpickle(
    readZipEntry(bytes, entries.get(pkl) as NonNullable<ReturnType<typeof entries.get>>, file),
    {
      allowedGlobals: ALLOWED_GLOBALS,
      persistentLoad(pid) {
        if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5)
          throw malformed(`unexpected persistent id ${String(pid)}`);
        const [, cls, key, , count] = pid as [string, unknown, unknown, unknown, unknown];
        const g = cls as PickleGlobal;
        const dtype = g?.kind === "global" && g.module === "torch" ? STORAGES[g.name] : undefined;
        if (!dtype) throw malformed("a persistent id names no known storage class");
        if (typeof key !== "string" || !/^[A-Za-z0-9_]+$/.test(key))
          throw malformed(`storage key ${String(key)} is not a plain name`);
        if (!Number.isSafeInteger(count) || (count as number) < 0)
          throw malformed(`storage ${key} has no element count`);
        return { kind: "storage", dtype, key, numel: count as number } satisfies StorageRef;
      },
      reduce(fn, args) {
        const name = `${fn.module}.${fn.name}`;
        if (name === "collections.OrderedDict") {
          if (args.length !== 0) throw malformed("OrderedDict built with arguments");
          return new Map();
        }
        if (name === "torch._utils._rebuild_tensor_v2") {
          const [storage, offset, size, stride] = args as [StorageRef, unknown, unknown, unknown];
          if (
            storage?.kind !== "storage" ||
            !Number.isSafeInteger(offset) ||
            !isInts(size) ||
            !isInts(stride) ||
            size.length !== stride.length
          )
            throw malformed("_rebuild_tensor_v2 called with unexpected arguments");
          return { kind: "tensor", storage, offset: offset as number, size, stride } satisfies TensorRef;
        }
        if (name === "torch._utils._rebuild_parameter") {
          const data = args[0] as TensorRef;
          if (data?.kind !== "tensor") throw malformed("_rebuild_parameter without a tensor");
          return data;
        }
        throw malformed(`${name} cannot be called`);
      },
      build(obj, state) {
        // OrderedDict state: the `_metadata` attribute state_dict() attaches. Not needed.
        if (obj instanceof Map) return obj;
        throw malformed(`BUILD on ${typeof obj} (state ${typeof state})`);
      },
    },
    `${file}:${pkl}`,
  );

  if (!(result instanceof Map))
    throw malformed("the pickle holds no dict (it may be a whole model, not a state dict)");
  const out: StateDict = new Map();
  const handedOut = new Set<string>();
  for (const [key, value] of result) {
    if (typeof key !== "string") throw malformed("a state dict key is not a string");
    const t = value as TensorRef;
    if (t?.kind !== "tensor") throw malformed(`the value of ${key} is not a tensor`);
    out.set(key, materialize(key, t, loadStorage(t.storage), file, handedOut));
  }
  return out;
}

/** Gathers a (possibly strided, offset) view of a storage into a contiguous tensor. */
function materialize(
  key: string,
  t: TensorRef,
  storage: Float32Array | BigInt64Array,
  file: string,
  handedOut: Set<string>,
): Tensor {
  const n = numel(t.size);
  const dtype = t.storage.dtype;
  const shape = t.size;
  if (n === 0) return { dtype, shape, data: dtype === "I64" ? new BigInt64Array(0) : new Float32Array(0) };
  if (t.size.some((d) => d < 0) || t.stride.some((s) => s < 0) || t.offset < 0)
    throw new AppError(
      "invalid-pytorch-bin",
      422,
      `${file}: tensor ${key} has a negative size, stride or offset.`,
    );
  let last = t.offset;
  for (let i = 0; i < shape.length; i++) last += (shape[i] - 1) * t.stride[i];
  if (last >= Math.min(storage.length, t.storage.numel))
    throw new AppError(
      "invalid-pytorch-bin",
      422,
      `${file}: tensor ${key} (size ${JSON.stringify(shape)}, stride ${JSON.stringify(t.stride)}, offset ${t.offset}) reaches element ${last} of a ${t.storage.numel}-element storage.`,
    );
  let contiguous = true;
  for (let i = shape.length - 1, s = 1; i >= 0; i--) {
    if (shape[i] !== 1 && t.stride[i] !== s) contiguous = false;
    s *= shape[i];
  }
  if (contiguous) {
    // One tensor per storage (what torch.save writes for a state dict): hand the storage over.
    // Tensors never alias each other: a storage is handed over at most once.
    if (t.offset === 0 && n === storage.length && !handedOut.has(t.storage.key)) {
      handedOut.add(t.storage.key);
      return { dtype, shape, data: storage };
    }
    return { dtype, shape, data: storage.slice(t.offset, t.offset + n) };
  }
  const data = dtype === "I64" ? new BigInt64Array(n) : new Float32Array(n);
  const idx = new Array<number>(shape.length).fill(0);
  let src = t.offset;
  for (let k = 0; k < n; k++) {
    (data as Float32Array)[k] = (storage as Float32Array)[src];
    for (let d = shape.length - 1; d >= 0; d--) {
      idx[d]++;
      src += t.stride[d];
      if (idx[d] < shape[d]) break;
      src -= shape[d] * t.stride[d];
      idx[d] = 0;
    }
  }
  return { dtype, shape, data };
}

/**
 * The pickle torch.save writes for a state dict of contiguous tensors, one storage per tensor
 * (keys "0", "1", ... in map order), protocol 2.
 */
export function statePickle(tensors: StateDict): Uint8Array {
  const w = new PickleWriter();
  w.global("collections", "OrderedDict").bytes(0x29, 0x52); // OrderedDict()
  let i = 0;
  const names = [...tensors.keys()];
  for (let start = 0; start < names.length; start += 1000) {
    w.mark();
    for (const name of names.slice(start, start + 1000)) {
      const t = tensors.get(name) as Tensor;
      const n = numel(t.shape);
      const stride: number[] = new Array(t.shape.length);
      for (let d = t.shape.length - 1, s = 1; d >= 0; d--) {
        stride[d] = s;
        s *= t.shape[d];
      }
      w.string(name);
      w.global("torch._utils", "_rebuild_tensor_v2");
      w.mark();
      // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
      w.mark()
        .string("storage", true)
        .global("torch", STORAGE_OF[t.dtype])
        .string(String(i))
        .string("cpu", true)
        .int(n)
        .bytes(0x74);
      w.bytes(0x51); // BINPERSID
      w.int(0).intTuple(t.shape).intTuple(stride).bytes(0x89); // offset, size, stride, requires_grad=False
      w.global("collections", "OrderedDict").bytes(0x29, 0x52); // backward_hooks = OrderedDict()
      w.bytes(0x74, 0x52); // TUPLE, REDUCE
      i++;
    }
    w.bytes(0x75); // SETITEMS
  }
  return w.finish();
}

/**
 * Writes `tensors` as torch.save does: a zip named `<archive>/...` with data.pkl, byteorder,
 * one 64-byte-aligned stored entry per storage (keys in string order, as torch sorts them) and
 * version "3". Each tensor is stored in its own dtype. Streams tensor bytes to disk.
 *
 * @example
 * await writePytorchBin("out/pytorch_model.bin", tensors);
 */
export async function writePytorchBin(
  path: string,
  tensors: StateDict,
  opts: { archiveName?: string } = {},
): Promise<void> {
  const root = opts.archiveName ?? "archive";
  const list = [...tensors.values()];
  for (const [name, t] of tensors)
    if (t.data.length !== numel(t.shape))
      throw new TypeError(`tensor ${name}: ${t.data.length} elements for shape ${JSON.stringify(t.shape)}`);
  const fh = await open(path, "w");
  try {
    const zip = new ZipWriter(fh);
    const enc = new TextEncoder();
    await zip.add(`${root}/data.pkl`, statePickle(tensors));
    await zip.add(`${root}/byteorder`, enc.encode("little"));
    const keys = list.map((_, i) => String(i)).sort();
    for (const key of keys) await zip.add(`${root}/data/${key}`, encodeTensor(list[Number(key)]));
    await zip.add(`${root}/version`, enc.encode("3\n"));
    await zip.finish();
  } finally {
    await fh.close();
  }
}
