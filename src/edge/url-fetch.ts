/**
 * @module
 * Fetching an image named by URL (JSON `{"url": ...}`), defensively: the outbound URL policy
 * (src/shared/url-policy.ts: http(s), no credentials, public destinations only unless loopback is
 * allowed) checked on the first URL and on every redirect target before connecting, at most a few
 * redirects, a time limit, a byte limit enforced while reading, and only image content types (or
 * application/octet-stream). Error texts echo at most 100 characters of a URL.
 */
import { AppError } from "../shared/errors.ts";
import { checkOutboundUrl, echo, type OutboundUrlPolicy } from "../shared/url-policy.ts";
import { readBounded } from "./limits.ts";

export interface UrlFetchOptions {
  maxBytes: number;
  /** Whole fetch including redirects and body (ms). Default 10000. */
  timeoutMs: number;
  /** Default 3. */
  maxRedirects: number;
  /** Which destinations may be fetched (default: public only). */
  policy: OutboundUrlPolicy;
  /** How a too-large body is named in the 413 (default "The image at the URL"). */
  what: string;
  /** Injected for tests; defaults to global fetch. */
  fetch: typeof fetch;
}

function unreachable(detail: string): AppError {
  return new AppError("url-unreachable", 400, detail);
}

/**
 * Fetches the image at `text`; errors are AppErrors (422 invalid-url / url-not-allowed, 413, 415,
 * 400 url-unreachable / too-many-redirects, 504 url-timeout).
 */
export async function fetchImage(
  text: string,
  options: Partial<UrlFetchOptions> & { maxBytes: number },
): Promise<Uint8Array> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxRedirects = options.maxRedirects ?? 3;
  const doFetch = options.fetch ?? fetch;
  const policy = options.policy ?? {};
  let url = checkOutboundUrl(text, policy);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const timeout = () =>
    new AppError("url-timeout", 504, `Fetching ${echo(url.host)} took longer than ${timeoutMs} ms.`);
  try {
    for (let hop = 0; ; hop++) {
      let res: Response;
      try {
        res = await doFetch(url.href, {
          redirect: "manual",
          signal: controller.signal,
          headers: { accept: "image/*" },
        });
      } catch {
        if (controller.signal.aborted) throw timeout();
        throw unreachable(`Could not fetch ${echo(url.href)}: the host is unreachable.`);
      }
      if (res.status >= 300 && res.status < 400 && res.headers.has("location")) {
        await res.body?.cancel().catch(() => undefined);
        if (hop >= maxRedirects)
          throw new AppError(
            "too-many-redirects",
            400,
            `${echo(text)} redirects more than ${maxRedirects} times.`,
          );
        let next: URL;
        try {
          next = new URL(res.headers.get("location")!, url);
        } catch {
          throw unreachable(`${echo(url.href)} redirects to something that is not a URL.`);
        }
        url = checkOutboundUrl(next, policy);
        continue;
      }
      if (!res.ok) {
        await res.body?.cancel().catch(() => undefined);
        throw unreachable(`Fetching ${echo(url.href)} answered HTTP ${res.status}.`);
      }
      const type = (res.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
      if (!(type.startsWith("image/") || type === "application/octet-stream")) {
        await res.body?.cancel().catch(() => undefined);
        throw new AppError(
          "unsupported-media-type",
          415,
          `${echo(url.href)} returned ${echo(type || "no content type", 60)}, not an image.`,
        );
      }
      try {
        return await readBounded(
          res.body,
          res.headers.get("content-length"),
          options.maxBytes,
          options.what ?? "The image at the URL",
        );
      } catch (e) {
        if (controller.signal.aborted && !(e instanceof AppError)) throw timeout();
        if (!(e instanceof AppError)) throw unreachable(`Reading ${echo(url.href)} failed before its end.`);
        throw e;
      }
    }
  } finally {
    clearTimeout(timer);
  }
}
