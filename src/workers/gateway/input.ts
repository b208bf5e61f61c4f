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
import { readBounded } from "../../edge/limits.ts";
import { fetchImage, type UrlFetchOptions } from "../../edge/url-fetch.ts";
import { DEFAULT_LIMITS } from "../../image/limits.ts";
import { AppError } from "../../shared/errors.ts";

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
  const body = await readBounded(req.body, req.headers.get("content-length"), opts.maxBodyBytes);
  if (type === "application/json" || type.endsWith("+json")) return fromJson(body, opts);
  if (type === "multipart/form-data") return fromMultipart(body, req.headers.get("content-type")!, opts);
  if (type === "" || type.startsWith("image/") || type === "application/octet-stream") {
    if (body.byteLength === 0)
      throw badRequest("empty-body", "The request body is empty. Send the image's bytes as the body.");
    return { images: [body], batch: false, topK: undefined };
  }
  throw new AppError(
    "unsupported-media-type",
    415,
    `Content-Type ${type} is not accepted. Send image bytes (image/* or application/octet-stream), multipart/form-data with a file field, or application/json.`,
  );
}

async function fromMultipart(
  body: Uint8Array,
  contentType: string,
  opts: InputOptions,
): Promise<ClassifyInput> {
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
  for (const [name, value] of form.entries()) {
    if (typeof value === "string") {
      if (name === "top_k") topK = value;
      if (name === "exif_transpose") exifTranspose = value;
      if (name === "callback_url") callbackUrl = value;
      if (name === "metadata") metadata = value;
      continue;
    }
    const file = value as File;
    const bytes = new Uint8Array(await file.arrayBuffer());
    if (bytes.byteLength === 0)
      throw badRequest("empty-body", `The file field ${JSON.stringify(name)} is empty.`);
    images.push(bytes);
  }
  checkBatch(images.length, opts.maxBatch);
  return { images, batch: images.length > 1, topK, exifTranspose, callbackUrl, metadata };
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
  return { images, batch, topK, exifTranspose, callbackUrl: o.callback_url, metadata: o.metadata };
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
  throw new AppError(
    "invalid-parameter",
    422,
    `exif_transpose must be true or false, got ${JSON.stringify(raw)}.`,
    { parameter: "exif_transpose" },
  );
}

/**
 * Validates top_k from the query string or body: an integer from 1 to the label count; default 5
 * (capped at the label count). Anything else is a 422.
 */
export function resolveTopK(query: string | undefined, fromBody: unknown, labelCount: number): number {
  const raw = query ?? fromBody;
  if (raw === undefined || raw === null || raw === "") return Math.min(5, labelCount);
  const n =
    typeof raw === "number"
      ? raw
      : typeof raw === "string" && /^\s*\d+\s*$/.test(raw)
        ? Number(raw)
        : Number.NaN;
  if (!Number.isInteger(n) || n < 1 || n > labelCount)
    throw new AppError(
      "invalid-parameter",
      422,
      `top_k must be an integer from 1 to ${labelCount} (the label count), got ${JSON.stringify(raw)}.`,
      { parameter: "top_k", max: labelCount },
    );
  return n;
}
