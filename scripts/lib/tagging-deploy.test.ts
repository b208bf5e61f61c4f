import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { addRoute, ensureNotificationRule, routeZone } from "./tagging-deploy.ts";

const rule = { bucket: "beit-edge-images", queue: "beit-edge-tagging", prefix: "photos/" };

/** A fake wrangler for the notification commands: rules appear when created. */
function fakeAccount() {
  const rules: string[] = [];
  const calls: string[][] = [];
  const wrangler = async (args: string[]) => {
    calls.push(args);
    if (args.slice(0, 4).join(" ") === "r2 bucket notification list") return rules.join("\n");
    if (args.slice(0, 4).join(" ") === "r2 bucket notification create") {
      rules.push(`queue: ${args[8]}`);
      return "";
    }
    throw new Error(`unexpected wrangler ${args.join(" ")}`);
  };
  return { wrangler, calls, rules };
}

describe("tagging deploy steps", () => {
  it("creates the notification rule once; a second run finds it", async () => {
    const acct = fakeAccount();
    expect((await ensureNotificationRule(rule, acct.wrangler, false)).action).toBe("created");
    expect(acct.calls.at(-1)).toEqual([
      "r2",
      "bucket",
      "notification",
      "create",
      "beit-edge-images",
      "--event-type",
      "object-create",
      "--queue",
      "beit-edge-tagging",
      "--prefix",
      "photos/",
    ]);
    expect((await ensureNotificationRule(rule, acct.wrangler, false)).action).toBe("exists");
    expect(acct.rules).toHaveLength(1);
  });

  it("a rule for another queue whose name extends this one does not count", async () => {
    const acct = fakeAccount();
    acct.rules.push("queue: beit-edge-tagging-dlq");
    expect((await ensureNotificationRule(rule, acct.wrangler, false)).action).toBe("created");
  });

  it("a dry run calls nothing and prints the command", async () => {
    const acct = fakeAccount();
    const s = await ensureNotificationRule({ ...rule, prefix: "" }, acct.wrangler, true);
    expect(acct.calls).toEqual([]);
    expect(s.action).toBe("would create");
    expect(s.command).not.toContain("--prefix");
  });

  it("routes: the zone is the pattern's host", async () => {
    expect(routeZone("example.com/images/*")).toBe("example.com");
    expect(routeZone("*.example.com/images/*")).toBe("example.com");
    const dir = await mkdtemp(join(tmpdir(), "route-"));
    try {
      const p = join(dir, "w.json");
      await writeFile(p, JSON.stringify({ name: "beit-edge-tagging" }));
      await addRoute(p, "cdn.example.org/images/*");
      expect(JSON.parse(await readFile(p, "utf8"))).toEqual({
        name: "beit-edge-tagging",
        routes: [{ pattern: "cdn.example.org/images/*", zone_name: "cdn.example.org" }],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
