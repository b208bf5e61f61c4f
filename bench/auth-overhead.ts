/**
 * @module
 * Overhead of keys + quota + usage on a warm classification (issue #20): the tiny model served by
 * the real `wrangler dev` (gateway, stage Workers, the KeyQuota Durable Object, local D1), `--n`
 * warm requests (default 200) of one small PNG, one after another, timed from the client:
 *
 * 1. without: the service open (no key anywhere: no key lookup beyond the isolate's cached
 *    "no keys" answer, no quota call);
 * 2. with: an issued key (created with `npm run keys`, limits far above the load): the key's row
 *    (isolate cache), the scope check, two quota Durable Object calls (the request, the image).
 *
 * The usage write (D1 upsert + Analytics Engine point) runs in both, after the response
 * (`waitUntil`). Prints the medians and their difference. One run, in this order (the open phase
 * must come first: once a key exists the service is closed).
 *
 *   npm run bench:auth [-- --n 200]
 */
import { execFileSync } from "node:child_process";
import { join, resolve } from "node:path";
import { testPng } from "../test/helpers/png.ts";
import { startTinyService } from "../test/helpers/tiny-service.ts";
import { flag, pct } from "./lib/cli.ts";

const root = resolve(import.meta.dirname, "..");

async function timed(url: string, body: Uint8Array, key: string | null): Promise<number> {
  const t = performance.now();
  const res = await fetch(`${url}/v1/classify`, {
    method: "POST",
    body,
    headers: { "content-type": "image/png", ...(key && { authorization: `Bearer ${key}` }) },
    signal: AbortSignal.timeout(30_000),
  });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`classify answered ${res.status}`);
  return performance.now() - t;
}

async function main(): Promise<void> {
  const n = Number(flag("n", "200"));
  const png = testPng(32, 32, 3);
  const svc = await startTinyService({ seed: 17 });
  try {
    for (let i = 0; i < 20; i++) await timed(svc.url, png, null);
    const without: number[] = [];
    for (let i = 0; i < n; i++) without.push(await timed(svc.url, png, null));
    const made = JSON.parse(
      execFileSync(
        process.execPath,
        [
          join(root, "node_modules/tsx/dist/cli.mjs"),
          join(root, "scripts/keys.ts"),
          "create",
          "--name",
          "bench",
          "--rpm",
          "1000000",
          "--images-per-minute",
          "1000000",
          "--json",
          "--persist",
          join(svc.dir, "state"),
        ],
        { cwd: root, encoding: "utf8" },
      ),
    ) as { key: string };
    // The kept-alive connection may have been closed by the server while the CLI ran: the first
    // warm-up request can meet a closed socket; it is sent again.
    await timed(svc.url, png, made.key).catch(() => timed(svc.url, png, made.key));
    for (let i = 0; i < 20; i++) await timed(svc.url, png, made.key);
    const withKey: number[] = [];
    for (let i = 0; i < n; i++) withKey.push(await timed(svc.url, png, made.key));
    const a = pct(without, 50);
    const b = pct(withKey, 50);
    console.log(
      `auth + quota + usage overhead, tiny model, ${n} warm sequential requests each (${new Date().toISOString()}):`,
    );
    console.log(`  without (open service)  median ${a.toFixed(2)} ms  p95 ${pct(without, 95).toFixed(2)} ms`);
    console.log(`  with an issued key      median ${b.toFixed(2)} ms  p95 ${pct(withKey, 95).toFixed(2)} ms`);
    console.log(`  overhead (median difference) ${(b - a).toFixed(2)} ms per request`);
  } catch (e) {
    console.error(svc.service.output().slice(-5000));
    throw e;
  } finally {
    await svc.stop();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
