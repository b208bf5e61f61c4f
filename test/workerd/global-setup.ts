/**
 * @module
 * Node-side setup of the workerd test project: builds three tiny synthetic int8 models
 * (test/helpers/tiny-model.ts: several stages each, under a proportionally small stage budget), bundles every Worker kind of
 * src/topology.ts the way `wrangler deploy` does, from the configs scripts/lib/wrangler-configs.ts
 * generates (the auxiliary Workers of vitest.config.ts run those bundles), makes test images, and
 * computes the expected classifications with onnxruntime-web in Node (the runner, which opens the
 * stages with the same loader as the stage Worker).
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import type { TestProject } from "vitest/node";
import { loadLocalModel } from "../../model-shards/runner.ts";
import { writeWranglerConfigs } from "../../scripts/lib/wrangler-configs.ts";
import { initNodeCodecs } from "../../src/image/codecs-node.ts";
import { imageToPixelValues } from "../../src/image/index.ts";
import type { Manifest } from "../../src/shared/manifest.ts";
import { MAX_STAGES } from "../../src/topology.ts";
import { testPng } from "../helpers/png.ts";
import { buildTinyModel } from "../helpers/tiny-model.ts";
import type {
  ExpectedResult,
  ModelFixture,
  WorkerBundle,
  WorkerBundles,
  WorkerdFixtures,
} from "./fixtures.ts";

const root = resolve(import.meta.dirname, "../..");
async function buildTiny(
  dir: string,
  seed: number,
): Promise<{ manifest: Manifest; fixture: ModelFixture; out: string }> {
  const { manifest, out } = await buildTinyModel(seed, dir);
  const files: Record<string, string> = {};
  for (const f of await readdir(out))
    if (f !== "manifest.json") files[f] = (await readFile(join(out, f))).toString("base64");
  return {
    manifest,
    out,
    fixture: {
      version: manifest.version,
      manifest: await readFile(join(out, "manifest.json"), "utf8"),
      files,
      stages: manifest.stages.length,
    },
  };
}

async function expectedFor(
  out: string,
  images: Record<string, Uint8Array>,
): Promise<Record<string, ExpectedResult>> {
  const model = await loadLocalModel(out);
  const result: Record<string, ExpectedResult> = {};
  try {
    for (const [name, bytes] of Object.entries(images)) {
      const { pixels } = await imageToPixelValues(bytes, model.manifest.preprocess);
      const top = await model.classify(pixels, 5);
      result[name] = { top: top.map((p) => ({ label: p.label, score: p.score })) };
    }
  } finally {
    await model.release();
  }
  return result;
}

/** Bundles a Worker exactly as `wrangler deploy` would (dry run), into `outDir`. */
async function bundle(config: string, outDir: string): Promise<WorkerBundle> {
  await promisify(execFile)(
    process.execPath,
    [
      join(root, "node_modules/wrangler/bin/wrangler.js"),
      "deploy",
      "--dry-run",
      "--outdir",
      outDir,
      "-c",
      config,
    ],
    { cwd: root, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" } },
  );
  const files = await readdir(outDir);
  const js = files.find((f) => f.endsWith(".js"));
  if (!js) throw new Error(`wrangler produced no .js bundle for ${config}: ${files.join(", ")}`);
  return { dir: outDir, js, wasm: files.filter((f) => f.endsWith(".wasm")) };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t0 = Date.now();
  const dir = await mkdtemp(join(tmpdir(), "beit-edge-workerd-"));
  // Bundles depend only on the code, not on the stage count: one per Worker kind.
  const configs = await writeWranglerConfigs({ root, outDir: join(dir, "configs"), stages: 1 });
  const bundles = Object.fromEntries(
    await Promise.all(
      configs.workers.map(
        async (w) => [w.kind, await bundle(w.path, join(dir, `${w.kind}-bundle`))] as const,
      ),
    ),
  ) as Record<string, WorkerBundle>;
  if (!bundles.gateway || !bundles.stage)
    throw new Error("the topology must have a gateway and a stage Worker");
  project.provide("workerBundles", bundles as WorkerBundles);
  console.log(`workerd global setup: bundled in ${Date.now() - t0} ms`);

  const [a, b, c] = await Promise.all([buildTiny(dir, 1), buildTiny(dir, 2), buildTiny(dir, 3)]);
  if (
    a.fixture.stages !== b.fixture.stages ||
    a.fixture.stages !== c.fixture.stages ||
    a.fixture.stages > MAX_STAGES
  )
    throw new Error("the three tiny test models must share one plan of at most 8 stages");
  // Two JPEGs with the same stored pixels, one tagged EXIF orientation 6 (rotate 90 degrees).
  const fixture = (name: string) =>
    readFile(join(root, "test/fixtures/images", name)).then((b) => new Uint8Array(b));
  const images = {
    gradient: testPng(40, 30, 1),
    wide: testPng(97, 23, 7),
    square: testPng(224, 224, 3),
    exifUpright: await fixture("exif-orientation-1.jpeg"),
    exifRotated: await fixture("exif-orientation-6.jpeg"),
  };
  await initNodeCodecs();
  const fixtures: WorkerdFixtures = {
    modelA: a.fixture,
    modelB: b.fixture,
    modelC: c.fixture,
    images: Object.fromEntries(
      Object.entries(images).map(([k, v]) => [k, Buffer.from(v).toString("base64")]),
    ),
    expected: {
      modelA: await expectedFor(a.out, images),
      modelB: await expectedFor(b.out, images),
      modelC: await expectedFor(c.out, images),
    },
  };
  project.provide("workerdFixtures", fixtures);
  console.log(`workerd global setup: bundles, 3 tiny models and Node references in ${Date.now() - t0} ms`);
  return async () => {
    await rm(dir, { recursive: true, force: true });
  };
}
