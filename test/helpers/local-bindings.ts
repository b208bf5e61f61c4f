/**
 * @module
 * Miniflare's emulated KV namespaces, R2 buckets and D1 databases (what wrangler dev uses) for
 * Node-side tests, without a Worker of their own: the script only answers 404.
 */
import { Miniflare } from "miniflare";

export interface LocalBindings {
  mf: Miniflare;
  kv(name: string): Promise<KVNamespace>;
  bucket(name: string): Promise<R2Bucket>;
  d1(name: string): Promise<D1Database>;
  dispose(): Promise<void>;
}

/** In-memory bindings with the given names; dispose() frees them. */
export function localBindings(names: {
  kvNamespaces?: string[];
  r2Buckets?: string[];
  d1Databases?: string[];
}): LocalBindings {
  const mf = new Miniflare({
    modules: true,
    script: "export default { fetch() { return new Response(null, { status: 404 }); } }",
    ...names,
  });
  return {
    mf,
    kv: async (name) => (await mf.getKVNamespace(name)) as unknown as KVNamespace,
    bucket: async (name) => (await mf.getR2Bucket(name)) as unknown as R2Bucket,
    d1: async (name) => (await mf.getD1Database(name)) as unknown as D1Database,
    dispose: () => mf.dispose(),
  };
}
