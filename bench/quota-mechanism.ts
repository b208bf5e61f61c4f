/**
 * @module
 * Which quota mechanism (issue #20), measured: per-call cost of charging one request through the
 * KeyQuota Durable Object (exact counts, remaining and reset known) against Cloudflare's Rate
 * Limiting binding (per location, approximate, allowed-or-not only) and an in-isolate Map (the
 * floor, no cross-isolate limit at all), inside one local workerd (Miniflare, the project's
 * --single-threaded-gc flags), warm, `--n` calls each (default 200) in 5 rounds: the mean per call
 * of each round and their median.
 *
 *   npx tsx bench/quota-mechanism.ts [--n 200]
 *
 * Locally a Durable Object call never leaves the process; on Cloudflare it goes to the colo that
 * hosts the key's object (same colo for a client that stays near it; otherwise a network round
 * trip). The figure here is the local floor of that cost, not the production one.
 */
import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Miniflare } from "miniflare";
import { useLocalWorkerdFlags } from "../scripts/lib/workerd-wrapper.ts";
import { COMPATIBILITY_DATE, QUOTA_CLASS } from "../src/topology.ts";
import { flag, pct } from "./lib/cli.ts";

const root = resolve(import.meta.dirname, "..");

async function main(): Promise<void> {
  const n = Number(flag("n", "200"));
  await useLocalWorkerdFlags(root);
  const out = join(root, "bench/results/quota-mechanism");
  await mkdir(out, { recursive: true });
  const config = join(out, "wrangler.toml");
  await writeFile(
    config,
    `name = "quota-bench"\nmain = "${join(root, "bench/quota-mechanism-worker.ts")}"\ncompatibility_date = "${COMPATIBILITY_DATE}"\n`,
  );
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", join(out, "dist"), "-c", config], {
    stdio: "pipe",
    cwd: root,
  });
  const mf = new Miniflare({
    modules: true,
    scriptPath: join(out, "dist/quota-mechanism-worker.js"),
    compatibilityDate: COMPATIBILITY_DATE,
    durableObjects: { QUOTA: QUOTA_CLASS },
    ratelimits: { RL: { simple: { limit: 1_000_000, period: 60 } } },
  });
  try {
    // Warm-up: first calls create the object and compile the code paths.
    await (await mf.dispatchFetch("http://bench/?n=20")).json();
    const times = (await (await mf.dispatchFetch(`http://bench/?n=${n}`)).json()) as Record<string, number[]>;
    console.log(
      `quota mechanism: mean ms per call over ${n} warm calls, 5 rounds, one local workerd (${new Date().toISOString()}):`,
    );
    for (const [name, xs] of Object.entries(times))
      console.log(
        `  ${name.padEnd(18)} median of rounds ${pct(xs, 50).toFixed(3)} ms   rounds ${xs.map((x) => x.toFixed(3)).join(" ")}`,
      );
  } finally {
    await mf.dispose();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
