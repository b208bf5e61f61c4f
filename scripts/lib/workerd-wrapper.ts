/**
 * @module
 * A wrapper around the local workerd that `wrangler dev` starts, named by miniflare's
 * `MINIFLARE_WORKERD_PATH`, for two things miniflare 4.20260426 has no option for:
 * - V8 flags: it adds `v8Flags` to the binary Cap'n Proto config miniflare pipes to workerd's
 *   stdin. `--single-threaded-gc` ({@link LOCAL_V8_FLAGS}) avoids a livelock of local workerd on
 *   small machines that froze every Worker of `wrangler dev` at once ({@link LOCAL_V8_FLAGS}).
 * - A known port for the user runtime's entry socket (miniflare asks for port 0 and learns the
 *   real one over the control fd, so a fixed one changes nothing for it). wrangler dev's public
 *   port is its proxy Worker, in another workerd, which consumes miniflare's `MF-Route-Override`
 *   header itself; only the user runtime's entry can route `/cdn-cgi/handler/scheduled` to a
 *   Worker other than the first (scripts/lib/local-crons.ts).
 * It then execs the real workerd (same pid, same descriptors, so miniflare's control fd 3 and its
 * signals reach workerd itself).
 *
 * Run as a script it is the config filter: config on stdin, config with the flags on stdout.
 *
 * @example
 * const env = { ...process.env, ...(await workerdWrapper(configDir, root, { v8Flags: LOCAL_V8_FLAGS, userEntryPort: 41234 })) };
 * spawn(process.execPath, [wrangler, "dev", ...], { env });
 */
import { rmSync } from "node:fs";
import { chmod, mkdtemp, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

/**
 * The V8 flags every local workerd gets. `--single-threaded-gc` makes cppgc (workerd's C++ heap)
 * sweep on the main thread only. Without it, on a 2-core machine (one V8 worker thread) the main
 * thread can spin forever in workerd's `IoContext::runImpl` message-loop pump: cppgc's
 * low-priority incremental sweep task re-posts itself without progress while a concurrent sweep
 * job is pending, and that job cannot run because the only worker thread is parked waiting for
 * the main thread to collect garbage (a background Sparkplug compile whose allocation failed).
 */
export const LOCAL_V8_FLAGS = ["--single-threaded-gc"] as const;

/**
 * The V8 flags of the local workerd: {@link LOCAL_V8_FLAGS} unless `BEIT_EDGE_V8_FLAGS` says
 * otherwise (space-separated; empty = none, e.g. to measure without them).
 */
export function localV8Flags(env: Record<string, string | undefined>): string[] {
  const v = env.BEIT_EDGE_V8_FLAGS;
  if (v === undefined) return [...LOCAL_V8_FLAGS];
  return v.split(/\s+/).filter(Boolean);
}

/**
 * The environment variable a generated wrapper's environment names the real workerd in, so that a
 * wrapper made while another one is in force (`serveLocal` inside a test run) execs workerd
 * directly instead of filtering the config twice.
 */
export const REAL_WORKERD_ENV = "BEIT_EDGE_WORKERD";

const WORD = 8;

/**
 * Returns `config` (a workerd `Config` as a Cap'n Proto stream message, as miniflare writes it)
 * with `v8Flags` (pointer 2 of the root struct) set to `flags`. The flags go in a new segment
 * reached by a far pointer, so nothing already in the message moves. Throws when the message is
 * not what miniflare writes (so the wrapper can say so and start workerd unchanged).
 */
export function addV8Flags(config: Uint8Array, flags: readonly string[]): Uint8Array {
  const view = new DataView(config.buffer, config.byteOffset, config.byteLength);
  if (config.byteLength < 8) throw new Error("workerd config: too short for a Cap'n Proto message");
  const segments = view.getUint32(0, true) + 1;
  if (segments > 512) throw new Error(`workerd config: ${segments} segments is not a config message`);
  const headerBytes = Math.ceil((4 + 4 * segments) / WORD) * WORD;
  const sizes: number[] = [];
  for (let i = 0; i < segments; i++) sizes.push(view.getUint32(4 + 4 * i, true));
  const bodyBytes = sizes.reduce((a, b) => a + b, 0) * WORD;
  if (headerBytes + bodyBytes !== config.byteLength)
    throw new Error("workerd config: segment table does not match the message length");
  if (flags.length === 0) return config;

  // The root pointer (segment 0, word 0) must be a plain struct pointer with at least 3 pointers.
  const seg0 = headerBytes;
  const root = view.getBigUint64(seg0, true);
  if ((root & 3n) !== 0n) throw new Error("workerd config: the root pointer is not a struct pointer");
  const offset = Number(BigInt.asIntN(30, (root >> 2n) & 0x3fffffffn));
  const dataWords = Number((root >> 32n) & 0xffffn);
  const pointerCount = Number((root >> 48n) & 0xffffn);
  if (pointerCount < 3) throw new Error("workerd config: the root struct has no v8Flags pointer");
  const slotWord = 1 + offset + dataWords + 2;
  if (slotWord + 1 > sizes[0]) throw new Error("workerd config: the root struct lies outside segment 0");
  const slot = seg0 + slotWord * WORD;
  if (view.getBigUint64(slot, true) !== 0n)
    throw new Error("workerd config: v8Flags are already set; not merging");

  // New segment: [landing pad: list of n pointers][n text pointers][texts, NUL-terminated, padded].
  const texts = flags.map((f) => new TextEncoder().encode(`${f}\0`));
  const textWords = texts.map((t) => Math.ceil(t.byteLength / WORD));
  const newWords = 1 + flags.length + textWords.reduce((a, b) => a + b, 0);
  const seg = new Uint8Array(newWords * WORD);
  const sv = new DataView(seg.buffer);
  const listPointer = (offsetWords: number, elementSize: number, count: number) =>
    (BigInt(count) << 35n) |
    (BigInt(elementSize) << 32n) |
    (BigInt.asUintN(30, BigInt(offsetWords)) << 2n) |
    1n;
  sv.setBigUint64(0, listPointer(0, 6, flags.length), true); // 6 = pointer elements
  let at = 1 + flags.length;
  texts.forEach((t, i) => {
    const pointerWord = 1 + i;
    sv.setBigUint64(pointerWord * WORD, listPointer(at - (pointerWord + 1), 2, t.byteLength), true); // 2 = bytes
    seg.set(t, at * WORD);
    at += textWords[i];
  });

  const outSegments = segments + 1;
  const outHeader = Math.ceil((4 + 4 * outSegments) / WORD) * WORD;
  const out = new Uint8Array(outHeader + bodyBytes + seg.byteLength);
  const ov = new DataView(out.buffer);
  ov.setUint32(0, outSegments - 1, true);
  for (const [i, size] of sizes.entries()) ov.setUint32(4 + 4 * i, size, true);
  ov.setUint32(4 + 4 * segments, newWords, true);
  out.set(config.subarray(headerBytes), outHeader);
  out.set(seg, outHeader + bodyBytes);
  // Far pointer (type 2, single landing pad at word 0) to the new segment.
  const far = (BigInt(segments) << 32n) | 2n;
  ov.setBigUint64(outHeader + slotWord * WORD, far, true);
  return out;
}

export interface WrapperOptions {
  /** V8 flags for every workerd of the process (empty: the config is passed through untouched). */
  v8Flags?: readonly string[];
  /** Port for the entry socket that miniflare would bind to port 0 (the user runtime's). */
  userEntryPort?: number;
}

/**
 * Writes `workerd-wrapper.sh` into `dir` and returns the environment that makes miniflare start
 * workerd through it (`MINIFLARE_WORKERD_PATH`). The wrapper filters stdin through this file
 * (with tsx, from `root`) when there are flags, sets the entry port when one is given, and execs
 * the workerd miniflare would have started; if the filter fails it says so on stderr and starts
 * workerd with the config unchanged.
 */
export async function workerdWrapper(
  dir: string,
  root: string,
  o: WrapperOptions,
): Promise<Record<string, string>> {
  const require = createRequire(join(resolve(root), "package.json"));
  const workerd = require("workerd") as string | { default: string };
  const realWorkerd =
    process.env[REAL_WORKERD_ENV] ??
    process.env.MINIFLARE_WORKERD_PATH ??
    (typeof workerd === "string" ? workerd : workerd.default);
  const tsx = pathToFileURL(require.resolve("tsx/esm")).href;
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const flags = o.v8Flags ?? [];
  const filter =
    flags.length === 0
      ? ""
      : `tmp=$(mktemp) || exit 1
if ! ${q(process.execPath)} --import ${q(tsx)} ${q(join(resolve(root), "scripts/lib/workerd-wrapper.ts"))} ${flags.map(q).join(" ")} > "$tmp.in" 2> "$tmp.err"; then
  echo "beit-edge: could not add V8 flags to the workerd config ($(cat "$tmp.err")); starting workerd without them" >&2
fi
exec 0< "$tmp.in"
rm -f "$tmp" "$tmp.in" "$tmp.err"
`;
  const port =
    o.userEntryPort === undefined
      ? ""
      : `for a do
  shift
  case "$a" in --socket-addr=entry=*:0) a="\${a%:0}:${o.userEntryPort}" ;; esac
  set -- "$@" "$a"
done
`;
  const script = `#!/bin/sh
# Generated by scripts/lib/workerd-wrapper.ts: V8 flags (${flags.join(" ") || "none"}) added to the
# config miniflare pipes to workerd; the entry socket asked for on port 0 gets ${o.userEntryPort ?? "it"}.
${filter}${port}exec ${q(realWorkerd)} "$@"
`;
  const path = join(dir, "workerd-wrapper.sh");
  await writeFile(path, script);
  await chmod(path, 0o755);
  return { MINIFLARE_WORKERD_PATH: path, [REAL_WORKERD_ENV]: realWorkerd };
}

/**
 * Makes every workerd that Miniflare starts from this process, and from the processes it spawns
 * afterwards with its environment (vitest's test workers, wrangler), run through a wrapper with
 * {@link localV8Flags} (`BEIT_EDGE_V8_FLAGS` overrides; empty: nothing changes): it sets
 * `MINIFLARE_WORKERD_PATH` in `process.env`, which miniflare reads each time it spawns workerd.
 * Used by vitest.config.ts (the workerd test pool's Miniflare and every `new Miniflare` of the
 * tests) and the workerd benchmarks. The wrapper lives in a temporary directory removed when the
 * process exits. Returns the flags.
 */
export async function useLocalWorkerdFlags(root: string): Promise<string[]> {
  const flags = localV8Flags(process.env);
  if (flags.length === 0 || process.env[REAL_WORKERD_ENV] !== undefined) return flags;
  const dir = await mkdtemp(join(tmpdir(), "beit-edge-workerd-"));
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  Object.assign(process.env, await workerdWrapper(dir, root, { v8Flags: flags }));
  return flags;
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return new Uint8Array(Buffer.concat(chunks));
}

// As a filter: the config on stdin, the config with the flags (argv) on stdout. On a config it
// cannot edit it copies stdin unchanged and exits 1 (the wrapper then warns).
if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  const input = await readStdin();
  try {
    process.stdout.write(addV8Flags(input, process.argv.slice(2)));
  } catch (e) {
    process.stdout.write(input);
    process.stderr.write(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  }
}
