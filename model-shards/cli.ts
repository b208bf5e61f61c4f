/**
 * @module
 * `npm run model -- <command>`: the converter's command line.
 *
 *   synth  --size tiny|base --out DIR [--seed N] [--format bin|safetensors|both]
 *          [--init synth|torch|outlier|massive] [--strength S]
 *   build  --from <hub id | dir> --out DIR [--precision int8|fp32] [--stage-budget-mb N] [--revision R]
 *          [--activations per-tensor|per-row] [--weight-bits 8|7] [--asymmetric none|gelu|all]
 *          [--bias-correction none|mlp-output|all] [--outliers calibrated|none]
 *          [--max-rel-l2 X|none] [--fidelity-inputs N]
 *   verify DIR
 *   run    --model DIR --pixels FILE [--top K]
 *   plan   --config base|tiny|DIR [--precision int8|fp32] [--stage-budget-mb N]
 *   acceptance [--from <hub id | dir>] [--image FILE|URL] [--out DIR] [--max-rel-l2 X]
 *
 * Errors print `error[<code>]: <detail>` on stderr and exit 1.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError, isAppError } from "../src/shared/errors.ts";
import type { Precision } from "../src/shared/manifest.ts";
import { type AcceptanceOptions, EXIT_SKIPPED, EXPECTED, runAcceptance } from "./acceptance.ts";
import { parseCommandLine } from "./args.ts";
import { buildShards, DEFAULT_MAX_REL_L2, verifyShards } from "./build.ts";
import { parseBeitConfig } from "./checkpoint/config.ts";
import { downloadProgress } from "./checkpoint/hub.ts";
import { loadCheckpoint } from "./checkpoint/index.ts";
import { synthCommand } from "./checkpoint/synth.ts";
import type { BeitConfig } from "./checkpoint/types.ts";
import { baseConfig, tinySynthConfig } from "./configs.ts";
import { formatFidelity } from "./fidelity.ts";
import { DEFAULT_QUANT, type QuantOptions } from "./onnx/quantize.ts";
import { formatPlan, MiB, planStages } from "./plan.ts";
import { progressBar } from "./progress.ts";
import { loadLocalModel } from "./runner.ts";

const USAGE = `usage: npm run model -- <command>
  synth  --size tiny|base --out DIR [--seed N] [--format bin|safetensors|both]
         [--init synth|torch|outlier|massive] [--strength S]
  build  --from <hub id | dir> --out DIR [--precision int8|fp32] [--stage-budget-mb N] [--revision R]
         [--activations per-tensor|per-row] [--weight-bits 8|7] [--asymmetric none|gelu|all]
         [--bias-correction none|mlp-output|all] [--outliers calibrated|none]
         [--max-rel-l2 X|none (default ${DEFAULT_MAX_REL_L2})] [--fidelity-inputs N]
  verify DIR
  run    --model DIR --pixels FILE [--top K]
  plan   --config base|tiny|DIR [--precision int8|fp32] [--stage-budget-mb N]
  acceptance [--from <hub id | dir>] [--image FILE|URL] [--out DIR] [--max-rel-l2 X]
         the real checkpoint against Hugging Face's expected logits; exit 0 passed, 1 failed,
         3 skipped (the hub or the picture unreachable)`;

function usage(msg: string): AppError {
  return new AppError("invalid-arguments", 400, `${msg}\n${USAGE}`);
}

/** The string options `allowed` (`--name value` / `--name=value`) and positionals (parseCommandLine). */
function parseFlags(argv: string[], allowed: string[]): { flags: Record<string, string>; rest: string[] } {
  const { values, positionals } = parseCommandLine(
    {
      args: argv,
      allowPositionals: true,
      options: Object.fromEntries(allowed.map((name) => [name, { type: "string" as const }])),
    },
    usage,
  );
  return { flags: values as Record<string, string>, rest: positionals };
}

/** --max-rel-l2: a positive number, "none" (measure only), default DEFAULT_MAX_REL_L2. */
function targetOf(v: string | undefined): number | undefined {
  if (v === "none") return undefined;
  if (v === undefined) return DEFAULT_MAX_REL_L2;
  const x = Number(v);
  if (!(Number.isFinite(x) && x > 0)) throw usage(`--max-rel-l2 must be a positive number or none, got ${v}`);
  return x;
}

function precisionOf(v: string | undefined): Precision {
  const p = v ?? "int8";
  if (p !== "int8" && p !== "fp32") throw usage(`--precision must be int8 or fp32, got ${p}`);
  return p;
}

function budgetOf(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw usage(`--stage-budget-mb must be a positive number, got ${v}`);
  return Math.floor(n * MiB);
}

/** The build's steps on the converter's progress bar (model-shards/progress.ts). */
function buildProgress(): (msg: string, frac?: number) => void {
  const bar = progressBar();
  return (label, frac) => bar({ label, frac: frac ?? 0 });
}

async function configFor(arg: string): Promise<BeitConfig> {
  if (arg === "base") return baseConfig();
  if (arg === "tiny") return tinySynthConfig();
  const text = await readFile(join(arg, "config.json"), "utf8").catch(() => {
    throw new AppError(
      "checkpoint-not-found",
      404,
      `${arg} is not base, tiny, or a directory with config.json.`,
    );
  });
  return parseBeitConfig(JSON.parse(text));
}

async function build(argv: string[]): Promise<void> {
  const { flags } = parseFlags(argv, [
    "from",
    "out",
    "precision",
    "stage-budget-mb",
    "revision",
    "activations",
    "weight-bits",
    "asymmetric",
    "bias-correction",
    "outliers",
    "max-rel-l2",
    "fidelity-inputs",
  ]);
  if (!flags.from) throw usage("--from <hub id | dir> is required");
  if (!flags.out) throw usage("--out DIR is required");
  const precision = precisionOf(flags.precision);
  const stageBudgetBytes = budgetOf(flags["stage-budget-mb"]);
  const activation = flags.activations ?? DEFAULT_QUANT.activation;
  if (activation !== "per-tensor" && activation !== "per-row")
    throw usage(`--activations must be per-tensor or per-row, got ${activation}`);
  const weightBits = Number(flags["weight-bits"] ?? DEFAULT_QUANT.weightBits);
  if (weightBits !== 8 && weightBits !== 7)
    throw usage(`--weight-bits must be 8 or 7, got ${flags["weight-bits"]}`);
  const asymmetric = flags.asymmetric ?? DEFAULT_QUANT.asymmetric ?? "none";
  if (asymmetric !== "none" && asymmetric !== "gelu" && asymmetric !== "all")
    throw usage(`--asymmetric must be none, gelu or all, got ${asymmetric}`);
  const biasCorrection = flags["bias-correction"] ?? DEFAULT_QUANT.biasCorrection ?? "none";
  if (biasCorrection !== "none" && biasCorrection !== "mlp-output" && biasCorrection !== "all")
    throw usage(`--bias-correction must be none, mlp-output or all, got ${biasCorrection}`);
  const outlierChannels = flags.outliers ?? DEFAULT_QUANT.outlierChannels ?? "none";
  if (outlierChannels !== "none" && outlierChannels !== "calibrated")
    throw usage(`--outliers must be calibrated or none, got ${outlierChannels}`);
  if (flags["max-rel-l2"] !== undefined && precision !== "int8")
    throw usage("--max-rel-l2 applies to int8 builds");
  const maxRelL2 = precision === "int8" ? targetOf(flags["max-rel-l2"]) : undefined;
  const fidelityInputs =
    flags["fidelity-inputs"] === undefined ? undefined : Number(flags["fidelity-inputs"]);
  if (
    fidelityInputs !== undefined &&
    !(Number.isInteger(fidelityInputs) && fidelityInputs >= 1 && fidelityInputs <= 100)
  )
    throw usage(`--fidelity-inputs must be an integer 1..100, got ${flags["fidelity-inputs"]}`);
  const quant: QuantOptions = { activation, weightBits, asymmetric, biasCorrection, outlierChannels };
  const bar = buildProgress();
  const t0 = performance.now();
  bar(`loading ${flags.from}`, 0);
  const ck = await loadCheckpoint(flags.from, {
    revision: flags.revision,
    onProgress: downloadProgress(),
  });
  const manifest = await buildShards(ck, {
    outDir: flags.out,
    precision,
    stageBudgetBytes,
    quant,
    maxRelL2,
    fidelityInputs,
    onProgress: bar,
  });
  const bytes = manifest.stages.reduce((s, st) => s + st.graph.bytes + (st.weights?.bytes ?? 0), 0);
  process.stdout.write(
    `${manifest.precision} shards of ${manifest.model.id} (${manifest.stages.length} stages, ${(bytes / MiB).toFixed(1)} MiB, version ${manifest.version.slice(0, 12)}) written to ${flags.out} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
  );
  if (manifest.fidelity) process.stdout.write(`${formatFidelity(manifest.fidelity)}\n`);
}

async function verify(argv: string[]): Promise<void> {
  const { rest } = parseFlags(argv, []);
  if (rest.length !== 1) throw usage("verify takes one shard directory");
  const m = await verifyShards(rest[0]);
  process.stdout.write(
    `ok: ${rest[0]}: ${m.precision}, ${m.stages.length} stages, ${m.labels.count} labels, version ${m.version}\n`,
  );
}

async function run(argv: string[]): Promise<void> {
  const { flags } = parseFlags(argv, ["model", "pixels", "top"]);
  if (!flags.model) throw usage("--model DIR is required");
  if (!flags.pixels) throw usage("--pixels FILE is required");
  const top = flags.top === undefined ? 5 : Number(flags.top);
  if (!Number.isInteger(top) || top < 1) throw usage(`--top must be a positive integer, got ${flags.top}`);
  const raw = await readFile(flags.pixels).catch(() => {
    throw new AppError(
      "pixels-not-found",
      404,
      `cannot read ${flags.pixels}; pass raw little-endian float32 pixel_values.`,
    );
  });
  if (raw.byteLength % 4 !== 0)
    throw new AppError(
      "bad-pixels",
      422,
      `${flags.pixels} has ${raw.byteLength} bytes, not a whole number of float32 values.`,
    );
  const pixels = new Float32Array(raw.byteLength / 4);
  new Uint8Array(pixels.buffer).set(raw);
  const model = await loadLocalModel(flags.model);
  const logits = await model.run(pixels);
  const { topK } = await import("../src/inference/pipeline.ts");
  const out = { logits_head: Array.from(logits.slice(0, 8)), top: topK(logits, model.labels, top) };
  await model.release();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function acceptance(argv: string[]): Promise<number> {
  const { flags, rest } = parseFlags(argv, [
    "from",
    "image",
    "out",
    "max-rel-l2",
    "expect-class",
    "expect-logits",
  ]);
  if (rest.length) throw usage(`unexpected argument ${JSON.stringify(rest[0])}`);
  const maxRelL2 = targetOf(flags["max-rel-l2"]) ?? Number.POSITIVE_INFINITY;
  let expect: AcceptanceOptions["expect"];
  if (flags["expect-class"] !== undefined || flags["expect-logits"] !== undefined) {
    const topClass = Number(flags["expect-class"]);
    const logits = (flags["expect-logits"] ?? "").split(",").map(Number);
    if (!Number.isInteger(topClass) || topClass < 0 || logits.some((v) => !Number.isFinite(v)))
      throw usage("--expect-class N and --expect-logits a,b,c go together (a class index and numbers)");
    expect = { topClass, logits, tolerance: EXPECTED.tolerance };
  }
  const t0 = performance.now();
  const result = await runAcceptance({
    from: flags.from,
    image: flags.image,
    out: flags.out ?? "model-shards/out/acceptance",
    maxRelL2,
    expect,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  if (result.status !== "skipped") for (const line of result.lines) process.stdout.write(`${line}\n`);
  const secs = ((performance.now() - t0) / 1000).toFixed(0);
  process.stdout.write(
    result.status === "skipped"
      ? `acceptance: SKIPPED, nothing was checked (${result.lines[0]}); run it where the hub is reachable, or set HF_ENDPOINT to a mirror\n`
      : `acceptance: ${result.status.toUpperCase()} in ${secs} s\n`,
  );
  return result.status === "passed" ? 0 : result.status === "skipped" ? EXIT_SKIPPED : 1;
}

async function plan(argv: string[]): Promise<void> {
  const { flags } = parseFlags(argv, ["config", "precision", "stage-budget-mb"]);
  const config = await configFor(flags.config ?? "base");
  const p = planStages(config, precisionOf(flags.precision), {
    stageBudgetBytes: budgetOf(flags["stage-budget-mb"]),
  });
  process.stdout.write(`${formatPlan(p)}\n`);
}

/** Entry point; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case "synth":
        await synthCommand(rest);
        break;
      case "build":
        await build(rest);
        break;
      case "verify":
        await verify(rest);
        break;
      case "run":
        await run(rest);
        break;
      case "plan":
        await plan(rest);
        break;
      case "acceptance":
        return await acceptance(rest);
      case undefined:
      case "help":
      case "--help":
        process.stdout.write(`${USAGE}\n`);
        return cmd === undefined ? 1 : 0;
      default:
        throw usage(`unknown command ${JSON.stringify(cmd)}`);
    }
    return 0;
  } catch (e) {
    if (isAppError(e)) process.stderr.write(`error[${e.code}]: ${e.detail}\n`);
    else process.stderr.write(`error[internal]: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("model-shards/cli.ts")) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
