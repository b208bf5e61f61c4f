/**
 * @module
 * The codec boundary: the only file that imports codec glue (jSquash's MozJPEG, libwebp and libavif
 * Emscripten builds). PNG and GIF are decoded in TypeScript (png.ts, gif.ts). Every codec is instantiated from a
 * precompiled `WebAssembly.Module` (`new WebAssembly.Instance`, never a run-time compile, which workerd
 * forbids). In a Worker pass the statically imported modules to {@link initCodecs}; in Node use
 * `initNodeCodecs()` from `codecs-node.ts`.
 *
 * Lifecycle: a codec instance is created on first use of its format and replaced by a fresh one after any
 * failure (an Emscripten `exit(1)` from libjpeg leaves its decoder state allocated, a trap may leave
 * anything) and after any decode that grew the instance's memory past {@link RELEASE_AFTER_BYTES}: wasm
 * memory never shrinks, so dropping the instance is the only way to give it back to the isolate.
 * An instance under that size is kept for the next decode of its format, which reuses its memory:
 * a 12 MP baseline JPEG's 51 MB heap stays, because building a fresh instance and growing a fresh
 * 51 MB memory for every such photo (while the last one waited for the garbage collector) made
 * every other 12 MP request in the service 1.5-2 s slower (measured in the service, issue #11).
 * At most one large instance lives at a time: before a decode, {@link releaseLargeCodecs} drops
 * every other codec's instance over {@link KEEP_OTHER_BYTES} (the TypeScript decoders drop them
 * all), and the decode-memory estimate counts the memory the instance already holds
 * ({@link retainedCodecBytes}). (jSquash's PNG codec is not used: its wasm-bindgen glue keeps one
 * instance per process, so its heap would stay at the largest PNG's size.)
 */

import avifDec from "@jsquash/avif/codec/dec/avif_dec.js";
import mozjpegDec from "@jsquash/jpeg/codec/dec/mozjpeg_dec.js";
import webpDec from "@jsquash/webp/codec/dec/webp_dec.js";

/** Codecs backed by a wasm module. PNG and GIF are decoded in TypeScript and need none. */
export type WasmCodec = "jpeg" | "webp" | "avif";

/**
 * Precompiled wasm modules, one per codec; omitted codecs cannot decode. `png` and `gif` are accepted
 * for compatibility and unused.
 */
export interface CodecModules {
  jpeg?: WebAssembly.Module;
  png?: WebAssembly.Module;
  webp?: WebAssembly.Module;
  avif?: WebAssembly.Module;
  gif?: WebAssembly.Module;
}

/**
 * Module specifiers of the decoder wasm files, for a Worker's static imports, e.g.
 * `import jpeg from "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm"`.
 */
export const CODEC_WASM_PATHS: Readonly<Record<WasmCodec, string>> = Object.freeze({
  jpeg: "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm",
  webp: "@jsquash/webp/codec/dec/webp_dec.wasm",
  avif: "@jsquash/avif/codec/dec/avif_dec.wasm",
});

/**
 * An instance whose memory grew past this many bytes is dropped after the decode (a 12 MP baseline
 * JPEG needs 51.4 MB and is kept; a 12 MP progressive one through wasm would need 88 MB).
 */
export const RELEASE_AFTER_BYTES = 64 * 1024 * 1024;

/** Before a decode, other codecs' instances over this many bytes are dropped. */
export const KEEP_OTHER_BYTES = 16 * 1024 * 1024;

/** A decoded raster straight from a codec: RGBA, 8 or 16 bits per channel. */
export interface RgbaRaster<
  T extends Uint8Array | Uint8ClampedArray | Uint16Array = Uint8Array | Uint8ClampedArray,
> {
  width: number;
  height: number;
  data: T;
}

interface EmscriptenDecoder {
  decode(data: BufferSource, ...args: unknown[]): RgbaRaster | null;
}

type Factory = (opts: Record<string, unknown>) => Promise<EmscriptenDecoder>;

interface Slot {
  factory: Factory;
  instance: Promise<EmscriptenDecoder> | null;
  memory: WebAssembly.Memory | null;
}

const modules: CodecModules = {};
const slots: Record<"jpeg" | "webp" | "avif", Slot> = {
  jpeg: { factory: mozjpegDec as unknown as Factory, instance: null, memory: null },
  webp: { factory: webpDec as unknown as Factory, instance: null, memory: null },
  avif: { factory: avifDec as unknown as Factory, instance: null, memory: null },
};
const peak: Record<WasmCodec, number> = { jpeg: 0, webp: 0, avif: 0 };
let initialised: Promise<void> | null = null;

/**
 * Registers precompiled codec modules and instantiates them. Memoized: later calls add modules for codecs
 * not registered yet and otherwise return the first call's promise.
 *
 * @example
 * // In a Worker (wrangler bundles *.wasm imports as compiled modules):
 * import jpeg from "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm";
 * import webp from "@jsquash/webp/codec/dec/webp_dec.wasm";
 * await initCodecs({ jpeg, webp });
 */
export function initCodecs(mods: CodecModules = {}): Promise<void> {
  let added = false;
  for (const k of ["jpeg", "webp", "avif"] as const) {
    const m = mods[k];
    if (m && !modules[k]) {
      modules[k] = m;
      added = true;
    }
  }
  if (initialised && !added) return initialised;
  initialised = (async () => {
    const pending: Promise<unknown>[] = [];
    for (const k of ["jpeg", "webp", "avif"] as const) if (modules[k]) pending.push(emscripten(k));
    await Promise.all(pending);
  })();
  return initialised;
}

/** Whether a module for this codec has been registered. */
export function hasCodec(codec: WasmCodec): boolean {
  return modules[codec] !== undefined;
}

function missing(codec: WasmCodec): Error {
  return new Error(`codec "${codec}" has no wasm module: pass it to initCodecs()`);
}

const quiet = (): void => {};

function emscripten(codec: "jpeg" | "webp" | "avif"): Promise<EmscriptenDecoder> {
  const slot = slots[codec];
  if (slot.instance) return slot.instance;
  const module = modules[codec];
  if (!module) throw missing(codec);
  slot.instance = slot.factory({
    noInitialRun: true,
    print: quiet,
    printErr: quiet,
    instantiateWasm(imports: WebAssembly.Imports, done: (i: WebAssembly.Instance) => void) {
      const instance = new WebAssembly.Instance(module, imports);
      slot.memory = findMemory(instance.exports) ?? findMemory((imports.env ?? {}) as WebAssembly.Exports);
      done(instance);
      return instance.exports;
    },
  });
  return slot.instance;
}

function findMemory(exports: WebAssembly.Exports): WebAssembly.Memory | null {
  for (const v of Object.values(exports)) if (v instanceof WebAssembly.Memory) return v;
  return null;
}

/** Current wasm memory of each instantiated codec, bytes (0 when not instantiated). */
export function codecMemoryBytes(): Record<WasmCodec, number> {
  return {
    jpeg: slots.jpeg.memory?.buffer.byteLength ?? 0,
    webp: slots.webp.memory?.buffer.byteLength ?? 0,
    avif: slots.avif.memory?.buffer.byteLength ?? 0,
  };
}

/**
 * Largest wasm memory each codec instance reached right after a decode, bytes, since the process started
 * (instances released after a big decode included). For memory measurements.
 */
export function codecPeakMemoryBytes(): Record<WasmCodec, number> {
  return { ...peak };
}

function release(codec: "jpeg" | "webp" | "avif"): void {
  slots[codec].instance = null;
  slots[codec].memory = null;
}

/**
 * Wasm memory the live instance of `codec` holds (0 when none): a decode with it reuses this
 * memory, so its peak is at least this much.
 */
export function retainedCodecBytes(codec: WasmCodec): number {
  return slots[codec].instance ? (slots[codec].memory?.buffer.byteLength ?? 0) : 0;
}

/**
 * Drops every codec instance except `keep`'s whose memory is over {@link KEEP_OTHER_BYTES}, so that
 * at most one large codec heap is alive during a decode (the TypeScript decoders pass none).
 */
export function releaseLargeCodecs(keep?: WasmCodec): void {
  for (const k of ["jpeg", "webp", "avif"] as const)
    if (k !== keep && retainedCodecBytes(k) > KEEP_OTHER_BYTES) release(k);
}

async function runEmscripten(
  codec: "jpeg" | "webp" | "avif",
  bytes: Uint8Array,
  ...args: unknown[]
): Promise<RgbaRaster | null> {
  releaseLargeCodecs(codec);
  const dec = await emscripten(codec);
  try {
    const out = dec.decode(bytes, ...args);
    const size = slots[codec].memory?.buffer.byteLength ?? 0;
    peak[codec] = Math.max(peak[codec], size);
    if (size > RELEASE_AFTER_BYTES) release(codec);
    return out;
  } catch (e) {
    release(codec);
    throw e;
  }
}

/**
 * Decodes a JPEG to RGBA 8-bit with MozJPEG (libjpeg-turbo's decoder: ISLOW IDCT, fancy upsampling),
 * without applying EXIF orientation. Throws (any error) when libjpeg refuses the data.
 */
export async function decodeJpegRgba(bytes: Uint8Array): Promise<RgbaRaster | null> {
  return runEmscripten("jpeg", bytes, false);
}

/** Decodes a still WebP (lossy, lossless, alpha) to RGBA 8-bit with libwebp. */
export async function decodeWebpRgba(bytes: Uint8Array): Promise<RgbaRaster | null> {
  return runEmscripten("webp", bytes);
}

/** Decodes an AVIF to RGBA 8-bit with libavif + dav1d. */
export async function decodeAvifRgba(bytes: Uint8Array): Promise<RgbaRaster | null> {
  return runEmscripten("avif", bytes, 8);
}
