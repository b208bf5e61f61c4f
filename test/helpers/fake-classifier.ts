/**
 * @module
 * Fakes for Node unit tests of the classification core and the gateway app: the tiny synthetic
 * model (tiny-model.ts) published to an in-memory R2, stage Workers that speak the stage protocol without ORT,
 * and a decoder that needs no codecs.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { PixelDecoder } from "../../src/classify/index.ts";
import type { ClassifierEnv } from "../../src/edge/env.ts";
import { HEADER_STAGE, HEADER_VERSION, type WarmReport } from "../../src/edge/stage-protocol.ts";
import { publishModel, r2Target } from "../../src/shards/publish.ts";
import { AppError } from "../../src/shared/errors.ts";
import { type Manifest, numel } from "../../src/shared/manifest.ts";
import { MemoryR2 } from "./memory-r2.ts";
import type { TinyModel } from "./tiny-model.ts";

export { buildTinyModel, type TinyModel } from "./tiny-model.ts";

/** A fresh in-memory bucket with `model` published and active. */
export async function bucketWithModel(model: TinyModel): Promise<MemoryR2> {
  const r2 = new MemoryR2();
  await publishModel(
    model.manifest,
    async (f) => new Uint8Array(await readFile(join(model.out, f))),
    r2Target(r2.asBinding()),
  );
  return r2;
}

export interface FakeStageOptions {
  /** This stage answers /run with a 503 problem+json. */
  failStage?: number;
  /** Every call waits this long first. */
  delayMs?: number;
  /** Receives `<path> <stage> <version>` of every call. */
  seen?: string[];
}

/**
 * Fake stage Workers (STAGE_i fetchers): each passes the first input value on; the last one
 * answers logits that peak at label `value` and, less, at `value + 1` (so the top labels tell
 * which image went through).
 */
export function fakeStages(manifest: Manifest, opts: FakeStageOptions = {}): Record<string, Fetcher> {
  return Object.fromEntries(
    manifest.stages.map((s, i) => [
      `STAGE_${i}`,
      {
        async fetch(req: Request): Promise<Response> {
          const path = new URL(req.url).pathname;
          opts.seen?.push(`${path} ${req.headers.get(HEADER_STAGE)} ${req.headers.get(HEADER_VERSION)}`);
          if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
          if (path === "/warm") {
            const r: WarmReport = {
              stage: i,
              version: manifest.version,
              loadMs: 3,
              origin: "r2",
              wasmHeapBytes: 0,
            };
            return Response.json(r);
          }
          if (path === "/status")
            return Response.json({
              stage: i,
              version: manifest.version,
              warm: true,
              wasmHeapBytes: 1,
              jsHeapBytes: null,
              peakWasmHeapBytes: 1,
            });
          if (i === opts.failStage)
            return Response.json(
              {
                type: "x",
                title: "Service Unavailable",
                status: 503,
                detail: "stage down",
                code: "model-unavailable",
              },
              { status: 503, headers: { "content-type": "application/problem+json" } },
            );
          const x = new Float32Array(await req.arrayBuffer());
          const out = new Float32Array(numel(s.outputs[0].shape));
          if (i === manifest.stages.length - 1) {
            out.fill(-10);
            out[x[0]] = 10;
            out[(x[0] + 1) % out.length] = 5;
          } else out.fill(x[0]);
          return new Response(new Uint8Array(out.buffer));
        },
      } as unknown as Fetcher,
    ]),
  );
}

/** Decodes to pixels filled with the image's first byte (255: undecodable); width 10 + that byte. */
export const fakeDecoder: PixelDecoder = async (bytes, spec) => {
  if (bytes[0] === 255) throw new AppError("undecodable-image", 400, "not an image");
  const pixels = new Float32Array(3 * spec.size.height * spec.size.width).fill(bytes[0]);
  return { pixels, width: 10 + bytes[0], height: 20, format: "png" };
};

/** An env with a fresh bucket holding `model`, the given stage fetchers and vars (pointer TTL 0). */
export async function fakeEnv<E extends ClassifierEnv = ClassifierEnv>(
  model: TinyModel,
  stages: Record<string, Fetcher>,
  vars: Partial<E> = {},
): Promise<E> {
  return { MODELS: (await bucketWithModel(model)).asBinding(), POINTER_TTL_S: "0", ...stages, ...vars } as E;
}
