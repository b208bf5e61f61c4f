/**
 * @module
 * What "the same image" means to the tagging path.
 *
 * - A **locator** names where an image lives: `url:<origin URL>` for an HTTP origin,
 *   `r2:<bucket>/<key>` for an R2 bucket. The hot-path entry in KV is keyed by the locator's
 *   sha256 (KV keys are limited to 512 bytes; URLs are not).
 * - **Validators** say which version of it: the strong ETag (R2's etag, or an origin's ETag that is
 *   not `W/`), else Last-Modified + length. An entry is used only when the validators the origin
 *   just sent agree with the ones recorded when the image was tagged ({@link sameVersion}), so a
 *   replaced image is never served with the old image's labels.
 * - An origin that sends no validator at all can only be identified by its URL: such entries are
 *   written with a KV expiration (see TaggingConfig.unvalidatedTtlS) so labels of a changed image
 *   age out. The content's sha256, known once the consumer has read the bytes, is what dedupes
 *   classification across locators (store.ts).
 */
import { sha256Hex } from "../shared/hash.ts";

/** Where an image lives. */
export type ImageSource = { kind: "origin"; url: string } | { kind: "r2"; bucket: string; key: string };

/** Which version of it (all optional: origins differ in what they send). */
export interface Validators {
  /** Strong ETag without quotes (`W/` tags are not recorded: they do not promise identical bytes). */
  etag?: string;
  /** Last-Modified as sent (an HTTP-date). */
  lastModified?: string;
  /** Full length in bytes (from Content-Length on a 200, the complete length of a 206's Content-Range). */
  length?: number;
}

/** `url:<url>` or `r2:<bucket>/<key>`. */
export function locatorOf(source: ImageSource): string {
  return source.kind === "origin" ? `url:${source.url}` : `r2:${source.bucket}/${source.key}`;
}

/** The KV key of a locator's hot-path entry: `img:` + sha256 hex (always 68 bytes). */
export async function tagKey(locator: string): Promise<string> {
  return `img:${await sha256Hex(new TextEncoder().encode(locator))}`;
}

/** `"abc"` -> `abc`; `W/"abc"` and malformed tags -> undefined. */
export function strongEtag(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^"([\x21\x23-\x7e\x80-\xff]*)"$/.exec(header.trim());
  return m ? m[1] : undefined;
}

/**
 * Validators from a response's status and headers. A 304 carries no length; a 206's length is the
 * complete length from Content-Range (`bytes 0-99/1234` -> 1234; `*` -> unknown).
 */
export function validatorsFromHeaders(status: number, headers: Headers): Validators {
  const v: Validators = {};
  const etag = strongEtag(headers.get("etag"));
  if (etag !== undefined) v.etag = etag;
  const lm = headers.get("last-modified");
  if (lm) v.lastModified = lm;
  let length: number | undefined;
  if (status === 200) {
    const cl = headers.get("content-length");
    if (cl !== null && /^\d+$/.test(cl)) length = Number(cl);
  } else if (status === 206) {
    const m = /\/(\d+)\s*$/.exec(headers.get("content-range") ?? "");
    if (m) length = Number(m[1]);
  }
  if (length !== undefined) v.length = length;
  return v;
}

/** True when no validator is known: the image is identified by its locator only. */
export function unvalidated(v: Validators): boolean {
  return v.etag === undefined && v.lastModified === undefined;
}

/**
 * Does a recorded entry (validators seen when the image was tagged) describe the version just
 * served? The ETag decides when both sides have one; otherwise Last-Modified must agree (and the
 * length, when both know it). An entry recorded without validators matches any response that
 * has none either (URL identity, bounded by the entry's expiration).
 *
 * @example
 * sameVersion({ etag: "a1" }, { etag: "a1", length: 10 }); // true
 * sameVersion({ lastModified: "Tue, 01 Dec 2026 10:00:00 GMT", length: 10 },
 *             { lastModified: "Tue, 01 Dec 2026 10:00:00 GMT", length: 11 }); // false
 */
export function sameVersion(recorded: Validators, seen: Validators): boolean {
  if (recorded.etag !== undefined && seen.etag !== undefined) return recorded.etag === seen.etag;
  if (recorded.lastModified !== undefined && seen.lastModified !== undefined) {
    if (recorded.lastModified !== seen.lastModified) return false;
    return recorded.length === undefined || seen.length === undefined || recorded.length === seen.length;
  }
  return unvalidated(recorded) && unvalidated(seen);
}
