/**
 * The manifest validator: a manifest the converter wrote parses (and survives a serialize round
 * trip); each kind of damage is refused with a ManifestError naming the first bad path, because
 * the gateway and the stages trust nothing else about the files they load.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildTinyModel, type TinyModel } from "../../test/helpers/fake-classifier.ts";
import { LabelFileError, ManifestError, parseLabels, parseManifest, serializeManifest } from "./manifest.ts";

let tiny: TinyModel;
let raw: Record<string, unknown>;
beforeAll(async () => {
  tiny = await buildTinyModel(13);
  raw = JSON.parse(await readFile(join(tiny.out, "manifest.json"), "utf8"));
}, 120_000);
afterAll(() => tiny.cleanup());

// biome-ignore lint/suspicious/noExplicitAny: the cases edit arbitrary JSON paths
type Json = Record<string, any>;
function damaged(edit: (m: Json) => void): unknown {
  const m = structuredClone(raw) as Json;
  edit(m);
  return m;
}
function pathOf(value: unknown): string {
  try {
    parseManifest(value);
  } catch (e) {
    if (e instanceof ManifestError) return e.path;
    throw e;
  }
  return "(accepted)";
}

describe("parseManifest", () => {
  it("accepts what the converter writes, and its serialization parses to the same manifest", () => {
    const m = parseManifest(raw);
    expect(m.version).toBe(tiny.manifest.version);
    expect(m.stages.length).toBeGreaterThan(1);
    expect(parseManifest(JSON.parse(serializeManifest(m)))).toEqual(m);
  });

  it("opens the converter's pre-fused graphs unoptimised, and a manifest without the field (older builds) fully optimised", () => {
    expect(parseManifest(raw).graphOptimization).toBe("disabled");
    expect(parseManifest(damaged((m) => delete m.graphOptimization)).graphOptimization).toBe("all");
  });

  it("carries an int8 build's measured fidelity, and parses manifests written before it without one", () => {
    const f = parseManifest(raw).fidelity;
    expect(f?.reference).toMatch(/fp32/);
    expect(f?.inputs).toBeGreaterThan(0);
    expect(f?.top1Agreement).toBeLessThanOrEqual(f?.inputs ?? 0);
    expect(parseManifest(damaged((m) => delete m.fidelity)).fidelity).toBeUndefined();
  });

  it("carries each stage's planned wasm heap (wasmHeapBytes), and parses stages written before it without one", () => {
    const m = parseManifest(raw);
    for (const s of m.stages) {
      expect(s.wasmHeapBytes).toBeGreaterThan(16 * 1024 * 1024);
      expect((s.wasmHeapBytes as number) % 65536).toBe(0);
    }
    const old = parseManifest(
      damaged((x) => {
        for (const s of x.stages as Json[]) delete s.wasmHeapBytes;
      }),
    );
    expect(old.stages.every((s) => s.wasmHeapBytes === undefined)).toBe(true);
    expect(pathOf(damaged((x) => (x.stages[1].wasmHeapBytes = 0)))).toBe("$.stages[1].wasmHeapBytes");
    expect(pathOf(damaged((x) => (x.stages[0].wasmHeapBytes = "77 MiB")))).toBe("$.stages[0].wasmHeapBytes");
  });

  it("names the first bad path of a damaged manifest", () => {
    const last = tiny.manifest.stages.length - 1;
    const cases: [string, (m: Json) => void][] = [
      ["$.schema", (m) => (m.schema = 2)],
      ["$.version", (m) => (m.version = "ABC")],
      ["$.model.architecture", (m) => (m.model.architecture = "ViT")],
      ["$.precision", (m) => (m.precision = "int4")],
      ["$.labels.count", (m) => (m.labels.count += 1)],
      ["$.labels.file", (m) => (m.labels.file = "../labels.json")],
      ["$.labels.sha256", (m) => (m.labels.sha256 = "x".repeat(64))],
      ["$.stages", (m) => (m.stages = [])],
      [
        "$.stages[1].layers",
        (m) => (m.stages[1].layers = [m.stages[1].layers[0] + 1, m.stages[1].layers[1]]),
      ],
      ["$.stages[0].embeddings", (m) => (m.stages[0].embeddings = false)],
      [`$.stages[${last}].head`, (m) => (m.stages[last].head = false)],
      ["$.preprocess.image_std", (m) => (m.preprocess.image_std = [0, 0.5, 0.5])],
      ["$.graphOptimization", (m) => (m.graphOptimization = "extended")],
      ["$.fidelity.top1Agreement", (m) => (m.fidelity.top1Agreement = m.fidelity.inputs + 1)],
      ["$.fidelity.relL2Mean", (m) => (m.fidelity.relL2Mean = -0.1)],
      ["$.fidelity.top5OverlapMean", (m) => (m.fidelity.top5OverlapMean = 6)],
      ["$.fidelity.floatLayers[0]", (m) => (m.fidelity.floatLayers = [3])],
      ["$.fidelity", (m) => (m.fidelity = "good")],
    ];
    for (const [path, edit] of cases) expect(pathOf(damaged(edit)), path).toBe(path);
    expect(pathOf(null)).toBe("$");
  });
});

describe("parseLabels", () => {
  it("reads the converter's label file and names what is wrong with a bad one", async () => {
    const ref = tiny.manifest.labels;
    const bytes = new Uint8Array(await readFile(join(tiny.out, ref.file)));
    expect(parseLabels(bytes, ref)).toEqual(tiny.labels);
    const bad = (text: string) => {
      try {
        parseLabels(text, ref);
        return "ok";
      } catch (e) {
        expect(e).toBeInstanceOf(LabelFileError);
        return (e as Error).message.replace(/^.* strings; /, "");
      }
    };
    expect(bad("[")).toBe("it is not JSON.");
    expect(bad('{"0":"a"}')).toBe("it is not an array.");
    expect(bad(JSON.stringify(tiny.labels.slice(1)))).toBe(`it has ${ref.count - 1} entries.`);
    expect(bad(JSON.stringify([...tiny.labels.slice(0, -1), 7]))).toBe(
      `entry ${ref.count - 1} is not a string.`,
    );
  });
});
