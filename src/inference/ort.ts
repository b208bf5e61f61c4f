/**
 * @module
 * The onnxruntime-web boundary: the only file in the project that imports onnxruntime-web. It uses
 * the plain wasm build (`onnxruntime-web/wasm`, single thread, SIMD, no proxy worker) and runs the
 * same way in Node and in workerd.
 *
 * Initialization steps (subtle, hence spelled out):
 * 1. {@link initOrt} sets `numThreads = 1` and `proxy = false`. It is memoized: every later call
 *    returns the first call's promise.
 * 2. In workerd, runtime wasm compilation is forbidden and `import.meta.url` is undefined, so ORT
 *    can neither fetch nor compile its .wasm. The caller passes the statically imported, already
 *    compiled `WebAssembly.Module`; we set `env.wasm.wasmBinary` to a few marker bytes (ORT then
 *    takes its embedded-factory path and fetches nothing) and, while the first session is created,
 *    wrap `WebAssembly.instantiate` so that the call carrying the marker bytes instantiates the
 *    given module instead. In Node, with no module given, ORT loads its wasm from node_modules.
 * 3. In both cases the wrapper records the `WebAssembly.Memory` ORT's instance uses (found in the
 *    imports object or the instance's exports), which {@link wasmHeapBytes} reports. The wrapper is
 *    removed as soon as the first session exists (ORT instantiates its wasm once per isolate).
 * 4. {@link reserveWasmHeap} grows that Memory from JavaScript. ORT's JavaScript then still holds
 *    typed-array views of the old, shorter buffer (`Module.HEAPU8`, used to copy inputs in), which
 *    Emscripten's glue renews only when one of its own functions next touches memory. So while
 *    ORT's Emscripten module initializes (until the first session exists), a setter on
 *    `Object.prototype.HEAPU8` catches each module object at its first `Module.HEAPU8 = ...` (the
 *    object then gets its own plain property); ORT's is the one with `_OrtCreateSession`. After a
 *    grow, one `Module.getValue` call makes the glue renew every view. Without ORT's module object,
 *    no reservation is made.
 */
import * as ort from "onnxruntime-web/wasm";
import { AppError } from "../shared/errors.ts";
import { numel, type TensorSpec } from "../shared/manifest.ts";

export type { TensorSpec };

/** Options for {@link initOrt}. */
export interface InitOrtOptions {
  /** Precompiled `ort-wasm-simd-threaded.wasm` (required in workerd, optional in Node). */
  wasmModule?: WebAssembly.Module;
}

/** One stage graph loaded into ORT. */
export interface StageSession {
  /** Runs the stage on one input tensor and returns its single output as float32. */
  run(input: Float32Array, inSpec: TensorSpec, outSpec: TensorSpec): Promise<Float32Array>;
  /** Frees the session's native memory (the wasm heap itself never shrinks). */
  release(): Promise<void>;
}

/** Session options: the level comes from the manifest (open-stage.ts); the benchmarks compare the rest. */
export interface SessionTuning {
  /** Default "all"; converter graphs say "disabled" in their manifest (Manifest.graphOptimization). */
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  enableCpuMemArena?: boolean;
  enableMemPattern?: boolean;
}

const MARKER = new Uint8Array([0x62, 0x65, 0x69, 0x74, 0x2d, 0x65, 0x64, 0x67, 0x65]); // "beit-edge"

let initPromise: Promise<void> | null = null;
let memory: WebAssembly.Memory | null = null;
let unhook: (() => void) | null = null;
/**
 * Emscripten module objects that assigned `HEAPU8` while ORT initialized (step 4 above). Other
 * Emscripten modules (the image codecs, in a process that has both) may initialize in that window
 * too, so ORT's is picked by its `_OrtCreateSession` export.
 */
const caught: object[] = [];
type EmModule = { getValue?: (ptr: number, type: string) => unknown; _OrtCreateSession?: unknown };
let emModule: EmModule | null = null;

function ortModule(): EmModule | null {
  emModule ??=
    (caught.find((m) => typeof (m as EmModule)._OrtCreateSession === "function") as EmModule) ?? null;
  return emModule;
}

function catchEmscriptenModule(): void {
  Object.defineProperty(Object.prototype, "HEAPU8", {
    configurable: true,
    set(this: object, value: unknown) {
      // From now on this object has its own HEAPU8, so only its first assignment lands here.
      Object.defineProperty(this, "HEAPU8", { value, writable: true, enumerable: true, configurable: true });
      caught.push(this);
    },
  });
}

function stopCatchingModule(): void {
  const d = Object.getOwnPropertyDescriptor(Object.prototype, "HEAPU8");
  if (d?.set) delete (Object.prototype as Record<string, unknown>).HEAPU8;
}

function isMarker(src: unknown): boolean {
  if (!(src instanceof Uint8Array) && !(src instanceof ArrayBuffer)) return false;
  const bytes = src instanceof ArrayBuffer ? new Uint8Array(src) : src;
  return bytes.length === MARKER.length && bytes.every((b, i) => b === MARKER[i]);
}

function findMemory(...places: unknown[]): WebAssembly.Memory | null {
  for (const place of places) {
    if (!place || typeof place !== "object") continue;
    for (const value of Object.values(place as Record<string, unknown>)) {
      if (value instanceof WebAssembly.Memory) return value;
      if (value && typeof value === "object" && !(value instanceof WebAssembly.Instance)) {
        for (const inner of Object.values(value as Record<string, unknown>))
          if (inner instanceof WebAssembly.Memory) return inner;
      }
    }
  }
  return null;
}

function hookInstantiate(wasmModule: WebAssembly.Module | undefined): void {
  const original = WebAssembly.instantiate;
  const hooked = async (
    source: BufferSource | WebAssembly.Module,
    imports?: WebAssembly.Imports,
  ): Promise<unknown> => {
    memory = findMemory(imports) ?? memory;
    if (wasmModule && isMarker(source)) {
      const instance = await original(wasmModule, imports);
      memory = memory ?? findMemory(instance.exports);
      return { instance, module: wasmModule };
    }
    const result = (await original(source as BufferSource, imports)) as unknown;
    const instance =
      result instanceof WebAssembly.Instance
        ? result
        : (result as { instance: WebAssembly.Instance }).instance;
    memory = memory ?? findMemory(instance.exports);
    return result;
  };
  WebAssembly.instantiate = hooked as typeof WebAssembly.instantiate;
  unhook = () => {
    if (WebAssembly.instantiate === (hooked as unknown)) WebAssembly.instantiate = original;
    stopCatchingModule();
    unhook = null;
  };
}

/**
 * Configures onnxruntime-web once per isolate. Safe to call many times; only the first call's
 * options count.
 *
 * @example
 * import ortWasm from "onnxruntime-web/ort-wasm-simd-threaded.wasm"; // workerd: a WebAssembly.Module
 * await initOrt({ wasmModule: ortWasm });
 */
export function initOrt(opts: InitOrtOptions = {}): Promise<void> {
  if (initPromise) return initPromise;
  initPromise = (async () => {
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.wasm.simd = true;
    ort.env.logLevel = "error";
    if (opts.wasmModule) ort.env.wasm.wasmBinary = MARKER;
    catchEmscriptenModule();
    hookInstantiate(opts.wasmModule);
  })();
  return initPromise;
}

/**
 * Creates an ORT session for one stage graph. `weights` is the graph's external data file: `path`
 * must equal the location written in the graph (the manifest's `externalDataPath`).
 *
 * @example
 * const session = await createStageSession(graphBytes, { path: stage.externalDataPath, data: weightBytes });
 * const out = await session.run(pixels, stage.inputs[0], stage.outputs[0]);
 */
export async function createStageSession(
  graph: Uint8Array,
  weights: { path: string; data: Uint8Array } | null,
  tuning: SessionTuning = {},
): Promise<StageSession> {
  await initOrt();
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(graph, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: tuning.graphOptimizationLevel ?? "all",
      ...(tuning.enableCpuMemArena === undefined ? {} : { enableCpuMemArena: tuning.enableCpuMemArena }),
      ...(tuning.enableMemPattern === undefined ? {} : { enableMemPattern: tuning.enableMemPattern }),
      ...(weights ? { externalData: [{ path: weights.path, data: weights.data }] } : {}),
    });
  } catch (e) {
    throw new AppError(
      "model-load-failed",
      503,
      `onnxruntime-web could not load a stage graph: ${(e as Error).message}. Rebuild the shards with \`npm run model -- build\` and check them with \`npm run model -- verify\`.`,
    );
  } finally {
    unhook?.();
  }
  return {
    async run(input, inSpec, outSpec) {
      const expected = numel(inSpec.shape);
      if (input.length !== expected)
        throw new AppError(
          "bad-stage-input",
          400,
          `Stage input "${inSpec.name}" needs ${expected} floats (shape [${inSpec.shape.join(", ")}]) but got ${input.length}.`,
        );
      const feeds = { [inSpec.name]: new ort.Tensor("float32", input, inSpec.shape) };
      const results = await session.run(feeds);
      const out = results[outSpec.name];
      if (out?.type !== "float32")
        throw new AppError(
          "model-output-missing",
          500,
          `Stage graph produced no float32 output "${outSpec.name}".`,
        );
      // onnxruntime-web already copied a "cpu" output out of the wasm heap into this array, and
      // dispose() only drops the tensor's reference to it, so it is returned without another copy.
      const data = out.data as Float32Array;
      for (const t of Object.values(results)) t.dispose();
      return data;
    },
    async release() {
      await session.release();
    },
  };
}

/** WebAssembly pages are 64 KiB. */
const WASM_PAGE = 65536;

/**
 * Grows ORT's wasm memory to at least `bytes` now, in one step, and returns its new byteLength
 * (0 before the first session). Why: when ORT's allocator runs out, Emscripten grows the memory by
 * 20% of its current size (its geometric growth step), and wasm memory never shrinks, so a stage
 * whose run needs 61 MiB ends at 69.2 MiB (16 -> 40 -> 48 -> 57.6 -> 69.2). Growing to the stage's
 * planned heap before its first run leaves the allocator room to the byte: the heap stays at the
 * plan unless the run needs more (then Emscripten's own step applies, as before). Growing the
 * Memory from JavaScript is what Emscripten itself does; see step 4 at the top for ORT's views.
 *
 * @example
 * await createStageSession(graph, weights, tuning);
 * reserveWasmHeap(spec.wasmHeapBytes); // before the first run
 */
export function reserveWasmHeap(bytes: number): number {
  if (!memory) return 0;
  const have = memory.buffer.byteLength;
  const em = ortModule();
  if (bytes > have && typeof em?.getValue === "function") {
    memory.grow(Math.ceil((bytes - have) / WASM_PAGE));
    em.getValue(0, "i8"); // the glue sees the new buffer and renews Module.HEAPU8 and the rest
  }
  return memory.buffer.byteLength;
}

/**
 * Current byteLength of ORT's WebAssembly.Memory (the wasm heap), or 0 before the first session.
 * Wasm memory only grows, so after a run this is the isolate's wasm peak so far.
 */
export function wasmHeapBytes(): number {
  return memory ? memory.buffer.byteLength : 0;
}
