/**
 * CLI smoke test: the commands a user types, as child processes, on the tiny synthetic model.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const exec = promisify(execFile);
let root: string;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(
      process.execPath,
      ["--import", "tsx", "model-shards/cli.ts", ...args],
      {
        cwd: process.cwd(),
      },
    );
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "beit-cli-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("npm run model", () => {
  it("synth, build, verify and run a tiny model end to end", async () => {
    const ck = join(root, "ck");
    const out = join(root, "out");
    expect((await cli("synth", "--size", "tiny", "--out", ck, "--format", "safetensors")).code).toBe(0);
    const build = await cli("build", "--from", ck, "--out", out, "--precision", "int8");
    expect(build.code).toBe(0);
    expect(build.stderr).toMatch(/100%/);
    expect(build.stdout).toMatch(/int8 shards of ck \(1 stages/);
    const verify = await cli("verify", out);
    expect(verify.stdout).toMatch(/^ok: /);
    const pixels = new Float32Array(3 * 224 * 224).map((_, i) => Math.cos(i * 0.01));
    await writeFile(join(root, "px.bin"), new Uint8Array(pixels.buffer));
    const run = await cli("run", "--model", out, "--pixels", join(root, "px.bin"), "--top", "3");
    expect(run.code).toBe(0);
    const result = JSON.parse(run.stdout) as {
      logits_head: number[];
      top: { index: number; label: string; score: number }[];
    };
    expect(result.logits_head).toHaveLength(8);
    expect(result.top).toHaveLength(3);
    expect(result.top[0].score).toBeGreaterThanOrEqual(result.top[1].score);
    expect(result.top[0].label).toMatch(/^synthetic-/);
    const plan = await cli("plan", "--config", "base");
    expect(plan.stdout).toMatch(/stage budget 112\.0 MiB/);
  });

  it("fails with error[code] and leaves no output directory", async () => {
    const ck = join(root, "ck-bad");
    expect((await cli("synth", "--size", "tiny", "--out", ck, "--format", "bin")).code).toBe(0);
    await rm(join(ck, "pytorch_model.bin"));
    const missing = await cli("build", "--from", ck, "--out", join(root, "never"));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error\[checkpoint-incomplete\]: /m);
    const badRun = await cli("run", "--model", join(root, "nowhere"), "--pixels", "x");
    expect(badRun.code).toBe(1);
    expect(badRun.stderr).toMatch(/^error\[/);
    const usage = await cli("build", "--from", ck);
    expect(usage.stderr).toMatch(/^error\[invalid-arguments\]: --out DIR is required/);
    // An option the graph cannot express: refused, nothing written.
    const ck2 = join(root, "ck-unsupported");
    expect((await cli("synth", "--size", "tiny", "--out", ck2, "--format", "safetensors")).code).toBe(0);
    const config = JSON.parse(await readFile(join(ck2, "config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(
      join(ck2, "config.json"),
      JSON.stringify({ ...config, use_shared_relative_position_bias: true }),
    );
    const unsupported = await cli("build", "--from", ck2, "--out", join(root, "never2"));
    expect(unsupported.code).toBe(1);
    expect(unsupported.stderr).toMatch(/^error\[[a-z-]+\]: .*use_shared_relative_position_bias/m);
    expect((await readdir(root)).filter((f) => f.includes("never"))).toEqual([]);
  });
});
