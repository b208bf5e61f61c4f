/**
 * @module
 * Hostile-input benchmark (issue #13), against `wrangler dev` as `npm start` runs it (gateway + every
 * stage Worker in one workerd process, local R2, ALLOW_LOOPBACK_FETCH=true as npm start sets it), with
 * the tiny synthetic model:
 *
 * 1. corpus: a few dozen crafted requests (zlib bombs, tiny-chunk PNGs, oversized WebP bitstreams,
 *    many-scan JPEGs, 12-bit JPEG, multipart floods, URL batches, SSRF URLs in many notations, bad
 *    redirects, oversized and mistyped bodies, bad top_k) one at a time; per request: status, code,
 *    wall time and the workerd process's peak RSS growth (VmHWM reset through /proc/PID/clear_refs
 *    before each request), then /healthz and a valid classify;
 * 2. retained memory: RSS before and after big transient decodes (12 MP JPEGs, a 16 MP PNG), and
 *    after 10 s idle;
 * 3. a broken deploy: a new model version published with one shard blob truncated in R2: classify
 *    503 + Retry-After and /healthz 503, then the shard is rewritten and both recover;
 * 4. load: N clients x S seconds mixing valid images (3 of 4 requests) and hostile ones; status
 *    counts, connection errors, valid requests' p50/p95, RSS sampled every second.
 *
 *   npx tsx bench/hostile-corpus.ts [--clients 16] [--seconds 60] [--skip-load] [--skip-corpus]
 *
 * Writes a Markdown report to bench/results/hostile-corpus.md and prints it.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { publishLocal, withLocalBucket } from "../scripts/lib/local-r2.ts";
import { freePort, serveLocal } from "../scripts/lib/serve.ts";
import { shardKey } from "../src/shards/layout.ts";
import {
  animatedWebp,
  animatedWebpLaterFrame,
  jpegWithScans,
  pngBomb,
  pngFromZlib,
  pngManyChunks,
  stillWebpVp8x,
} from "../test/helpers/hostile.ts";
import { encodePng, testPicture } from "../test/helpers/png.ts";
import { buildTinyModel } from "../test/helpers/tiny-model.ts";
import { imageBenchInputs } from "./image-inputs.ts";
import { flag, pct } from "./lib/cli.ts";
import { memOf, workerdPids } from "./lib/workerd-proc.ts";

const root = resolve(import.meta.dirname, "..");
const MiB = 1024 * 1024;

const has = (name: string) => process.argv.includes(`--${name}`);

// ---- the workerd process and its memory ----

/** Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs). */
async function resetPeak(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, "5").catch(() => undefined);
}

// ---- requests ----

interface Case {
  name: string;
  /** What the request is, for the table. */
  what: string;
  make: () => Promise<RequestInit & { path?: string }>;
}

interface Outcome {
  status: number;
  code: string;
  ms: number;
  bodyBytes: number;
  retryAfter: string | null;
}

async function send(
  base: string,
  init: RequestInit & { path?: string },
  timeoutMs = 30_000,
): Promise<Outcome> {
  const t0 = performance.now();
  const res = await fetch(`${base}${init.path ?? "/v1/classify"}`, {
    method: "POST",
    ...init,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  const ms = performance.now() - t0;
  let code = "";
  if (res.headers.get("content-type")?.includes("problem+json")) {
    try {
      code = (JSON.parse(text) as { code?: string }).code ?? "";
    } catch {}
  } else if (res.status >= 400) code = `not ours: ${text.replace(/\s+/g, " ").slice(0, 60)}`;
  return { status: res.status, code, ms, bodyBytes: text.length, retryAfter: res.headers.get("retry-after") };
}

const json = (v: unknown): RequestInit => ({
  body: JSON.stringify(v),
  headers: { "content-type": "application/json" },
});
const raw = (bytes: Uint8Array, type: string): RequestInit => ({
  body: bytes,
  headers: { "content-type": type },
});

function multipartTextParts(n: number): RequestInit {
  const b = "hostileboundary";
  const part = `--${b}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n`;
  return {
    body: `${part.repeat(n)}--${b}--\r\n`,
    headers: { "content-type": `multipart/form-data; boundary=${b}` },
  };
}

/** A loopback image host the gateway may fetch (ALLOW_LOOPBACK_FETCH=true, as in npm start). */
async function imageHost(): Promise<{ url: string; server: Server }> {
  const big = new Uint8Array(31 * MiB);
  const server = createServer((req, res) => {
    const path = req.url ?? "/";
    if (path.startsWith("/big-chunked")) {
      res.writeHead(200, { "content-type": "image/png" });
      res.end(big);
    } else if (path.startsWith("/big")) {
      res.writeHead(200, { "content-type": "image/png", "content-length": String(big.length) });
      res.end(big);
    } else if (path === "/bad-location") {
      res.writeHead(302, { location: "http://[" });
      res.end();
    } else if (path === "/to-metadata") {
      res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" });
      res.end();
    } else if (path === "/to-private") {
      res.writeHead(302, { location: "http://[::ffff:192.168.1.1]/" });
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${port}`, server };
}

async function corpus(svcUrl: string, hostUrl: string, valid: Uint8Array): Promise<Case[]> {
  const c = (name: string, what: string, make: () => Promise<RequestInit & { path?: string }>): Case => ({
    name,
    what,
    make,
  });
  const ssrf = [
    "http://127.0.0.1:1/x.png",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://10.0.0.1/",
  ];
  return [
    c("png-bomb-1x1-1GiB", "1x1 IHDR, IDAT inflates to 1 GiB", async () =>
      raw(await pngBomb(1, 1, 1024 * MiB), "image/png"),
    ),
    c("png-bomb-1x1-2GiB", "1x1 IHDR, IDAT inflates to 2 GiB", async () =>
      raw(await pngBomb(1, 1, 2048 * MiB), "image/png"),
    ),
    c("png-bomb-2000x2000-1GiB", "2000x2000 IHDR (12 MB of rows), IDAT inflates to 1 GiB", async () =>
      raw(await pngBomb(2000, 2000, 1024 * MiB), "image/png"),
    ),
    c("png-1M-tiny-chunks", "1,080,000 IDAT chunks of 0-1 bytes", async () =>
      raw(pngManyChunks(600, 600, 1_080_000), "image/png"),
    ),
    c("png-60k-chunks", "60,000 IDAT chunks (under maxChunks), 600x600", async () =>
      raw(pngManyChunks(600, 600, 60_000), "image/png"),
    ),
    c("png-header-16384x16384", "IHDR 16384x16384 (268 MP), 10 bytes of data", async () =>
      raw(pngFromZlib(16384, 16384, new Uint8Array(10)), "image/png"),
    ),
    c(
      "webp-anim-vp8l-8000",
      "animated WebP: 1x1 canvas and frame, VP8L bitstream 8000x8000 (102 B)",
      async () => raw(animatedWebp([1, 1], [1, 1], [8000, 8000]), "image/webp"),
    ),
    c("webp-anim-vp8l-12000", "animated WebP: 1x1 canvas and frame, VP8L 12000x12000", async () =>
      raw(animatedWebp([1, 1], [1, 1], [12000, 12000]), "image/webp"),
    ),
    c(
      "webp-anim-frame-12000",
      "animated WebP: frame header and bitstream 12000x12000 on a 1x1 canvas",
      async () => raw(animatedWebp([1, 1], [12000, 12000], [12000, 12000]), "image/webp"),
    ),
    c("webp-anim-later-frame", "animated WebP: 2nd frame's VP8L 9000x9000 behind a 64x64 header", async () =>
      raw(animatedWebpLaterFrame(), "image/webp"),
    ),
    c("webp-vp8x-still-mismatch", "still VP8X 1x1 canvas, VP8L 8000x8000", async () =>
      raw(stillWebpVp8x([1, 1], [8000, 8000]), "image/webp"),
    ),
    c("jpeg-100k-scans", "progressive JPEG header + 100,000 tiny scans (1.4 MB)", async () =>
      raw(jpegWithScans(100_000), "image/jpeg"),
    ),
    c("jpeg-101-scans", "progressive JPEG, 101 scans", async () => raw(jpegWithScans(101), "image/jpeg")),
    c("jpeg-12-bit", "12-bit extended JPEG (SOF1)", async () =>
      raw(jpegWithScans(1, { sof: 0xc1, precision: 12 }), "image/jpeg"),
    ),
    c("jpeg-lossless", "lossless JPEG (SOF3)", async () =>
      raw(jpegWithScans(1, { sof: 0xc3 }), "image/jpeg"),
    ),
    c("jpeg-truncated", "12 MP JPEG cut in half", async () => {
      const inputs = await imageBenchInputs();
      const j = inputs.find((i) => i.name === "12mp.jpeg")!.bytes;
      return raw(j.subarray(0, j.length >> 1), "image/jpeg");
    }),
    c("multipart-559k-parts", "multipart/form-data of 559,000 text parts (32 MiB limit)", async () =>
      multipartTextParts(559_000),
    ),
    c("multipart-33-parts", "multipart of 33 text parts", async () => multipartTextParts(33)),
    c("url-batch-8x31MiB", "JSON url: 8 loopback URLs of 31 MiB each", async () =>
      json({ url: Array.from({ length: 8 }, (_, i) => `${hostUrl}/big?${i}`) }),
    ),
    c("url-batch-8x31MiB-chunked", "same, no Content-Length", async () =>
      json({ url: Array.from({ length: 8 }, (_, i) => `${hostUrl}/big-chunked?${i}`) }),
    ),
    ...ssrf.map((u) => c(`ssrf ${u}`, "URL to a private/metadata address", async () => json({ url: u }))),
    c("ssrf-redirect-metadata", "public-looking host redirecting to 169.254.169.254", async () =>
      json({ url: `${hostUrl}/to-metadata` }),
    ),
    c("ssrf-redirect-mapped-v6", "redirect to [::ffff:192.168.1.1]", async () =>
      json({ url: `${hostUrl}/to-private` }),
    ),
    c("url-bad-location", "redirect Location: http://[", async () =>
      json({ url: `${hostUrl}/bad-location` }),
    ),
    c("url-self", "URL of the service itself (loopback allowed in npm start)", async () =>
      json({ url: `${svcUrl}/openapi.json` }),
    ),
    c("url-2MB", "a 2 MB URL", async () => json({ url: `https://example.com/${"a".repeat(2_000_000)}` })),
    c("top-k-1e400", "JSON parameters.top_k: 1e400", async () => ({
      body: `{"inputs":"${Buffer.from(valid).toString("base64")}","parameters":{"top_k":1e400}}`,
      headers: { "content-type": "application/json" },
    })),
    c("text-plain-30MiB", "30 MiB text/plain body", async () => raw(new Uint8Array(30 * MiB), "text/plain")),
    c("body-33MiB", "33 MiB image/png body (over MAX_BODY_BYTES)", async () =>
      raw(new Uint8Array(33 * MiB), "image/png"),
    ),
    c("random-bytes", "1 MiB of random bytes as image/jpeg", async () =>
      raw(
        Uint8Array.from({ length: MiB }, (_, i) => (i * 2654435761) >>> 24),
        "image/jpeg",
      ),
    ),
  ];
}

// ---- main ----

async function main(): Promise<void> {
  const clients = Number(flag("clients", "16"));
  const seconds = Number(flag("seconds", "60"));
  const work = await mkdtemp(join(tmpdir(), "beit-edge-hostile-"));
  const lines: string[] = [];
  const log = (s: string) => {
    lines.push(s);
    process.stdout.write(`${s}\n`);
  };
  const host = await imageHost();
  let svc: Awaited<ReturnType<typeof serveLocal>> | null = null;
  try {
    process.stderr.write("building the tiny synthetic model ...\n");
    const { manifest, out } = await buildTinyModel(3, work);
    const state = join(work, "state");
    await publishLocal(out, state);
    svc = await serveLocal({
      root,
      stages: manifest.stages.length,
      persistTo: state,
      port: await freePort(),
      configDir: join(work, "configs"),
      prebundle: true,
      readyTimeoutMs: 300_000,
    });
    // wrangler dev runs the Workers in one workerd process (a second, small one may exist); the one
    // with the most memory after a warm classify is the runtime.
    const valid0 = encodePng(224, 224, testPicture(224, 224, 7));
    await send(svc.url, raw(valid0, "image/png"));
    const pids = await workerdPids(svc.child.pid!);
    if (pids.length === 0) throw new Error("found no workerd process");
    const sizes = await Promise.all(pids.map(async (p) => [p, (await memOf(p)).rss] as const));
    const pid = sizes.sort((a, b) => b[1] - a[1])[0][0];
    process.stderr.write(
      `workerd processes (pid, RSS): ${sizes.map(([p, r]) => `${p} ${(r / MiB).toFixed(0)} MiB`).join(", ")}\n`,
    );
    const valid = encodePng(224, 224, testPicture(224, 224, 7));
    const validReq = () => raw(valid, "image/png");
    const warm = await send(svc.url, validReq());
    if (warm.status !== 200) throw new Error(`warm-up classify answered ${warm.status}`);

    log(`# Hostile-input benchmark (${new Date().toISOString().slice(0, 16)}Z)\n`);
    log(
      `tiny synthetic model (${manifest.stages.length} stages), wrangler dev (one workerd process for gateway + stages), local R2, ALLOW_LOOPBACK_FETCH=true; machine shared with other jobs (2 cores), so times are noisy.\n`,
    );

    if (!has("skip-corpus")) {
      const cases = await corpus(svc.url, host.url, valid);
      log("## Corpus, one request at a time\n");
      log("| input | what | status | code | time ms | peak RSS growth MiB | answer bytes |");
      log("|---|---|---|---|---|---|---|");
      let worstGrowth = 0;
      let worstMs = 0;
      let fivexx = 0;
      for (const k of cases) {
        const init = await k.make();
        const before = await memOf(pid);
        await resetPeak(pid);
        let o: Outcome;
        try {
          o = await send(svc.url, init);
        } catch (e) {
          o = {
            status: 0,
            code: `client error: ${String(e).slice(0, 40)} (${String((e as { cause?: unknown }).cause ?? "").slice(0, 60)})`,
            ms: Number.NaN,
            bodyBytes: 0,
            retryAfter: null,
          };
        }
        const after = await memOf(pid);
        const growth = Math.max(0, after.hwm - before.rss) / MiB;
        worstGrowth = Math.max(worstGrowth, growth);
        worstMs = Math.max(worstMs, o.ms);
        if (o.status >= 500 || o.status === 0) fivexx++;
        log(
          `| ${k.name} | ${k.what} | ${o.status} | ${o.code} | ${o.ms.toFixed(0)} | ${growth.toFixed(1)} | ${o.bodyBytes} |`,
        );
      }
      const health = await send(svc.url, { method: "GET", path: "/healthz" });
      const after = await send(svc.url, validReq());
      log(
        `\n${cases.length} requests: ${fivexx} answered 5xx or failed; slowest ${worstMs.toFixed(0)} ms; largest peak RSS growth ${worstGrowth.toFixed(1)} MiB. Afterwards /healthz ${health.status}, a valid classify ${after.status} in ${after.ms.toFixed(0)} ms.\n`,
      );

      // Retained memory after big transient decodes.
      const inputs = await imageBenchInputs();
      const big = inputs.find((i) => i.name === "12mp.jpeg")!.bytes;
      const prog = inputs.find((i) => i.name === "12mp-progressive.jpeg")!.bytes;
      const png16 = encodePng(2900, 2900, testPicture(2900, 2900, 2)); // 8.4 MP, under 20 MiB
      const r0 = (await memOf(pid)).rss;
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++)
        for (const [b, t] of [
          [big, "image/jpeg"],
          [prog, "image/jpeg"],
          [png16, "image/png"],
        ] as const)
          statuses.push(
            await send(svc.url, raw(b, t)).then(
              (o) => o.status,
              () => 0,
            ),
          );
      const r1 = (await memOf(pid)).rss;
      await new Promise((r) => setTimeout(r, 10_000));
      const r2 = (await memOf(pid)).rss;
      log("## Memory retained after big transient decodes\n");
      log(
        `3 x (12 MP baseline JPEG, 12 MP progressive JPEG, 8.4 MP PNG), statuses ${[...new Set(statuses)].join("/")}: workerd RSS ${(r0 / MiB).toFixed(0)} MiB before, ${(r1 / MiB).toFixed(0)} MiB right after (+${((r1 - r0) / MiB).toFixed(0)}), ${(r2 / MiB).toFixed(0)} MiB after 10 s idle (+${((r2 - r0) / MiB).toFixed(0)}). RSS is the whole workerd process (gateway and ${manifest.stages.length} stage isolates).\n`,
      );

      // A broken deploy: a new version with one shard truncated in R2.
      log("## A shard truncated in R2\n");
      const brokenModel = await buildTinyModel(4, work);
      const broken = brokenModel.manifest;
      const t0 = Date.now();
      await publishLocal(brokenModel.out, state);
      const target =
        broken.stages[broken.stages.length - 1].weights ?? broken.stages[broken.stages.length - 1].graph;
      const blobs = join(state, "v3/r2/beit-edge-models/blobs");
      let truncated = "";
      for (const f of await readdir(blobs)) {
        const st = await stat(join(blobs, f));
        if (st.size === target.bytes && st.mtimeMs >= t0 - 1000) truncated = join(blobs, f);
      }
      if (!truncated) throw new Error("could not find the shard blob to truncate");
      await truncate(truncated, Math.floor(target.bytes / 3));
      await new Promise((r) => setTimeout(r, 6_000)); // past POINTER_TTL_S
      const b1 = await send(svc.url, validReq());
      const h1 = await send(svc.url, { method: "GET", path: "/healthz" });
      const shardBytes = new Uint8Array(await readFile(join(brokenModel.out, target.file)));
      await withLocalBucket(state, (bucket) =>
        bucket.put(shardKey(target.file), shardBytes).then(() => undefined),
      );
      let b2 = await send(svc.url, validReq());
      for (let i = 0; i < 10 && b2.status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 1000));
        b2 = await send(svc.url, validReq());
      }
      const h2 = await send(svc.url, { method: "GET", path: "/healthz" });
      log(
        `new version published with ${target.file} truncated to a third: classify ${b1.status} ${b1.code} (Retry-After ${b1.retryAfter}), /healthz ${h1.status}; after rewriting the shard: classify ${b2.status}, /healthz ${h2.status}.\n`,
      );
    }

    if (!has("skip-load")) {
      const hostile = [
        async () => raw(await pngBomb(1, 1, 256 * MiB), "image/png"),
        async () => raw(animatedWebp([1, 1], [1, 1], [8000, 8000]), "image/webp"),
        async () => raw(jpegWithScans(100_000), "image/jpeg"),
        async () => raw(pngManyChunks(300, 300, 200_000), "image/png"),
        async () => multipartTextParts(50_000),
        async () => json({ url: "http://0x7f000001/" }),
        async () => json({ url: `${host.url}/to-metadata` }),
        async () => raw(jpegWithScans(1, { sof: 0xc1, precision: 12 }), "image/jpeg"),
      ];
      const prepared = await Promise.all(hostile.map((h) => h()));
      const validInputs = [
        raw(valid, "image/png"),
        raw((await imageBenchInputs()).find((i) => i.name === "224.webp")!.bytes, "image/webp"),
      ];
      // wrangler dev can restart its runtime once in the first seconds after it reports ready (every
      // in-flight request then gets its "Your worker restarted mid-request" 503); let that pass.
      await new Promise((r) => setTimeout(r, 15_000));
      for (let i = 0; i < 10; i++)
        await send(svc.url, validInputs[i % 2], 60_000).catch((e) =>
          process.stderr.write(`warm-up request failed: ${String(e)}\n`),
        );
      const statuses = new Map<string, number>();
      const validMs: number[] = [];
      let connErrors = 0;
      const rss: number[] = [];
      const end = Date.now() + seconds * 1000;
      const sampler = setInterval(() => {
        memOf(pid).then(
          (m) => rss.push(m.rss),
          () => undefined,
        );
      }, 1000);
      let n = 0;
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          for (let i = 0, h = c; Date.now() < end; i++) {
            const isValid = (i + c) % 4 !== 0;
            const init = isValid ? validInputs[i % validInputs.length] : prepared[h++ % prepared.length];
            try {
              const o = await send(svc!.url, init, 60_000);
              n++;
              const key = `${isValid ? "valid" : "hostile"} ${o.status}${o.code ? ` ${o.code}` : ""}`;
              statuses.set(key, (statuses.get(key) ?? 0) + 1);
              if (isValid && o.status === 200) validMs.push(o.ms);
            } catch {
              connErrors++;
            }
          }
        }),
      );
      clearInterval(sampler);
      if ([...statuses.keys()].some((k) => k.includes("not ours")))
        process.stderr.write(
          `answers not from the service; wrangler dev said:\n${svc.output().slice(-4000)}\n`,
        );
      const health = await send(svc.url, { method: "GET", path: "/healthz" });
      log(`## Load: ${clients} clients x ${seconds} s, 3 of 4 requests valid\n`);
      log(`${n} requests, ${connErrors} connection errors. Answers:\n`);
      log("| answer | count |");
      log("|---|---|");
      for (const [k, v] of [...statuses.entries()].sort()) log(`| ${k} | ${v} |`);
      const q = Math.max(1, Math.floor(rss.length / 4));
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length / MiB;
      log(
        `\nvalid 200s: p50 ${pct(validMs, 50).toFixed(0)} ms, p95 ${pct(validMs, 95).toFixed(0)} ms (n=${validMs.length}). workerd RSS: first quarter mean ${mean(rss.slice(0, q)).toFixed(0)} MiB, last quarter ${mean(rss.slice(-q)).toFixed(0)} MiB, max ${(Math.max(...rss) / MiB).toFixed(0)} MiB; every 10 s: ${rss
          .filter((_, i) => i % 10 === 0)
          .map((r) => (r / MiB).toFixed(0))
          .join(", ")} MiB. /healthz afterwards ${health.status}.\n`,
      );
    }
  } catch (e) {
    if (svc) process.stderr.write(`${svc.output().slice(-3000)}\n`);
    throw e;
  } finally {
    await svc?.stop();
    host.server.close();
    await rm(work, { recursive: true, force: true });
  }
  await mkdir(join(root, "bench/results"), { recursive: true });
  await writeFile(join(root, "bench/results/hostile-corpus.md"), `${lines.join("\n")}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
