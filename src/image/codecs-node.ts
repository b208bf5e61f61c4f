/**
 * @module
 * Node-only loader for the codec wasm files (CLI, tests, benchmarks). Reads each decoder's .wasm from
 * node_modules, compiles it (allowed in Node, not in workerd), and hands the modules to {@link initCodecs}. Never import this from Worker
 * code: workerd forbids run-time compilation and has no filesystem; Workers import the .wasm files
 * statically (see {@link CODEC_WASM_PATHS}).
 */

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { CODEC_WASM_PATHS, type CodecModules, initCodecs, type WasmCodec } from "./codecs.ts";

let loaded: Promise<void> | null = null;

// @cloudflare/workers-types leaves WebAssembly.compile out (workerd forbids it); Node has it.
const compile = (WebAssembly as unknown as { compile(bytes: BufferSource): Promise<WebAssembly.Module> })
  .compile;

/**
 * Compiles every decoder from node_modules and initialises the codec boundary. Memoized.
 *
 * @example
 * await initNodeCodecs();
 * const img = await decodeImage(bytes);
 */
export function initNodeCodecs(): Promise<void> {
  loaded ??= (async () => {
    const require = createRequire(import.meta.url);
    const mods: CodecModules = {};
    await Promise.all(
      (Object.keys(CODEC_WASM_PATHS) as WasmCodec[]).map(async (codec) => {
        const file = require.resolve(CODEC_WASM_PATHS[codec]);
        mods[codec] = await compile(await readFile(file));
      }),
    );
    await initCodecs(mods);
  })();
  return loaded;
}
