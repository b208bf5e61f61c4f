/**
 * @module
 * Fetching an image named by URL (JSON `{"url": ...}`), defensively: http(s) only, at most a few
 * redirects (each re-checked), a time limit, a byte limit enforced while reading, and only image
 * content types (or application/octet-stream).
 */
import { AppError } from "../shared/errors.ts";
import { readBounded } from "./limits.ts";

export interface UrlFetchOptions {
  maxBytes: number;
  /** Whole fetch including redirects and body (ms). Default 10000. */
  timeoutMs: number;
  /** Default 3. */
  maxRedirects: number;
  /** Injected for tests; defaults to global fetch. */
  fetch: typeof fetch;
}

function refuse(detail: string, status = 422, code = "invalid-url"): AppError {
  return new AppError(code, status, detail);
}

function checkUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw refuse(`${JSON.stringify(text.slice(0, 200))} is not an absolute URL.`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw refuse(`Only http and https URLs can be fetched, not ${url.protocol}`);
  if (url.username || url.password) throw refuse("URLs with credentials are not fetched.");
  return url;
}

/** Fetches the image at `text`; errors are AppErrors (422 bad URL, 413, 415, 400 unreachable, 504). */
export async function fetchImage(
  text: string,
  options: Partial<UrlFetchOptions> & { maxBytes: number },
): Promise<Uint8Array> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxRedirects = options.maxRedirects ?? 3;
  const doFetch = options.fetch ?? fetch;
  let url = checkUrl(text);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    for (let hop = 0; ; hop++) {
      let res: Response;
      try {
        res = await doFetch(url.toString(), {
          redirect: "manual",
          signal: controller.signal,
          headers: { accept: "image/*" },
        });
      } catch {
        if (controller.signal.aborted)
          throw new AppError("url-timeout", 504, `Fetching ${url.host} took longer than ${timeoutMs} ms.`);
        throw refuse(`Could not fetch ${url.toString()}: the host is unreachable.`, 400, "url-unreachable");
      }
      if (res.status >= 300 && res.status < 400 && res.headers.has("location")) {
        await res.body?.cancel().catch(() => undefined);
        if (hop >= maxRedirects)
          throw refuse(`${text} redirects more than ${maxRedirects} times.`, 400, "too-many-redirects");
        url = checkUrl(new URL(res.headers.get("location")!, url).toString());
        continue;
      }
      if (!res.ok) {
        await res.body?.cancel().catch(() => undefined);
        throw refuse(`Fetching ${url.toString()} answered HTTP ${res.status}.`, 400, "url-unreachable");
      }
      const type = (res.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
      if (!(type.startsWith("image/") || type === "application/octet-stream")) {
        await res.body?.cancel().catch(() => undefined);
        throw new AppError(
          "unsupported-media-type",
          415,
          `${url.toString()} returned ${type || "no content type"}, not an image.`,
        );
      }
      try {
        return await readBounded(
          res.body,
          res.headers.get("content-length"),
          options.maxBytes,
          "The image at the URL",
        );
      } catch (e) {
        if (controller.signal.aborted && !(e instanceof AppError))
          throw new AppError("url-timeout", 504, `Fetching ${url.host} took longer than ${timeoutMs} ms.`);
        throw e;
      }
    }
  } finally {
    clearTimeout(timer);
  }
}
