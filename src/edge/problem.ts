/**
 * @module
 * RFC 9457 problem details: every error a client sees is application/problem+json with a stable
 * `type` URI built from {@link AppError.code}. Unknown errors become a logged 500 `internal-error`
 * as the last resort.
 */
import { AppError, RETRY_AFTER_S } from "../shared/errors.ts";

/** Base of the `type` URIs; `<base><code>` names each problem. */
export const PROBLEM_BASE = "https://beit-edge.dev/problems/";

const TITLES: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extra: string]: unknown;
}

/** Turns anything thrown into an AppError (unknown errors become `internal-error`, 500). */
export function toAppError(e: unknown): AppError {
  if (e instanceof AppError) return e;
  // Errors from other layers that carry a code/status but are not our class (another bundle copy).
  if (typeof e === "object" && e !== null && "code" in e && "status" in e && "detail" in e) {
    const o = e as { code: unknown; status: unknown; detail: unknown };
    if (typeof o.code === "string" && typeof o.status === "number" && typeof o.detail === "string")
      return new AppError(o.code, o.status, o.detail);
  }
  return new AppError(
    "internal-error",
    500,
    "The service failed unexpectedly. Retry; if it persists, report it with the time of the request.",
  );
}

/** The problem+json body for an AppError. */
export function problemBody(e: AppError): ProblemBody {
  const extra = { ...e.extra };
  return {
    type: `${PROBLEM_BASE}${e.code}`,
    title: TITLES[e.status] ?? "Error",
    status: e.status,
    detail: e.detail,
    code: e.code,
    ...extra,
  };
}

/** A problem+json Response; 503 (and anything with `retryAfter`) gets a Retry-After header. */
export function problemResponse(e: AppError, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/problem+json");
  const retry = e.extra.retryAfter;
  if (typeof retry === "number") h.set("retry-after", String(retry));
  else if (e.status === 503) h.set("retry-after", "5");
  if (e.status === 401) h.set("www-authenticate", 'Bearer realm="beit-edge"');
  return new Response(JSON.stringify(problemBody(e)), { status: e.status, headers: h });
}

/** Reads a problem+json Response back into an AppError (stage -> gateway). */
export async function problemFromResponse(res: Response, fallbackDetail: string): Promise<AppError> {
  try {
    const body = (await res.json()) as Partial<ProblemBody>;
    if (typeof body.code === "string" && typeof body.detail === "string") {
      const { type: _t, title: _ti, status: _s, detail, code, ...extra } = body;
      return new AppError(code, res.status, detail, extra);
    }
  } catch {
    // fall through
  }
  return new AppError("model-unavailable", 503, fallbackDetail, { retryAfter: RETRY_AFTER_S });
}
