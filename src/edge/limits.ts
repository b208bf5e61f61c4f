/**
 * @module
 * Request limits and the request deadline (values from the typed config, src/edge/config.ts, with
 * defaults in src/topology.ts), plus a body reader that enforces the byte limit while it reads.
 */
import { AppError } from "../shared/errors.ts";
import { echo } from "../shared/url-policy.ts";

/** Header a client may send to ask for a shorter deadline than the service's. */
export const DEADLINE_HEADER = "x-deadline-ms";

export interface Limits {
  deadlineMs: number;
  /** Largest request body; also the most bytes all URL images of one request may add up to. */
  maxBodyBytes: number;
  maxBatch: number;
  /** ALLOW_LOOPBACK_FETCH=true: URL inputs may name loopback hosts. */
  allowLoopbackFetch: boolean;
}

/** A point in time by which the response must be sent. */
export class Deadline {
  readonly at: number;
  constructor(
    readonly ms: number,
    now = Date.now(),
  ) {
    this.at = now + ms;
  }

  /**
   * The effective deadline for a request: the service's, or the client's `x-deadline-ms` when it
   * is shorter. A malformed header is a 422.
   */
  static forRequest(req: Request, limits: Limits): Deadline {
    const raw = req.headers.get(DEADLINE_HEADER);
    if (raw === null) return new Deadline(limits.deadlineMs);
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isInteger(n) || n < 1)
      throw new AppError(
        "invalid-parameter",
        422,
        `${DEADLINE_HEADER} must be a positive integer number of milliseconds, got ${echo(raw, 40)}.`,
      );
    return new Deadline(Math.min(n, limits.deadlineMs));
  }

  remaining(): number {
    return this.at - Date.now();
  }

  /** Throws `deadline-exceeded` (504) when the deadline has passed. */
  check(): void {
    if (this.remaining() <= 0) throw this.#error();
  }

  /** Resolves like `p`, or rejects with `deadline-exceeded` when the deadline passes first. */
  race<T>(p: Promise<T>): Promise<T> {
    const left = this.remaining();
    if (left <= 0) {
      p.catch(() => undefined);
      return Promise.reject(this.#error());
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.#error()), left);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  #error(): AppError {
    return new AppError(
      "deadline-exceeded",
      504,
      `The request did not finish within its ${this.ms} ms deadline. Retry, or allow more time with ${DEADLINE_HEADER} (the service's maximum applies).`,
      { deadlineMs: this.ms },
    );
  }
}

function tooLarge(max: number, what: string): AppError {
  return new AppError(
    "payload-too-large",
    413,
    `${what} is larger than the ${max}-byte limit. Send a smaller image (resize or recompress it).`,
    { maxBytes: max },
  );
}

/**
 * Reads a body into memory, refusing it (413) as soon as it exceeds `max` bytes: first from
 * Content-Length, then while streaming, so a lying or absent Content-Length cannot get past.
 */
export async function readBounded(
  body: ReadableStream<Uint8Array> | null,
  contentLength: string | null,
  max: number,
  what = "The request body",
): Promise<Uint8Array> {
  if (contentLength !== null) {
    const n = Number(contentLength);
    if (Number.isFinite(n) && n > max) {
      await body?.cancel().catch(() => undefined);
      throw tooLarge(max, what);
    }
  }
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(max, what);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}
