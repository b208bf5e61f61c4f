/**
 * @module
 * The codec boundary: the only file that imports codec glue (jSquash's MozJPEG, libwebp, libavif
 * Emscripten builds and the Rust `png` crate via wasm-bindgen). Every codec is instantiated from a
 * precompiled `WebAssembly.Module` (`new WebAssembly.Instance`, never a run-time compile, which workerd
 * forbids). In a Worker pass the statically imported modules to {@link initCodecs}; in Node use
 * `initNodeCodecs()` from `codecs-node.ts`.
 *
 * Lifecycle: a codec instance is created on first use of its format and replaced by a fresh one after any
 * failure (an Emscripten `exit(1)` from libjpeg leaves its decoder state allocated, a trap may leave
 * anything) and after any decode that grew the instance's memory past {@link RELEASE_AFTER_BYTES}: wasm
 * memory never shrinks, so dropping the instance is the only way to give a 12 MP decode's 50 MB back
 * to the isolate. The PNG codec cannot be re-instantiated (wasm-bindgen keeps a module-level
 * singleton), so its memory stays at its high-water mark.
 */

import avifDec from "@jsquash/avif/codec/dec/avif_dec.js";
import mozjpegDec from "@jsquash/jpeg/codec/dec/mozjpeg_dec.js";
import initPng, {
  decode as pngDecode,
  decode_rgba16 as pngDecode16,
} from "@jsquash/png/codec/pkg/squoosh_png.js";
import webpDec from "@jsquash/webp/codec/dec/webp_dec.js";

/** Codecs backed by a wasm module. GIF is decoded in TypeScript and needs none. */
export type WasmCodec = "jpeg" | "png" | "webp" | "avif";

/** Precompiled wasm modules, one per codec; omitted codecs cannot decode. `gif` is accepted and unused. */
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
  png: "@jsquash/png/codec/pkg/squoosh_png_bg.wasm",
  webp: "@jsquash/webp/codec/dec/webp_dec.wasm",
  avif: "@jsquash/avif/codec/dec/avif_dec.wasm",
});

/** An instance whose memory grew past this many bytes is dropped after the decode. */
export const RELEASE_AFTER_BYTES = 32 * 1024 * 1024;

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
let png: Promise<WebAssembly.Memory | null> | null = null;
const peak: Record<WasmCodec, number> = { jpeg: 0, png: 0, webp: 0, avif: 0 };
let initialised: Promise<void> | null = null;

/**
 * Registers precompiled codec modules and instantiates them. Memoized: later calls add modules for codecs
 * not registered yet and otherwise return the first call's promise.
 *
 * @example
 * // In a Worker (wrangler bundles *.wasm imports as compiled modules):
 * import jpeg from "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm";
 * import png from "@jsquash/png/codec/pkg/squoosh_png_bg.wasm";
 * await initCodecs({ jpeg, png });
 */
export function initCodecs(mods: CodecModules = {}): Promise<void> {
  let added = false;
  for (const k of ["jpeg", "png", "webp", "avif"] as const) {
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
    if (modules.png) pending.push(pngInstance());
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

function pngInstance(): Promise<WebAssembly.Memory | null> {
  if (png) return png;
  const module = modules.png;
  if (!module) throw missing("png");
  png = initPng(module).then((exports) => findMemory(exports as unknown as WebAssembly.Exports));
  return png;
}

function findMemory(exports: WebAssembly.Exports): WebAssembly.Memory | null {
  for (const v of Object.values(exports)) if (v instanceof WebAssembly.Memory) return v;
  return null;
}

/** Current wasm memory of each instantiated codec, bytes (0 when not instantiated). */
export async function codecMemoryBytes(): Promise<Record<WasmCodec, number>> {
  const pngMem = png ? await png : null;
  return {
    jpeg: slots.jpeg.memory?.buffer.byteLength ?? 0,
    webp: slots.webp.memory?.buffer.byteLength ?? 0,
    avif: slots.avif.memory?.buffer.byteLength ?? 0,
    png: pngMem?.buffer.byteLength ?? 0,
  };
}

/**
 * Largest wasm memory each codec instance reached right after a decode, bytes, since the process started
 * (instances released after a big decode included). For memory measurements.
 */
export async function codecPeakMemoryBytes(): Promise<Record<WasmCodec, number>> {
  const pngMem = png ? await png : null;
  peak.png = Math.max(peak.png, pngMem?.buffer.byteLength ?? 0);
  return { ...peak };
}

function release(codec: "jpeg" | "webp" | "avif"): void {
  slots[codec].instance = null;
  slots[codec].memory = null;
}

async function runEmscripten(
  codec: "jpeg" | "webp" | "avif",
  bytes: Uint8Array,
  ...args: unknown[]
): Promise<RgbaRaster | null> {
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

/**
 * Decodes a PNG with the Rust `png` crate: `bits` 8 gives RGBA 8-bit (16-bit samples reduced to their
 * high byte, low bit depths scaled up), `bits` 16 gives RGBA 16-bit.
 */
export async function decodePngRgba(
  bytes: Uint8Array,
  bits: 8 | 16,
): Promise<RgbaRaster<Uint8ClampedArray | Uint16Array>> {
  await pngInstance();
  if (bits === 8) {
    const img = pngDecode(bytes) as unknown as RgbaRaster<Uint8ClampedArray>;
    return { width: img.width, height: img.height, data: img.data };
  }
  const img = pngDecode16(bytes);
  try {
    return { width: img.width, height: img.height, data: img.data };
  } finally {
    img.free();
  }
}
