/**
 * @module
 * Is onnxruntime-web itself slower in workerd than in Node? One stage's files loaded into a session
 * in local workerd (Miniflare, bench/stage-run-worker.ts) and into a session in this Node process,
 * then run alternately on the same input: no service bindings, HTTP or decode involved.
 *
 *   npx tsx bench/stage-run-workerd.ts [--model DIR] [--stage K] [--runs N]
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createStageSession } from "../src/inference/ort.ts";
import { startBenchWorker } from "./lib/bench-worker.ts";

const here = import.meta.dirname;
const mf = await startBenchWorker(join(here, "stage-run-worker.ts"), "stage-run-worker");
const { values } = parseArgs({
  options: { model: { type: "string" }, stage: { type: "string" }, runs: { type: "string" } },
});
const dir = values.model ?? join(here, "../model-shards/out/synthetic-base");
const m = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8"));
const k = Number(values.stage ?? 1);
const st = m.stages[k];
const g = await readFile(join(dir, st.graph.file));
const w = await readFile(join(dir, st.weights.file));
await mf.dispatchFetch("http://x/graph", { method: "POST", body: g });
// The level the stage Workers use: the manifest's (older manifests: "all").
const level = m.graphOptimization ?? "all";
await mf.dispatchFetch(`http://x/weights?path=${encodeURIComponent(st.externalDataPath)}&level=${level}`, {
  method: "POST",
  body: w,
});
const node = await createStageSession(
  new Uint8Array(g),
  { path: st.externalDataPath, data: new Uint8Array(w) },
  { graphOptimizationLevel: level },
);
const x = new Float32Array(197 * 768).map((_, i) => Math.sin(i) * 0.5);
const wd: number[] = [];
const nd: number[] = [];
const n = Number(values.runs ?? 20);
for (let i = 0; i < n; i++) {
  const r = await mf.dispatchFetch(`http://x/run?out=${st.outputs[0].name}`, {
    method: "POST",
    body: new Uint8Array(x.buffer),
  });
  wd.push(((await r.json()) as { ms: number }).ms);
  const t0 = performance.now();
  await node.run(x, st.inputs[0], st.outputs[0]);
  nd.push(performance.now() - t0);
}
console.log(`stage ${k} workerd: ${wd.join(" ")}`);
console.log(`stage ${k} node   : ${nd.map((v) => v.toFixed(0)).join(" ")}`);
const med = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
const load = (await readFile("/proc/loadavg", "utf8").catch(() => "?")).split(" ")[0];
console.log(
  `stage ${k}, ${n} alternating runs: median workerd ${med(wd)} ms, Node ${med(nd).toFixed(0)} ms, workerd / Node ${(med(wd) / med(nd)).toFixed(2)}; load ${load}`,
);
await mf.dispose();
