/**
 * @module
 * Where a stage load's time goes, in Node with onnxruntime-web (the Workers' runtime): for one built
 * stage, each variant in a fresh child process (wasm memory and V8's compiled code never carry
 * over) times ORT's wasm instantiation (compile included in Node; workerd compiles the statically
 * imported module at startup), session create, the priming run and the next runs.
 *
 * Variants: session options (graph optimisation level, memory arena / pattern) and V8 wasm tiers:
 * `--liftoff --no-wasm-tier-up` (baseline code only) and `--no-liftoff` (optimised code compiled
 * before the first call), which bound how much of the priming run is tier-up.
 *
 * With `--same-process`, everything runs in one process instead, after a first load of the
 * stage: V8 has compiled and tiered up ORT's code by then, so what is left of session create and of
 * the first run is the session's own cost (graph optimisation, weight copies and prepacking, first
 * allocations), per graph optimisation level, with each level's output compared to "all".
 *
 *   npx tsx bench/stage-load.ts --model DIR [--stage 1] [--repeat 3] [--same-process]
 */
import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { parseCommandLine } from "../model-shards/args.ts";
import { localModelSource } from "../model-shards/local-source.ts";
import { median } from "../model-shards/metrics.ts";
import { GraphBuilder } from "../model-shards/onnx/builder.ts";
import { DataType, serializeModel } from "../model-shards/onnx/proto.ts";
import { openStage } from "../src/inference/open-stage.ts";
import { createStageSession, initOrt, type SessionTuning } from "../src/inference/ort.ts";
import { numel } from "../src/shared/manifest.ts";

const { values: args } = parseCommandLine(
  {
    args: process.argv.slice(2),
    options: {
      model: { type: "string", default: "model-shards/out/synthetic-base" },
      stage: { type: "string", default: "1" },
      repeat: { type: "string", default: "3" },
      child: { type: "string" },
      "same-process": { type: "boolean", default: false },
    },
  },
  (m) => new Error(`${m}. Usage: npx tsx bench/stage-load.ts --model DIR [--stage 1] [--repeat 3]`),
);
const dir = resolve(args.model);
const stageIndex = Number(args.stage);

if (args.child !== undefined) {
  const tuning = JSON.parse(args.child) as SessionTuning;
  const source = localModelSource(dir);
  const manifest = await source.manifest();
  const t0 = performance.now();
  await initOrt();
  // A 1-node graph instantiates ORT's wasm, so the stage's create below is the stage's alone.
  const g = new GraphBuilder();
  g.rename(g.op1("Identity", ["x"]), "y");
  const tinyGraph = g.graph(
    "warm",
    [{ name: "x", elemType: DataType.FLOAT, shape: [1] }],
    [{ name: "y", elemType: DataType.FLOAT, shape: [1] }],
  );
  await (await createStageSession(serializeModel(tinyGraph).model, null)).release();
  const t1 = performance.now();
  // The one stage loader, as the stage Worker opens its stage (no priming run: timed below).
  const { session, spec: st, timings } = await openStage(source, manifest, stageIndex, { tuning });
  const input = new Float32Array(numel(st.inputs[0].shape));
  const runs: number[] = [];
  for (let i = 0; i < 4; i++) {
    const t = performance.now();
    await session.run(input, st.inputs[0], st.outputs[0]);
    runs.push(performance.now() - t);
  }
  console.log(JSON.stringify({ instantiate: t1 - t0, create: timings.createMs, runs }));
  process.exit(0);
}

if (args["same-process"]) {
  const source = localModelSource(dir);
  const manifest = await source.manifest();
  await initOrt();
  const spec = manifest.stages[stageIndex];
  const input = new Float32Array(numel(spec.inputs[0].shape));
  let seed = 12345;
  for (let i = 0; i < input.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    input[i] = (seed / 2 ** 32 - 0.5) * 4;
  }
  const levels = ["all", "extended", "basic", "disabled"] as const;
  type Row = { create: number[]; first: number[]; third: number[]; out?: Float32Array };
  const rows = new Map<string, Row>(levels.map((l) => [l, { create: [], first: [], third: [] }]));
  const load = async (level: (typeof levels)[number], row: Row) => {
    const st = await openStage(source, manifest, stageIndex, { tuning: { graphOptimizationLevel: level } });
    const times: number[] = [];
    let out: Float32Array | undefined;
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      out = await st.session.run(input, st.input, st.output);
      times.push(performance.now() - t);
    }
    await st.release();
    row.create.push(st.timings.createMs);
    row.first.push(times[0]);
    row.third.push(times[2]);
    row.out ??= out;
  };
  // The process's first load (ORT's wasm instantiated just before): V8 compiles and tiers up ORT's
  // code during it, so it is reported apart and the rows below meet warm code.
  const firstLoad: Row = { create: [], first: [], third: [] };
  await load("all", firstLoad);
  for (let r = 0; r < Number(args.repeat); r++) for (const l of levels) await load(l, rows.get(l) as Row);
  const ref = rows.get("all")?.out as Float32Array;
  console.log(`stage ${stageIndex} of ${dir}, one process; median of ${args.repeat} after the first load`);
  console.log('| graph optimisation | session create | 1st run | 3rd run | output vs "all" |');
  console.log("|---|---|---|---|---|");
  console.log(
    `| all, the process's first load (cold code) | ${firstLoad.create[0].toFixed(0)} ms | ${firstLoad.first[0].toFixed(0)} ms | ${firstLoad.third[0].toFixed(0)} ms | |`,
  );
  for (const l of levels) {
    const row = rows.get(l) as Row;
    let maxd = 0;
    let differ = 0;
    for (let i = 0; i < ref.length; i++) {
      const d = Math.abs(ref[i] - (row.out as Float32Array)[i]);
      if (d > 0) differ++;
      if (d > maxd) maxd = d;
    }
    const same =
      differ === 0 ? "bit-identical" : `${differ}/${ref.length} differ, max |d| ${maxd.toExponential(2)}`;
    console.log(
      `| ${l} | ${median(row.create).toFixed(0)} ms | ${median(row.first).toFixed(0)} ms | ${median(row.third).toFixed(0)} ms | ${same} |`,
    );
  }
  process.exit(0);
}

const run = promisify(execFile);
const variants: { name: string; tuning: SessionTuning; node?: string[] }[] = [
  { name: "shipped: the manifest's graphOptimization, arena + pattern on", tuning: {} },
  { name: "optimisation all", tuning: { graphOptimizationLevel: "all" } },
  { name: "optimisation extended", tuning: { graphOptimizationLevel: "extended" } },
  { name: "optimisation basic", tuning: { graphOptimizationLevel: "basic" } },
  { name: "optimisation disabled", tuning: { graphOptimizationLevel: "disabled" } },
  { name: "memory arena off", tuning: { enableCpuMemArena: false } },
  { name: "memory pattern off", tuning: { enableMemPattern: false } },
  { name: "V8: Liftoff only (no tier-up)", tuning: {}, node: ["--liftoff", "--no-wasm-tier-up"] },
  { name: "V8: TurboFan up front (no Liftoff)", tuning: {}, node: ["--no-liftoff"] },
];
const repeat = Number(args.repeat);
type Result = { instantiate: number; create: number; runs: number[] };
const results = new Map<string, Result[]>();
// Rounds interleave the variants, so background load hits all alike.
for (let r = 0; r < repeat; r++)
  for (const v of variants) {
    const { stdout } = await run(
      process.execPath,
      [
        ...(v.node ?? []),
        "--import",
        "tsx",
        "bench/stage-load.ts",
        "--model",
        dir,
        "--stage",
        String(stageIndex),
        "--child",
        JSON.stringify(v.tuning),
      ],
      { maxBuffer: 1 << 24 },
    );
    const list = results.get(v.name) ?? [];
    list.push(JSON.parse(stdout.trim().split("\n").at(-1) as string) as Result);
    results.set(v.name, list);
  }
console.log(`stage ${stageIndex} of ${dir}, median of ${repeat} fresh processes`);
console.log(
  "| variant | ORT wasm instantiate (Node compiles here) | session create | priming run | 2nd run | 4th run |",
);
console.log("|---|---|---|---|---|---|");
for (const v of variants) {
  const list = results.get(v.name) as Result[];
  const m = (f: (x: Result) => number) => `${median(list.map(f)).toFixed(0)} ms`;
  console.log(
    `| ${v.name} | ${m((x) => x.instantiate)} | ${m((x) => x.create)} | ${m((x) => x.runs[0])} | ${m((x) => x.runs[1])} | ${m((x) => x.runs[3])} |`,
  );
}
