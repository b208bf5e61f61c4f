/**
 * A local stand-in for the parts of the Cloudflare API that `npm run deploy` uses (through
 * wrangler, which honours CLOUDFLARE_API_BASE_URL, and through our own R2 existence checks), on
 * 127.0.0.1. It keeps R2 buckets and objects, queues (and their consumers), D1 databases (the SQL
 * sent to each, with the d1_migrations bookkeeping `wrangler d1 migrations apply` reads back), KV
 * namespaces, R2 event-notification rules, zones (one per name asked for) with their Worker routes
 * and uploaded Worker scripts in memory, records every call in order, and can be told to fail a call (to test that a failed deploy leaves the active
 * model pointer untouched). Answers follow the API's envelope: { success, errors, messages, result }.
 * Lists are paged as the API pages them (`page`, `per_page`, an empty page past the end; see
 * {@link paged}): wrangler's list calls loop on the page number.
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
  metadata: {
    bindings?: { name: string; type: string; service?: string; bucket_name?: string }[];
    migrations?: { old_tag?: string; new_tag?: string; steps?: unknown[] };
  } & Record<string, unknown>;
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
  /** Queue name -> its id and the Worker scripts registered as its consumers. */
  queues: Map<string, { id: string; consumers: string[] }>;
  /** D1 database name -> its uuid and every SQL statement text sent to it, in order. */
  databases: Map<string, { uuid: string; sql: string[] }>;
  /** KV namespace title -> id. */
  kv: Map<string, string>;
  /** R2 bucket -> its event-notification rules (queue name, prefix, actions). */
  notifications: Map<string, { queueId: string; queueName: string; prefix: string; actions: string[] }[]>;
  /** Worker routes as deployed: pattern -> script (through the zone or the script's routes call). */
  routes: Map<string, string>;
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

/**
 * One page of a list, as the API pages it: `page` (from 1) and `per_page` from the query, the
 * rest of the list on later pages, an empty `result` past the end, and `result_info` telling the
 * truth. wrangler's list calls rely on this in different ways (the Cloudflare SDK's iterator asks
 * for the next page until one comes back empty; older helpers stop on a short page or on
 * page x per_page >= total_count), so a stand-in that ignored `page` made `wrangler kv namespace
 * list` ask for page 2, 3, ... forever once one namespace existed.
 */
function paged(url: URL, list: unknown[], defaultPerPage: number) {
  const num = (name: string, fallback: number) => {
    const n = Number(url.searchParams.get(name));
    return Number.isInteger(n) && n >= 1 ? n : fallback;
  };
  const perPage = num("per_page", defaultPerPage);
  const page = num("page", 1);
  const items = list.slice((page - 1) * perPage, page * perPage);
  return {
    ...envelope(items),
    result_info: {
      page,
      per_page: perPage,
      count: items.length,
      total_count: list.length,
      total_pages: Math.ceil(list.length / perPage),
    },
  };
}

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
    queues: new Map(),
    databases: new Map(),
    kv: new Map(),
    notifications: new Map(),
    routes: new Map(),
    failOn: null,
    close: async () => {},
  };
  const json = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(value));
  };
  /** Uploaded versions of existing Workers, by version id, until a deployment makes one live. */
  const versions = new Map<string, { script: string; upload: ScriptUpload }>();
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://fake");
    const path = url.pathname.replace(/^\/client\/v4/, "");
    const method = req.method ?? "GET";
    const data = await body(req);
    fake.calls.push({ method, path });
    if (fake.failOn?.test(`${method} ${path}`)) return json(res, 500, apiError(10013, "injected failure"));
    // Zones: any zone name asked for exists (id = "zone-" + name); its Worker routes.
    if (path === "/zones" && method === "GET") {
      const name = url.searchParams.get("name");
      const list = name ? [{ id: `zone-${name}`, name }] : [];
      return json(res, 200, paged(url, list, 50));
    }
    const z = /^\/zones\/([^/]+)\/workers\/routes$/.exec(path);
    if (z && method === "GET") {
      const list = [...fake.routes].map(([pattern, script]) => ({ id: pattern, pattern, script }));
      return json(res, 200, paged(url, list, 50));
    }
    if (z && method === "POST") {
      const r = JSON.parse(new TextDecoder().decode(data)) as { pattern: string; script: string };
      fake.routes.set(r.pattern, r.script);
      return json(res, 200, envelope({ id: r.pattern, ...r }));
    }
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
    const text = () => new TextDecoder().decode(data);
    let seq = fake.queues.size + fake.databases.size + fake.kv.size;
    const newId = () => (++seq).toString(16).padStart(32, "0");
    // Queues: create (409-style error when it exists), list (optionally by name), consumers.
    if (rest === "/queues" && method === "POST") {
      const { queue_name } = JSON.parse(text()) as { queue_name: string };
      if (fake.queues.has(queue_name))
        return json(res, 409, apiError(11009, `A queue with name ${queue_name} already exists`));
      const q = { id: newId(), consumers: [] };
      fake.queues.set(queue_name, q);
      return json(res, 200, envelope({ queue_id: q.id, queue_name, created_on: new Date().toISOString() }));
    }
    const queueView = (name: string, q: { id: string; consumers: string[] }) => ({
      queue_id: q.id,
      queue_name: name,
      // As the API lists a plain Worker's consumer (`service` / `environment` only for Workers with
      // service environments); a redeploy updates it by consumer_id.
      consumers: q.consumers.map((script) => ({ consumer_id: script, script, type: "worker", settings: {} })),
      producers: [],
    });
    if (rest === "/queues" && method === "GET") {
      // wrangler asks by one or several `name` parameters (getQueue, ensureQueuesExist).
      const names = url.searchParams.getAll("name");
      const list = [...fake.queues]
        .filter(([n]) => !names.length || names.includes(n))
        .map(([n, q]) => queueView(n, q));
      return json(res, 200, paged(url, list, 100));
    }
    m = /^\/queues\/([^/]+)$/.exec(rest);
    if (m && method === "GET") {
      const hit = [...fake.queues].find(([n, q]) => q.id === m![1] || n === m![1]);
      if (!hit) return json(res, 404, apiError(11000, "Queue does not exist"));
      return json(res, 200, envelope(queueView(hit[0], hit[1])));
    }
    m = /^\/queues\/([^/]+)\/consumers(?:\/([^/]+))?$/.exec(rest);
    if (m) {
      const hit = [...fake.queues.values()].find((q) => q.id === m![1]);
      if (!hit) return json(res, 404, apiError(11000, "Queue does not exist"));
      if (method === "POST" || method === "PUT") {
        const b = JSON.parse(text() || "{}") as { script_name?: string; script?: string };
        const script = b.script_name ?? b.script ?? m[2] ?? "";
        if (!hit.consumers.includes(script)) hit.consumers.push(script);
        return json(res, 200, envelope({ script, settings: {} }));
      }
      if (method === "DELETE") {
        hit.consumers = hit.consumers.filter((c) => c !== m![2]);
        return json(res, 200, envelope(null));
      }
      return json(res, 200, envelope(hit.consumers.map((script) => ({ script, settings: {} }))));
    }
    // D1: list, create, and query (the statements are kept; d1_migrations is answered from them).
    if (rest === "/d1/database" && method === "GET") {
      const name = url.searchParams.get("name");
      const list = [...fake.databases]
        .filter(([n]) => !name || n === name)
        .map(([n, d]) => ({
          uuid: d.uuid,
          name: n,
          created_at: "2026-01-01T00:00:00Z",
          version: "production",
        }));
      return json(res, 200, paged(url, list, 1000));
    }
    if (rest === "/d1/database" && method === "POST") {
      const { name } = JSON.parse(text()) as { name: string };
      if (fake.databases.has(name))
        return json(res, 400, apiError(7502, `A database with that name already exists`));
      const d = { uuid: newId(), sql: [] };
      fake.databases.set(name, d);
      return json(res, 200, envelope({ uuid: d.uuid, name, created_at: new Date().toISOString() }));
    }
    m = /^\/d1\/database\/([^/]+)(\/(query|raw))?$/.exec(rest);
    if (m) {
      const hit = [...fake.databases].find(([, d]) => d.uuid === m![1]);
      if (!hit) return json(res, 404, apiError(7404, "The database could not be found"));
      const [name, db] = hit;
      if (!m[2])
        return json(res, 200, envelope({ uuid: db.uuid, name, version: "production", num_tables: 0 }));
      const { sql } = JSON.parse(text()) as { sql: string };
      db.sql.push(sql);
      const applied = db.sql.flatMap((q) =>
        [...q.matchAll(/INSERT INTO (?:"?d1_migrations"?)\s*\(name\)\s*values\s*\('([^']+)'\)/gi)].map(
          (x) => x[1],
        ),
      );
      const rows = /SELECT[\s\S]*FROM\s+"?d1_migrations"?/i.test(sql)
        ? applied.map((n, i) => ({ id: i + 1, name: n, applied_at: "2026-01-01 00:00:00" }))
        : [];
      const meta = {
        changed_db: false,
        changes: 0,
        duration: 1,
        last_row_id: 0,
        rows_read: 0,
        rows_written: 0,
        size_after: 0,
      };
      const result =
        m[3] === "raw"
          ? [
              {
                results: {
                  columns: rows[0] ? Object.keys(rows[0]) : [],
                  rows: rows.map((r) => Object.values(r)),
                },
                success: true,
                meta,
              },
            ]
          : [{ results: rows, success: true, meta }];
      return json(res, 200, envelope(result));
    }
    // KV namespaces: list and create.
    if (rest === "/storage/kv/namespaces" && method === "GET") {
      const list = [...fake.kv].map(([title, id]) => ({ id, title, supports_url_encoding: true }));
      return json(res, 200, paged(url, list, 100));
    }
    if (rest === "/storage/kv/namespaces" && method === "POST") {
      const { title } = JSON.parse(text()) as { title: string };
      if (fake.kv.has(title))
        return json(res, 400, apiError(10014, "A namespace with this account ID and title already exists"));
      const id = newId();
      fake.kv.set(title, id);
      return json(res, 200, envelope({ id, title, supports_url_encoding: true }));
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
    const upload = async (): Promise<ScriptUpload> => {
      const form = await new Response(data, {
        headers: { "content-type": req.headers["content-type"] ?? "" },
      }).formData();
      const metadata = JSON.parse(String(form.get("metadata") ?? "{}")) as ScriptUpload["metadata"];
      const parts = [...form.keys()].filter((k) => k !== "metadata");
      return { bytes: data.byteLength, metadata, parts };
    };
    // The script list: wrangler reads a Worker's Durable Object migration tag from it before a
    // deploy with `migrations`, to send only the new steps.
    if (rest === "/workers/scripts" && method === "GET")
      return json(
        res,
        200,
        envelope(
          [...fake.scripts].map(([id, s]) => ({
            id,
            migration_tag: s.metadata.migrations?.new_tag,
          })),
        ),
      );
    m = /^\/workers\/scripts\/([^/]+)$/.exec(rest);
    if (m && method === "PUT") {
      const name = m[1];
      fake.scripts.set(name, await upload());
      return json(
        res,
        200,
        envelope({ id: name, etag: `etag-${name}`, deployment_id: `dep-${name}`, startup_time_ms: 1 }),
      );
    }
    // An existing Worker is redeployed as a new version (not live yet), then a deployment that
    // sends 100% of traffic to it, which is when it replaces the script.
    m = /^\/workers\/scripts\/([^/]+)\/versions$/.exec(rest);
    if (m && method === "POST") {
      if (!fake.scripts.has(m[1]))
        return json(res, 404, apiError(10007, "This Worker does not exist on your account."));
      const id = `version-${versions.size + 1}`;
      versions.set(id, { script: m[1], upload: await upload() });
      return json(
        res,
        200,
        envelope({ id, resources: { script: { etag: `etag-${id}` } }, startup_time_ms: 1 }),
      );
    }
    m = /^\/workers\/scripts\/([^/]+)\/deployments$/.exec(rest);
    if (m && method === "POST") {
      const body = JSON.parse(text()) as { versions: { version_id: string; percentage: number }[] };
      const live = body.versions.find((v) => v.percentage === 100);
      const version = live && versions.get(live.version_id);
      if (!version || version.script !== m[1])
        return json(
          res,
          400,
          apiError(10021, "The deployment must send 100% of traffic to a version of this Worker."),
        );
      fake.scripts.set(m[1], version.upload);
      return json(res, 200, envelope({ id: `deployment-${live.version_id}`, versions: body.versions }));
    }
    if (/^\/workers\/scripts\/[^/]+\/script-settings$/.test(rest) && method === "PATCH")
      return json(res, 200, envelope({}));
    if (/^\/workers\/scripts\/[^/]+\/deployments$/.test(rest) && method === "GET")
      return json(res, 200, envelope({ deployments: [] }));
    if (rest === "/workers/subdomain") return json(res, 200, envelope({ subdomain: "beit-edge-test" }));
    if (/^\/workers\/scripts\/[^/]+\/subdomain$/.test(rest))
      return json(res, 200, envelope({ enabled: true, previews_enabled: true }));
    m = /^\/workers\/scripts\/([^/]+)\/routes$/.exec(rest);
    if (m && method === "PUT") {
      const list = JSON.parse(text()) as { pattern: string }[];
      for (const r of list) fake.routes.set(r.pattern, m[1]);
      return json(res, 200, envelope(list));
    }
    if (/^\/workers\/scripts\/[^/]+\/(schedules|routes)$/.test(rest))
      return json(res, 200, envelope(method === "GET" ? [] : { schedules: [] }));
    // R2 event notifications: the bucket's rules by queue; PUT adds a queue's rules.
    m = /^\/event_notifications\/r2\/([^/]+)\/configuration(?:\/queues\/([^/]+))?$/.exec(rest);
    if (m && method === "GET" && !m[2]) {
      const rules = fake.notifications.get(m[1]) ?? [];
      return json(
        res,
        200,
        envelope({
          bucketName: m[1],
          queues: rules.map((r) => ({
            queueId: r.queueId,
            queueName: r.queueName,
            rules: [{ ruleId: `rule-${r.queueId}`, prefix: r.prefix, suffix: "", actions: r.actions }],
          })),
        }),
      );
    }
    if (m?.[2] && method === "PUT") {
      const hit = [...fake.queues].find(([, q]) => q.id === m![2]);
      if (!hit) return json(res, 404, apiError(11000, "Queue does not exist"));
      if (!fake.buckets.has(m[1]))
        return json(res, 404, apiError(10006, "The specified bucket does not exist."));
      const { rules } = JSON.parse(text()) as { rules: { prefix?: string; actions: string[] }[] };
      const list = fake.notifications.get(m[1]) ?? [];
      for (const r of rules)
        list.push({ queueId: hit[1].id, queueName: hit[0], prefix: r.prefix ?? "", actions: r.actions });
      fake.notifications.set(m[1], list);
      return json(res, 200, envelope(null));
    }
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
