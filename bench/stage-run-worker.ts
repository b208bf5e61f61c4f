/**
 * @module
 * A minimal Worker holding one stage session, for bench/stage-run-workerd.ts: POST /graph and
 * POST /weights?path= load it (as the stage Worker would, minus R2), POST /run?out= runs it on the
 * body (float32 [1, 197, 768]) and answers the session.run time measured inside workerd.
 */
import ortWasm from "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm";
import { createStageSession, initOrt, type StageSession } from "../src/inference/ort.ts";

let graph: Uint8Array | null = null;
let session: StageSession | null = null;
const spec = { name: "hidden_states", shape: [1, 197, 768], dtype: "float32" as const };

export default {
  async fetch(req: Request): Promise<Response> {
    const u = new URL(req.url);
    await initOrt({ wasmModule: ortWasm });
    if (u.pathname === "/graph") {
      graph = new Uint8Array(await req.arrayBuffer());
      return new Response("ok");
    }
    if (u.pathname === "/weights") {
      const data = new Uint8Array(await req.arrayBuffer());
      if (!graph) return new Response("POST /graph first", { status: 400 });
      session = await createStageSession(
        graph,
        { path: u.searchParams.get("path")!, data },
        { graphOptimizationLevel: (u.searchParams.get("level") ?? "all") as "all" | "disabled" },
      );
      return new Response("ok");
    }
    const x = new Float32Array(await req.arrayBuffer());
    const outSpec = { ...spec, name: u.searchParams.get("out") ?? "" };
    const t0 = Date.now();
    await session?.run(x, spec, outSpec);
    return Response.json({ ms: Date.now() - t0 });
  },
};
