/**
 * @module
 * The image origin behind the tagging Worker: an HTTP origin or an R2 bucket. Two jobs:
 *
 * - {@link resolveSource}: maps a request path under the configured prefix to exactly one source
 *   on the configured origin, or refuses it. The resolved URL must stay on the origin's host and
 *   under its base path (so `//evil.example/x`, `..` and encoded variants are refused): the Worker
 *   is never an open proxy.
 * - {@link fetchFromOrigin}: a GET or HEAD passed through unchanged. For HTTP only a fixed set of
 *   request headers is forwarded (Accept, Range, If-Range, the If-* conditionals, User-Agent) and
 *   redirects are returned, not followed. For R2 the Worker answers as an HTTP origin would: ETag,
 *   Last-Modified, Content-Length, the object's HTTP metadata, Range -> 206 (If-Range present ->
 *   full 200, which RFC 9110 allows), If-None-Match/If-Modified-Since -> 304, If-Match/
 *   If-Unmodified-Since -> 412, an unsatisfiable range -> 416.
 */
import type { TaggingConfig } from "./config.ts";
import type { ImageSource } from "./identity.ts";

/** Request headers forwarded to an HTTP origin. */
export const FORWARDED_HEADERS = [
  "accept",
  "range",
  "if-range",
  "if-none-match",
  "if-modified-since",
  "if-match",
  "if-unmodified-since",
  "user-agent",
] as const;

/** What the proxy can reach: the HTTP fetcher (global fetch in a Worker) and the IMAGES bucket. */
export interface OriginBindings {
  fetch: typeof fetch;
  bucket?: R2Bucket;
  /** Name of the IMAGES bucket (what R2 event notifications carry as `bucket`). */
  bucketName: string;
}

/** The origin of a Worker's env: global fetch, its IMAGES bucket and that bucket's name. */
export function originBindings(env: { IMAGES?: R2Bucket; IMAGES_BUCKET?: string }): OriginBindings {
  return {
    fetch: (input, init) => fetch(input, init),
    bucket: env.IMAGES,
    bucketName: env.IMAGES_BUCKET ?? "",
  };
}

/**
 * The source for `url` (the request URL), or null when its path is not under the prefix, and a
 * string reason when it is under the prefix but refused.
 */
export function resolveSource(
  url: URL,
  config: TaggingConfig,
  bucketName: string,
): ImageSource | string | null {
  if (!url.pathname.startsWith(config.prefix)) return null;
  const rest = url.pathname.slice(config.prefix.length);
  if (rest === "") return "the path names no image";
  let decoded: string;
  try {
    decoded = decodeURIComponent(rest);
  } catch {
    return "the path is not valid percent-encoding";
  }
  if (
    decoded.split("/").some((seg) => seg === ".." || seg === ".") ||
    /[\\\0]/.test(decoded) ||
    rest.startsWith("/")
  )
    return "the path has dot segments, backslashes, NUL or an empty first segment";
  const origin = config.origin;
  if (origin.kind === "r2") return { kind: "r2", bucket: bucketName, key: origin.keyPrefix + decoded };
  if (origin.kind === "self") return { kind: "origin", url: url.href.replace(/#.*$/, "") };
  const target = new URL(rest + url.search, origin.base);
  if (target.origin !== origin.base.origin || !target.pathname.startsWith(origin.base.pathname))
    return "the path leaves the origin";
  return { kind: "origin", url: target.href };
}

/** An R2 range (offset/length, offset only, or suffix) as first..last byte of an object of `size`. */
function rangeBounds(range: R2Range, size: number): [number, number] {
  if ("suffix" in range && range.suffix !== undefined) return [Math.max(0, size - range.suffix), size - 1];
  const offset = "offset" in range && range.offset !== undefined ? range.offset : 0;
  const length = "length" in range && range.length !== undefined ? range.length : size - offset;
  return [offset, Math.min(size, offset + length) - 1];
}

/** Response headers of an R2 object, as an HTTP origin would send them. */
function objectHeaders(obj: R2Object): Headers {
  // Field by field rather than writeHttpMetadata(): the same code then also runs against
  // Miniflare's R2 from Node (tests, scripts), whose proxy cannot write into a Node Headers.
  const h = new Headers();
  const m = obj.httpMetadata ?? {};
  if (m.contentType) h.set("content-type", m.contentType);
  if (m.contentLanguage) h.set("content-language", m.contentLanguage);
  if (m.contentDisposition) h.set("content-disposition", m.contentDisposition);
  if (m.contentEncoding) h.set("content-encoding", m.contentEncoding);
  if (m.cacheControl) h.set("cache-control", m.cacheControl);
  if (m.cacheExpiry) h.set("expires", new Date(m.cacheExpiry).toUTCString());
  h.set("etag", obj.httpEtag);
  h.set("last-modified", obj.uploaded.toUTCString());
  h.set("accept-ranges", "bytes");
  return h;
}

/** RFC 9110 §13.2.2 preconditions against an object's etag and upload time (HTTP dates: whole seconds). */
function headPrecondition(obj: R2Object, req: Headers): 304 | 412 | null {
  const tags = (v: string) => v.split(",").map((t) => t.trim().replace(/^W\//, ""));
  const ifMatch = req.get("if-match");
  if (ifMatch && ifMatch.trim() !== "*" && !tags(ifMatch).includes(obj.httpEtag)) return 412;
  const ius = req.get("if-unmodified-since");
  if (!ifMatch && ius && obj.uploaded.getTime() > Date.parse(ius) + 999) return 412;
  const inm = req.get("if-none-match");
  if (inm && (inm.trim() === "*" || tags(inm).includes(obj.httpEtag))) return 304;
  const ims = req.get("if-modified-since");
  if (!inm && ims && obj.uploaded.getTime() <= Date.parse(ims) + 999) return 304;
  return null;
}

/** A single `bytes=` range as R2's; null for none, several, or a malformed one (then: full 200). */
function r2Range(req: Headers): R2Range | null {
  const h = req.get("range");
  if (!h || req.has("if-range")) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") return { suffix: Number(m[2]) };
  const offset = Number(m[1]);
  if (m[2] === "") return { offset };
  const last = Number(m[2]);
  return last < offset ? null : { offset, length: last - offset + 1 };
}

const CONDITIONALS = ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"];

async function fetchR2(bucket: R2Bucket, key: string, req: Request): Promise<Response> {
  const notFound = () =>
    new Response("Not Found", { status: 404, headers: { "content-type": "text/plain" } });
  const unsatisfiable = (size: number) =>
    new Response(null, { status: 416, headers: { "content-range": `bytes */${size}` } });
  // HEAD and conditional GETs: evaluate the preconditions on the object's metadata first (R2's
  // own onlyIf takes a single etag, not the lists HTTP allows). A 304/412 then costs one head().
  let etag: string | undefined;
  if (req.method === "HEAD" || CONDITIONALS.some((n) => req.headers.has(n))) {
    const meta = await bucket.head(key);
    if (!meta) return notFound();
    const pre = headPrecondition(meta, req.headers);
    if (pre)
      return new Response(null, {
        status: pre,
        headers: pre === 304 ? objectHeaders(meta) : { etag: meta.httpEtag },
      });
    if (req.method === "HEAD") {
      const h = objectHeaders(meta);
      h.set("content-length", String(meta.size));
      return new Response(null, { status: 200, headers: h });
    }
    etag = meta.etag;
  }
  const range = r2Range(req.headers);
  let obj: R2Object | R2ObjectBody | null;
  try {
    // etagMatches: the bytes are those of the version whose preconditions were just evaluated.
    obj = await bucket.get(key, {
      ...(etag ? { onlyIf: { etagMatches: etag } } : {}),
      ...(range ? { range } : {}),
    });
  } catch (e) {
    // R2 refuses a range it cannot satisfy: answer 416 with the object's size, as HTTP does.
    if (!range) throw e;
    const meta = await bucket.head(key);
    if (!meta) return notFound();
    return unsatisfiable(meta.size);
  }
  if (!obj) return notFound();
  // replaced between head() and get(): the preconditions were evaluated on another version
  if (!("body" in obj)) return new Response(null, { status: 412, headers: { etag: obj.httpEtag } });
  const h = objectHeaders(obj);
  if (range && obj.range) {
    const [first, last] = rangeBounds(obj.range, obj.size);
    if (first > last || first >= obj.size) {
      await obj.body.cancel();
      return unsatisfiable(obj.size);
    }
    h.set("content-range", `bytes ${first}-${last}/${obj.size}`);
    h.set("content-length", String(last - first + 1));
    return new Response(obj.body, { status: 206, headers: h });
  }
  h.set("content-length", String(obj.size));
  return new Response(obj.body, { status: 200, headers: h });
}

/** The origin's response to `req` (GET or HEAD) for `source`, unchanged. Throws when unreachable. */
export async function fetchFromOrigin(
  source: ImageSource,
  req: Request,
  bindings: OriginBindings,
): Promise<Response> {
  if (source.kind === "r2") {
    if (!bindings.bucket) throw new Error("the IMAGES bucket is not bound");
    return fetchR2(bindings.bucket, source.key, req);
  }
  const headers = new Headers();
  for (const n of FORWARDED_HEADERS) {
    const v = req.headers.get(n);
    if (v !== null) headers.set(n, v);
  }
  return bindings.fetch(source.url, { method: req.method, headers, redirect: "manual" });
}
