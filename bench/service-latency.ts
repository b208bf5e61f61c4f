/**
 * @module
 * Service benchmark, measured from the client against `wrangler dev` (gateway + every stage
 * Worker, local R2) with the full-size synthetic int8 model:
 *
 * - cold start: fresh isolates, shards only in R2 (new persist dir, empty Cache API); the readiness
 *   probe is GET /openapi.json, so no stage has loaded anything before the first classify
 *   (bench/cold-start.ts measures cold starts alone, with variants);
 * - warm p50/p95 for a 224x224 WebP and a 12-megapixel JPEG;
 * - per-stage wasm heap measured in workerd (GET /v1/status) against 128 MB;
 * - warm-colo cold start: wrangler dev restarted on the same persist dir (fresh isolates, shards
 *   in the persisted Cache API);
 * - each stage's load breakdown measured inside workerd after the cold start (GET /v1/status
 *   lastLoad: manifest, fetch, sha256, session create, priming run);
 * - warm 224x224: where the time goes, from each response's Server-Timing: the stages'
 *   `session.run` inside workerd ("model alone in workerd"), the hops (stage round trip seen by the
 *   gateway minus run), decode, and client-side HTTP (client time minus the gateway's total); and
 *   the same 4 stage files in onnxruntime-web in this Node process, one run interleaved after each
 *   service request (same pixels, same machine state), per stage;
 * - 12 MP JPEG: every one of the back-to-back requests listed (to see any alternation), decode and
 *   preprocess p50, and the workerd process's peak RSS growth over the series (VmHWM, reset first);
 * - concurrency: 1 client, then 8 clients in the same run: images/s, p50 and p95;
 * - the same stages with onnxruntime-node natively (1 thread) on the same pixels, as a reference.
 *
 *   npx tsx bench/service-latency.ts [--model DIR] [--runs N] [--big-runs N] [--clients N]
 *     [--concurrent-requests N]
 *
 * Prints a Markdown table (and writes it to bench/results/service-latency.md).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadLocalModel } from "../model-shards/runner.ts";
import { publishLocal, readManifest } from "../scripts/lib/local-r2.ts";
import { freePort, serveLocal } from "../scripts/lib/serve.ts";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import { ISOLATE_LIMIT_BYTES } from "../src/topology.ts";
import { imageBenchInputs } from "./image-inputs.ts";
import { flag, pct } from "./lib/cli.ts";
import { loadOrtNode, type OrtSession } from "./lib/ort-node.ts";
import { memOf, workerdPids } from "./lib/workerd-proc.ts";

const root = resolve(import.meta.dirname, "..");
const MB128 = ISOLATE_LIMIT_BYTES;

/** Server-Timing entries by name (ms). */
function timingOf(header: string): Record<string, number> {
  return Object.fromEntries([...header.matchAll(/([\w-]+);dur=([\d.]+)/g)].map((m) => [m[1], Number(m[2])]));
}

/** Sum of the `${prefix}0..n-1` entries. */
function sumOf(t: Record<string, number>, prefix: string, n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += t[`${prefix}${i}`] ?? 0;
  return sum;
}

/**
 * wrangler dev's proxy answer whenever its fetch to the runtime fails on a POST (it says "restarted"
 * even when nothing restarted: before the FIFO pipeline and nextTask, workerd dropped kept-alive
 * connections under concurrent load; see bench/README.md). Counted and repeated, and reported.
 */
const RESTARTED = /Your worker restarted mid-request/;
let restarts = 0;

async function timedClassify(url: string, bytes: Uint8Array, type: string) {
  for (;;) {
    const t0 = performance.now();
    const res = await fetch(`${url}/v1/classify`, {
      method: "POST",
      body: bytes,
      headers: { "content-type": type },
    });
    const body = await res.text();
    const ms = performance.now() - t0;
    if (res.status === 503 && RESTARTED.test(body) && restarts < 3) {
      restarts++;
      process.stderr.write("wrangler dev answered 'restarted mid-request'; measuring again\n");
      continue;
    }
    if (res.status !== 200) throw new Error(`classify answered ${res.status}: ${body.slice(0, 300)}`);
    const timing = res.headers.get("server-timing") ?? "";
    return { ms, timing, t: timingOf(timing), synthetic: res.headers.get("x-model-synthetic") };
  }
}

async function main(): Promise<void> {
  const dir = resolve(flag("model", join(root, "model-shards/out/synthetic-base")));
  const runs = Number(flag("runs", "20"));
  const bigRuns = Number(flag("big-runs", "20"));
  const clients = Number(flag("clients", "8"));
  const concurrentRequests = Number(flag("concurrent-requests", "32"));
  const manifest = await readManifest(dir).catch(() => {
    throw new Error(
      `no model in ${dir}: run \`npm start -- --prepare-only\` first (builds the full-size synthetic model)`,
    );
  });
  const inputs = await imageBenchInputs();
  const small = inputs.find((i) => i.name === "224.webp")!;
  const big = inputs.find((i) => i.name === "12mp.jpeg")!;
  const persist = await mkdtemp(join(tmpdir(), "beit-edge-bench-"));
  const rows: string[][] = [];
  const notes: string[] = [];
  try {
    await publishLocal(dir, persist);
    const port = await freePort();
    const serve = () =>
      serveLocal({
        root,
        stages: manifest.stages.length,
        persistTo: persist,
        port,
        configDir: join(persist, "configs"),
        prebundle: true,
        readyTimeoutMs: 300_000,
        // Not /healthz, which warms every stage: the first classify must meet fresh stage isolates.
        readyPath: "/openapi.json",
      });

    // The model alone, in this process: the same shard files in onnxruntime-web (Node, 1 thread),
    // run interleaved with the warm service requests below.
    await initNodeCodecs();
    const pixels = (await imageToPixelValues(small.bytes, manifest.preprocess)).pixels;
    const local = await loadLocalModel(dir);
    await local.run(pixels);

    // 1. Cold: fresh isolates, empty Cache API, shards in R2 only.
    let svc = await serve();
    type Phases = Record<
      "manifestMs" | "fetchMs" | "verifyMs" | "createMs" | "primeMs" | "totalMs",
      number
    > & {
      origin: string;
    };
    let statusJson: {
      stages: {
        index: number;
        wasmHeapBytes: number;
        peakWasmHeapBytes: number;
        estimatedPeakBytes: number;
        lastLoad?: Phases | null;
      }[];
    };
    const phaseRows = (label: string, st: typeof statusJson) => {
      for (const s of st.stages) {
        const p = s.lastLoad;
        if (!p) continue;
        rows.push([
          `${label}: stage ${s.index} load inside workerd (${p.origin})`,
          `${p.totalMs} ms`,
          `manifest ${p.manifestMs}, fetch ${p.fetchMs}, sha256 ${p.verifyMs}, session create ${p.createMs}, priming run ${p.primeMs} ms`,
        ]);
      }
    };
    const warm224: number[] = [];
    const warmBig: number[] = [];
    let cold: Awaited<ReturnType<typeof timedClassify>>;
    try {
      cold = await timedClassify(svc.url, small.bytes, "image/webp");
      process.stderr.write(`cold: ${cold.ms.toFixed(0)} ms\n`);
      rows.push([
        "cold start (fresh isolates, shards in R2 only), 224x224 WebP",
        `${cold.ms.toFixed(0)} ms`,
        cold.timing,
      ]);
      // Warm 224x224: each service request followed by one run of the same stage files in
      // onnxruntime-web in this process (interleaved, so both see the same machine state).
      const nStages = manifest.stages.length;
      const parts: Record<string, number[]> = { run: [], hops: [], decode: [], http: [], node: [] };
      const perStage = manifest.stages.map(() => ({ workerd: [] as number[], node: [] as number[] }));
      for (let i = 0; i < runs; i++) {
        const r = await timedClassify(svc.url, small.bytes, "image/webp");
        warm224.push(r.ms);
        parts.run.push(sumOf(r.t, "run-", nStages));
        parts.hops.push(sumOf(r.t, "stage-", nStages) - sumOf(r.t, "run-", nStages));
        parts.decode.push(r.t.decode ?? 0);
        parts.http.push(r.ms - (r.t.total ?? 0));
        for (let k = 0; k < nStages; k++) perStage[k].workerd.push(r.t[`run-${k}`] ?? 0);
        let x = pixels;
        const n0 = performance.now();
        for (const [k, st] of local.stages.entries()) {
          const s0 = performance.now();
          x = await st.session.run(x, st.input, st.output);
          perStage[k].node.push(performance.now() - s0);
        }
        parts.node.push(performance.now() - n0);
      }
      const p50 = (xs: number[]) => pct(xs, 50);
      rows.push([
        `warm, 224x224 WebP (${small.bytes.byteLength} B), n=${runs}`,
        `p50 ${p50(warm224).toFixed(0)} ms, p95 ${pct(warm224, 95).toFixed(0)} ms`,
        `p50s: stages' session.run in workerd (sum) ${p50(parts.run).toFixed(0)}, hops ${p50(parts.hops).toFixed(0)}, decode+preprocess ${p50(parts.decode).toFixed(0)}, client HTTP + wrangler proxy ${p50(parts.http).toFixed(0)} ms`,
      ]);
      rows.push([
        `model alone in workerd: the stages' session.run as each stage measured it, same requests`,
        `p50 ${p50(parts.run).toFixed(0)} ms`,
        `service warm 224 p50 / this = ${(p50(warm224) / p50(parts.run)).toFixed(2)}x`,
      ]);
      rows.push([
        `model alone in Node: the same ${nStages} stage files in onnxruntime-web, 1 thread, one run after each service request`,
        `p50 ${p50(parts.node).toFixed(0)} ms`,
        `service warm 224 p50 / this = ${(p50(warm224) / p50(parts.node)).toFixed(2)}x; workerd run / Node run = ${(p50(parts.run) / p50(parts.node)).toFixed(2)}x`,
      ]);
      rows.push([
        "per stage, session.run p50: workerd / Node (same interleaved runs)",
        perStage
          .map((ps, k) => `${k}: ${p50(ps.workerd).toFixed(0)} / ${p50(ps.node).toFixed(0)}`)
          .join(", "),
        "ms",
      ]);

      // 12 MP JPEG back to back, with the workerd process's peak RSS growth over the series.
      const pids = await workerdPids(svc.child.pid!);
      const sizes = await Promise.all(pids.map(async (p) => [p, (await memOf(p)).rss] as const));
      const pid = sizes.sort((a, b) => b[1] - a[1])[0]?.[0];
      const before = pid ? await memOf(pid) : null;
      if (pid) await writeFile(`/proc/${pid}/clear_refs`, "5").catch(() => undefined);
      let lastBig = "";
      const bigDecode: number[] = [];
      const bigPre: number[] = [];
      for (let i = 0; i < bigRuns; i++) {
        const r = await timedClassify(svc.url, big.bytes, "image/jpeg");
        warmBig.push(r.ms);
        bigDecode.push((r.t.decode ?? 0) - (r.t.preprocess ?? 0));
        bigPre.push(r.t.preprocess ?? 0);
        lastBig = r.timing;
      }
      const after = pid ? await memOf(pid) : null;
      rows.push([
        `warm, 12 MP JPEG 4032x3024 (${(big.bytes.byteLength / 1e6).toFixed(1)} MB), n=${bigRuns} back to back`,
        `p50 ${pct(warmBig, 50).toFixed(0)} ms, p95 ${pct(warmBig, 95).toFixed(0)} ms`,
        `decode p50 ${p50(bigDecode).toFixed(0)} (max ${Math.max(...bigDecode).toFixed(0)}), preprocess p50 ${p50(bigPre).toFixed(0)} ms; each: ${warmBig.map((m) => m.toFixed(0)).join(", ")}; last: ${lastBig}`,
      ]);
      if (before && after)
        rows.push([
          "workerd process memory over the 12 MP series (gateway decodes; stages already at their peak)",
          `peak RSS growth ${((after.hwm - before.rss) / 1048576).toFixed(0)} MiB`,
          `RSS ${(before.rss / 1048576).toFixed(0)} MiB before, ${(after.rss / 1048576).toFixed(0)} MiB after, peak ${(after.hwm / 1048576).toFixed(0)} MiB`,
        ]);
      try {
        // Concurrency: 1 client, then `clients` loops posting the 224x224 WebP until the total is
        // reached, in the same run.
        const one: number[] = [];
        const t1 = performance.now();
        for (let i = 0; i < 8; i++) one.push((await timedClassify(svc.url, small.bytes, "image/webp")).ms);
        const oneRate = (8 * 1000) / (performance.now() - t1);
        const lat: number[] = [];
        const queue: number[] = [];
        let left = concurrentRequests;
        const t0 = performance.now();
        await Promise.all(
          Array.from({ length: clients }, async () => {
            while (left-- > 0) {
              const r = await timedClassify(svc.url, small.bytes, "image/webp");
              lat.push(r.ms);
              queue.push(r.t.queue ?? 0);
            }
          }),
        );
        const rate = (concurrentRequests * 1000) / (performance.now() - t0);
        rows.push([
          "1 client, 8 x 224x224 WebP",
          `${oneRate.toFixed(2)} images/s, p50 ${pct(one, 50).toFixed(0)} ms, p95 ${pct(one, 95).toFixed(0)} ms`,
          "",
        ]);
        rows.push([
          `${clients} concurrent clients, ${concurrentRequests} x 224x224 WebP (right after)`,
          `${rate.toFixed(2)} images/s, p50 ${pct(lat, 50).toFixed(0)} ms, p95 ${pct(lat, 95).toFixed(0)} ms`,
          `ratio to 1 client ${(rate / oneRate).toFixed(2)} (1.0 = stages serialize, up to ${manifest.stages.length} = full pipeline overlap); queue p50 ${pct(queue, 50).toFixed(0)} ms; restarted-mid-request answers so far: ${restarts}`,
        ]);
      } catch (e) {
        rows.push([`${clients} concurrent clients`, "failed", String(e).slice(0, 200)]);
      }
      // /v1/status right after a cold start hung in wrangler dev once (full-size model, loaded
      // machine), so it is read after the warm runs, with a timeout; the loads are unchanged.
      statusJson = await (
        await fetch(`${svc.url}/v1/status`, { signal: AbortSignal.timeout(120_000) })
      ).json();
      phaseRows("cold", statusJson);
    } catch (e) {
      process.stderr.write(`${svc.output().slice(-3000)}\n`);
      throw e;
    } finally {
      await svc.stop();
    }
    for (const s of statusJson.stages)
      rows.push([
        `stage ${s.index} peak wasm heap (workerd, /v1/status)`,
        `${(s.peakWasmHeapBytes / 1048576).toFixed(1)} MiB = ${((100 * s.peakWasmHeapBytes) / MB128).toFixed(0)}% of 128 MB`,
        `planner estimate ${(s.estimatedPeakBytes / 1048576).toFixed(1)} MiB (max of create: heap + shard buffer + JS, and run: reserved heap + JS)`,
      ]);

    // 2. Warm colo: new isolates, Cache API persisted in the same persist dir.
    svc = await serve();
    try {
      const wc = await timedClassify(svc.url, small.bytes, "image/webp");
      rows.push([
        "warm-colo cold start (fresh isolates, shards in Cache API), 224x224 WebP",
        `${wc.ms.toFixed(0)} ms`,
        wc.timing,
      ]);
      for (let i = 0; i < 3; i++) await timedClassify(svc.url, small.bytes, "image/webp");
      try {
        phaseRows(
          "warm-colo",
          await (await fetch(`${svc.url}/v1/status`, { signal: AbortSignal.timeout(120_000) })).json(),
        );
      } catch (e) {
        notes.push(`warm-colo /v1/status failed: ${String(e)}`);
      }
    } finally {
      await svc.stop();
    }

    // 4. Native reference: the same stage graphs in onnxruntime-node, 1 thread, same pixels.
    const ortNode = await loadOrtNode();
    const sessions: OrtSession[] = [];
    for (const s of manifest.stages)
      sessions.push(
        await ortNode.InferenceSession.create(join(dir, s.graph.file), {
          intraOpNumThreads: 1,
          interOpNumThreads: 1,
          executionProviders: ["cpu"],
        }),
      );
    const native: number[] = [];
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < Math.max(5, Math.min(runs, 10)); i++) {
      const t0 = performance.now();
      let x = pixels;
      for (const [k, s] of manifest.stages.entries()) {
        const out = await sessions[k].run({
          [s.inputs[0].name]: new ortNode.Tensor("float32", x, s.inputs[0].shape),
        });
        x = out[s.outputs[0].name].data as Float32Array;
      }
      native.push(performance.now() - t0);
    }
    const cpu = process.cpuUsage(cpu0);
    const cpuPerWall = (cpu.user + cpu.system) / 1000 / native.reduce((a, b) => a + b, 0);
    for (const s of sessions) await s.release();
    const p50 = pct(native, 50);
    rows.push([
      "same stages, onnxruntime-node native, 1 thread (model only, no HTTP/decode)",
      `p50 ${p50.toFixed(0)} ms`,
      `service warm 224 p50 / native p50 = ${(pct(warm224, 50) / p50).toFixed(2)}x; CPU/wall during native runs ${cpuPerWall.toFixed(2)}`,
    ]);
    await local.release();
    rows.push([
      "machine load (1-min average) at the end",
      (await readFile("/proc/loadavg", "utf8").catch(() => "?")).split(" ")[0],
      "",
    ]);
    if (restarts)
      notes.push(
        `wrangler dev answered "restarted mid-request" ${restarts} time(s); those requests were repeated`,
      );
    notes.push(
      `model ${manifest.model.id} ${manifest.version.slice(0, 12)}, ${manifest.precision}, ${manifest.stages.length} stages, synthetic=${manifest.model.synthetic}`,
    );
  } finally {
    await rm(persist, { recursive: true, force: true });
  }
  const table = [
    "| measurement | result | detail |",
    "|---|---|---|",
    ...rows.map((r) => `| ${r.map((c) => c.replaceAll("|", "/")).join(" | ")} |`),
  ].join("\n");
  const text = `${table}\n\n${notes.join("\n")}\n`;
  process.stdout.write(text);
  await mkdir(join(root, "bench/results"), { recursive: true });
  await writeFile(join(root, "bench/results/service-latency.md"), text);
}

main().catch((e) => {
  process.stderr.write(`error[bench-failed]: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
