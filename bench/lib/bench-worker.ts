/**
 * @module
 * A benchmark Worker in one local workerd isolate: the entry file bundled by wrangler as a deploy
 * would (`.wasm` imports become compiled modules), then started in Miniflare with the project's
 * local workerd flags (--single-threaded-gc, LOCAL_V8_FLAGS in scripts/lib/workerd-wrapper.ts). Used by
 * bench/image-workerd.ts and bench/stage-run-workerd.ts.
 */
import { execFileSync } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { Miniflare } from "miniflare";
import { useLocalWorkerdFlags } from "../../scripts/lib/workerd-wrapper.ts";
import { COMPATIBILITY_DATE } from "../../src/topology.ts";

const benchDir = resolve(import.meta.dirname, "..");

/**
 * Bundles `entry` (a .ts file under bench/) into bench/results/<name>/dist and returns a Miniflare
 * running it; the caller disposes it.
 */
export async function startBenchWorker(entry: string, name: string): Promise<Miniflare> {
  await useLocalWorkerdFlags(resolve(benchDir, ".."));
  const out = join(benchDir, "results", name);
  const dist = join(out, "dist");
  await mkdir(out, { recursive: true });
  const config = join(out, "wrangler.toml");
  await writeFile(
    config,
    `name = "${name}"\nmain = "${entry}"\ncompatibility_date = "${COMPATIBILITY_DATE}"\n`,
  );
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", dist, "-c", config], { stdio: "pipe" });
  const wasm = (await readdir(dist)).filter((f) => f.endsWith(".wasm"));
  // (miniflare's option types are a union the literal below does not narrow.)
  return new Miniflare({
    modules: [
      { type: "ESModule", path: join(dist, basename(entry).replace(/\.ts$/, ".js")) },
      ...wasm.map((f) => ({ type: "CompiledWasm", path: join(dist, f) })),
    ],
    modulesRoot: dist,
    compatibilityDate: COMPATIBILITY_DATE,
  } as unknown as ConstructorParameters<typeof Miniflare>[0]);
}
