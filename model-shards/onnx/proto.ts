/**
 * @module
 * A minimal protobuf writer for the parts of ONNX's ModelProto the converter emits (field numbers
 * from onnx/onnx.proto, IR version 8, opset 17), plus a small reader used by `verify` and tests to
 * find a graph's external-data locations. Initializers are written either inline (raw_data) or as
 * external data (data_location = EXTERNAL, with location/offset/length entries).
 *
 * Output is deterministic: the same graph object always serializes to the same bytes.
 */

/** ONNX TensorProto.DataType values used here. */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
} as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

/** An initializer: raw little-endian bytes plus shape and element type. */
export interface InitTensor {
  name: string;
  dims: number[];
  dataType: DataTypeCode;
  /** Raw little-endian element bytes. */
  raw: Uint8Array;
}

/** Attribute values the builder uses. */
export type AttrValue =
  | { kind: "int"; value: number }
  | { kind: "float"; value: number }
  | { kind: "ints"; value: number[] }
  | { kind: "string"; value: string };

export interface NodeDef {
  opType: string;
  inputs: string[];
  outputs: string[];
  name: string;
  domain?: string;
  attrs?: Record<string, AttrValue>;
}

export interface ValueInfo {
  name: string;
  elemType: DataTypeCode;
  shape: number[];
}

export interface GraphDef {
  name: string;
  nodes: NodeDef[];
  initializers: InitTensor[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

/** Where the initializers' bytes go. */
export interface ExternalDataOptions {
  /** The file name written into each tensor's `location` (relative to the .onnx file). */
  location: string;
  /** Tensors smaller than this stay inline (ORT reads small constants inline anyway). Default 1024. */
  minBytes?: number;
  /** Alignment of each tensor's offset in the weights file. Default 64. */
  align?: number;
}

export interface SerializedModel {
  /** The ModelProto bytes. */
  model: Uint8Array;
  /** External data file contents, or null when everything is inline. */
  weights: Uint8Array | null;
}

const textEncoder = new TextEncoder();

/** Growable byte buffer with protobuf wire-format primitives. */
class Writer {
  private buf = new Uint8Array(256);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (x >= 0x80n) {
      this.buf[this.len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.len++] = Number(x);
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, textEncoder.encode(s));
  }

  int(field: number, v: number | bigint): void {
    this.tag(field, 0);
    this.varint(v);
  }

  float(field: number, v: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, v, true);
    this.len += 4;
  }

  message(field: number, write: (w: Writer) => void): void {
    const inner = new Writer();
    write(inner);
    this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

const ATTR_TYPE = { float: 1, int: 2, string: 3, ints: 7 } as const;

function writeAttr(w: Writer, name: string, a: AttrValue): void {
  w.string(1, name);
  switch (a.kind) {
    case "float":
      w.float(2, a.value);
      break;
    case "int":
      w.int(3, a.value);
      break;
    case "string":
      w.string(4, a.value);
      break;
    case "ints":
      for (const v of a.value) w.int(8, v);
      break;
  }
  w.int(20, ATTR_TYPE[a.kind]);
}

function writeNode(w: Writer, n: NodeDef): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  // Attributes in sorted order so the bytes never depend on object insertion order.
  for (const key of Object.keys(n.attrs ?? {}).sort()) {
    const a = (n.attrs as Record<string, AttrValue>)[key];
    w.message(5, (aw) => writeAttr(aw, key, a));
  }
  if (n.domain) w.string(7, n.domain);
}

function writeValueInfo(w: Writer, v: ValueInfo): void {
  w.string(1, v.name);
  w.message(2, (tw) =>
    tw.message(1, (tt) => {
      tt.int(1, v.elemType);
      tt.message(2, (sw) => {
        for (const d of v.shape) sw.message(1, (dw) => dw.int(1, d));
      });
    }),
  );
}

function writeTensor(w: Writer, t: InitTensor, external: { location: string; offset: number } | null): void {
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (external) {
    const entry = (k: string, v: string) =>
      w.message(13, (e) => {
        e.string(1, k);
        e.string(2, v);
      });
    entry("location", external.location);
    entry("offset", String(external.offset));
    entry("length", String(t.raw.length));
    w.int(14, 1);
  } else {
    w.bytes(9, t.raw);
  }
}

/**
 * Serializes a graph as an ONNX ModelProto (IR 8, default-domain opset 17, com.microsoft opset 1).
 * With `external`, initializers of at least `minBytes` go to one weights blob at `align`-ed offsets
 * in graph order, and the model refers to them by `external.location`.
 *
 * @example
 * const { model, weights } = serializeModel(graph, { location: "stage0.weights" });
 */
export function serializeModel(graph: GraphDef, external?: ExternalDataOptions): SerializedModel {
  const minBytes = external?.minBytes ?? 1024;
  const align = external?.align ?? 64;
  const placements = new Map<string, number>();
  let size = 0;
  if (external) {
    for (const t of graph.initializers) {
      if (t.raw.length < minBytes) continue;
      size = Math.ceil(size / align) * align;
      placements.set(t.name, size);
      size += t.raw.length;
    }
  }
  let weights: Uint8Array | null = null;
  if (external && placements.size > 0) {
    weights = new Uint8Array(size);
    for (const t of graph.initializers) {
      const off = placements.get(t.name);
      if (off !== undefined) weights.set(t.raw, off);
    }
  }
  const w = new Writer();
  w.int(1, 8); // ir_version
  w.string(2, "beit-edge");
  w.string(3, "1");
  w.message(7, (g) => {
    for (const n of graph.nodes) g.message(1, (nw) => writeNode(nw, n));
    g.string(2, graph.name);
    for (const t of graph.initializers) {
      const off = placements.get(t.name);
      g.message(5, (tw) =>
        writeTensor(
          tw,
          t,
          off === undefined || !external ? null : { location: external.location, offset: off },
        ),
      );
    }
    for (const v of graph.inputs) g.message(11, (vw) => writeValueInfo(vw, v));
    for (const v of graph.outputs) g.message(12, (vw) => writeValueInfo(vw, v));
  });
  w.message(8, (o) => o.int(2, 17));
  w.message(8, (o) => {
    o.string(1, "com.microsoft");
    o.int(2, 1);
  });
  return { model: w.finish(), weights };
}

// ---------------------------------------------------------------------------------------------
// Reader: just enough to list initializers and their external-data entries.

interface Field {
  field: number;
  wire: number;
  /** Varint value (wire 0) or fixed bits (wire 1/5). */
  value: bigint;
  /** Payload for wire 2. */
  data: Uint8Array | null;
}

function* fields(buf: Uint8Array): Generator<Field> {
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new Error("truncated varint");
      const b = buf[pos++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new Error("varint too long");
    }
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) yield { field, wire, value: varint(), data: null };
    else if (wire === 2) {
      const n = Number(varint());
      if (pos + n > buf.length) throw new Error("truncated length-delimited field");
      yield { field, wire, value: 0n, data: buf.subarray(pos, pos + n) };
      pos += n;
    } else if (wire === 5) {
      if (pos + 4 > buf.length) throw new Error("truncated fixed32");
      pos += 4;
      yield { field, wire, value: 0n, data: null };
    } else if (wire === 1) {
      if (pos + 8 > buf.length) throw new Error("truncated fixed64");
      pos += 8;
      yield { field, wire, value: 0n, data: null };
    } else throw new Error(`unsupported wire type ${wire}`);
  }
}

const textDecoder = new TextDecoder();

/** What {@link readInitializers} reports per initializer. */
export interface InitializerInfo {
  name: string;
  dims: number[];
  dataType: number;
  /** Inline byte count, or null when external. */
  inlineBytes: number | null;
  external: { location: string; offset: number; length: number } | null;
}

/**
 * Lists a ModelProto's initializers and their external-data entries. Throws a plain Error on
 * malformed protobuf.
 */
export function readInitializers(model: Uint8Array): InitializerInfo[] {
  const out: InitializerInfo[] = [];
  for (const f of fields(model)) {
    if (f.field !== 7 || !f.data) continue;
    for (const g of fields(f.data)) {
      if (g.field !== 5 || !g.data) continue;
      const info: InitializerInfo = { name: "", dims: [], dataType: 0, inlineBytes: null, external: null };
      const ext: Record<string, string> = {};
      let location = 0;
      for (const t of fields(g.data)) {
        if (t.field === 1) info.dims.push(Number(t.value));
        else if (t.field === 2) info.dataType = Number(t.value);
        else if (t.field === 8 && t.data) info.name = textDecoder.decode(t.data);
        else if (t.field === 9 && t.data) info.inlineBytes = t.data.length;
        else if (t.field === 14) location = Number(t.value);
        else if (t.field === 13 && t.data) {
          let k = "";
          let v = "";
          for (const e of fields(t.data)) {
            if (e.field === 1 && e.data) k = textDecoder.decode(e.data);
            if (e.field === 2 && e.data) v = textDecoder.decode(e.data);
          }
          ext[k] = v;
        }
      }
      if (location === 1)
        info.external = {
          location: ext.location ?? "",
          offset: Number(ext.offset ?? "0"),
          length: Number(ext.length ?? "-1"),
        };
      out.push(info);
    }
  }
  return out;
}
