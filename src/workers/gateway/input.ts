/**
 * @module
 * Turns a POST /v1/classify request into image byte arrays plus parameters. Accepted bodies:
 *
 * - raw bytes with `Content-Type: image/*` or `application/octet-stream` (or none);
 * - `multipart/form-data`: every file field, in order (several files = a batch), and optional
 *   `top_k` and `exif_transpose` fields;
 * - JSON: `{"image": B64}`, `{"inputs": B64, "parameters": {"top_k": N, "exif_transpose": false}}`,
 *   `{"url": URL}`; each of
 *   `image`, `inputs`, `url` may also be an array (a batch). Base64 may be a `data:` URL.
 *
 * The answer is a batch (array of arrays) exactly when the client used a batch form. POST /v1/jobs
 * reads the same bodies plus `callback_url` and `metadata` (JSON members or multipart fields).
 */

import { checkTopK } from "../../classify/index.ts";
import { readBounded } from "../../edge/limits.ts";
import { fetchImage, type UrlFetchOptions } from "../../edge/url-fetch.ts";
import { DEFAULT_LIMITS } from "../../image/limits.ts";
import { AppError } from "../../shared/errors.ts";
import { echo } from "../../shared/url-policy.ts";

export interface ClassifyInput {
  images: Uint8Array[];
  /** True when the request used a batch form (several files or a JSON array). */
  batch: boolean;
  /** top_k from the body (JSON parameters.top_k / top_k, multipart field), if any. */
  topK: unknown;
  /** exif_transpose from the body (JSON parameters.exif_transpose / exif_transpose, multipart field), if any. */
  exifTranspose?: unknown;
  /** POST /v1/jobs: callback_url from the JSON body or a multipart field, if any. */
  callbackUrl?: unknown;
  /** POST /v1/jobs: metadata from the JSON body (a value) or a multipart field (JSON text), if any. */
  metadata?: unknown;
  /** POST /v1/jobs: cancel_after (seconds) from the JSON body or a multipart field, if any. */
  cancelAfter?: unknown;
}

export interface InputOptions {
  /** Largest body; also the most bytes the URL images of one request may add up to. */
  maxBodyBytes: number;
  maxBatch: number;
  /** Largest image fetched from one URL (default: the image path's encoded-image limit, 20 MiB). */
  maxUrlBytes?: number;
  urlFetch?: Partial<UrlFetchOptions>;
}

function badRequest(code: string, detail: string): AppError {
  return new AppError(code, 400, detail);
}

function checkBatch(n: number, max: number): void {
  if (n === 0)
    throw badRequest(
      "no-image",
      "The request holds no image. Send image bytes, a file field, or JSON with image, inputs or url.",
    );
  if (n > max)
    throw new AppError(
      "too-many-images",
      422,
      `A batch may hold at most ${max} images; this one has ${n}. Split it into several requests.`,
      { maxBatch: max },
    );
}

/** Decodes standard or URL-safe base64 (optionally a data: URL) into bytes; 400 when malformed. */
export function decodeBase64(text: string): Uint8Array {
  let s = text.trim();
  if (s.startsWith("data:")) {
    const comma = s.indexOf(",");
    if (comma < 0 || !s.slice(0, comma).endsWith(";base64"))
      throw badRequest("invalid-base64", "A data: URL must be base64-encoded (data:image/...;base64,...).");
    s = s.slice(comma + 1);
  }
  s = s.replace(/\s+/g, "").replace(/-/g, "+").replace(/_/g, "/");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 === 1)
    throw badRequest(
      "invalid-base64",
      "The image string is not valid base64. Encode the file's bytes with base64.",
    );
  while (s.length % 4 !== 0) s += "=";
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Reads and interprets the body of a classify request. */
export async function readClassifyInput(req: Request, opts: InputOptions): Promise<ClassifyInput> {
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const json = type === "application/json" || type.endsWith("+json");
  const multipart = type === "multipart/form-data";
  const raw = type === "" || type.startsWith("image/") || type === "application/octet-stream";
  // The type is judged before a byte of the body is read.
  if (!json && !multipart && !raw) {
    await discard(req.body, opts.maxBodyBytes);
    throw new AppError(
      "unsupported-media-type",
      415,
      `Content-Type ${echo(type, 100)} is not accepted. Send image bytes (image/* or application/octet-stream), multipart/form-data with a file field, or application/json.${type === "application/x-www-form-urlencoded" ? ` ${CURL_DATA_HINT}` : ""}`,
    );
  }
  const boundary = multipart ? multipartBoundary(req.headers.get("content-type")!) : "";
  const declared = Number(req.headers.get("content-length") ?? Number.NaN);
  if (declared > opts.maxBodyBytes && declared <= 2 * opts.maxBodyBytes) {
    // Refused from Content-Length alone: dropped as it streams first (see discard), then the 413.
    await discard(req.body, 2 * opts.maxBodyBytes);
    await readBounded(null, String(declared), opts.maxBodyBytes);
  }
  const body = await readBounded(req.body, req.headers.get("content-length"), opts.maxBodyBytes);
  if (json) return fromJson(body, opts);
  if (multipart) return fromMultipart(body, req.headers.get("content-type")!, boundary, opts);
  if (body.byteLength === 0)
    throw badRequest("empty-body", "The request body is empty. Send the image's bytes as the body.");
  return { images: [body], batch: false, topK: undefined };
}

/**
 * Reads and drops up to `max` bytes of a body refused for its Content-Type (nothing is kept in
 * memory), so that a client still uploading gets to read the error instead of a reset connection
 * (workerd cannot read a request body after the response); past `max` the body is cancelled.
 */
async function discard(body: ReadableStream<Uint8Array> | null, max: number): Promise<void> {
  if (!body) return;
  const reader = body.getReader();
  try {
    for (let seen = 0; ; ) {
      const { done, value } = await reader.read();
      if (done) return;
      seen += value.byteLength;
      if (seen > max) return await reader.cancel();
    }
  } catch {
    // a client that went away: nothing to answer
  }
}

/**
 * Most parts a multipart body may have (files and text fields together), counted from the boundary
 * delimiters before the body is parsed: parsing cost grows with the part count, and a body of a
 * few hundred thousand tiny parts would otherwise hold the isolate for seconds.
 */
export const MAX_MULTIPART_PARTS = 32;

function multipartBoundary(contentType: string): string {
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType);
  if (!m)
    throw badRequest(
      "invalid-multipart",
      "The multipart/form-data Content-Type has no usable boundary parameter (1 to 70 characters).",
    );
  return m[1] ?? m[2];
}

/**
 * Counts the parts of a multipart body: delimiter lines ("--" + boundary at a line start) before the
 * close delimiter, stopping once past `stopAfter`. Linear: a boundary cannot contain CR, so candidate
 * positions never overlap.
 */
export function countMultipartParts(body: Uint8Array, boundary: string, stopAfter: number): number {
  const delim = new TextEncoder().encode(`--${boundary}`);
  const at = (i: number) => {
    if (i + delim.length > body.length) return false;
    for (let k = 0; k < delim.length; k++) if (body[i + k] !== delim[k]) return false;
    return true;
  };
  let parts = 0;
  const delimiter = (i: number): boolean => {
    if (!at(i)) return false;
    const after = i + delim.length;
    if (body[after] === 0x2d && body[after + 1] === 0x2d) return true; // close delimiter
    parts++;
    return false;
  };
  if (delimiter(0)) return parts;
  for (let i = body.indexOf(0x0d); i >= 0 && parts <= stopAfter; i = body.indexOf(0x0d, i + 1)) {
    if (body[i + 1] === 0x0a && delimiter(i + 2)) break;
  }
  return parts;
}

/** What to say when a body looks like `curl -d @file` sent it. */
export const CURL_DATA_HINT =
  "This looks like `curl -d`/`--data`, which sends a file as form text, dropping its newline and NUL bytes: send files with `curl --data-binary @photo.jpg -H 'content-type: image/jpeg'`.";

/** How image files start (JPEG, PNG, GIF, RIFF/WebP); curl -d keeps these first bytes. */
const IMAGE_PREFIXES = [
  [0xff, 0xd8, 0xff],
  [0x89, 0x50, 0x4e, 0x47],
  [0x47, 0x49, 0x46, 0x38],
  [0x52, 0x49, 0x46, 0x46],
];

/**
 * True when `bytes` look like a file sent with `curl -d @file`. curl reads such a file line by
 * line as C strings: it drops every CR and LF and everything from a NUL byte to the end of that
 * line (measured with curl 7.88: a 1098-byte JPEG arrives as 417 bytes). So the body has no 0x00,
 * 0x0A or 0x0D byte at all, which real image files always have, and it starts with an image
 * signature or is at least 1 KiB (a binary file without any of the three is improbable). Only
 * bodies that failed to decode are checked, so a short text body gets no hint.
 */
export function looksCurlDataMangled(bytes: Uint8Array): boolean {
  if (bytes.includes(0x00) || bytes.includes(0x0a) || bytes.includes(0x0d)) return false;
  return bytes.byteLength >= 1024 || IMAGE_PREFIXES.some((p) => p.every((b, i) => bytes[i] === b));
}

/**
 * Adds the `--data-binary` hint to an undecodable-image or unsupported-format error (a PNG loses
 * its signature's CR LF, so it is no longer recognised) for a body {@link looksCurlDataMangled}.
 */
export function withCurlHint(err: unknown, bytes: Uint8Array): unknown {
  if (!(err instanceof AppError) || !["undecodable-image", "unsupported-format"].includes(err.code))
    return err;
  if (!looksCurlDataMangled(bytes)) return err;
  return new AppError(err.code, err.status, `${err.detail} ${CURL_DATA_HINT}`, err.extra);
}

async function fromMultipart(
  body: Uint8Array,
  contentType: string,
  boundary: string,
  opts: InputOptions,
): Promise<ClassifyInput> {
  const parts = countMultipartParts(body, boundary, MAX_MULTIPART_PARTS);
  if (parts > MAX_MULTIPART_PARTS)
    throw new AppError(
      "too-many-parts",
      422,
      `A multipart body may have at most ${MAX_MULTIPART_PARTS} parts (files and fields); this one has more. Send at most ${opts.maxBatch} files and the top_k / exif_transpose fields.`,
      { maxParts: MAX_MULTIPART_PARTS },
    );
  let form: FormData;
  try {
    form = await new Response(body, { headers: { "content-type": contentType } }).formData();
  } catch {
    throw badRequest("invalid-multipart", "The multipart/form-data body could not be parsed.");
  }
  const images: Uint8Array[] = [];
  let topK: unknown;
  let exifTranspose: unknown;
  let callbackUrl: unknown;
  let metadata: unknown;
  let cancelAfter: unknown;
  for (const [name, value] of form.entries()) {
    if (typeof value === "string") {
      if (name === "top_k") topK = value;
      if (name === "exif_transpose") exifTranspose = value;
      if (name === "callback_url") callbackUrl = value;
      if (name === "metadata") metadata = value;
      if (name === "cancel_after") cancelAfter = value;
      continue;
    }
    const file = value as File;
    const bytes = new Uint8Array(await file.arrayBuffer());
    if (bytes.byteLength === 0) throw badRequest("empty-body", `The file field ${echo(name, 60)} is empty.`);
    images.push(bytes);
  }
  checkBatch(images.length, opts.maxBatch);
  return { images, batch: images.length > 1, topK, exifTranspose, callbackUrl, metadata, cancelAfter };
}

async function fromJson(body: Uint8Array, opts: InputOptions): Promise<ClassifyInput> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw badRequest("invalid-json", "The JSON body could not be parsed.");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new AppError(
      "invalid-parameter",
      422,
      'The JSON body must be an object: {"image": base64}, {"inputs": base64, "parameters": {"top_k": N}} or {"url": "https://..."}.',
    );
  const o = value as Record<string, unknown>;
  const present = (["image", "inputs", "url"] as const).filter((k) => o[k] !== undefined);
  if (present.length !== 1)
    throw new AppError(
      "invalid-parameter",
      422,
      `The JSON body needs exactly one of "image", "inputs" or "url"; found ${present.length === 0 ? "none" : present.join(", ")}.`,
    );
  const key = present[0];
  const raw = o[key];
  const batch = Array.isArray(raw);
  const items = batch ? (raw as unknown[]) : [raw];
  if (!items.every((x) => typeof x === "string"))
    throw new AppError("invalid-parameter", 422, `"${key}" must be a string or an array of strings.`);
  checkBatch(items.length, opts.maxBatch);
  const params = o.parameters;
  let topK: unknown = o.top_k;
  let exifTranspose: unknown = o.exif_transpose;
  if (params !== undefined) {
    if (typeof params !== "object" || params === null || Array.isArray(params))
      throw new AppError("invalid-parameter", 422, '"parameters" must be an object such as {"top_k": 5}.');
    const p = params as Record<string, unknown>;
    if (p.top_k !== undefined) topK = p.top_k;
    if (p.exif_transpose !== undefined) exifTranspose = p.exif_transpose;
  }
  const images: Uint8Array[] = [];
  const perUrl = Math.min(opts.maxUrlBytes ?? DEFAULT_LIMITS.maxBytes, opts.maxBodyBytes);
  let urlBytes = 0;
  for (const item of items as string[]) {
    if (key === "url") {
      const left = opts.maxBodyBytes - urlBytes;
      const bytes = await fetchImage(item, {
        ...opts.urlFetch,
        maxBytes: Math.min(perUrl, left),
      }).catch((e) => {
        if (e instanceof AppError && e.code === "payload-too-large" && left < perUrl)
          throw new AppError(
            "payload-too-large",
            413,
            `The images at the URLs of this request add up to more than the ${opts.maxBodyBytes}-byte request limit. Send fewer or smaller images per request.`,
            { maxBytes: opts.maxBodyBytes },
          );
        throw e;
      });
      urlBytes += bytes.byteLength;
      images.push(bytes);
    } else {
      const bytes = decodeBase64(item);
      if (bytes.byteLength === 0) throw badRequest("empty-body", `"${key}" holds an empty image.`);
      if (bytes.byteLength > opts.maxBodyBytes)
        throw new AppError(
          "payload-too-large",
          413,
          `An image is larger than the ${opts.maxBodyBytes}-byte limit.`,
          {
            maxBytes: opts.maxBodyBytes,
          },
        );
      images.push(bytes);
    }
  }
  return {
    images,
    batch,
    topK,
    exifTranspose,
    callbackUrl: o.callback_url,
    metadata: o.metadata,
    cancelAfter: o.cancel_after,
  };
}

/** A user-supplied parameter value for an error message: short, and numbers JSON cannot show named. */
export function shown(v: unknown): string {
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : "a number too large to represent";
  if (typeof v === "string") return echo(v, 40);
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  if (typeof v === "object") return "an object";
  return String(v);
}

/**
 * Validates exif_transpose from the query string or body: whether to apply the image's EXIF
 * orientation before preprocessing, as the Hugging Face pipeline's image loading does (default true).
 * `false` matches the model card's own `Image.open` + processor example. Accepts a JSON boolean or
 * "true"/"false"/"1"/"0"; anything else is a 422.
 */
export function resolveExifTranspose(query: string | undefined, fromBody: unknown): boolean {
  const raw = query ?? fromBody;
  if (raw === undefined || raw === null || raw === "") return true;
  if (raw === true || raw === "true" || raw === "1") return true;
  if (raw === false || raw === "false" || raw === "0") return false;
  throw new AppError("invalid-parameter", 422, `exif_transpose must be true or false, got ${shown(raw)}.`, {
    parameter: "exif_transpose",
  });
}

/**
 * Parses top_k from the query string or body (a number, or a string of digits) and checks it
 * with the core's one rule (checkTopK): an integer from 1 to the label count, default 5 capped at
 * the label count; anything else is a 422 that echoes the input capped.
 */
export function resolveTopK(query: string | undefined, fromBody: unknown, labelCount: number): number {
  const raw = query ?? fromBody;
  if (raw === undefined || raw === null || raw === "") return checkTopK(undefined, labelCount);
  const n =
    typeof raw === "number"
      ? raw
      : typeof raw === "string" && /^\s*\d+\s*$/.test(raw)
        ? Number(raw)
        : Number.NaN;
  return checkTopK(n, labelCount, shown(raw));
}
