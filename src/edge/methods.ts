/**
 * @module
 * 405 Method Not Allowed for every route of a Hono app, derived from the routes themselves: a
 * request that finds no handler but whose path some route serves with another method gets 405 with
 * `Allow`; OPTIONS on such a path gets 204 with `Allow`. Routes added later (by any module, on the
 * same app) are covered without a list to keep in step. Middleware (`app.use`, method ALL) does
 * not count as a route; HEAD is allowed wherever GET is (Hono answers HEAD with the GET handler).
 */
import type { Hono } from "hono";
import { PatternRouter } from "hono/router/pattern-router";

/** Methods a route can declare (HEAD and OPTIONS are derived). */
const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"] as const;

/** The methods each path of `app` answers, as an `Allow` value per path (empty: no route). */
export function routeMethods(app: Pick<Hono, "routes">): (path: string) => string[] {
  let router: PatternRouter<string> | null = null;
  let count = -1;
  return (path) => {
    // Built on first use and rebuilt if routes were added since.
    if (!router || count !== app.routes.length) {
      router = new PatternRouter<string>();
      for (const r of app.routes) if (r.method !== "ALL") router.add(r.method, r.path, r.method);
      count = app.routes.length;
    }
    const allowed: string[] = [];
    for (const m of METHODS) if (router.match(m, path)[0].length > 0) allowed.push(m);
    if (allowed.includes("GET")) allowed.splice(allowed.indexOf("GET") + 1, 0, "HEAD");
    if (allowed.length) allowed.push("OPTIONS");
    return allowed;
  };
}

/** Every route of `app` as `METHOD path` (middleware excluded), for the OpenAPI drift test. */
export function listRoutes(app: Pick<Hono, "routes">): { method: string; path: string }[] {
  const seen = new Set<string>();
  const out: { method: string; path: string }[] = [];
  for (const r of app.routes) {
    if (r.method === "ALL" || seen.has(`${r.method} ${r.path}`)) continue;
    seen.add(`${r.method} ${r.path}`);
    out.push({ method: r.method, path: r.path });
  }
  return out;
}
