/**
 * @module
 * Tagging benchmark against `wrangler dev` (gateway, tagging Worker and its consumer, every stage
 * Worker, local R2, KV, D1 and Queues) with the full-size synthetic int8 model (`npm start --
 * --prepare-only` builds it; `--model` takes any shard directory, e.g. the tiny one for latency):
 *
 * - added latency of the tagging Worker over fetching the HTTP origin directly (a node:http static
 *   origin on loopback, scripts/lib/image-origin.ts), time to the full body of a 21 KB JPEG, p50/p95:
 *   hits (tagged: the labels are added) and misses (a URL never seen: lookup, stream, enqueue);
 *   direct, hit and miss requests interleave round by round so background load hits all alike;
 *   a fourth kind, a path the tagging Worker refuses before fetching anything, measures what the
 *   local stack alone costs (wrangler dev's proxy, the gateway's /images/* forwarding);
 * - backfill throughput: N distinct sample JPEGs (640x480) seeded into the local IMAGES bucket,
 *   enqueued through POST /v1/images/backfill (what `npm run tag` does), images/minute until every
 *   one is tagged (each one a model call: no two have the same bytes).
 *
 *   npx tsx bench/tagging.ts [--model DIR] [--runs N] [--backfill N] [--stall-s S]
 *   (--backfill 0: latency only; --stall-s: give up when the backfill makes no progress for S s, 180)
 *
 * Prints a Markdown table (and writes it to bench/results/tagging.md).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type OriginFile, startImageOrigin } from "../scripts/lib/image-origin.ts";
import { publishLocal, readManifest, withLocalBucket } from "../scripts/lib/local-r2.ts";
import { freePort, serveLocal } from "../scripts/lib/serve.ts";
import { BUCKETS } from "../src/topology.ts";
import { flag, pct } from "./lib/cli.ts";
import { sampleJpeg, writeSampleImages } from "./lib/sample-images.ts";

const root = resolve(import.meta.dirname, "..");

/** Requests that got no answer within 30 s (then sent again); reported with the figures. */
let stalls = 0;

async function timedGet(url: string): Promise<{ ms: number; res: Response; body: ArrayBuffer }> {
  for (;;) {
    const t0 = performance.now();
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
      const body = await res.arrayBuffer();
      return { ms: performance.now() - t0, res, body };
    } catch (e) {
      if ((e as Error).name !== "TimeoutError") throw e;
      stalls++;
      process.stderr.write(`a request to ${url} stalled for 30 s (${stalls} so far); sending it again\n`);
    }
  }
}

/** Prints the table and writes it to bench/results/tagging.md. */
async function report(table: string): Promise<void> {
  console.log(table);
  await mkdir(join(root, "bench/results"), { recursive: true });
  await writeFile(join(root, "bench/results/tagging.md"), `${table}\n`);
}

async function main(): Promise<void> {
  const modelDir = resolve(flag("model", join(root, "model-shards/out/synthetic-base")));
  const runs = Number(flag("runs", "100"));
  const backfillN = Number(flag("backfill", "200"));
  const stallS = Number(flag("stall-s", "180"));
  const manifest = await readManifest(modelDir).catch(() => {
    throw new Error(
      `no model at ${modelDir}: run \`npm start -- --prepare-only\` first (or pass --model DIR)`,
    );
  });
  const persistTo = await mkdtemp(join(tmpdir(), "beit-tagging-bench-"));
  const imagesDir = join(root, "bench/results/tagging-images");
  try {
    process.stderr.write(`publishing ${modelDir} into local R2 ...\n`);
    await publishLocal(modelDir, persistTo);
    process.stderr.write(`making ${backfillN} sample JPEGs ...\n`);
    const names = await writeSampleImages(imagesDir, backfillN, { prefix: "bench" });
    await withLocalBucket(
      persistTo,
      async (bucket) => {
        for (const n of names) {
          const b = new Uint8Array(await readFile(join(imagesDir, n)));
          await bucket.put(`backfill/${n}`, b, { httpMetadata: { contentType: "image/jpeg" } });
        }
      },
      BUCKETS.IMAGES,
    );
    const photo = await sampleJpeg(9999);
    const files = new Map<string, OriginFile>([["photo.jpg", { bytes: photo, contentType: "image/jpeg" }]]);
    const origin = await startImageOrigin(files);
    const port = await freePort();
    const svc = await serveLocal({
      root,
      stages: manifest.stages.length,
      persistTo,
      port,
      prebundle: true,
      varsByKind: { tagging: { ORIGIN_URL: origin.url }, "tagging-consumer": { ORIGIN_URL: origin.url } },
    });
    try {
      const direct = `${origin.url}photo.jpg`;
      const proxied = `${svc.url}/images/photo.jpg`;
      // Hit: tag photo.jpg first (one model call, which also loads every stage), then wait for its entry.
      process.stderr.write("tagging photo.jpg (cold stages) ...\n");
      await timedGet(proxied);
      const t0 = Date.now();
      for (;;) {
        const { res } = await timedGet(proxied);
        if (res.headers.has("image-labels")) break;
        if (Date.now() - t0 > 300_000) throw new Error("photo.jpg was not tagged within 5 minutes");
        await new Promise((r) => setTimeout(r, 500));
      }
      process.stderr.write(
        `tagged after ${((Date.now() - t0) / 1000).toFixed(1)} s; ${runs} latency rounds ...\n`,
      );
      const times = {
        direct: [] as number[],
        floor: [] as number[],
        hit: [] as number[],
        miss: [] as number[],
      };
      // The local stack alone: wrangler dev's proxy, the gateway's /images/* forwarding and the
      // tagging Worker refusing a path (400) before any origin fetch or KV read.
      const floorUrl = `${svc.url}/images//refused.example/x.jpg`;
      for (let i = 0; i < 10; i++) await timedGet(direct); // warm the origin and the Workers
      for (let i = 0; i < runs; i++) {
        times.direct.push((await timedGet(direct)).ms);
        const floor = await timedGet(floorUrl);
        if (floor.res.status !== 400) throw new Error(`the floor request answered ${floor.res.status}`);
        times.floor.push(floor.ms);
        const hit = await timedGet(proxied);
        if (!hit.res.headers.has("image-labels")) throw new Error("a hit lost its labels");
        times.hit.push(hit.ms);
        // A URL never seen before: the origin ignores the query, the Worker's identity does not.
        const miss = await timedGet(`${proxied}?miss=${i}`);
        if (miss.res.headers.get("image-labels-status") !== "pending")
          throw new Error("a miss was not a miss");
        times.miss.push(miss.ms);
      }
      const row = (name: string, xs: number[]) =>
        `| ${name} | ${pct(xs, 50).toFixed(2)} | ${pct(xs, 95).toFixed(2)} | ${(pct(xs, 50) - pct(times.direct, 50)).toFixed(2)} |`;
      const latency = [
        `Tagging Worker, wrangler dev, ${manifest.stages.length}-stage ${manifest.model.id} model${manifest.model.synthetic ? " (synthetic)" : ""}, ${runs} rounds, ${photo.byteLength}-byte JPEG (${new Date().toISOString().slice(0, 16)}Z)`,
        "",
        "| request | p50 ms | p95 ms | p50 added over direct |",
        "|---|---|---|---|",
        row("origin directly", times.direct),
        row("local stack only: wrangler dev + gateway forward + tagging Worker, no fetch (400)", times.floor),
        row("through the tagging Worker, hit (labels added)", times.hit),
        row("through the tagging Worker, miss (lookup + enqueue)", times.miss),
        "",
        `Stalled requests (no answer in 30 s, sent again, not in the percentiles): ${stalls}`,
      ];
      if (backfillN === 0) {
        await report(latency.join("\n"));
        return;
      }
      // Printed now as well, so that a backfill that stalls still leaves them.
      process.stderr.write(`${latency.join("\n")}\n\n`);
      // Backfill.
      process.stderr.write(`backfill of ${backfillN} images ...\n`);
      const b0 = Date.now();
      let cursor: string | null = null;
      let enqueued = 0;
      let since: number | undefined;
      do {
        const r = (await (
          await fetch(`${svc.url}/v1/images/backfill`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              bucket: BUCKETS.IMAGES,
              prefix: "backfill/",
              ...(cursor ? { cursor } : {}),
            }),
          })
        ).json()) as { enqueued: number; cursor: string | null; at: number };
        enqueued += r.enqueued;
        cursor = r.cursor;
        since ??= r.at;
      } while (cursor);
      let stats = { tagged: 0, skipped: 0, failed: 0, classified: 0 };
      let lastDone = 0;
      let lastProgress = Date.now();
      for (;;) {
        const polled = await timedGet(`${svc.url}/v1/images/stats?prefix=backfill/&since=${since ?? b0}`);
        stats = JSON.parse(new TextDecoder().decode(polled.body)) as typeof stats;
        const done = stats.tagged + stats.skipped + stats.failed;
        process.stderr.write(`\rbackfill ${done}/${enqueued}`);
        if (done > lastDone) {
          lastDone = done;
          lastProgress = Date.now();
        }
        if (done >= enqueued) break;
        if (Date.now() - b0 > 3_600_000) throw new Error("backfill did not finish within an hour");
        // The local queue can stop dispatching (it did before the --single-threaded-gc fix): say so instead of waiting an hour.
        if (Date.now() - lastProgress > stallS * 1000)
          throw new Error(
            `backfill made no progress for ${stallS} s at ${done}/${enqueued} (${((lastProgress - b0) / 1000).toFixed(1)} s after the backfill started, ${((lastDone / (lastProgress - b0)) * 60000).toFixed(1)} images/minute until then)`,
          );
        await new Promise((r) => setTimeout(r, 1000));
      }
      process.stderr.write("\n");
      const minutes = (Date.now() - b0) / 60000;
      await report(
        [
          ...latency,
          "",
          `Backfill: ${enqueued} distinct 640x480 JPEGs, ${stats.tagged} tagged (${stats.classified} model calls), ${stats.skipped} skipped, ${stats.failed} failed in ${(minutes * 60).toFixed(1)} s = **${(enqueued / minutes).toFixed(1)} images/minute**`,
        ].join("\n"),
      );
    } catch (e) {
      const out = svc.output();
      const queueLines = out.split("\n").filter((l) => /QUEUE|tagging-batch|ERROR|rror:/.test(l));
      process.stderr.write(
        `wrangler dev queue and error lines (last 60):\n${queueLines.slice(-60).join("\n")}\nwrangler dev output (tail):\n${out.slice(-3000)}\n`,
      );
      throw e;
    } finally {
      await svc.stop();
      await origin.stop();
    }
  } finally {
    await rm(persistTo, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
