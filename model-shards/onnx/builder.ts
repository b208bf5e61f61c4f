/**
 * @module
 * A small graph-construction helper over {@link GraphDef}: unique value names, typed initializers
 * (float32, int8, uint8, int64), and one method per node. Used by the BEiT stage builder and the
 * int8 quantizer.
 */
import {
  type AttrValue,
  DataType,
  type DataTypeCode,
  type GraphDef,
  type InitTensor,
  type NodeDef,
} from "./proto.ts";

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
}

/** Accumulates nodes and initializers for one graph. */
export class GraphBuilder {
  readonly nodes: NodeDef[] = [];
  readonly initializers: InitTensor[] = [];
  private counter = 0;
  private readonly names = new Set<string>();

  /** A fresh value name with the given prefix. */
  fresh(prefix: string): string {
    let name = `${prefix}_${this.counter++}`;
    while (this.names.has(name)) name = `${prefix}_${this.counter++}`;
    this.names.add(name);
    return name;
  }

  private init(prefix: string, dims: number[], dataType: DataTypeCode, raw: Uint8Array): string {
    const name = this.fresh(prefix);
    this.initializers.push({ name, dims, dataType, raw });
    return name;
  }

  /** A float32 initializer. */
  f32(prefix: string, data: Float32Array | number[], dims: number[]): string {
    const arr = data instanceof Float32Array ? data : Float32Array.from(data);
    return this.init(prefix, dims, DataType.FLOAT, bytesOf(arr));
  }

  /** A scalar float32 initializer. */
  scalar(prefix: string, value: number): string {
    return this.f32(prefix, [value], []);
  }

  /** An int8 initializer. */
  i8(prefix: string, data: Int8Array, dims: number[]): string {
    return this.init(prefix, dims, DataType.INT8, bytesOf(data));
  }

  /** A uint8 initializer. */
  u8(prefix: string, data: Uint8Array | number[], dims: number[]): string {
    const arr = data instanceof Uint8Array ? data : Uint8Array.from(data);
    return this.init(prefix, dims, DataType.UINT8, bytesOf(arr));
  }

  /** An int32 initializer (gather indices). */
  i32(prefix: string, data: ArrayLike<number>, dims: number[] = [data.length]): string {
    return this.init(prefix, dims, DataType.INT32, bytesOf(Int32Array.from(data)));
  }

  /** An int64 initializer (shapes, axes, indices). */
  i64(prefix: string, data: number[], dims: number[] = [data.length]): string {
    return this.init(prefix, dims, DataType.INT64, bytesOf(BigInt64Array.from(data.map((v) => BigInt(v)))));
  }

  /** Appends a node and returns its outputs' names. */
  op(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    nOutputs = 1,
    domain?: string,
  ): string[] {
    const outputs = Array.from({ length: nOutputs }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({
      opType,
      inputs,
      outputs,
      name: this.fresh(`n_${opType}`),
      attrs,
      ...(domain ? { domain } : {}),
    });
    return outputs;
  }

  /** Appends a single-output node. */
  op1(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.op(opType, inputs, attrs)[0];
  }

  /** Renames the output of the most recent node producing `value` to `name` (graph outputs). */
  rename(value: string, name: string): void {
    for (const n of this.nodes) {
      n.outputs = n.outputs.map((o) => (o === value ? name : o));
      n.inputs = n.inputs.map((i) => (i === value ? name : i));
    }
  }

  /** Total bytes of all initializers. */
  initializerBytes(): number {
    return this.initializers.reduce((s, t) => s + t.raw.length, 0);
  }

  /** Finishes the graph. */
  graph(name: string, inputs: GraphDef["inputs"], outputs: GraphDef["outputs"]): GraphDef {
    return { name, nodes: this.nodes, initializers: this.initializers, inputs, outputs };
  }
}

/** Attribute helpers. */
export const attr = {
  int: (value: number): AttrValue => ({ kind: "int", value }),
  float: (value: number): AttrValue => ({ kind: "float", value }),
  ints: (value: number[]): AttrValue => ({ kind: "ints", value }),
};
