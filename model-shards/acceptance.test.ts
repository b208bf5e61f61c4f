/**
 * `npm run model -- acceptance`: the command checks what it promises on a checkpoint whose answer
 * the test knows (a tiny synthetic one, expectations from the float64 reference), refuses a wrong
 * expectation, says it skipped in one line when the hub cannot be reached, and, where the hub can
 * be reached, passes on microsoft/beit-base-patch16-224-pt22k-ft22k itself.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import { EXIT_SKIPPED, EXPECTED, runAcceptance } from "./acceptance.ts";
import { loadCheckpoint } from "./checkpoint/index.ts";
import { synthesize, writeCheckpoint } from "./checkpoint/synth.ts";
import { argmax } from "./metrics.ts";
import { referenceForward } from "./reference.ts";

const root = resolve(import.meta.dirname, "..");
const picture = join(root, "test/fixtures/images/baseline-444.jpeg");
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "beit-acceptance-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as { port: number }).port;
  await new Promise((ok) => server.close(ok));
  return port;
}

describe("acceptance on a checkpoint whose answer is known", () => {
  it("passes when fp32 matches the expected logits and int8 keeps the top class within the target", async () => {
    const ckDir = join(dir, "ck");
    await writeCheckpoint(ckDir, synthesize({ size: "tiny", seed: 8, init: "outlier" }), "safetensors");
    const ck = await loadCheckpoint(ckDir);
    await initNodeCodecs();
    const { pixels } = await imageToPixelValues(new Uint8Array(await readFile(picture)), ck.preprocess);
    const ref = referenceForward(ck.config, ck.tensors, pixels);
    const expected = { topClass: argmax(ref), logits: Array.from(ref.slice(0, 3)), tolerance: 1e-3 };
    const ok = await runAcceptance({
      from: ckDir,
      image: picture,
      out: join(dir, "ok"),
      maxRelL2: 0.05,
      expect: expected,
    });
    expect(ok.status).toBe("passed");
    expect(ok.lines.filter((l) => l.startsWith("ok  "))).toHaveLength(4);

    const wrong = await runAcceptance({
      from: ckDir,
      image: picture,
      out: join(dir, "wrong"),
      maxRelL2: 0.05,
      expect: { ...expected, logits: expected.logits.map((v) => v + 0.01) },
    });
    expect(wrong.status).toBe("failed");
    expect(wrong.lines[0]).toMatch(/^FAIL fp32 logits\[:3\] = .*\(off by 1\.0\de-2/);
  });
});

describe("acceptance where the hub cannot be reached", () => {
  it("exits 3 with one line that says nothing was checked", async () => {
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const run = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", "model-shards/cli.ts", "acceptance", "--out", join(dir, "offline")],
      {
        cwd: root,
        env: {
          ...process.env,
          HF_ENDPOINT: endpoint,
          HF_HUB_CACHE: join(dir, "empty-cache"),
          HF_HUB_OFFLINE: "",
        },
      },
    ).then(
      () => ({ code: 0, stdout: "" }),
      (e: { code: number; stdout: string }) => e,
    );
    expect(run.code).toBe(EXIT_SKIPPED);
    const lines = run.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^acceptance: SKIPPED, nothing was checked \(the Hugging Face hub is not reachable: .*127\.0\.0\.1/,
    );
  }, 60_000);
});

/** Whether the hub answers (HF_ENDPOINT honoured), within 5 s. */
async function hubReachable(): Promise<string | null> {
  const endpoint = (process.env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/+$/, "");
  const url = `${endpoint}/${EXPECTED.repo}/resolve/main/config.json`;
  try {
    const res = await fetch(url, {
      method: "HEAD",
      headers: process.env.HF_TOKEN ? { authorization: `Bearer ${process.env.HF_TOKEN}` } : {},
      signal: AbortSignal.timeout(5000),
    });
    return res.ok || res.status === 302 || res.status === 307 ? null : `${url} answered ${res.status}`;
  } catch (e) {
    return `${url}: ${(e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message}`;
  }
}

const unreachable = await hubReachable();
if (unreachable)
  console.log(
    `acceptance on ${EXPECTED.repo} skipped: the Hugging Face hub is not reachable here (${unreachable})`,
  );

describe.skipIf(unreachable !== null)(`acceptance on ${EXPECTED.repo} (needs the hub)`, () => {
  it("fp32 gives Hugging Face's logits and class 2397, int8 the same class within the target", async () => {
    const result = await runAcceptance({ out: join(dir, "real"), maxRelL2: 0.05, log: console.log });
    console.log(result.lines.join("\n"));
    expect(result.status).toBe("passed");
  }, 1_800_000);
});
