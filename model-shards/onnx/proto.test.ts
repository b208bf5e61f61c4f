import { describe, expect, it } from "vitest";
import { DataType, type GraphDef, readInitializers, serializeModel } from "./proto.ts";

function graph(): GraphDef {
  const big = new Uint8Array(5000).map((_, i) => i & 255);
  const small = new Uint8Array(8).fill(7);
  return {
    name: "g",
    nodes: [{ opType: "Add", inputs: ["x", "a"], outputs: ["y"], name: "n0", attrs: {} }],
    initializers: [
      { name: "a", dims: [1250], dataType: DataType.FLOAT, raw: big },
      { name: "s", dims: [2], dataType: DataType.FLOAT, raw: small },
      { name: "b", dims: [1250], dataType: DataType.FLOAT, raw: big },
    ],
    inputs: [{ name: "x", elemType: DataType.FLOAT, shape: [1250] }],
    outputs: [{ name: "y", elemType: DataType.FLOAT, shape: [1250] }],
  };
}

describe("serializeModel", () => {
  it("moves large initializers to aligned external data and keeps small ones inline", () => {
    const { model, weights } = serializeModel(graph(), { location: "w.weights", align: 64 });
    const inits = readInitializers(model);
    expect(inits.map((i) => i.name)).toEqual(["a", "s", "b"]);
    expect(inits[1]).toMatchObject({ inlineBytes: 8, external: null, dims: [2] });
    expect(inits[0].external).toEqual({ location: "w.weights", offset: 0, length: 5000 });
    expect(inits[2].external).toEqual({ location: "w.weights", offset: 5056, length: 5000 });
    expect(weights?.length).toBe(10056);
    expect(weights?.subarray(5056, 5066)).toEqual(graph().initializers[0].raw.subarray(0, 10));
  });
  it("is deterministic and writes everything inline without external options", () => {
    const a = serializeModel(graph(), { location: "w" });
    const b = serializeModel(graph(), { location: "w" });
    expect(a.model).toEqual(b.model);
    const inline = serializeModel(graph());
    expect(inline.weights).toBeNull();
    expect(readInitializers(inline.model).every((i) => i.external === null)).toBe(true);
  });
  it("reports malformed protobuf", () => {
    expect(() => readInitializers(new Uint8Array([0x3a, 0xff, 0xff, 0x01]))).toThrow(/truncated/);
  });
});
