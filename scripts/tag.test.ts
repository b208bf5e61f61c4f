/**
 * `npm run tag` as a child process against a stand-in gateway (node:http) that answers
 * /v1/images/backfill in pages and /v1/images/stats as the queue makes progress: the loop over the
 * listing, the bearer token, the wait for outcomes, the summary, and the error for a wrong bucket.
 */
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "..");
let server: Server;
let url = "";
const bodies: Record<string, unknown>[] = [];
const auth: (string | undefined)[] = [];
let statsCalls = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    auth.push(req.headers.authorization);
    let data = "";
    req.on("data", (d) => {
      data += d;
    });
    req.on("end", () => {
      const u = new URL(req.url ?? "/", "http://x");
      res.setHeader("content-type", "application/json");
      if (u.pathname === "/v1/images/backfill") {
        const body = JSON.parse(data) as Record<string, unknown>;
        bodies.push(body);
        if (body.bucket !== "photos") {
          res.statusCode = 422;
          res.setHeader("content-type", "application/problem+json");
          res.end(
            JSON.stringify({
              code: "invalid-parameter",
              detail: 'This deployment tags the bucket "photos".',
            }),
          );
          return;
        }
        const page = body.cursor ? 2 : 1;
        res.end(
          JSON.stringify({
            listed: page === 1 ? 1000 : 500,
            enqueued: page === 1 ? 1000 : 500,
            cursor: page === 1 ? "c1" : null,
            at: 1234,
          }),
        );
      } else if (u.pathname === "/v1/images/stats") {
        statsCalls++;
        expect(u.searchParams.get("since")).toBe("1234");
        const done = statsCalls >= 2;
        res.end(
          JSON.stringify(
            done
              ? { tagged: 1490, skipped: 7, failed: 3, classified: 1200 }
              : { tagged: 100, skipped: 0, failed: 0, classified: 100 },
          ),
        );
      } else {
        res.statusCode = 404;
        res.end("{}");
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const a = server.address();
  url = `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const tag = (args: string[]) =>
  promisify(execFile)(
    process.execPath,
    [resolve(root, "node_modules/tsx/dist/cli.mjs"), "scripts/tag.ts", ...args],
    {
      cwd: root,
      env: { ...process.env, API_KEY: "k3y" },
    },
  );

describe("npm run tag", () => {
  it("pages through the listing, waits for every outcome and prints a summary", async () => {
    const { stdout } = await tag(["--bucket", "photos", "--prefix", "2026/", "--retag", "--url", url]);
    expect(bodies.slice(-2)).toEqual([
      { bucket: "photos", prefix: "2026/", retag: true },
      { bucket: "photos", prefix: "2026/", retag: true, cursor: "c1" },
    ]);
    expect(auth.every((a) => a === "Bearer k3y")).toBe(true);
    expect(stdout).toMatch(/enqueued\s+1500/);
    expect(stdout).toMatch(/tagged\s+1490 \(1200 classified/);
    expect(stdout).toMatch(/skipped\s+7/);
    expect(stdout).toMatch(/failed\s+3/);
    expect(stdout).toMatch(/images\/minute/);
  });

  it("fails with the gateway's explanation for another bucket, and with usage for no bucket", async () => {
    await expect(tag(["--bucket", "nope", "--url", url])).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringContaining('This deployment tags the bucket "photos"'),
    });
    await expect(tag(["--url", url])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining("--bucket NAME"),
    });
  });
});
