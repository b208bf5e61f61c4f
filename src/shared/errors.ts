/**
 * @module
 * Errors a user can see. Every layer (image path, shards, inference, converter CLI) throws an
 * {@link AppError} with a stable `code`; the Worker turns it into application/problem+json with
 * `type` = `https://beit-edge.dev/problems/<code>` and the given HTTP `status`, the CLIs print
 * `error[<code>]: <detail>` and exit non-zero.
 */

/** Retry-After (s) of a transient 503: a stage or the model store is briefly unreachable or loading. */
export const RETRY_AFTER_S = 5;
/** Retry-After (s) of a 503 that needs a redeploy (the deployment binds too few stages). */
export const RETRY_AFTER_REDEPLOY_S = 30;

export class AppError extends Error {
  constructor(
    /** Stable machine-readable code, kebab-case: "unsupported-format", "image-too-large", ... */
    readonly code: string,
    /** HTTP status that describes the failure: 400, 413, 415, 422, 503, 504 ... */
    readonly status: number,
    /** One or two sentences: what happened and what to do. */
    readonly detail: string,
    /** Extra members for the problem+json body (must be JSON-serialisable). */
    readonly extra: Record<string, unknown> = {},
  ) {
    super(detail);
    this.name = "AppError";
  }
}

export function isAppError(e: unknown): e is AppError {
  return e instanceof AppError;
}
