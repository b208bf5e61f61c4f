/**
 * @module
 * Generates the wrangler configs for a model with N stages: one gateway config binding exactly
 * STAGE_0..STAGE_{N-1}, and one config per stage Worker (same code, names beit-edge-stage-<i>).
 * `npm start`, `npm run deploy`, the e2e test and the benchmarks all use these, so the number of
 * Workers always follows the manifest.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";

export const GATEWAY_NAME = "beit-edge";
export const BUCKET_NAME = "beit-edge-models";
export const COMPATIBILITY_DATE = "2026-04-20";
/** Most stages the gateway binds (mirrors src/worker/env.ts MAX_STAGES). */
export const MAX_STAGES = 8;

/** Worker name of stage `i`. */
export function stageName(i: number): string {
  return `${GATEWAY_NAME}-stage-${i}`;
}

export interface ConfigOptions {
  /** Repository root (where src/ lives). */
  root: string;
  /** Directory the JSON configs are written to. */
  outDir: string;
  stages: number;
  bucketName?: string;
  /** Extra gateway vars (strings). */
  vars?: Record<string, string>;
}

export interface GeneratedConfigs {
  gateway: string;
  stages: string[];
}

const wasmRules = [{ type: "CompiledWasm", globs: ["**/*.wasm"], fallthrough: false }];

/** Writes gateway.json and stage-<i>.json under `outDir`; returns their paths (gateway first). */
export async function writeWranglerConfigs(opts: ConfigOptions): Promise<GeneratedConfigs> {
  if (opts.stages < 1 || opts.stages > MAX_STAGES)
    throw new Error(`a model must have 1..${MAX_STAGES} stages to be served, this one has ${opts.stages}`);
  const root = resolve(opts.root);
  const bucket = opts.bucketName ?? BUCKET_NAME;
  await mkdir(opts.outDir, { recursive: true });
  const r2 = [{ binding: "MODELS", bucket_name: bucket }];
  const gateway = {
    name: GATEWAY_NAME,
    main: join(root, "src/worker/gateway.ts"),
    compatibility_date: COMPATIBILITY_DATE,
    vars: {
      REQUEST_DEADLINE_MS: "60000",
      MAX_BODY_BYTES: "33554432",
      MAX_BATCH: "8",
      POINTER_TTL_S: "5",
      ALLOW_LOOPBACK_FETCH: "false",
      ...opts.vars,
    },
    r2_buckets: r2,
    services: Array.from({ length: opts.stages }, (_, i) => ({
      binding: `STAGE_${i}`,
      service: stageName(i),
    })),
    rules: wasmRules,
  };
  const gatewayPath = join(opts.outDir, "gateway.json");
  await writeFile(gatewayPath, `${JSON.stringify(gateway, null, 2)}\n`);
  const stages: string[] = [];
  for (let i = 0; i < opts.stages; i++) {
    const cfg = {
      name: stageName(i),
      main: join(root, "src/worker/stage.ts"),
      compatibility_date: COMPATIBILITY_DATE,
      r2_buckets: r2,
      rules: wasmRules,
    };
    const p = join(opts.outDir, `stage-${i}.json`);
    await writeFile(p, `${JSON.stringify(cfg, null, 2)}\n`);
    stages.push(p);
  }
  return { gateway: gatewayPath, stages };
}
