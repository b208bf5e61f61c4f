/**
 * @module
 * Cold start, measured the way a user meets it: `wrangler dev` (gateway + every stage Worker, local
 * R2) is started with a readiness probe that touches no stage (`GET /openapi.json`), so the first
 * `POST /v1/classify` lands on fresh stage isolates that have not loaded ORT, a shard or a session.
 * For each variant and round:
 *
 * - R2 cold: a new persist dir (shards only in local R2, empty Cache API), first classify timed at
 *   the client, then each stage's load breakdown measured inside workerd (`GET /v1/status`
 *   lastLoad: manifest, fetch, sha256, session create, priming run) and a few warm classifies;
 * - Cache API cold: wrangler dev restarted on the same persist dir (fresh isolates, shards in the
 *   persisted Cache API), first classify timed at the client.
 *
 * With `--profile 3` (stage indices, comma-separated), a V8 CPU profile of those stage isolates is
 * taken over workerd's inspector during the R2 cold classify and during one warm classify, split
 * into ORT wasm, JavaScript, GC, V8's own work ("(program)": compilation, runtime) and idle. Caveats
 * (bench/README.md): every isolate of the process shares one thread, so samples taken while
 * another isolate runs land in the profiled one's JS/GC buckets (its wasm bucket stays its own);
 * profiling all four stages at once made the cold classify hang in wrangler dev here.
 *
 * Each round also reports the warm median of that same round and the cold/warm ratio (the #19
 * goal: true cold first classification at most 1.8x warm). With `--npm-start N` (default 1; 0 skips
 * it), `npm start --model DIR` is timed N times from launch to its banner on a persist dir where the
 * model is already published (`npm start -- --prepare-only` first, untimed): the banner shows once
 * every stage has loaded (`/healthz`).
 *
 * Variants are stage-Worker vars (`--variants shipped,noprime`, see VARIANTS); rounds interleave
 * them. Local only: in production each stage is its own isolate on the caller's thread too, but
 * R2, the Cache API and the clock differ (bench/README.md).
 *
 *   npx tsx bench/cold-start.ts --model DIR [--rounds 2] [--variants shipped,no-prime-on-classify] [--profile 3]
 *
 * Prints a Markdown table (and writes bench/results/cold-start.md).
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseCommandLine } from "../model-shards/args.ts";
import { median } from "../model-shards/metrics.ts";
import { publishLocal, readManifest } from "../scripts/lib/local-r2.ts";
import { freePort, type RunningService, serveLocal } from "../scripts/lib/serve.ts";
import { imageBenchInputs } from "./image-inputs.ts";
import {
  type CpuProfile,
  findWorkerdInspector,
  IsolateInspector,
  type ProfileSummary,
  summarizeProfile,
} from "./lib/workerd-inspector.ts";

// The inspector needs WebSocket, which Node 20 has only behind a flag: re-run with it.
if (typeof WebSocket === "undefined" && !process.execArgv.includes("--experimental-websocket")) {
  const r = spawnSync(
    process.execPath,
    ["--experimental-websocket", "--import", "tsx", ...process.argv.slice(1)],
    { stdio: "inherit" },
  );
  process.exit(r.status ?? 1);
}

/** Stage-Worker vars per variant (the shipped defaults are the empty set). */
const VARIANTS: Record<string, Record<string, string>> = {
  // STAGE_PRIME=always (default): every load primes on zeros, then the classification's run follows.
  shipped: {},
  // A classification's cold start loads the stages without priming; its own first run warms them.
  "no-prime-on-classify": { STAGE_PRIME: "on-request" },
};

const { values: args } = parseCommandLine(
  {
    args: process.argv.slice(2),
    options: {
      model: { type: "string", default: "model-shards/out/synthetic-base" },
      rounds: { type: "string", default: "1" },
      variants: { type: "string", default: "shipped" },
      warm: { type: "string", default: "3" },
      profile: { type: "string", default: "" },
      "npm-start": { type: "string", default: "1" },
    },
  },
  (m) =>
    new Error(
      `${m}. Usage: npx tsx bench/cold-start.ts --model DIR [--rounds N] [--variants ${Object.keys(VARIANTS).join(",")}] [--profile 3]`,
    ),
);

const root = resolve(import.meta.dirname, "..");
const dir = resolve(args.model);
const rounds = Number(args.rounds);
const warmRuns = Number(args.warm);
const profileStages = args.profile ? args.profile.split(",").map(Number) : [];
const variants = args.variants.split(",").map((v) => {
  if (!VARIANTS[v]) throw new Error(`unknown variant ${v}; known: ${Object.keys(VARIANTS).join(", ")}`);
  return v;
});

type Phases = Record<"manifestMs" | "fetchMs" | "verifyMs" | "createMs" | "primeMs" | "totalMs", number> & {
  origin: string;
};
interface StageStatusJson {
  index: number;
  peakWasmHeapBytes: number;
  lastLoad?: Phases | null;
}
interface Cold {
  ms: number;
  timing: string;
  stages: StageStatusJson[];
  /** Each stage isolate's V8 heap after the cold classify (inspector Runtime.getHeapUsage), bytes. */
  jsHeap?: { used: number; total: number }[];
}
interface RoundResult {
  r2: Cold;
  cache: Cold;
  warm: number[];
  profiles?: { cold: ProfileSummary[]; warm: ProfileSummary[] };
}

async function classify(url: string, bytes: Uint8Array): Promise<{ ms: number; timing: string }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/classify`, {
    method: "POST",
    body: bytes,
    headers: { "content-type": "image/webp" },
  });
  const body = await res.text();
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`classify answered ${res.status}: ${body.slice(0, 300)}`);
  return { ms, timing: res.headers.get("server-timing") ?? "" };
}

/**
 * Every stage's status, or [] when `/v1/status` does not answer: in wrangler dev it has hung now and
 * then right after a cold start on a loaded machine (3 tries of 30 s, then the breakdown is left out).
 */
async function stageStatus(url: string): Promise<StageStatusJson[]> {
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      const res = await fetch(`${url}/v1/status`, { signal: AbortSignal.timeout(30_000) });
      return ((await res.json()) as { stages: StageStatusJson[] }).stages;
    } catch (e) {
      process.stderr.write(`(GET /v1/status attempt ${attempt}: ${String(e)}) `);
    }
  }
  return [];
}

async function profiled<T>(
  svc: RunningService,
  stages: number[],
  fn: () => Promise<T>,
): Promise<{ value: T; profiles: ProfileSummary[] }> {
  // workerd's inspector answers an isolate's commands only once the isolate has served a request:
  // GET /v1/status reaches every stage's /status (no ORT, no shard; the gateway reads the manifest).
  await (await fetch(`${svc.url}/v1/status`)).arrayBuffer();
  const port = await findWorkerdInspector(svc.child.pid as number);
  process.stderr.write(`(inspector on ${port}) `);
  const inspectors = await Promise.all(
    stages.map((i) => IsolateInspector.connect(port, `core:user:beit-edge-stage-${i}`)),
  );
  try {
    await Promise.all(inspectors.map((x) => x.startProfile(1000)));
    const value = await fn();
    const raw: CpuProfile[] = await Promise.all(inspectors.map((x) => x.stopProfile()));
    return { value, profiles: raw.map(summarizeProfile) };
  } finally {
    for (const x of inspectors) x.close();
  }
}

/**
 * Each stage isolate's V8 heap (used, total) through workerd's inspector. The shard buffers are
 * ArrayBuffer backing stores outside this figure; the loader frees them after create.
 */
async function stageJsHeaps(svc: RunningService, stages: number): Promise<{ used: number; total: number }[]> {
  // Bounded: an inspector that never answers must not hang the bench (it did, at "status...").
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("no answer from workerd's inspector in 10 s")), 10_000);
  });
  try {
    return await Promise.race([readStageJsHeaps(svc, stages), timeout]);
  } catch (e) {
    process.stderr.write(`(JS heaps not read: ${String(e)}) `);
    return [];
  } finally {
    clearTimeout(timer);
  }
}

async function readStageJsHeaps(
  svc: RunningService,
  stages: number,
): Promise<{ used: number; total: number }[]> {
  {
    const port = await findWorkerdInspector(svc.child.pid as number);
    const out: { used: number; total: number }[] = [];
    for (let i = 0; i < stages; i++) {
      const x = await IsolateInspector.connect(port, `core:user:beit-edge-stage-${i}`);
      try {
        const h = await x.send<{ usedSize: number; totalSize: number }>("Runtime.getHeapUsage");
        out.push({ used: h.usedSize, total: h.totalSize });
      } finally {
        x.close();
      }
    }
    return out;
  }
}

async function round(variant: string, manifestStages: number, image: Uint8Array): Promise<RoundResult> {
  const persist = await mkdtemp(join(tmpdir(), "beit-edge-cold-"));
  try {
    await publishLocal(dir, persist);
    const port = await freePort();
    const serve = () =>
      serveLocal({
        root,
        stages: manifestStages,
        persistTo: persist,
        port,
        configDir: join(persist, "configs"),
        prebundle: true,
        readyTimeoutMs: 300_000,
        readyPath: "/openapi.json",
        varsByKind: { stage: VARIANTS[variant] },
      });
    const step = (m: string) => process.stderr.write(`${m}... `);
    step("serve");
    let svc = await serve();
    step("classify");
    let result: Partial<RoundResult> = {};
    try {
      let first: { ms: number; timing: string };
      if (profileStages.length) {
        const p = await profiled(svc, profileStages, () => classify(svc.url, image));
        first = p.value;
        result.profiles = { cold: p.profiles, warm: [] };
      } else first = await classify(svc.url, image);
      step(`${first.ms.toFixed(0)} ms; status`);
      result.r2 = { ...first, stages: await stageStatus(svc.url) };
      result.r2.jsHeap = await stageJsHeaps(svc, manifestStages);
      step("warm");
      const warm: number[] = [];
      for (let i = 0; i < warmRuns; i++) warm.push((await classify(svc.url, image)).ms);
      result.warm = warm;
      if (profileStages.length && result.profiles)
        result.profiles.warm = (await profiled(svc, profileStages, () => classify(svc.url, image))).profiles;
    } finally {
      await svc.stop();
    }
    step("serve again");
    svc = await serve();
    try {
      step("classify");
      const first = await classify(svc.url, image);
      result = { ...result, cache: { ...first, stages: await stageStatus(svc.url) } };
    } finally {
      await svc.stop();
    }
    return result as RoundResult;
  } finally {
    await rm(persist, { recursive: true, force: true });
  }
}

/**
 * `npm start --model DIR` on a persist dir where the model is already published: seconds from
 * launch to the "Ready in" banner (printed once every stage has answered /healthz). The process
 * group this starts is stopped by its id.
 */
async function npmStartReady(port: number): Promise<number> {
  const persist = await mkdtemp(join(tmpdir(), "beit-edge-start-"));
  const base = ["tsx", "scripts/start.ts", "--model", dir, "--persist", persist, "--port", String(port)];
  try {
    const prep = spawnSync("npx", [...base, "--prepare-only"], { cwd: root, stdio: "ignore" });
    if (prep.status !== 0) throw new Error("npm start --prepare-only failed");
    const t0 = performance.now();
    const child = spawn("npx", base, { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    try {
      return await new Promise<number>((ok, fail) => {
        let out = "";
        const timer = setTimeout(
          () => fail(new Error(`npm start not ready after 300 s:\n${out.slice(-2000)}`)),
          300_000,
        );
        const watch = (b: Buffer) => {
          out += b.toString();
          if (/Ready in \d+ s/.test(out)) {
            clearTimeout(timer);
            ok((performance.now() - t0) / 1000);
          }
        };
        child.stdout.on("data", watch);
        child.stderr.on("data", watch);
        child.once("exit", (code) =>
          fail(new Error(`npm start exited (${code}) before its banner:\n${out.slice(-2000)}`)),
        );
      });
    } finally {
      if (child.pid) process.kill(-child.pid, "SIGTERM");
      await new Promise((r) => setTimeout(r, 2000));
    }
  } finally {
    await rm(persist, { recursive: true, force: true });
  }
}

const manifest = await readManifest(dir).catch(() => {
  throw new Error(`no model in ${dir}: run \`npm start -- --prepare-only\` first`);
});
const image = (await imageBenchInputs()).find((i) => i.name === "224.webp")!.bytes;
const load0 = loadavg()[0];
const started = new Date();
const results = new Map<string, RoundResult[]>();
for (let r = 0; r < rounds; r++)
  for (const v of variants) {
    process.stderr.write(`round ${r + 1}/${rounds}, variant ${v}: `);
    const res = await round(v, manifest.stages.length, image);
    process.stderr.write(
      `R2 cold ${res.r2.ms.toFixed(0)} ms, Cache API cold ${res.cache.ms.toFixed(0)} ms\n`,
    );
    const list = results.get(v) ?? [];
    list.push(res);
    results.set(v, list);
  }

const npmStarts: number[] = [];
for (let i = 0; i < Number(args["npm-start"]); i++) {
  process.stderr.write(`npm start ${i + 1}: `);
  npmStarts.push(await npmStartReady(await freePort()));
  process.stderr.write(`ready in ${npmStarts.at(-1)?.toFixed(1)} s\n`);
}

const med = (xs: number[]) => median(xs).toFixed(0);
const mib = (b: number) => (b / 1048576).toFixed(1);
const heapCell = (v: string, origin: "r2" | "cache", s: number) => {
  const h = origin === "r2" ? results.get(v)?.at(-1)?.r2.jsHeap?.[s] : undefined;
  return h ? `${mib(h.used)} / ${mib(h.total)}` : "";
};
const lines: string[] = [];
lines.push(
  `model ${manifest.version.slice(0, 12)} (${manifest.precision}, ${manifest.stages.length} stages), ${rounds} round(s), ${started.toISOString()}, load average ${load0.toFixed(1)} at start / ${loadavg()[0].toFixed(1)} at end`,
);
lines.push(
  "",
  "Per round: true cold first classification (fresh isolates, shards in R2) against the warm median of the same round (#19 goal: at most 1.8x):",
  "",
  "| variant | round | R2 cold (ms) | Cache API cold (ms) | warm median, same round (ms) | R2 cold / warm | Cache API cold / warm |",
  "|---|---|---|---|---|---|---|",
);
for (const v of variants)
  for (const [i, r] of results.get(v)!.entries()) {
    const w = median(r.warm);
    lines.push(
      `| ${v} | ${i + 1} | ${r.r2.ms.toFixed(0)} | ${r.cache.ms.toFixed(0)} | ${w.toFixed(0)} | ${(r.r2.ms / w).toFixed(2)}x | ${(r.cache.ms / w).toFixed(2)}x |`,
    );
  }
if (npmStarts.length)
  lines.push(
    "",
    `\`npm start --model DIR\` (model already published), launch to banner: ${npmStarts.map((x) => `${x.toFixed(1)} s`).join(", ")} (#19 goal: under 15 s)`,
  );
lines.push(
  "",
  "| variant | R2 cold (client) | Cache API cold (client) | warm after it | first classify Server-Timing (R2 cold, last round) |",
  "|---|---|---|---|---|",
);
for (const v of variants) {
  const rs = results.get(v)!;
  lines.push(
    `| ${v} | ${med(rs.map((r) => r.r2.ms))} ms (${rs.map((r) => r.r2.ms.toFixed(0)).join(", ")}) | ${med(rs.map((r) => r.cache.ms))} ms (${rs.map((r) => r.cache.ms.toFixed(0)).join(", ")}) | ${med(rs.flatMap((r) => r.warm))} ms | ${rs.at(-1)!.r2.timing.replaceAll("|", "/")} |`,
  );
}
lines.push(
  "",
  "Stage loads inside workerd (ms, median over rounds; `GET /v1/status` lastLoad):",
  "",
  "| variant | origin | stage | manifest | fetch | sha256 | session create | priming run | total | peak wasm heap (MiB) | JS heap used / total (MiB, inspector, R2 cold, last round) |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
);
for (const v of variants)
  for (const origin of ["r2", "cache"] as const)
    for (let s = 0; s < manifest.stages.length; s++) {
      const ls = results
        .get(v)!
        .map((r) => r[origin].stages[s])
        .filter((x) => x?.lastLoad);
      if (ls.length === 0) continue;
      const p = (k: keyof Omit<Phases, "origin">) => med(ls.map((x) => (x.lastLoad as Phases)[k]));
      lines.push(
        `| ${v} | ${origin === "r2" ? "R2" : "Cache API"} | ${s} | ${p("manifestMs")} | ${p("fetchMs")} | ${p("verifyMs")} | ${p("createMs")} | ${p("primeMs")} | ${p("totalMs")} | ${mib(Math.max(...ls.map((x) => x.peakWasmHeapBytes)))} | ${heapCell(v, origin, s)} |`,
      );
    }
if (profileStages.length) {
  lines.push(
    "",
    "Stage isolates' CPU profiles (workerd inspector, 1 ms sampling; ms of self time, last round): R2 cold classify vs one warm classify. JS/GC include other isolates' time on the shared thread",
    "",
    "| variant | stage | run | sampled | ORT wasm | JS | GC | V8 (program: compile, runtime) | idle | top wasm, then JS functions |",
    "|---|---|---|---|---|---|---|---|---|---|",
  );
  for (const v of variants) {
    const p = results.get(v)!.at(-1)!.profiles!;
    for (const [k, s] of profileStages.entries())
      for (const [label, x] of [
        ["cold", p.cold[k]],
        ["warm", p.warm[k]],
      ] as const) {
        if (!x) continue;
        const top = [...x.wasmFunctions.slice(0, 3), ...x.jsFunctions.slice(0, 2)]
          .map((f) => `${f.name} ${f.ms.toFixed(0)}`)
          .join(", ");
        lines.push(
          `| ${v} | ${s} | ${label} | ${x.totalMs.toFixed(0)} | ${x.wasmMs.toFixed(0)} | ${x.jsMs.toFixed(0)} | ${x.gcMs.toFixed(0)} | ${x.programMs.toFixed(0)} | ${x.idleMs.toFixed(0)} | ${top} |`,
        );
      }
  }
}
const text = `${lines.join("\n")}\n`;
process.stdout.write(text);
await mkdir(join(root, "bench/results"), { recursive: true });
await writeFile(join(root, "bench/results/cold-start.md"), text);
