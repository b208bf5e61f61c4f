/**
 * @module
 * The image path inside local workerd (Miniflare): bundles bench/image-worker.ts with wrangler (as a
 * deploy would, .wasm imports as compiled modules), posts the bench inputs and prints median decode and
 * preprocess times measured inside the isolate, plus a check that pixel_values equal Node's.
 *
 *   npx tsx bench/image-workerd.ts [--runs N]
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { BEIT_BASE_PREPROCESS, imageToPixelValues } from "../src/image/index.ts";
import { imageBenchInputs } from "./image-inputs.ts";
import { startBenchWorker } from "./lib/bench-worker.ts";

const here = dirname(fileURLToPath(import.meta.url));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const { values } = parseArgs({ options: { runs: { type: "string" } } });
const runs = Number(values.runs ?? 7);
const mf = await startBenchWorker(join(here, "image-worker.ts"), "image-worker");
await initNodeCodecs();
const rows = [
  "| input | decode (ms) | preprocess (ms) | total (ms) | pixel_values equal Node's |",
  "|---|---|---|---|---|",
];
try {
  for (const input of await imageBenchInputs()) {
    const d: number[] = [];
    const p: number[] = [];
    let sum = 0;
    const n = input.width * input.height > 4e6 ? runs : runs * 3;
    for (let i = 0; i <= n; i++) {
      const res = await mf.dispatchFetch("http://bench/", { method: "POST", body: input.bytes });
      const j = (await res.json()) as { sum: number; timings: { decodeMs: number; preprocessMs: number } };
      sum = j.sum;
      if (i > 0) {
        d.push(j.timings.decodeMs);
        p.push(j.timings.preprocessMs);
      }
    }
    const node = await imageToPixelValues(input.bytes, BEIT_BASE_PREPROCESS);
    let nodeSum = 0;
    for (const v of node.pixels) nodeSum += v;
    rows.push(
      `| ${input.name} | ${median(d).toFixed(0)} | ${median(p).toFixed(0)} | ${(median(d) + median(p)).toFixed(0)} | ${nodeSum === sum ? "yes" : `no (${nodeSum} vs ${sum})`} |`,
    );
  }
} finally {
  await mf.dispose();
}
console.log(
  `local workerd (Miniflare, wrangler 4.86.0), 1 thread, median of ${runs} runs (x3 for small inputs) after 1 warm-up; ms resolution`,
);
console.log(rows.join("\n"));
