/**
 * @module
 * The per-stage memory account of a built model (#19): for every stage, in a fresh Node process
 * each (wasm memory never shrinks), onnxruntime-web's wasm heap after session create, after two
 * runs as the heap grows by itself (Emscripten's 20% growth steps), and the smallest heap the
 * stage's runs fit in: found by bisection over the reservation the loader makes before the first
 * run (src/inference/ort.ts `reserveWasmHeap`; a reservation the runs fit in is left as is, one
 * they outgrow is grown by a step). Memory figures are deterministic, so one run is a measurement.
 *
 *   npx tsx bench/stage-memory.ts --model DIR [--step-mib 1]
 *
 * Prints a Markdown table: weights, shard bytes held in JS during create, heap after create, heap
 * grown freely, the smallest sufficient heap (and what it is made of: ORT's runtime and initial
 * memory, weights, run scratch), the manifest's reservation, and the isolate peak these imply.
 */
import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { parseCommandLine } from "../model-shards/args.ts";
import { localModelSource } from "../model-shards/local-source.ts";
import { JS_HEAP_ALLOWANCE } from "../model-shards/plan.ts";

const { values: args } = parseCommandLine(
  {
    args: process.argv.slice(2),
    options: {
      model: { type: "string", default: "model-shards/out/synthetic-base" },
      "step-mib": { type: "string", default: "1" },
    },
  },
  (m) => new Error(`${m}. Usage: npx tsx bench/stage-memory.ts --model DIR [--step-mib 1]`),
);

const MiB = 1024 * 1024;
const root = resolve(import.meta.dirname, "..");
const dir = resolve(args.model);
const step = Number(args["step-mib"]) * MiB;

interface Measured {
  weightBytes: number;
  afterCreate: number;
  afterReserve: number;
  afterRun: number;
}

function measure(stage: number, reserve: number): Measured {
  const out = execFileSync(
    process.execPath,
    ["--import", "tsx", "model-shards/measure-heap.ts", "--shards", dir, String(stage), String(reserve)],
    { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  return JSON.parse(out.trim().split("\n").at(-1) as string) as Measured;
}

const manifest = await localModelSource(dir).manifest();
const mib = (b: number) => (b / MiB).toFixed(1);
const rows: string[] = [];
for (const st of manifest.stages) {
  const free = measure(st.index, 0);
  // Bisection: lo does not fit (the runs grew the heap past it), hi fits.
  let lo = free.afterCreate;
  let hi = free.afterRun;
  while (hi - lo > step) {
    const mid = lo + Math.floor((hi - lo) / 2 / 65536) * 65536;
    const m = measure(st.index, mid);
    if (m.afterRun <= m.afterReserve) hi = mid;
    else lo = mid;
    process.stderr.write(
      `stage ${st.index}: ${mib(mid)} MiB ${m.afterRun <= m.afterReserve ? "fits" : "grew"}\n`,
    );
  }
  const planned = st.wasmHeapBytes ?? 0;
  const withPlan = planned ? measure(st.index, planned) : null;
  const W = st.weightBytes;
  const fileBytes = st.weights?.bytes ?? 0;
  const heapOfRecord = withPlan ? withPlan.afterRun : free.afterRun;
  // Peak: during create the shard bytes are in JS beside the heap ORT's create left; afterwards
  // the heap of record (the reservation, or what the runs grew it to) beside the JS allowance.
  const peak = Math.max(free.afterCreate + fileBytes, heapOfRecord) + JS_HEAP_ALLOWANCE;
  rows.push(
    `| ${st.index} | [${st.layers[0]}, ${st.layers[1]})${st.embeddings ? " + embed" : ""}${st.head ? " + head" : ""} | ${mib(W)} | ${mib(fileBytes)} | ${mib(free.afterCreate)} (${mib(free.afterCreate - W)} above) | ${mib(free.afterRun)} (${(free.afterRun / W).toFixed(2)}x) | ${mib(hi)} (${mib(hi - free.afterCreate)} run scratch) | ${planned ? `${mib(planned)} -> ${mib(withPlan!.afterRun)}` : "none"} | ${(heapOfRecord / W).toFixed(2)}x = ${((heapOfRecord - 8 * MiB) / W).toFixed(2)}x + 8 MiB | ${mib(peak)} |`,
  );
}
process.stdout.write(
  [
    `model ${manifest.version.slice(0, 12)} (${manifest.precision}, ${manifest.stages.length} stages), onnxruntime-web in Node, wasm heap = WebAssembly.Memory byteLength (MiB)`,
    "",
    "| stage | layers | weights | shard in JS during create | heap after create | heap after 2 runs, grown freely | smallest heap the runs fit | manifest reservation -> heap after 2 runs | heap / weights | isolate peak (max(create + shard, heap) + 8 MiB JS) |",
    "|---|---|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
  ].join("\n"),
);
