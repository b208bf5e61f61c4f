/**
 * @module
 * `npm run model -- acceptance`: the real-weights check. Downloads
 * microsoft/beit-base-patch16-224-pt22k-ft22k from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN and
 * the hub cache honoured, model-shards/checkpoint/hub.ts), converts it to fp32 and int8 shards,
 * classifies the model card's example picture (COCO val2017 000000039769, two cats) with the
 * image path the Workers run (src/image) and the stage loader they use, and checks:
 * - fp32: the first three logits within 1e-3 of Hugging Face's own conversion check for this
 *   checkpoint ([2.2288, 2.4671, 0.7395]) and top-1 class 2397, "tabby, tabby cat";
 * - int8: the same top-1 class, and its logits within the build's --max-rel-l2 of fp32's.
 * Where the hub (or the picture) cannot be reached it says so in one line and exits
 * {@link EXIT_SKIPPED}: nothing was checked.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import { isAppError } from "../src/shared/errors.ts";
import { buildShards } from "./build.ts";
import { loadCheckpoint } from "./checkpoint/index.ts";
import { argmax, relL2 } from "./metrics.ts";
import { loadLocalModel } from "./runner.ts";

/** Exit code when the hub or the picture cannot be reached. */
export const EXIT_SKIPPED = 3;

/** What Hugging Face's conversion check expects of this checkpoint on the two-cats picture. */
export const EXPECTED = {
  repo: "microsoft/beit-base-patch16-224-pt22k-ft22k",
  topClass: 2397,
  topLabel: "tabby, tabby cat",
  logits: [2.2288, 2.4671, 0.7395],
  tolerance: 1e-3,
};

/** Where the picture is fetched from, in order: the model card's URL, then the hub's copy. */
export function imageUrls(endpoint = process.env.HF_ENDPOINT ?? "https://huggingface.co"): string[] {
  return [
    "http://images.cocodataset.org/val2017/000000039769.jpg",
    `${endpoint.replace(/\/+$/, "")}/datasets/huggingface/cats-image/resolve/main/cats_image.jpeg`,
  ];
}

export interface AcceptanceOptions {
  /** Hub id or checkpoint directory (default EXPECTED.repo). */
  from?: string;
  /** A picture file or URL (default: {@link imageUrls}). */
  image?: string;
  /** Where the shards go (two directories, fp32 and int8). */
  out: string;
  /** The int8 build's target (its --max-rel-l2). */
  maxRelL2: number;
  /** What to expect (default {@link EXPECTED}); a test with its own checkpoint passes its own. */
  expect?: { topClass: number; topLabel?: string; logits: number[]; tolerance: number };
  log?: (line: string) => void;
  /** Seconds to wait for the picture's server. */
  timeoutSeconds?: number;
}

export interface AcceptanceResult {
  status: "passed" | "failed" | "skipped";
  /** One line per check, or the reason for a skip. */
  lines: string[];
}

class Skip extends Error {}

async function fetchImage(source: string | undefined, timeoutSeconds: number): Promise<Uint8Array> {
  if (source && !/^https?:\/\//.test(source)) return new Uint8Array(await readFile(source));
  const reasons: string[] = [];
  for (const url of source ? [source] : imageUrls()) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeoutSeconds * 1000) });
      if (res.ok) return new Uint8Array(await res.arrayBuffer());
      reasons.push(`${url}: HTTP ${res.status}`);
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code;
      reasons.push(`${url}: ${cause ?? (e as Error).message}`);
    }
  }
  throw new Skip(`the example picture could not be fetched (${reasons.join("; ")})`);
}

/**
 * Runs the acceptance check.
 *
 * @example
 * const r = await runAcceptance({ out: "model-shards/out/acceptance", maxRelL2: 0.05 });
 * if (r.status !== "passed") console.log(r.lines.join("\n"));
 */
export async function runAcceptance(opts: AcceptanceOptions): Promise<AcceptanceResult> {
  const log = opts.log ?? (() => {});
  const expect = opts.expect ?? EXPECTED;
  const from = opts.from ?? EXPECTED.repo;
  let ck: Awaited<ReturnType<typeof loadCheckpoint>>;
  let bytes: Uint8Array;
  try {
    log(`loading ${from}`);
    ck = await loadCheckpoint(from);
    bytes = await fetchImage(opts.image, opts.timeoutSeconds ?? 30);
  } catch (e) {
    if (e instanceof Skip) return { status: "skipped", lines: [e.message] };
    if (isAppError(e) && e.code === "hub-unreachable")
      return {
        status: "skipped",
        lines: [`the Hugging Face hub is not reachable: ${e.detail.split(". ")[0]}`],
      };
    throw e;
  }
  await initNodeCodecs();
  const { pixels } = await imageToPixelValues(bytes, ck.preprocess);
  const logitsOf = async (precision: "fp32" | "int8") => {
    const dir = join(opts.out, precision);
    log(`converting to ${precision} shards in ${dir}`);
    const manifest = await buildShards(ck, {
      outDir: dir,
      precision,
      ...(precision === "int8" ? { maxRelL2: opts.maxRelL2 } : {}),
    });
    const model = await loadLocalModel(dir);
    try {
      return { logits: await model.run(pixels), labels: model.labels, manifest };
    } finally {
      await model.release();
    }
  };
  const fp = await logitsOf("fp32");
  const q = await logitsOf("int8");
  const lines: string[] = [];
  let ok = true;
  const check = (pass: boolean, line: string) => {
    ok &&= pass;
    lines.push(`${pass ? "ok  " : "FAIL"} ${line}`);
  };
  const head = Array.from(fp.logits.slice(0, expect.logits.length));
  const worst = Math.max(...head.map((v, i) => Math.abs(v - expect.logits[i])));
  check(
    worst <= expect.tolerance,
    `fp32 logits[:${head.length}] = [${head.map((v) => v.toFixed(4)).join(", ")}], expected [${expect.logits.join(", ")}] within ${expect.tolerance} (off by ${worst.toExponential(2)})`,
  );
  const top = argmax(fp.logits);
  check(
    top === expect.topClass && (expect.topLabel === undefined || fp.labels[top] === expect.topLabel),
    `fp32 top-1 class ${top} "${fp.labels[top]}", expected ${expect.topClass}${expect.topLabel ? ` "${expect.topLabel}"` : ""}`,
  );
  const qTop = argmax(q.logits);
  check(qTop === top, `int8 top-1 class ${qTop} "${q.labels[qTop]}", fp32's is ${top}`);
  const err = relL2(q.logits, fp.logits);
  check(err <= opts.maxRelL2, `int8 vs fp32 rel L2 ${err.toFixed(4)}, target ${opts.maxRelL2}`);
  const f = q.manifest.fidelity;
  if (f)
    lines.push(
      `     the build measured rel L2 ${f.relL2Mean.toFixed(4)} (max ${f.relL2Max.toFixed(4)}) on ${f.inputs} held-out inputs; ${f.outlierChannels} outlier channels in ${f.outlierLayers} layers`,
    );
  return { status: ok ? "passed" : "failed", lines };
}
