/**
 * Every shell example of README.md and docs/*.md runs as printed (issue #21), so the docs cannot
 * drift from the product again.
 *
 * The server is the one the docs describe, started the way a user starts it: `npm start -- --size
 * tiny` (the tiny synthetic model: the examples' shapes and statuses are the full-size model's,
 * their labels differ), on a free port, with nothing exported but an empty API_KEY (auth off, as
 * on a fresh clone) and a WEBHOOK_SECRET the receiver here verifies with. Beside it runs the
 * webhook receiver the docs start with `npm run webhook-receiver -- --port 9000`.
 *
 * Each ```sh block runs in document order per file, from the project root, under
 * `bash -e -o pipefail`, with `localhost:8787` and the receiver's `127.0.0.1:9000` rewritten to the
 * ports picked here, and `curl` run with `--fail-with-body`, so an HTTP error fails the example. A
 * block preceded on the line right before its fence by `<!-- doc-test: skip (reason) -->` is not
 * run; the skipped blocks are printed with their reasons. docs/operations.md is included whenever
 * it exists (every docs/*.md is).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../scripts/lib/serve.ts";
import { type RunningReceiver, startWebhookReceiver } from "../scripts/lib/webhook-receiver.ts";
import { type DocBlock, docBlocks, docFiles, ROOT } from "./helpers/doc-blocks.ts";

const run = promisify(execFile);
const SECRET = `whsec_${randomBytes(24).toString("base64")}`;

let dir = "";
let port = 0;
let server: ChildProcess | null = null;
let output = "";
let receiver: RunningReceiver | null = null;

function rewrite(code: string): string {
  return code
    .replaceAll("localhost:8787", `localhost:${port}`)
    .replaceAll("127.0.0.1:8787", `127.0.0.1:${port}`)
    .replaceAll("127.0.0.1:9000", `127.0.0.1:${receiver!.port}`)
    .replaceAll("localhost:9000", `localhost:${receiver!.port}`);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "beit-doc-examples-"));
  // curl as the docs print it, plus --fail-with-body: an HTTP error status fails the example.
  const { stdout: realCurl } = await run("bash", ["-c", "command -v curl"]);
  await writeFile(join(dir, "curl"), `#!/bin/sh\nexec ${realCurl.trim()} --fail-with-body "$@"\n`);
  await chmod(join(dir, "curl"), 0o755);
  receiver = await startWebhookReceiver({ port: 0, secrets: [SECRET] });
  // Ports are picked free and then bound by another process (wrangler, workerd); on a busy
  // machine another program can take one in between. Such a start is tried once more.
  for (let attempt = 1; ; attempt++) {
    try {
      await startServer();
      break;
    } catch (e) {
      if (attempt >= 2 || !/Address already in use|EADDRINUSE|port-in-use/.test(String(e))) throw e;
    }
  }
}, 300_000);

async function startServer(): Promise<void> {
  output = "";
  port = await freePort();
  server = spawn(
    "npm",
    ["start", "--", "--size", "tiny", "--port", String(port), "--persist", join(dir, "state")],
    {
      cwd: ROOT,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, API_KEY: "", WEBHOOK_SECRET: SECRET, FORCE_COLOR: "0" },
    },
  );
  server.stdout?.on("data", (d) => {
    output += String(d);
  });
  server.stderr?.on("data", (d) => {
    output += String(d);
  });
  const deadline = Date.now() + 240_000;
  while (!/Ready in \d+ s/.test(output)) {
    if (server.exitCode !== null) throw new Error(`npm start exited:\n${output}`);
    if (Date.now() > deadline) throw new Error(`npm start was not ready in 240 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

afterAll(async () => {
  if (server?.pid && server.exitCode === null) {
    const gone = new Promise<void>((r) => server!.once("exit", () => r()));
    try {
      process.kill(-server.pid, "SIGTERM");
    } catch {}
    await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
  }
  await receiver?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 30_000);

const files = docFiles();

describe("the docs' shell examples", () => {
  it("finds examples to run and says why each skipped one is skipped", () => {
    const all = files.flatMap((f) => docBlocks(f)).filter((b) => b.info === "sh");
    const skipped = all.filter((b) => b.skip !== undefined);
    expect(all.length - skipped.length).toBeGreaterThanOrEqual(10);
    console.log(
      `doc examples: ${all.length - skipped.length} run, ${skipped.length} skipped:\n${skipped
        .map((b) => `  ${b.file}:${b.line} (${b.skip})`)
        .join("\n")}`,
    );
  });

  for (const file of files) {
    const blocks = docBlocks(file).filter((b) => b.info === "sh" && b.skip === undefined);
    if (blocks.length === 0) continue;
    it(`runs every example of ${blocks[0].file} as printed`, async () => {
      const failures: string[] = [];
      for (const b of blocks) {
        const failure = await runBlock(b);
        if (failure) failures.push(failure);
      }
      expect(failures).toEqual([]);
    }, 300_000);
  }

  it("delivered the webhooks the examples asked for, verified with the secret", async () => {
    const deadline = Date.now() + 60_000;
    while (!receiver!.deliveries.some((d) => d.verified) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 500));
    expect(receiver!.deliveries.filter((d) => d.verified).length).toBeGreaterThanOrEqual(1);
    expect(receiver!.deliveries.filter((d) => !d.verified)).toEqual([]);
  }, 90_000);
});

async function runBlock(b: DocBlock): Promise<string | null> {
  try {
    await run("bash", ["-e", "-o", "pipefail", "-c", rewrite(b.code)], {
      cwd: ROOT,
      timeout: 180_000,
      maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, API_KEY: "", FORCE_COLOR: "0" },
    });
    return null;
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string; message: string };
    return `${b.file}:${b.line} exited ${err.code ?? "?"}:\n${b.code}\n--- stdout\n${(err.stdout ?? "").slice(-1500)}\n--- stderr\n${(err.stderr ?? err.message).slice(-1500)}`;
  }
}
