/**
 * @module
 * A small HTTP image origin (node:http) for `npm start`, the tagging tests and the tagging
 * benchmark: serves files from a directory or from memory the way a static origin or CDN does —
 * strong ETag (sha256 of the bytes), Last-Modified, Content-Length, Accept-Ranges, single byte
 * ranges (206 / 416), If-None-Match / If-Modified-Since (304), If-Range. Per file, validators can
 * be left off or made weak to exercise the proxy's identity rules, and `/status/<code>` answers
 * that status. Every request is recorded (method, path, headers) so tests can count origin hits.
 */
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { extname, join, relative, sep } from "node:path";

export interface OriginFile {
  bytes: Uint8Array;
  contentType: string;
  /** "strong" (default): `"<sha256>"`; "weak": `W/"<sha256>"`; "none": no ETag. */
  etag?: "strong" | "weak" | "none";
  /** Default: a fixed date; null: no Last-Modified. */
  lastModified?: Date | null;
  /** Extra response headers (e.g. cache-control). */
  headers?: Record<string, string>;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface RunningOrigin {
  url: string;
  port: number;
  files: Map<string, OriginFile>;
  requests: RecordedRequest[];
  stop(): Promise<void>;
}

const TYPES: Record<string, string> = {
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".png": "image/png",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8",
  ".html": "text/html; charset=utf-8",
};

/** Content type by file extension (application/octet-stream when unknown). */
export function contentTypeOf(path: string): string {
  return TYPES[extname(path).toLowerCase()] ?? "application/octet-stream";
}

/** Every regular file under `dir`, keyed by its path relative to dir with "/" separators. */
export async function filesOfDir(dir: string): Promise<Map<string, OriginFile>> {
  const out = new Map<string, OriginFile>();
  const walk = async (d: string) => {
    for (const ent of await readdir(d, { withFileTypes: true })) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) await walk(p);
      else if (ent.isFile()) {
        const s = await stat(p);
        out.set(relative(dir, p).split(sep).join("/"), {
          bytes: new Uint8Array(await readFile(p)),
          contentType: contentTypeOf(p),
          lastModified: new Date(Math.floor(s.mtimeMs / 1000) * 1000),
        });
      }
    }
  };
  await walk(dir);
  return out;
}

const FIXED_DATE = new Date("2026-11-30T12:00:00Z");

function etagOf(f: OriginFile): string | null {
  const kind = f.etag ?? "strong";
  if (kind === "none") return null;
  const tag = `"${createHash("sha256").update(f.bytes).digest("hex")}"`;
  return kind === "weak" ? `W/${tag}` : tag;
}

function parseRange(h: string, size: number): [number, number] | "unsatisfiable" | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null;
  let first: number;
  let last: number;
  if (m[1] === "") {
    first = Math.max(0, size - Number(m[2]));
    last = size - 1;
  } else {
    first = Number(m[1]);
    last = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (first >= size || first > last) return "unsatisfiable";
  return [first, last];
}

/**
 * The origin's answer to `req` (fetch API types, so the same logic serves node:http here and the
 * outbound fetches of Workers in the workerd tests).
 */
export function originResponse(files: Map<string, OriginFile>, req: Request): Response {
  const url = new URL(req.url);
  const head = req.method === "HEAD";
  const status = /^\/status\/(\d{3})$/.exec(url.pathname);
  if (status)
    return new Response(head ? null : `status ${status[1]}`, {
      status: Number(status[1]),
      headers: { "content-type": "text/plain" },
    });
  const f = files.get(decodeURIComponent(url.pathname.slice(1)));
  if (!f || (req.method !== "GET" && !head))
    return new Response(f ? "method not allowed" : "not found", {
      status: f ? 405 : 404,
      headers: { "content-type": "text/plain" },
    });
  const etag = etagOf(f);
  const lm = f.lastModified === undefined ? FIXED_DATE : f.lastModified;
  const h: Record<string, string> = { "content-type": f.contentType, "accept-ranges": "bytes", ...f.headers };
  if (etag) h.etag = etag;
  if (lm) h["last-modified"] = lm.toUTCString();
  const inm = req.headers.get("if-none-match");
  const ims = req.headers.get("if-modified-since");
  const weakMatch = (list: string) =>
    etag !== null && list.split(",").some((t) => t.trim().replace(/^W\//, "") === etag.replace(/^W\//, ""));
  if ((inm && weakMatch(inm)) || (!inm && ims && lm && lm.getTime() <= Date.parse(ims)))
    return new Response(null, { status: 304, headers: h });
  const size = f.bytes.byteLength;
  const rangeH = req.headers.get("range");
  const ifRange = req.headers.get("if-range");
  const rangeApplies = rangeH && (!ifRange || (etag !== null && !etag.startsWith("W/") && ifRange === etag));
  if (rangeApplies) {
    const r = parseRange(rangeH, size);
    if (r === "unsatisfiable")
      return new Response(null, { status: 416, headers: { "content-range": `bytes */${size}` } });
    if (r) {
      h["content-range"] = `bytes ${r[0]}-${r[1]}/${size}`;
      h["content-length"] = String(r[1] - r[0] + 1);
      return new Response(head ? null : f.bytes.slice(r[0], r[1] + 1), { status: 206, headers: h });
    }
  }
  h["content-length"] = String(size);
  return new Response(head ? null : f.bytes.slice(), { status: 200, headers: h });
}

async function serve(
  files: Map<string, OriginFile>,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
  const r = originResponse(
    files,
    new Request(`http://origin${req.url ?? "/"}`, { method: req.method, headers }),
  );
  const out: Record<string, string> = {};
  r.headers.forEach((v, k) => {
    out[k] = v;
  });
  res.writeHead(r.status, out);
  res.end(r.body ? new Uint8Array(await r.arrayBuffer()) : undefined);
}

/** Starts the origin on 127.0.0.1 (`port` 0 = any free port). */
export async function startImageOrigin(files: Map<string, OriginFile>, port = 0): Promise<RunningOrigin> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? "GET", path: req.url ?? "/", headers: { ...req.headers } });
    serve(files, req, res).catch((e) => {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(e));
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => ok());
  });
  const addr = server.address();
  const actual = typeof addr === "object" && addr ? addr.port : port;
  return {
    url: `http://127.0.0.1:${actual}/`,
    port: actual,
    files,
    requests,
    stop: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}
