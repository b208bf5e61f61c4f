/**
 * @module
 * Image path benchmark in Node: decode + preprocess (BEiT, 224x224 bilinear) medians for a 12 MP JPEG,
 * a 1 MP PNG and a 224x224 WebP, plus the memory cost of one 12 MP decode measured in a fresh process.
 *
 *   npx tsx bench/image-decode.ts [--runs N]        # timings table + memory
 *   npx tsx bench/image-decode.ts --memory NAME     # (internal) one decode in this process, prints JSON
 *
 * Writes markdown rows to stdout (and bench/results/image-decode.md).
 */

import { spawnSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { codecPeakMemoryBytes } from "../src/image/codecs.ts";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { decodeImage, inspectImage } from "../src/image/decode.ts";
import { estimateDecodeBytes, type ImageLimits, resolveLimits } from "../src/image/limits.ts";
import { BEIT_BASE_PREPROCESS, preprocess } from "../src/image/preprocess.ts";
import { imageBenchInputs } from "./image-inputs.ts";

const here = dirname(fileURLToPath(import.meta.url));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mb = (n: number): string => (n / 1e6).toFixed(1);

/** Decode + preprocess timings (ms) for one input, `runs` times after one warm-up. */
export async function timeImagePath(bytes: Uint8Array, runs: number, limits: Partial<ImageLimits> = {}) {
  await initNodeCodecs();
  const decode: number[] = [];
  const prep: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const t0 = performance.now();
    const img = await decodeImage(bytes, { limits });
    const t1 = performance.now();
    preprocess(img, BEIT_BASE_PREPROCESS);
    const t2 = performance.now();
    if (i > 0) {
      decode.push(t1 - t0);
      prep.push(t2 - t1);
    }
  }
  return {
    decodeMs: median(decode),
    preprocessMs: median(prep),
    totalMs: median(decode.map((d, i) => d + prep[i])),
  };
}

async function memoryChild(name: string): Promise<void> {
  const input = (await imageBenchInputs()).find((i) => i.name === name)!;
  await initNodeCodecs();
  (globalThis as { gc?: () => void }).gc?.();
  const before = process.memoryUsage();
  const maxRssBefore = process.resourceUsage().maxRSS * 1024;
  const lifted = process.argv.includes("--wasm");
  const limits = lifted ? { maxDecodeBytes: Number.MAX_SAFE_INTEGER } : {};
  const header = inspectImage(input.bytes, resolveLimits(limits));
  const img = await decodeImage(input.bytes, { limits });
  const afterDecode = process.memoryUsage();
  const pixels = preprocess(img, BEIT_BASE_PREPROCESS);
  const peaks: Record<string, number> = codecPeakMemoryBytes();
  const after = process.memoryUsage();
  const out = {
    name,
    pixels: img.width * img.height,
    rgbBytes: img.data.byteLength,
    rgbaBufferBytes: img.data.buffer.byteLength,
    wasmPeakBytes: peaks[input.format] ?? 0, // PNG is decoded in TypeScript: no wasm heap
    arrayBuffersDelta: afterDecode.arrayBuffers - before.arrayBuffers,
    rssDelta: after.rss - before.rss,
    maxRssGrowth: process.resourceUsage().maxRSS * 1024 - maxRssBefore,
    decoder:
      input.format === "jpeg"
        ? header.decoder === "ts"
          ? "TypeScript"
          : "MozJPEG wasm"
        : input.format === "png"
          ? "TypeScript"
          : "libwebp wasm",
    estimate: estimateDecodeBytes({ ...header, encodedBytes: input.bytes.length }),
    arrayBuffersAfter: afterDecode.arrayBuffers - before.arrayBuffers,
    outLength: pixels.length,
  };
  process.stdout.write(JSON.stringify(out));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { runs: { type: "string" }, memory: { type: "string" }, wasm: { type: "boolean" } },
  });
  if (values.memory) return memoryChild(values.memory);
  const runs = Number(values.runs ?? 7);
  const inputs = await imageBenchInputs();
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  const rows: string[] = [
    `Node ${process.version}, ${cpu}, 1 thread; median of ${runs} runs after 1 warm-up; decode includes header checks + EXIF step, preprocess = Pillow-exact bilinear resize to 224x224 + rescale/normalize.`,
    "",
    "| input | encoded | decode (ms) | preprocess (ms) | total (ms) |",
    "|---|---|---|---|---|",
  ];
  for (const input of inputs) {
    const n = input.width * input.height > 4e6 ? Math.min(runs, 7) : runs * 3;
    const decoder = input.name.includes("progressive") ? " (TypeScript decoder: default limits)" : "";
    const t = await timeImagePath(input.bytes, n);
    rows.push(
      `| ${input.name} (${input.width}x${input.height})${decoder} | ${(input.bytes.length / 1024).toFixed(0)} KiB | ${t.decodeMs.toFixed(1)} | ${t.preprocessMs.toFixed(1)} | ${t.totalMs.toFixed(1)} |`,
    );
    if (input.name.includes("progressive")) {
      const w = await timeImagePath(input.bytes, n, { maxDecodeBytes: Number.MAX_SAFE_INTEGER });
      rows.push(
        `| ${input.name} (${input.width}x${input.height}) (MozJPEG wasm: budget lifted) | ${(input.bytes.length / 1024).toFixed(0)} KiB | ${w.decodeMs.toFixed(1)} | ${w.preprocessMs.toFixed(1)} | ${w.totalMs.toFixed(1)} |`,
      );
    }
  }
  rows.push(
    "",
    "| memory, one decode in a fresh process | decoder | wasm heap peak (MB) | JS buffers after decode, before GC (MB) | estimate used by the limits (MB) |",
    "|---|---|---|---|---|",
  );
  for (const [name, flag] of [
    ["12mp.jpeg", ""],
    ["12mp-progressive.jpeg", ""],
    ["12mp-progressive.jpeg", "--wasm"],
    ["1mp.png", ""],
  ]) {
    const args = ["--expose-gc", "--import", "tsx", fileURLToPath(import.meta.url), "--memory", name];
    if (flag) args.push(flag);
    const child = spawnSync(process.execPath, args, { encoding: "utf8" });
    if (child.status !== 0) throw new Error(child.stderr);
    const m = JSON.parse(child.stdout);
    rows.push(
      `| ${name} (${(m.pixels / 1e6).toFixed(2)} MP) | ${m.decoder}${flag ? ", budget lifted" : ""} | ${mb(m.wasmPeakBytes)} | ${mb(m.arrayBuffersAfter)} | ${mb(m.estimate)} |`,
    );
  }
  const text = rows.join("\n");
  console.log(text);
  await mkdir(join(here, "results"), { recursive: true });
  await writeFile(join(here, "results", "image-decode.md"), `${text}\n`);
}

await main();
