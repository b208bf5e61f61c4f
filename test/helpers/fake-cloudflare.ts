/**
 * A local stand-in for the parts of the Cloudflare API that `npm run deploy` uses (through
 * wrangler, which honours CLOUDFLARE_API_BASE_URL, and through our own R2 existence checks), on
 * 127.0.0.1. It keeps R2 buckets and objects and uploaded Worker scripts in memory, records every
 * call in order, and can be told to fail a call (to test that a failed deploy leaves the active
 * model pointer untouched). Answers follow the API's envelope: { success, errors, messages, result }.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

export interface ApiCall {
  method: string;
  /** Path below /client/v4, without the query. */
  path: string;
}

export interface ScriptUpload {
  bytes: number;
  /** The upload's `metadata` part (bindings, main_module, compatibility_date, ...). */
  metadata: { bindings?: { name: string; type: string; service?: string; bucket_name?: string }[] } & Record<
    string,
    unknown
  >;
  /** Names of the module parts (the entry, wasm modules). */
  parts: string[];
}

export interface FakeCloudflare {
  baseUrl: string;
  account: string;
  calls: ApiCall[];
  buckets: Set<string>;
  /** "bucket/key" -> bytes */
  objects: Map<string, Uint8Array>;
  /** Worker name -> its multipart upload (metadata part parsed, part names listed). */
  scripts: Map<string, ScriptUpload>;
  /** Fail (HTTP 500, API error) every call whose "METHOD path" matches, retries included. */
  failOn: RegExp | null;
  close(): Promise<void>;
}

const envelope = (result: unknown) => ({ success: true, errors: [], messages: [], result });
const apiError = (code: number, message: string) => ({
  success: false,
  errors: [{ code, message }],
  messages: [],
  result: null,
});

async function body(req: IncomingMessage): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return new Uint8Array(Buffer.concat(chunks));
}

export async function startFakeCloudflare(
  account = "0123456789abcdef0123456789abcdef",
): Promise<FakeCloudflare> {
  const fake: FakeCloudflare = {
    baseUrl: "",
    account,
    calls: [],
    buckets: new Set(),
    objects: new Map(),
    scripts: new Map(),
    failOn: null,
    close: async () => {},
  };
  const json = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(value));
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://fake");
    const path = url.pathname.replace(/^\/client\/v4/, "");
    const method = req.method ?? "GET";
    const data = await body(req);
    fake.calls.push({ method, path });
    if (fake.failOn?.test(`${method} ${path}`)) return json(res, 500, apiError(10013, "injected failure"));
    const acct = `/accounts/${account}`;
    if (!path.startsWith(acct)) return json(res, 404, apiError(7003, `unknown account in ${path}`));
    const rest = path.slice(acct.length);
    let m: RegExpExecArray | null;
    if (method === "POST" && rest === "/r2/buckets") {
      const { name } = JSON.parse(new TextDecoder().decode(data)) as { name: string };
      if (fake.buckets.has(name))
        return json(
          res,
          409,
          apiError(10004, "The bucket you tried to create already exists, and you own it."),
        );
      fake.buckets.add(name);
      return json(res, 200, envelope({ name, creation_date: new Date().toISOString() }));
    }
    m = /^\/r2\/buckets\/([^/]+)$/.exec(rest);
    if (m && method === "GET") {
      if (!fake.buckets.has(m[1]))
        return json(res, 404, apiError(10006, "The specified bucket does not exist."));
      return json(
        res,
        200,
        envelope({ name: m[1], creation_date: "2026-01-01T00:00:00Z", location: "WEUR" }),
      );
    }
    m = /^\/r2\/buckets\/([^/]+)\/objects\/(.+)$/.exec(rest);
    if (m) {
      const [, bucket, rawKey] = m;
      const key = rawKey.split("/").map(decodeURIComponent).join("/");
      if (!fake.buckets.has(bucket))
        return json(res, 404, apiError(10006, "The specified bucket does not exist."));
      const id = `${bucket}/${key}`;
      if (method === "PUT") {
        fake.objects.set(id, data);
        return json(res, 200, envelope({ key, size: data.byteLength }));
      }
      if (method === "GET") {
        const obj = fake.objects.get(id);
        if (!obj) return json(res, 404, apiError(10007, "The specified key does not exist."));
        res.writeHead(200, { "content-type": "application/octet-stream" });
        return res.end(obj);
      }
    }
    m = /^\/workers\/services\/([^/]+)$/.exec(rest);
    if (m && method === "GET") {
      const name = m[1];
      if (!fake.scripts.has(name))
        return json(res, 404, apiError(10090, "workers.api.error.service_not_found"));
      return json(
        res,
        200,
        envelope({
          id: name,
          default_environment: { environment: "production", script: { id: name, tag: `tag-${name}` } },
        }),
      );
    }
    m = /^\/workers\/scripts\/([^/]+)$/.exec(rest);
    if (m && method === "PUT") {
      const name = m[1];
      const form = await new Response(data, {
        headers: { "content-type": req.headers["content-type"] ?? "" },
      }).formData();
      const metadata = JSON.parse(String(form.get("metadata") ?? "{}")) as ScriptUpload["metadata"];
      const parts = [...form.keys()].filter((k) => k !== "metadata");
      fake.scripts.set(name, { bytes: data.byteLength, metadata, parts });
      return json(
        res,
        200,
        envelope({ id: name, etag: `etag-${name}`, deployment_id: `dep-${name}`, startup_time_ms: 1 }),
      );
    }
    if (/^\/workers\/scripts\/[^/]+\/deployments$/.test(rest) && method === "GET")
      return json(res, 200, envelope({ deployments: [] }));
    if (rest === "/workers/subdomain") return json(res, 200, envelope({ subdomain: "beit-edge-test" }));
    if (/^\/workers\/scripts\/[^/]+\/subdomain$/.test(rest))
      return json(res, 200, envelope({ enabled: true, previews_enabled: true }));
    if (/^\/workers\/scripts\/[^/]+\/(schedules|routes)$/.test(rest))
      return json(res, 200, envelope(method === "GET" ? [] : { schedules: [] }));
    return json(res, 404, apiError(7000, `not emulated: ${method} ${path}`));
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => json(res, 500, apiError(1, String(e))));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  fake.baseUrl = `http://127.0.0.1:${port}/client/v4`;
  fake.close = () => new Promise<void>((r) => server.close(() => r()));
  return fake;
}
